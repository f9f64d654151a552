//! The stateful proxy core (RFC 3261 §16): one response context per forwarded request, with
//! one client transaction per branch; forking in parallel, best-response selection (§16.7),
//! CANCEL of the other branches after a 2xx or on the caller's CANCEL, hop-by-hop ACK for
//! non-2xx finals, 408 when a branch times out, and Record-Route with a signed flow token so
//! in-dialog requests find the connection of the other side.
//!
//! Dispatch decides *whether* and *where* to forward (authentication, location lookup, loose
//! routing); this module forwards and relays responses. It sends only through
//! [`Outbound`], which never blocks, and is driven by `now`: the app's proxy timer task calls
//! [`Proxy::poll`].
//!
//! Decisions: branches fork in parallel whatever their q-values (the lookup orders them by q;
//! sequential forking by q-groups is not done); 401/407 from several branches are not
//! aggregated (the best one is forwarded); a CANCEL for a branch that has sent no provisional
//! yet waits for the first provisional (§9.1). Every forwarded request leaves without the
//! Digest credentials for our realms (§22.3: a callee must never see a caller's response),
//! and a URI that becomes a Request-URI loses its URI headers and `method` (§19.1.1).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::metrics::Metrics;
use crate::sip::{forward, ForwardEdits, HeaderName, Message, ResponseBuilder, Uri, ViaReceived};
use crate::transaction::client::{ClientKind, ClientResponse, ClientTimer, ClientTransaction};
use crate::transaction::invite_server::{InviteServer, InviteServerTimer};
use crate::transaction::{TransactionKey, TransactionTable};
use crate::transport::{FlowId, Outbound, Target, Transport};

/// Branch prefix of every Via we add: the RFC 3261 cookie plus ours.
pub const BRANCH_PREFIX: &str = "z9hG4bKsw";
/// A response context is dropped this long after it was created, whatever its state.
const CONTEXT_HARD_LIMIT: Duration = Duration::from_secs(300);

/// Settings from config.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub t1: Duration,
    /// Response contexts held at once; further requests get 503.
    pub max_contexts: usize,
    /// Our Digest realms (the served domains). Credentials for them are consumed: no
    /// forwarded request carries them on, so a callee never sees a caller's Digest response
    /// (RFC 3261 §22.3). Credentials for other realms pass unchanged.
    pub realms: Vec<String>,
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
#[derive(Debug, Clone, Copy)]
pub struct Inbound {
    /// Where responses go (the connection, or the UDP address per §18.2.2).
    pub upstream: Target,
    pub transport: Transport,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub flow: Option<FlowId>,
}

/// Route-set handling for one forwarded request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Routing {
    /// Our own Route entries on top, to remove (in-dialog requests).
    pub pop_routes: usize,
    /// Add Record-Route (initial requests), so in-dialog requests come back through us.
    pub record_route: bool,
    /// Remove the last Route value (strict-routing interop, RFC 3261 §16.4).
    pub pop_last_route: bool,
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

#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    out: Outbound,
    config: ProxyConfig,
    contexts: DashMap<u64, Arc<Mutex<Context>>>,
    /// Our branch id → context.
    branches: DashMap<String, u64>,
    /// The server transaction key of a forwarded INVITE → context (for CANCEL).
    invites: DashMap<TransactionKey, u64>,
    next: AtomicU64,
    /// Keys the loop-detection hash and the Record-Route flow tokens.
    hasher: RandomState,
    token_key: [u8; 32],
    server_txns: TransactionTable,
    metrics: Metrics,
    server_header: Option<String>,
}

struct Context {
    request: Message,
    inbound: Inbound,
    server_key: TransactionKey,
    invite: bool,
    branches: Vec<BranchState>,
    /// Best final non-2xx so far, our Via already removed.
    best: Option<(u16, Bytes)>,
    final_sent: bool,
    cancelled: bool,
    created: Instant,
    /// The INVITE server transaction (Timers G, H, I, L) and the final it retransmits.
    server: Option<InviteServer>,
    final_bytes: Option<Bytes>,
}

struct BranchState {
    id: String,
    target: Target,
    request: Bytes,
    request_uri: String,
    via: String,
    route: Vec<String>,
    txn: ClientTransaction,
    provisional: bool,
    cancel_when_provisional: bool,
    cancel: Option<(ClientTransaction, Bytes)>,
}

impl Proxy {
    pub fn new(
        out: Outbound,
        config: ProxyConfig,
        server_txns: TransactionTable,
        metrics: Metrics,
        server_header: Option<String>,
    ) -> Proxy {
        let mut token_key = [0u8; 32];
        rand::fill(&mut token_key);
        Proxy {
            inner: Arc::new(Inner {
                out,
                config,
                contexts: DashMap::new(),
                branches: DashMap::new(),
                invites: DashMap::new(),
                next: AtomicU64::new(1),
                hasher: RandomState::new(),
                token_key,
                server_txns,
                metrics,
                server_header,
            }),
        }
    }

    pub fn outbound(&self) -> &Outbound {
        &self.inner.out
    }

    /// Response contexts held now.
    pub fn len(&self) -> usize {
        self.inner.contexts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.contexts.is_empty()
    }

    /// RFC 3261 §16.3 step 4: the request already passed here with the same Request-URI,
    /// From tag, Call-ID and CSeq (a loop, not a spiral).
    pub fn is_loop(&self, msg: &Message) -> bool {
        let mine = self.loop_hash(msg);
        msg.vias().filter_map(Result::ok).any(|v| {
            v.branch()
                .and_then(|b| b.strip_prefix(BRANCH_PREFIX))
                .and_then(|rest| rest.split('.').next())
                .is_some_and(|h| h == mine)
        })
    }

    fn loop_hash(&self, msg: &Message) -> String {
        let mut h = self.inner.hasher.build_hasher();
        h.write(msg.request_uri().unwrap_or("").as_bytes());
        h.write_u8(0);
        h.write(
            msg.from()
                .ok()
                .and_then(|f| f.tag())
                .unwrap_or("")
                .as_bytes(),
        );
        h.write_u8(0);
        h.write(msg.call_id().unwrap_or("").as_bytes());
        h.write_u32(msg.cseq().map(|c| c.seq).unwrap_or(0));
        format!("{:016x}", h.finish())
    }

    fn new_branch_id(&self, msg: &Message) -> String {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        format!("{BRANCH_PREFIX}{}.{n:x}", self.loop_hash(msg))
    }

    /// The Record-Route URI user part for a request that came in on `inbound` and leaves on
    /// `outbound`: both flows and a MAC, so nobody can steer requests into other flows.
    fn flow_token(&self, inbound: Option<FlowId>, outbound: Option<FlowId>) -> String {
        let (a, b) = (inbound.map_or(0, |f| f.0), outbound.map_or(0, |f| f.0));
        format!("f{a:x}x{b:x}x{}", self.token_mac(a, b))
    }

    fn token_mac(&self, a: u64, b: u64) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.inner.token_key).expect("HMAC takes any key");
        mac.update(&a.to_be_bytes());
        mac.update(&b.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// The two flows of a token from one of our Record-Route URIs, if its MAC is ours.
    pub fn flows_of_token(&self, user: &str) -> Option<(Option<FlowId>, Option<FlowId>)> {
        let rest = user.strip_prefix('f')?;
        let mut parts = rest.split('x');
        let a = u64::from_str_radix(parts.next()?, 16).ok()?;
        let b = u64::from_str_radix(parts.next()?, 16).ok()?;
        let mac = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let want = self.token_mac(a, b);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            want.as_bytes(),
            mac.as_bytes(),
        )) {
            return None;
        }
        let flow = |n: u64| (n != 0).then_some(FlowId(n));
        Some((flow(a), flow(b)))
    }

    /// Forwards `msg` (already authenticated and routed by dispatch) on every branch and
    /// keeps a response context for it.
    pub fn start(
        &self,
        msg: &Message,
        inbound: Inbound,
        server_key: TransactionKey,
        branches: &[Branch<'_>],
        routing: Routing,
        now: Instant,
    ) -> Started {
        let Routing {
            pop_routes,
            record_route,
            pop_last_route,
        } = routing;
        let i = &self.inner;
        if i.contexts.len() >= i.config.max_contexts {
            return Started::Overloaded;
        }
        let invite = msg.method() == Some(crate::sip::Method::Invite);
        let id = i.next.fetch_add(1, Ordering::Relaxed);
        let mut states = Vec::with_capacity(branches.len());
        for b in branches {
            let Some((transport, local)) = i.out.local_for(b.target) else {
                continue;
            };
            let request_uri = match b.request_uri.map(as_request_uri) {
                Some(Some(uri)) => Some(uri),
                Some(None) => continue,
                None => None,
            };
            let branch_id = self.new_branch_id(msg);
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
                Target::Udp(_) => None,
            };
            let token = self.flow_token(inbound.flow, out_flow);
            let rr_in = rr_uri(&token, inbound.local, inbound.transport);
            let rr_out = rr_uri(&token, local, transport);
            let rr: Vec<&str> = match (record_route, rr_in == rr_out) {
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
                pop_routes,
                push_route: &b.route,
                pop_last_route,
                consume_credentials_for: &i.config.realms,
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
                txn: ClientTransaction::new(kind, transport != Transport::Udp, i.config.t1, now),
                provisional: false,
                cancel_when_provisional: false,
                cancel: None,
            });
        }
        if states.is_empty() {
            return Started::NoRoute;
        }
        // The context and its branch ids are in the maps, and locked, before the first byte
        // leaves: a response racing in on another receive loop waits for the lock instead of
        // finding no branch.
        for b in &states {
            i.branches.insert(b.id.clone(), id);
        }
        if invite {
            i.invites.insert(server_key.clone(), id);
        }
        let ctx = Arc::new(Mutex::new(Context {
            request: msg.clone(),
            inbound,
            server_key,
            invite,
            branches: states,
            best: None,
            final_sent: false,
            cancelled: false,
            created: now,
            server: invite
                .then(|| InviteServer::new(inbound.transport != Transport::Udp, i.config.t1)),
            final_bytes: None,
        }));
        let mut guard = lock(&ctx);
        i.contexts.insert(id, ctx.clone());
        guard.branches.retain(|b| {
            let sent = i.out.send(b.target, b.request.clone());
            if !sent {
                tracing::debug!(target = ?b.target, "proxy: branch could not be sent");
                i.branches.remove(&b.id);
            }
            sent
        });
        let forwarded = !guard.branches.is_empty();
        if !forwarded {
            if guard.invite {
                i.invites.remove(&guard.server_key);
            }
            drop(guard);
            i.contexts.remove(&id);
            return Started::NoRoute;
        }
        i.metrics.proxy_branches(guard.branches.len());
        drop(guard);
        i.metrics.proxy_contexts.set(i.contexts.len() as i64);
        Started::Forwarded
    }

    /// Forwards an ACK for a 2xx (end to end, no transaction) to `target`.
    pub fn forward_stateless(
        &self,
        msg: &Message,
        target: Target,
        request_uri: Option<&str>,
        routing: Routing,
    ) -> bool {
        let Some((transport, local)) = self.inner.out.local_for(target) else {
            return false;
        };
        // A stateless branch must be the same for retransmissions: derived from the
        // incoming top Via's branch.
        let mut h = self.inner.hasher.build_hasher();
        h.write(
            msg.top_via()
                .ok()
                .and_then(|v| v.branch())
                .unwrap_or("")
                .as_bytes(),
        );
        let via = format!(
            "SIP/2.0/{} {local};branch={BRANCH_PREFIX}{:016x}.a",
            transport.as_str().to_ascii_uppercase(),
            h.finish()
        );
        let request_uri = match request_uri.map(as_request_uri) {
            Some(Some(uri)) => Some(uri),
            Some(None) => return false,
            None => None,
        };
        let edits = ForwardEdits {
            request_uri: request_uri.as_deref(),
            push_via: Some(&via),
            decrement_max_forwards: true,
            pop_routes: routing.pop_routes,
            pop_last_route: routing.pop_last_route,
            consume_credentials_for: &self.inner.config.realms,
            ..ForwardEdits::default()
        };
        self.inner.out.send(target, forward(msg, &edits))
    }

    /// The caller's CANCEL for the INVITE with server transaction `invite_key`: true if a
    /// context exists (answer the CANCEL with 200); its pending branches are cancelled.
    pub fn cancel(&self, invite_key: &TransactionKey, now: Instant) -> bool {
        let Some(id) = self.inner.invites.get(invite_key).map(|e| *e) else {
            return false;
        };
        let Some(ctx) = self.context(id) else {
            return false;
        };
        let mut ctx = lock(&ctx);
        if !ctx.final_sent {
            ctx.cancelled = true;
            self.cancel_pending(&mut ctx, now);
        }
        true
    }

    fn context(&self, id: u64) -> Option<Arc<Mutex<Context>>> {
        self.inner.contexts.get(&id).map(|c| c.clone())
    }

    fn cancel_pending(&self, ctx: &mut Context, now: Instant) {
        let t1 = self.inner.config.t1;
        let request = ctx.request.clone();
        for b in ctx.branches.iter_mut() {
            if b.txn.is_final() || b.cancel.is_some() {
                continue;
            }
            if !b.provisional {
                b.cancel_when_provisional = true;
                continue;
            }
            let bytes = build_cancel(&request, b);
            let reliable = !matches!(b.target, Target::Udp(_));
            self.inner.out.send(b.target, bytes.clone());
            b.cancel = Some((
                ClientTransaction::new(ClientKind::NonInvite, reliable, t1, now),
                bytes,
            ));
        }
    }

    /// A response arrived. Returns false if it is not for one of our branches (dispatch
    /// drops it).
    pub fn on_response(&self, msg: &Message, now: Instant) -> bool {
        let Some(branch) = msg
            .top_via()
            .ok()
            .and_then(|v| v.branch())
            .filter(|b| b.starts_with(BRANCH_PREFIX))
        else {
            return false;
        };
        let Some(id) = self.inner.branches.get(branch).map(|e| *e) else {
            return false;
        };
        let Some(ctx) = self.context(id) else {
            return false;
        };
        let Some(status) = msg.status() else {
            return false;
        };
        let is_cancel = msg
            .cseq()
            .map(|c| c.method.eq_ignore_ascii_case("CANCEL"))
            .unwrap_or(false);
        let mut ctx = lock(&ctx);
        let Some(index) = ctx.branches.iter().position(|b| b.id == branch) else {
            return false;
        };
        if is_cancel {
            if let Some((txn, _)) = ctx.branches[index].cancel.as_mut() {
                txn.on_response(status, now);
            }
            return true;
        }
        let action = ctx.branches[index].txn.on_response(status, now);
        match action {
            ClientResponse::Absorb => {}
            ClientResponse::ReAck => {
                let b = &ctx.branches[index];
                self.inner
                    .out
                    .send(b.target, build_ack(&ctx.request, b, msg));
            }
            ClientResponse::PassUp | ClientResponse::PassUpAndAck => {
                if action == ClientResponse::PassUpAndAck {
                    let b = &ctx.branches[index];
                    self.inner
                        .out
                        .send(b.target, build_ack(&ctx.request, b, msg));
                }
                self.relay(&mut ctx, index, msg, status, now);
            }
        }
        true
    }

    fn relay(&self, ctx: &mut Context, index: usize, msg: &Message, status: u16, now: Instant) {
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
                    self.inner.metrics.proxied(ctx.method_label(), "2xx");
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
    fn maybe_finish(&self, ctx: &mut Context, now: Instant) {
        if ctx.final_sent || ctx.branches.iter().any(|b| !b.txn.is_final()) {
            return;
        }
        ctx.final_sent = true;
        let (status, bytes) = match ctx.best.take() {
            Some(best) => best,
            None => (408, self.local_response(ctx, 408, "Request Timeout")),
        };
        let class = class_label(status);
        self.inner.metrics.proxied(ctx.method_label(), class);
        self.send_upstream(ctx, bytes, status, now);
    }

    fn local_response(&self, ctx: &Context, status: u16, reason: &str) -> Bytes {
        let tag = format!("{:016x}", rand::random::<u64>());
        ResponseBuilder::new(&ctx.request, status, reason)
            .received(ViaReceived {
                addr: ctx.inbound.peer,
            })
            .to_tag(&tag)
            .server(self.inner.server_header.as_deref())
            .build()
    }

    fn send_upstream(&self, ctx: &mut Context, bytes: Bytes, status: u16, now: Instant) {
        let i = &self.inner;
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
            let _ = i
                .server_txns
                .on_response(&ctx.server_key, bytes.clone(), status, now);
        }
        i.metrics.response(status, ctx.inbound.transport);
        if !i.out.send(ctx.inbound.upstream, bytes) {
            tracing::debug!(upstream = ?ctx.inbound.upstream, "proxy: response could not be sent upstream");
        }
    }

    /// The ACK for a non-2xx final this proxy sent upstream for the INVITE `invite_key`:
    /// stops Timer G. False if no such transaction (the ACK is not ours).
    pub fn on_ack(&self, invite_key: &TransactionKey, now: Instant) -> bool {
        let Some(id) = self.inner.invites.get(invite_key).map(|e| *e) else {
            return false;
        };
        let Some(ctx) = self.context(id) else {
            return false;
        };
        let mut ctx = lock(&ctx);
        ctx.server.as_mut().is_some_and(|s| s.on_ack(now))
    }

    /// Runs the timers of every context: retransmissions, timeouts (408), and removal of
    /// finished contexts.
    pub fn poll(&self, now: Instant) {
        let i = &self.inner;
        let ids: Vec<u64> = i.contexts.iter().map(|e| *e.key()).collect();
        for id in ids {
            let Some(ctx) = self.context(id) else {
                continue;
            };
            let mut ctx = lock(&ctx);
            let mut timed_out = false;
            for b in ctx.branches.iter_mut() {
                while let Some(event) = b.txn.poll(now) {
                    match event {
                        ClientTimer::Retransmit => {
                            i.out.send(b.target, b.request.clone());
                        }
                        ClientTimer::Timeout => {
                            timed_out = true;
                            i.metrics.proxy_timeout();
                        }
                    }
                }
                if let Some((txn, bytes)) = b.cancel.as_mut() {
                    while let Some(event) = txn.poll(now) {
                        if event == ClientTimer::Retransmit {
                            i.out.send(b.target, bytes.clone());
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
                    i.out.send(ctx.inbound.upstream, bytes);
                }
            }
            if timed_out {
                // A timed-out branch counts as a 408 (§16.7 step 2).
                if ctx.best.is_none() {
                    let local = self.local_response(&ctx, 408, "Request Timeout");
                    ctx.best = Some((408, local));
                }
                self.maybe_finish(&mut ctx, now);
            }
            let done = ctx.final_sent
                && ctx.branches.iter().all(|b| b.txn.next_deadline().is_none())
                && ctx
                    .server
                    .as_ref()
                    .is_none_or(|s| s.next_deadline().is_none());
            if done || now.duration_since(ctx.created) > CONTEXT_HARD_LIMIT {
                for b in &ctx.branches {
                    i.branches.remove(&b.id);
                }
                if ctx.invite {
                    i.invites.remove(&ctx.server_key);
                }
                drop(ctx);
                i.contexts.remove(&id);
            }
        }
        i.metrics.proxy_contexts.set(i.contexts.len() as i64);
    }
}

impl Context {
    fn method_label(&self) -> &'static str {
        crate::metrics::method_label(self.request.method())
    }
}

fn lock(ctx: &Mutex<Context>) -> std::sync::MutexGuard<'_, Context> {
    ctx.lock().unwrap_or_else(|e| e.into_inner())
}

/// Limits for re-reading messages we built ourselves.
fn generous_limits() -> crate::sip::Limits {
    crate::sip::Limits {
        max_header_bytes: 1 << 20,
        max_body_bytes: 1 << 20,
        max_headers: 4096,
    }
}

/// `<sip:token@host:port;transport=x;lr>` for our address `local`.
fn rr_uri(token: &str, local: SocketAddr, transport: Transport) -> String {
    let transport = match transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
    };
    format!("<sip:{token}@{local}{transport};lr>")
}

/// §16.7 step 6: 6xx beats everything; otherwise the lowest class, 3xx before 4xx before 5xx.
fn better(status: u16, current: Option<u16>) -> bool {
    let rank = |s: u16| match s / 100 {
        6 => 0,
        3 => 1,
        4 => 2,
        5 => 3,
        _ => 4,
    };
    match current {
        None => true,
        Some(c) => rank(status) < rank(c),
    }
}

fn class_label(status: u16) -> &'static str {
    match status / 100 {
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "6xx",
    }
}

/// The hop-by-hop ACK for a non-2xx final on branch `b` (RFC 3261 §17.1.1.3): To from the
/// response.
fn build_ack(request: &Message, b: &BranchState, response: &Message) -> Bytes {
    let to = response.value(HeaderName::To).unwrap_or("");
    branch_request("ACK", request, b, to)
}

/// The CANCEL for branch `b` (RFC 3261 §9.1): To as in the INVITE.
fn build_cancel(request: &Message, b: &BranchState) -> Bytes {
    let to = request.value(HeaderName::To).unwrap_or("");
    branch_request("CANCEL", request, b, to)
}

/// A request on branch `b` that reuses the INVITE's Request-URI (as sent), top Via, Route
/// set, From, Call-ID and CSeq number.
fn branch_request(method: &str, request: &Message, b: &BranchState, to: &str) -> Bytes {
    let mut out = format!("{method} {} SIP/2.0\r\nVia: {}\r\n", b.request_uri, b.via);
    for r in &b.route {
        out.push_str("Route: ");
        out.push_str(r);
        out.push_str("\r\n");
    }
    let from = request.value(HeaderName::From).unwrap_or("");
    let call_id = request.call_id().unwrap_or("");
    let seq = request.cseq().map(|c| c.seq).unwrap_or(0);
    out.push_str(&format!(
        "Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    ));
    Bytes::from(out)
}

/// A URI that becomes a Request-URI (a binding's Contact, a strict router's last Route) in
/// the form a Request-URI may take: no URI headers, no `method` parameter (RFC 3261
/// §19.1.1). `None` if it does not parse (nothing is sent to it).
fn as_request_uri(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    Uri::parse(raw).ok().map(|u| u.request_uri_form())
}

/// Where a SIP URI points: an IP literal host and port (5060, or 5061 for sips/TLS), and
/// whether it asks for a stream transport. `None` for names (no DNS here).
pub fn uri_address(uri: &Uri<'_>) -> Option<(SocketAddr, Transport)> {
    let host = uri.host_raw.trim_matches(['[', ']']);
    let ip: std::net::IpAddr = host.parse().ok()?;
    let transport = match uri.param("transport").flatten() {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
        _ if uri.scheme == crate::sip::Scheme::Sips => Transport::Tls,
        _ => Transport::Udp,
    };
    let default_port = if transport == Transport::Tls {
        5061
    } else {
        5060
    };
    Some((
        SocketAddr::new(ip, uri.port.unwrap_or(default_port)),
        transport,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_response_order_follows_section_16_7() {
        assert!(better(486, None));
        assert!(better(302, Some(486)), "3xx before 4xx");
        assert!(better(404, Some(503)), "4xx before 5xx");
        assert!(better(603, Some(302)), "6xx before anything");
        assert!(!better(480, Some(486)), "first of a class stays");
        assert!(!better(500, Some(603)));
    }

    fn proxy() -> Proxy {
        let config = crate::transaction::TransactionConfig::new(Duration::from_millis(500), 100)
            .expect("config");
        Proxy::new(
            Outbound::new(Vec::new(), crate::transport::Flows::default()),
            ProxyConfig {
                t1: Duration::from_millis(500),
                max_contexts: 10,
                realms: vec!["example.test".into()],
            },
            TransactionTable::new(config),
            Metrics::new(),
            None,
        )
    }

    #[test]
    fn flow_tokens_round_trip_and_refuse_forgeries() {
        let p = proxy();
        let token = p.flow_token(Some(FlowId(7)), None);
        assert_eq!(p.flows_of_token(&token), Some((Some(FlowId(7)), None)));
        // Another flow with the same MAC, a truncated MAC, extra parts: refused.
        let mac = token.rsplit('x').next().unwrap();
        assert_eq!(p.flows_of_token(&format!("f8x0x{mac}")), None);
        assert_eq!(p.flows_of_token(&token[..token.len() - 2]), None);
        assert_eq!(p.flows_of_token(&format!("{token}x1")), None);
        assert_eq!(p.flows_of_token("alice"), None);
        // Another process (another key) cannot read ours.
        assert_eq!(proxy().flows_of_token(&token), None);
    }

    #[test]
    fn uri_addresses() {
        let u = Uri::parse("sip:bob@127.0.0.1:5999;transport=tcp").unwrap();
        assert_eq!(
            uri_address(&u),
            Some(("127.0.0.1:5999".parse().unwrap(), Transport::Tcp))
        );
        let u = Uri::parse("sips:bob@[::1]").unwrap();
        assert_eq!(
            uri_address(&u),
            Some(("[::1]:5061".parse().unwrap(), Transport::Tls))
        );
        assert_eq!(
            uri_address(&Uri::parse("sip:bob@example.test").unwrap()),
            None
        );
    }
}
