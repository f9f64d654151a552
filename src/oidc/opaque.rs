//! Opaque access tokens (`token_format = "opaque"`): validated by the issuer itself, through
//! RFC 7662 introspection (client_secret_basic with the secret from a file) or, for Google,
//! the OIDC userinfo endpoint plus the provider's token-info endpoint (audience, client,
//! scope, expiry). The answer's claims then go through the same claim mapping as a JWT's
//! (`token::mapped_claims`).
//!
//! Results are cached per issuer, keyed by the SHA-256 of the token (the token itself is never
//! kept), for at most the token's remaining life and at most the issuer's `opaque_cache_secs`;
//! so a token revoked at the IdP stops working within that ceiling. At most
//! [`MAX_ENTRIES`] tokens are cached per issuer: when full, expired entries are dropped, and
//! if none is, the new token is validated without being cached (an attacker cannot flush the
//! cache). Concurrent requests with the same token wait for one IdP call (a
//! `tokio::sync::OnceCell` per entry), so a token causes at most one call per cache window.
//! An IdP failure (network, timeout, 5xx, a malformed answer) is never cached and never a
//! 401: the client gets 503 with Retry-After ([`Rejection::IntrospectionUnavailable`]).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use super::claims::mapped_claims;
use super::fetch::Fetcher;
use super::json::strict_json;
use super::MAX_TOKEN_BYTES;
use super::{OidcMetrics, Purpose, Rejection, Verified};
use crate::config::{Issuer, Opaque};

/// Tokens cached per issuer at most.
pub(super) const MAX_ENTRIES: usize = 10_000;

/// What the IdP said about one token, until `until` (Unix seconds).
#[derive(Clone)]
enum Said {
    Active(Arc<Map<String, Value>>),
    /// Not active, or refused for a reason that does not change (issuer, audience, expiry).
    Refused(Rejection),
}

#[derive(Clone)]
struct Outcome {
    said: Said,
    until: u64,
}

type Slot = Arc<OnceCell<Outcome>>;

/// What validating at one issuer needs (its parts live in `issuer::IssuerState`).
#[derive(Clone, Copy)]
pub(super) struct Site<'a> {
    pub config: &'a Issuer,
    pub fetcher: &'a Fetcher,
    pub metrics: &'a OidcMetrics,
    pub cache: &'a OpaqueCache,
}

/// The per-issuer cache of opaque token results.
#[derive(Default)]
pub(super) struct OpaqueCache {
    slots: DashMap<[u8; 32], Slot>,
}

impl OpaqueCache {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slot for `key`: the cached one, a new cached one, or (when full of live entries) a
    /// new one that is not kept.
    fn slot(&self, key: [u8; 32], now: u64) -> Slot {
        if let Some(slot) = self.slots.get(&key) {
            return slot.clone();
        }
        if self.slots.len() >= MAX_ENTRIES {
            // Keep live results and calls in flight; drop expired results and slots a failed
            // call left empty.
            self.slots.retain(|_, slot| match slot.get() {
                Some(o) => o.until > now,
                None => Arc::strong_count(slot) > 1,
            });
            if self.slots.len() >= MAX_ENTRIES {
                return Arc::new(OnceCell::new());
            }
        }
        self.slots.entry(key).or_default().clone()
    }

    fn forget(&self, key: &[u8; 32], slot: &Slot) {
        self.slots.remove_if(key, |_, s| Arc::ptr_eq(s, slot));
    }
}

/// Whether `token` may be an opaque token: not empty, at most [`MAX_TOKEN_BYTES`], RFC 6750
/// `b64token` characters only.
pub(super) fn plausible(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && token.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
        })
}

/// Validates an opaque `token` at `issuer` for `purpose`.
pub(super) async fn validate(
    issuer: Site<'_>,
    token: &str,
    purpose: Purpose,
    now: u64,
    leeway: Duration,
) -> Result<Verified, Rejection> {
    let config = issuer.config;
    let Some(opaque) = &config.opaque else {
        return Err(Rejection::UnknownIssuer);
    };
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut outcome = None;
    // Twice at most: a stale entry is dropped and asked again once.
    for _ in 0..2 {
        let slot = issuer.cache.slot(key, now);
        // An answer asked for by this request (or one it waited for) is used even when it may
        // not be kept (`opaque_cache_secs = 0`, or an expiry within the leeway).
        let fresh = slot.get().is_none();
        let o = match slot
            .get_or_try_init(|| ask(issuer, opaque, token, now, leeway))
            .await
        {
            Ok(o) => o.clone(),
            Err(r) => {
                issuer.cache.forget(&key, &slot);
                return Err(r);
            }
        };
        if o.until > now || fresh {
            outcome = Some(o);
            break;
        }
        issuer.cache.forget(&key, &slot);
    }
    let Some(outcome) = outcome else {
        return Err(Rejection::IntrospectionUnavailable);
    };
    let claims = match outcome.said {
        Said::Active(claims) => claims,
        Said::Refused(r) => return Err(r),
    };
    let exp = number(claims.get("exp")).unwrap_or(outcome.until);
    if exp.saturating_add(leeway.as_secs()) <= now {
        return Err(Rejection::Expired);
    }
    let (sub, mapped) = mapped_claims(config, &claims, purpose)?;
    Ok(Verified {
        issuer_name: config.name.clone(),
        iss: config.issuer.clone(),
        sub,
        jti: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
        kid: None,
        // Without `iat` the token counts as issued at 0: a revoke of the user refuses it.
        iat: number(claims.get("iat")).unwrap_or(0),
        exp,
        username: mapped.username,
        issuer_domains: config.domains.clone(),
        admin_domains: if mapped.is_admin {
            config.domains.clone()
        } else {
            Vec::new()
        },
    })
}

/// One call (or two, for userinfo) to the IdP. `Err` is an IdP failure: not cached.
async fn ask(
    issuer: Site<'_>,
    opaque: &Opaque,
    token: &str,
    now: u64,
    leeway: Duration,
) -> Result<Outcome, Rejection> {
    let config = issuer.config;
    let fetcher = issuer.fetcher;
    let unavailable = |what: &str, detail: String| {
        tracing::warn!(
            issuer = %config.name,
            endpoint = what,
            error = %detail,
            "opaque token validation failed at the IdP (503, not cached)"
        );
        issuer.metrics.introspection(false);
        Rejection::IntrospectionUnavailable
    };
    match opaque {
        Opaque::Introspection {
            endpoint,
            client_id,
            secret,
            cache,
        } => {
            let (status, body) = fetcher
                .post_form(
                    endpoint,
                    &[
                        ("token", token.as_bytes()),
                        ("token_type_hint", b"access_token"),
                    ],
                    Some((client_id, secret.0.expose())),
                )
                .await
                .map_err(|e| unavailable("introspection", e.to_string()))?;
            if status != 200 {
                return Err(unavailable(
                    "introspection",
                    format!("HTTP status {status}"),
                ));
            }
            let answer = object(&body)
                .ok_or_else(|| unavailable("introspection", "not a JSON object".to_owned()))?;
            issuer.metrics.introspection(true);
            if answer.get("active") != Some(&Value::Bool(true)) {
                return Ok(refused(Rejection::Inactive, now, *cache));
            }
            Ok(checked(config, answer, now, leeway, *cache))
        }
        Opaque::Userinfo {
            endpoint,
            tokeninfo_endpoint,
            cache,
        } => {
            let (status, body) = fetcher
                .post_form(
                    tokeninfo_endpoint,
                    &[("access_token", token.as_bytes())],
                    None,
                )
                .await
                .map_err(|e| unavailable("tokeninfo", e.to_string()))?;
            match status {
                200 => {}
                400 | 401 => {
                    issuer.metrics.introspection(true);
                    return Ok(refused(Rejection::Inactive, now, *cache));
                }
                _ => return Err(unavailable("tokeninfo", format!("HTTP status {status}"))),
            }
            let info = object(&body)
                .ok_or_else(|| unavailable("tokeninfo", "not a JSON object".to_owned()))?;
            let (status, body) = fetcher
                .get_bearer(endpoint, token)
                .await
                .map_err(|e| unavailable("userinfo", e.to_string()))?;
            match status {
                200 => {}
                400 | 401 | 403 => {
                    issuer.metrics.introspection(true);
                    return Ok(refused(Rejection::Inactive, now, *cache));
                }
                _ => return Err(unavailable("userinfo", format!("HTTP status {status}"))),
            }
            let mut claims = object(&body)
                .ok_or_else(|| unavailable("userinfo", "not a JSON object".to_owned()))?;
            issuer.metrics.introspection(true);
            // The token-info answer says for whom and until when; userinfo says who.
            if let (Some(a), Some(b)) = (info.get("sub"), claims.get("sub")) {
                if a != b {
                    return Ok(refused(Rejection::MissingClaim, now, *cache));
                }
            }
            for name in ["aud", "azp", "scope", "exp", "iat"] {
                match info.get(name) {
                    Some(v) => claims.insert(name.to_owned(), v.clone()),
                    None => claims.remove(name),
                };
            }
            if let Some(exp) = number(claims.get("exp")) {
                claims.insert("exp".to_owned(), Value::from(exp));
            } else {
                return Ok(refused(Rejection::MissingClaim, now, *cache));
            }
            Ok(checked(config, claims, now, leeway, *cache))
        }
    }
}

/// The checks that do not depend on the purpose: `exp`, `iss` when given, `aud` our audience.
fn checked(
    config: &Issuer,
    claims: Map<String, Value>,
    now: u64,
    leeway: Duration,
    cache: Duration,
) -> Outcome {
    let exp = match claims.get("exp") {
        None => None,
        Some(v) => match number(Some(v)) {
            Some(exp) => Some(exp),
            None => return refused(Rejection::MissingClaim, now, cache),
        },
    };
    if exp.is_some_and(|exp| exp.saturating_add(leeway.as_secs()) <= now) {
        return refused(Rejection::Expired, now, cache);
    }
    if claims
        .get("iss")
        .is_some_and(|iss| iss.as_str() != Some(config.issuer.as_str()))
    {
        return refused(Rejection::Issuer, now, cache);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == config.audience,
        Some(Value::Array(items)) => items
            .iter()
            .any(|a| a.as_str() == Some(config.audience.as_str())),
        _ => false,
    };
    if !audience_ok {
        return refused(Rejection::Audience, now, cache);
    }
    let ceiling = now.saturating_add(cache.as_secs());
    Outcome {
        said: Said::Active(Arc::new(claims)),
        until: exp.map_or(ceiling, |exp| exp.min(ceiling)),
    }
}

fn refused(r: Rejection, now: u64, cache: Duration) -> Outcome {
    Outcome {
        said: Said::Refused(r),
        until: now.saturating_add(cache.as_secs()),
    }
}

fn object(body: &[u8]) -> Option<Map<String, Value>> {
    match strict_json(body) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// A Unix time as a JSON number, or as a string of digits (Google's token-info).
fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_tokens_are_b64token() {
        assert!(plausible("ya29.a0AfH6SMB-x_y~z+/="));
        assert!(!plausible(""));
        assert!(!plausible("has space"));
        assert!(!plausible("quote\""));
        assert!(!plausible(&"a".repeat(MAX_TOKEN_BYTES + 1)));
    }

    #[test]
    fn numbers_may_be_strings_of_digits() {
        assert_eq!(number(Some(&Value::from(5u64))), Some(5));
        assert_eq!(
            number(Some(&Value::from("1700000000"))),
            Some(1_700_000_000)
        );
        assert_eq!(number(Some(&Value::from("-1"))), None);
        assert_eq!(number(Some(&Value::from(""))), None);
        assert_eq!(number(Some(&Value::from(1.5))), None);
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_live_entries() {
        let cache = OpaqueCache::default();
        let live = Outcome {
            said: Said::Refused(Rejection::Inactive),
            until: 100,
        };
        for i in 0..MAX_ENTRIES {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let slot = cache.slot(key, 10);
            assert!(slot.set(live.clone()).is_ok());
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        // Full of live entries: a new token gets a slot that is not kept.
        let extra = cache.slot([0xff; 32], 10);
        assert!(extra.set(live.clone()).is_ok());
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(cache.slot([0xff; 32], 10).get().is_none());
        // Once they have expired, they make room.
        let _ = cache.slot([0xfe; 32], 200);
        assert_eq!(cache.len(), 1);
    }
}
