//! The HTTP side: health, readiness, Prometheus metrics, the admin bindings view (the
//! operator's `ul.dump`), and the token API (`token.rs`, docs/token-api.md) when issuers are
//! configured.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | the router, health, readiness, metrics, admin bindings, the layers below |
//! | `token.rs` | the token API's state and metrics; the common start of its Bearer routes |
//! | `exchange.rs` | login options and the credential exchange |
//! | `devices.rs` | the caller's devices, device deletion, the admin revoke of a user |
//! | `scim.rs` | `/scim/v2/…`: SCIM 2.0 provisioning over `crate::scim`, deprovisioning's revocations |
//! | `audit.rs` | `GET /admin/v1/audit` |
//! | `lifecycle.rs` | the SCIM providers and the deprovisioned users the Bearer routes refuse |
//! | `logout.rs` | `POST /oidc/backchannel-logout`: OIDC Back-Channel Logout, revoking the user's devices |
//! | `roles.rs` | the admin endpoints' caller: the break-glass token (logged, counted, audited), or an IdP token with its role (admin, auditor, user) |
//! | `reply.rs` | RFC 6750 errors and the other HTTP answers; the Bearer header |
//! | `aor.rs` | the token API user's AoR (a `sip::Aor` under the token API's user rules) |
//! | `limit.rs` | fixed-window rate limits per source, user and device (429 + Retry-After) |
//! | `server.rs` | the hyper accept loop: head size, head deadline, connection cap |
//! | `head.rs` | the request-head gate before hyper: its refusals as JSON with `no-store` |
//!
//! Limits: request bodies of at most `token_api.max_body_bytes` (413 above), at most
//! `MAX_CONCURRENT_REQUESTS` served at once, each within `token_api.request_timeout_secs`
//! (503 after), the admin listing at most `MAX_LISTED_AORS` AoRs; `Cache-Control: no-store`
//! on every response. It must not touch SIP sockets.

pub mod aor;
mod audit;
mod devices;
mod exchange;
pub mod head;
pub mod lifecycle;
pub mod limit;
mod logout;
mod reply;
pub mod roles;
pub mod scim;
pub mod server;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::config::AdminToken;
use crate::metrics::Metrics;
use crate::registrar::{Aor, Location};

/// Most AoRs one admin listing returns.
pub const MAX_LISTED_AORS: usize = 1000;
/// Requests served at once; more wait in the listener backlog.
pub const MAX_CONCURRENT_REQUESTS: usize = 256;

/// Request body limit when the token API is off (no route reads a body then).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4096;
/// Header section limit when the token API is off (health, metrics and admin requests carry
/// small headers): each open connection may buffer up to this much.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Per-request deadline when the token API is off.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ApiState {
    pub metrics: Metrics,
    pub location: Location,
    pub admin_token: Option<AdminToken>,
    /// `None` when no issuer is configured: the token routes answer 404.
    pub token: Option<Arc<token::TokenApi>>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

pub fn router(state: ApiState) -> Router {
    let max_body = state.max_body_bytes;
    let timeout = state.request_timeout;
    Router::new()
        .route(
            "/healthz",
            get(|| async { no_store(StatusCode::OK, "ok\n") }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/v1/bindings", get(bindings))
        .route("/admin/v1/users/{user}/revoke", post(devices::revoke_user))
        .route("/admin/v1/audit", get(audit::audit))
        .route("/oidc/backchannel-logout", post(logout::backchannel_logout))
        .route(
            "/scim/v2/Users",
            get(scim::list_users).post(scim::create_user),
        )
        .route(
            "/scim/v2/Users/{id}",
            get(scim::get_user)
                .put(scim::replace_user)
                .patch(scim::patch_user)
                .delete(scim::delete_user),
        )
        .route(
            "/scim/v2/Groups",
            get(scim::list_groups).post(scim::create_group),
        )
        .route(
            "/scim/v2/Groups/{id}",
            get(scim::get_group)
                .put(scim::replace_group)
                .patch(scim::patch_group)
                .delete(scim::delete_group),
        )
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(scim::service_provider_config),
        )
        .route("/scim/v2/ResourceTypes", get(scim::resource_types))
        .route("/scim/v2/ResourceTypes/{id}", get(scim::resource_type))
        .route("/scim/v2/Schemas", get(scim::schemas))
        .route("/scim/v2/Schemas/{id}", get(scim::schema))
        .route("/v1/login-options", get(exchange::login_options))
        .route("/v1/sip/credentials", post(exchange::credentials))
        .route("/v1/sip/devices", get(devices::devices))
        .route(
            "/v1/sip/devices/{device_id}",
            delete(devices::delete_device),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error": "not_found"})),
            )
        })
        .with_state(Arc::new(state))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| deadline(timeout, req, next),
        ))
        .layer(axum::middleware::from_fn(no_store_and_json_errors))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            MAX_CONCURRENT_REQUESTS,
        ))
}

/// `Cache-Control: no-store` on every response, and on the API routes (everything but the
/// health, readiness and metrics probes) an error that axum or tower produced with a text or
/// empty body (413 body too large, 405, a path that does not parse) gets an RFC 6750-shaped
/// JSON body instead; its status and other headers (`Allow`, `Retry-After`) stay.
async fn no_store_and_json_errors(req: Request, next: Next) -> Response {
    let api_route = !matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics");
    let mut r = next.run(req).await;
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.starts_with("application/json") || t.starts_with("application/scim+json")
        });
    if api_route && !is_json && (r.status().is_client_error() || r.status().is_server_error()) {
        let status = r.status();
        let error = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request",
        };
        let (mut parts, _) = r.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = serde_json::json!({"error": error}).to_string();
        r = Response::from_parts(parts, axum::body::Body::from(body));
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Answers 503 when a request takes longer than `timeout` (a slow store or IdP).
async fn deadline(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"error": "temporarily_unavailable"})),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// Ready when the device store answers and every issuer's keys are loaded (or when the
/// token API is off).
async fn readyz(State(s): State<Arc<ApiState>>) -> Response {
    let Some(api) = &s.token else {
        return no_store(StatusCode::OK, "ready\n");
    };
    let store_ok = api.store.run(|s| s.ping()).await.is_ok();
    let keys_ok = api.registry.ready();
    match (store_ok, keys_ok) {
        (true, true) => no_store(StatusCode::OK, "ready\n"),
        (false, _) => no_store(StatusCode::SERVICE_UNAVAILABLE, "not ready: device store\n"),
        (true, false) => no_store(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: issuer keys not loaded\n",
        ),
    }
}

fn no_store(status: StatusCode, body: impl IntoResponse) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    let mut r = no_store(StatusCode::OK, s.metrics.render());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

#[derive(Debug, Deserialize)]
struct BindingsQuery {
    aor: Option<String>,
}

#[derive(Debug, Serialize)]
struct AorBindings {
    aor: String,
    bindings: Vec<BindingView>,
}

#[derive(Debug, Serialize)]
struct BindingView {
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
}

async fn bindings(
    State(s): State<Arc<ApiState>>,
    peer: Option<axum::Extension<server::Peer>>,
    headers: HeaderMap,
    Query(q): Query<BindingsQuery>,
) -> Response {
    if let Some(api) = &s.token {
        // With the token API on, IdP tokens with the admin or auditor role are accepted too.
        let peer = peer.map(|axum::Extension(p)| p);
        if let Err(r) = roles::reader(&s, api, &headers, peer, "bindings").await {
            return r;
        }
    } else {
        let presented = match reply::bearer(&headers) {
            Ok(p) => p,
            Err(reply::DuplicateAuthorization) => return reply::bad_request(),
        };
        let authorized = match (&s.admin_token, presented) {
            (Some(token), Some(p)) => token.matches(p.as_bytes()),
            _ => false,
        };
        if !authorized {
            let mut r = no_store(
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({"error": "invalid_token"})),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sipward\", error=\"invalid_token\""),
            );
            return r;
        }
    }
    let filter = match q.aor.as_deref().map(Aor::parse) {
        Some(Some(aor)) => Some(aor),
        Some(None) => {
            return no_store(
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "invalid_request"})),
            );
        }
        None => None,
    };
    let now = Instant::now();
    let list: Vec<AorBindings> = s
        .location
        .dump(filter.as_ref(), MAX_LISTED_AORS, now)
        .into_iter()
        .map(|(aor, bs)| AorBindings {
            aor: aor.to_string(),
            bindings: bs
                .iter()
                .map(|b| BindingView {
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
                })
                .collect(),
        })
        .collect();
    no_store(StatusCode::OK, Json(list))
}
