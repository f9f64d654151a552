//! One configured issuer at run time: its discovered `jwks_uri`, the JWKS cache, and the
//! refresh rules of docs/token-api.md "JWKS cache, per issuer".
//!
//! - Reads are lock-free (`ArcSwap` of an immutable [`KeySet`]); no lock is held across I/O.
//! - A background task refreshes discovery every `discovery_refresh` and the keys when their
//!   `Cache-Control: max-age` (clamped to the configured bounds) runs out; on errors it keeps
//!   the last good keys and retries with exponential backoff and jitter (`retry.rs`: 1 s
//!   doubling to 5 min, reset by a success). Logs: one WARN when the issuer becomes
//!   unreachable (its URL and the error), one INFO when it answers again, DEBUG in between;
//!   the gauge `sipward_oidc_issuer_up{issuer}` says which.
//! - An unknown `kid` triggers at most one refetch per `jwks_refetch_cooldown` (single flight:
//!   concurrent callers do not wait, they fail at once), then a short negative cache for that
//!   kid.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use jsonwebtoken::Algorithm;
use tokio_util::sync::CancellationToken;

use super::fetch::{FetchError, Fetcher};
use super::jwks::{self, KeySet, Lookup, VerifyKey};
use super::retry::{Backoff, Loudness, Reach};
use super::{OidcMetrics, Rejection};
use crate::config::{check_url, Issuer};

/// How long an unknown kid is refused without another refetch.
const NEGATIVE_CACHE: Duration = Duration::from_secs(30);
/// Unknown kids remembered at most; the map is cleared when full.
const NEGATIVE_CACHE_ENTRIES: usize = 1024;
/// The shortest sleep of the refresher, whatever is due.
const MIN_WAIT: Duration = Duration::from_millis(200);

/// JWKS cache bounds from `[token_api]`.
#[derive(Debug, Clone, Copy)]
pub struct CacheBounds {
    pub min: Duration,
    pub max: Duration,
    pub refetch_cooldown: Duration,
    pub discovery_refresh: Duration,
    pub max_keys: usize,
}

pub struct IssuerState {
    pub config: Issuer,
    keys: ArcSwapOption<KeySet>,
    jwks_uri: ArcSwapOption<String>,
    /// The authorization and token endpoints of the last discovery, when it named both as
    /// https (or loopback http) URLs.
    login_endpoints: ArcSwapOption<LoginEndpoints>,
    /// When the cached keys should be refreshed.
    keys_due: ArcSwap<Instant>,
    /// Set while an on-demand refetch runs (single flight).
    refetching: AtomicBool,
    /// Start of the last on-demand refetch; held only to read or set it.
    last_refetch: Mutex<Option<Instant>>,
    negative: DashMap<String, Instant>,
    /// [`Reach`] as a byte: whether the last attempt (refresher or on-demand) reached the IdP.
    reach: AtomicU8,
    bounds: CacheBounds,
    fetcher: Fetcher,
    /// Opaque tokens' validation results (`opaque.rs`); empty for JWT issuers.
    opaque_cache: super::opaque::OpaqueCache,
    metrics: OidcMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("jwks: {0}")]
    Jwks(String),
}

impl From<FetchError> for RefreshError {
    fn from(e: FetchError) -> Self {
        RefreshError::Jwks(e.to_string())
    }
}

impl IssuerState {
    pub fn new(
        config: Issuer,
        bounds: CacheBounds,
        fetcher: Fetcher,
        metrics: OidcMetrics,
    ) -> IssuerState {
        metrics.issuer_up(&config.name, false);
        IssuerState {
            config,
            keys: ArcSwapOption::empty(),
            jwks_uri: ArcSwapOption::empty(),
            login_endpoints: ArcSwapOption::empty(),
            keys_due: ArcSwap::from_pointee(Instant::now()),
            refetching: AtomicBool::new(false),
            last_refetch: Mutex::new(None),
            negative: DashMap::new(),
            reach: AtomicU8::new(Reach::Unknown.to_u8()),
            bounds,
            fetcher,
            opaque_cache: Default::default(),
            metrics,
        }
    }

    /// Whether keys have been loaded at least once.
    /// What `opaque::validate` needs of this issuer.
    pub(super) fn opaque_site(&self) -> super::opaque::Site<'_> {
        super::opaque::Site {
            config: &self.config,
            fetcher: &self.fetcher,
            metrics: &self.metrics,
            cache: &self.opaque_cache,
        }
    }

    pub fn has_keys(&self) -> bool {
        self.keys.load().is_some()
    }

    /// The verification key for a token header, refetching once per cool-down for an
    /// unknown kid.
    pub async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, Rejection> {
        let cached = self.keys.load_full();
        if let Some(set) = &cached {
            match set.find(kid, alg) {
                Lookup::Found(k) => return Ok(k),
                Lookup::Mismatch => return Err(Rejection::KeyMismatch),
                Lookup::Unknown => {}
            }
        }
        let now = Instant::now();
        if let Some(kid) = kid {
            if self
                .negative
                .get(kid)
                .is_some_and(|until| *until.value() > now)
            {
                return Err(Rejection::UnknownKey);
            }
        }
        if !self.begin_refetch(now) {
            return Err(match cached {
                Some(_) => Rejection::UnknownKey,
                None => Rejection::KeysUnavailable,
            });
        }
        // Whatever happens to this future from here (completion, or a drop mid-await by a
        // request deadline or a client disconnect), the guard frees the single-flight slot.
        let slot = RefetchSlot(&self.refetching);
        self.metrics.refetch();
        let result = self.refresh_keys().await;
        drop(slot);
        let failed = result.as_ref().err();
        self.reached(failed.map(|e| (e, self.bounds.refetch_cooldown)));
        match self.keys.load_full() {
            Some(set) => match set.find(kid, alg) {
                Lookup::Found(k) => Ok(k),
                Lookup::Mismatch => Err(Rejection::KeyMismatch),
                Lookup::Unknown => {
                    if let Some(kid) = kid {
                        if self.negative.len() >= NEGATIVE_CACHE_ENTRIES {
                            self.negative.clear();
                        }
                        self.negative.insert(kid.to_owned(), now + NEGATIVE_CACHE);
                    }
                    Err(Rejection::UnknownKey)
                }
            },
            None => Err(Rejection::KeysUnavailable),
        }
    }

    /// Claims the single on-demand refetch slot if the cool-down has passed.
    fn begin_refetch(&self, now: Instant) -> bool {
        let Ok(mut last) = self.last_refetch.lock() else {
            return false;
        };
        if last.is_some_and(|t| now.duration_since(t) < self.bounds.refetch_cooldown) {
            return false;
        }
        if self.refetching.swap(true, Ordering::AcqRel) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Discovery: the document's `issuer` must equal the configured one; its `jwks_uri` must
    /// be an https (or loopback http) URL.
    pub async fn discover(&self) -> Result<(), RefreshError> {
        let fetched = self.fetcher.get(&self.config.discovery_url).await;
        self.metrics.discovery(fetched.is_ok());
        let fetched = fetched.map_err(|e| RefreshError::Discovery(e.to_string()))?;
        let doc: Discovery = serde_json::from_slice(&fetched.body)
            .map_err(|e| RefreshError::Discovery(format!("not a discovery document: {e}")))?;
        if doc.issuer != self.config.issuer {
            return Err(RefreshError::Discovery(format!(
                "the document names issuer {:?}, configured is {:?}",
                doc.issuer, self.config.issuer
            )));
        }
        check_url(&doc.jwks_uri).map_err(RefreshError::Discovery)?;
        self.jwks_uri.store(Some(Arc::new(doc.jwks_uri)));
        let endpoints = match (doc.authorization_endpoint, doc.token_endpoint) {
            (Some(a), Some(t)) if check_url(&a).is_ok() && check_url(&t).is_ok() => {
                Some(Arc::new(LoginEndpoints {
                    authorization: a,
                    token: t,
                }))
            }
            _ => None,
        };
        self.login_endpoints.store(endpoints);
        Ok(())
    }

    /// The endpoints of the last discovery for browser sign-in; `None` before one succeeded
    /// or when the IdP publishes none.
    pub fn login_endpoints(&self) -> Option<Arc<LoginEndpoints>> {
        self.login_endpoints.load_full()
    }

    /// Fetches the JWKS (discovering first if needed) and swaps it in.
    pub async fn refresh_keys(&self) -> Result<usize, RefreshError> {
        if self.jwks_uri.load().is_none() {
            self.discover().await?;
        }
        let Some(uri) = self.jwks_uri.load_full() else {
            return Err(RefreshError::Discovery("no jwks_uri".into()));
        };
        let fetched = self.fetcher.get(&uri).await;
        let allowed: Vec<Algorithm> = self
            .config
            .algorithms
            .iter()
            .filter_map(|a| super::token::asymmetric(a))
            .collect();
        let parsed = fetched
            .map_err(RefreshError::from)
            .and_then(|f| {
                jwks::parse(&f.body, self.bounds.max_keys, &allowed)
                    .map(|(set, dropped)| (set, dropped, f.max_age))
                    .map_err(RefreshError::Jwks)
            })
            .and_then(|(set, dropped, max_age)| {
                if set.is_empty() {
                    Err(RefreshError::Jwks("no usable signing key".into()))
                } else {
                    Ok((set, dropped, max_age))
                }
            });
        self.metrics.jwks_fetch(parsed.is_ok());
        let (set, dropped, max_age) = parsed?;
        let ttl = max_age
            .unwrap_or(self.bounds.min)
            .clamp(self.bounds.min, self.bounds.max);
        let count = set.len();
        if dropped > 0 {
            tracing::info!(issuer = %self.config.name, dropped, "JWKS entries dropped (symmetric, encryption, unknown, not for an allowed algorithm, or over the cap)");
        }
        self.keys.store(Some(Arc::new(set)));
        self.keys_due.store(Arc::new(Instant::now() + ttl));
        tracing::debug!(issuer = %self.config.name, keys = count, ttl = ?ttl, "JWKS loaded");
        Ok(count)
    }

    /// The background refresher: discovery every `discovery_refresh`, keys when due, backoff
    /// with jitter on errors (keeping the last good keys). Runs until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.refresh_loop(&shutdown, tokio::time::sleep).await;
    }

    /// [`Self::run`] with its sleeping passed in, so a test can run the schedule on a
    /// virtual clock against a real socket.
    async fn refresh_loop<F: Future<Output = ()>>(
        &self,
        shutdown: &CancellationToken,
        mut sleep: impl FnMut(Duration) -> F,
    ) {
        let mut next_discovery = Instant::now();
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            let wait = match self.refresh_due(&mut next_discovery).await {
                Ok(()) => {
                    backoff.success();
                    self.reached(None);
                    let now = Instant::now();
                    self.keys_due
                        .load()
                        .saturating_duration_since(now)
                        .min(next_discovery.saturating_duration_since(now))
                }
                Err(e) => {
                    let wait = backoff.failure(rand::random::<f64>());
                    self.reached(Some((&e, wait)));
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep(wait.max(MIN_WAIT)) => {}
            }
        }
    }

    /// One attempt of the refresher: discovery when due, then the keys when due. A failed
    /// discovery ends the attempt unless a `jwks_uri` is known from an earlier one (then the
    /// keys are still refreshed, and the attempt counts as failed): with the IdP absent, an
    /// attempt is one request.
    async fn refresh_due(&self, next_discovery: &mut Instant) -> Result<(), RefreshError> {
        let now = Instant::now();
        let mut discovered = Ok(());
        if now >= *next_discovery {
            discovered = self.discover().await;
            if discovered.is_ok() {
                *next_discovery = now + self.bounds.discovery_refresh;
            } else if self.jwks_uri.load().is_none() {
                return discovered;
            }
        }
        if self.keys.load().is_none() || Instant::now() >= **self.keys_due.load() {
            self.refresh_keys().await?;
        }
        discovered
    }

    /// Records an attempt's outcome (`failed`: its error and when the next attempt comes):
    /// the gauge, and a log line as loud as the change ([`Reach::after`]).
    fn reached(&self, failed: Option<(&RefreshError, Duration)>) {
        let ok = failed.is_none();
        let was = self
            .reach
            .swap(Reach::Unknown.after(ok).0.to_u8(), Ordering::AcqRel);
        let (_, loud) = Reach::from_u8(was).after(ok);
        self.metrics.issuer_up(&self.config.name, ok);
        let issuer = &self.config.name;
        match (failed, loud) {
            (Some((e, retry_in)), Loudness::Warn) => {
                tracing::warn!(%issuer, url = %self.url_of(e), error = %e, ?retry_in, "identity provider unreachable; retrying with backoff up to every 5 min (cached keys stay in use)")
            }
            (Some((e, retry_in)), _) => {
                tracing::debug!(%issuer, url = %self.url_of(e), error = %e, ?retry_in, "identity provider still unreachable")
            }
            (None, Loudness::Info) => {
                tracing::info!(%issuer, url = %self.config.discovery_url, "identity provider reachable again")
            }
            (None, _) => {}
        }
    }

    /// The URL a refresh error is about: the discovery document or the JWKS.
    fn url_of(&self, e: &RefreshError) -> String {
        match e {
            RefreshError::Discovery(_) => self.config.discovery_url.clone(),
            RefreshError::Jwks(_) => self
                .jwks_uri
                .load()
                .as_deref()
                .map_or_else(String::new, |u| u.to_string()),
        }
    }
}

/// The claimed on-demand refetch slot: dropping it frees `IssuerState::refetching`.
struct RefetchSlot<'a>(&'a AtomicBool);

impl Drop for RefetchSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The two fields of an OIDC discovery document (or RFC 8414 metadata) we use.
#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    /// For browser sign-in (Authorization Code + PKCE), passed on by `/v1/login-options`.
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
}

/// The discovered endpoints a browser client signs in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEndpoints {
    pub authorization: String,
    pub token: String,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    use super::*;
    use crate::metrics::Metrics;

    const RSA: &str = r#"{"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;

    /// An IdP on 127.0.0.1:0 whose first JWKS request never gets an answer; later ones get
    /// a JWKS with key `r1`. Counts JWKS requests and signals each one.
    struct StallingIdp {
        base: String,
        jwks_requests: Arc<AtomicUsize>,
        jwks_seen: Arc<Notify>,
    }

    async fn stalling_idp() -> StallingIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let jwks_requests = Arc::new(AtomicUsize::new(0));
        let jwks_seen = Arc::new(Notify::new());
        let (count, seen, issuer) = (jwks_requests.clone(), jwks_seen.clone(), base.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (count, seen, issuer) = (count.clone(), seen.clone(), issuer.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = if head.starts_with(b"GET /jwks ") {
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.notify_one();
                        if n == 1 {
                            // Stall: hold the connection open without answering.
                            std::future::pending::<()>().await;
                        }
                        format!(r#"{{"keys":[{RSA}]}}"#)
                    } else {
                        format!(r#"{{"issuer":"{issuer}","jwks_uri":"{issuer}/jwks"}}"#)
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        StallingIdp {
            base,
            jwks_requests,
            jwks_seen,
        }
    }

    /// An IdP on 127.0.0.1:0 that answers every request with 503 until `up` is set, then
    /// serves discovery and a JWKS with key `r1`. Counts connections.
    struct FlakyIdp {
        base: String,
        connections: Arc<AtomicUsize>,
        up: Arc<AtomicBool>,
    }

    async fn flaky_idp() -> FlakyIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let up = Arc::new(AtomicBool::new(false));
        let (count, serving, issuer) = (connections.clone(), up.clone(), base.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (serving, issuer) = (serving.clone(), issuer.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (status, body) = if !serving.load(Ordering::SeqCst) {
                        ("503 Service Unavailable", String::new())
                    } else if head.starts_with(b"GET /jwks ") {
                        ("200 OK", format!(r#"{{"keys":[{RSA}]}}"#))
                    } else {
                        let doc = format!(r#"{{"issuer":"{issuer}","jwks_uri":"{issuer}/jwks"}}"#);
                        ("200 OK", doc)
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        FlakyIdp {
            base,
            connections,
            up,
        }
    }

    /// Collects what the `tracing` subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Issue 15 acceptance on a real socket: the refresher against an IdP that answers
    /// nothing but errors for 30 s of its (virtual) clock makes at most 6 attempts, each one
    /// connection, logs one WARN naming the URL (DEBUG for the rest) and reports the issuer
    /// down; once the IdP answers, one INFO and the gauge says up.
    #[tokio::test]
    async fn an_unreachable_idp_is_tried_at_most_6_times_in_30_s_with_one_warn_then_one_info() {
        let idp = flaky_idp().await;
        let metrics = Metrics::new();
        let state = issuer_state_with(&idp.base, &metrics);
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _log = tracing::subscriber::set_default(subscriber);

        let shutdown = CancellationToken::new();
        let clock = Arc::new(Mutex::new(Duration::ZERO));
        let at_30 = Arc::new(Mutex::new(None));
        let sleep = {
            let (clock, at_30, stop) = (clock.clone(), at_30.clone(), shutdown.clone());
            let (connections, up, metrics) =
                (idp.connections.clone(), idp.up.clone(), metrics.clone());
            move |wait: Duration| {
                let mut now = clock.lock().unwrap();
                *now += wait;
                if up.load(Ordering::SeqCst) {
                    // The attempt after the IdP came back has ended.
                    stop.cancel();
                } else if *now >= Duration::from_secs(30) {
                    let gauge = metrics.render();
                    *at_30.lock().unwrap() = Some((connections.load(Ordering::SeqCst), gauge));
                    up.store(true, Ordering::SeqCst);
                }
                std::future::ready(())
            }
        };
        tokio::time::timeout(
            Duration::from_secs(60),
            state.refresh_loop(&shutdown, sleep),
        )
        .await
        .expect("the refresher ends once the IdP is back");

        let (attempts, gauge_down) = at_30.lock().unwrap().clone().expect("30 s passed");
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines = |level: &str, what: &str| {
            text.lines()
                .filter(|l| l.contains(level) && l.contains(what))
                .count()
        };
        eprintln!("{attempts} attempts in 30 virtual seconds; log:\n{text}");
        assert!((2..=6).contains(&attempts), "{attempts} attempts in 30 s");
        assert_eq!(lines("WARN", ""), 1, "one WARN:\n{text}");
        let discovery_url = format!("{}/.well-known/openid-configuration", idp.base);
        assert_eq!(lines("WARN", &discovery_url), 1, "the WARN names the URL");
        assert_eq!(lines("WARN", "503"), 1, "the WARN names the error");
        assert_eq!(lines("DEBUG", "still unreachable"), attempts - 1);
        assert_eq!(lines("INFO", "reachable again"), 1, "one INFO:\n{text}");
        let up_series = r#"sipward_oidc_issuer_up{issuer="stall"}"#;
        assert!(
            gauge_down.contains(&format!("{up_series} 0")),
            "{gauge_down}"
        );
        assert!(metrics.render().contains(&format!("{up_series} 1")));
        assert!(state.has_keys(), "keys loaded after the recovery");
    }

    fn issuer_state(base: &str) -> IssuerState {
        issuer_state_with(base, &Metrics::new())
    }

    fn issuer_state_with(base: &str, metrics: &Metrics) -> IssuerState {
        let config = Issuer {
            name: "stall".into(),
            issuer: base.into(),
            discovery_url: format!("{base}/.well-known/openid-configuration"),
            audience: "sipward".into(),
            algorithms: vec!["RS256".into()],
            token_types: vec!["at+jwt".into()],
            scope_claim: "scope".into(),
            required_scope: None,
            client_ids: Vec::new(),
            tenant: None,
            username_claim: "sub".into(),
            require_email_verified: false,
            user_domains: Vec::new(),
            user_domain_claim: String::new(),
            admin: None,
            login_client_id: "sipward".into(),
            login_scopes: Vec::new(),
            label: "stall".into(),
            domains: vec!["example.test".into()],
            ca_file: None,
            ca_pem: Vec::new(),
            proxy: None,
            opaque: None,
        };
        let bounds = CacheBounds {
            min: Duration::from_secs(60),
            max: Duration::from_secs(600),
            // No cool-down: only the single-flight flag can refuse the second refetch.
            refetch_cooldown: Duration::ZERO,
            discovery_refresh: Duration::from_secs(600),
            max_keys: 8,
        };
        let fetcher = Fetcher::new(Duration::from_secs(60), 64 * 1024).unwrap();
        IssuerState::new(config, bounds, fetcher, OidcMetrics::new(metrics))
    }

    /// Issue 14 item 8: a request dropped while its on-demand refetch is in flight (request
    /// deadline, client gone) must not leave the single-flight flag set.
    #[tokio::test]
    async fn a_dropped_refetch_frees_the_slot_for_the_next_unknown_kid() {
        let idp = stalling_idp().await;
        let state = issuer_state(&idp.base);

        let first = state.key(Some("r1"), Algorithm::RS256);
        tokio::select! {
            _ = first => panic!("the stalled JWKS fetch answered"),
            // Dropping `first` here abandons the refetch mid-await.
            _ = idp.jwks_seen.notified() => {}
        }
        assert_eq!(idp.jwks_requests.load(Ordering::SeqCst), 1);

        let key = state.key(Some("r1"), Algorithm::RS256).await;
        assert_eq!(
            idp.jwks_requests.load(Ordering::SeqCst),
            2,
            "the unknown kid caused a second JWKS fetch"
        );
        assert!(key.is_ok(), "the refetched key is found");
    }
}
