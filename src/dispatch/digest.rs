//! Digest authentication of one request, as dispatch sees it: extract the request's Digest
//! material, ask [`crate::auth::Authenticator`] for a [`Decision`] (the step order lives
//! there), and map the refusals to answers in one place: a challenge → 401 (registrar) or 407
//! (proxy), stateless for a REGISTER that offered no credentials; a bad request → 400;
//! throttled → no answer; SSO required → 403. Every challenge looks the same to the client;
//! the reason goes to `sipward_auth_failures_total` and to one INFO line per refusal
//! ([`log_failure`]: source address, username, reason; never a secret), the line the
//! shipped fail2ban filter (`contrib/fail2ban/`) matches.

use std::time::Instant;

use super::respond::Response;
use super::{unix_now, Dispatcher};
use crate::auth::{Decision, DigestRequest, Failure, Identity, Offered};
use crate::credentials::DeviceCredential;
use crate::metrics::DropReason;
use crate::sip::{HeaderName, Message};
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

/// The authenticator's decision for one request, with dispatch's credential type.
pub(crate) type AuthDecision = Decision<Option<DeviceCredential>>;

pub(crate) enum AuthStep {
    /// Verified.
    Authenticated(Identity<Option<DeviceCredential>>),
    /// Answer with this (a challenge, a 400 or a 403), or drop (`None`).
    Reply(Option<Response>),
}

/// Log target of the failed-authentication line; part of the format fail2ban matches.
const AUTH_LOG_TARGET: &str = "sipward::auth";

/// The longest username (in characters) a failure line carries; longer ones are cut.
const LOGGED_USERNAME_CHARS: usize = 64;

/// One INFO line for refused credentials, stable for fail2ban:
/// `INFO sipward::auth: authentication failed source=IP reason=REASON method=M user="U"`.
/// The source comes first so nothing the client sends precedes it; the username is quoted,
/// cut and escaped ([`printable`]) so a client cannot forge a line or a field. The same
/// reason is logged for an unknown user and a wrong password (`wrong_response`). No
/// password, HA1, response or nonce is logged.
fn log_failure(msg: &Message, src: &Source, realm: &str, role: Role, failure: Failure) {
    let user = match Offered::select(msg.credentials(role.credentials_header()), realm) {
        Offered::Digest(p) => p.username.unwrap_or(""),
        Offered::Nothing | Offered::Malformed => "",
    };
    tracing::info!(
        target: AUTH_LOG_TARGET,
        source = %src.peer.ip(),
        reason = %crate::metrics::auth_failure_label(failure),
        method = %msg.method_str(),
        user = %printable(user),
        "authentication failed"
    );
}

/// `s` quoted for a log line: at most [`LOGGED_USERNAME_CHARS`] characters (`...` marks a
/// cut), `"` and `\` escaped, and anything but printable ASCII as a `\u{..}` escape, so no
/// newline, control character or look-alike reaches the log.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(4 * LOGGED_USERNAME_CHARS) + 2);
    out.push('"');
    for c in s.chars().take(LOGGED_USERNAME_CHARS) {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.extend(c.escape_unicode()),
        }
    }
    if s.chars().nth(LOGGED_USERNAME_CHARS).is_some() {
        out.push_str("...");
    }
    out.push('"');
    out
}

impl Dispatcher {
    /// Authenticates `msg` for `realm` and answers a refusal ([`Self::answer_refusal`]).
    pub(crate) fn authenticate(
        &self,
        msg: &Message,
        realm: &str,
        src: &Source,
        now: Instant,
        role: Role,
    ) -> AuthStep {
        match self.decide(msg, realm, src, now, role) {
            Decision::Authenticated(identity) => AuthStep::Authenticated(identity),
            refusal => AuthStep::Reply(self.answer_refusal(msg, src, realm, role, refusal)),
        }
    }

    /// The authenticator's decision for `msg`: the credentials in the role's header for
    /// `realm`, checked against the directory of static accounts and devices.
    pub(crate) fn decide(
        &self,
        msg: &Message,
        realm: &str,
        src: &Source,
        now: Instant,
        role: Role,
    ) -> AuthDecision {
        // A device credential is a candidate only for its own AoR: the To of a REGISTER, the
        // From of any other request.
        let expected = match role {
            Role::Registrar => msg.to().ok().and_then(|t| t.uri.aor()),
            Role::Proxy => msg.from().ok().and_then(|f| f.uri.aor()),
        };
        let request = DigestRequest {
            offered: Offered::select(msg.credentials(role.credentials_header()), realm),
            realm,
            method: msg.method_str(),
            request_uri: msg.request_uri().unwrap_or(""),
            call_id: msg.call_id().unwrap_or(""),
            source: src.peer,
            expected_aor: expected.as_deref(),
        };
        self.inner
            .auth
            .authenticate(&request, &self.inner.credentials, now, unix_now())
    }

    /// The one mapping of a refusal to an answer, with its metrics. `Authenticated` is not a
    /// refusal and gets `None`.
    pub(crate) fn answer_refusal(
        &self,
        msg: &Message,
        src: &Source,
        realm: &str,
        role: Role,
        decision: AuthDecision,
    ) -> Option<Response> {
        let metrics = &self.inner.responder.metrics;
        match decision {
            Decision::Authenticated(_) => None,
            Decision::Challenge(challenge) => {
                if let Some(failure) = challenge.failure {
                    metrics.auth_failure(failure);
                    log_failure(msg, src, realm, role, failure);
                }
                let (status, reason, header) = match role {
                    Role::Registrar => (401, "Unauthorized", "WWW-Authenticate"),
                    Role::Proxy => (407, "Proxy Authentication Required", "Proxy-Authenticate"),
                };
                let values = challenge.header_values(realm);
                let extra: Vec<(&str, &str)> =
                    values.iter().map(|v| (header, v.as_str())).collect();
                let mut r = self.respond(msg, src, status, reason, &extra);
                // No credentials: nothing was checked or counted, so the challenge is answered
                // statelessly (see `Response::stateless`). REGISTER only; other requests keep
                // their transaction.
                r.stateless = challenge.failure.is_none() && role == Role::Registrar;
                Some(r)
            }
            Decision::BadRequest(bad) => {
                metrics.auth_failure(Failure::Malformed);
                log_failure(msg, src, realm, role, Failure::Malformed);
                Some(self.respond(msg, src, 400, bad.reason_phrase(), &[]))
            }
            Decision::Throttled => {
                metrics.dropped(DropReason::Throttled);
                None
            }
            Decision::SsoRequired => Some(self.respond(msg, src, 403, "SSO Required", &[])),
            Decision::Unavailable => {
                let retry = [("Retry-After", super::STORE_RETRY_AFTER_SECS)];
                Some(self.respond(msg, src, 503, "Service Unavailable", &retry))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_quotes_escapes_and_cuts() {
        assert_eq!(printable("alice"), "\"alice\"");
        assert_eq!(printable(""), "\"\"");
        assert_eq!(printable("a\"b\\c"), "\"a\\\"b\\\\c\"");
        let forged =
            "x\n2026-12-07T00:00:00Z  INFO sipward::auth: authentication failed source=192.0.2.9";
        let line = printable(forged);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("\"x\\u{a}2026"), "{line}");
        assert!(printable("\u{1b}[31m\r")
            .chars()
            .all(|c| c.is_ascii_graphic()));
        let long = "u".repeat(1000);
        assert_eq!(printable(&long), format!("\"{}...\"", "u".repeat(64)));
        assert_eq!(printable("é").as_str(), "\"\\u{e9}\"");
    }
}
