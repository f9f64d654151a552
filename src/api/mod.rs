//! The HTTP side: health, readiness, Prometheus metrics, the admin bindings view (the
//! operator's `ul.dump`), and the token API (`token.rs`, docs/token-api.md) when issuers are
//! configured.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | the router, health, readiness, metrics, the layers below |
//! | `admin.rs` | the operator's routes: bindings (paged, with their credential) and their removal, devices and their revoke, status, TLS reload |
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
//! | `web.rs` | CORS for the browser sign-in routes, the web phone's files under `/phone/` |
//! | `head.rs` | the request-head gate before hyper: its refusals as JSON with `no-store` |
//!
//! Limits: request bodies of at most `token_api.max_body_bytes` (413 above), at most
//! `MAX_CONCURRENT_REQUESTS` served at once, each within `token_api.request_timeout_secs`
//! (503 after), the admin listing at most `MAX_LISTED_AORS` AoRs; `Cache-Control: no-store`
//! on every response. It must not touch SIP sockets.

mod admin;
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
mod web;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

pub use admin::NEXT_CURSOR_HEADER;

use crate::config::AdminToken;
use crate::metrics::Metrics;
use crate::registrar::Location;

/// Most AoRs (or devices) one admin listing page returns, and its default size.
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
    /// The location store's health when it is remote (Redis); `None` otherwise.
    pub store_health: Option<Arc<crate::location_store::StoreHealth>>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// `http.cors_origins`: browser origins allowed on the sign-in routes.
    pub cors_origins: Vec<String>,
    /// `http.serve_web_phone`: the web phone's folder, served under `/phone/`.
    pub web_phone: Option<std::path::PathBuf>,
    /// The WebSocket listeners the web phone may use: (port, WSS).
    pub websockets: Vec<(u16, bool)>,
    /// When the server started (`/admin/v1/status` uptime).
    pub started: Instant,
    /// Reloads the TLS material as SIGHUP does; `None` without TLS listeners.
    pub tls_reload: Option<TlsReload>,
}

/// The TLS reload hook `app` passes in (the API names no transport module): `Err` says which
/// file failed and why.
pub type TlsReload = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

pub fn router(state: ApiState) -> Router {
    let max_body = state.max_body_bytes;
    let timeout = state.request_timeout;
    let cors_origins: Arc<[String]> = state.cors_origins.clone().into();
    let (phone_index, phone_file) = (state.web_phone.clone(), state.web_phone.clone());
    let counted = state.metrics.clone();
    Router::new()
        .route(
            "/phone",
            get(|| async { axum::response::Redirect::permanent("/phone/") }),
        )
        .route(
            "/phone/",
            get(move || web::phone_file(phone_index.clone(), String::new())),
        )
        .route(
            "/phone/config.json",
            get(
                |State(s): State<Arc<ApiState>>, headers: HeaderMap| async move {
                    web::phone_config(s.web_phone.is_some(), &s.websockets, &headers)
                },
            ),
        )
        .route(
            "/phone/{file}",
            get(
                move |axum::extract::Path(file): axum::extract::Path<String>| {
                    web::phone_file(phone_file.clone(), file)
                },
            ),
        )
        .route(
            "/healthz",
            get(|| async { no_store(StatusCode::OK, "ok\n") }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/admin/v1/bindings",
            get(admin::bindings).delete(admin::remove_bindings),
        )
        .route("/admin/v1/devices", get(admin::devices))
        .route("/admin/v1/devices/{username}", delete(admin::revoke_device))
        .route("/admin/v1/status", get(admin::status))
        .route("/admin/v1/tls/reload", post(admin::tls_reload))
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
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| web::cors(cors_origins.clone(), req, next),
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            MAX_CONCURRENT_REQUESTS,
        ))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| count_request(counted.clone(), req, next),
        ))
}

/// Counts every answered request by route and status class (`sipward_http_requests_total`).
async fn count_request(metrics: Metrics, req: Request, next: Next) -> Response {
    let route = crate::metrics::HttpRoute::of(req.uri().path());
    let r = next.run(req).await;
    metrics.http_request(route, r.status().as_u16());
    r
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

/// Ready when the location store (Redis) answered its last write or ping, the device store
/// answers and every issuer's keys are loaded (or when the token API is off).
async fn readyz(State(s): State<Arc<ApiState>>) -> Response {
    match readiness(&s).await {
        Ok(()) => no_store(StatusCode::OK, "ready\n"),
        Err(why) => no_store(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// `/readyz`'s decision: `Err` is the reason given.
async fn readiness(s: &ApiState) -> Result<(), &'static str> {
    if s.store_health.as_ref().is_some_and(|h| !h.is_ok()) {
        return Err("not ready: location store (redis)");
    }
    let Some(api) = &s.token else {
        return Ok(());
    };
    let store_ok = api.store.run(|s| s.ping()).await.is_ok();
    let keys_ok = api.registry.ready();
    match (store_ok, keys_ok) {
        (true, true) => Ok(()),
        (false, _) => Err("not ready: device store"),
        (true, false) => Err("not ready: issuer keys not loaded"),
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
