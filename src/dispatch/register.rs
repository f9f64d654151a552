//! REGISTER, RFC 3261 §10.3, on top of `registrar::Location`: Request-URI domain, user part
//! refused in the Request-URI, To must be a SIP AoR in that domain, authentication, the
//! identity may bind only its own AoR, then the binding change and a 200 that lists every
//! current binding with its remaining expiry and a Date header.
//!
//! Decisions (see README): wrong credentials → a fresh 401 (not 403); out-of-order CSeq →
//! 400; more bindings than allowed → 503; `*` on an AoR without bindings → 404 after
//! authentication (RFC 3261 leaves it open; resiprocate does the same).

use std::fmt::Write as _;
use std::time::Instant;

use super::digest::{AuthStep, Role};
use super::{Dispatcher, Response};
use crate::config::ClientCertPolicy;
use crate::metrics::RegisterOutcome;
use crate::registrar::{ContactInput, Credential, RegisterError, RegisterInput};
use crate::sip::{Contact, HeaderName, Message, Uri};
use crate::transport::Source;

impl Dispatcher {
    pub(crate) fn register(
        &self,
        msg: &Message,
        ruri: &Uri<'_>,
        src: &Source,
        now: Instant,
    ) -> Option<Response> {
        let i = &self.inner;
        let bad = |reason: &str| {
            i.metrics.register(RegisterOutcome::BadRequest);
            Some(self.respond(msg, src, 400, reason, &[]))
        };
        if ruri.user.is_some() {
            return bad("User In Request-URI");
        }
        let Some(domain) = self.domain_of(ruri) else {
            i.metrics.register(RegisterOutcome::Forbidden);
            return Some(self.respond(msg, src, 403, "Domain Not Served", &[]));
        };
        let Ok(to) = msg.to() else {
            return bad("Bad To");
        };
        let Some(to_aor) = to.uri.aor() else {
            return bad("To Is Not A SIP AoR");
        };
        // A To without a user part names no AoR anyone can hold: like a To naming another
        // user it is refused after authentication (the identity's AoR never equals it), so
        // every malformed AoR is challenged first.
        if !to.uri.host_raw.eq_ignore_ascii_case(&domain) {
            i.metrics.register(RegisterOutcome::Forbidden);
            return Some(self.respond(msg, src, 403, "Forbidden", &[]));
        }
        // A TLS client certificate restricts the AoRs its connection may bind (A22, T5), and
        // where the domain allows it, authenticates the REGISTER on its own.
        let certificate_suffices = match &src.identity {
            None => false,
            Some(id) if !id.permits(&to_aor) => {
                i.metrics.register(RegisterOutcome::Forbidden);
                tracing::info!(peer = %src.peer, certificate = ?id.aors(), "REGISTER for an AoR the client certificate does not name");
                return Some(self.respond(msg, src, 403, "Forbidden", &[]));
            }
            Some(_) => i
                .domains
                .get(domain.as_str())
                .is_some_and(|d| d.client_cert == ClientCertPolicy::Sufficient),
        };
        // A device credential caps the granted expiry and reports its successful REGISTER.
        let mut expires_cap = None;
        let mut device = None;
        if !certificate_suffices {
            let identity = match self.authenticate(msg, &domain, src, now, Role::Registrar) {
                AuthStep::Authenticated(identity) => identity,
                AuthStep::Reply(r) => return r,
            };
            // A10/A22: the identity binds only its own AoR.
            if *identity.aor != *to_aor {
                i.metrics.register(RegisterOutcome::Forbidden);
                tracing::info!(peer = %src.peer, identity = %identity.aor, "REGISTER for another AoR refused");
                return Some(self.respond(msg, src, 403, "Forbidden", &[]));
            }
            expires_cap = identity.expires_cap;
            device = identity.device;
        }

        let mut star = false;
        let mut keys: Vec<String> = Vec::new();
        let mut params: Vec<String> = Vec::new();
        let mut parsed = Vec::new();
        for c in msg.contacts() {
            match c {
                Ok(Contact::Star) => star = true,
                Ok(Contact::Addr(a)) => {
                    if !a.addr.uri.is_sip() && a.addr.uri.scheme != crate::sip::Scheme::Tel {
                        return bad("Bad Contact");
                    }
                    let mut p = String::new();
                    for param in a.params_without_expires() {
                        p.push(';');
                        p.push_str(param.name);
                        if let Some(v) = param.value {
                            p.push('=');
                            p.push_str(v);
                        }
                    }
                    keys.push(a.addr.uri.comparison_key());
                    params.push(p);
                    parsed.push(a);
                }
                Err(_) => return bad("Bad Contact"),
            }
        }
        let mut contacts = Vec::with_capacity(parsed.len());
        for (n, a) in parsed.iter().enumerate() {
            let (Ok(expires), Ok(q), Ok(reg_id)) = (a.expires(), a.q(), a.reg_id()) else {
                return bad("Bad Contact");
            };
            contacts.push(ContactInput {
                uri: a.addr.uri.raw,
                uri_key: &keys[n],
                params: &params[n],
                expires,
                q,
                instance: a.instance(),
                reg_id,
            });
        }
        let Ok(expires_header) = msg.expires() else {
            return bad("Bad Expires");
        };
        let path_supported = msg.supports("path");
        let path: Vec<&str> = if path_supported {
            msg.values(HeaderName::Path).collect()
        } else {
            Vec::new()
        };
        let Ok(call_id) = msg.call_id() else {
            return bad("Bad Call-ID");
        };
        let Ok(cseq) = msg.cseq() else {
            return bad("Bad CSeq");
        };
        let aor = to_aor.clone();
        let is_live = || match (&device, &i.devices) {
            (Some((entry, _)), Some(devices)) => devices.is_active(&entry.username),
            _ => false,
        };
        let credential = device.as_ref().map(|(entry, _)| Credential {
            name: &entry.username,
            is_live: &is_live,
        });
        let input = RegisterInput {
            aor: &aor,
            call_id,
            cseq: cseq.seq,
            star,
            contacts: &contacts,
            expires_header,
            path: &path,
            path_supported,
            source: src.peer,
            transport: src.transport,
            flow: src.flow,
            user_agent: msg.user_agent(),
            max_expires_cap: expires_cap,
            credential,
        };
        let outcome = match i.location.register(&input, now) {
            Ok(o) => o,
            Err(RegisterError::CredentialRevoked) => {
                // Revoked between verification and apply: answered as a revoked credential
                // is at verification, with a fresh challenge.
                tracing::debug!(peer = %src.peer, aor = %aor, "REGISTER with a credential revoked meanwhile");
                return self.refused_credential(msg, src, &domain);
            }
            Err(e) => return Some(self.register_error(msg, src, e)),
        };
        if star && !outcome.had_bindings {
            i.metrics.register(RegisterOutcome::Ok);
            return Some(self.respond(msg, src, 404, "Not Found", &[]));
        }
        for r in &outcome.rebound {
            tracing::info!(aor = %aor, old = %r.old_source, new = %r.new_source, "binding moved to a new source");
        }
        if let (Some((entry, gen)), Some(devices)) = (&device, &i.devices) {
            devices.registered(entry, *gen, super::unix_now());
        }
        i.metrics.register(RegisterOutcome::Ok);
        i.metrics.bindings.set(i.location.binding_count() as i64);
        i.metrics.aors.set(i.location.aor_count() as i64);

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
        let path_echo: Vec<&str> = if path_supported {
            path.clone()
        } else {
            Vec::new()
        };
        for p in &path_echo {
            extra.push(("Path", p));
        }
        extra.push(("Date", &date));
        extra.push(("Supported", "path, outbound"));
        Some(self.respond(msg, src, 200, "OK", &extra))
    }

    fn register_error(&self, msg: &Message, src: &Source, e: RegisterError) -> Response {
        let i = &self.inner;
        let (status, reason) = e.sip_status();
        match e {
            RegisterError::IntervalTooBrief { min_expires } => {
                i.metrics.register(RegisterOutcome::IntervalTooBrief);
                let min = min_expires.to_string();
                self.respond(msg, src, status, reason, &[("Min-Expires", &min)])
            }
            RegisterError::TooManyBindings { .. } | RegisterError::Full => {
                i.metrics.register(RegisterOutcome::TooManyBindings);
                self.respond(msg, src, status, reason, &[])
            }
            _ => {
                i.metrics.register(RegisterOutcome::BadRequest);
                self.respond(msg, src, status, reason, &[])
            }
        }
    }
}
