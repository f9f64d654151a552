//! `GET /admin/v1/audit` (the audit trail's reader, for `admin` and `auditor`) and the
//! break-glass record: every use of the static admin token is logged at WARN, counted
//! (`sipward_admin_break_glass_total`) and written to the audit trail.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use super::lifecycle::request_id;
use super::reply::{
    bad_request, bearer, json, missing_token, not_found, rejection_response, DuplicateAuthorization,
};
use super::server::Peer;
use super::token::{unix_now, TokenApi};
use super::ApiState;
use crate::audit::{read, Event};
use crate::oidc::{Purpose, Rejection};

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
        Event::new("admin-token", "admin.break_glass", "success")
            .target(route)
            .source(peer.map(|Peer(a)| a.ip()))
            .request(&request_id(headers)),
    );
}

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
    let presented = match bearer(&headers) {
        Ok(Some(p)) => p,
        Ok(None) => return missing_token(),
        Err(DuplicateAuthorization) => return bad_request(),
    };
    if s.admin_token
        .as_ref()
        .is_some_and(|t| t.matches(presented.as_bytes()))
    {
        break_glass(api, "audit", peer, &headers);
    } else {
        match api
            .registry
            .validate(presented, Purpose::Admin, unix_now())
            .await
        {
            Ok(v) if !v.admin_domains.is_empty() => {}
            Ok(_) => return rejection_response(Rejection::Scope),
            Err(r) => return rejection_response(r),
        }
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
