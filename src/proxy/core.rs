//! The proxy's state machine, with no I/O (the shape of quinn-proto's `Connection`): inputs
//! ([`ProxyCore::start`], [`ProxyCore::on_response`], [`ProxyCore::on_ack`],
//! [`ProxyCore::cancel`], [`ProxyCore::handle_timeout`]) change state and queue transmits;
//! [`ProxyCore::poll_transmit`] yields what to send and [`ProxyCore::poll_timeout`] when to
//! call `handle_timeout` next. Deadlines live in one ordered `(deadline, generation)` index
//! with one entry per context, so a timeout visits only the contexts that are due, never
//! every context. It must not touch sockets, tasks or the clock: `now` is passed in, and the
//! local address a branch leaves from is looked up by the caller's `local_for`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::context::{
    as_request_uri, better, build_ack, build_cancel, class_label, generous_limits, rr_uri,
    BranchState, Context, CONTEXT_HARD_LIMIT,
};
use super::keys::{Keys, BRANCH_PREFIX};
use super::{Forward, ProxyConfig, Started};
use crate::metrics::Metrics;
use crate::sip::{
    forward, ForwardEdits, HeaderName, HostPort, Message, ResponseBuilder, ViaReceived,
};
use crate::transaction::client::{ClientKind, ClientResponse, ClientTimer, ClientTransaction};
use crate::transaction::invite_server::{InviteServer, InviteServerTimer};
use crate::transaction::{TransactionKey, TransactionTable};
use crate::transport::{Target, Transport};

/// Bytes to send to a target.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub target: Target,
    pub bytes: Bytes,
    /// For the first send of a branch's request: its context and branch id, so that a send
    /// that fails at once removes the branch ([`ProxyCore::not_sent`]).
    pub(super) first_of: Option<(u64, String)>,
}

/// How much work the timers did, since the start: the evidence that nothing scans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerStats {
    /// Calls of `ProxyCore::handle_timeout` (the driver's wake-ups at a deadline).
    pub wakeups: u64,
    /// Contexts whose timers were run (each one due at that wake-up).
    pub visited: u64,
}

pub(crate) struct ProxyCore {
    config: ProxyConfig,
    keys: Keys,
    contexts: HashMap<u64, Context>,
    /// Our branch id → context.
    branches: HashMap<String, u64>,
    /// The server transaction key of a forwarded INVITE → context (for CANCEL and ACK).
    invites: HashMap<TransactionKey, u64>,
    /// `(deadline, generation)` → context: each context's next deadline, once.
    deadlines: BTreeMap<(Instant, u64), u64>,
    generation: u64,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    /// Relayed responses are stored here, so retransmitted requests get them replayed.
    server_txns: TransactionTable,
    metrics: Metrics,
    server_header: Option<String>,
    stats: TimerStats,
}

impl ProxyCore {
    pub(crate) fn new(
        config: ProxyConfig,
        keys: Keys,
        server_txns: TransactionTable,
        metrics: Metrics,
        server_header: Option<String>,
    ) -> ProxyCore {
        ProxyCore {
            config,
            keys,
            contexts: HashMap::new(),
            branches: HashMap::new(),
            invites: HashMap::new(),
            deadlines: BTreeMap::new(),
            generation: 0,
            next_id: 1,
            transmits: VecDeque::new(),
            server_txns,
            metrics,
            server_header,
            stats: TimerStats::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.contexts.len()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn stats(&self) -> TimerStats {
        self.stats
    }

    /// The next transmit, in the order queued.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Self::handle_timeout`] has something to do: the earliest context deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|((at, _), _)| *at)
    }

    fn queue(&mut self, target: Target, bytes: Bytes) {
        self.transmits.push_back(Transmit {
            target,
            bytes,
            first_of: None,
        });
    }

    /// Forwards `fwd.msg` (already authenticated and routed) on every branch `local_for`
    /// can send on and keeps a response context for it. `fwd.trying` is queued first,
    /// whatever the outcome.
    pub(crate) fn start(
        &mut self,
        fwd: Forward<'_>,
        local_for: impl Fn(Target) -> Option<(Transport, HostPort)>,
        now: Instant,
    ) -> Started {
        let Forward {
            msg,
            inbound,
            server_key,
            branches,
            routing,
            trying,
        } = fwd;
        if let Some(trying) = trying {
            self.queue(inbound.upstream, trying);
        }
        if self.contexts.len() >= self.config.max_contexts {
            return Started::Overloaded;
        }
        let invite = msg.method() == Some(crate::sip::Method::Invite);
        let id = self.next_id;
        self.next_id += 1;
        let loop_hash = self.keys.loop_hash(msg);
        let mut states = Vec::with_capacity(branches.len());
        for b in branches {
            let Some((transport, local)) = local_for(b.target) else {
                continue;
            };
            let request_uri = match b.request_uri.map(as_request_uri) {
                Some(Some(uri)) => Some(uri),
                Some(None) => continue,
                None => None,
            };
            let branch_id = format!("{BRANCH_PREFIX}{loop_hash}.{:x}", self.next_id);
            self.next_id += 1;
            let via = format!(
                "SIP/2.0/{} {};branch={branch_id}{}",
                transport.as_str().to_ascii_uppercase(),
                local,
                if transport == Transport::Udp {
                    ";rport"
                } else {
                    ""
                }
            );
            let out_flow = match b.target {
                Target::Flow(f) => Some(f),
                Target::Udp(_) | Target::UdpReply { .. } => None,
            };
            let token = self.keys.flow_token(inbound.flow, out_flow);
            let rr_in = rr_uri(&token, &inbound.local, inbound.transport);
            let rr_out = rr_uri(&token, &local, transport);
            let rr: Vec<&str> = match (routing.record_route, rr_in == rr_out) {
                (false, _) => Vec::new(),
                (true, true) => vec![rr_in.as_str()],
                // Transport or interface changes: one entry per side (RFC 3261 §16.6 step 4).
                (true, false) => vec![rr_out.as_str(), rr_in.as_str()],
            };
            let edits = ForwardEdits {
                request_uri: request_uri.as_deref(),
                push_via: Some(&via),
                pop_via: false,
                record_route: &rr,
                decrement_max_forwards: true,
                pop_routes: routing.pop_routes,
                push_route: &b.route,
                pop_last_route: routing.pop_last_route,
                consume_credentials_for: &self.config.realms,
            };
            let bytes = forward(msg, &edits);
            let request_uri = request_uri
                .as_deref()
                .or(msg.request_uri())
                .unwrap_or("")
                .to_owned();
            let route: Vec<String> = match Message::parse(bytes.clone(), &generous_limits()) {
                Ok(sent) => sent.values(HeaderName::Route).map(str::to_owned).collect(),
                Err(_) => Vec::new(),
            };
            let kind = if invite {
                ClientKind::Invite
            } else {
                ClientKind::NonInvite
            };
            states.push(BranchState {
                id: branch_id,
                target: b.target,
                request: bytes,
                request_uri,
                via,
                route,
                txn: ClientTransaction::new(kind, transport != Transport::Udp, self.config.t1, now),
                provisional: false,
                cancel_when_provisional: false,
                cancel: None,
            });
        }
        if states.is_empty() {
            return Started::NoRoute;
        }
        // The context and its branch ids are in the maps before the first byte is queued:
        // a response can only be handled after the caller has flushed, and finds them.
        for b in &states {
            self.branches.insert(b.id.clone(), id);
            self.transmits.push_back(Transmit {
                target: b.target,
                bytes: b.request.clone(),
                first_of: Some((id, b.id.clone())),
            });
        }
        if invite {
            self.invites.insert(server_key.clone(), id);
        }
        let reliable = inbound.transport != Transport::Udp;
        self.contexts.insert(
            id,
            Context {
                request: msg.clone(),
                inbound,
                server_key,
                invite,
                branches: states,
                best: None,
                final_sent: false,
                cancelled: false,
                created: now,
                server: invite.then(|| InviteServer::new(reliable, self.config.t1)),
                final_bytes: None,
                scheduled: None,
            },
        );
        self.settle(id, now);
        Started::Forwarded
    }

    /// The first send of a branch's request failed: the branch is dropped as if it had never
    /// been forked. Returns false if its context has no branch left (it is removed: nothing
    /// was forwarded).
    pub(crate) fn not_sent(&mut self, t: &Transmit) -> bool {
        let Some((id, branch)) = &t.first_of else {
            return true;
        };
        tracing::debug!(target = ?t.target, "proxy: branch could not be sent");
        self.branches.remove(branch);
        let Some(ctx) = self.contexts.get_mut(id) else {
            return false;
        };
        ctx.branches.retain(|b| b.id != *branch);
        if ctx.branches.is_empty() {
            self.remove(*id);
            return false;
        }
        true
    }

    /// The caller's CANCEL for the INVITE with server transaction `invite_key`: true if a
    /// context exists (answer the CANCEL with 200); its pending branches are cancelled.
    pub(crate) fn cancel(&mut self, invite_key: &TransactionKey, now: Instant) -> bool {
        let Some(&id) = self.invites.get(invite_key) else {
            return false;
        };
        let Some(mut ctx) = self.contexts.remove(&id) else {
            return false;
        };
        if !ctx.final_sent {
            ctx.cancelled = true;
            self.cancel_pending(&mut ctx, now);
        }
        self.contexts.insert(id, ctx);
        self.settle(id, now);
        true
    }

    fn cancel_pending(&mut self, ctx: &mut Context, now: Instant) {
        let t1 = self.config.t1;
        for b in ctx.branches.iter_mut() {
            if b.txn.is_final() || b.cancel.is_some() {
                continue;
            }
            if !b.provisional {
                b.cancel_when_provisional = true;
                continue;
            }
            let bytes = build_cancel(&ctx.request, b);
            let reliable = matches!(b.target, Target::Flow(_));
            self.transmits.push_back(Transmit {
                target: b.target,
                bytes: bytes.clone(),
                first_of: None,
            });
            b.cancel = Some((
                ClientTransaction::new(ClientKind::NonInvite, reliable, t1, now),
                bytes,
            ));
        }
    }

    /// A response arrived. Returns false if it is not for one of our branches (dispatch
    /// drops it).
    pub(crate) fn on_response(&mut self, msg: &Message, now: Instant) -> bool {
        let Some(branch) = msg
            .top_via()
            .ok()
            .and_then(|v| v.branch())
            .filter(|b| b.starts_with(BRANCH_PREFIX))
        else {
            return false;
        };
        let Some(&id) = self.branches.get(branch) else {
            return false;
        };
        let Some(status) = msg.status() else {
            return false;
        };
        let Some(mut ctx) = self.contexts.remove(&id) else {
            return false;
        };
        if let Some(index) = ctx.branches.iter().position(|b| b.id == branch) {
            self.branch_response(&mut ctx, index, msg, status, now);
        }
        self.contexts.insert(id, ctx);
        self.settle(id, now);
        true
    }

    fn branch_response(
        &mut self,
        ctx: &mut Context,
        index: usize,
        msg: &Message,
        status: u16,
        now: Instant,
    ) {
        let is_cancel = msg
            .cseq()
            .map(|c| c.method.eq_ignore_ascii_case("CANCEL"))
            .unwrap_or(false);
        if is_cancel {
            if let Some((txn, _)) = ctx.branches[index].cancel.as_mut() {
                txn.on_response(status, now);
            }
            return;
        }
        let action = ctx.branches[index].txn.on_response(status, now);
        if matches!(action, ClientResponse::ReAck | ClientResponse::PassUpAndAck) {
            let b = &ctx.branches[index];
            self.queue(b.target, build_ack(&ctx.request, b, msg));
        }
        if matches!(
            action,
            ClientResponse::PassUp | ClientResponse::PassUpAndAck
        ) {
            self.relay(ctx, index, msg, status, now);
        }
    }

    fn relay(&mut self, ctx: &mut Context, index: usize, msg: &Message, status: u16, now: Instant) {
        let upstream = forward(
            msg,
            &ForwardEdits {
                pop_via: true,
                ..ForwardEdits::default()
            },
        );
        match status {
            100 => {}
            101..=199 => {
                let b = &mut ctx.branches[index];
                b.provisional = true;
                if b.cancel_when_provisional {
                    b.cancel_when_provisional = false;
                    self.cancel_pending(ctx, now);
                }
                if !ctx.final_sent {
                    self.send_upstream(ctx, upstream, status, now);
                }
            }
            200..=299 => {
                // Every 2xx goes up, retransmissions included (RFC 6026).
                self.send_upstream(ctx, upstream, status, now);
                if !ctx.final_sent {
                    ctx.final_sent = true;
                    self.metrics.proxied(ctx.method_label(), "2xx");
                    self.metrics
                        .proxy_transaction_took(now.saturating_duration_since(ctx.created));
                    self.cancel_pending(ctx, now);
                }
            }
            _ => {
                if status >= 600 && !ctx.final_sent {
                    self.cancel_pending(ctx, now);
                }
                if better(status, ctx.best.as_ref().map(|(s, _)| *s)) {
                    ctx.best = Some((status, upstream));
                }
                self.maybe_finish(ctx, now);
            }
        }
    }

    /// Every branch has its final: send the best one up (or 408 if none answered).
    fn maybe_finish(&mut self, ctx: &mut Context, now: Instant) {
        if ctx.final_sent || ctx.branches.iter().any(|b| !b.txn.is_final()) {
            return;
        }
        ctx.final_sent = true;
        let (status, bytes) = match ctx.best.take() {
            Some(best) => best,
            None => (408, self.local_response(ctx, 408, "Request Timeout")),
        };
        self.metrics
            .proxied(ctx.method_label(), class_label(status));
        self.metrics
            .proxy_transaction_took(now.saturating_duration_since(ctx.created));
        self.send_upstream(ctx, bytes, status, now);
    }

    fn local_response(&self, ctx: &Context, status: u16, reason: &str) -> Bytes {
        let tag = format!("{:016x}", rand::random::<u64>());
        ResponseBuilder::new(&ctx.request, status, reason)
            .received(ViaReceived {
                addr: ctx.inbound.peer,
            })
            .to_tag(&tag)
            .server(self.server_header.as_deref())
            .build()
    }

    fn send_upstream(&mut self, ctx: &mut Context, bytes: Bytes, status: u16, now: Instant) {
        if status >= 200 {
            if let Some(server) = ctx.server.as_mut() {
                server.on_final(status, now);
                if status >= 300 {
                    ctx.final_bytes = Some(bytes.clone());
                }
            }
        }
        if status >= 101 {
            // Retransmitted requests get this answer replayed by the server transaction.
            let _ = self
                .server_txns
                .on_response(&ctx.server_key, bytes.clone(), status, now);
        }
        self.metrics.response(status, ctx.inbound.transport);
        self.queue(ctx.inbound.upstream, bytes);
    }

    /// The ACK for a non-2xx final this proxy sent upstream for the INVITE `invite_key`:
    /// stops Timer G. False if no such transaction (the ACK is not ours).
    pub(crate) fn on_ack(&mut self, invite_key: &TransactionKey, now: Instant) -> bool {
        let Some(&id) = self.invites.get(invite_key) else {
            return false;
        };
        let Some(ctx) = self.contexts.get_mut(&id) else {
            return false;
        };
        let acked = ctx.server.as_mut().is_some_and(|s| s.on_ack(now));
        self.settle(id, now);
        acked
    }

    /// Runs the timers of the contexts due at `now` (retransmissions, timeouts with their
    /// 408, removal of finished contexts), in deadline order. Contexts not due are not
    /// touched.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.stats.wakeups += 1;
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            self.stats.visited += 1;
            if let Some(mut ctx) = self.contexts.remove(&id) {
                ctx.scheduled = None;
                self.run_timers(&mut ctx, now);
                self.contexts.insert(id, ctx);
                self.settle(id, now);
            }
        }
        self.metrics.proxy_contexts.set(self.contexts.len() as i64);
    }

    fn run_timers(&mut self, ctx: &mut Context, now: Instant) {
        let mut timed_out = false;
        for b in ctx.branches.iter_mut() {
            while let Some(event) = b.txn.poll(now) {
                match event {
                    ClientTimer::Retransmit => {
                        self.transmits.push_back(Transmit {
                            target: b.target,
                            bytes: b.request.clone(),
                            first_of: None,
                        });
                    }
                    ClientTimer::Timeout => {
                        timed_out = true;
                        self.metrics.proxy_timeout();
                    }
                }
            }
            if let Some((txn, bytes)) = b.cancel.as_mut() {
                while let Some(event) = txn.poll(now) {
                    if event == ClientTimer::Retransmit {
                        self.transmits.push_back(Transmit {
                            target: b.target,
                            bytes: bytes.clone(),
                            first_of: None,
                        });
                    }
                }
            }
        }
        let mut resend = false;
        if let Some(server) = ctx.server.as_mut() {
            while let Some(event) = server.poll(now) {
                match event {
                    InviteServerTimer::RetransmitFinal => resend = true,
                    InviteServerTimer::AckTimeout => {
                        tracing::debug!("proxy: no ACK for a non-2xx final (Timer H)");
                    }
                }
            }
        }
        if resend {
            if let Some(bytes) = ctx.final_bytes.clone() {
                self.queue(ctx.inbound.upstream, bytes);
            }
        }
        if timed_out {
            // A timed-out branch counts as a 408 (§16.7 step 2).
            if ctx.best.is_none() {
                let local = self.local_response(ctx, 408, "Request Timeout");
                ctx.best = Some((408, local));
            }
            self.maybe_finish(ctx, now);
        }
    }

    /// After an input or a timeout: removes the context if it is done or past its hard
    /// limit, else moves its entry in the deadline index to its next deadline.
    fn settle(&mut self, id: u64, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&id) else {
            return;
        };
        let next = ctx.next_deadline();
        let expired = now.saturating_duration_since(ctx.created) >= CONTEXT_HARD_LIMIT;
        if ctx.is_done() || expired {
            self.remove(id);
            return;
        }
        if ctx.scheduled.map(|(at, _)| at) == Some(next) {
            return;
        }
        if let Some(old) = ctx.scheduled.take() {
            self.deadlines.remove(&old);
        }
        self.generation += 1;
        let key = (next, self.generation);
        ctx.scheduled = Some(key);
        self.deadlines.insert(key, id);
        self.metrics.proxy_contexts.set(self.contexts.len() as i64);
    }

    fn remove(&mut self, id: u64) {
        let Some(ctx) = self.contexts.remove(&id) else {
            return;
        };
        for b in &ctx.branches {
            self.branches.remove(&b.id);
        }
        if ctx.invite {
            self.invites.remove(&ctx.server_key);
        }
        if let Some(key) = ctx.scheduled {
            self.deadlines.remove(&key);
        }
        self.metrics.proxy_contexts.set(self.contexts.len() as i64);
    }
}
