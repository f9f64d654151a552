//! Dispatch: the `Handler` between transports and the application. For each message it
//! parses, answers parse faults statelessly, runs the server transaction, and routes the
//! request to the registrar (REGISTER), answers OPTIONS aimed at us, authenticates requests
//! for our users and hands them with their targets to the proxy, routes in-dialog requests
//! by their Route headers, and passes responses to the proxy.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | `Dispatcher`, parse → transaction → route, reply addressing (RFC 3261 §18.2.2, RFC 3581) |
//! | `parts.rs` | [`DispatchParts`] from `&Config`: every part below, built once |
//! | `names.rs` | our domains and the other names that mean us (`domain_of`, `is_us`) |
//! | `respond.rs` | building and counting every response (To-tag, Server, received/rport) |
//! | `keepalive.rs` | RFC 5626 keep-alives on UDP before parsing: CRLFs counted, STUN Binding requests answered within the source's failure limit |
//! | `digest.rs` | the request's Digest material → `auth::Authenticator` → 401/407/400/403 or no answer |
//! | `register.rs` | REGISTER per RFC 3261 §10.3 on top of `registrar::Location`, REGISTER outcome metrics |
//! | `register_request.rs` | REGISTER parsing: `&Message` → the registrar's input or a typed 400 reason (pure) |
//! | `route.rs` | requests for our users (auth, lookup, fork), in-dialog loose routing, CANCEL |
//!
//! The state is grouped by owner (each group a field of `Inner`): the authenticator, the
//! credential directory, the registrar side, our names, the responder, transactions, the
//! proxy and the intake (parse limits, drain token).
//!
//! It must not block or sleep: it runs inline on the receive task. Its only I/O is the
//! proxy's non-blocking sends (`transport::Outbound`).

mod digest;
mod keepalive;
mod names;
mod parts;
mod register;
mod register_request;
mod respond;
mod route;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::auth::Authenticator;
use crate::credentials::Directory;
use crate::metrics::{DropReason, RegisterOutcome};
use crate::registrar::Ack;
use crate::registrar::Location;
use crate::sip::{HeaderName, Message, Method, ParseError, Reaction, Uri};
use crate::transaction::{Admission, RequestDisposition, TransactionKey, TransactionTable};
use crate::transport::{FlowId, Handler, Later, Reply, Source, Transport};

pub use names::{DomainPolicy, Names};
pub use parts::{dispatch_parts, Intake, PartsError, Shared};
pub use register::{RegistrarSide, STORE_BUSY_RETRY_AFTER_SECS};
pub use respond::Responder;
pub(crate) use respond::Response;

/// Option tags we support (RFC 3327 Path, RFC 5626 outbound).
pub const SUPPORTED: &[&str] = &["path", "outbound"];
/// Methods answered here today; the proxy issue adds the rest.
pub const ALLOW: &str = "REGISTER, OPTIONS, INVITE, ACK, CANCEL, BYE, MESSAGE, SUBSCRIBE, NOTIFY, INFO, UPDATE, PRACK, REFER";
/// `Retry-After` seconds on the 503 that refuses a new request during drain: about the time a
/// restart takes, after which the client tries again (here or, behind DNS SRV, elsewhere).
pub const DRAIN_RETRY_AFTER_SECS: &str = "5";
/// `Retry-After` seconds on the 503 that sheds a request when the transaction table is full.
pub const OVERLOAD_RETRY_AFTER_SECS: &str = "5";
/// Retry-After of a REGISTER whose change the location store could not write.
pub const STORE_RETRY_AFTER_SECS: &str = "5";

/// Everything dispatch needs, grouped by owner; built once by [`dispatch_parts`].
pub struct DispatchParts {
    pub intake: Intake,
    pub domains: Vec<(String, DomainPolicy)>,
    pub auth: Authenticator,
    pub credentials: Directory,
    pub registrar: RegistrarSide,
    pub responder: Responder,
    pub transactions: TransactionTable,
    pub proxy: crate::proxy::Proxy,
}

/// Cheap `Clone` handle over the shared state.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    /// The parse limits and the drain token.
    intake: Intake,
    auth: Authenticator,
    /// Static accounts and token API devices.
    credentials: Directory,
    registrar: RegistrarSide,
    names: Names,
    responder: Responder,
    transactions: TransactionTable,
    proxy: crate::proxy::Proxy,
}

impl Dispatcher {
    pub fn new(parts: DispatchParts, us: Arc<crate::proxy::OurNames>) -> Dispatcher {
        Dispatcher {
            inner: Arc::new(Inner {
                intake: parts.intake,
                auth: parts.auth,
                credentials: parts.credentials,
                registrar: parts.registrar,
                names: Names::new(parts.domains, us),
                responder: parts.responder,
                transactions: parts.transactions,
                proxy: parts.proxy,
            }),
        }
    }

    pub fn location(&self) -> &Location {
        &self.inner.registrar.location
    }

    pub fn transactions(&self) -> &TransactionTable {
        &self.inner.transactions
    }

    /// Periodic housekeeping: purge expired bindings, transactions, limiter entries and
    /// device records, and refresh the transaction gauges (the location service keeps its
    /// own). Called by the one purge task.
    pub fn purge(&self, now: Instant) {
        let i = &self.inner;
        i.registrar.location.purge(now);
        i.transactions.poll(now);
        i.auth.purge(now);
        if let Some(devices) = i.credentials.devices() {
            devices.purge(unix_now());
        }
        let metrics = &i.responder.metrics;
        metrics.transactions.set(i.transactions.len() as i64);
        metrics
            .transactions_evicted
            .set(i.transactions.evicted() as i64);
    }

    /// One message. `later` lets a REGISTER's 200 wait for the location store without
    /// holding the receive thread; without it (`on_message`), such an answer is waited for.
    fn handle_message(&self, data: Bytes, src: &Source, later: Option<Later<'_>>) -> Reply {
        let i = &self.inner;
        if let Some(reply) = self.keepalive(&data, src) {
            return reply;
        }
        let now = Instant::now();
        let msg = match Message::parse(data.clone(), &i.intake.limits) {
            Ok(m) => m,
            Err(e) => return self.parse_failure(e, data, src),
        };
        if !msg.is_request() {
            // Responses belong to the proxy's client transactions, or to nobody.
            if !i.proxy.on_response(&msg, now) {
                i.responder.metrics.dropped(DropReason::Response);
            }
            return Reply::none();
        }
        i.responder.metrics.request(msg.method(), src.transport);
        if msg.method() == Some(Method::Ack) {
            // An ACK for a 2xx travels end to end along the route set; an ACK for a non-2xx
            // final (ours or relayed) ends at the INVITE server transaction here.
            if !self.ack_in_dialog(&msg, src) {
                if let Some(key) = invite_key_of(&msg) {
                    i.proxy.on_ack(&key, now);
                }
                i.responder.metrics.dropped(DropReason::Ack);
            }
            return Reply::none();
        }
        if let Err(e) = msg.check_core_headers() {
            return self.reject(&msg, e, src);
        }
        let Some(key) = transaction_key(&msg) else {
            return self.reject(&msg, ParseError::InvalidVia, src);
        };
        let reliable = src.transport != Transport::Udp;
        let admission = admission_of(&msg, src);
        if msg.method() == Some(Method::Register) && admission == Admission::Unauthenticated {
            // A REGISTER without credentials changes nothing: it is challenged or refused, and
            // a retransmission is answered alike. So it keeps no transaction (RFC 3261
            // §8.2.7), and in a storm costs no room; under overload it is shed first.
            if !i.transactions.admits(admission) {
                return self.overloaded(&msg, src);
            }
            return match self.route(&msg, src, now) {
                Some(response) => self.reply_to(&msg, src, response.bytes),
                None => Reply::none(),
            };
        }
        match i
            .transactions
            .on_request(&key, &data, reliable, admission, now)
        {
            RequestDisposition::New => {}
            RequestDisposition::Absorb => return Reply::none(),
            RequestDisposition::Retransmit(bytes) => return self.reply_to(&msg, src, bytes),
            RequestDisposition::Overloaded => return self.overloaded(&msg, src),
        }
        let Some(mut response) = self.route(&msg, src, now) else {
            return Reply::none();
        };
        if let Some(ack) = response.durable.take() {
            return self.answer_when_durable(&msg, src, key, response, ack, later);
        }
        if response.stateless {
            i.transactions.forget(&key);
        } else {
            let _ =
                i.transactions
                    .on_response_to(&key, &data, &response.bytes, response.status, now);
        }
        self.reply_to(&msg, src, response.bytes)
    }

    /// A REGISTER whose change waits for the location store: its 200 leaves (and goes into
    /// the transaction, for retransmissions, which are absorbed until then) once the change
    /// is durable; if the write failed, a 500 instead. The receive thread returns at once:
    /// the answer goes through the responder made from `later`, from the store's writer
    /// thread. Without `later` the caller waits here.
    fn answer_when_durable(
        &self,
        msg: &Message,
        src: &Source,
        key: TransactionKey,
        response: Response,
        ack: Ack,
        later: Option<Later<'_>>,
    ) -> Reply {
        let ok = self.reply_to(msg, src, response.bytes.clone());
        let (dispatcher, msg, src) = (self.clone(), msg.clone(), src.clone());
        let finish = move |durable: bool| -> Reply {
            let (bytes, status, reply) = if durable {
                (response.bytes, response.status, ok)
            } else {
                // The store could not take the change (SQLite error, Redis unreachable after
                // its retries): never a 200 for it; the phone retries later.
                let failed = dispatcher.respond(
                    &msg,
                    &src,
                    503,
                    "Service Unavailable",
                    &[("Retry-After", STORE_RETRY_AFTER_SECS)],
                );
                let reply = dispatcher.reply_to(&msg, &src, failed.bytes.clone());
                (failed.bytes, 503, reply)
            };
            let _ = dispatcher.inner.transactions.on_response_to(
                &key,
                msg.bytes(),
                &bytes,
                status,
                Instant::now(),
            );
            reply
        };
        match later {
            Some(later) => {
                let responder = later.responder();
                ack.on_complete(move |durable| {
                    responder.send(finish(durable));
                });
                Reply::none()
            }
            None => finish(ack.wait()),
        }
    }

    fn overloaded(&self, msg: &Message, src: &Source) -> Reply {
        self.inner.responder.metrics.dropped(DropReason::Overloaded);
        let r = self.respond(
            msg,
            src,
            503,
            "Service Unavailable",
            &[("Retry-After", OVERLOAD_RETRY_AFTER_SECS)],
        );
        self.reply_to(msg, src, r.bytes)
    }

    fn route(&self, msg: &Message, src: &Source, now: Instant) -> Option<Response> {
        // Drain: refuse what would start something new; in-dialog requests and CANCEL
        // (for a transaction in flight) pass. ACK never reaches here.
        let in_dialog = msg.to_tag().is_some();
        if self.inner.intake.draining.is_cancelled()
            && !in_dialog
            && msg.method() != Some(Method::Cancel)
        {
            let retry = [("Retry-After", DRAIN_RETRY_AFTER_SECS)];
            return Some(self.respond(msg, src, 503, "Service Unavailable", &retry));
        }
        let uri_text = msg.request_uri().unwrap_or("");
        let ruri = match Uri::parse(uri_text) {
            Ok(u) if u.is_sip() => u,
            _ => return Some(self.respond(msg, src, 416, "Unsupported URI Scheme", &[])),
        };
        let method = msg.method();
        // A REGISTER's Require is checked in `register`, which counts its outcome.
        if !matches!(method, Some(Method::Cancel | Method::Register)) {
            if let Some(list) = unsupported_required(msg) {
                return Some(self.respond(
                    msg,
                    src,
                    420,
                    "Bad Extension",
                    &[("Unsupported", &list)],
                ));
            }
        }
        match method {
            Some(Method::Register) => self.register(msg, &ruri, src, now),
            Some(Method::Options) if ruri.user.is_none() && self.is_us(&ruri) => {
                Some(self.options(msg, src))
            }
            Some(Method::Cancel) => Some(self.cancel(msg, src, now)),
            _ => self.proxied(msg, &ruri, src, now),
        }
    }

    fn options(&self, msg: &Message, src: &Source) -> Response {
        self.respond(
            msg,
            src,
            200,
            "OK",
            &[
                ("Allow", ALLOW),
                ("Accept", "application/sdp"),
                ("Supported", "path, outbound"),
            ],
        )
    }

    /// The domain a Request-URI names (see [`Names::domain_of`]).
    fn domain_of(&self, ruri: &Uri<'_>) -> Option<String> {
        self.inner.names.domain_of(ruri)
    }

    fn is_us(&self, ruri: &Uri<'_>) -> bool {
        self.inner.names.is_us(ruri)
    }

    /// A message that failed to parse: a request is answered where it has a Via to copy
    /// (see [`Self::answer_malformed`]), anything else is dropped and counted. On a stream
    /// the connection is closed when the fault breaks framing, or when a request could not
    /// be answered: with no readable Via or start line the stream is most likely out of
    /// step, and keeping it open would only read more garbage. A malformed response is
    /// dropped (RFC 3261 §18.1.2) and its connection kept: it may carry a callee's bindings.
    fn parse_failure(&self, e: ParseError, data: Bytes, src: &Source) -> Reply {
        self.inner.responder.metrics.parse_error(src.transport);
        let is_request = !data.starts_with(b"SIP/");
        let mut reply = self.answer_malformed(e, is_request, data, src);
        reply.close = src.transport != Transport::Udp
            && (e.breaks_stream() || (is_request && reply.bytes.is_none()));
        reply
    }

    /// A request that parsed but whose core headers do not (`check_core_headers`).
    fn reject(&self, msg: &Message, e: ParseError, src: &Source) -> Reply {
        let i = &self.inner;
        i.responder.metrics.parse_error(src.transport);
        if msg.method() == Some(Method::Register) {
            // Refused before it has a transaction, so `register` never sees it.
            i.responder.metrics.register(RegisterOutcome::BadRequest);
        }
        let Reaction::Respond(status, reason) = e.reaction(true) else {
            i.responder.metrics.dropped(DropReason::Unparseable);
            return Reply::none();
        };
        if !self.may_answer_malformed(src) {
            return Reply::none();
        }
        let r = self.respond(msg, src, status, reason, &[]);
        self.reply_to(msg, src, r.bytes)
    }

    /// The stateless answer to a malformed message (`bytes`, failed with `e`): the status
    /// and reason phrase of `e`'s reaction, for a request with a Via header to copy (the
    /// answer goes where §18.2.2 says, or to the source when the Via itself is the fault),
    /// while the source is within its failure limit. Each answer counts
    /// as a failure of the source, so malformed input gets at most as many answers as
    /// guessing does (the per-source limit), then silence. Anything else is dropped and
    /// counted in `sipward_sip_dropped_total`.
    fn answer_malformed(
        &self,
        e: ParseError,
        is_request: bool,
        bytes: Bytes,
        src: &Source,
    ) -> Reply {
        let i = &self.inner;
        let Reaction::Respond(status, reason) = e.reaction(is_request) else {
            i.responder.metrics.dropped(DropReason::Unparseable);
            return Reply::none();
        };
        let Some(req) = Message::parse_for_error_reply(bytes, &i.intake.limits) else {
            i.responder.metrics.dropped(DropReason::Unparseable);
            return Reply::none();
        };
        if !self.may_answer_malformed(src) {
            return Reply::none();
        }
        tracing::debug!(peer = %src.peer, error = %e, "rejecting malformed request");
        let r = self.respond(&req, src, status, reason, &[]);
        self.reply_to(&req, src, r.bytes)
    }

    /// Whether a malformed request from `src` may still be answered: false (counted as a
    /// throttled drop) once the source is over its failure limit; true otherwise, and the
    /// answer counts as one more failure of the source.
    fn may_answer_malformed(&self, src: &Source) -> bool {
        if self
            .inner
            .auth
            .admit_malformed(src.peer.ip(), Instant::now())
        {
            return true;
        }
        self.inner.responder.metrics.dropped(DropReason::Throttled);
        false
    }

    /// Where a response goes: streams answer on the connection; UDP per RFC 3261 §18.2.2
    /// with RFC 3581: the source address when `rport` was asked for, else the source IP
    /// and the Via port. Never to a broadcast or multicast address (RFC 4475 bcast).
    fn reply_to(&self, msg: &Message, src: &Source, bytes: Bytes) -> Reply {
        if src.transport != Transport::Udp {
            return Reply {
                bytes: Some(bytes),
                to: None,
                close: false,
            };
        }
        let to = udp_reply_addr(msg, src);
        if is_unroutable(to.ip()) {
            return Reply::none();
        }
        Reply {
            bytes: Some(bytes),
            to: Some(to),
            close: false,
        }
    }
}

impl Handler for Dispatcher {
    fn on_message(&self, data: Bytes, src: &Source) -> Reply {
        self.handle_message(data, src, None)
    }

    fn handle(&self, data: Bytes, src: &Source, later: Later<'_>) -> Reply {
        self.handle_message(data, src, Some(later))
    }

    fn on_framing_error(&self, e: ParseError, head: Option<Bytes>, src: &Source) -> Reply {
        self.inner.responder.metrics.parse_error(src.transport);
        let Some(head) = head else {
            self.inner
                .responder
                .metrics
                .dropped(DropReason::Unparseable);
            return Reply::none();
        };
        let is_request = !head.starts_with(b"SIP/");
        let mut reply = self.answer_malformed(e, is_request, head, src);
        reply.close = true;
        reply
    }

    fn on_flow_closed(&self, flow: FlowId) {
        let registrar = &self.inner.registrar;
        if registrar.remove_bindings_on_close {
            let removed = registrar.location.remove_flow(flow);
            if removed > 0 {
                tracing::debug!(
                    flow = flow.0,
                    removed,
                    "connection closed; bindings removed"
                );
            }
        }
    }
}

/// The option tags of `Require` we do not support, comma-separated; `None` if all are.
fn unsupported_required(msg: &Message) -> Option<String> {
    let unsupported: Vec<&str> = msg
        .option_tags(HeaderName::Require)
        .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .collect();
    (!unsupported.is_empty()).then(|| unsupported.join(", "))
}

/// The UDP address responses to `msg` go to (RFC 3261 §18.2.2, RFC 3581).
fn udp_reply_addr(msg: &Message, src: &Source) -> SocketAddr {
    match msg.top_via().ok() {
        Some(v) if v.rport().is_some() => src.peer,
        Some(v) => SocketAddr::new(src.peer.ip(), v.port.unwrap_or(5060)),
        None => src.peer,
    }
}

fn is_unroutable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_multicast() || v6.is_unspecified(),
    }
}

/// Whether a new request can complete without another round trip (see [`Admission`]): it
/// carries credentials, comes with a client certificate, belongs to a dialog (To tag) or
/// cancels one.
fn admission_of(msg: &Message, src: &Source) -> Admission {
    let credentials = msg.values(HeaderName::Authorization).next().is_some()
        || msg.values(HeaderName::ProxyAuthorization).next().is_some();
    let in_dialog = msg.to_tag().is_some();
    if credentials || in_dialog || src.identity.is_some() || msg.method() == Some(Method::Cancel) {
        Admission::Authenticated
    } else {
        Admission::Unauthenticated
    }
}

/// The key of the INVITE server transaction an ACK or CANCEL belongs to (same top Via).
fn invite_key_of(msg: &Message) -> Option<TransactionKey> {
    let via = msg.top_via().ok()?;
    TransactionKey::rfc3261(via.branch()?, via.sent_by, "INVITE").ok()
}

/// RFC 3261 §17.2.3 key, with the RFC 2543 fallback for branches without the cookie.
fn transaction_key(msg: &Message) -> Option<TransactionKey> {
    let via = msg.top_via().ok()?;
    let cseq = msg.cseq().ok()?;
    if let Some(branch) = via.branch() {
        if let Ok(k) = TransactionKey::rfc3261(branch, via.sent_by, cseq.method) {
            return Some(k);
        }
    }
    Some(TransactionKey::rfc2543(
        msg.request_uri().unwrap_or(""),
        msg.call_id().ok()?,
        msg.from_tag().unwrap_or(""),
        msg.to_tag().unwrap_or(""),
        cseq.seq,
        cseq.method,
        via.raw,
    ))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
