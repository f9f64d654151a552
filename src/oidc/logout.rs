//! OpenID Connect Back-Channel Logout 1.0 (§2.4, §2.6): validating a `logout_token` with the
//! issuer's own keys and algorithm allowlist (the access tokens' JWKS cache, `issuer.rs`) and
//! the shape checks of `token.rs` (size, strict base64url and JSON, never `none` or HS*), then
//! the logout rules: exact `iss`, `aud` naming our client, `iat` present and neither in the
//! future nor older than [`MAX_AGE_SECS`], `exp` (when present) not passed, a `jti` not seen
//! before (replay, [`SeenJtis`]), the `events` claim holding the back-channel logout event, no
//! `nonce`, and `sub` and/or `sid`. `typ`, when present, must be `logout+jwt` or `JWT`.
//! Decides only: what to revoke is the API's.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::Validation;
use serde_json::{Map, Value};

use super::token::{asymmetric, decode_rejection, parse};
use super::{IssuerRegistry, Rejection};

pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token older than this (plus the leeway) is refused, so remembered `jti`s can be
/// forgotten after it.
pub const MAX_AGE_SECS: u64 = 300;
/// `jti`s remembered at most; when full of unexpired ones, logout tokens are refused (fail
/// closed) until some expire. Cost: about 64 bytes each.
pub const MAX_SEEN_JTIS: usize = 100_000;

/// A valid logout token.
#[derive(Debug, Clone)]
pub struct Logout {
    pub issuer_name: String,
    pub iss: String,
    pub sub: Option<String>,
    pub sid: Option<String>,
}

/// Why a logout token is refused (logs and metrics; the answer is one 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Token(Rejection),
    Audience,
    Age,
    Replayed,
    ReplayCacheFull,
    Events,
    Nonce,
    NoSubject,
    Type,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Token(r) => r.as_str(),
            Refusal::Audience => "audience",
            Refusal::Age => "iat",
            Refusal::Replayed => "jti_replayed",
            Refusal::ReplayCacheFull => "replay_cache_full",
            Refusal::Events => "events",
            Refusal::Nonce => "nonce",
            Refusal::NoSubject => "no_sub_or_sid",
            Refusal::Type => "typ",
        }
    }
}

/// `jti`s seen, keyed by `(iss, jti)`, until their token could no longer be accepted.
#[derive(Default)]
pub struct SeenJtis(Mutex<HashMap<(String, String), u64>>);

impl SeenJtis {
    /// Records `jti`; `Err` when it was seen (or the table is full of live entries).
    fn first_use(&self, iss: &str, jti: &str, forget_at: u64, now: u64) -> Result<(), Refusal> {
        let Ok(mut seen) = self.0.lock() else {
            return Err(Refusal::ReplayCacheFull);
        };
        if seen.len() >= MAX_SEEN_JTIS {
            seen.retain(|_, at| *at > now);
        }
        if seen.len() >= MAX_SEEN_JTIS {
            return Err(Refusal::ReplayCacheFull);
        }
        match seen.insert((iss.to_owned(), jti.to_owned()), forget_at) {
            Some(_) => Err(Refusal::Replayed),
            None => Ok(()),
        }
    }
}

/// Validates `token` for the issuer it names, with `audience(issuer name)` our client id
/// there (`None`: back-channel logout is off for that issuer).
pub async fn validate(
    registry: &IssuerRegistry,
    token: &str,
    audience: impl Fn(&str) -> Option<String>,
    seen: &SeenJtis,
    now: u64,
) -> Result<Logout, Refusal> {
    let parts = parse(token).map_err(Refusal::Token)?;
    let iss = match parts.claims.get("iss") {
        Some(Value::String(iss)) => iss.clone(),
        _ => return Err(Refusal::Token(Rejection::UnknownIssuer)),
    };
    let issuer = registry
        .issuer(&iss)
        .ok_or(Refusal::Token(Rejection::UnknownIssuer))?;
    let config = &issuer.config;
    let Some(client) = audience(&config.name) else {
        return Err(Refusal::Token(Rejection::UnknownIssuer));
    };
    if !config
        .algorithms
        .iter()
        .any(|a| asymmetric(a) == Some(parts.alg))
    {
        return Err(Refusal::Token(Rejection::Algorithm));
    }
    if let Some(typ) = parts.typ.as_deref() {
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        if !typ.eq_ignore_ascii_case("logout+jwt") && !typ.eq_ignore_ascii_case("JWT") {
            return Err(Refusal::Type);
        }
    }
    let key = issuer
        .key(parts.kid.as_deref(), parts.alg)
        .await
        .map_err(Refusal::Token)?;
    let leeway = registry.leeway().as_secs();
    let mut validation = Validation::new(parts.alg);
    validation.algorithms = vec![parts.alg];
    validation.leeway = leeway;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.set_required_spec_claims(&["iss", "aud"]);
    validation.set_issuer(&[config.issuer.as_str()]);
    validation.set_audience(&[client.as_str()]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        .map_err(|e| match decode_rejection(&e) {
            Rejection::Audience => Refusal::Audience,
            r => Refusal::Token(r),
        })?
        .claims;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(Refusal::Age)?;
    if iat > now + leeway || iat + MAX_AGE_SECS + leeway < now {
        return Err(Refusal::Age);
    }
    let event_ok = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !event_ok {
        return Err(Refusal::Events);
    }
    if claims.contains_key("nonce") {
        return Err(Refusal::Nonce);
    }
    let text = |name: &str| match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let (sub, sid) = (text("sub"), text("sid"));
    if sub.is_none() && sid.is_none() {
        return Err(Refusal::NoSubject);
    }
    let jti = text("jti").ok_or(Refusal::Token(Rejection::MissingClaim))?;
    seen.first_use(&iss, &jti, iat + MAX_AGE_SECS + 2 * leeway, now)?;
    Ok(Logout {
        issuer_name: config.name.clone(),
        iss,
        sub,
        sid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_accepted_once_and_forgotten_after_its_time() {
        let seen = SeenJtis::default();
        assert_eq!(seen.first_use("i", "j", 100, 10), Ok(()));
        assert_eq!(seen.first_use("i", "j", 100, 11), Err(Refusal::Replayed));
        assert_eq!(seen.first_use("other", "j", 100, 11), Ok(()));
    }
}
