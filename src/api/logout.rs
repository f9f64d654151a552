//! `POST /oidc/backchannel-logout` (OpenID Connect Back-Channel Logout 1.0 §2.5): the IdP
//! posts a `logout_token`; a valid one (`crate::oidc::logout`) revokes every device of its
//! `sub` when the issuer's `[[backchannel_logout]]` says `revoke_devices_on_logout = true`
//! (sipward keeps no sessions, so a token naming only `sid` revokes nothing and is recorded).
//! 200 when done, 400 for any refused token (the reason goes to logs and the audit trail),
//! `Cache-Control: no-store` like every answer.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::devices::revoke_subject;
use super::lifecycle::request_id;
use super::reply::{json, not_found, store_failed};
use super::server::Peer;
use super::token::{sub_hash, unix_now, RevokedBy};
use super::ApiState;
use crate::oidc::logout;

#[derive(Debug, Deserialize)]
pub(super) struct LogoutForm {
    logout_token: String,
}

pub(super) async fn backchannel_logout(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let Some(api) = &s.token else {
        return not_found();
    };
    let source = peer.map(|Extension(Peer(a))| a.ip());
    let request = request_id(&headers);
    let refused = |reason: &str| {
        tracing::info!(decision = "refused", reason, "back-channel logout refused");
        api.audit.record(
            crate::audit::Event::new("backchannel", "user.logout", "refused")
                .source(source)
                .request(&request),
        );
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request"}),
        )
    };
    let Ok(Form(form)) = form else {
        return refused("no logout_token form field");
    };
    let settings = |issuer_name: &str| {
        api.logout
            .iter()
            .find(|b| b.issuer == issuer_name)
            .map(|b| b.client_id.clone())
    };
    let now = unix_now();
    let l = match logout::validate(
        &api.registry,
        &form.logout_token,
        settings,
        &api.seen_logout_jtis,
        now,
    )
    .await
    {
        Ok(l) => l,
        Err(r) => return refused(r.as_str()),
    };
    let revoke = api
        .logout
        .iter()
        .any(|b| b.issuer == l.issuer_name && b.revoke_devices_on_logout);
    let mut event = crate::audit::Event::new(
        format!("backchannel:{}", l.issuer_name),
        "user.logout",
        "success",
    )
    .source(source)
    .request(&request);
    let (mut devices, mut bindings) = (0, 0);
    if let Some(sub) = &l.sub {
        event = event.target(format!("user:{}:{}", l.issuer_name, sub_hash(&l.iss, sub)));
        if revoke {
            match revoke_subject(api, &s.location, &l.iss, sub, now).await {
                Ok((d, b)) => (devices, bindings) = (d, b),
                Err(e) => return store_failed(&e),
            }
            api.metrics.revoked(RevokedBy::Logout, devices);
        }
    }
    tracing::info!(
        issuer = %l.issuer_name,
        sub = %l.sub.as_deref().map(|sub| sub_hash(&l.iss, sub)).unwrap_or_default(),
        has_sid = l.sid.is_some(),
        devices,
        bindings_removed = bindings,
        decision = if revoke { "revoked" } else { "recorded" },
        "back-channel logout"
    );
    api.audit.record(event);
    StatusCode::OK.into_response()
}
