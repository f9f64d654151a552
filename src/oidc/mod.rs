//! OpenID providers as the token API sees them: the issuer registry built from config,
//! discovery, the per-issuer JWKS cache, and access-token validation.
//!
//! | file | owns |
//! | --- | --- |
//! | `fetch.rs` | the outbound HTTP client: no redirects, timeouts, body cap, https or loopback only |
//! | `json.rs` | strict JSON (no duplicate keys, nesting ≤ 16) for tokens and IdP answers |
//! | `jwks.rs` | JWKS → verification keys (drops `oct`, `use=enc`, unknown, over the cap) |
//! | `issuer.rs` | one issuer: discovery, the lock-free key cache, refresh and unknown-kid refetch |
//! | `retry.rs` | the refresher's backoff (1 s doubling to 5 min, jitter, reset on success) and the issuer's reachability (which outcomes log WARN, INFO or DEBUG), no I/O |
//! | `claims.rs` | the claim mapping (steps 6–7) for every IdP shape: claim paths, string or array scopes, client claims, tenant, username, `email_verified`, user domain |
//! | `token.rs` | validation steps 1–7 of docs/token-api.md, strict JSON, claim checks, AoR mapping |
//! | `opaque.rs` | opaque tokens: RFC 7662 introspection or userinfo + token-info, the bounded per-issuer result cache |
//!
//! Discovery metadata is read with two fields of our own (`issuer`, `jwks_uri`) rather than
//! `openidconnect`'s types: that crate validates ID tokens, not access tokens, and its
//! metadata types would bring its own HTTP and crypto stack for two strings.
//!
//! It must not know HTTP responses, the device store or SIP: it answers "who is this token"
//! or a [`Rejection`] from a fixed set; the API maps that to RFC 6750.

mod claims;
mod fetch;
mod issuer;
mod json;
mod jwks;
pub mod logout;
mod opaque;
pub mod payload;
mod retry;
mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use fetch::{FetchError, Fetcher};
pub use issuer::{CacheBounds, IssuerState};
pub use json::MAX_JSON_DEPTH;
pub use token::{MAX_KID_BYTES, MAX_TOKEN_BYTES};

use crate::config::Config;
use crate::metrics::Metrics;

pub const TOKEN_REJECTIONS: &str = "sipward_token_rejections_total";
pub const JWKS_FETCHES: &str = "sipward_jwks_fetches_total";
pub const JWKS_REFETCHES: &str = "sipward_jwks_unknown_kid_refetches_total";
pub const DISCOVERY_FETCHES: &str = "sipward_oidc_discovery_fetches_total";
/// 1 when the issuer's last discovery or JWKS attempt succeeded, 0 otherwise (and before the
/// first), by configured issuer name.
pub const ISSUER_UP: &str = "sipward_oidc_issuer_up";
/// Calls to introspection, userinfo or token-info endpoints for opaque tokens, by result.
pub const INTROSPECTIONS: &str = "sipward_oidc_introspections_total";

/// Why a token was refused. A fixed set: it labels a metric and goes to logs, never to the
/// client, which sees one of four answers ([`Rejection::answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Size, segments, base64url, JSON, duplicate keys, nesting.
    Malformed,
    /// `alg` missing, unknown, symmetric, `none`, or not allowed for the issuer.
    Algorithm,
    /// `crit`, or a `kid`/`typ` of the wrong type or size.
    Header,
    UnknownIssuer,
    /// No key with this `kid` after the allowed refetch.
    UnknownKey,
    /// The key does not fit the algorithm (or no kid and not exactly one key).
    KeyMismatch,
    Signature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingClaim,
    Issuer,
    Audience,
    TokenType,
    IdToken,
    Client,
    /// Scope or role missing (403 insufficient_scope).
    Scope,
    /// Tenant not allowed (403 access_denied).
    Tenant,
    /// No usable username claim: missing, not an AoR user (device namespace `d-…`
    /// included), or its domain is not the issuer's (403 access_denied).
    Username,
    /// The username's AoR belongs to another subject (`iss`, `sub`) (403 access_denied).
    UsernameTaken,
    /// The user was revoked after this token was issued (403 access_denied).
    UserRevoked,
    /// No keys cached and the IdP unreachable (503).
    KeysUnavailable,
    /// A claim the mapping reads has a shape it does not know (an object for a scope, a list
    /// holding numbers): fail closed (401).
    ClaimShape,
    /// `require_email_verified` and the token's `email_verified` is not true (403).
    EmailUnverified,
    /// `user_domains` set and the user's domain (`hd` or the email's) is not one (403).
    UserDomain,
    /// An opaque token the IdP says is not active (401).
    Inactive,
    /// The introspection (or userinfo/token-info) endpoint failed (503, never 401).
    IntrospectionUnavailable,
}

/// The four things a client may learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    InvalidToken,
    InsufficientScope,
    AccessDenied,
    Unavailable,
}

impl Rejection {
    pub const ALL: [Rejection; 27] = [
        Rejection::Malformed,
        Rejection::Algorithm,
        Rejection::Header,
        Rejection::UnknownIssuer,
        Rejection::UnknownKey,
        Rejection::KeyMismatch,
        Rejection::Signature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::IssuedInFuture,
        Rejection::MissingClaim,
        Rejection::Issuer,
        Rejection::Audience,
        Rejection::TokenType,
        Rejection::IdToken,
        Rejection::Client,
        Rejection::Scope,
        Rejection::Tenant,
        Rejection::Username,
        Rejection::UsernameTaken,
        Rejection::UserRevoked,
        Rejection::KeysUnavailable,
        Rejection::ClaimShape,
        Rejection::EmailUnverified,
        Rejection::UserDomain,
        Rejection::Inactive,
        Rejection::IntrospectionUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::Algorithm => "algorithm",
            Rejection::Header => "header",
            Rejection::UnknownIssuer => "unknown_issuer",
            Rejection::UnknownKey => "unknown_key",
            Rejection::KeyMismatch => "key_mismatch",
            Rejection::Signature => "signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::IssuedInFuture => "issued_in_future",
            Rejection::MissingClaim => "missing_claim",
            Rejection::Issuer => "issuer",
            Rejection::Audience => "audience",
            Rejection::TokenType => "token_type",
            Rejection::IdToken => "id_token",
            Rejection::Client => "client",
            Rejection::Scope => "scope",
            Rejection::Tenant => "tenant",
            Rejection::Username => "username",
            Rejection::UsernameTaken => "username_taken",
            Rejection::UserRevoked => "user_revoked",
            Rejection::KeysUnavailable => "keys_unavailable",
            Rejection::ClaimShape => "claim_shape",
            Rejection::EmailUnverified => "email_unverified",
            Rejection::UserDomain => "user_domain",
            Rejection::Inactive => "inactive",
            Rejection::IntrospectionUnavailable => "introspection_unavailable",
        }
    }

    pub fn answer(self) -> Answer {
        match self {
            Rejection::Scope => Answer::InsufficientScope,
            Rejection::Tenant
            | Rejection::Username
            | Rejection::UsernameTaken
            | Rejection::UserRevoked
            | Rejection::EmailUnverified
            | Rejection::UserDomain => Answer::AccessDenied,
            Rejection::KeysUnavailable | Rejection::IntrospectionUnavailable => Answer::Unavailable,
            _ => Answer::InvalidToken,
        }
    }
}

/// What the token is used for: credentials need the scope and a username; admin needs the
/// admin role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Credentials,
    Admin,
}

/// A validated token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub issuer_name: String,
    pub iss: String,
    pub sub: String,
    pub jti: Option<String>,
    pub kid: Option<String>,
    pub iat: u64,
    pub exp: u64,
    /// The username claim's value as the IdP sent it (credentials purpose only); the API
    /// turns it into an AoR (`api::aor::UserAor::from_claim`) within `issuer_domains`.
    pub username: Option<String>,
    /// The domains this token's issuer serves.
    pub issuer_domains: Vec<String>,
    /// Domains this caller administers (the issuer's domains when it has the admin role).
    pub admin_domains: Vec<String>,
}

/// Token and IdP metrics, registered on the app's registry.
#[derive(Clone)]
pub struct OidcMetrics {
    rejections: IntCounterVec,
    jwks: IntCounterVec,
    discovery: IntCounterVec,
    refetches: IntCounter,
    issuer_up: IntGaugeVec,
    introspections: IntCounterVec,
}

impl OidcMetrics {
    pub fn new(metrics: &Metrics) -> OidcMetrics {
        let registry = metrics.registry();
        let vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let rejections = vec(
            TOKEN_REJECTIONS,
            "Access tokens refused, by reason",
            "reason",
        );
        for r in Rejection::ALL {
            rejections.with_label_values(&[r.as_str()]);
        }
        let jwks = vec(JWKS_FETCHES, "JWKS fetches, by result", "result");
        let introspections = vec(
            INTROSPECTIONS,
            "Opaque token validation calls to the IdP (introspection, userinfo), by result",
            "result",
        );
        let discovery = vec(
            DISCOVERY_FETCHES,
            "OIDC discovery fetches, by result",
            "result",
        );
        for c in [&jwks, &discovery, &introspections] {
            c.with_label_values(&["ok"]);
            c.with_label_values(&["error"]);
        }
        let refetches = IntCounter::new(
            JWKS_REFETCHES,
            "On-demand JWKS refetches caused by an unknown kid or an empty cache",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(refetches.clone()))
            .expect("unique metric name");
        let issuer_up = IntGaugeVec::new(
            Opts::new(
                ISSUER_UP,
                "1 when the issuer's last discovery or JWKS attempt succeeded, else 0",
            ),
            &["issuer"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(issuer_up.clone()))
            .expect("unique metric name");
        OidcMetrics {
            rejections,
            jwks,
            discovery,
            refetches,
            issuer_up,
            introspections,
        }
    }

    /// One opaque-token call to the IdP: answered (`ok`, active or not) or failed.
    fn introspection(&self, ok: bool) {
        self.introspections
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn rejection(&self, r: Rejection) {
        self.rejections.with_label_values(&[r.as_str()]).inc();
    }

    fn jwks_fetch(&self, ok: bool) {
        self.jwks
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    fn discovery(&self, ok: bool) {
        self.discovery
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    fn refetch(&self) {
        self.refetches.inc();
    }

    /// The issuer's state; `issuer` is a configured name, so the label set is bounded.
    fn issuer_up(&self, issuer: &str, up: bool) {
        self.issuer_up
            .with_label_values(&[issuer])
            .set(i64::from(up));
    }
}

/// Every configured issuer by its exact `iss`. Cheap `Clone` handle.
#[derive(Clone)]
pub struct IssuerRegistry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    by_iss: HashMap<String, Arc<IssuerState>>,
    /// Issuers with `token_format = "opaque"`, in config order: a token that is not a JWT is
    /// asked at each in turn until one says it is active.
    opaque: Vec<Arc<IssuerState>>,
    leeway: Duration,
    metrics: OidcMetrics,
}

impl IssuerRegistry {
    pub fn new(config: &Config, metrics: OidcMetrics) -> Result<IssuerRegistry, FetchError> {
        let t = &config.token_api;
        let bounds = CacheBounds {
            min: t.jwks_min_cache,
            max: t.jwks_max_cache,
            refetch_cooldown: t.jwks_refetch_cooldown,
            discovery_refresh: t.discovery_refresh,
            max_keys: t.max_jwks_keys,
        };
        let mut by_iss = HashMap::new();
        let mut opaque = Vec::new();
        for i in &config.issuers {
            let fetcher = Fetcher::with_connectivity(
                t.fetch_timeout,
                t.max_jwks_bytes,
                &i.ca_pem,
                i.proxy.as_deref(),
            )
            .map_err(|e| FetchError::Request(format!("issuer {:?}: {e}", i.name)))?;
            let state = Arc::new(IssuerState::new(
                i.clone(),
                bounds,
                fetcher,
                metrics.clone(),
            ));
            if i.opaque.is_some() {
                opaque.push(state.clone());
            }
            by_iss.insert(i.issuer.clone(), state);
        }
        Ok(IssuerRegistry {
            inner: Arc::new(RegistryInner {
                by_iss,
                opaque,
                leeway: t.leeway,
                metrics,
            }),
        })
    }

    /// Starts one refresher per JWT issuer (opaque issuers have no keys to keep).
    pub fn spawn_refreshers(&self, tracker: &TaskTracker, shutdown: &CancellationToken) {
        for state in self.inner.by_iss.values() {
            if state.config.opaque.is_none() {
                tracker.spawn(state.clone().run(shutdown.clone()));
            }
        }
    }

    pub fn issuer(&self, iss: &str) -> Option<&Arc<IssuerState>> {
        self.inner.by_iss.get(iss)
    }

    pub fn issuers(&self) -> impl Iterator<Item = &Arc<IssuerState>> {
        self.inner.by_iss.values()
    }

    pub fn leeway(&self) -> Duration {
        self.inner.leeway
    }

    pub fn metrics(&self) -> &OidcMetrics {
        &self.inner.metrics
    }

    /// Every JWT issuer has keys loaded (opaque issuers are asked per token).
    pub fn ready(&self) -> bool {
        self.inner
            .by_iss
            .values()
            .all(|s| s.config.opaque.is_some() || s.has_keys())
    }

    pub(crate) fn opaque_issuers(&self) -> &[Arc<IssuerState>] {
        &self.inner.opaque
    }

    /// Validates `token` for `purpose` at `now` (Unix seconds). Counts the rejection reason.
    pub async fn validate(
        &self,
        token: &str,
        purpose: Purpose,
        now: u64,
    ) -> Result<Verified, Rejection> {
        let result = token::validate(self, token, purpose, now).await;
        if let Err(r) = result {
            self.inner.metrics.rejection(r);
        }
        result
    }
}
