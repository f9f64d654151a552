//! Signing in: `GET /v1/login-options` (which IdP, which client) and `POST /v1/sip/credentials`,
//! the exchange of an IdP access token for a per-device SIP credential (docs/token-api.md; the
//! order of checks is in `token.rs`).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::server::Peer;
use super::ApiState;
use crate::config::Sso;
use crate::credentials::device::new_username;
use crate::oidc::Rejection;
use crate::store::{IssueOutcome, IssueRequest};

use super::reply::{
    bad_request, json, not_found, rejection_response, retry_after, rfc3339, store_failed,
};
use super::token::{bearer_user, sub_hash, unix_now, user_key, ExchangeOutcome, TokenApi};

/// `refresh_after` is this share of the TTL (docs/token-api.md: 75 %).
const REFRESH_AFTER_PERCENT: u64 = 75;
const MAX_DEVICE_ID: usize = 64;
/// The redirect URI a browser client signs in with, `{origin}` being its page's origin; the
/// web phone (web/) uses it, so the IdP registers it for the login client.
const WEB_PHONE_REDIRECT: &str = "{origin}/phone/callback.html";
const MAX_DEVICE_NAME: usize = 64;
const MAX_PLATFORM: usize = 32;

#[derive(Debug, Deserialize)]
pub(super) struct LoginQuery {
    domain: Option<String>,
}

/// `GET /v1/login-options?domain=D`.
pub(super) async fn login_options(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let Some(api) = &s.token else {
        return not_found();
    };
    let now = Instant::now();
    let source = peer.map(|Extension(Peer(addr))| crate::auth::source_key(addr.ip()));
    if let Some(source) = &source {
        if let Err(after) = api.failures_per_source.refuses(source, now) {
            return retry_after(StatusCode::TOO_MANY_REQUESTS, "rate_limited", after);
        }
    }
    let failed = |response: Response| {
        if let Some(source) = &source {
            api.failures_per_source.record(source, now);
        }
        response
    };
    let Some(domain) = q.domain.map(|d| d.to_ascii_lowercase()) else {
        return failed(bad_request());
    };
    let Some(info) = api.domains.get(&domain) else {
        return failed(not_found());
    };
    let methods: Vec<serde_json::Value> = api
        .registry
        .issuers()
        .filter(|i| info.issuers.contains(&i.config.name))
        .map(|i| {
            let endpoints = i.login_endpoints();
            serde_json::json!({
                "type": "oidc",
                "issuer": i.config.issuer,
                "client_id": i.config.login_client_id,
                "scopes": i.config.login_scopes,
                "audience": i.config.audience,
                "label": i.config.label,
                // Authorization Code + PKCE for a browser (public) client; the endpoints
                // come from the IdP's discovery document (null until it was read).
                "flow": "authorization_code",
                "pkce": "S256",
                "authorization_endpoint": endpoints.as_ref().map(|e| e.authorization.as_str()),
                "token_endpoint": endpoints.as_ref().map(|e| e.token.as_str()),
                "redirect_uri_pattern": WEB_PHONE_REDIRECT,
            })
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({
            "domain": domain,
            "sso": info.sso.as_str(),
            "sso_enforced": info.sso == Sso::Enforce,
            "password_sign_in": info.sso != Sso::Enforce,
            "methods": methods,
            "credentials_endpoint": "/v1/sip/credentials",
        }),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsRequest {
    device_id: String,
    #[serde(default)]
    device_name: Option<String>,
    #[serde(default)]
    platform: Option<String>,
}

impl CredentialsRequest {
    fn valid(&self) -> bool {
        let id_ok = !self.device_id.is_empty()
            && self.device_id.len() <= MAX_DEVICE_ID
            && self
                .device_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let text_ok = |v: &Option<String>, max: usize| {
            v.as_ref()
                .is_none_or(|t| t.chars().count() <= max && !t.chars().any(char::is_control))
        };
        id_ok
            && text_ok(&self.device_name, MAX_DEVICE_NAME)
            && text_ok(&self.platform, MAX_PLATFORM)
    }
}

#[derive(Debug, Serialize)]
struct SipCredential {
    aor: String,
    username: String,
    password: String,
    realm: String,
    algorithms: Vec<String>,
    registrar: String,
}

#[derive(Debug, Serialize)]
struct CredentialsResponse {
    device_id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    sip: SipCredential,
    expires_at: String,
    expires_in: u64,
    refresh_after: u64,
}

/// `POST /v1/sip/credentials`.
pub(super) async fn credentials(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(api) = &s.token else {
        return not_found();
    };
    let started = std::time::Instant::now();
    let (response, outcome) = exchange(api, peer.map(|Extension(p)| p), &headers, &body).await;
    api.metrics.exchange(outcome);
    s.metrics.token_exchange_took(started.elapsed());
    response
}

async fn exchange(
    api: &TokenApi,
    peer: Option<Peer>,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, ExchangeOutcome) {
    let (v, aor, info) = match bearer_user(api, peer, headers, "credentials").await {
        Ok(found) => found,
        Err(e) => return e,
    };
    let log_refusal = |decision: &str, reason: &str| {
        tracing::info!(
            issuer = %v.issuer_name,
            sub = %sub_hash(&v.iss, &v.sub),
            jti = v.jti.as_deref().unwrap_or(""),
            kid = v.kid.as_deref().unwrap_or(""),
            decision,
            reason,
            "credential exchange refused"
        );
    };
    let request: CredentialsRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) => {
            log_refusal("bad_request", "body");
            return (bad_request(), ExchangeOutcome::BadRequest);
        }
    };
    if !request.valid() {
        log_refusal("bad_request", "fields");
        return (bad_request(), ExchangeOutcome::BadRequest);
    }
    let device_key: [u8; 32] = Sha256::new()
        .chain_update(user_key(&v))
        .chain_update(request.device_id.as_bytes())
        .finalize()
        .into();
    if let Err(after) = api.per_device.check(&device_key, Instant::now()) {
        log_refusal("rate_limited", "device");
        return (
            retry_after(StatusCode::TOO_MANY_REQUESTS, "rate_limited", after),
            ExchangeOutcome::RateLimited,
        );
    }
    let now = unix_now();
    let expires_at = now + api.ttl.as_secs();
    let issue = IssueRequest {
        iss: v.iss.clone(),
        sub: v.sub.clone(),
        device_id: request.device_id.clone(),
        aor: aor.as_str().to_owned(),
        realm: aor.domain().to_owned(),
        new_username: new_username(),
        kid: api.devices.keys().current_kid().to_owned(),
        expires_at,
        name: request.device_name.clone(),
        platform: request.platform.clone(),
        now,
        max_devices: api.max_devices,
    };
    let (record, outcome) = match api.store.run(move |s| s.issue(&issue)).await {
        Ok(IssueOutcome::Created(r)) => (r, ExchangeOutcome::Issued),
        Ok(IssueOutcome::Renewed(r)) => (r, ExchangeOutcome::Renewed),
        Ok(IssueOutcome::AorTaken) => {
            api.registry.metrics().rejection(Rejection::UsernameTaken);
            log_refusal("access_denied", Rejection::UsernameTaken.as_str());
            return (
                rejection_response(Rejection::UsernameTaken),
                ExchangeOutcome::AccessDenied,
            );
        }
        Ok(IssueOutcome::DeviceLimitReached) => {
            log_refusal("device_limit", "cap");
            return (
                json(
                    StatusCode::CONFLICT,
                    serde_json::json!({"error": "device_limit_reached"}),
                ),
                ExchangeOutcome::DeviceLimit,
            );
        }
        Err(e) => return (store_failed(&e), ExchangeOutcome::Error),
    };
    api.devices.upsert(&record, now);
    if outcome == ExchangeOutcome::Issued {
        api.metrics.issued.inc();
    }
    api.metrics.active.set(api.devices.len() as i64);
    let Some(password) = api.devices.keys().password(
        &record.current.kid,
        &record.realm,
        &record.username,
        record.current.gen,
        record.current.expires_at,
    ) else {
        tracing::error!("credential key missing right after issue");
        return (
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "server_error"}),
            ),
            ExchangeOutcome::Error,
        );
    };
    tracing::info!(
        issuer = %v.issuer_name,
        sub = %sub_hash(&v.iss, &v.sub),
        jti = v.jti.as_deref().unwrap_or(""),
        kid = v.kid.as_deref().unwrap_or(""),
        device = %record.username,
        gen = record.current.gen,
        decision = outcome.as_str(),
        "credential exchange"
    );
    let action = match outcome {
        ExchangeOutcome::Issued => "credential.issue",
        _ => "credential.renew",
    };
    api.audit.record(
        crate::audit::Event::new(super::token::user_actor(&v), action, "success")
            .target(record.aor.as_str())
            .device(record.device_id.as_str())
            .source(peer.map(|Peer(a)| a.ip()))
            .request(&super::lifecycle::request_id(headers)),
    );
    let expires_in = record.current.expires_at.saturating_sub(now);
    let body = CredentialsResponse {
        device_id: record.device_id.clone(),
        kind: "digest",
        sip: SipCredential {
            aor: record.aor.clone(),
            username: record.username.clone(),
            password,
            realm: record.realm.clone(),
            algorithms: info.algorithms.clone(),
            registrar: info.registrar.clone(),
        },
        expires_at: rfc3339(record.current.expires_at),
        expires_in,
        refresh_after: expires_in * REFRESH_AFTER_PERCENT / 100,
    };
    let status = if outcome == ExchangeOutcome::Issued {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    ((status, Json(body)).into_response(), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_request_fields_are_bounded() {
        let ok = CredentialsRequest {
            device_id: "laptop-7f3a".into(),
            device_name: Some("Alice's laptop".into()),
            platform: Some("linux".into()),
        };
        assert!(ok.valid());
        for bad in ["", "has space", "x/y", &"a".repeat(65)] {
            let r = CredentialsRequest {
                device_id: bad.into(),
                device_name: None,
                platform: None,
            };
            assert!(!r.valid(), "{bad:?}");
        }
        let r = CredentialsRequest {
            device_id: "ok".into(),
            device_name: Some("a\nb".into()),
            platform: None,
        };
        assert!(!r.valid());
    }
}
