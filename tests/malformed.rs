//! Issue 12 item 13: malformed requests get an answer naming the problem instead of silence,
//! on the in-process server over UDP and TCP: LF-only line ends (400, our decision), more header
//! lines than `sip.max_headers` (513), a header name holding a control character (400), a
//! stream that cannot be framed (400 / 413, then closed), and, where no reply address can be
//! read (no Via), a drop that is counted (and over TCP closes the connection). Answers are
//! bounded by the per-source failure limit.

mod common;
use common::*;

use std::time::Duration;

/// A REGISTER for alice without credentials, with `extra` header lines before
/// Content-Length, its lines ending in CRLF.
fn register_text(c: &Client, call_id: &str, extra: &str) -> String {
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=f{call_id}\r\nTo: <sip:alice@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n",
        c.proto.via(),
        c.local,
    )
}

/// Checks an answer to a malformed request: status line, and the request's Call-ID and
/// branch echoed so the client can match it.
fn expect_answer(r: Option<Resp>, status_line: &str, call_id: &str, what: &str) {
    let r = r.unwrap_or_else(|| panic!("{what}: no answer"));
    assert_eq!(r.status_line(), status_line, "{what}:\n{}", r.text);
    assert_eq!(r.header("Call-ID").as_deref(), Some(call_id), "{what}");
    let via = r.header("Via").unwrap_or_default();
    assert!(
        via.contains(&format!("branch=z9hG4bK{call_id}")),
        "{what}: {via}"
    );
}

fn dropped(server: &Server, reason: &str) -> f64 {
    server.metric(&format!("sipward_sip_dropped_total{{reason=\"{reason}\"}}"))
}

/// Decision: LF-only line ends are refused with 400 (not read leniently): RFC 3261 §7
/// requires CRLF, and a second reading of where lines end is how framing disagreements
/// between elements start. Over TCP the connection is then closed (where the message ends
/// cannot be known). Before: silence over UDP, and over TCP a connection that hung until
/// the header deadline.
#[test]
fn lf_only_line_ends_get_400_over_udp_and_tcp() {
    let server = Server::start(&Options::default());
    for proto in [Proto::Udp, Proto::Tcp] {
        let mut c = server.client(proto);
        let call_id = rand_token();
        let msg = register_text(&c, &call_id, "").replace("\r\n", "\n");
        c.send_raw(msg.as_bytes());
        expect_answer(
            c.recv(Duration::from_secs(2)),
            "SIP/2.0 400 CRLF Line Endings Required",
            &call_id,
            &format!("{proto:?} LF-only"),
        );
        if proto == Proto::Tcp {
            assert!(
                c.closed_by_server(Duration::from_secs(2)),
                "TCP connection kept after LF-only"
            );
        }
    }
    assert_eq!(server.admin_bindings(), "[]");
}

/// 200 Contacts each on its own line are over `max_headers` (128): 513 over UDP and TCP
/// (over TCP the framer finds it, and the connection is closed). Before: silence.
#[test]
fn more_header_lines_than_the_limit_get_513() {
    let server = Server::start(&Options::default());
    for proto in [Proto::Udp, Proto::Tcp] {
        let mut c = server.client(proto);
        let call_id = rand_token();
        let contacts: String = (0..200)
            .map(|n| format!("Contact: <sip:alice@127.0.0.1:{}>\r\n", 20000 + n))
            .collect();
        c.send_raw(register_text(&c, &call_id, &contacts).as_bytes());
        expect_answer(
            c.recv(Duration::from_secs(2)),
            "SIP/2.0 513 Too Many Header Fields",
            &call_id,
            &format!("{proto:?} 200 Contact lines"),
        );
        if proto == Proto::Tcp {
            assert!(c.closed_by_server(Duration::from_secs(2)));
        }
    }
    assert_eq!(server.admin_bindings(), "[]");
}

/// `To\x01:`: 400 Bad Header Name. Over TCP the message was framed by its Content-Length, so
/// the connection stays open and serves the next REGISTER. Before: silence.
#[test]
fn a_control_character_in_a_header_name_gets_400() {
    let server = Server::start(&Options::default());
    for proto in [Proto::Udp, Proto::Tcp] {
        let mut c = server.client(proto);
        let call_id = rand_token();
        let msg = register_text(&c, &call_id, "").replace("\r\nTo:", "\r\nTo\x01:");
        c.send_raw(msg.as_bytes());
        expect_answer(
            c.recv(Duration::from_secs(2)),
            "SIP/2.0 400 Bad Header Name",
            &call_id,
            &format!("{proto:?} To\\x01"),
        );
        let next = register_text(&c, &rand_token(), "");
        let r = c.request(&next).map(|r| r.status());
        assert_eq!(r, Some(401), "{proto:?}: the next REGISTER");
    }
    assert_eq!(
        server.metric("sipward_parse_errors_total{transport=\"udp\"}"),
        1.0
    );
    assert_eq!(
        server.metric("sipward_parse_errors_total{transport=\"tcp\"}"),
        1.0
    );
}

/// Decision: over a stream, a message that cannot be answered (no readable Via) is dropped,
/// counted, and the connection closed: the stream is most likely out of step. Over UDP it is
/// dropped and counted. Before: over TCP the connection was kept.
#[test]
fn unanswerable_garbage_is_dropped_counted_and_closes_a_stream() {
    let server = Server::start(&Options::default());
    let garbage = "INVITE sip:bob@example.test\r\nTo: <sip:bob@example.test>\r\nFoobar roobar\r\n\
                   Content-Length: 0\r\n\r\n";
    let mut udp = Client::new(Proto::Udp, server.udp);
    udp.send_raw(garbage.as_bytes());
    assert!(udp.recv(Duration::from_millis(800)).is_none());
    let mut tcp = Client::new(Proto::Tcp, server.tcp);
    tcp.send_raw(garbage.as_bytes());
    assert!(
        tcp.closed_by_server(Duration::from_secs(2)),
        "TCP connection kept after an unanswerable message"
    );
    assert_eq!(dropped(&server, "unparseable"), 2.0);
    assert_eq!(
        server.metric("sipward_parse_errors_total{transport=\"tcp\"}"),
        1.0
    );
    // Other connections are unaffected.
    let mut c = Client::new(Proto::Tcp, server.tcp);
    let r = c.request(&register_text(&c, &rand_token(), ""));
    assert_eq!(r.map(|r| r.status()), Some(401));
}

/// Stream framing faults with a complete header section are answered, then the connection
/// closes: no Content-Length (400 Content-Length Required), a body over the limit (413).
/// Before: closed without a word.
#[test]
fn framing_faults_on_a_stream_are_answered_then_closed() {
    let server = Server::start(&Options::default());
    for (content_length, status_line) in [
        ("", "SIP/2.0 400 Content-Length Required"),
        (
            "Content-Length: 99999999\r\n",
            "SIP/2.0 413 Request Entity Too Large",
        ),
    ] {
        let mut c = Client::new(Proto::Tcp, server.tcp);
        let call_id = rand_token();
        let msg = register_text(&c, &call_id, "").replace("Content-Length: 0\r\n", content_length);
        c.send_raw(msg.as_bytes());
        expect_answer(
            c.recv(Duration::from_secs(2)),
            status_line,
            &call_id,
            status_line,
        );
        assert!(c.closed_by_server(Duration::from_secs(2)), "{status_line}");
    }
}

/// Answers to malformed requests count against the per-source failure limit: with
/// `max_failures_per_source = 3`, the first three get their 400, the rest silence (counted
/// as throttled drops), so malformed input cannot be turned into unbounded reflection.
#[test]
fn answers_to_malformed_requests_are_bounded_by_the_source_limit() {
    let server = Server::start(&Options {
        auth: "max_failures_per_source = 3",
        ..Options::default()
    });
    let mut c = Client::new(Proto::Udp, server.udp);
    let mut answered = 0;
    for _ in 0..5 {
        let msg = register_text(&c, &rand_token(), "").replace("\r\nTo:", "\r\nTo\x01:");
        c.send_raw(msg.as_bytes());
        if let Some(r) = c.recv(Duration::from_millis(1000)) {
            assert_eq!(r.status_line(), "SIP/2.0 400 Bad Header Name");
            answered += 1;
        }
    }
    assert_eq!(answered, 3);
    assert_eq!(dropped(&server, "throttled"), 2.0);
}
