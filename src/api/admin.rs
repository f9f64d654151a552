//! The operator's routes (`sipward ctl` speaks to these; docs/production.md "Admin API"):
//! bindings listed a page at a time with the credential that made each one, one binding or
//! one AoR's bindings removed, the token API's devices listed and revoked one at a time,
//! the node's status, and a TLS reload. Every route takes the admin token only
//! (`http.admin_token_file`, compared in constant time); none logs it.
//!
//! Paging: the bindings listing walks AoRs in canonical order and the device listing
//! devices in username order; a page holds at most `limit` entries (default and cap
//! [`MAX_LISTED_AORS`]), and when more follow the response carries `Sipward-Next-Cursor` (an
//! opaque value for `cursor=`) and an RFC 8288 `Link: <…>; rel="next"`. The body stays the
//! JSON array the listing always returned, so a client that ignores the headers still works;
//! the header is the truncation marker. A page costs one walk of the location service (or
//! one read of the active devices): these routes are for operators, not for polling.
//!
//! It must not name SIP sockets or the TLS module: the reload is a hook `app` passes in.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::aor::UserAor;
use super::devices::drop_devices;
use super::reply::{
    bad_request, bearer, json, not_found, rejection_response, rfc3339, store_failed,
    DuplicateAuthorization,
};
use super::roles::{self, Caller, Role};
use super::server::Peer;
use super::token::{aor_error, unix_now, RevokedBy};
use super::{no_store, readiness, ApiState, MAX_LISTED_AORS};
use crate::oidc::Rejection;
use crate::registrar::{Aor, BindingSnapshot};

/// The response header naming the next page's cursor.
pub const NEXT_CURSOR_HEADER: &str = "sipward-next-cursor";

/// What an admin route does: reads (bindings, devices, status: `admin` and `auditor`) or
/// changes (removals, revocations, TLS reload: `admin` only).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Change,
}

/// `None` when the caller may use admin route `route`; else the answer to send. With the token
/// API on, an IdP access token with the `admin` (or, to read, `auditor`) role is accepted
/// besides the static admin token, which is then break-glass (logged, counted, audited:
/// `roles.rs`); a plain user gets 403. Without it, only the static admin token (constant-time
/// comparison): 401 otherwise, 400 for two Authorization headers.
async fn refusal(
    s: &ApiState,
    headers: &HeaderMap,
    peer: Option<Extension<Peer>>,
    route: &'static str,
    access: Access,
) -> Option<Response> {
    if let Some(api) = &s.token {
        let peer = peer.map(|Extension(p)| p);
        return match roles::caller(s, api, headers, peer, route).await {
            Err(r) => Some(r),
            Ok(Caller::BreakGlass | Caller::Idp(Role::Admin, _)) => None,
            Ok(Caller::Idp(Role::Auditor, _)) if access == Access::Read => None,
            Ok(Caller::Idp(_, _)) => Some(rejection_response(Rejection::Scope)),
        };
    }
    let presented = match bearer(headers) {
        Ok(p) => p,
        Err(DuplicateAuthorization) => return Some(bad_request()),
    };
    let authorized = match (&s.admin_token, presented) {
        (Some(token), Some(p)) => token.matches(p.as_bytes()),
        _ => false,
    };
    if authorized {
        return None;
    }
    let mut r = no_store(
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({"error": "invalid_token"})),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sipward\", error=\"invalid_token\""),
    );
    Some(r)
}

fn invalid_request(why: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"error": "invalid_request", "error_description": why}),
    )
}

/// The page size a `limit=` asks for: 1..=[`MAX_LISTED_AORS`], the cap when absent.
fn page_size(limit: Option<usize>) -> Result<usize, &'static str> {
    match limit {
        None => Ok(MAX_LISTED_AORS),
        Some(n) if (1..=MAX_LISTED_AORS).contains(&n) => Ok(n),
        Some(_) => Err("limit must be 1 to 1000"),
    }
}

fn encode_cursor(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

fn decode_cursor(cursor: Option<&str>) -> Result<Option<String>, &'static str> {
    let Some(c) = cursor else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or("cursor is not one this server gave")
}

/// Adds the next-page headers when `next` is set. `query` is the request's other
/// parameters, already URL-safe (they were parsed from the request and re-encoded).
fn paged(mut r: Response, route: &str, query: &[(&str, String)], next: Option<String>) -> Response {
    let Some(cursor) = next else {
        return r;
    };
    let mut q = url_query(query);
    q.push_str(if q.is_empty() { "?" } else { "&" });
    q.push_str("cursor=");
    q.push_str(&cursor);
    if let Ok(v) = HeaderValue::from_str(&cursor) {
        r.headers_mut().insert(NEXT_CURSOR_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("<{route}{q}>; rel=\"next\"")) {
        r.headers_mut().insert(header::LINK, v);
    }
    r
}

/// The filters a page's `next` link repeats: `user` and `limit`, when given.
fn page_query(user: Option<&str>, limit: Option<usize>) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(u) = user {
        query.push(("user", u.to_owned()));
    }
    if let Some(n) = limit {
        query.push(("limit", n.to_string()));
    }
    query
}

/// `?a=b&c=d` with each value percent-encoded (unreserved characters kept).
fn url_query(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

// ---- Bindings ----

#[derive(Debug, Deserialize)]
pub(super) struct BindingsQuery {
    aor: Option<String>,
    user: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct AorBindings {
    aor: String,
    bindings: Vec<BindingView>,
}

#[derive(Debug, Serialize)]
struct BindingView {
    /// For `DELETE /admin/v1/bindings?aor=…&id=…`.
    id: u64,
    contact: String,
    params: String,
    expires: u32,
    q: Option<f32>,
    source: String,
    transport: &'static str,
    instance: Option<String>,
    reg_id: Option<u32>,
    call_id: String,
    cseq: u32,
    user_agent: Option<String>,
    path: Vec<String>,
    /// Who made or last refreshed the binding: a token API device's Digest username `d-…`
    /// (see `GET /admin/v1/devices`), else the AoR's user (a static account, or a client
    /// certificate naming the AoR).
    credential: Option<String>,
}

fn binding_view(aor: &Aor, b: &BindingSnapshot) -> BindingView {
    BindingView {
        id: b.id,
        contact: b.uri().to_string(),
        params: b.params().to_string(),
        expires: b.expires,
        q: b.q.map(|q| f32::from(q) / 1000.0),
        source: b.source.to_string(),
        transport: b.transport.as_str(),
        instance: b.instance().map(str::to_string),
        reg_id: b.reg_id,
        call_id: b.call_id().to_string(),
        cseq: b.cseq,
        user_agent: b.user_agent().map(str::to_string),
        path: b.path().iter().map(|p| p.to_string()).collect(),
        credential: credential_of(aor, b).map(str::to_owned),
    }
}

/// See [`BindingView::credential`]: the registrar records a name only for devices (a static
/// account's Digest username and a certificate's identity are the AoR's user).
fn credential_of<'a>(aor: &'a Aor, b: &'a BindingSnapshot) -> Option<&'a str> {
    b.credential().or_else(|| aor_user(aor))
}

/// The user part of a canonical AoR (`sip:alice@example.test` → `alice`).
fn aor_user(aor: &Aor) -> Option<&str> {
    let rest = aor.split_once(':')?.1;
    Some(rest.rsplit_once('@')?.0)
}

/// `GET /admin/v1/bindings[?aor=][&user=][&limit=][&cursor=]`: the AoRs with live bindings,
/// a page at a time (see the module header); `user` keeps the bindings whose credential
/// (the `credential` field) is that name.
pub(super) async fn bindings(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Query(q): Query<BindingsQuery>,
) -> Response {
    if let Some(r) = refusal(&s, &headers, peer, "bindings", Access::Read).await {
        return r;
    }
    let (limit, after) = match (page_size(q.limit), decode_cursor(q.cursor.as_deref())) {
        (Ok(n), Ok(a)) => (n, a),
        (Err(why), _) | (_, Err(why)) => return invalid_request(why),
    };
    let filter = match q.aor.as_deref().map(Aor::parse) {
        Some(Some(aor)) => Some(aor),
        Some(None) => return invalid_request("aor is not a SIP address-of-record"),
        None => None,
    };
    let user = q.user.as_deref();
    let keep = |aor: &Aor, b: &BindingSnapshot| {
        filter.as_ref().is_none_or(|f| f == aor)
            && user.is_none_or(|u| credential_of(aor, b) == Some(u))
    };
    let now = Instant::now();
    let (page, more) = match &filter {
        // One AoR: a lookup, not a walk.
        Some(aor) if after.is_none() => {
            let found: Vec<BindingSnapshot> = s
                .location
                .lookup(aor, now)
                .into_iter()
                .filter(|b| keep(aor, b))
                .collect();
            let page = match found.is_empty() {
                true => Vec::new(),
                false => vec![(aor.clone(), found)],
            };
            (page, false)
        }
        Some(_) => (Vec::new(), false),
        None => s.location.page(after.as_deref(), limit, keep, now),
    };
    let next = more
        .then(|| page.last().map(|(aor, _)| encode_cursor(aor)))
        .flatten();
    let list: Vec<AorBindings> = page
        .iter()
        .map(|(aor, bs)| AorBindings {
            aor: aor.to_string(),
            bindings: bs.iter().map(|b| binding_view(aor, b)).collect(),
        })
        .collect();
    paged(
        no_store(StatusCode::OK, axum::Json(list)),
        "/admin/v1/bindings",
        &page_query(q.user.as_deref(), q.limit),
        next,
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct RemoveQuery {
    aor: Option<String>,
    id: Option<u64>,
}

/// `DELETE /admin/v1/bindings?aor=…[&id=…]`: one binding (by the `id` the listing shows),
/// or every binding of the AoR. 404 when nothing matched. A phone whose binding is removed
/// re-registers at its next refresh unless its credential is revoked too.
pub(super) async fn remove_bindings(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Query(q): Query<RemoveQuery>,
) -> Response {
    if let Some(r) = refusal(&s, &headers, peer, "bindings.remove", Access::Change).await {
        return r;
    }
    let Some(aor) = q.aor.as_deref().and_then(Aor::parse) else {
        return invalid_request("aor (a SIP address-of-record) is required");
    };
    let removed = match q.id {
        Some(id) => usize::from(s.location.remove_binding(&aor, id)),
        None => s.location.remove_aor(&aor),
    };
    if removed == 0 {
        return not_found();
    }
    tracing::info!(aor = %aor, id = q.id, bindings_removed = removed, actor = "admin-token", "bindings removed by admin");
    json(
        StatusCode::OK,
        serde_json::json!({"aor": aor.as_str(), "bindings_removed": removed}),
    )
}

// ---- Devices ----

#[derive(Debug, Deserialize)]
pub(super) struct DevicesQuery {
    user: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct AdminDeviceView {
    /// The Digest username (`d-…`): the `credential` of the bindings it made, and the name
    /// `DELETE /admin/v1/devices/{username}` takes.
    username: String,
    device_id: String,
    aor: String,
    /// The IdP that vouched for the user (`iss`); the subject is not shown.
    issuer: String,
    name: Option<String>,
    platform: Option<String>,
    created: String,
    last_register: Option<String>,
    expires_at: String,
    /// Live bindings this device made or last refreshed.
    bindings: usize,
}

/// `GET /admin/v1/devices[?user=][&limit=][&cursor=]`: the token API's active devices (not
/// revoked, a generation unexpired) in username order, only the AoR `user`'s when given
/// (spelled as for the user revoke). 404 when the token API is off. A revoked user has none.
pub(super) async fn devices(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Query(q): Query<DevicesQuery>,
) -> Response {
    if let Some(r) = refusal(&s, &headers, peer, "devices", Access::Read).await {
        return r;
    }
    let Some(api) = &s.token else {
        return not_found();
    };
    let (limit, after) = match (page_size(q.limit), decode_cursor(q.cursor.as_deref())) {
        (Ok(n), Ok(a)) => (n, a),
        (Err(why), _) | (_, Err(why)) => return invalid_request(why),
    };
    let user = match q.user.as_deref().map(UserAor::from_admin) {
        Some(Ok(aor)) => Some(aor),
        Some(Err(e)) => {
            tracing::debug!(reason = aor_error(e), "admin devices: not a token API AoR");
            return invalid_request("user is not an address-of-record");
        }
        None => None,
    };
    let now = unix_now();
    let mut records = match api.store.run(move |st| st.load_active(now)).await {
        Ok(r) => r,
        Err(e) => return store_failed(&e),
    };
    records.retain(|r| {
        user.as_ref().is_none_or(|u| r.aor == u.as_str())
            && after.as_deref().is_none_or(|a| r.username.as_str() > a)
    });
    records.sort_by(|a, b| a.username.cmp(&b.username));
    let more = records.len() > limit;
    records.truncate(limit);
    let instant = Instant::now();
    let list: Vec<AdminDeviceView> = records
        .into_iter()
        .map(|r| {
            let bindings = Aor::parse(&r.aor).map_or(0, |aor| {
                s.location
                    .lookup(&aor, instant)
                    .iter()
                    .filter(|b| b.credential() == Some(r.username.as_str()))
                    .count()
            });
            AdminDeviceView {
                bindings,
                issuer: r.iss,
                device_id: r.device_id,
                aor: r.aor,
                name: r.name,
                platform: r.platform,
                created: rfc3339(r.created),
                last_register: r.last_register.map(rfc3339),
                expires_at: rfc3339(r.current.expires_at),
                username: r.username,
            }
        })
        .collect();
    let next = more
        .then(|| list.last().map(|d| encode_cursor(&d.username)))
        .flatten();
    paged(
        no_store(StatusCode::OK, axum::Json(list)),
        "/admin/v1/devices",
        &page_query(q.user.as_deref(), q.limit),
        next,
    )
}

/// `DELETE /admin/v1/devices/{username}`: revokes one device (its credential stops working
/// at once and the bindings it made are removed), as its user's own `DELETE` does. The
/// user's other devices and later exchanges are untouched (`users revoke` for those).
pub(super) async fn revoke_device(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Response {
    if let Some(r) = refusal(&s, &headers, peer, "devices.revoke", Access::Change).await {
        return r;
    }
    let Some(api) = &s.token else {
        return not_found();
    };
    let now = unix_now();
    let wanted = username.clone();
    let found = api
        .store
        .run(move |st| {
            let Some(r) = st
                .load_active(now)?
                .into_iter()
                .find(|r| r.username == wanted)
            else {
                return Ok(None);
            };
            st.revoke_device(&r.iss, &r.sub, &r.device_id, now)
        })
        .await;
    let record = match found {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(),
        Err(e) => return store_failed(&e),
    };
    let removed = drop_devices(api, &s.location, std::slice::from_ref(&record));
    api.metrics.revoked(RevokedBy::Admin, 1);
    tracing::info!(
        aor = %record.aor,
        device = %record.username,
        actor = "admin-token",
        bindings_removed = removed,
        decision = "revoked",
        "device revoked by admin"
    );
    json(
        StatusCode::OK,
        serde_json::json!({
            "username": record.username,
            "device_id": record.device_id,
            "aor": record.aor,
            "revoked": true,
            "bindings_removed": removed,
        }),
    )
}

// ---- Status and TLS ----

/// `GET /admin/v1/status`: version, commit, uptime, counts and readiness, for `sipward ctl
/// status` and scripts.
pub(super) async fn status(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refusal(&s, &headers, peer, "status", Access::Read).await {
        return r;
    }
    let readiness = readiness(&s).await;
    json(
        StatusCode::OK,
        serde_json::json!({
            "version": crate::VERSION,
            "commit": crate::GIT_COMMIT,
            "uptime_secs": s.started.elapsed().as_secs(),
            "aors": s.location.aor_count(),
            "bindings": s.location.binding_count(),
            "devices_active": s.token.as_ref().map(|t| t.devices.len()),
            "token_api": s.token.is_some(),
            "tls": s.tls_reload.is_some(),
            "ready": readiness.is_ok(),
            "readiness": match readiness {
                Ok(()) => "ready",
                Err(why) => why,
            },
        }),
    )
}

/// `POST /admin/v1/tls/reload`: what SIGHUP does (the old material stays on failure, and the
/// reload metrics count it), with the outcome in the answer. 404 without TLS listeners.
pub(super) async fn tls_reload(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refusal(&s, &headers, peer, "tls.reload", Access::Change).await {
        return r;
    }
    let Some(reload) = s.tls_reload.clone() else {
        return not_found();
    };
    tracing::info!(actor = "admin-token", "admin API: reloading tls material");
    match tokio::task::spawn_blocking(move || reload()).await {
        Ok(Ok(())) => json(StatusCode::OK, serde_json::json!({"reloaded": true})),
        Ok(Err(detail)) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": "reload_failed", "reloaded": false, "error_description": detail}),
        ),
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": "server_error"}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = encode_cursor("sip:alice@example.test");
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            decode_cursor(Some(&c)).ok().flatten().as_deref(),
            Some("sip:alice@example.test")
        );
        assert!(decode_cursor(Some("not base64!")).is_err());
        assert!(decode_cursor(None).ok().flatten().is_none());
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(None).ok(), Some(MAX_LISTED_AORS));
        assert_eq!(page_size(Some(1)).ok(), Some(1));
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(MAX_LISTED_AORS + 1)).is_err());
    }

    #[test]
    fn the_next_link_keeps_the_filters_encoded() {
        let q = url_query(&[("user", "a b&c".into()), ("limit", "2".into())]);
        assert_eq!(q, "?user=a%20b%26c&limit=2");
        let aor = Aor::parse("sip:alice@example.test").expect("aor");
        assert_eq!(aor_user(&aor), Some("alice"));
    }
}
