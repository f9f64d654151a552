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

use std::time::Instant;

use super::{transaction_key, udp_reply_addr, Dispatcher, Response};
use crate::proxy::{self, Branch, Inbound, Routing, Started};
use crate::sip::{HeaderName, Message, Method, Uri};
use crate::transport::{FlowId, Source, Target, Transport};

impl Dispatcher {
    /// The target of responses to a request from `src`.
    fn upstream(&self, msg: &Message, src: &Source) -> Option<Target> {
        match (src.transport, src.flow) {
            (Transport::Udp, _) => Some(Target::Udp(udp_reply_addr(msg, src))),
            (_, Some(flow)) => Some(Target::Flow(flow)),
            (_, None) => None,
        }
    }

    fn inbound(&self, msg: &Message, src: &Source) -> Option<Inbound> {
        Some(Inbound {
            upstream: self.upstream(msg, src)?,
            transport: src.transport,
            local: src.local,
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
        let has_to_tag = msg.to().ok().and_then(|t| t.tag()).is_some();
        if has_to_tag {
            if let Some(answer) = self.in_dialog(msg, src, now) {
                return answer;
            }
        }
        // A phone configured with us as its outbound proxy pre-loads our Route (RFC 3261
        // §16.4: remove it). A Route to anyone else after ours is relaying, which we refuse.
        let (ours, more) = self.our_routes(msg);
        if more {
            return Some(self.respond(msg, src, 403, "Relaying Not Allowed", &[]));
        }
        self.request_for_user(msg, ruri, src, ours, now)
    }

    /// How many Route values on top name us, and whether others follow.
    fn our_routes(&self, msg: &Message) -> (usize, bool) {
        let mut ours = 0;
        for route in msg.route_set(HeaderName::Route) {
            match route {
                Ok(r) if self.is_our_route(&r.uri) => ours += 1,
                _ => return (ours, true),
            }
        }
        (ours, false)
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
        let out = i.proxy.outbound();
        let branches: Vec<Branch<'_>> = bindings
            .iter()
            .zip(&paths)
            .filter_map(|(b, path)| {
                let target = match (path.first(), b.transport, b.flow) {
                    // RFC 3327: a stored Path is the route set; the first hop is its first
                    // entry (the edge proxy), reached over an open connection or UDP.
                    (Some(first), _, _) => {
                        let hop = crate::sip::NameAddr::parse(first).ok()?;
                        let (addr, transport) = proxy::uri_address(&hop.uri)?;
                        match (out.flows().by_peer(addr), transport) {
                            (Some(flow), _) => Target::Flow(flow),
                            (None, Transport::Udp) => Target::Udp(addr),
                            (None, _) => return None,
                        }
                    }
                    (None, _, Some(flow)) => Target::Flow(flow),
                    // NAT: send where the REGISTER came from, not to the Contact's address.
                    (None, Transport::Udp, None) => Target::Udp(b.source),
                    // A stream binding whose connection is gone: nothing to send on.
                    (None, _, None) => return None,
                };
                Some(Branch {
                    target,
                    request_uri: Some(b.uri()),
                    route: path.clone(),
                })
            })
            .collect();
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
        if msg.method() == Some(Method::Invite) {
            // 100 Trying leaves before the INVITE is forwarded, so that no relayed
            // provisional can overtake it; the server transaction replays it to
            // retransmissions.
            let trying = self.respond(msg, src, 100, "Trying", &[]);
            let _ = i
                .transactions
                .on_response(&key, trying.bytes.clone(), 100, now);
            i.proxy.outbound().send(inbound.upstream, trying.bytes);
        }
        match i.proxy.start(msg, inbound, key, branches, routing, now) {
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

    /// RFC 3261 §16.4 strict-routing interop: a strict router upstream put our Record-Route
    /// URI in the Request-URI and the real target last in Route. That target becomes the
    /// Request-URI again and leaves the Route set; the request goes to the other side of
    /// the flow token, or to that target. `None` if the Request-URI is not ours.
    fn strict_routed(
        &self,
        msg: &Message,
        ruri: &Uri<'_>,
        src: &Source,
        now: Instant,
    ) -> Option<Option<Response>> {
        match self.strict_next_hop(msg, ruri, src)? {
            Err((status, reason)) => Some(Some(self.respond(msg, src, status, reason, &[]))),
            Ok((target, uri)) => {
                let branch = Branch {
                    target,
                    request_uri: Some(&uri),
                    route: Vec::new(),
                };
                let routing = Routing {
                    pop_last_route: true,
                    ..Routing::default()
                };
                Some(self.forward_and_answer(msg, src, &[branch], routing, now))
            }
        }
    }

    /// Where a strict-routed request goes, and its restored Request-URI; `None` if the
    /// Request-URI is not one of our Record-Route URIs.
    #[allow(clippy::type_complexity)]
    fn strict_next_hop(
        &self,
        msg: &Message,
        ruri: &Uri<'_>,
        src: &Source,
    ) -> Option<Result<(Target, String), (u16, &'static str)>> {
        let proxy = &self.inner.proxy;
        let (a, b) = ruri
            .user
            .filter(|_| self.is_our_route(ruri))
            .and_then(|u| proxy.flows_of_token(u))?;
        let routes: Vec<_> = msg.route_set(HeaderName::Route).collect();
        let Some(Ok(last)) = routes.last() else {
            return Some(Err((400, "Bad Route")));
        };
        let out = proxy.outbound();
        let target = match other_side(src, a, b) {
            Some(flow) if out.flows().info(flow).is_some() => Target::Flow(flow),
            Some(_) => return Some(Err((430, "Flow Failed"))),
            None => match proxy::uri_address(&last.uri) {
                Some((addr, _)) => out
                    .flows()
                    .by_peer(addr)
                    .map_or(Target::Udp(addr), Target::Flow),
                None => return Some(Err((480, "Temporarily Unavailable"))),
            },
        };
        Some(Ok((target, last.uri.raw.to_owned())))
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
        if msg.to().ok().and_then(|t| t.tag()).is_none() {
            return false;
        }
        if let Ok(ruri) = Uri::parse(msg.request_uri().unwrap_or("")) {
            if let Some(strict) = self.strict_next_hop(msg, &ruri, src) {
                return match strict {
                    Ok((target, uri)) => self.inner.proxy.forward_stateless(
                        msg,
                        target,
                        Some(&uri),
                        Routing {
                            pop_last_route: true,
                            ..Routing::default()
                        },
                    ),
                    Err(_) => false,
                };
            }
        }
        match self.next_hop(msg, src) {
            Some(Ok((target, pop))) => self.inner.proxy.forward_stateless(
                msg,
                target,
                None,
                Routing {
                    pop_routes: pop,
                    ..Routing::default()
                },
            ),
            _ => false,
        }
    }

    /// An in-dialog request: `None` if it is not routed through us (our Route is not on
    /// top), else the answer (`Some(None)` when forwarded).
    fn in_dialog(&self, msg: &Message, src: &Source, now: Instant) -> Option<Option<Response>> {
        match self.next_hop(msg, src)? {
            Err((status, reason)) => Some(Some(self.respond(msg, src, status, reason, &[]))),
            Ok((target, pop)) => {
                if msg.max_forwards().ok().flatten() == Some(0) {
                    return Some(Some(self.respond(msg, src, 483, "Too Many Hops", &[])));
                }
                let branch = Branch {
                    target,
                    request_uri: None,
                    route: Vec::new(),
                };
                let routing = Routing {
                    pop_routes: pop,
                    record_route: false,
                    pop_last_route: false,
                };
                Some(self.forward_and_answer(msg, src, &[branch], routing, now))
            }
        }
    }

    /// Loose routing (RFC 3261 §16.4, §16.12): our Route entries on top are removed; the
    /// next hop is the other side of the Record-Route flow token, else the next Route or
    /// the Request-URI. `None` when our Route is not on top; `Err` with a status when the
    /// next hop cannot be reached.
    #[allow(clippy::type_complexity)]
    fn next_hop(
        &self,
        msg: &Message,
        src: &Source,
    ) -> Option<Result<(Target, usize), (u16, &'static str)>> {
        let mut pop = 0;
        let mut flows = None;
        let mut next: Option<String> = None;
        for route in msg.route_set(HeaderName::Route) {
            let Ok(route) = route else {
                return Some(Err((400, "Bad Route")));
            };
            if self.is_our_route(&route.uri) {
                pop += 1;
                if let Some(f) = route
                    .uri
                    .user
                    .and_then(|u| self.inner.proxy.flows_of_token(u))
                {
                    flows = Some(f);
                }
                continue;
            }
            next = Some(route.uri.raw.to_owned());
            break;
        }
        if pop == 0 {
            return None;
        }
        let out = self.inner.proxy.outbound();
        if let Some((a, b)) = flows {
            if let Some(flow) = other_side(src, a, b) {
                if out.flows().info(flow).is_none() {
                    return Some(Err((430, "Flow Failed")));
                }
                return Some(Ok((Target::Flow(flow), pop)));
            }
        }
        let hop_text = next.unwrap_or_else(|| msg.request_uri().unwrap_or("").to_owned());
        let Ok(hop) = Uri::parse(&hop_text) else {
            return Some(Err((400, "Bad Request-URI")));
        };
        let Some((addr, transport)) = proxy::uri_address(&hop) else {
            return Some(Err((480, "Temporarily Unavailable")));
        };
        if let Some(flow) = out.flows().by_peer(addr) {
            return Some(Ok((Target::Flow(flow), pop)));
        }
        match transport {
            Transport::Udp => Some(Ok((Target::Udp(addr), pop))),
            // No outbound connections are opened: a stream next hop must be connected.
            Transport::Tcp | Transport::Tls => Some(Err((430, "Flow Failed"))),
        }
    }

    /// A Route URI naming one of our listening addresses.
    fn is_our_route(&self, uri: &Uri<'_>) -> bool {
        let Some((addr, _)) = proxy::uri_address(uri) else {
            return false;
        };
        self.inner
            .names
            .local_addrs()
            .iter()
            .any(|l| *l == addr || (l.port() == addr.port() && l.ip().is_unspecified()))
    }
}

/// The flow of a Record-Route token that is not the one the request came in on: the
/// callee's connection for a request from the caller and the other way round; `None` when
/// that side is UDP (or the request came over a connection the token does not name).
fn other_side(src: &Source, a: Option<FlowId>, b: Option<FlowId>) -> Option<FlowId> {
    match src.flow {
        Some(f) if Some(f) == a => b,
        Some(f) if Some(f) == b => a,
        Some(_) => None,
        None => a.or(b),
    }
}
