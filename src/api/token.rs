//! The token API (docs/token-api.md): login options, the exchange of an IdP access token for a
//! per-device SIP credential, the caller's devices, device revocation and the admin revoke of
//! a user. Errors follow RFC 6750; every token fault gives the same 401 body, the reason goes
//! to metrics and logs only. Logs carry the issuer, a hash of `sub`, `jti`, `kid` and the
//! decision, never a token or password.
//!
//! Order in each Bearer request: per-source failure limit → exactly one `Authorization`
//! header (two or more: 400, RFC 6750 §3.1) → token validation → per-user limit → the AoR
//! ([`UserAor`] from the username claim, in a domain the token API serves) → revocation
//! cutoff → body → per-device limit → store (one subject per AoR) → device index → location.
//! The per-source limit counts only failures (a missing, invalid or refused token, an
//! unknown domain): a company's softphones signing in through one NAT address are limited
//! per user and device, not together, while a source sending bad tokens is stopped before its
//! tokens are even looked at.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use prometheus::{IntCounterVec, IntGauge, Opts};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::aor::{AorError, UserAor};
use super::limit::RateLimiter;
use super::server::Peer;
use super::ApiState;
use crate::config::{Config, Sso};
use crate::credentials::device::{new_username, DeviceIndex};
use crate::metrics::Metrics;
use crate::oidc::{Answer, IssuerRegistry, Purpose, Rejection, Verified};
use crate::registrar::Location;
use crate::store::{DeviceRecord, IssueOutcome, IssueRequest, Store, StoreError};

pub const EXCHANGES: &str = "sipward_token_exchanges_total";
pub const DEVICES_ISSUED: &str = "sipward_devices_issued_total";
pub const DEVICES_REVOKED: &str = "sipward_devices_revoked_total";
pub const DEVICES_ACTIVE: &str = "sipward_devices_active";

/// The one description every token fault gets.
pub const INVALID_TOKEN_DESCRIPTION: &str = "the access token is not valid";
/// `refresh_after` is this share of the TTL (docs/token-api.md: 75 %).
const REFRESH_AFTER_PERCENT: u64 = 75;
const MAX_DEVICE_ID: usize = 64;
const MAX_DEVICE_NAME: usize = 64;
const MAX_PLATFORM: usize = 32;

/// What one exchange (`POST /v1/sip/credentials`) ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeOutcome {
    Issued,
    Renewed,
    MissingToken,
    InvalidToken,
    InsufficientScope,
    AccessDenied,
    Unavailable,
    RateLimited,
    DeviceLimit,
    BadRequest,
    Error,
}

impl ExchangeOutcome {
    const ALL: [ExchangeOutcome; 11] = [
        ExchangeOutcome::Issued,
        ExchangeOutcome::Renewed,
        ExchangeOutcome::MissingToken,
        ExchangeOutcome::InvalidToken,
        ExchangeOutcome::InsufficientScope,
        ExchangeOutcome::AccessDenied,
        ExchangeOutcome::Unavailable,
        ExchangeOutcome::RateLimited,
        ExchangeOutcome::DeviceLimit,
        ExchangeOutcome::BadRequest,
        ExchangeOutcome::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ExchangeOutcome::Issued => "issued",
            ExchangeOutcome::Renewed => "renewed",
            ExchangeOutcome::MissingToken => "missing_token",
            ExchangeOutcome::InvalidToken => "invalid_token",
            ExchangeOutcome::InsufficientScope => "insufficient_scope",
            ExchangeOutcome::AccessDenied => "access_denied",
            ExchangeOutcome::Unavailable => "unavailable",
            ExchangeOutcome::RateLimited => "rate_limited",
            ExchangeOutcome::DeviceLimit => "device_limit",
            ExchangeOutcome::BadRequest => "bad_request",
            ExchangeOutcome::Error => "error",
        }
    }
}

/// Who revoked a device.
#[derive(Debug, Clone, Copy)]
pub enum RevokedBy {
    User,
    Admin,
}

#[derive(Clone)]
pub struct TokenMetrics {
    exchanges: IntCounterVec,
    issued: prometheus::IntCounter,
    revoked: IntCounterVec,
    pub active: IntGauge,
}

impl TokenMetrics {
    pub fn new(metrics: &Metrics) -> TokenMetrics {
        let r = metrics.registry();
        let exchanges = IntCounterVec::new(
            Opts::new(EXCHANGES, "Credential exchanges, by outcome"),
            &["outcome"],
        )
        .expect("static metric definition");
        for o in ExchangeOutcome::ALL {
            exchanges.with_label_values(&[o.as_str()]);
        }
        let issued = prometheus::IntCounter::new(DEVICES_ISSUED, "Device records created")
            .expect("static metric definition");
        let revoked = IntCounterVec::new(
            Opts::new(DEVICES_REVOKED, "Device records revoked, by who"),
            &["by"],
        )
        .expect("static metric definition");
        revoked.with_label_values(&["user"]);
        revoked.with_label_values(&["admin"]);
        let active = IntGauge::new(
            DEVICES_ACTIVE,
            "Device credentials the registrar accepts now",
        )
        .expect("static metric definition");
        for c in [
            Box::new(exchanges.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(issued.clone()),
            Box::new(revoked.clone()),
            Box::new(active.clone()),
        ] {
            r.register(c).expect("unique metric name");
        }
        TokenMetrics {
            exchanges,
            issued,
            revoked,
            active,
        }
    }

    fn exchange(&self, o: ExchangeOutcome) {
        self.exchanges.with_label_values(&[o.as_str()]).inc();
    }

    fn revoked(&self, by: RevokedBy, n: usize) {
        let label = match by {
            RevokedBy::User => "user",
            RevokedBy::Admin => "admin",
        };
        self.revoked.with_label_values(&[label]).inc_by(n as u64);
    }
}

/// Per-domain facts the API answers with.
#[derive(Debug, Clone)]
pub struct DomainInfo {
    pub sso: Sso,
    pub registrar: String,
    /// Digest algorithms, in the challenge order.
    pub algorithms: Vec<String>,
    pub issuers: Vec<String>,
}

/// Everything the token routes need. Built by `app`.
pub struct TokenApi {
    pub registry: IssuerRegistry,
    pub store: Store,
    pub devices: DeviceIndex,
    pub domains: HashMap<String, DomainInfo>,
    pub ttl: Duration,
    pub max_devices: usize,
    /// Failures per source address (see the file header), not requests.
    pub failures_per_source: RateLimiter<std::net::IpAddr>,
    pub per_user: RateLimiter<[u8; 32]>,
    pub per_device: RateLimiter<[u8; 32]>,
    pub metrics: TokenMetrics,
}

impl TokenApi {
    pub fn new(
        config: &Config,
        registry: IssuerRegistry,
        store: Store,
        devices: DeviceIndex,
        metrics: TokenMetrics,
    ) -> TokenApi {
        let t = &config.token_api;
        let domains = config
            .domains
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    DomainInfo {
                        sso: d.sso,
                        registrar: d.registrar.clone(),
                        algorithms: d.algorithms.iter().map(|a| a.to_string()).collect(),
                        issuers: d.issuers.clone(),
                    },
                )
            })
            .collect();
        TokenApi {
            registry,
            store,
            devices,
            domains,
            ttl: t.credential_ttl,
            max_devices: t.max_devices_per_user,
            failures_per_source: RateLimiter::per_minute(t.failures_per_source_per_minute),
            per_user: RateLimiter::per_minute(t.rate_per_user_per_minute),
            per_device: RateLimiter::per_minute(t.rate_per_device_per_minute),
            metrics,
        }
    }

    /// Drops finished rate-limit windows (called by the app's purge task).
    pub fn purge(&self, now: Instant) {
        self.failures_per_source.purge(now);
        self.per_user.purge(now);
        self.per_device.purge(now);
        self.metrics.active.set(self.devices.len() as i64);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---- Responses ----

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

fn with_header(mut r: Response, name: header::HeaderName, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

/// 401 without an error code (RFC 6750 §3.1: no credentials were sent).
fn missing_token() -> Response {
    with_header(
        json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "unauthorized"}),
        ),
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"sipward\"",
    )
}

fn invalid_token() -> Response {
    with_header(
        json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_token", "error_description": INVALID_TOKEN_DESCRIPTION}),
        ),
        header::WWW_AUTHENTICATE,
        &format!(
            "Bearer realm=\"sipward\", error=\"invalid_token\", error_description=\"{INVALID_TOKEN_DESCRIPTION}\""
        ),
    )
}

pub(super) fn bad_request() -> Response {
    with_header(
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request"}),
        ),
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"sipward\", error=\"invalid_request\"",
    )
}

fn retry_after(status: StatusCode, error: &str, after: Duration) -> Response {
    let secs = after.as_secs().max(1).to_string();
    with_header(
        json(status, serde_json::json!({"error": error})),
        header::RETRY_AFTER,
        &secs,
    )
}

fn rejection_response(r: Rejection) -> Response {
    match r.answer() {
        Answer::InvalidToken => invalid_token(),
        Answer::InsufficientScope => with_header(
            json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "insufficient_scope"}),
            ),
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"sipward\", error=\"insufficient_scope\"",
        ),
        Answer::AccessDenied => json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": "access_denied"}),
        ),
        Answer::Unavailable => retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            Duration::from_secs(5),
        ),
    }
}

fn outcome_of(r: Rejection) -> ExchangeOutcome {
    match r.answer() {
        Answer::InvalidToken => ExchangeOutcome::InvalidToken,
        Answer::InsufficientScope => ExchangeOutcome::InsufficientScope,
        Answer::AccessDenied => ExchangeOutcome::AccessDenied,
        Answer::Unavailable => ExchangeOutcome::Unavailable,
    }
}

fn store_failed(e: &StoreError) -> Response {
    tracing::error!(error = %e, "device store failed");
    retry_after(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        Duration::from_secs(5),
    )
}

pub(super) fn not_found() -> Response {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"error": "not_found"}),
    )
}

/// A request with more than one `Authorization` header: malformed (RFC 6750 §3.1), answered
/// 400 `invalid_request` whatever the headers hold, so no order of a valid and a forged
/// token decides anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DuplicateAuthorization;

/// The bearer token: `Ok(None)` when there is no `Authorization` header or it is not the
/// `Bearer` scheme (case-insensitive) with a token.
pub(super) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, DuplicateAuthorization> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(header::AUTHORIZATION) {
            Err(DuplicateAuthorization)
        } else {
            Ok(None)
        };
    };
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    });
    Ok(token)
}

/// A short, stable, non-reversible id for logs: SHA-256 of `iss`, NUL, `sub`, first 8 bytes.
fn sub_hash(iss: &str, sub: &str) -> String {
    let d = Sha256::new()
        .chain_update(iss)
        .chain_update([0])
        .chain_update(sub)
        .finalize();
    hex::encode(&d[..8])
}

fn user_key(v: &Verified) -> [u8; 32] {
    Sha256::new()
        .chain_update(&v.iss)
        .chain_update([0])
        .chain_update(&v.sub)
        .finalize()
        .into()
}

/// RFC 3339 UTC for Unix seconds (proleptic Gregorian, H. Hinnant's civil_from_days).
pub(super) fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Per-source limit, bearer, validation, per-user limit: the common start of the Bearer
/// routes. `Err` is the response to send.
async fn authenticate(
    api: &TokenApi,
    peer: Option<Peer>,
    headers: &HeaderMap,
    purpose: Purpose,
    route: &'static str,
) -> Result<Verified, (Response, ExchangeOutcome)> {
    let now = Instant::now();
    let source = peer.map(|Peer(addr)| crate::auth::source_key(addr.ip()));
    if let Some(source) = &source {
        if let Err(after) = api.failures_per_source.refuses(source, now) {
            return Err((
                retry_after(StatusCode::TOO_MANY_REQUESTS, "rate_limited", after),
                ExchangeOutcome::RateLimited,
            ));
        }
    }
    let failed = || {
        if let Some(source) = &source {
            api.failures_per_source.record(source, now);
        }
    };
    let token = match bearer(headers) {
        Ok(Some(token)) => token,
        Ok(None) => {
            failed();
            return Err((missing_token(), ExchangeOutcome::MissingToken));
        }
        Err(DuplicateAuthorization) => {
            failed();
            return Err((bad_request(), ExchangeOutcome::BadRequest));
        }
    };
    let verified = match api.registry.validate(token, purpose, unix_now()).await {
        Ok(v) => v,
        Err(r) => {
            failed();
            tracing::info!(
                route,
                decision = "refused",
                reason = r.as_str(),
                "bearer token refused"
            );
            return Err((rejection_response(r), outcome_of(r)));
        }
    };
    if let Err(after) = api.per_user.check(&user_key(&verified), now) {
        tracing::info!(
            route,
            issuer = %verified.issuer_name,
            sub = %sub_hash(&verified.iss, &verified.sub),
            decision = "rate_limited",
            "per-user limit"
        );
        return Err((
            retry_after(StatusCode::TOO_MANY_REQUESTS, "rate_limited", after),
            ExchangeOutcome::RateLimited,
        ));
    }
    Ok(verified)
}

/// The caller's AoR and the checks every Bearer route shares after [`authenticate`]: the
/// username claim maps to a [`UserAor`] in one of the issuer's domains that the token API
/// serves (`sso` not `off`), and the token was not issued before a revoke of that user.
///
/// The cutoff is compared with the leeway added: a token minted before the revoke by an IdP
/// whose clock runs ahead carries an `iat` up to the leeway after the revoke time and is
/// still refused (the price: a user re-provisioned at once waits out the leeway).
async fn user_of<'a>(
    api: &'a TokenApi,
    v: &Verified,
    route: &'static str,
) -> Result<(UserAor, &'a DomainInfo), (Response, ExchangeOutcome)> {
    let refuse = |rejection: Rejection, why: &str| {
        api.registry.metrics().rejection(rejection);
        tracing::info!(
            route,
            issuer = %v.issuer_name,
            sub = %sub_hash(&v.iss, &v.sub),
            jti = v.jti.as_deref().unwrap_or(""),
            decision = "access_denied",
            reason = rejection.as_str(),
            why,
            "bearer token refused"
        );
        (rejection_response(rejection), ExchangeOutcome::AccessDenied)
    };
    let claim = v.username.as_deref().unwrap_or_default();
    let aor = match UserAor::from_claim(claim, &v.issuer_domains) {
        Ok(aor) => aor,
        Err(e) => return Err(refuse(Rejection::Username, aor_error(e))),
    };
    let Some(info) = api.domains.get(aor.domain()).filter(|d| d.sso != Sso::Off) else {
        return Err(refuse(Rejection::Username, "domain without the token API"));
    };
    let key = aor.as_str().to_owned();
    match api.store.run(move |s| s.aor_revoked_before(&key)).await {
        Ok(Some(t)) if v.iat <= t.saturating_add(api.registry.leeway().as_secs()) => {
            Err(refuse(Rejection::UserRevoked, "issued before the revoke"))
        }
        Ok(_) => Ok((aor, info)),
        Err(e) => Err((store_failed(&e), ExchangeOutcome::Error)),
    }
}

fn aor_error(e: AorError) -> &'static str {
    match e {
        AorError::NoDomain => "no domain",
        AorError::User => "user part",
        AorError::Domain => "domain",
        AorError::NotServed => "domain not the issuer's",
    }
}

// ---- Routes ----

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
            serde_json::json!({
                "type": "oidc",
                "issuer": i.config.issuer,
                "client_id": i.config.login_client_id,
                "scopes": i.config.login_scopes,
                "audience": i.config.audience,
                "label": i.config.label,
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
    let (response, outcome) = exchange(api, peer.map(|Extension(p)| p), &headers, &body).await;
    api.metrics.exchange(outcome);
    response
}

async fn exchange(
    api: &TokenApi,
    peer: Option<Peer>,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, ExchangeOutcome) {
    let v = match authenticate(api, peer, headers, Purpose::Credentials, "credentials").await {
        Ok(v) => v,
        Err(e) => return e,
    };
    let (aor, info) = match user_of(api, &v, "credentials").await {
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

#[derive(Debug, Serialize)]
struct DeviceView {
    device_id: String,
    name: Option<String>,
    platform: Option<String>,
    aor: String,
    username: String,
    created: String,
    last_register: Option<String>,
    expires_at: String,
    expired: bool,
}

/// `GET /v1/sip/devices`.
pub(super) async fn devices(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    let Some(api) = &s.token else {
        return not_found();
    };
    let v = match authenticate(
        api,
        peer.map(|Extension(p)| p),
        &headers,
        Purpose::Credentials,
        "devices",
    )
    .await
    {
        Ok(v) => v,
        Err((r, _)) => return r,
    };
    if let Err((r, _)) = user_of(api, &v, "devices").await {
        return r;
    }
    let (iss, sub) = (v.iss.clone(), v.sub.clone());
    let records = match api.store.run(move |s| s.user_devices(&iss, &sub)).await {
        Ok(r) => r,
        Err(e) => return store_failed(&e),
    };
    let now = unix_now();
    let list: Vec<DeviceView> = records
        .into_iter()
        .map(|r| DeviceView {
            expired: !r.is_active(now),
            device_id: r.device_id,
            name: r.name,
            platform: r.platform,
            aor: r.aor,
            username: r.username,
            created: rfc3339(r.created),
            last_register: r.last_register.map(rfc3339),
            expires_at: rfc3339(r.current.expires_at),
        })
        .collect();
    json(StatusCode::OK, serde_json::json!({"devices": list}))
}

/// Revokes in the index and removes the bindings the devices made. Returns bindings removed.
fn drop_devices(
    api: &TokenApi,
    location: &Location,
    metrics: &Metrics,
    records: &[DeviceRecord],
) -> usize {
    let mut removed = 0;
    for r in records {
        // Index first, bindings second: see `registrar::Credential` for why no REGISTER
        // verified with this device can store a binding after this returns.
        api.devices.revoke(&r.username);
        // The store holds the canonical text a `UserAor` wrote; one that no longer parses
        // names no binding.
        if let Some(aor) = crate::sip::Aor::parse(&r.aor) {
            removed += location.remove_credential(&aor, &r.username);
        }
    }
    metrics.bindings.set(location.binding_count() as i64);
    metrics.aors.set(location.aor_count() as i64);
    api.metrics.active.set(api.devices.len() as i64);
    removed
}

/// `DELETE /v1/sip/devices/{device_id}`.
pub(super) async fn delete_device(
    State(s): State<Arc<ApiState>>,
    peer: Option<Extension<Peer>>,
    Path(device_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(api) = &s.token else {
        return not_found();
    };
    let v = match authenticate(
        api,
        peer.map(|Extension(p)| p),
        &headers,
        Purpose::Credentials,
        "delete_device",
    )
    .await
    {
        Ok(v) => v,
        Err((r, _)) => return r,
    };
    if let Err((r, _)) = user_of(api, &v, "delete_device").await {
        return r;
    }
    let (iss, sub, id) = (v.iss.clone(), v.sub.clone(), device_id.clone());
    let now = unix_now();
    let found = match api
        .store
        .run(move |s| s.revoke_device(&iss, &sub, &id, now))
        .await
    {
        Ok(f) => f,
        Err(e) => return store_failed(&e),
    };
    let Some(record) = found else {
        return not_found();
    };
    let removed = drop_devices(api, &s.location, &s.metrics, std::slice::from_ref(&record));
    api.metrics.revoked(RevokedBy::User, 1);
    tracing::info!(
        issuer = %v.issuer_name,
        sub = %sub_hash(&v.iss, &v.sub),
        device = %record.username,
        bindings_removed = removed,
        decision = "revoked",
        "device revoked by its user"
    );
    json(
        StatusCode::OK,
        serde_json::json!({"device_id": record.device_id, "revoked": true, "bindings_removed": removed}),
    )
}

/// `POST /admin/v1/users/{user}/revoke`: every device of the AoR `user` (`alice@example.com`
/// or `sip:alice@example.com`, canonicalised as the exchange does: [`UserAor`]) is revoked,
/// every binding of the AoR removed, and tokens issued until now (plus the leeway, see
/// [`user_of`]) may not get new credentials for it. Admin token, or an SSO admin of the
/// domain. Order: credentials (401/403) → the AoR (400 unusable, 404 a domain without the
/// token API) → the SSO admin's domain (403). A user of ours without devices is revoked too:
/// its earlier tokens are refused.
pub(super) async fn revoke_user(
    State(s): State<Arc<ApiState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(api) = &s.token else {
        return not_found();
    };
    let presented = match bearer(&headers) {
        Ok(Some(p)) => p,
        Ok(None) => return missing_token(),
        Err(DuplicateAuthorization) => return bad_request(),
    };
    let by_admin_token = s
        .admin_token
        .as_ref()
        .is_some_and(|token| token.matches(presented.as_bytes()));
    let sso_admin = if by_admin_token {
        None
    } else {
        match api
            .registry
            .validate(presented, Purpose::Admin, unix_now())
            .await
        {
            Ok(v) => Some(v),
            Err(r) => return rejection_response(r),
        }
    };
    let aor = match UserAor::from_admin(&user) {
        Ok(aor) => aor,
        Err(e) => {
            tracing::debug!(reason = aor_error(e), "admin revoke: not a token API AoR");
            return bad_request();
        }
    };
    if !api
        .domains
        .get(aor.domain())
        .is_some_and(|d| d.sso != Sso::Off)
    {
        return not_found();
    }
    let actor = match &sso_admin {
        None => "admin-token".to_owned(),
        Some(v) if v.admin_domains.iter().any(|d| d == aor.domain()) => {
            format!("{}:{}", v.issuer_name, sub_hash(&v.iss, &v.sub))
        }
        Some(_) => return rejection_response(Rejection::Scope),
    };
    let now = unix_now();
    let target = aor.as_str().to_owned();
    let records = match api.store.run(move |s| s.revoke_aor(&target, now)).await {
        Ok(r) => r,
        Err(e) => return store_failed(&e),
    };
    let mut removed = drop_devices(api, &s.location, &s.metrics, &records);
    removed += s.location.remove_aor(aor.aor());
    s.metrics.bindings.set(s.location.binding_count() as i64);
    s.metrics.aors.set(s.location.aor_count() as i64);
    api.metrics.revoked(RevokedBy::Admin, records.len());
    tracing::info!(aor = %aor, actor, devices = records.len(), bindings_removed = removed, decision = "revoked", "user revoked");
    json(
        StatusCode::OK,
        serde_json::json!({"aor": aor.as_str(), "devices_revoked": records.len(), "bindings_removed": removed}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_436_490), "2026-11-23T12:21:30Z");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Ok(None));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Ok(Some("abc")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), Ok(None));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), Ok(None));
    }

    #[test]
    fn two_authorization_headers_are_refused_in_either_order() {
        for (first, second) in [("Bearer good", "Bearer forged"), ("Basic x", "Bearer good")] {
            let mut h = HeaderMap::new();
            h.append(header::AUTHORIZATION, HeaderValue::from_static(first));
            h.append(header::AUTHORIZATION, HeaderValue::from_static(second));
            assert_eq!(bearer(&h), Err(DuplicateAuthorization));
        }
    }

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
