//! The HTTP side: health, readiness, Prometheus metrics, and the admin bindings view
//! (the operator's `ul.dump`). The token API joins this router in a later issue.
//!
//! Limits: request bodies are not read by these routes (GET only), at most
//! `MAX_CONCURRENT_REQUESTS` are served at once, and the admin listing returns at most
//! `MAX_LISTED_AORS` AoRs. It must not touch SIP sockets.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::config::AdminToken;
use crate::metrics::Metrics;
use crate::registrar::{Aor, Location};

/// Most AoRs one admin listing returns.
pub const MAX_LISTED_AORS: usize = 1000;
/// Requests served at once; more wait in the listener backlog.
pub const MAX_CONCURRENT_REQUESTS: usize = 256;

#[derive(Clone)]
pub struct ApiState {
    pub metrics: Metrics,
    pub location: Location,
    pub admin_token: Option<AdminToken>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { no_store(StatusCode::OK, "ok\n") }),
        )
        .route(
            "/readyz",
            get(|| async { no_store(StatusCode::OK, "ready\n") }),
        )
        .route("/metrics", get(metrics))
        .route("/admin/v1/bindings", get(bindings))
        .with_state(Arc::new(state))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            MAX_CONCURRENT_REQUESTS,
        ))
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
    headers: HeaderMap,
    Query(q): Query<BindingsQuery>,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
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
    let filter = match q.aor.as_deref().map(canonical_aor) {
        Some(Some(aor)) => Some(Aor::from_canonical(&aor)),
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

/// `alice@example.test` or `sip:alice@example.test` → the canonical AoR.
fn canonical_aor(text: &str) -> Option<String> {
    let with_scheme = if text.contains(':') {
        text.to_string()
    } else {
        format!("sip:{text}")
    };
    crate::sip::Uri::parse(&with_scheme).ok()?.aor()
}
