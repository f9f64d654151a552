//! `/scim/v2/…`: the SCIM 2.0 service provider over HTTP (docs/lifecycle.md). Each
//! `[[scim]]` entry is one IdP's provider with its own bearer token and directory; the token
//! presented picks the provider (compared in constant time with every provider's). The
//! directory (`crate::scim`) decides; this file authenticates, answers with
//! `application/scim+json`, and carries out the [`Transition`]s before answering: a
//! deprovisioned user is refused new credentials first, then every device of the user is
//! revoked in the store and the device index, and every binding of its AoR removed, so the
//! SCIM response is sent only when nothing of the user can register any more.
//!
//! Users are matched to token API users by `scim.user_match`: `user_name` (the SCIM
//! `userName` is read as the issuer's username claim would be, giving the AoR) or
//! `external_id` (the SCIM `externalId` is the token's `sub`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::Value;

use super::aor::UserAor;
use super::devices::{revoke_aors, revoke_subject};
use super::lifecycle::Provider;
use super::reply::bearer;
use super::server::Peer;
use super::token::{sub_hash, unix_now, RevokedBy, TokenApi};
use super::ApiState;
use crate::config::UserMatch;
use crate::scim::{discovery, Kind, ScimError, Subject, Transition};

const SCIM_JSON: &str = "application/scim+json";

fn scim_reply(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    r
}

fn error(e: &ScimError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = scim_reply(status, &e.body());
    if e.status == 401 {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sipward-scim\""),
        );
    }
    r
}

/// The provider whose token was presented: every provider's token is compared (constant
/// time each, no early exit), failures count against the source's failure limit.
fn provider<'a>(
    api: &'a TokenApi,
    peer: Option<Peer>,
    headers: &HeaderMap,
) -> Result<&'a Provider, ScimError> {
    let now = std::time::Instant::now();
    let source = peer.map(|Peer(addr)| crate::auth::source_key(addr.ip()));
    if let Some(source) = &source {
        if api.failures_per_source.refuses(source, now).is_err() {
            return Err(ScimError {
                status: 429,
                scim_type: None,
                detail: "too many failed requests".into(),
            });
        }
    }
    let presented = bearer(headers).ok().flatten();
    let mut found = None;
    if let Some(p) = presented {
        for provider in &api.scim {
            if provider.matches(p.as_bytes()) && found.is_none() {
                found = Some(provider);
            }
        }
    }
    found.ok_or_else(|| {
        if let Some(source) = &source {
            api.failures_per_source.record(source, now);
        }
        tracing::info!(decision = "refused", "scim request without a valid token");
        ScimError::unauthorized()
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<usize>,
    count: Option<usize>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

fn excluded(q: &Option<String>) -> Vec<String> {
    q.as_deref()
        .map(|s| s.split(',').map(|a| a.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// What a SCIM request asks of the directory.
enum Op {
    List(ListQuery),
    Get(String, Vec<String>),
    Create(Bytes),
    Replace(String, Bytes),
    Patch(String, Bytes),
    Delete(String),
}

fn parse(body: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(body).map_err(|_| ScimError::invalid_syntax("the body is not JSON"))
}

async fn serve(
    s: Arc<ApiState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    kind: Kind,
    op: Op,
) -> Response {
    let Some(api) = &s.token else {
        return error(&ScimError::not_found("SCIM"));
    };
    let peer = peer.map(|Extension(p)| p);
    let peer_ip = peer.map(|Peer(a)| a.ip());
    let p = match provider(api, peer, &headers) {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    let now = unix_now();
    let result = {
        let Ok(mut d) = p.directory.lock() else {
            return error(&ScimError {
                status: 500,
                scim_type: None,
                detail: "internal error".into(),
            });
        };
        match &op {
            Op::List(q) => d
                .list(
                    kind,
                    q.filter.as_deref(),
                    q.start_index.unwrap_or(1),
                    q.count,
                    &excluded(&q.excluded_attributes),
                )
                .map(|v| (StatusCode::OK, Some(v), Vec::new())),
            Op::Get(id, ex) => d
                .get(kind, id, ex)
                .map(|v| (StatusCode::OK, Some(v), Vec::new())),
            Op::Create(b) => parse(b)
                .and_then(|v| d.create(kind, &v, now))
                .map(|c| (StatusCode::CREATED, c.resource, c.transitions)),
            Op::Replace(id, b) => parse(b)
                .and_then(|v| d.replace(kind, id, &v, now))
                .map(|c| (StatusCode::OK, c.resource, c.transitions)),
            Op::Patch(id, b) => parse(b)
                .and_then(|v| d.patch(kind, id, &v, now))
                .map(|c| (StatusCode::OK, c.resource, c.transitions)),
            Op::Delete(id) => d
                .delete(kind, id)
                .map(|c| (StatusCode::NO_CONTENT, None, c.transitions)),
        }
    };
    let action = match (&op, kind) {
        (Op::Create(_), Kind::User) => Some("scim.user.create"),
        (Op::Replace(..), Kind::User) => Some("scim.user.replace"),
        (Op::Patch(..), Kind::User) => Some("scim.user.patch"),
        (Op::Delete(_), Kind::User) => Some("scim.user.delete"),
        (Op::Create(_), Kind::Group) => Some("scim.group.create"),
        (Op::Replace(..), Kind::Group) => Some("scim.group.replace"),
        (Op::Patch(..), Kind::Group) => Some("scim.group.patch"),
        (Op::Delete(_), Kind::Group) => Some("scim.group.delete"),
        (Op::List(_) | Op::Get(..), _) => None,
    };
    let request = super::lifecycle::request_id(&headers);
    if let Some(action) = action {
        let target = match (&op, &result) {
            (Op::Replace(id, _) | Op::Patch(id, _) | Op::Delete(id), _) => Some(id.clone()),
            (_, Ok((_, Some(v), _))) => v["id"].as_str().map(str::to_owned),
            _ => None,
        };
        let mut e = crate::audit::Event::new(
            format!("scim:{}", p.issuer_name),
            action,
            if result.is_ok() { "success" } else { "refused" },
        )
        .source(peer_ip)
        .request(&request);
        if let Some(t) = target {
            e = e.target(t);
        }
        api.audit.record(e);
    }
    let (status, body, transitions) = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(issuer = %p.issuer_name, status = e.status, scim_type = e.scim_type, "scim request refused");
            return error(&e);
        }
    };
    for t in &transitions {
        if let Err(r) = carry_out(api, &s.location, p, t, now, &request).await {
            return r;
        }
    }
    match body {
        Some(v) => scim_reply(status, &v),
        None => status.into_response(),
    }
}

/// Refuses or allows the subject's credentials, and on deprovisioning revokes its devices and
/// removes its bindings (the same steps as the admin revoke of a user).
async fn carry_out(
    api: &TokenApi,
    location: &crate::registrar::Location,
    p: &Provider,
    t: &Transition,
    now: u64,
    request: &str,
) -> Result<(), Response> {
    let (subject, deprovision) = match t {
        Transition::Deprovision(s) => (s, true),
        Transition::Reactivate(s) => (s, false),
    };
    let changed: bool;
    let aors: Vec<String> = match p.user_match {
        UserMatch::UserName => {
            let Ok(aor) = UserAor::from_claim(&subject.user_name, &p.domains) else {
                tracing::info!(issuer = %p.issuer_name, "scim user names no AoR of the issuer's domains");
                return Ok(());
            };
            changed = api.deprovisioned.set_aor(aor.as_str(), deprovision);
            vec![aor.as_str().to_owned()]
        }
        UserMatch::ExternalId => {
            let Some(sub) = subject.external_id.as_deref() else {
                return Ok(());
            };
            changed = api
                .deprovisioned
                .set_subject(user_key(&p.iss, sub), deprovision);
            Vec::new()
        }
    };
    let event = |action| {
        crate::audit::Event::new(format!("scim:{}", p.issuer_name), action, "success")
            .target(format!("user:{}:{}", p.issuer_name, hashed(p, subject)))
            .request(request)
    };
    if !deprovision {
        if changed {
            tracing::info!(issuer = %p.issuer_name, user = %hashed(p, subject), decision = "reactivated", "scim user active again");
            api.audit.record(event("user.reactivate"));
        }
        return Ok(());
    }
    let revoked = match (p.user_match, subject.external_id.as_deref()) {
        (UserMatch::ExternalId, Some(sub)) => revoke_subject(api, location, &p.iss, sub, now).await,
        _ => revoke_aors(api, location, aors, now).await,
    };
    let (devices, bindings) = revoked.map_err(|e| store_error(&e))?;
    api.metrics.revoked(RevokedBy::Scim, devices);
    api.audit.record(event("user.deprovision"));
    tracing::info!(issuer = %p.issuer_name, user = %hashed(p, subject), devices, bindings_removed = bindings, decision = "revoked", "scim user deprovisioned");
    Ok(())
}

fn user_key(iss: &str, sub: &str) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    Sha256::new()
        .chain_update(iss)
        .chain_update([0])
        .chain_update(sub)
        .finalize()
        .into()
}

/// The subject as logs name it: the hash of `(iss, sub)` or of `userName`, never raw.
fn hashed(p: &Provider, s: &Subject) -> String {
    match (&p.user_match, &s.external_id) {
        (UserMatch::ExternalId, Some(sub)) => sub_hash(&p.iss, sub),
        _ => sub_hash(&p.iss, &s.user_name),
    }
}

fn store_error(e: &crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "scim: device store failed");
    error(&ScimError {
        status: 503,
        scim_type: None,
        detail: "the device store is unavailable".into(),
    })
}

// ---- routes ----

type St = State<Arc<ApiState>>;
type PeerExt = Option<Extension<Peer>>;

pub(super) async fn list_users(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    serve(s, peer, h, Kind::User, Op::List(q)).await
}
pub(super) async fn list_groups(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    serve(s, peer, h, Kind::Group, Op::List(q)).await
}
pub(super) async fn create_user(State(s): St, peer: PeerExt, h: HeaderMap, b: Bytes) -> Response {
    serve(s, peer, h, Kind::User, Op::Create(b)).await
}
pub(super) async fn create_group(State(s): St, peer: PeerExt, h: HeaderMap, b: Bytes) -> Response {
    serve(s, peer, h, Kind::Group, Op::Create(b)).await
}

#[derive(Debug, Deserialize)]
pub(super) struct GetQuery {
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

pub(super) async fn get_user(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<GetQuery>,
) -> Response {
    serve(
        s,
        peer,
        h,
        Kind::User,
        Op::Get(id, excluded(&q.excluded_attributes)),
    )
    .await
}
pub(super) async fn get_group(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<GetQuery>,
) -> Response {
    serve(
        s,
        peer,
        h,
        Kind::Group,
        Op::Get(id, excluded(&q.excluded_attributes)),
    )
    .await
}
pub(super) async fn replace_user(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    serve(s, peer, h, Kind::User, Op::Replace(id, b)).await
}
pub(super) async fn replace_group(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    serve(s, peer, h, Kind::Group, Op::Replace(id, b)).await
}
pub(super) async fn patch_user(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    serve(s, peer, h, Kind::User, Op::Patch(id, b)).await
}
pub(super) async fn patch_group(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    serve(s, peer, h, Kind::Group, Op::Patch(id, b)).await
}
pub(super) async fn delete_user(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    serve(s, peer, h, Kind::User, Op::Delete(id)).await
}
pub(super) async fn delete_group(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    serve(s, peer, h, Kind::Group, Op::Delete(id)).await
}

/// The discovery documents (authenticated like every SCIM route).
async fn discovery_doc(
    s: Arc<ApiState>,
    peer: PeerExt,
    h: HeaderMap,
    doc: Option<Value>,
) -> Response {
    let Some(api) = &s.token else {
        return error(&ScimError::not_found("SCIM"));
    };
    if let Err(e) = provider(api, peer.map(|Extension(p)| p), &h) {
        return error(&e);
    }
    match doc {
        Some(v) => scim_reply(StatusCode::OK, &v),
        None => error(&ScimError::not_found("resource")),
    }
}

pub(super) async fn service_provider_config(State(s): St, peer: PeerExt, h: HeaderMap) -> Response {
    discovery_doc(s, peer, h, Some(discovery::service_provider_config())).await
}
pub(super) async fn resource_types(State(s): St, peer: PeerExt, h: HeaderMap) -> Response {
    discovery_doc(s, peer, h, discovery::resource_types(None)).await
}
pub(super) async fn resource_type(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    discovery_doc(s, peer, h, discovery::resource_types(Some(&id))).await
}
pub(super) async fn schemas(State(s): St, peer: PeerExt, h: HeaderMap) -> Response {
    discovery_doc(s, peer, h, discovery::schemas(None)).await
}
pub(super) async fn schema(
    State(s): St,
    peer: PeerExt,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    discovery_doc(s, peer, h, discovery::schemas(Some(&id))).await
}
