//! Dispatch: the `Handler` between transports and the application. For each message it
//! parses, answers parse faults statelessly, runs the server transaction, and routes the
//! request to the registrar (REGISTER), answers OPTIONS aimed at us, authenticates requests
//! for our users and hands them with their targets to the proxy, routes in-dialog requests
//! by their Route headers, and passes responses to the proxy.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | `Dispatcher`, parse → transaction → route, reply addressing (RFC 3261 §18.2.2, RFC 3581) |
//! | `digest.rs` | authentication of a request: credentials, nonce, limits, verification, challenges |
//! | `register.rs` | REGISTER per RFC 3261 §10.3 on top of `registrar::Location` |
//! | `route.rs` | requests for our users (auth, lookup, fork), in-dialog loose routing, CANCEL |
//!
//! It must not block or sleep: it runs inline on the receive task. Its only I/O is the
//! proxy's non-blocking sends (`transport::Outbound`).

mod digest;
mod register;
mod route;

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::auth::{Algorithm, DummyHa1s, FailureLimiter, NonceIssuer, ReplayTable, TrustedPairs};
use crate::credentials::device::DeviceIndex;
use crate::credentials::StaticAccounts;
use crate::metrics::{DropReason, Metrics};
use crate::registrar::Location;
use crate::sip::{
    HeaderName, Limits, Message, Method, ParseError, Reaction, ResponseBuilder, Uri, ViaReceived,
};
use crate::transaction::{Admission, RequestDisposition, TransactionKey, TransactionTable};
use crate::transport::{FlowId, Handler, Reply, Source, Transport};

/// Option tags we support (RFC 3327 Path, RFC 5626 outbound).
pub const SUPPORTED: &[&str] = &["path", "outbound"];
/// Methods answered here today; the proxy issue adds the rest.
pub const ALLOW: &str = "REGISTER, OPTIONS, INVITE, ACK, CANCEL, BYE, MESSAGE, SUBSCRIBE, NOTIFY, INFO, UPDATE, PRACK, REFER";

/// Per-domain policy derived from config.
#[derive(Debug)]
pub struct DomainPolicy {
    pub algorithms: Vec<Algorithm>,
    /// `sso = "enforce"`: static accounts of kind `human` get 403 after verifying.
    pub sso_enforced: bool,
    /// Whether a client-certificate identity authenticates a REGISTER alone.
    pub client_cert: crate::config::ClientCertPolicy,
}

/// Everything dispatch needs; built once by `app`.
pub struct DispatchParts {
    pub limits: Limits,
    pub domains: Vec<(String, DomainPolicy)>,
    pub accounts: StaticAccounts,
    pub nonces: NonceIssuer,
    pub bind_nonce_to_source: bool,
    pub replay: ReplayTable,
    pub source_limiter: FailureLimiter<IpAddr>,
    pub user_limiter: FailureLimiter<String>,
    /// (username, source) pairs that authenticated recently: the limiters let them through.
    pub trusted: TrustedPairs,
    pub location: Location,
    pub transactions: TransactionTable,
    pub metrics: Metrics,
    pub server_header: Option<String>,
    pub remove_bindings_on_close: bool,
    /// Device credentials from the token API; `None` when it is off.
    pub devices: Option<DeviceIndex>,
    pub proxy: crate::proxy::Proxy,
}

/// Cheap `Clone` handle over the shared state.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Limits,
    domains: std::collections::HashMap<String, DomainPolicy>,
    local_hosts: HashSet<String>,
    accounts: StaticAccounts,
    nonces: NonceIssuer,
    bind_nonce_to_source: bool,
    replay: ReplayTable,
    source_limiter: FailureLimiter<IpAddr>,
    user_limiter: FailureLimiter<String>,
    trusted: TrustedPairs,
    dummy: DummyHa1s,
    location: Location,
    transactions: TransactionTable,
    metrics: Metrics,
    server_header: Option<String>,
    remove_bindings_on_close: bool,
    devices: Option<DeviceIndex>,
    proxy: crate::proxy::Proxy,
    /// Keyed hasher for To-tags, so they are stable across retransmissions but unguessable.
    tag_hasher: std::collections::hash_map::RandomState,
}

/// A response produced by the core, with its status for the transaction layer and metrics.
pub(crate) struct Response {
    pub status: u16,
    pub bytes: Bytes,
    /// Sent without keeping transaction state (RFC 3261 §8.2.7): a challenge to a REGISTER
    /// that carried no credentials. A retransmission of it is challenged afresh, which costs
    /// less than holding the transaction and its response for 64*T1.
    pub stateless: bool,
}

impl Dispatcher {
    pub fn new(parts: DispatchParts, local_addrs: &[SocketAddr]) -> Dispatcher {
        let mut local_hosts: HashSet<String> =
            local_addrs.iter().map(|a| a.ip().to_string()).collect();
        local_hosts.insert("localhost".into());
        Dispatcher {
            inner: Arc::new(Inner {
                limits: parts.limits,
                domains: parts.domains.into_iter().collect(),
                local_hosts,
                accounts: parts.accounts,
                nonces: parts.nonces,
                bind_nonce_to_source: parts.bind_nonce_to_source,
                replay: parts.replay,
                source_limiter: parts.source_limiter,
                user_limiter: parts.user_limiter,
                trusted: parts.trusted,
                dummy: DummyHa1s::new(),
                location: parts.location,
                transactions: parts.transactions,
                metrics: parts.metrics,
                server_header: parts.server_header,
                remove_bindings_on_close: parts.remove_bindings_on_close,
                devices: parts.devices,
                proxy: parts.proxy,
                tag_hasher: std::collections::hash_map::RandomState::new(),
            }),
        }
    }

    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    pub fn transactions(&self) -> &TransactionTable {
        &self.inner.transactions
    }

    /// Periodic housekeeping: purge expired bindings, transactions and limiter entries (the
    /// replay table needs none: its slots are reused in place),
    /// and refresh the gauges. Called by the one purge task.
    pub fn purge(&self, now: Instant) {
        let i = &self.inner;
        i.location.purge(now);
        i.transactions.poll(now);
        i.source_limiter.purge(now);
        i.user_limiter.purge(now);
        i.trusted.purge(now);
        if let Some(devices) = &i.devices {
            devices.purge(unix_now());
        }
        i.metrics.bindings.set(i.location.binding_count() as i64);
        i.metrics.aors.set(i.location.aor_count() as i64);
        i.metrics.transactions.set(i.transactions.len() as i64);
        i.metrics
            .transactions_evicted
            .set(i.transactions.evicted() as i64);
    }

    fn handle(&self, data: Bytes, src: &Source) -> Reply {
        let i = &self.inner;
        let now = Instant::now();
        let msg = match Message::parse(data.clone(), &i.limits) {
            Ok(m) => m,
            Err(e) => return self.parse_failure(e, data, src),
        };
        if !msg.is_request() {
            // Responses belong to the proxy's client transactions, or to nobody.
            if !i.proxy.on_response(&msg, now) {
                i.metrics.dropped(DropReason::Response);
            }
            return Reply::none();
        }
        i.metrics.request(msg.method(), src.transport);
        if msg.method() == Some(Method::Ack) {
            // An ACK for a 2xx travels end to end along the route set; an ACK for a non-2xx
            // final (ours or relayed) ends at the INVITE server transaction here.
            if !self.ack_in_dialog(&msg, src) {
                if let Some(key) = invite_key_of(&msg) {
                    i.proxy.on_ack(&key, now);
                }
                i.metrics.dropped(DropReason::Ack);
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
            .on_request(key.clone(), reliable, admission, now)
        {
            RequestDisposition::New => {}
            RequestDisposition::Absorb => return Reply::none(),
            RequestDisposition::Retransmit(bytes) => return self.reply_to(&msg, src, bytes),
            RequestDisposition::Overloaded => return self.overloaded(&msg, src),
        }
        let Some(response) = self.route(&msg, src, now) else {
            return Reply::none();
        };
        if response.stateless {
            i.transactions.forget(&key);
        } else {
            let _ = i
                .transactions
                .on_response(&key, response.bytes.clone(), response.status, now);
        }
        self.reply_to(&msg, src, response.bytes)
    }

    fn overloaded(&self, msg: &Message, src: &Source) -> Reply {
        self.inner.metrics.dropped(DropReason::Overloaded);
        let r = self.respond(
            msg,
            src,
            503,
            "Service Unavailable",
            &[("Retry-After", "5")],
        );
        self.reply_to(msg, src, r.bytes)
    }

    fn route(&self, msg: &Message, src: &Source, now: Instant) -> Option<Response> {
        let uri_text = msg.request_uri().unwrap_or("");
        let ruri = match Uri::parse(uri_text) {
            Ok(u) if u.is_sip() => u,
            _ => return Some(self.respond(msg, src, 416, "Unsupported URI Scheme", &[])),
        };
        let method = msg.method();
        if method != Some(Method::Cancel) {
            let unsupported: Vec<&str> = msg
                .option_tags(HeaderName::Require)
                .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
                .collect();
            if !unsupported.is_empty() {
                if method == Some(Method::Register) {
                    self.inner
                        .metrics
                        .register(crate::metrics::RegisterOutcome::BadExtension);
                }
                let list = unsupported.join(", ");
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

    /// The domain a Request-URI names: one of ours, or a local address standing for our
    /// only domain. `None` if the request is for someone else.
    fn domain_of(&self, ruri: &Uri<'_>) -> Option<String> {
        let host = ruri.host_raw.to_ascii_lowercase();
        if self.inner.domains.contains_key(&host) {
            return Some(host);
        }
        if self
            .inner
            .local_hosts
            .contains(host.trim_matches(['[', ']']))
            && self.inner.domains.len() == 1
        {
            return self.inner.domains.keys().next().cloned();
        }
        None
    }

    fn is_us(&self, ruri: &Uri<'_>) -> bool {
        let host = ruri.host_raw.to_ascii_lowercase();
        self.inner.domains.contains_key(&host)
            || self
                .inner
                .local_hosts
                .contains(host.trim_matches(['[', ']']))
    }

    /// A message that failed to parse: a request is answered where it has a Via to copy
    /// (see [`Self::answer_malformed`]), anything else is dropped and counted. On a stream
    /// the connection is closed when the fault breaks framing, or when a request could not
    /// be answered: with no readable Via or start line the stream is most likely out of
    /// step, and keeping it open would only read more garbage. A malformed response is
    /// dropped (RFC 3261 §18.1.2) and its connection kept: it may carry a callee's bindings.
    fn parse_failure(&self, e: ParseError, data: Bytes, src: &Source) -> Reply {
        self.inner.metrics.parse_error(src.transport);
        let is_request = !data.starts_with(b"SIP/");
        let mut reply = self.answer_malformed(e, is_request, data, src);
        reply.close = src.transport != Transport::Udp
            && (e.breaks_stream() || (is_request && reply.bytes.is_none()));
        reply
    }

    /// A request that parsed but whose core headers do not (`check_core_headers`).
    fn reject(&self, msg: &Message, e: ParseError, src: &Source) -> Reply {
        let i = &self.inner;
        i.metrics.parse_error(src.transport);
        if msg.method() == Some(Method::Register) {
            i.metrics
                .register(crate::metrics::RegisterOutcome::BadRequest);
        }
        let Reaction::Respond(status, reason) = e.reaction(true) else {
            i.metrics.dropped(DropReason::Unparseable);
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
            i.metrics.dropped(DropReason::Unparseable);
            return Reply::none();
        };
        let Some(req) = Message::parse_for_error_reply(bytes, &i.limits) else {
            i.metrics.dropped(DropReason::Unparseable);
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
        let i = &self.inner;
        let now = Instant::now();
        let ip = crate::auth::source_key(src.peer.ip());
        if i.source_limiter.is_blocked(&ip, now) {
            i.metrics.dropped(DropReason::Throttled);
            return false;
        }
        i.source_limiter.record_failure(ip, now);
        true
    }

    /// Builds a response with our To-tag, received/rport, extra headers and Server.
    pub(crate) fn respond(
        &self,
        msg: &Message,
        src: &Source,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) -> Response {
        let tag = self.to_tag(msg);
        let mut b = ResponseBuilder::new(msg, status, reason)
            .received(ViaReceived { addr: src.peer })
            .server(self.inner.server_header.as_deref());
        if status > 100 {
            b = b.to_tag(&tag);
        }
        for (n, v) in extra {
            b = b.header(n, v);
        }
        self.inner.metrics.response(status, src.transport);
        Response {
            status,
            bytes: b.build(),
            stateless: false,
        }
    }

    /// A To-tag stable for one request (retransmissions get the same) and unguessable.
    fn to_tag(&self, msg: &Message) -> String {
        let mut h = self.inner.tag_hasher.build_hasher();
        h.write(msg.call_id().unwrap_or("").as_bytes());
        h.write(
            msg.from()
                .ok()
                .and_then(|f| f.tag())
                .unwrap_or("")
                .as_bytes(),
        );
        h.write_u32(msg.cseq().map(|c| c.seq).unwrap_or(0));
        format!("{:016x}", h.finish())
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
        self.handle(data, src)
    }

    fn on_framing_error(&self, e: ParseError, head: Option<Bytes>, src: &Source) -> Reply {
        self.inner.metrics.parse_error(src.transport);
        let Some(head) = head else {
            self.inner.metrics.dropped(DropReason::Unparseable);
            return Reply::none();
        };
        let is_request = !head.starts_with(b"SIP/");
        let mut reply = self.answer_malformed(e, is_request, head, src);
        reply.close = true;
        reply
    }

    fn on_flow_closed(&self, flow: FlowId) {
        if self.inner.remove_bindings_on_close {
            let removed = self.inner.location.remove_flow(flow);
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
    let in_dialog = msg.to().ok().and_then(|t| t.tag()).is_some();
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
    let from_tag = msg.from().ok().and_then(|f| f.tag()).unwrap_or("");
    let to_tag = msg.to().ok().and_then(|t| t.tag()).unwrap_or("");
    Some(TransactionKey::rfc2543(
        msg.request_uri().unwrap_or(""),
        msg.call_id().ok()?,
        from_tag,
        to_tag,
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
