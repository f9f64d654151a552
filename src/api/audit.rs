//! `GET /admin/v1/audit`: the audit trail's reader, for `admin`, `auditor` and the
//! break-glass token (`roles.rs`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use super::reply::{json, not_found};
use super::server::Peer;
use super::ApiState;
use crate::audit::read;

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    action: Option<String>,
    actor: Option<String>,
    outcome: Option<String>,
    target: Option<String>,
    cursor: Option<u64>,
    limit: Option<usize>,
}

/// `GET /admin/v1/audit?action=&actor=&outcome=&target=&cursor=&limit=`.
pub(super) async fn audit(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let Some(api) = &s.token else {
        return not_found();
    };
    let peer = peer.map(|Extension(p)| p);
    if let Err(r) = super::roles::reader(&s, api, &headers, peer, "audit").await {
        return r;
    }
    let Some(path) = api.audit.path().map(std::path::Path::to_owned) else {
        return not_found();
    };
    let query = read::Query {
        action: q.action,
        actor: q.actor,
        outcome: q.outcome,
        target: q.target,
        cursor: q.cursor.unwrap_or(0),
        limit: q.limit.unwrap_or(100),
    };
    match tokio::task::spawn_blocking(move || read::read(&path, &query)).await {
        Ok(Ok(page)) => json(
            StatusCode::OK,
            serde_json::json!({"items": page.items, "next_cursor": page.next_cursor}),
        ),
        _ => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "temporarily_unavailable"}),
        ),
    }
}
