//! Routing decisions, as pure functions that return a typed [`NextHop`] (or a branch
//! [`Target`]): which Route entries are ours, loose routing (RFC 3261 §16.4, §16.12), strict
//! routing interop, the other side of a Record-Route flow token, and the first hop of a
//! binding. What they need from the transport (which flows are open, the flow of a peer) is
//! passed in as a [`FlowLookup`]; they send nothing and hold no state.

use std::net::SocketAddr;

use super::keys::Keys;
use super::names::OurNames;
use super::Routing;
use crate::sip::{HeaderName, Message, Uri};
use crate::transport::{FlowId, Flows, Target, Transport};

/// What routing needs to know about open stream connections.
pub trait FlowLookup {
    /// Whether the connection is still open.
    fn is_open(&self, flow: FlowId) -> bool;
    /// The open connection whose peer is `peer`, if any.
    fn by_peer(&self, peer: SocketAddr) -> Option<FlowId>;
}

impl FlowLookup for Flows {
    fn is_open(&self, flow: FlowId) -> bool {
        self.info(flow).is_some()
    }

    fn by_peer(&self, peer: SocketAddr) -> Option<FlowId> {
        Flows::by_peer(self, peer)
    }
}

/// Where a request routed by its Route set (or its Request-URI) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// Not routed through us (our Route is not on top, or the Request-URI is not one of
    /// our Record-Route URIs).
    NotOurs,
    /// Forward it on one branch.
    Forward(Hop),
    /// Answer it with this status instead.
    Refuse(Refusal),
}

/// One branch for a routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub target: Target,
    /// The Request-URI to put back (strict routing), or `None` to keep it.
    pub request_uri: Option<String>,
    pub routing: Routing,
}

/// A status and reason phrase for a request that cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const BAD_ROUTE: Refusal = Refusal {
    status: 400,
    reason: "Bad Route",
};
const FLOW_FAILED: Refusal = Refusal {
    status: 430,
    reason: "Flow Failed",
};
const UNAVAILABLE: Refusal = Refusal {
    status: 480,
    reason: "Temporarily Unavailable",
};

/// How many Route values on top name us, and whether others follow (a phone configured with
/// us as its outbound proxy pre-loads ours; anything after it is relaying).
pub(crate) fn our_routes(msg: &Message, us: &OurNames) -> (usize, bool) {
    let mut ours = 0;
    for route in msg.route_set(HeaderName::Route) {
        match route {
            Ok(r) if us.is_us(&r.uri) => ours += 1,
            _ => return (ours, true),
        }
    }
    (ours, false)
}

/// Loose routing (RFC 3261 §16.4, §16.12) of a request that came in on `src_flow` (`None`:
/// UDP): our Route entries on top are removed; the next hop is the other side of the
/// Record-Route flow token, else the next Route or the Request-URI. [`NextHop::NotOurs`]
/// when our Route is not on top.
pub(crate) fn loose_route(
    msg: &Message,
    src_flow: Option<FlowId>,
    us: &OurNames,
    keys: &Keys,
    flows: &impl FlowLookup,
) -> NextHop {
    let mut pop = 0;
    let mut token = None;
    let mut next: Option<String> = None;
    for route in msg.route_set(HeaderName::Route) {
        let Ok(route) = route else {
            return NextHop::Refuse(BAD_ROUTE);
        };
        if us.is_us(&route.uri) {
            pop += 1;
            if let Some(f) = route.uri.user.and_then(|u| keys.flows_of_token(u)) {
                token = Some(f);
            }
            continue;
        }
        next = Some(route.uri.raw.to_owned());
        break;
    }
    if pop == 0 {
        return NextHop::NotOurs;
    }
    let hop = |target| {
        NextHop::Forward(Hop {
            target,
            request_uri: None,
            routing: Routing {
                pop_routes: pop,
                ..Routing::default()
            },
        })
    };
    if let Some((a, b)) = token {
        if let Some(flow) = other_side(src_flow, a, b) {
            if !flows.is_open(flow) {
                return NextHop::Refuse(FLOW_FAILED);
            }
            return hop(Target::Flow(flow));
        }
    }
    let hop_text = next.unwrap_or_else(|| msg.request_uri().unwrap_or("").to_owned());
    let Ok(uri) = Uri::parse(&hop_text) else {
        return NextHop::Refuse(Refusal {
            status: 400,
            reason: "Bad Request-URI",
        });
    };
    let Some((addr, transport)) = uri_address(&uri) else {
        return NextHop::Refuse(UNAVAILABLE);
    };
    if let Some(flow) = flows.by_peer(addr) {
        return hop(Target::Flow(flow));
    }
    match transport {
        Transport::Udp => hop(Target::Udp(addr)),
        // No outbound connections are opened: a stream next hop must be connected.
        _ => NextHop::Refuse(FLOW_FAILED),
    }
}

/// RFC 3261 §16.4 strict-routing interop: a strict router upstream put our Record-Route URI
/// in the Request-URI `ruri` and the real target last in Route. That target becomes the
/// Request-URI again and leaves the Route set; the request goes to the other side of the
/// flow token, or to that target. [`NextHop::NotOurs`] if the Request-URI is not ours.
pub(crate) fn strict_route(
    msg: &Message,
    ruri: &Uri<'_>,
    src_flow: Option<FlowId>,
    us: &OurNames,
    keys: &Keys,
    flows: &impl FlowLookup,
) -> NextHop {
    let Some((a, b)) = ruri
        .user
        .filter(|_| us.is_us(ruri))
        .and_then(|u| keys.flows_of_token(u))
    else {
        return NextHop::NotOurs;
    };
    let routes: Vec<_> = msg.route_set(HeaderName::Route).collect();
    let Some(Ok(last)) = routes.last() else {
        return NextHop::Refuse(BAD_ROUTE);
    };
    let target = match other_side(src_flow, a, b) {
        Some(flow) if flows.is_open(flow) => Target::Flow(flow),
        Some(_) => return NextHop::Refuse(FLOW_FAILED),
        None => match uri_address(&last.uri) {
            Some((addr, _)) => flows.by_peer(addr).map_or(Target::Udp(addr), Target::Flow),
            None => return NextHop::Refuse(UNAVAILABLE),
        },
    };
    NextHop::Forward(Hop {
        target,
        request_uri: Some(last.uri.raw.to_owned()),
        routing: Routing {
            pop_last_route: true,
            ..Routing::default()
        },
    })
}

/// Where a branch to a binding goes: RFC 3327, a stored Path (`path_first`, its first entry)
/// is the route set and its first entry (the edge proxy) the first hop, over an open
/// connection or UDP; else the flow the binding registered on; else, over UDP, the address
/// the REGISTER came from (`source`, NAT), not the Contact's address. `None` when there is
/// nothing to send on (a stream binding or stream edge proxy whose connection is gone).
pub(crate) fn binding_target(
    path_first: Option<&str>,
    transport: Transport,
    flow: Option<FlowId>,
    source: SocketAddr,
    flows: &impl FlowLookup,
) -> Option<Target> {
    match (path_first, transport, flow) {
        (Some(first), _, _) => {
            let hop = crate::sip::NameAddr::parse(first).ok()?;
            let (addr, transport) = uri_address(&hop.uri)?;
            match (flows.by_peer(addr), transport) {
                (Some(flow), _) => Some(Target::Flow(flow)),
                (None, Transport::Udp) => Some(Target::Udp(addr)),
                (None, _) => None,
            }
        }
        (None, _, Some(flow)) => Some(Target::Flow(flow)),
        (None, Transport::Udp, None) => Some(Target::Udp(source)),
        (None, _, None) => None,
    }
}

/// The flow of a Record-Route token that is not the one the request came in on: the
/// callee's connection for a request from the caller and the other way round; `None` when
/// that side is UDP (or the request came over a connection the token does not name).
fn other_side(src_flow: Option<FlowId>, a: Option<FlowId>, b: Option<FlowId>) -> Option<FlowId> {
    match src_flow {
        Some(f) if Some(f) == a => b,
        Some(f) if Some(f) == b => a,
        Some(_) => None,
        None => a.or(b),
    }
}

/// Where a SIP URI points: an IP literal host and port (5060, or 5061 for sips/TLS), and
/// whether it asks for a stream transport. `None` for names (no DNS here).
pub fn uri_address(uri: &Uri<'_>) -> Option<(SocketAddr, Transport)> {
    let host = uri.host_raw.trim_matches(['[', ']']);
    let ip: std::net::IpAddr = host.parse().ok()?;
    let transport = match uri.param("transport").flatten() {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
        Some(t) if t.eq_ignore_ascii_case("ws") => Transport::Ws,
        Some(t) if t.eq_ignore_ascii_case("wss") => Transport::Wss,
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
    use std::collections::HashMap;

    /// Open connections by peer address.
    #[derive(Default)]
    struct FakeFlows(HashMap<SocketAddr, FlowId>);

    impl FlowLookup for FakeFlows {
        fn is_open(&self, flow: FlowId) -> bool {
            self.0.values().any(|f| *f == flow)
        }
        fn by_peer(&self, peer: SocketAddr) -> Option<FlowId> {
            self.0.get(&peer).copied()
        }
    }

    const US: &str = "192.0.2.1:5060";

    fn locals() -> OurNames {
        let listeners = [US.parse().unwrap()];
        OurNames::new(&super::super::names::NameSources {
            listeners: &listeners,
            ..Default::default()
        })
    }

    fn request(ruri: &str, routes: &[&str]) -> Message {
        let mut text = format!(
            "BYE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKx1\r\n"
        );
        for r in routes {
            text.push_str(&format!("Route: {r}\r\n"));
        }
        text.push_str(
            "Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a\r\n\
             To: <sip:bob@example.test>;tag=b\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\n\
             Content-Length: 0\r\n\r\n",
        );
        Message::parse(bytes::Bytes::from(text), &crate::sip::Limits::default()).unwrap()
    }

    fn forward_to(hop: &NextHop) -> Target {
        match hop {
            NextHop::Forward(h) => h.target,
            other => panic!("not forwarded: {other:?}"),
        }
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

    #[test]
    fn our_routes_count_ours_and_see_relaying() {
        let msg = request("sip:bob@example.test", &[&format!("<sip:{US};lr>")]);
        assert_eq!(our_routes(&msg, &locals()), (1, false));
        let msg = request(
            "sip:bob@example.test",
            &[&format!("<sip:{US};lr>"), "<sip:203.0.113.9;lr>"],
        );
        assert_eq!(our_routes(&msg, &locals()), (1, true));
        // Another address, or our address at another port, is relaying.
        let msg = request("sip:bob@example.test", &["<sip:192.0.2.1:5070;lr>"]);
        assert_eq!(our_routes(&msg, &locals()), (0, true));
    }

    #[test]
    fn loose_routing_follows_the_token_then_the_next_route_then_the_request_uri() {
        let keys = Keys::random();
        let mut flows = FakeFlows::default();
        let callee: SocketAddr = "198.51.100.20:5060".parse().unwrap();
        flows.0.insert(callee, FlowId(9));
        let token = keys.flow_token(None, Some(FlowId(9)));
        let ours = format!("<sip:{token}@{US};lr>");

        // From the UDP caller: the token's other side is the callee's connection.
        let msg = request("sip:bob@198.51.100.20", &[&ours]);
        let hop = loose_route(&msg, None, &locals(), &keys, &flows);
        assert_eq!(
            hop,
            NextHop::Forward(Hop {
                target: Target::Flow(FlowId(9)),
                request_uri: None,
                routing: Routing {
                    pop_routes: 1,
                    ..Routing::default()
                },
            })
        );
        // The callee's connection closed: 430.
        let hop = loose_route(&msg, None, &locals(), &keys, &FakeFlows::default());
        assert_eq!(hop, NextHop::Refuse(FLOW_FAILED));
        // From the callee's connection: the other side is UDP, so the Request-URI decides.
        let msg = request("sip:alice@203.0.113.5:5062", &[&ours]);
        let hop = loose_route(&msg, Some(FlowId(9)), &locals(), &keys, &flows);
        assert_eq!(
            forward_to(&hop),
            Target::Udp("203.0.113.5:5062".parse().unwrap())
        );
        // A next Route after ours wins over the Request-URI.
        let msg = request(
            "sip:alice@203.0.113.5",
            &[&format!("<sip:{US};lr>"), "<sip:203.0.113.77:5080;lr>"],
        );
        let hop = loose_route(&msg, None, &locals(), &keys, &flows);
        assert_eq!(
            forward_to(&hop),
            Target::Udp("203.0.113.77:5080".parse().unwrap())
        );
        // A stream next hop with no open connection: 430; a name: 480; our Route absent.
        let msg = request(
            "sip:a@203.0.113.5;transport=tcp",
            &[&format!("<sip:{US};lr>")],
        );
        let hop = loose_route(&msg, None, &locals(), &keys, &flows);
        assert_eq!(hop, NextHop::Refuse(FLOW_FAILED));
        let msg = request("sip:a@example.test", &[&format!("<sip:{US};lr>")]);
        let hop = loose_route(&msg, None, &locals(), &keys, &flows);
        assert_eq!(hop, NextHop::Refuse(UNAVAILABLE));
        let msg = request("sip:a@203.0.113.5", &["<sip:203.0.113.9;lr>"]);
        assert_eq!(
            loose_route(&msg, None, &locals(), &keys, &flows),
            NextHop::NotOurs
        );
    }

    #[test]
    fn strict_routing_restores_the_request_uri_from_the_last_route() {
        let keys = Keys::random();
        let token = keys.flow_token(None, None);
        let ruri_text = format!("sip:{token}@{US}");
        let ruri = Uri::parse(&ruri_text).unwrap();
        let msg = request(&ruri_text, &["<sip:bob@203.0.113.8:5090>"]);
        let hop = strict_route(&msg, &ruri, None, &locals(), &keys, &FakeFlows::default());
        assert_eq!(
            hop,
            NextHop::Forward(Hop {
                target: Target::Udp("203.0.113.8:5090".parse().unwrap()),
                request_uri: Some("sip:bob@203.0.113.8:5090".into()),
                routing: Routing {
                    pop_last_route: true,
                    ..Routing::default()
                },
            })
        );
        // No Route to restore: 400. A forged token, or another host: not ours.
        let msg = request(&ruri_text, &[]);
        let hop = strict_route(&msg, &ruri, None, &locals(), &keys, &FakeFlows::default());
        assert_eq!(hop, NextHop::Refuse(BAD_ROUTE));
        let other = Keys::random();
        let hop = strict_route(&msg, &ruri, None, &locals(), &other, &FakeFlows::default());
        assert_eq!(hop, NextHop::NotOurs);
    }

    #[test]
    fn binding_targets() {
        let mut flows = FakeFlows::default();
        let edge: SocketAddr = "198.51.100.30:5060".parse().unwrap();
        let source: SocketAddr = "203.0.113.40:40000".parse().unwrap();
        let target = |path, transport, flow, flows: &FakeFlows| {
            binding_target(path, transport, flow, source, flows)
        };
        // A Path's first entry over UDP, or over its open connection.
        let path = Some("<sip:198.51.100.30;lr>");
        assert_eq!(
            target(path, Transport::Tcp, None, &flows),
            Some(Target::Udp(edge))
        );
        flows.0.insert(edge, FlowId(3));
        assert_eq!(
            target(path, Transport::Tcp, None, &flows),
            Some(Target::Flow(FlowId(3)))
        );
        let tcp_path = Some("<sip:198.51.100.31;transport=tcp;lr>");
        assert_eq!(target(tcp_path, Transport::Udp, None, &flows), None);
        // No Path: the registered flow, or the UDP source (NAT); a closed stream: nothing.
        assert_eq!(
            target(None, Transport::Tcp, Some(FlowId(5)), &flows),
            Some(Target::Flow(FlowId(5)))
        );
        assert_eq!(
            target(None, Transport::Udp, None, &flows),
            Some(Target::Udp(source))
        );
        assert_eq!(target(None, Transport::Tls, None, &flows), None);
    }
}
