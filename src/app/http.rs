//! The HTTP side's wiring: health, readiness, metrics, admin, the token API and the web
//! phone on the bound HTTP listener, from the parts `app::start` built.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registrar::Location;

/// What the HTTP side serves from: the shared handles, and the TLS reload hook for the admin
/// API (`None` without TLS listeners).
pub(super) struct HttpParts {
    pub(super) metrics: Metrics,
    pub(super) location: Location,
    pub(super) token_api: Option<Arc<crate::api::token::TokenApi>>,
    pub(super) tls_reload: Option<crate::api::TlsReload>,
    /// The WebSocket listeners the web phone may use: (bound port, WSS).
    pub(super) websockets: Vec<(u16, bool)>,
    /// The location store's health when the store is remote (Redis).
    pub(super) store_health: Option<Arc<crate::location_store::StoreHealth>>,
}

/// Serves health, metrics, admin and (when on) the token API on the bound HTTP listener
/// until shutdown.
pub(super) fn serve_http(
    listener: tokio::net::TcpListener,
    config: &Config,
    parts: HttpParts,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    let HttpParts {
        metrics,
        location,
        token_api,
        tls_reload,
        websockets,
        store_health,
    } = parts;
    let t = &config.token_api;
    let (max_body_bytes, request_timeout, max_header_bytes) = match token_api {
        Some(_) => (t.max_body_bytes, t.request_timeout, t.max_header_bytes),
        None => (
            crate::api::DEFAULT_MAX_BODY_BYTES,
            crate::api::DEFAULT_REQUEST_TIMEOUT,
            crate::api::DEFAULT_MAX_HEADER_BYTES,
        ),
    };
    let app = crate::api::router(crate::api::ApiState {
        metrics,
        location,
        admin_token: config.http.admin_token.clone(),
        token: token_api,
        store_health,
        max_body_bytes,
        request_timeout,
        cors_origins: config.http.cors_origins.clone(),
        web_phone: config.http.web_phone.clone(),
        websockets,
        started: std::time::Instant::now(),
        tls_reload,
    });
    tracker.spawn(crate::api::server::serve(
        listener,
        app,
        crate::api::server::HttpLimits { max_header_bytes },
        shutdown.clone(),
        tracker.clone(),
    ));
}
