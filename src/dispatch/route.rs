//! Requests that are not for the registrar: the proxy's side of dispatch.
//!
//! Order for a request that is not in a dialog (RFC 3261 §16.3, and docs/testing.md E5): our
//! domain (else 403), Max-Forwards (483), loop (482), Proxy-Require (420), authentication
//! (407, or the TLS client certificate's identity), the From identity must be the
//! authenticated user (403), and only then the callee: unknown user 404, no bindings 480,
//! else the request is forked to every binding, each over the flow it registered on (or its
//! UDP source address), with the binding's Path as Route set.
//!
//! In-dialog requests (a To tag and our Route on top) skip authentication: our Route entries
//! are removed and the request goes where the Record-Route flow token, the next Route or the
//! Request-URI points. A CANCEL cancels the matching forwarded INVITE.
//!
//! Where a request goes is the proxy's decision (`proxy/routing.rs`: our Route entries, loose
//! and strict routing, a binding's first hop, each a typed `NextHop` or `Target`); this file
//! runs the checks and authentication, looks the callee up, and hands over.

use std::time::Instant;

use super::{transaction_key, udp_reply_addr, Dispatcher, Response};
use crate::proxy::{Branch, Forward, Hop, Inbound, NextHop, Routing, Started};
use crate::sip::{HeaderName, Message, Method, Uri};
use crate::transport::{Source, Target, Transport};

impl Dispatcher {
    /// The target of responses to a request from `src`.
    fn upstream(&self, msg: &Message, src: &Source) -> Option<Target> {
        match (src.transport, src.flow) {
            (Transport::Udp, _) => Some(Target::UdpReply {
                to: udp_reply_addr(msg, src),
                local: src.local,
            }),
            (_, Some(flow)) => Some(Target::Flow(flow)),
            (_, None) => None,
        }
    }

    fn inbound(&self, msg: &Message, src: &Source) -> Option<Inbound> {
        Some(Inbound {
            upstream: self.upstream(msg, src)?,
            transport: src.transport,
            local: self.inner.proxy.sent_by(src.transport, src.local),
            peer: src.peer,
            flow: src.flow,
        })
    }

    /// Any request other than REGISTER, CANCEL and OPTIONS-to-us.
    pub(super) fn proxied(
        &self,
        msg: &Message,
        ruri: &Uri<'_>,
        src: &Source,
        now: Instant,
    ) -> Option<Response> {
        if let Some(answer) = self.strict_routed(msg, ruri, src, now) {
            return answer;
        }
        let has_to_tag = msg.to_tag().is_some();
        if has_to_tag {
            if let Some(answer) = self.in_dialog(msg, src, now) {
                return answer;
            }
        }
        // A phone configured with us as its outbound proxy pre-loads our Route (RFC 3261
        // §16.4: remove it). A Route to anyone else after ours is relaying, which we refuse.
        let (ours, more) = self.inner.proxy.our_routes(msg);
        if more {
            return Some(self.respond(msg, src, 403, "Relaying Not Allowed", &[]));
        }
        if let Some(answer) = self.routed_by_peer_node(msg, src, ours, now) {
            return answer;
        }
        self.request_for_user(msg, ruri, src, ours, now)
    }

    /// A request another node routed here for one of this node's connection-bound bindings
    /// (our Route on top carries `registrar::PEER_BINDING_PARAM`, the binding's id here): from
    /// a `redis.peers` address it is already authenticated (the other node did), so it goes
    /// straight down the binding's connection; the binding gone → 480. `None`: not such a
    /// request (from anyone else the parameter means nothing, and the request is handled as
    /// any other, authentication included).
    fn routed_by_peer_node(
        &self,
        msg: &Message,
        src: &Source,
        our_routes: usize,
        now: Instant,
    ) -> Option<Option<Response>> {
        let i = &self.inner;
        if our_routes == 0 || !i.registrar.peer_nodes.contains(&src.peer.ip()) {
            return None;
        }
        let top = msg.values(HeaderName::Route).next()?;
        let hop = crate::sip::NameAddr::parse(top).ok()?;
        let id: u64 = hop
            .uri
            .param(crate::registrar::PEER_BINDING_PARAM)??
            .parse()
            .ok()?;
        if msg.max_forwards().ok().flatten() == Some(0) {
            return Some(Some(self.respond(msg, src, 483, "Too Many Hops", &[])));
        }
        if i.proxy.is_loop(msg) {
            return Some(Some(self.respond(msg, src, 482, "Loop Detected", &[])));
        }
        let to = msg.to().ok().and_then(|t| t.uri.aor());
        let binding = to.and_then(|aor| {
            i.registrar
                .location
                .lookup(&aor, now)
                .into_iter()
                .find(|b| b.id == id && b.flow.is_some())
        });
        let target = binding
            .as_ref()
            .and_then(|b| i.proxy.binding_target(None, b.transport, b.flow, b.source));
        let (Some(b), Some(target)) = (&binding, target) else {
            return Some(Some(self.respond(
                msg,
                src,
                480,
                "Temporarily Unavailable",
                &[],
            )));
        };
        let branch = Branch {
            target,
            request_uri: Some(b.uri()),
            route: Vec::new(),
        };
        let routing = Routing {
            pop_routes: our_routes,
            record_route: true,
            pop_last_route: false,
        };
        Some(self.forward_and_answer(msg, src, &[branch], routing, now))
    }

    /// Requests for our users: authenticate first (E5: nothing about the callee is looked
    /// up before that), then fork to the callee's bindings.
    fn request_for_user(
        &self,
        msg: &Message,
        ruri: &Uri<'_>,
        src: &Source,
        our_routes: usize,
        now: Instant,
    ) -> Option<Response> {
        let i = &self.inner;
        let Some(domain) = self.domain_of(ruri) else {
            return Some(self.respond(msg, src, 403, "Domain Not Served", &[]));
        };
        if msg.max_forwards().ok().flatten() == Some(0) {
            return Some(self.respond(msg, src, 483, "Too Many Hops", &[]));
        }
        if i.proxy.is_loop(msg) {
            return Some(self.respond(msg, src, 482, "Loop Detected", &[]));
        }
        let unsupported: Vec<&str> = msg
            .option_tags(HeaderName::ProxyRequire)
            .filter(|t| !super::SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            return Some(self.respond(msg, src, 420, "Bad Extension", &[("Unsupported", &list)]));
        }
        let from_aor = msg.from().ok().and_then(|f| f.uri.aor());
        let by_certificate = match (&src.identity, &from_aor) {
            (Some(id), Some(aor)) => id.permits(aor),
            _ => false,
        };
        if !by_certificate {
            let identity =
                match self.authenticate(msg, &domain, src, now, super::digest::Role::Proxy) {
                    super::digest::AuthStep::Authenticated(identity) => identity,
                    super::digest::AuthStep::Reply(r) => return r,
                };
            if from_aor.as_deref() != Some(&*identity.aor) {
                return Some(self.respond(msg, src, 403, "Forbidden", &[]));
            }
        }
        let user = ruri.user.unwrap_or("");
        let callee = ruri.aor();
        // A user exists as a static account or as the AoR of a token API device.
        let Some(callee) = callee.filter(|c| i.credentials.user_exists(user, &domain, c)) else {
            return Some(self.respond(msg, src, 404, "Not Found", &[]));
        };
        let bindings = i.registrar.location.lookup(&callee, now);
        if bindings.is_empty() {
            return Some(self.respond(msg, src, 480, "Temporarily Unavailable", &[]));
        }
        let paths: Vec<Vec<&str>> = bindings
            .iter()
            .map(|b| b.path().iter().map(|p| &**p).collect())
            .collect();
        let branches: Vec<Branch<'_>> = bindings
            .iter()
            .zip(&paths)
            .filter_map(|(b, path)| {
                let first = path.first().copied();
                let target = i
                    .proxy
                    .binding_target(first, b.transport, b.flow, b.source)?;
                Some(Branch {
                    target,
                    request_uri: Some(b.uri()),
                    route: path.clone(),
                })
            })
            .collect();
        if branches.is_empty()
            && bindings
                .iter()
                .all(|b| b.instance().is_some() && b.reg_id.is_some())
        {
            // RFC 5626 §5.3: every binding is an outbound one whose flow is gone (its
            // connection closed, or it was restored after a restart and the phone has not
            // come back over a new connection yet).
            let method = crate::metrics::method_label(msg.method());
            i.responder.metrics.proxied(method, "no_route");
            return Some(self.respond(msg, src, 430, "Flow Failed", &[]));
        }
        let routing = Routing {
            pop_routes: our_routes,
            record_route: true,
            pop_last_route: false,
        };
        self.forward_and_answer(msg, src, &branches, routing, now)
    }

    /// Hands a request to the proxy and answers what the proxy cannot: 100 Trying for an
    /// INVITE (sent first), 480 / 503 when nothing could be forwarded.
    fn forward_and_answer(
        &self,
        msg: &Message,
        src: &Source,
        branches: &[Branch<'_>],
        routing: Routing,
        now: Instant,
    ) -> Option<Response> {
        let i = &self.inner;
        let method = crate::metrics::method_label(msg.method());
        let (Some(inbound), Some(key)) = (self.inbound(msg, src), transaction_key(msg)) else {
            return Some(self.respond(msg, src, 400, "Bad Request", &[]));
        };
        let trying = (msg.method() == Some(Method::Invite)).then(|| {
            // 100 Trying leaves before the INVITE is forwarded, so that no relayed
            // provisional can overtake it; the server transaction replays it to
            // retransmissions.
            let trying = self.respond(msg, src, 100, "Trying", &[]);
            let _ = i
                .transactions
                .on_response(&key, trying.bytes.clone(), 100, now);
            trying.bytes
        });
        let fwd = Forward {
            msg,
            inbound,
            server_key: key,
            branches,
            routing,
            trying,
        };
        match i.proxy.start(fwd, now) {
            Started::Forwarded => None,
            Started::Overloaded => {
                i.responder.metrics.proxied(method, "overloaded");
                Some(self.respond(
                    msg,
                    src,
                    503,
                    "Service Unavailable",
                    &[("Retry-After", "5")],
                ))
            }
            Started::NoRoute => {
                i.responder.metrics.proxied(method, "no_route");
                Some(self.respond(msg, src, 480, "Temporarily Unavailable", &[]))
            }
        }
    }

    /// A strict-routed request (RFC 3261 §16.4: the Request-URI is one of our Record-Route
    /// URIs): forwarded where the proxy's strict routing says, or refused. `None` if the
    /// Request-URI is not ours.
    fn strict_routed(
        &self,
        msg: &Message,
        ruri: &Uri<'_>,
        src: &Source,
        now: Instant,
    ) -> Option<Option<Response>> {
        match self.inner.proxy.strict_route(msg, ruri, src.flow) {
            NextHop::NotOurs => None,
            NextHop::Refuse(r) => Some(Some(self.respond(msg, src, r.status, r.reason, &[]))),
            NextHop::Forward(hop) => Some(self.forward_hop(msg, src, &hop, now)),
        }
    }

    fn forward_hop(
        &self,
        msg: &Message,
        src: &Source,
        hop: &Hop,
        now: Instant,
    ) -> Option<Response> {
        let branch = Branch {
            target: hop.target,
            request_uri: hop.request_uri.as_deref(),
            route: Vec::new(),
        };
        self.forward_and_answer(msg, src, &[branch], hop.routing, now)
    }

    /// CANCEL (hop by hop): 200 and cancel the branches if it matches an INVITE we forwarded,
    /// else 481.
    pub(super) fn cancel(&self, msg: &Message, src: &Source, now: Instant) -> Response {
        match super::invite_key_of(msg) {
            Some(key) if self.inner.proxy.cancel(&key, now) => {
                self.respond(msg, src, 200, "OK", &[])
            }
            _ => self.respond(msg, src, 481, "Call/Transaction Does Not Exist", &[]),
        }
    }

    /// An ACK: forwarded statelessly if it is in a dialog routed through us; false if it
    /// ends here (absorbed).
    pub(super) fn ack_in_dialog(&self, msg: &Message, src: &Source) -> bool {
        if msg.to_tag().is_none() {
            return false;
        }
        let proxy = &self.inner.proxy;
        if let Ok(ruri) = Uri::parse(msg.request_uri().unwrap_or("")) {
            match proxy.strict_route(msg, &ruri, src.flow) {
                NextHop::NotOurs => {}
                NextHop::Forward(hop) => return proxy.forward_stateless(msg, &hop),
                NextHop::Refuse(_) => return false,
            }
        }
        match proxy.loose_route(msg, src.flow) {
            NextHop::Forward(hop) => proxy.forward_stateless(msg, &hop),
            _ => false,
        }
    }

    /// An in-dialog request: `None` if it is not routed through us (our Route is not on
    /// top), else the answer (`Some(None)` when forwarded).
    fn in_dialog(&self, msg: &Message, src: &Source, now: Instant) -> Option<Option<Response>> {
        match self.inner.proxy.loose_route(msg, src.flow) {
            NextHop::NotOurs => None,
            NextHop::Refuse(r) => Some(Some(self.respond(msg, src, r.status, r.reason, &[]))),
            NextHop::Forward(hop) => {
                if msg.max_forwards().ok().flatten() == Some(0) {
                    return Some(Some(self.respond(msg, src, 483, "Too Many Hops", &[])));
                }
                Some(self.forward_hop(msg, src, &hop, now))
            }
        }
    }
}
