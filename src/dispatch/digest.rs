//! Authenticating one request with Digest, in the order that keeps known and unknown users
//! indistinguishable (docs/testing.md §3): credentials for our realm (two for the same realm is a
//! 400; none gets a challenge), limit by source, algorithm allowed, Digest `uri` equal to the
//! Request-URI, the nonce checked **before** any user lookup, per-user limit, verification
//! against the account's HA1 or a dummy one, and only after success the nonce-count replay
//! check.
//!
//! Both limits spare a (username, source) pair that authenticated recently
//! ([`crate::auth::TrustedPairs`]): a guessed user's own phone, and the working phones behind
//! the NAT address of a broken one, keep registering while the guesser and the broken phone
//! stay throttled. A request without credentials is challenged even from a blocked source,
//! since a working phone's refresh starts that way; the challenge is stateless for REGISTER.
//!
//! Every refusal becomes the same fresh challenge; the reason goes to metrics and debug logs.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use super::{unix_now, Dispatcher, Response};
use crate::auth::{self, Challenge, DigestCredentials, NonceStatus, Verdict};
use crate::config::AccountKind;
use crate::credentials::device::{DeviceEntry, DEVICE_PREFIX};
use crate::credentials::Account;
use crate::metrics::{AuthFailure, DropReason, RegisterOutcome};
use crate::sip::{Credentials, DigestParams, HeaderName, Message, Method, Uri};
use crate::transport::Source;

/// Registrar (401, WWW-Authenticate, Authorization) or proxy (407, Proxy-*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Registrar,
    Proxy,
}

impl Role {
    fn credentials_header(self) -> HeaderName {
        match self {
            Role::Registrar => HeaderName::Authorization,
            Role::Proxy => HeaderName::ProxyAuthorization,
        }
    }
}

pub(crate) enum AuthStep<'a> {
    /// Verified.
    Authenticated(Identity<'a>),
    /// Answer with this (a challenge or a 400), or drop (`None`).
    Reply(Option<Response>),
}

/// Who a verified request comes from.
pub(crate) struct Identity<'a> {
    /// The AoR this identity may bind or call from (`sip:user@domain`).
    pub aor: Cow<'a, str>,
    /// Seconds a device credential has left: a REGISTER's granted expiry never exceeds it.
    pub expires_cap: Option<u64>,
    /// The device credential and generation that verified, to report a successful REGISTER.
    pub device: Option<(Arc<DeviceEntry>, u32)>,
}

impl Dispatcher {
    pub(crate) fn authenticate(
        &self,
        msg: &Message,
        realm: &str,
        src: &Source,
        now: Instant,
        role: Role,
    ) -> AuthStep<'_> {
        let i = &self.inner;
        let ip = auth::source_key(src.peer.ip());
        let mut ours: Option<DigestParams<'_>> = None;
        for c in msg.credentials(role.credentials_header()) {
            match c {
                Err(_) => return self.bad_credentials(msg, src, role),
                Ok(Credentials::Digest(p))
                    if p.realm.is_some_and(|r| r.eq_ignore_ascii_case(realm)) =>
                {
                    if ours.is_some() {
                        // A21: two credentials for one realm; never pick one that happens to pass.
                        return self.bad_credentials(msg, src, role);
                    }
                    ours = Some(p);
                }
                Ok(_) => {} // another realm or scheme (RFC 4475 regaut01): not ours, ignored
            }
        }
        let Some(p) = ours else {
            let step = self.challenge(msg, src, realm, false, None, role, None);
            // No credentials: nothing was checked or counted, so the challenge is answered
            // statelessly (see `Response::stateless`). REGISTER only; other requests keep
            // their transaction.
            return match step {
                AuthStep::Reply(Some(mut r)) if role == Role::Registrar => {
                    r.stateless = true;
                    AuthStep::Reply(Some(r))
                }
                other => other,
            };
        };
        // Every refusal from here on is the same fresh challenge; only metrics see the reason.
        let refuse = |stale: bool, reason: AuthFailure| {
            self.challenge(msg, src, realm, stale, None, role, Some(reason))
        };
        // The replay table refuses only after the digest verified, so the password is right:
        // a stale challenge, which phones answer with the new nonce without prompting. A nonce
        // that lost its slot (or is another process's) counts as stale, a replayed count as a
        // replay.
        let replay_refused = |e: auth::ReplayError| {
            let reason = if e.is_stale() {
                AuthFailure::StaleNonce
            } else {
                AuthFailure::Replay
            };
            refuse(true, reason)
        };
        let Some(creds) = DigestCredentials::from_params(&p) else {
            return self.bad_credentials(msg, src, role);
        };
        let DigestCredentials {
            username,
            nonce,
            uri,
            ..
        } = creds;
        let trusted = i.trusted.contains(username, ip, now);
        if !trusted && i.source_limiter.is_blocked(&ip, now) {
            return self.throttled(msg);
        }
        let domain_algs = &i
            .domains
            .get(realm)
            .map(|d| d.algorithms.as_slice())
            .unwrap_or(&[]);
        let algorithm = match creds.algorithm() {
            Some(a) if domain_algs.contains(&a) => a,
            _ => {
                return refuse(false, AuthFailure::Algorithm);
            }
        };
        if !same_uri(uri, msg.request_uri().unwrap_or("")) {
            i.metrics.auth_failure(AuthFailure::Malformed);
            return AuthStep::Reply(Some(self.respond(
                msg,
                src,
                400,
                "Digest URI Mismatch",
                &[],
            )));
        }
        let bound = i.bind_nonce_to_source.then_some(src.peer.ip());
        match i.nonces.check(nonce, realm, bound, unix_now()) {
            NonceStatus::Valid { .. } => {}
            NonceStatus::Stale => {
                return refuse(true, AuthFailure::StaleNonce);
            }
            NonceStatus::Invalid => {
                return refuse(false, AuthFailure::InvalidNonce);
            }
        }
        if !trusted && i.user_limiter.is_blocked(username, now) {
            return self.throttled(msg);
        }
        if let Some(devices) = i
            .devices
            .as_ref()
            .filter(|_| username.starts_with(DEVICE_PREFIX))
        {
            // docs/token-api.md "The registrar's check for a device credential": the record (or a
            // dummy) is checked against realm and AoR, then both generations are verified, so
            // an unknown, revoked or expired username takes the same path.
            let expected = match role {
                Role::Registrar => msg.to().ok().and_then(|t| t.uri.aor()),
                Role::Proxy => msg.from().ok().and_then(|f| f.uri.aor()),
            };
            let now_unix = unix_now();
            let found = devices.candidates(
                username,
                realm,
                expected.as_deref(),
                algorithm,
                now_unix,
                &i.dummy,
            );
            let verdicts = found
                .ha1
                .map(|ha1| auth::verify(&creds, msg.method_str(), &ha1));
            if let Some(Verdict::Refused(why)) =
                verdicts.iter().find(|v| matches!(v, Verdict::Refused(_)))
            {
                tracing::debug!(peer = %src.peer, ?why, "digest credentials refused");
                return refuse(false, AuthFailure::Malformed);
            }
            let accepted = verdicts
                .iter()
                .position(|v| *v == Verdict::Accepted)
                .and_then(|n| found.generations[n]);
            let (Some((gen, expires_at)), Some(entry)) = (accepted, found.entry) else {
                self.record_failure(username, ip, now);
                tracing::debug!(peer = %src.peer, username, "device digest response did not verify");
                return refuse(false, AuthFailure::WrongResponse);
            };
            if let Err(e) = i.replay.check_and_record(
                nonce,
                creds.nc.unwrap_or(0),
                msg.call_id().unwrap_or(""),
                Some(src.peer.ip()),
            ) {
                tracing::debug!(peer = %src.peer, username, error = %e, "digest replay refused");
                return replay_refused(e);
            }
            i.trusted.record_success(username, ip, now);
            return AuthStep::Authenticated(Identity {
                aor: Cow::Owned(entry.aor.to_string()),
                expires_cap: Some(expires_at.saturating_sub(now_unix).max(1)),
                device: Some((entry, gen)),
            });
        }
        let account = i.accounts.lookup(username, realm);
        let ha1 = account
            .filter(|a| a.algorithms.contains(&algorithm))
            .and_then(|a| a.ha1(algorithm))
            .unwrap_or_else(|| i.dummy.get(algorithm));
        match auth::verify(&creds, msg.method_str(), ha1) {
            Verdict::Accepted => {}
            Verdict::Mismatch => {
                self.record_failure(username, ip, now);
                tracing::debug!(peer = %src.peer, username, "digest response did not verify");
                return self.challenge(
                    msg,
                    src,
                    realm,
                    false,
                    account,
                    role,
                    Some(AuthFailure::WrongResponse),
                );
            }
            Verdict::Refused(why) => {
                tracing::debug!(peer = %src.peer, ?why, "digest credentials refused");
                return refuse(false, AuthFailure::Malformed);
            }
        }
        let Some(account) = account else {
            // verify never accepts a dummy HA1; this is unreachable in practice.
            return refuse(false, AuthFailure::WrongResponse);
        };
        let call_id = msg.call_id().unwrap_or("");
        if let Err(e) =
            i.replay
                .check_and_record(nonce, creds.nc.unwrap_or(0), call_id, Some(src.peer.ip()))
        {
            tracing::debug!(peer = %src.peer, username, error = %e, "digest replay refused");
            return replay_refused(e);
        }
        i.trusted.record_success(username, ip, now);
        let sso_enforced = i.domains.get(realm).is_some_and(|d| d.sso_enforced);
        if sso_enforced && account.kind == AccountKind::Human {
            // sso = "enforce": humans sign in through the token API; only after a correct
            // password is this said, so it reveals nothing to a guesser.
            tracing::info!(peer = %src.peer, username, realm, "static human account refused: SSO is enforced");
            if msg.method() == Some(Method::Register) {
                i.metrics.register(RegisterOutcome::Forbidden);
            }
            return AuthStep::Reply(Some(self.respond(msg, src, 403, "SSO Required", &[])));
        }
        AuthStep::Authenticated(Identity {
            aor: Cow::Borrowed(&account.aor),
            expires_cap: None,
            device: None,
        })
    }

    /// A fresh challenge: one header per algorithm, in the configured order. An existing
    /// account named in the refused credentials gets its own algorithm list (config
    /// `accounts[].algorithms`); note that a list differing from the domain's tells a client
    /// that guessed the username that it exists.
    #[allow(clippy::too_many_arguments)]
    fn challenge(
        &self,
        msg: &Message,
        src: &Source,
        realm: &str,
        stale: bool,
        account: Option<&Account>,
        role: Role,
        failure: Option<AuthFailure>,
    ) -> AuthStep<'_> {
        let i = &self.inner;
        if let Some(reason) = failure {
            i.metrics.auth_failure(reason);
        }
        if msg.method() == Some(Method::Register) {
            i.metrics.register(if failure.is_some() && !stale {
                RegisterOutcome::AuthFailed
            } else {
                RegisterOutcome::Challenged
            });
        }
        let bound = i.bind_nonce_to_source.then_some(src.peer.ip());
        let nonce = i.nonces.mint(realm, bound, unix_now());
        let algorithms = match account {
            Some(a) => a.algorithms.as_slice(),
            None => i
                .domains
                .get(realm)
                .map(|d| d.algorithms.as_slice())
                .unwrap_or(&[]),
        };
        let values: Vec<String> = algorithms
            .iter()
            .map(|&algorithm| {
                let mut v = String::with_capacity(128);
                Challenge {
                    realm,
                    nonce: &nonce,
                    algorithm,
                    stale,
                    opaque: None,
                }
                .write_to(&mut v);
                v
            })
            .collect();
        let (status, reason, header) = match role {
            Role::Registrar => (401, "Unauthorized", "WWW-Authenticate"),
            Role::Proxy => (407, "Proxy Authentication Required", "Proxy-Authenticate"),
        };
        let extra: Vec<(&str, &str)> = values.iter().map(|v| (header, v.as_str())).collect();
        AuthStep::Reply(Some(self.respond(msg, src, status, reason, &extra)))
    }

    /// The answer to credentials that verified but whose device was revoked before the
    /// REGISTER could be applied: the same fresh challenge a revoked credential gets.
    pub(crate) fn refused_credential(
        &self,
        msg: &Message,
        src: &Source,
        realm: &str,
    ) -> Option<Response> {
        match self.challenge(
            msg,
            src,
            realm,
            false,
            None,
            Role::Registrar,
            Some(AuthFailure::WrongResponse),
        ) {
            AuthStep::Reply(r) => r,
            AuthStep::Authenticated(_) => None,
        }
    }

    /// A response that did not verify: counted by both limiters, and the pair loses its trust.
    fn record_failure(&self, username: &str, ip: std::net::IpAddr, now: Instant) {
        let i = &self.inner;
        i.source_limiter.record_failure(ip, now);
        i.user_limiter.record_failure(username.to_owned(), now);
        i.trusted.record_failure(username, ip);
    }

    fn bad_credentials(&self, msg: &Message, src: &Source, role: Role) -> AuthStep<'_> {
        self.inner.metrics.auth_failure(AuthFailure::Malformed);
        if role == Role::Registrar {
            self.inner.metrics.register(RegisterOutcome::BadRequest);
        }
        AuthStep::Reply(Some(self.respond(msg, src, 400, "Bad Authorization", &[])))
    }

    fn throttled(&self, msg: &Message) -> AuthStep<'_> {
        self.inner.metrics.dropped(DropReason::Throttled);
        if msg.method() == Some(Method::Register) {
            self.inner.metrics.register(RegisterOutcome::Throttled);
        }
        AuthStep::Reply(None)
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
