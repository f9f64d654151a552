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

//!
//! | file | owns |
//! | --- | --- |
//! | `token.rs` | the token API's state and metrics, and the common start of every Bearer route (`bearer_user`: `authenticate`, then `user_of`) |
//! | `exchange.rs` | `GET /v1/login-options` and `POST /v1/sip/credentials` |
//! | `devices.rs` | `GET /v1/sip/devices`, `DELETE /v1/sip/devices/{id}`, the admin revoke of a user |
//! | `reply.rs` | the HTTP answers and the Bearer header |

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use prometheus::{IntCounterVec, IntGauge, Opts};
use sha2::{Digest as _, Sha256};

use super::aor::{AorError, UserAor};
use super::limit::RateLimiter;
use super::server::Peer;
use crate::config::{Config, Sso};
use crate::credentials::device::DeviceIndex;
use crate::metrics::Metrics;
use crate::oidc::{Answer, IssuerRegistry, Purpose, Rejection, Verified};
use crate::store::Store;

use super::reply::{
    bad_request, bearer, missing_token, rejection_response, retry_after, store_failed,
    DuplicateAuthorization,
};

pub use super::reply::INVALID_TOKEN_DESCRIPTION;

pub const EXCHANGES: &str = "sipward_token_exchanges_total";
pub const DEVICES_ISSUED: &str = "sipward_devices_issued_total";
pub const DEVICES_REVOKED: &str = "sipward_devices_revoked_total";
pub const DEVICES_ACTIVE: &str = "sipward_devices_active";
pub const BREAK_GLASS: &str = "sipward_admin_break_glass_total";

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

    pub(super) fn as_str(self) -> &'static str {
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
    /// The IdP deprovisioned the user through SCIM.
    Scim,
    /// An OIDC back-channel logout.
    Logout,
}

#[derive(Clone)]
pub struct TokenMetrics {
    exchanges: IntCounterVec,
    pub(super) issued: prometheus::IntCounter,
    revoked: IntCounterVec,
    pub active: IntGauge,
    /// Uses of the static admin token (break-glass).
    pub(super) break_glass: prometheus::IntCounter,
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
        revoked.with_label_values(&["scim"]);
        revoked.with_label_values(&["logout"]);
        let active = IntGauge::new(
            DEVICES_ACTIVE,
            "Device credentials the registrar accepts now",
        )
        .expect("static metric definition");
        let break_glass = prometheus::IntCounter::new(
            BREAK_GLASS,
            "Uses of the static admin token (break-glass)",
        )
        .expect("static metric definition");
        for c in [
            Box::new(break_glass.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(exchanges.clone()),
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
            break_glass,
        }
    }

    pub(super) fn exchange(&self, o: ExchangeOutcome) {
        self.exchanges.with_label_values(&[o.as_str()]).inc();
    }

    pub(super) fn revoked(&self, by: RevokedBy, n: usize) {
        let label = match by {
            RevokedBy::User => "user",
            RevokedBy::Admin => "admin",
            RevokedBy::Scim => "scim",
            RevokedBy::Logout => "logout",
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
    /// `[[scim]]` providers (issue 20); empty = the SCIM routes answer 401.
    pub scim: Vec<super::lifecycle::Provider>,
    /// Users a SCIM provider deprovisioned: refused by every Bearer route.
    pub deprovisioned: super::lifecycle::Deprovisioned,
    /// The audit trail (`[audit]`); disabled when no file is configured.
    pub audit: crate::audit::AuditLog,
    /// `[[backchannel_logout]]` per issuer.
    pub logout: Vec<crate::config::BackchannelLogout>,
    /// Logout token `jti`s seen (replay).
    pub seen_logout_jtis: crate::oidc::logout::SeenJtis,
    /// `[[roles]]` per issuer.
    pub roles: Vec<crate::config::RoleMapping>,
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
            scim: super::lifecycle::providers(config),
            deprovisioned: super::lifecycle::Deprovisioned::default(),
            audit: crate::audit::AuditLog::disabled(),
            logout: config.backchannel_logout.clone(),
            seen_logout_jtis: crate::oidc::logout::SeenJtis::default(),
            roles: config.roles.clone(),
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
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn outcome_of(r: Rejection) -> ExchangeOutcome {
    match r.answer() {
        Answer::InvalidToken => ExchangeOutcome::InvalidToken,
        Answer::InsufficientScope => ExchangeOutcome::InsufficientScope,
        Answer::AccessDenied => ExchangeOutcome::AccessDenied,
        Answer::Unavailable => ExchangeOutcome::Unavailable,
    }
}

/// A short, stable, non-reversible id for logs: SHA-256 of `iss`, NUL, `sub`, first 8 bytes.
pub(super) fn sub_hash(iss: &str, sub: &str) -> String {
    let d = Sha256::new()
        .chain_update(iss)
        .chain_update([0])
        .chain_update(sub)
        .finalize();
    hex::encode(&d[..8])
}

/// The audit actor of a token's user: `user:<issuer>:<hash of sub>`.
pub(super) fn user_actor(v: &Verified) -> String {
    format!("user:{}:{}", v.issuer_name, sub_hash(&v.iss, &v.sub))
}

pub(super) fn user_key(v: &Verified) -> [u8; 32] {
    Sha256::new()
        .chain_update(&v.iss)
        .chain_update([0])
        .chain_update(&v.sub)
        .finalize()
        .into()
}

/// The common start of the Bearer routes (`route` names one in logs): [`authenticate`] for
/// credentials, then [`user_of`]. `Ok` is the validated token, the caller's AoR and its
/// domain; `Err` is the response to send and the exchange outcome it counts as.
pub(super) async fn bearer_user<'a>(
    api: &'a TokenApi,
    peer: Option<Peer>,
    headers: &HeaderMap,
    route: &'static str,
) -> Result<(Verified, UserAor, &'a DomainInfo), (Response, ExchangeOutcome)> {
    let verified = authenticate(api, peer, headers, Purpose::Credentials, route).await?;
    let (aor, info) = user_of(api, &verified, route).await?;
    Ok((verified, aor, info))
}

/// Per-source limit, bearer, validation, per-user limit. `Err` is the response to send.
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
    if api.deprovisioned.refuses(&user_key(v), aor.as_str()) {
        if route == "credentials" {
            api.audit.record(
                crate::audit::Event::new(user_actor(v), "credential.issue", "refused")
                    .target(aor.as_str()),
            );
        }
        return Err(refuse(Rejection::UserRevoked, "deprovisioned by SCIM"));
    }
    let key = aor.as_str().to_owned();
    match api.store.run(move |s| s.aor_revoked_before(&key)).await {
        Ok(Some(t)) if v.iat <= t.saturating_add(api.registry.leeway().as_secs()) => {
            Err(refuse(Rejection::UserRevoked, "issued before the revoke"))
        }
        Ok(_) => Ok((aor, info)),
        Err(e) => Err((store_failed(&e), ExchangeOutcome::Error)),
    }
}

pub(super) fn aor_error(e: AorError) -> &'static str {
    match e {
        AorError::NoDomain => "no domain",
        AorError::User => "user part",
        AorError::Domain => "domain",
        AorError::NotServed => "domain not the issuer's",
    }
}
