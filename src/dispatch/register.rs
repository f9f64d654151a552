//! REGISTER, RFC 3261 §10.3, on top of `registrar::Location`: Require (420), Request-URI
//! without a user part, the domain ours (403), To a SIP AoR (400) in that domain (403),
//! authentication (or the TLS client certificate), the identity may bind only its own AoR
//! (403), then the parsed binding change (400 for a malformed one: see `register_request.rs`)
//! and a 200 that lists every current binding with its remaining expiry and a Date header.
//!
//! Every REGISTER that gets here leaves with exactly one [`RegisterOutcome`], counted in
//! [`Dispatcher::register`] (the one other count is a REGISTER whose core headers do not
//! parse, refused before it has a transaction). The bindings and AoRs gauges are kept by the
//! location service itself.
//!
//! Decisions (see README): wrong credentials → a fresh 401 (not 403); out-of-order CSeq →
//! 400; more bindings than allowed → 503; `*` on an AoR without bindings → 404 after
//! authentication (RFC 3261 leaves it open; resiprocate does the same).

use std::fmt::Write as _;
use std::time::Instant;

use super::digest::{AuthDecision, Role};
use super::register_request::{parse_register, BadRegister, Origin};
use super::respond::Response;
use super::{unix_now, Dispatcher};
use crate::auth::{Decision, Failure};
use crate::config::{ClientCertPolicy, PathPolicy};
use crate::metrics::RegisterOutcome;
use crate::registrar::{Credential, Location, RegisterError};
use crate::sip::{HeaderName, Message, Uri};
use crate::transport::Source;

/// The registrar side of dispatch: the location service and what to do when a flow closes.
pub struct RegistrarSide {
    pub location: Location,
    /// Config `registrar.remove_bindings_on_close`: a closed connection takes its bindings.
    pub remove_bindings_on_close: bool,
    /// Config `registrar.path`: a Path header without `Supported: path`.
    pub path: PathPolicy,
    /// The IPs of `redis.peers`: the other nodes sharing the location store, whose requests
    /// for one of this node's connection-bound bindings are taken as authenticated
    /// (`Dispatcher::routed_by_peer_node`).
    pub peer_nodes: Vec<std::net::IpAddr>,
}

type Answer = (RegisterOutcome, Option<Response>);

/// `Retry-After` seconds on the 503 that refuses a REGISTER when the location store's write
/// queue is full: long enough for the writer to catch up, short against a phone's refresh.
pub const STORE_BUSY_RETRY_AFTER_SECS: &str = "2";

impl Dispatcher {
    /// Answers a REGISTER and counts its outcome (the one place REGISTER outcomes are counted
    /// once a REGISTER has a transaction).
    pub(crate) fn register(
        &self,
        msg: &Message,
        ruri: &Uri<'_>,
        src: &Source,
        now: Instant,
    ) -> Option<Response> {
        let started = Instant::now();
        let (outcome, response) = self.registration(msg, ruri, src, now);
        let metrics = &self.inner.responder.metrics;
        metrics.register(outcome);
        metrics.register_took(started.elapsed());
        response
    }

    fn registration(&self, msg: &Message, ruri: &Uri<'_>, src: &Source, now: Instant) -> Answer {
        let i = &self.inner;
        let answer = |outcome, status, reason: &str| {
            (outcome, Some(self.respond(msg, src, status, reason, &[])))
        };
        let bad = |e: BadRegister| answer(RegisterOutcome::BadRequest, 400, e.reason_phrase());
        if let Some(list) = super::unsupported_required(msg) {
            let r = self.respond(msg, src, 420, "Bad Extension", &[("Unsupported", &list)]);
            return (RegisterOutcome::BadExtension, Some(r));
        }
        // RFC 3327 §5.3: a registrar may refuse a Path the client did not say it supports.
        let path_unsupported =
            msg.values(HeaderName::Path).next().is_some() && !msg.supports("path");
        if path_unsupported && i.registrar.path == PathPolicy::Strict {
            let r = self.respond(msg, src, 420, "Bad Extension", &[("Unsupported", "path")]);
            return (RegisterOutcome::BadExtension, Some(r));
        }
        let parsed = parse_register(msg, ruri);
        if let Err(e @ BadRegister::UserInRequestUri) = parsed {
            return bad(e);
        }
        let Some(domain) = i.names.domain_of(ruri) else {
            return answer(RegisterOutcome::Forbidden, 403, "Domain Not Served");
        };
        let request = match parsed {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        // A To without a user part names no AoR anyone can hold: like a To naming another
        // user it is refused after authentication (the identity's AoR never equals it), so
        // every malformed AoR is challenged first.
        if !request.to_host.eq_ignore_ascii_case(&domain) {
            return answer(RegisterOutcome::Forbidden, 403, "Forbidden");
        }
        let to_aor = &request.to_aor;
        // A TLS client certificate restricts the AoRs its connection may bind (A22, T5), and
        // where the domain allows it, authenticates the REGISTER on its own.
        let certificate_suffices = match &src.identity {
            None => false,
            Some(id) if !id.permits(to_aor) => {
                tracing::info!(peer = %src.peer, certificate = ?id.aors(), "REGISTER for an AoR the client certificate does not name");
                return answer(RegisterOutcome::Forbidden, 403, "Forbidden");
            }
            Some(_) => i
                .names
                .policy(&domain)
                .is_some_and(|d| d.client_cert == ClientCertPolicy::Sufficient),
        };
        // A device credential caps the granted expiry and reports its successful REGISTER.
        let mut expires_cap = None;
        let mut device = None;
        if !certificate_suffices {
            let identity = match self.decide(msg, &domain, src, now, Role::Registrar) {
                Decision::Authenticated(identity) => identity,
                refusal => return self.refused(msg, src, &domain, refusal),
            };
            // A10/A22: the identity binds only its own AoR.
            if *identity.aor != **to_aor {
                tracing::info!(peer = %src.peer, identity = %identity.aor, "REGISTER for another AoR refused");
                return answer(RegisterOutcome::Forbidden, 403, "Forbidden");
            }
            expires_cap = identity.expires_cap;
            device = identity.credential;
        }
        let bindings = match &request.bindings {
            Ok(b) => b,
            Err(e) => return bad(*e),
        };

        let aor = to_aor.clone();
        let devices = i.credentials.devices();
        let is_live = || match (&device, devices) {
            (Some(d), Some(devices)) => devices.is_active(&d.entry.username),
            _ => false,
        };
        let contacts = bindings.contacts();
        let origin = Origin {
            source: src.peer,
            transport: src.transport,
            flow: src.flow,
            max_expires_cap: expires_cap,
            credential: device.as_ref().map(|d| Credential {
                name: &d.entry.username,
                is_live: &is_live,
            }),
            store_path: bindings.path_supported || i.registrar.path == PathPolicy::Store,
        };
        let input = bindings.input(&aor, &contacts, origin);
        let outcome = match i.registrar.location.register(&input, now) {
            Ok(o) => o,
            Err(RegisterError::CredentialRevoked) => {
                // Revoked between verification and apply: answered as a revoked credential
                // is at verification, with a fresh challenge.
                tracing::debug!(peer = %src.peer, aor = %aor, "REGISTER with a credential revoked meanwhile");
                let challenge = i.auth.challenge(
                    &domain,
                    src.peer,
                    false,
                    Some(Failure::WrongResponse),
                    unix_now(),
                );
                return self.refused(msg, src, &domain, Decision::Challenge(challenge));
            }
            Err(e) => return self.register_error(msg, src, e),
        };
        if bindings.star && !outcome.had_bindings {
            return answer(RegisterOutcome::Ok, 404, "Not Found");
        }
        for r in &outcome.rebound {
            tracing::info!(aor = %aor, old = %r.old_source, new = %r.new_source, "binding moved to a new source");
        }
        if let (Some(d), Some(devices)) = (&device, devices) {
            devices.registered(&d.entry, d.generation, unix_now());
        }

        let mut contact_values: Vec<String> = Vec::with_capacity(outcome.bindings.len());
        for b in &outcome.bindings {
            let mut v = String::with_capacity(b.uri().len() + b.params().len() + 24);
            let _ = write!(v, "<{}>{};expires={}", b.uri(), b.params(), b.expires);
            contact_values.push(v);
        }
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut extra: Vec<(&str, &str)> = contact_values
            .iter()
            .map(|c| ("Contact", c.as_str()))
            .collect();
        // The Path is echoed only to a client that supports it (RFC 3327 §5.3); `store`
        // keeps it all the same, so calls reach the phone through its edge proxy.
        if bindings.path_supported {
            for p in &bindings.path {
                extra.push(("Path", p));
            }
        }
        extra.push(("Date", &date));
        extra.push(("Supported", "path, outbound"));
        // RFC 5626 §6: we are the first hop of a connection-oriented flow (no Path) and the
        // Contact asked for one: the flow is used for calls, and the 200 says so.
        if src.flow.is_some() && bindings.path.is_empty() && bindings.asks_outbound() {
            extra.push(("Require", "outbound"));
        }
        let mut ok = self.respond(msg, src, 200, "OK", &extra);
        ok.durable = outcome.durable;
        (RegisterOutcome::Ok, Some(ok))
    }

    /// A refused authentication: its answer, and the outcome it counts as.
    fn refused(&self, msg: &Message, src: &Source, realm: &str, refusal: AuthDecision) -> Answer {
        let outcome = match &refusal {
            Decision::Challenge(c) if c.failure.is_some() && !c.stale => {
                RegisterOutcome::AuthFailed
            }
            Decision::Challenge(_) | Decision::Authenticated(_) => RegisterOutcome::Challenged,
            Decision::BadRequest(_) => RegisterOutcome::BadRequest,
            Decision::Throttled => RegisterOutcome::Throttled,
            Decision::SsoRequired => RegisterOutcome::Forbidden,
            Decision::Unavailable => RegisterOutcome::StoreBusy,
        };
        let response = self.answer_refusal(msg, src, realm, Role::Registrar, refusal);
        (outcome, response)
    }

    fn register_error(&self, msg: &Message, src: &Source, e: RegisterError) -> Answer {
        let (status, reason) = e.sip_status();
        match e {
            RegisterError::IntervalTooBrief { min_expires } => {
                let min = min_expires.to_string();
                let r = self.respond(msg, src, status, reason, &[("Min-Expires", &min)]);
                (RegisterOutcome::IntervalTooBrief, Some(r))
            }
            RegisterError::StoreBusy => {
                let retry = [("Retry-After", STORE_BUSY_RETRY_AFTER_SECS)];
                let r = self.respond(msg, src, status, reason, &retry);
                (RegisterOutcome::StoreBusy, Some(r))
            }
            RegisterError::TooManyBindings { .. } | RegisterError::Full => (
                RegisterOutcome::TooManyBindings,
                Some(self.respond(msg, src, status, reason, &[])),
            ),
            _ => (
                RegisterOutcome::BadRequest,
                Some(self.respond(msg, src, status, reason, &[])),
            ),
        }
    }
}
