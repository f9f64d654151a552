//! The stateful proxy (RFC 3261 §16): one response context per forwarded request, with one
//! client transaction per branch; forking in parallel, best-response selection (§16.7),
//! CANCEL of the other branches after a 2xx or on the caller's CANCEL, hop-by-hop ACK for
//! non-2xx finals, 408 when a branch times out, and Record-Route with a signed flow token so
//! in-dialog requests find the connection of the other side.
//!
//! | file | owns |
//! | --- | --- |
//! | `core.rs` | `ProxyCore`, the state machine with no I/O: inputs queue transmits, `poll_transmit` / `poll_timeout`, an ordered `(deadline, generation)` index |
//! | `context.rs` | one response context and its branches; the ACK and CANCEL built on a branch; §16.7 ranking |
//! | `routing.rs` | routing decisions as pure functions returning a typed [`NextHop`]: our Route entries, loose and strict routing, the other side of a flow token, a binding's first hop |
//! | `names.rs` | [`OurNames`]: the hosts and ports that mean us in a Route or Request-URI (domains, aliases, listeners, advertised names) |
//! | `keys.rs` | per-process keys: the loop-detection hash in our branches, the Record-Route flow token |
//! | `driver.rs` | [`drive`]: sends the timers' transmits through [`Outbound`] and sleeps until the next deadline |
//!
//! Dispatch decides *whether* to forward (authentication, location lookup) and asks this
//! module *where* ([`Proxy::loose_route`], [`Proxy::strict_route`], [`Proxy::binding_target`]);
//! this module forwards and relays responses. [`Proxy`] is the cheap `Clone` handle: it holds
//! the core behind a mutex and the [`Outbound`] it sends through. An input from the receive
//! path (a request to forward, a response, an ACK, a CANCEL) runs the core and sends what it
//! queued right away, still under the core's lock, so transmits leave in the order queued
//! and a relayed response has no task hop on its way; `Outbound` never blocks, so the lock
//! is held for a few non-blocking sends at most. Timers are the driver's: it sleeps until
//! the core's next deadline and is woken early when an input makes an earlier one.
//!
//! Decisions: branches fork in parallel whatever their q-values (the lookup orders them by q;
//! sequential forking by q-groups is not done); 401/407 from several branches are not
//! aggregated (the best one is forwarded); a CANCEL for a branch that has sent no provisional
//! yet waits for the first provisional (§9.1). Every forwarded request leaves without the
//! Digest credentials for our realms (§22.3: a callee must never see a caller's response),
//! and a URI that becomes a Request-URI loses its URI headers and `method` (§19.1.1).

mod context;
mod core;
mod driver;
mod keys;
mod names;
mod routing;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use self::core::ProxyCore;
use self::keys::Keys;
use crate::metrics::Metrics;
use crate::sip::{forward, ForwardEdits, HostPort, Message, Uri};
use crate::transaction::{TransactionKey, TransactionTable};
use crate::transport::{FlowId, Outbound, Target, Transport};

pub use self::core::{TimerStats, Transmit};
pub use self::driver::drive;
pub use self::keys::BRANCH_PREFIX;
pub use self::names::{NameSources, OurNames};
pub use self::routing::{uri_address, FlowLookup, Hop, NextHop, Refusal};

/// Settings from config.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub t1: std::time::Duration,
    /// Response contexts held at once (`sip.max_transactions`); further requests get 503.
    pub max_contexts: usize,
    /// Our Digest realms (the served domains). Credentials for them are consumed: no
    /// forwarded request carries them on, so a callee never sees a caller's Digest response
    /// (RFC 3261 §22.3). Credentials for other realms pass unchanged.
    pub realms: Vec<String>,
    /// The names that mean us: a Route naming one of them is ours.
    pub names: Arc<OurNames>,
}

/// One place to forward a request to.
#[derive(Debug, Clone)]
pub struct Branch<'a> {
    pub target: Target,
    /// The new Request-URI (a binding's contact), or `None` to keep it (in-dialog).
    pub request_uri: Option<&'a str>,
    /// Route values to put on top (a binding's stored Path).
    pub route: Vec<&'a str>,
}

/// How a request to forward arrived.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Where responses go (the connection, or the UDP address per §18.2.2).
    pub upstream: Target,
    pub transport: Transport,
    /// Our name on this side (the listener's advertised name, else the address the request
    /// arrived on), for Record-Route.
    pub local: HostPort,
    pub peer: SocketAddr,
    pub flow: Option<FlowId>,
}

/// Route-set handling for one forwarded request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routing {
    /// Our own Route entries on top, to remove (in-dialog requests).
    pub pop_routes: usize,
    /// Add Record-Route (initial requests), so in-dialog requests come back through us.
    pub record_route: bool,
    /// Remove the last Route value (strict-routing interop, RFC 3261 §16.4).
    pub pop_last_route: bool,
}

/// A request to forward statefully, as [`Proxy::start`] takes it.
#[derive(Debug)]
pub struct Forward<'a> {
    pub msg: &'a Message,
    pub inbound: Inbound,
    pub server_key: TransactionKey,
    pub branches: &'a [Branch<'a>],
    pub routing: Routing,
    /// Sent upstream before any branch whatever the outcome (an INVITE's 100 Trying), so
    /// that no relayed provisional can overtake it.
    pub trying: Option<Bytes>,
}

/// The result of [`Proxy::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Forwarded on at least one branch.
    Forwarded,
    /// Too many contexts: answer 503.
    Overloaded,
    /// No branch could be sent: answer 480 (or 430 for a dead flow).
    NoRoute,
}

/// Cheap `Clone` handle over the proxy core, its keys and its outbound transport.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    core: Mutex<ProxyCore>,
    out: Outbound,
    /// A clone of the core's keys, for lock-free loop checks and token reads.
    keys: Keys,
    realms: Vec<String>,
    names: Arc<OurNames>,
    /// Wakes the driver when an input made the next deadline earlier.
    deadline_moved: Notify,
    /// Wakes [`Proxy::drained`] waiters when the last context goes.
    emptied: Notify,
}

impl Proxy {
    pub fn new(
        out: Outbound,
        config: ProxyConfig,
        server_txns: TransactionTable,
        metrics: Metrics,
        server_header: Option<String>,
    ) -> Proxy {
        let keys = Keys::random();
        let realms = config.realms.clone();
        let names = config.names.clone();
        let core = ProxyCore::new(config, keys.clone(), server_txns, metrics, server_header);
        Proxy {
            shared: Arc::new(Shared {
                core: Mutex::new(core),
                out,
                keys,
                realms,
                names,
                deadline_moved: Notify::new(),
                emptied: Notify::new(),
            }),
        }
    }

    fn core(&self) -> MutexGuard<'_, ProxyCore> {
        self.shared.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Response contexts held now.
    pub fn len(&self) -> usize {
        self.core().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once no response context is left (for drain).
    pub async fn drained(&self) {
        loop {
            let emptied = self.shared.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// The timers' work so far (wake-ups at a deadline, contexts visited).
    pub fn timer_stats(&self) -> TimerStats {
        self.core().stats()
    }

    /// RFC 3261 §16.3 step 4: the request already passed here with the same Request-URI,
    /// From tag, Call-ID and CSeq (a loop, not a spiral).
    pub fn is_loop(&self, msg: &Message) -> bool {
        self.shared.keys.is_loop(msg)
    }

    /// How many Route values on top name us, and whether others follow.
    pub fn our_routes(&self, msg: &Message) -> (usize, bool) {
        routing::our_routes(msg, &self.shared.names)
    }

    /// The names that mean us.
    pub fn names(&self) -> &OurNames {
        &self.shared.names
    }

    /// Our name for a message over `transport` whose real local address is `local` (see
    /// [`Outbound::sent_by`]).
    pub fn sent_by(&self, transport: Transport, local: SocketAddr) -> HostPort {
        self.shared.out.sent_by(transport, local)
    }

    /// Loose routing of an in-dialog request that came in on `src_flow`, see
    /// `routing::loose_route`.
    pub fn loose_route(&self, msg: &Message, src_flow: Option<FlowId>) -> NextHop {
        let s = &self.shared;
        routing::loose_route(msg, src_flow, &s.names, &s.keys, s.out.flows())
    }

    /// Strict-routing interop for a request whose Request-URI is `ruri`, see
    /// `routing::strict_route`.
    pub fn strict_route(&self, msg: &Message, ruri: &Uri<'_>, src_flow: Option<FlowId>) -> NextHop {
        let s = &self.shared;
        routing::strict_route(msg, ruri, src_flow, &s.names, &s.keys, s.out.flows())
    }

    /// The first hop of a branch to a binding, see `routing::binding_target`.
    pub fn binding_target(
        &self,
        path_first: Option<&str>,
        transport: Transport,
        flow: Option<FlowId>,
        source: SocketAddr,
    ) -> Option<Target> {
        routing::binding_target(path_first, transport, flow, source, self.shared.out.flows())
    }

    /// Forwards a request (already authenticated and routed by dispatch) on every branch
    /// and keeps a response context for it.
    pub fn start(&self, fwd: Forward<'_>, now: Instant) -> Started {
        let out = &self.shared.out;
        let mut core = self.core();
        let before = core.poll_timeout();
        let started = core.start(fwd, |t| out.local_for(t), now);
        let mut sent = 0;
        let mut forwarded = started == Started::Forwarded;
        while let Some(t) = core.poll_transmit() {
            let first = t.first_of.is_some();
            if out.send(t.target, t.bytes.clone()) {
                sent += usize::from(first);
            } else if first {
                forwarded = core.not_sent(&t);
            } else {
                tracing::debug!(target = ?t.target, "proxy: could not send");
            }
        }
        if sent > 0 {
            core.metrics().proxy_branches(sent);
        }
        self.after_input(&core, before);
        match (started, forwarded) {
            (Started::Forwarded, false) => Started::NoRoute,
            (s, _) => s,
        }
    }

    /// Forwards an ACK for a 2xx (end to end, no transaction) on `hop`; false if it could
    /// not be sent.
    pub fn forward_stateless(&self, msg: &Message, hop: &Hop) -> bool {
        let s = &self.shared;
        let Some((transport, local)) = s.out.local_for(hop.target) else {
            return false;
        };
        let via = format!(
            "SIP/2.0/{} {local};branch={}",
            transport.as_str().to_ascii_uppercase(),
            s.keys.stateless_branch(msg)
        );
        let request_uri = match hop.request_uri.as_deref().map(context::as_request_uri) {
            Some(Some(uri)) => Some(uri),
            Some(None) => return false,
            None => None,
        };
        let edits = ForwardEdits {
            request_uri: request_uri.as_deref(),
            push_via: Some(&via),
            decrement_max_forwards: true,
            pop_routes: hop.routing.pop_routes,
            pop_last_route: hop.routing.pop_last_route,
            consume_credentials_for: &s.realms,
            ..ForwardEdits::default()
        };
        s.out.send(hop.target, forward(msg, &edits))
    }

    /// The caller's CANCEL for the INVITE with server transaction `invite_key`: true if a
    /// context exists (answer the CANCEL with 200); its pending branches are cancelled.
    pub fn cancel(&self, invite_key: &TransactionKey, now: Instant) -> bool {
        self.input(|core| core.cancel(invite_key, now))
    }

    /// A response arrived. Returns false if it is not for one of our branches (dispatch
    /// drops it).
    pub fn on_response(&self, msg: &Message, now: Instant) -> bool {
        self.input(|core| core.on_response(msg, now))
    }

    /// The ACK for a non-2xx final this proxy sent upstream for the INVITE `invite_key`:
    /// stops Timer G. False if no such transaction (the ACK is not ours).
    pub fn on_ack(&self, invite_key: &TransactionKey, now: Instant) -> bool {
        self.input(|core| core.on_ack(invite_key, now))
    }

    /// The core's next deadline (for the driver).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.core().poll_timeout()
    }

    /// Runs the timers due at `now` and sends what they queued (for the driver).
    pub(crate) fn handle_timeout(&self, now: Instant) {
        let mut core = self.core();
        core.handle_timeout(now);
        self.flush(&mut core);
        if core.len() == 0 {
            self.shared.emptied.notify_waiters();
        }
    }

    /// The driver's wake-up for an earlier deadline.
    pub(crate) fn deadline_moved(&self) -> &Notify {
        &self.shared.deadline_moved
    }

    /// Runs one input on the core, sends what it queued, and wakes the driver if needed.
    fn input<R>(&self, f: impl FnOnce(&mut ProxyCore) -> R) -> R {
        let mut core = self.core();
        let before = core.poll_timeout();
        let result = f(&mut core);
        self.flush(&mut core);
        self.after_input(&core, before);
        result
    }

    fn flush(&self, core: &mut ProxyCore) {
        while let Some(t) = core.poll_transmit() {
            if !self.shared.out.send(t.target, t.bytes) {
                tracing::debug!(target = ?t.target, "proxy: could not send");
            }
        }
    }

    /// Wakes the driver if the next deadline is now earlier than the one it sleeps until,
    /// and drain waiters if the last context went.
    fn after_input(&self, core: &ProxyCore, before: Option<Instant>) {
        match (before, core.poll_timeout()) {
            (_, None) => {}
            (Some(b), Some(a)) if a >= b => {}
            _ => self.shared.deadline_moved.notify_one(),
        }
        if core.len() == 0 {
            self.shared.emptied.notify_waiters();
        }
    }
}
