//! One configured issuer at run time: its discovered `jwks_uri`, the JWKS cache, and the
//! refresh rules of docs/token-api.md "JWKS cache, per issuer".
//!
//! - Reads are lock-free (`ArcSwap` of an immutable [`KeySet`]); no lock is held across I/O.
//! - A background task refreshes discovery every `discovery_refresh` and the keys when their
//!   `Cache-Control: max-age` (clamped to the configured bounds) runs out; on errors it keeps
//!   the last good keys and retries with backoff.
//! - An unknown `kid` triggers at most one refetch per `jwks_refetch_cooldown` (single flight:
//!   concurrent callers do not wait, they fail at once), then a short negative cache for that
//!   kid.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use jsonwebtoken::Algorithm;
use tokio_util::sync::CancellationToken;

use super::fetch::{FetchError, Fetcher};
use super::jwks::{self, KeySet, Lookup, VerifyKey};
use super::{OidcMetrics, Rejection};
use crate::config::{check_url, Issuer};

/// How long an unknown kid is refused without another refetch.
const NEGATIVE_CACHE: Duration = Duration::from_secs(30);
/// Unknown kids remembered at most; the map is cleared when full.
const NEGATIVE_CACHE_ENTRIES: usize = 1024;
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);

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
    /// When the cached keys should be refreshed.
    keys_due: ArcSwap<Instant>,
    /// Set while an on-demand refetch runs (single flight).
    refetching: AtomicBool,
    /// Start of the last on-demand refetch; held only to read or set it.
    last_refetch: Mutex<Option<Instant>>,
    negative: DashMap<String, Instant>,
    bounds: CacheBounds,
    fetcher: Fetcher,
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
        IssuerState {
            config,
            keys: ArcSwapOption::empty(),
            jwks_uri: ArcSwapOption::empty(),
            keys_due: ArcSwap::from_pointee(Instant::now()),
            refetching: AtomicBool::new(false),
            last_refetch: Mutex::new(None),
            negative: DashMap::new(),
            bounds,
            fetcher,
            metrics,
        }
    }

    /// Whether keys have been loaded at least once.
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
        self.metrics.refetch();
        let result = self.refresh_keys().await;
        self.refetching.store(false, Ordering::Release);
        if let Err(e) = &result {
            tracing::warn!(issuer = %self.config.name, error = %e, "on-demand JWKS refetch failed; keeping the cached keys");
        }
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
        Ok(())
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
    /// on errors (keeping the last good keys). Runs until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut next_discovery = Instant::now();
        let mut backoff = RETRY_MIN;
        loop {
            let now = Instant::now();
            if now >= next_discovery {
                match self.discover().await {
                    Ok(()) => next_discovery = now + self.bounds.discovery_refresh,
                    Err(e) => {
                        tracing::warn!(issuer = %self.config.name, error = %e, "OIDC discovery failed")
                    }
                }
            }
            let wait = if self.keys.load().is_none() || Instant::now() >= **self.keys_due.load() {
                match self.refresh_keys().await {
                    Ok(_) => {
                        backoff = RETRY_MIN;
                        self.keys_due
                            .load()
                            .saturating_duration_since(Instant::now())
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %self.config.name, error = %e, retry_in = ?backoff, "JWKS refresh failed; keeping the last good keys");
                        let wait = backoff;
                        backoff = (backoff * 2).min(RETRY_MAX);
                        wait
                    }
                }
            } else {
                self.keys_due
                    .load()
                    .saturating_duration_since(Instant::now())
            };
            let wait = wait
                .min(next_discovery.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(200));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The two fields of an OIDC discovery document (or RFC 8414 metadata) we use.
#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}
