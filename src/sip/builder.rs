//! Writing messages: a response built from a request (RFC 3261 §8.2.6), and byte-faithful
//! forwarding edits for the proxy (§16.6): add or remove the top Via, add Record-Route,
//! decrement Max-Forwards, rewrite the Request-URI, remove the top Route, leave out the
//! credentials for given realms. Every header we do not touch, and the body, is copied byte
//! for byte from the received buffer.
//!
//! It must not decide policy (which status, which Via): callers pass that in.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::digest::Credentials;
use super::header::HeaderName;
use super::message::Message;
use super::scan::split_commas;

/// Where the request really came from, for RFC 3261 §18.2.1 `received` and RFC 3581 `rport`.
#[derive(Debug, Clone, Copy)]
pub struct ViaReceived {
    pub addr: std::net::SocketAddr,
}

/// A response under construction. Extra headers are written in the order added, after the
/// copied ones and before Server and Content-Length, so replies are byte-stable.
#[derive(Debug)]
pub struct ResponseBuilder<'a> {
    req: &'a Message,
    status: u16,
    reason: &'a str,
    to_tag: Option<&'a str>,
    received: Option<ViaReceived>,
    extra: BytesMut,
    server: Option<&'a str>,
    body: Option<(&'a str, &'a [u8])>,
}

impl<'a> ResponseBuilder<'a> {
    pub fn new(req: &'a Message, status: u16, reason: &'a str) -> ResponseBuilder<'a> {
        ResponseBuilder {
            req,
            status,
            reason,
            to_tag: None,
            received: None,
            // Room for the usual extra headers (Contact, Expires, WWW-Authenticate, Date)
            // without growing: growth was a measurable share of building a response.
            extra: BytesMut::with_capacity(384),
            server: None,
            body: None,
        }
    }

    /// Adds `;tag=` to To unless the request's To already has one.
    pub fn to_tag(mut self, tag: &'a str) -> Self {
        self.to_tag = Some(tag);
        self
    }

    /// Adds `received` (and fills an empty `rport`) on the top Via.
    pub fn received(mut self, r: ViaReceived) -> Self {
        self.received = Some(r);
        self
    }

    /// The Server header value; `None` or empty writes none.
    pub fn server(mut self, server: Option<&'a str>) -> Self {
        self.server = server.filter(|s| !s.is_empty());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.extra.put_slice(name.as_bytes());
        self.extra.put_slice(b": ");
        self.extra.put_slice(value.as_bytes());
        self.extra.put_slice(b"\r\n");
        self
    }

    pub fn body(mut self, content_type: &'a str, body: &'a [u8]) -> Self {
        self.body = Some((content_type, body));
        self
    }

    pub fn build(self) -> Bytes {
        let req = self.req;
        let mut out = BytesMut::with_capacity(512 + self.extra.len());
        let mut line = String::with_capacity(64);
        let _ = write!(line, "SIP/2.0 {} {}\r\n", self.status, self.reason);
        out.put_slice(line.as_bytes());
        let mut first_via = true;
        for h in req.headers() {
            match h.kind {
                HeaderName::Via => {
                    out.put_slice(b"Via: ");
                    let value = req.text(h.value);
                    if first_via {
                        first_via = false;
                        write_top_via(&mut out, value, self.received);
                    } else {
                        out.put_slice(value.as_bytes());
                    }
                    out.put_slice(b"\r\n");
                }
                HeaderName::To => {
                    out.put_slice(b"To: ");
                    out.put_slice(req.text(h.value).as_bytes());
                    if let Some(tag) = self.to_tag {
                        if req.to().map(|t| t.tag().is_none()).unwrap_or(true) {
                            out.put_slice(b";tag=");
                            out.put_slice(tag.as_bytes());
                        }
                    }
                    out.put_slice(b"\r\n");
                }
                HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    out.put_slice(h.kind.as_str().as_bytes());
                    out.put_slice(b": ");
                    out.put_slice(req.text(h.value).as_bytes());
                    out.put_slice(b"\r\n");
                }
                _ => {}
            }
        }
        out.put_slice(&self.extra);
        if let Some(server) = self.server {
            out.put_slice(b"Server: ");
            out.put_slice(server.as_bytes());
            out.put_slice(b"\r\n");
        }
        let (ct, body) = self.body.unwrap_or(("", b""));
        if !ct.is_empty() {
            out.put_slice(b"Content-Type: ");
            out.put_slice(ct.as_bytes());
            out.put_slice(b"\r\n");
        }
        line.clear();
        let _ = write!(line, "Content-Length: {}\r\n\r\n", body.len());
        out.put_slice(line.as_bytes());
        out.put_slice(body);
        out.freeze()
    }
}

/// Writes the first Via value of a header line with `received`/`rport` filled in, then the
/// other values of that line unchanged.
fn write_top_via(out: &mut BytesMut, line_value: &str, received: Option<ViaReceived>) {
    let mut parts = split_commas(line_value);
    let first = match parts.next() {
        Some(Ok(v)) => v,
        _ => {
            out.put_slice(line_value.as_bytes());
            return;
        }
    };
    let rest = &line_value[line_value
        .find(first)
        .map(|p| p + first.len())
        .unwrap_or(line_value.len())..];
    match (received, super::views::Via::parse(first)) {
        (Some(r), Ok(via)) => {
            let params_start = first.len() - via.params.as_str().len();
            out.put_slice(&first.as_bytes()[..params_start]);
            let mut wrote_rport = false;
            for p in via.params.clone().filter_map(Result::ok) {
                if p.name.eq_ignore_ascii_case("received") {
                    continue;
                }
                out.put_u8(b';');
                out.put_slice(p.name.as_bytes());
                if p.name.eq_ignore_ascii_case("rport") {
                    wrote_rport = true;
                    let _ = write!(ByteWriter(out), "={}", r.addr.port());
                } else if let Some(v) = p.value {
                    out.put_u8(b'=');
                    out.put_slice(v.as_bytes());
                }
            }
            let ip = r.addr.ip();
            if wrote_rport || via.host.trim_matches(['[', ']']) != ip.to_string() {
                let _ = write!(ByteWriter(out), ";received={ip}");
            }
        }
        _ => out.put_slice(first.as_bytes()),
    }
    out.put_slice(rest.as_bytes());
}

struct ByteWriter<'a>(&'a mut BytesMut);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// Edits a proxy applies when forwarding; everything else is copied byte for byte.
#[derive(Debug, Default, Clone)]
pub struct ForwardEdits<'a> {
    pub request_uri: Option<&'a str>,
    /// A new top Via value (requests).
    pub push_via: Option<&'a str>,
    /// Remove the top Via value (responses, which carry ours on top).
    pub pop_via: bool,
    /// Record-Route values to add on top, in order.
    pub record_route: &'a [&'a str],
    /// Decrement Max-Forwards (insert `Max-Forwards: 70` if absent), requests only.
    pub decrement_max_forwards: bool,
    /// Remove this many Route values from the top (loose routing past ourselves: one, or
    /// two after a double Record-Route).
    pub pop_routes: usize,
    /// Route values to put before every remaining one, in order (a stored Path).
    pub push_route: &'a [&'a str],
    /// Remove the last Route value (RFC 3261 §16.4: a strict router upstream put the real
    /// target there, and it becomes the Request-URI).
    pub pop_last_route: bool,
    /// Leave out `Authorization` and `Proxy-Authorization` lines holding a Digest credential
    /// for one of these realms (compared case-insensitively): RFC 3261 §22.3 lets a proxy
    /// remove the credentials meant for it. Other realms and schemes, and values that do
    /// not parse, are copied.
    pub consume_credentials_for: &'a [String],
}

/// Rewrites `msg` with `edits`; unknown headers, folding, and the body are untouched.
pub fn forward(msg: &Message, edits: &ForwardEdits<'_>) -> Bytes {
    let buf = msg.bytes();
    let mut out = BytesMut::with_capacity(msg.wire_len() + 256);
    let start = msg.start_line_span();
    match (edits.request_uri, msg.start_line()) {
        (Some(uri), super::message::StartLine::Request { method_span, .. }) => {
            out.put_slice(msg.text(method_span).as_bytes());
            out.put_u8(b' ');
            out.put_slice(uri.as_bytes());
            out.put_slice(b" SIP/2.0\r\n");
        }
        _ => out.put_slice(&buf[start.range()]),
    }
    if let Some(via) = edits.push_via {
        out.put_slice(b"Via: ");
        out.put_slice(via.as_bytes());
        out.put_slice(b"\r\n");
    }
    for rr in edits.record_route {
        out.put_slice(b"Record-Route: ");
        out.put_slice(rr.as_bytes());
        out.put_slice(b"\r\n");
    }
    for route in edits.push_route {
        out.put_slice(b"Route: ");
        out.put_slice(route.as_bytes());
        out.put_slice(b"\r\n");
    }
    let mut via_popped = !edits.pop_via;
    let mut routes_to_pop = edits.pop_routes;
    let last_route = if edits.pop_last_route {
        msg.headers()
            .iter()
            .rposition(|h| h.kind == HeaderName::Route)
    } else {
        None
    };
    let mut saw_max_forwards = false;
    for (index, h) in msg.headers().iter().enumerate() {
        if Some(index) == last_route {
            write_without_last(&mut out, msg, h, "Route");
            continue;
        }
        match h.kind {
            HeaderName::Via if !via_popped => {
                via_popped = true;
                write_without_first(&mut out, msg, h, "Via");
            }
            HeaderName::Route if routes_to_pop > 0 => {
                routes_to_pop = write_without_first_n(&mut out, msg, h, "Route", routes_to_pop);
            }
            HeaderName::Authorization | HeaderName::ProxyAuthorization
                if credential_for(msg.text(h.value), edits.consume_credentials_for) => {}
            HeaderName::MaxForwards if edits.decrement_max_forwards => {
                saw_max_forwards = true;
                let n = msg.max_forwards().ok().flatten().unwrap_or(70);
                let _ = write!(
                    ByteWriter(&mut out),
                    "Max-Forwards: {}\r\n",
                    n.saturating_sub(1)
                );
            }
            _ => out.put_slice(&buf[h.line.range()]),
        }
    }
    if edits.decrement_max_forwards && !saw_max_forwards && msg.is_request() {
        out.put_slice(b"Max-Forwards: 70\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(msg.body());
    out.freeze()
}

/// Whether a credentials header value is a Digest credential for one of `realms`.
fn credential_for(value: &str, realms: &[String]) -> bool {
    if realms.is_empty() {
        return false;
    }
    match Credentials::parse(value) {
        Ok(Credentials::Digest(p)) => p
            .realm
            .is_some_and(|r| realms.iter().any(|ours| ours.eq_ignore_ascii_case(r))),
        _ => false,
    }
}

/// Writes a list header without its last value; nothing if that was its only value.
fn write_without_last(out: &mut BytesMut, msg: &Message, h: &super::message::Header, name: &str) {
    let value = msg.text(h.value);
    let mut values: Vec<&str> = split_commas(value).filter_map(Result::ok).collect();
    values.pop();
    if values.is_empty() {
        return;
    }
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(values.join(", ").as_bytes());
    out.put_slice(b"\r\n");
}

/// Writes a list header without its first value; nothing if that was its only value.
fn write_without_first(out: &mut BytesMut, msg: &Message, h: &super::message::Header, name: &str) {
    write_without_first_n(out, msg, h, name, 1);
}

/// Writes a list header without its first `n` values (nothing if none remain); returns how
/// many of the `n` this header did not hold, to be taken from the next header of the name.
fn write_without_first_n(
    out: &mut BytesMut,
    msg: &Message,
    h: &super::message::Header,
    name: &str,
    n: usize,
) -> usize {
    let value = msg.text(h.value);
    let mut parts = split_commas(value);
    let mut left = n;
    while left > 0 && parts.next().is_some() {
        left -= 1;
    }
    let remaining: Vec<&str> = parts.filter_map(Result::ok).collect();
    if remaining.is_empty() {
        return left;
    }
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(remaining.join(", ").as_bytes());
    out.put_slice(b"\r\n");
    left
}

#[cfg(test)]
mod forward_tests {
    use super::*;
    use crate::sip::Limits;

    const INVITE: &str = "INVITE sip:bob@example.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa\r\n\
        Route: <sip:p1.example.test;lr>, <sip:p2.example.test;lr>\r\n\
        X-Odd:  kept   as is\r\n\
        Route: <sip:p3.example.test;lr>, <sip:last.example.test>\r\n\
        Max-Forwards: 10\r\n\
        From: <sip:alice@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\n\
        Call-ID: c1\r\nCSeq: 1 INVITE\r\n\
        Content-Length: 4\r\n\r\nbody";

    fn edited(edits: &ForwardEdits<'_>) -> String {
        let msg = Message::parse(Bytes::from_static(INVITE.as_bytes()), &Limits::default())
            .expect("parses");
        String::from_utf8(forward(&msg, edits).to_vec()).expect("text")
    }

    #[test]
    fn pops_routes_across_headers_and_the_last_one() {
        let out = edited(&ForwardEdits {
            pop_routes: 2,
            pop_last_route: true,
            push_route: &["<sip:edge.example.test;lr>"],
            request_uri: Some("sip:bob@192.0.2.9"),
            decrement_max_forwards: true,
            ..ForwardEdits::default()
        });
        assert!(
            out.starts_with("INVITE sip:bob@192.0.2.9 SIP/2.0\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Route: <sip:edge.example.test;lr>\r\n"),
            "{out}"
        );
        assert!(!out.contains("p1.") && !out.contains("p2."), "{out}");
        assert!(out.contains("Route: <sip:p3.example.test;lr>\r\n"), "{out}");
        assert!(!out.contains("last.example.test"), "{out}");
        assert!(out.contains("X-Odd:  kept   as is\r\n"), "{out}");
        assert!(out.contains("Max-Forwards: 9\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nbody"), "{out}");
    }

    #[test]
    fn credentials_for_our_realms_are_consumed_and_others_kept() {
        let msg = Message::parse(
            Bytes::from_static(
                b"INVITE sip:bob@example.test SIP/2.0\r\n\
                Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa\r\n\
                Proxy-Authorization: Digest username=\"alice\", realm=\"Example.TEST\", nonce=\"n\", uri=\"sip:bob@example.test\", response=\"r\"\r\n\
                Proxy-Authorization: Digest username=\"alice\", realm=\"other.example\", nonce=\"n2\", uri=\"sip:bob@example.test\", response=\"r2\"\r\n\
                Authorization: Digest username=\"alice\", realm=\"second.test\", nonce=\"n3\", uri=\"sip:bob@example.test\", response=\"r3\"\r\n\
                Authorization: Bearer abc\r\n\
                From: <sip:alice@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\n\
                Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            ),
            &Limits::default(),
        )
        .expect("parses");
        let realms = ["example.test".to_owned(), "second.test".to_owned()];
        let out = forward(
            &msg,
            &ForwardEdits {
                consume_credentials_for: &realms,
                ..ForwardEdits::default()
            },
        );
        let out = String::from_utf8(out.to_vec()).expect("text");
        assert!(
            !out.contains("Example.TEST") && !out.contains("second.test"),
            "{out}"
        );
        assert!(
            out.contains("realm=\"other.example\", nonce=\"n2\""),
            "{out}"
        );
        assert!(out.contains("Authorization: Bearer abc\r\n"), "{out}");
        // Nothing is consumed unless asked.
        let kept = forward(&msg, &ForwardEdits::default());
        assert_eq!(kept.len(), msg.wire_len());
    }

    #[test]
    fn popping_more_routes_than_there_are_removes_them_all() {
        let out = edited(&ForwardEdits {
            pop_routes: 9,
            ..ForwardEdits::default()
        });
        assert!(!out.contains("Route:"), "{out}");
        assert!(out.contains("X-Odd:  kept   as is\r\n"));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::sip::{Limits, Message, ParseError};

    /// Fuzz regression (parse_message, 2026-11-23): a Via whose parameter values held
    /// `<` and `>` (`branch=…<7-1;rport=UDP>`) passed `check_core_headers`, and the 200
    /// built for it, with `rport` rewritten, had a Via that no longer split. Such a Via is
    /// now refused, and one with the brackets inside a quoted value round-trips.
    #[test]
    fn response_via_of_an_accepted_request_parses() {
        let request = |via_params: &str| {
            Bytes::from(format!(
                "REGISTER sip:example.com SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 192.0.2.10:5060{via_params}\r\n\
                 To: <sip:alice@example.com>\r\n\
                 From: <sip:alice@example.com>;tag=1\r\n\
                 Call-ID: c1\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n"
            ))
        };
        let limits = Limits::default();
        let bad = Message::parse(
            request(";branch=z9hG4bK-5242<7-1;rport=UDP>;+sip.instance=\"<urn:uuid:1>\""),
            &limits,
        )
        .expect("framing and CSeq are fine");
        assert_eq!(bad.check_core_headers(), Err(ParseError::InvalidVia));

        let good = Message::parse(
            request(";branch=z9hG4bK-5242;rport;x=\"<a,b>\";+sip.instance=\"<urn:uuid:1>\""),
            &limits,
        )
        .expect("parses");
        good.check_core_headers().expect("core headers");
        let response = ResponseBuilder::new(&good, 200, "OK")
            .to_tag("t1")
            .received(ViaReceived {
                addr: "192.0.2.99:5099".parse().expect("addr"),
            })
            .build();
        let r = Message::parse(response, &limits).expect("response parses");
        let via = r.top_via().expect("response Via");
        assert_eq!(via.rport(), Some(Some(5099)));
        assert_eq!(via.branch(), Some("z9hG4bK-5242"));
    }
}
