//! Roles on the admin endpoints (issue 20): `admin` (every admin endpoint), `auditor`
//! (read-only: bindings, audit) and `user` (none). The static admin token is break-glass:
//! it works on every admin endpoint, and each use is logged at WARN, counted and audited
//! (`audit.rs`). An IdP access token (admin purpose) gets its role from the issuer's
//! `[[roles]]` claim values, its SCIM group memberships (the `[[scim]]` provider's groups
//! by display name, matched on the username claim), or the issuer's `admin_claim`; every
//! decision is audited (`role.decision`).

use axum::http::HeaderMap;
use axum::response::Response;

use super::reply::{
    bad_request, bearer, missing_token, rejection_response, DuplicateAuthorization,
};
use super::server::Peer;
use super::token::{sub_hash, unix_now, TokenApi};
use super::ApiState;
use crate::config::RoleMapping;
use crate::oidc::{payload, Purpose, Rejection};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Auditor,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::User => "user",
        }
    }
}

/// The role decision: `sso_admin` (the issuer's `admin_claim` matched) or a value in
/// `mapping.admin` → admin; a value in `mapping.auditor` → auditor; else user. `values` are
/// the claim's values and the caller's SCIM group names together.
pub fn decide(mapping: Option<&RoleMapping>, values: &[String], sso_admin: bool) -> Role {
    let has = |list: &[String]| values.iter().any(|v| list.contains(v));
    match mapping {
        _ if sso_admin => Role::Admin,
        Some(m) if has(&m.admin) => Role::Admin,
        Some(m) if has(&m.auditor) => Role::Auditor,
        _ => Role::User,
    }
}

/// Who calls an admin endpoint.
pub(super) enum Caller {
    BreakGlass,
    Idp(Role, Box<crate::oidc::Verified>),
}

/// The caller of admin route `route`: the break-glass token, or an IdP token with its role
/// (audited). `Err`: the answer (no, duplicate or invalid token).
pub(super) async fn caller(
    s: &ApiState,
    api: &TokenApi,
    headers: &HeaderMap,
    peer: Option<Peer>,
    route: &'static str,
) -> Result<Caller, Response> {
    let presented = match bearer(headers) {
        Ok(Some(p)) => p,
        Ok(None) => return Err(missing_token()),
        Err(DuplicateAuthorization) => return Err(bad_request()),
    };
    if s.admin_token
        .as_ref()
        .is_some_and(|t| t.matches(presented.as_bytes()))
    {
        break_glass(api, route, peer, headers);
        return Ok(Caller::BreakGlass);
    }
    // A user's token (the credentials purpose: the required scope) or, failing the scope, an
    // admin's token by `admin_claim`; either way the role comes from the claims below.
    let now = unix_now();
    let v = match api
        .registry
        .validate(presented, Purpose::Credentials, now)
        .await
    {
        Err(Rejection::Scope) => api.registry.validate(presented, Purpose::Admin, now).await,
        other => other,
    }
    .map_err(rejection_response)?;
    let token_claims = payload::of_validated(presented).unwrap_or_default();
    let mapping = api.roles.iter().find(|m| m.issuer == v.issuer_name);
    let mut values = mapping
        .map(|m| payload::strings(&token_claims, &m.claim))
        .unwrap_or_default();
    let username_claim = api
        .registry
        .issuer(&v.iss)
        .map(|i| i.config.username_claim.clone())
        .unwrap_or_default();
    if let Some(name) = token_claims.get(&username_claim).and_then(|n| n.as_str()) {
        for p in api.scim.iter().filter(|p| p.issuer_name == v.issuer_name) {
            if let Ok(d) = p.directory.lock() {
                values.extend(d.groups_of(name));
            }
        }
    }
    let role = decide(mapping, &values, !v.admin_domains.is_empty());
    let actor = format!("user:{}:{}", v.issuer_name, sub_hash(&v.iss, &v.sub));
    tracing::info!(route, issuer = %v.issuer_name, sub = %sub_hash(&v.iss, &v.sub), role = role.as_str(), "role decision");
    api.audit.record(
        crate::audit::Event::new(actor, "role.decision", role.as_str())
            .target(route)
            .source(peer.map(|Peer(a)| a.ip()))
            .request(&super::lifecycle::request_id(headers)),
    );
    Ok(Caller::Idp(role, Box::new(v)))
}

/// [`caller`] for a read-only admin route: break-glass, admin or auditor; a user gets 403.
pub(super) async fn reader(
    s: &ApiState,
    api: &TokenApi,
    headers: &HeaderMap,
    peer: Option<Peer>,
    route: &'static str,
) -> Result<(), Response> {
    match caller(s, api, headers, peer, route).await? {
        Caller::BreakGlass | Caller::Idp(Role::Admin | Role::Auditor, _) => Ok(()),
        Caller::Idp(Role::User, _) => Err(rejection_response(Rejection::Scope)),
    }
}

/// Records one use of the static admin token on `route`.
pub(super) fn break_glass(
    api: &TokenApi,
    route: &'static str,
    peer: Option<Peer>,
    headers: &HeaderMap,
) {
    api.metrics.break_glass.inc();
    tracing::warn!(route, "break-glass: the static admin token was used");
    api.audit.record(
        crate::audit::Event::new("admin-token", "admin.break_glass", "success")
            .target(route)
            .source(peer.map(|Peer(a)| a.ip()))
            .request(&super::lifecycle::request_id(headers)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_values_give_roles() {
        let m = RoleMapping {
            issuer: "i".into(),
            claim: "groups".into(),
            admin: vec!["ops".into()],
            auditor: vec!["audit".into()],
        };
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(decide(Some(&m), &v(&["x", "ops"]), false), Role::Admin);
        assert_eq!(decide(Some(&m), &v(&["audit"]), false), Role::Auditor);
        assert_eq!(decide(Some(&m), &v(&["audit", "ops"]), false), Role::Admin);
        assert_eq!(decide(Some(&m), &v(&["other"]), false), Role::User);
        assert_eq!(decide(None, &v(&["ops"]), false), Role::User);
        assert_eq!(decide(None, &[], true), Role::Admin);
    }
}
