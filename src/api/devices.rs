//! The caller's devices: `GET /v1/sip/devices`, `DELETE /v1/sip/devices/{device_id}`, and the
//! admin revoke of a user (`POST /admin/v1/users/{user}/revoke`), which drop devices from the
//! store, the device index and the location service in that order.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Serialize;

use super::aor::UserAor;
use super::roles::{Caller, Role};
use super::server::Peer;
use super::ApiState;
use crate::config::Sso;
use crate::oidc::Rejection;
use crate::registrar::Location;
use crate::store::DeviceRecord;

use super::reply::{bad_request, json, not_found, rejection_response, rfc3339, store_failed};
use super::token::{aor_error, bearer_user, sub_hash, unix_now, RevokedBy, TokenApi};

#[derive(Debug, Serialize)]
pub(super) struct DeviceView {
    device_id: String,
    name: Option<String>,
    platform: Option<String>,
    aor: String,
    username: String,
    created: String,
    last_register: Option<String>,
    expires_at: String,
    expired: bool,
}

/// `GET /v1/sip/devices`.
pub(super) async fn devices(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    let Some(api) = &s.token else {
        return not_found();
    };
    let v = match bearer_user(api, peer.map(|Extension(p)| p), &headers, "devices").await {
        Ok((v, _, _)) => v,
        Err((r, _)) => return r,
    };
    let (iss, sub) = (v.iss.clone(), v.sub.clone());
    let records = match api.store.run(move |s| s.user_devices(&iss, &sub)).await {
        Ok(r) => r,
        Err(e) => return store_failed(&e),
    };
    let now = unix_now();
    let list: Vec<DeviceView> = records
        .into_iter()
        .map(|r| DeviceView {
            expired: !r.is_active(now),
            device_id: r.device_id,
            name: r.name,
            platform: r.platform,
            aor: r.aor,
            username: r.username,
            created: rfc3339(r.created),
            last_register: r.last_register.map(rfc3339),
            expires_at: rfc3339(r.current.expires_at),
        })
        .collect();
    json(StatusCode::OK, serde_json::json!({"devices": list}))
}

/// Revokes in the index and removes the bindings the devices made (the location service keeps
/// the bindings gauges). Returns bindings removed.
pub(super) fn drop_devices(api: &TokenApi, location: &Location, records: &[DeviceRecord]) -> usize {
    let mut removed = 0;
    for r in records {
        // Index first, bindings second: see `registrar::Credential` for why no REGISTER
        // verified with this device can store a binding after this returns.
        api.devices.revoke_record(r);
        // The store holds the canonical text a `UserAor` wrote; one that no longer parses
        // names no binding.
        if let Some(aor) = crate::sip::Aor::parse(&r.aor) {
            removed += location.remove_credential(&aor, &r.username);
        }
    }
    api.metrics.active.set(api.devices.len() as i64);
    removed
}

/// `DELETE /v1/sip/devices/{device_id}`.
pub(super) async fn delete_device(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    Path(device_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(api) = &s.token else {
        return not_found();
    };
    let v = match bearer_user(api, peer.map(|Extension(p)| p), &headers, "delete_device").await {
        Ok((v, _, _)) => v,
        Err((r, _)) => return r,
    };
    let (iss, sub, id) = (v.iss.clone(), v.sub.clone(), device_id.clone());
    let now = unix_now();
    let found = match api
        .store
        .run(move |s| s.revoke_device(&iss, &sub, &id, now))
        .await
    {
        Ok(f) => f,
        Err(e) => return store_failed(&e),
    };
    let Some(record) = found else {
        return not_found();
    };
    let removed = drop_devices(api, &s.location, std::slice::from_ref(&record));
    api.metrics.revoked(RevokedBy::User, 1);
    tracing::info!(
        issuer = %v.issuer_name,
        sub = %sub_hash(&v.iss, &v.sub),
        device = %record.username,
        bindings_removed = removed,
        decision = "revoked",
        "device revoked by its user"
    );
    api.audit.record(
        crate::audit::Event::new(super::token::user_actor(&v), "credential.revoke", "success")
            .target(record.aor.as_str())
            .device(record.device_id.as_str())
            .source(peer.map(|Extension(p)| p.0.ip()))
            .request(&super::lifecycle::request_id(&headers)),
    );
    json(
        StatusCode::OK,
        serde_json::json!({"device_id": record.device_id, "revoked": true, "bindings_removed": removed}),
    )
}

/// `POST /admin/v1/users/{user}/revoke`: every device of the AoR `user` (`alice@example.com`
/// or `sip:alice@example.com`, canonicalised as the exchange does: [`UserAor`]) is revoked,
/// every binding of the AoR removed, and tokens issued until now (plus the leeway, see
/// [`super::token::user_of`]) may not get new credentials for it. The break-glass admin
/// token, or an admin by role (`roles.rs`) of the domain. Order: credentials and role (401;
/// 403 for an auditor or a user) → the AoR (400 unusable, 404 a domain without the token
/// API) → the admin's domain (403). A user of ours without devices is revoked too: its
/// earlier tokens are refused.
pub(super) async fn revoke_user(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(api) = &s.token else {
        return not_found();
    };
    let peer = peer.map(|Extension(p)| p);
    let caller = match super::roles::caller(&s, api, &headers, peer, "revoke_user").await {
        // Only admins go on: an auditor or a user learns nothing about the AoR.
        Ok(Caller::Idp(Role::User | Role::Auditor, _)) => {
            return rejection_response(Rejection::Scope)
        }
        Ok(c) => c,
        Err(r) => return r,
    };
    let aor = match UserAor::from_admin(&user) {
        Ok(aor) => aor,
        Err(e) => {
            tracing::debug!(reason = aor_error(e), "admin revoke: not a token API AoR");
            return bad_request();
        }
    };
    if !api
        .domains
        .get(aor.domain())
        .is_some_and(|d| d.sso != Sso::Off)
    {
        return not_found();
    }
    // An admin of the issuer's domains: by `admin_claim` (its admin domains) or `[[roles]]`.
    let actor = match &caller {
        Caller::BreakGlass => "admin-token".to_owned(),
        Caller::Idp(Role::Admin, v)
            if v.admin_domains
                .iter()
                .chain(&v.issuer_domains)
                .any(|d| d == aor.domain()) =>
        {
            format!("{}:{}", v.issuer_name, sub_hash(&v.iss, &v.sub))
        }
        Caller::Idp(..) => return rejection_response(Rejection::Scope),
    };
    let now = unix_now();
    let target = aor.as_str().to_owned();
    let records = match api.store.run(move |s| s.revoke_aor(&target, now)).await {
        Ok(r) => r,
        Err(e) => return store_failed(&e),
    };
    let mut removed = drop_devices(api, &s.location, &records);
    removed += s.location.remove_aor(aor.aor());
    api.metrics.revoked(RevokedBy::Admin, records.len());
    tracing::info!(aor = %aor, actor, devices = records.len(), bindings_removed = removed, decision = "revoked", "user revoked");
    let actor = match actor.as_str() {
        "admin-token" => actor,
        _ => format!("admin:{actor}"),
    };
    api.audit.record(
        crate::audit::Event::new(actor, "user.revoke", "success")
            .target(aor.as_str())
            .source(peer.map(|Peer(a)| a.ip()))
            .request(&super::lifecycle::request_id(&headers)),
    );
    json(
        StatusCode::OK,
        serde_json::json!({"aor": aor.as_str(), "devices_revoked": records.len(), "bindings_removed": removed}),
    )
}

/// Revokes every AoR the subject `(iss, sub)` holds devices for, as the admin revoke does
/// (records revoked with the revoke cutoff, index entries dropped, every binding of the AoR
/// removed). Returns (devices revoked, bindings removed).
pub(super) async fn revoke_subject(
    api: &TokenApi,
    location: &Location,
    iss: &str,
    sub: &str,
    now: u64,
) -> Result<(usize, usize), crate::store::StoreError> {
    let (iss, sub) = (iss.to_owned(), sub.to_owned());
    let records = api.store.run(move |s| s.user_devices(&iss, &sub)).await?;
    let aors: std::collections::BTreeSet<String> = records.into_iter().map(|r| r.aor).collect();
    revoke_aors(api, location, aors, now).await
}

/// [`revoke_subject`] for known AoRs.
pub(super) async fn revoke_aors(
    api: &TokenApi,
    location: &Location,
    aors: impl IntoIterator<Item = String>,
    now: u64,
) -> Result<(usize, usize), crate::store::StoreError> {
    let (mut devices, mut bindings) = (0, 0);
    for aor in aors {
        let target = aor.clone();
        let records = api.store.run(move |s| s.revoke_aor(&target, now)).await?;
        bindings += drop_devices(api, location, &records);
        if let Some(aor) = crate::sip::Aor::parse(&aor) {
            bindings += location.remove_aor(&aor);
        }
        devices += records.len();
    }
    Ok((devices, bindings))
}
