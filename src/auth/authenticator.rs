//! [`Authenticator`]: the Digest authentication of one request, as one call that returns a
//! [`Decision`]. It owns the nonce issuer, the replay table, both failure limiters, the trusted
//! pairs, the dummy HA1s and each realm's algorithms and SSO rule; it finds users through a
//! [`CredentialLookup`] (implemented by `credentials` over static accounts and token API
//! devices) and takes the time as parameters (`now` for the limiters, wall-clock Unix seconds
//! for nonces), so its order is unit-tested on a virtual clock.
//!
//! It must not parse SIP (the caller hands it typed views: [`Offered`], the method, the
//! Request-URI), build responses or count metrics: the caller maps each [`Decision`] to a
//! status (401/407, 400, 403, or no answer) and counts it.
//!
//! # The order (docs/architecture.md "Path of one REGISTER", step 5)
//!
//! Chosen so that known and unknown users look and cost the same (docs/testing.md §3):
//!
//! 1. Credentials for our realm: none → a challenge ([`ChallengeSet::failure`] `None`: nothing
//!    was checked or counted); an unparseable header or two for the realm (A21) → 400.
//! 2. The per-source limiter, unless the (username, source) pair is trusted → [`Decision::Throttled`].
//! 3. The algorithm must be one the realm allows → challenge.
//! 4. The Digest `uri` must name the Request-URI → 400.
//! 5. [`NonceIssuer::check`]: invalid → challenge; too old → challenge with `stale=true`. Both
//!    **before** any user lookup.
//! 6. The per-username limiter, unless the pair is trusted → [`Decision::Throttled`].
//! 7. One [`CredentialLookup::find`]; an unknown user gets as many dummy HA1s as a known one
//!    gets real ones, and every candidate is verified ([`verify`], constant time).
//! 8. A response that does not verify counts one failure in both limiters and ends the pair's
//!    trust → challenge. Every challenge offers the realm's algorithms in the realm's order,
//!    whoever the user is: an account's own `algorithms` never shows in a challenge, since a
//!    list that differs from the realm's would tell a guesser that the user exists.
//! 9. Only after success: [`ReplayTable::check_and_record`]; a refusal → challenge with
//!    `stale=true` (the password was right; see [`ReplayError::is_stale`]). With several nodes
//!    ([`Authenticator::attach_shared`]) the use is then claimed in the shared record too (a
//!    nonce of another node, or one whose local slot was reused, is decided there alone); a
//!    replay it finds → challenge with `stale=true`; no answer from it → [`Decision::Unavailable`].
//! 10. The pair becomes trusted; a static `human` account in a realm with `sso = "enforce"` →
//!     [`Decision::SsoRequired`] (said only after the password verified).
//!
//! Both limiters spare a trusted pair ([`TrustedPairs`]): a guessed user's own phone, and the
//! working phones behind the NAT address of a broken one, keep registering while the guesser
//! and the broken phone stay throttled. A request without credentials is challenged even from
//! a blocked source, since a working phone's refresh starts that way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::{
    source_key, verify, Algorithm, Challenge, Claim, DigestCredentials, DummyHa1s, FailureLimiter,
    Ha1, NonceIssuer, NonceStatus, NonceUse, ReplayError, ReplayTable, SharedAuth, TrustedPairs,
    Verdict,
};
use crate::sip::{Credentials, DigestParams, Uri};

/// One realm's Digest policy (config `domains[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmPolicy {
    /// The algorithms accepted and challenged, in the configured order.
    pub algorithms: Vec<Algorithm>,
    /// `sso = "enforce"`: static accounts of kind `human` get [`Decision::SsoRequired`] after
    /// verifying.
    pub sso_enforced: bool,
}

/// What [`Authenticator::new`] is built from.
pub struct AuthenticatorParts {
    pub nonces: NonceIssuer,
    /// Nonces carry (and are checked against) the source IP (config `auth.bind_nonce_to_source`).
    pub bind_nonce_to_source: bool,
    pub replay: ReplayTable,
    pub source_limiter: FailureLimiter<IpAddr>,
    pub user_limiter: FailureLimiter<String>,
    /// (username, source) pairs that authenticated recently: the limiters let them through.
    pub trusted: TrustedPairs,
    pub realms: Vec<(String, RealmPolicy)>,
}

/// The authentication service. Shared by reference; every part is internally synchronised.
pub struct Authenticator {
    nonces: NonceIssuer,
    bind_nonce_to_source: bool,
    replay: ReplayTable,
    source_limiter: FailureLimiter<IpAddr>,
    user_limiter: FailureLimiter<String>,
    trusted: TrustedPairs,
    /// Verified against for users that do not exist, so they cost what real ones cost.
    dummy: DummyHa1s,
    realms: HashMap<String, RealmPolicy>,
    /// The other nodes' nonce uses and failures (Redis), once attached.
    shared: OnceLock<Arc<dyn SharedAuth>>,
}

/// The credentials a request offers for our realm, as the caller found them in its
/// `Authorization` (registrar) or `Proxy-Authorization` (proxy) headers.
#[derive(Debug, Clone, Copy)]
pub enum Offered<'a> {
    /// No credentials for this realm (other realms and schemes are not ours, RFC 4475 regaut01).
    Nothing,
    /// Exactly one Digest credential for this realm.
    Digest(DigestParams<'a>),
    /// A header that does not parse, or two credentials for this realm (A21: never pick one
    /// that happens to pass).
    Malformed,
}

impl<'a> Offered<'a> {
    /// Picks the credentials for `realm` out of a request's parsed credential headers.
    pub fn select<E>(
        credentials: impl IntoIterator<Item = Result<Credentials<'a>, E>>,
        realm: &str,
    ) -> Offered<'a> {
        let mut ours = Offered::Nothing;
        for c in credentials {
            match c {
                Err(_) => return Offered::Malformed,
                Ok(Credentials::Digest(p))
                    if p.realm.is_some_and(|r| r.eq_ignore_ascii_case(realm)) =>
                {
                    if matches!(ours, Offered::Digest(_)) {
                        return Offered::Malformed;
                    }
                    ours = Offered::Digest(p);
                }
                Ok(_) => {}
            }
        }
        ours
    }
}

/// The Digest material of one request.
#[derive(Debug, Clone, Copy)]
pub struct DigestRequest<'a> {
    pub offered: Offered<'a>,
    /// Our realm the request is for (its domain).
    pub realm: &'a str,
    pub method: &'a str,
    pub request_uri: &'a str,
    /// Recorded with the nonce's first use (replay table).
    pub call_id: &'a str,
    pub source: SocketAddr,
    /// The AoR the credential must belong to (To of a REGISTER, From otherwise): a device
    /// credential is only a candidate for its own AoR.
    pub expected_aor: Option<&'a str>,
}

/// What [`CredentialLookup::find`] is asked.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    /// The (realm-allowed) algorithm of the credentials: the HA1s must be for it.
    pub algorithm: Algorithm,
    pub expected_aor: Option<&'a str>,
    pub now_unix: u64,
}

/// Where the authenticator finds a username's HA1s.
pub trait CredentialLookup {
    /// What a verified credential carries for the caller besides its AoR (for a token API
    /// device: the record and generation, re-checked under the AoR lock and reported).
    type Credential;

    /// The HA1s `query.username` may answer with, each with the identity it proves. A username
    /// that is unknown, belongs to another realm or AoR, or has no HA1 for the algorithm gets
    /// the same number of candidates as a usable one of its kind, with dummy HA1s from `dummy`
    /// and no identity, so the work does not depend on what exists.
    fn find(&self, query: &Query<'_>, dummy: &DummyHa1s) -> Found<Self::Credential>;
}

/// A lookup's answer.
pub struct Found<C> {
    /// Verified in order; the first accepted one with an identity wins.
    pub candidates: Vec<Candidate<C>>,
}

/// One HA1 to verify against.
pub struct Candidate<C> {
    pub ha1: Ha1,
    /// `None` for a dummy.
    pub identity: Option<Identity<C>>,
}

/// Who a verified request comes from.
#[derive(Debug, Clone)]
pub struct Identity<C> {
    /// The AoR this identity may bind or call from (`sip:user@domain`).
    pub aor: Arc<str>,
    /// A static account of kind `human`: refused where the realm enforces SSO.
    pub sso_user: bool,
    /// Seconds a device credential has left: a REGISTER's granted expiry never exceeds it.
    pub expires_cap: Option<u64>,
    pub credential: C,
}

/// The outcome of [`Authenticator::authenticate`].
#[derive(Debug)]
pub enum Decision<C> {
    Authenticated(Identity<C>),
    /// Answer with a fresh challenge (401 or 407).
    Challenge(ChallengeSet),
    /// Answer 400.
    BadRequest(BadRequest),
    /// Over a failure limit: no answer.
    Throttled,
    /// The password verified, but this static human account must sign in through SSO (403).
    SsoRequired,
    /// The credentials verified, but the nodes' shared nonce record could not be read: answer
    /// 503 with `Retry-After`.
    Unavailable,
}

/// A fresh challenge: one header value per algorithm, in order, all with the same nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeSet {
    /// RFC 7616 `stale=true`: the nonce was ours but too old, or the password was right but
    /// the nonce cannot be used again.
    pub stale: bool,
    /// Why the request was refused; `None` when it carried no credentials for the realm
    /// (nothing was checked or counted, so the caller may answer statelessly).
    pub failure: Option<Failure>,
    pub nonce: String,
    pub algorithms: Vec<Algorithm>,
}

impl ChallengeSet {
    /// The `WWW-Authenticate` / `Proxy-Authenticate` values for `realm`.
    pub fn header_values(&self, realm: &str) -> Vec<String> {
        self.algorithms
            .iter()
            .map(|&algorithm| {
                let mut v = String::with_capacity(128);
                Challenge {
                    realm,
                    nonce: &self.nonce,
                    algorithm,
                    stale: self.stale,
                    opaque: None,
                }
                .write_to(&mut v);
                v
            })
            .collect()
    }
}

/// Why credentials were refused (for metrics and debug logs only; the client sees the same
/// fresh challenge for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    WrongResponse,
    StaleNonce,
    InvalidNonce,
    Replay,
    Algorithm,
    Malformed,
}

/// A 400 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// `400 Bad Authorization`: a credentials header that does not parse or lacks a required
    /// parameter, or two credentials for the realm.
    Credentials,
    /// `400 Digest URI Mismatch`: the Digest `uri` does not name the Request-URI.
    DigestUriMismatch,
}

impl BadRequest {
    pub fn reason_phrase(self) -> &'static str {
        match self {
            BadRequest::Credentials => "Bad Authorization",
            BadRequest::DigestUriMismatch => "Digest URI Mismatch",
        }
    }
}

impl Authenticator {
    pub fn new(parts: AuthenticatorParts) -> Authenticator {
        Authenticator {
            nonces: parts.nonces,
            bind_nonce_to_source: parts.bind_nonce_to_source,
            replay: parts.replay,
            source_limiter: parts.source_limiter,
            user_limiter: parts.user_limiter,
            trusted: parts.trusted,
            dummy: DummyHa1s::new(),
            realms: parts.realms.into_iter().collect(),
            shared: OnceLock::new(),
        }
    }

    /// From now on nonce uses are also claimed in `shared`, and failures reported to it
    /// (several nodes, `registrar.persistence = "redis"`). Once only (false after the first).
    pub fn attach_shared(&self, shared: Arc<dyn SharedAuth>) -> bool {
        self.shared.set(shared).is_ok()
    }

    /// Handles on both failure limiters (per source, per username), for what imposes the
    /// blocks the other nodes decided.
    pub fn limiters(&self) -> (FailureLimiter<IpAddr>, FailureLimiter<String>) {
        (self.source_limiter.clone(), self.user_limiter.clone())
    }

    /// Authenticates one request, in the order of the module docs.
    pub fn authenticate<L: CredentialLookup>(
        &self,
        req: &DigestRequest<'_>,
        lookup: &L,
        now: Instant,
        now_unix: u64,
    ) -> Decision<L::Credential> {
        let refuse = |stale: bool, failure: Failure| {
            Decision::Challenge(self.challenge(
                req.realm,
                req.source,
                stale,
                Some(failure),
                now_unix,
            ))
        };
        let params = match &req.offered {
            Offered::Nothing => {
                return Decision::Challenge(
                    self.challenge(req.realm, req.source, false, None, now_unix),
                )
            }
            Offered::Malformed => return Decision::BadRequest(BadRequest::Credentials),
            Offered::Digest(p) => p,
        };
        let Some(creds) = DigestCredentials::from_params(params) else {
            return Decision::BadRequest(BadRequest::Credentials);
        };
        let username = creds.username;
        let ip = source_key(req.source.ip());
        let trusted = self.trusted.contains(username, ip, now);
        if !trusted && self.source_limiter.is_blocked(&ip, now) {
            return Decision::Throttled;
        }
        let policy = self.realms.get(req.realm);
        let allowed = policy.map(|p| p.algorithms.as_slice()).unwrap_or(&[]);
        let algorithm = match creds.algorithm() {
            Some(a) if allowed.contains(&a) => a,
            _ => return refuse(false, Failure::Algorithm),
        };
        if !same_uri(creds.uri, req.request_uri) {
            return Decision::BadRequest(BadRequest::DigestUriMismatch);
        }
        let bound = self.bind_nonce_to_source.then_some(req.source.ip());
        match self.nonces.check(creds.nonce, req.realm, bound, now_unix) {
            NonceStatus::Valid { .. } => {}
            NonceStatus::Stale => return refuse(true, Failure::StaleNonce),
            NonceStatus::Invalid => return refuse(false, Failure::InvalidNonce),
        }
        if !trusted && self.user_limiter.is_blocked(username, now) {
            return Decision::Throttled;
        }
        let query = Query {
            username,
            realm: req.realm,
            algorithm,
            expected_aor: req.expected_aor,
            now_unix,
        };
        let found = lookup.find(&query, &self.dummy);
        let verdicts: Vec<Verdict> = found
            .candidates
            .iter()
            .map(|c| verify(&creds, req.method, &c.ha1))
            .collect();
        if let Some(why) = verdicts.iter().find_map(|v| match v {
            Verdict::Refused(why) => Some(why),
            _ => None,
        }) {
            tracing::debug!(peer = %req.source, ?why, "digest credentials refused");
            return refuse(false, Failure::Malformed);
        }
        let accepted = found
            .candidates
            .into_iter()
            .zip(&verdicts)
            .find(|(c, v)| **v == Verdict::Accepted && c.identity.is_some())
            .and_then(|(c, _)| c.identity);
        let Some(identity) = accepted else {
            self.record_failure(username, ip, now);
            tracing::debug!(peer = %req.source, username, "digest response did not verify");
            return Decision::Challenge(self.challenge(
                req.realm,
                req.source,
                false,
                Some(Failure::WrongResponse),
                now_unix,
            ));
        };
        let nc = creds.nc.unwrap_or(0);
        let local =
            self.replay
                .check_and_record(creds.nonce, nc, req.call_id, Some(req.source.ip()));
        let shared = match (local, self.shared.get()) {
            (Ok(()), None) => None,
            // A replay this node saw itself needs no round trip; a nonce this node holds no
            // state for (another node's, or one whose slot was reused) is the shared record's.
            (Err(e), None) => Some(Err(e)),
            (Err(e), Some(_)) if !e.is_stale() => Some(Err(e)),
            (_, Some(shared)) => Some(Ok(shared)),
        };
        match shared {
            None => {}
            Some(Err(e)) => {
                tracing::debug!(peer = %req.source, username, error = %e, "digest replay refused");
                return refuse(true, replay_failure(e));
            }
            Some(Ok(shared)) => {
                let config = self.nonces.config();
                let use_ = NonceUse {
                    nonce: creds.nonce,
                    nc,
                    call_id: req.call_id,
                    source: req.source.ip(),
                    ttl_secs: (config.lifetime + config.max_drift).as_secs() + 1,
                };
                match shared.claim(&use_) {
                    Claim::Accepted => {}
                    Claim::Replayed => {
                        tracing::debug!(peer = %req.source, username, "digest replay refused by the shared nonce record");
                        return refuse(true, Failure::Replay);
                    }
                    Claim::Unavailable => return Decision::Unavailable,
                }
            }
        }
        self.trusted.record_success(username, ip, now);
        if identity.sso_user && policy.is_some_and(|p| p.sso_enforced) {
            tracing::info!(peer = %req.source, username, realm = req.realm, "static human account refused: SSO is enforced");
            return Decision::SsoRequired;
        }
        Decision::Authenticated(identity)
    }

    /// A fresh challenge for `realm`, with a nonce for `source`, offering the realm's
    /// algorithms in the realm's order (never an account's own list). Also the answer to
    /// credentials that verified but whose device was revoked before the REGISTER could be
    /// applied (`failure` [`Failure::WrongResponse`], as a revoked credential gets at
    /// verification).
    pub fn challenge(
        &self,
        realm: &str,
        source: SocketAddr,
        stale: bool,
        failure: Option<Failure>,
        now_unix: u64,
    ) -> ChallengeSet {
        let bound = self.bind_nonce_to_source.then_some(source.ip());
        let algorithms = self
            .realms
            .get(realm)
            .map_or(&[][..], |p| p.algorithms.as_slice());
        ChallengeSet {
            stale,
            failure,
            nonce: self.nonces.mint(realm, bound, now_unix),
            algorithms: algorithms.to_vec(),
        }
    }

    /// Whether a malformed request from `source` may still be answered: false once the
    /// source is over its failure limit; true otherwise, and the answer counts as one more
    /// failure of the source (so malformed input gets at most as many answers as guessing).
    pub fn admit_malformed(&self, source: IpAddr, now: Instant) -> bool {
        let ip = source_key(source);
        if self.source_limiter.is_blocked(&ip, now) {
            return false;
        }
        self.source_limiter.record_failure(ip, now);
        true
    }

    /// Whether `source` is over its failure limit (what [`Self::admit_malformed`] refuses),
    /// without counting anything: answers that cost nothing to legitimate traffic (a STUN
    /// keep-alive) stop for a blocked source too.
    pub fn source_blocked(&self, source: IpAddr, now: Instant) -> bool {
        self.source_limiter.is_blocked(&source_key(source), now)
    }

    /// Drops expired limiter entries and trusted pairs (the replay table needs none: its slots
    /// are reused in place). Called by the one purge task.
    pub fn purge(&self, now: Instant) {
        self.source_limiter.purge(now);
        self.user_limiter.purge(now);
        self.trusted.purge(now);
    }

    /// A response that did not verify: counted by both limiters, and the pair loses its trust.
    fn record_failure(&self, username: &str, ip: IpAddr, now: Instant) {
        self.source_limiter.record_failure(ip, now);
        self.user_limiter.record_failure(username.to_owned(), now);
        self.trusted.record_failure(username, ip);
        if let Some(shared) = self.shared.get() {
            shared.failure(username, ip);
        }
    }
}

/// The replay table refuses only after the digest verified, so the password is right: a
/// nonce that lost its slot (or is another process's) counts as stale, a replayed count as a
/// replay; both are answered `stale=true`.
fn replay_failure(e: ReplayError) -> Failure {
    if e.is_stale() {
        Failure::StaleNonce
    } else {
        Failure::Replay
    }
}

/// The Digest `uri` must name the Request-URI: byte-equal, or equal under RFC 3261 §19.1.4.
fn same_uri(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    match (Uri::parse(digest_uri), Uri::parse(request_uri)) {
        (Ok(a), Ok(b)) => a.is_sip() && a.comparison_key() == b.comparison_key(),
        _ => false,
    }
}

#[cfg(test)]
#[path = "authenticator_tests.rs"]
mod tests;
