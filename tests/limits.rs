//! Limits a client controls, against the real binary: the TCP connection cap (taken before
//! accept), the TCP idle timeout, and the per-source failure limiter (E8: an attacking source
//! is dropped, other sources are not affected).

mod common;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn tcp_connection_cap_holds_further_connections_until_a_slot_frees() {
    let server = Server::start(&Options {
        sip: "tcp_max_connections = 1",
        ..Options::default()
    });
    let mut first = Client::new(Proto::Tcp, server.tcp);
    let msg = Register::new("alice").build(&first);
    assert_eq!(first.request(&msg).map(|r| r.status()), Some(401));
    // The kernel completes the handshake (listen backlog), but sipward does not accept it.
    let mut second = Client::new(Proto::Tcp, server.tcp);
    second.send_raw(Register::new("alice").build(&second).as_bytes());
    assert!(
        second.recv(Duration::from_secs(1)).is_none(),
        "served beyond tcp_max_connections"
    );
    drop(first);
    let r = second.recv(Duration::from_secs(5));
    assert_eq!(
        r.map(|r| r.status()),
        Some(401),
        "not served after a slot freed"
    );
}

#[test]
fn tcp_idle_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start(&Options {
        sip: "tcp_idle_timeout_secs = 10",
        ..Options::default()
    });
    let mut c = Client::new(Proto::Tcp, server.tcp);
    let opened = Instant::now();
    assert!(
        c.closed_by_server(Duration::from_secs(15)),
        "idle connection still open"
    );
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_secs(9),
        "closed after {took:?}, before the idle timeout"
    );
}

#[test]
fn failing_source_is_dropped_and_other_sources_are_not_affected() {
    let server = Server::start(&Options {
        auth: "max_failures_per_source = 3\nmax_failures_per_user = 100",
        ..Options::default()
    });
    // Three wrong passwords for bob from 127.0.0.1.
    let mut attacker = Client::new(Proto::Udp, server.udp);
    for _ in 0..3 {
        let r = register(
            &mut attacker,
            &Register::new("bob"),
            "wrong-password",
            "MD5",
        );
        assert_eq!(r.status(), 401, "{}", r.text);
    }
    // Now that source gets nothing, even for a request without credentials.
    let msg = Register::new("alice").build(&attacker);
    assert!(
        attacker.request(&msg).is_none(),
        "blocked source still answered"
    );
    assert!(server.metric("sipward_sip_dropped_total{reason=\"throttled\"}") >= 1.0);
    // Another source address registers alice normally.
    let mut other = Client::udp_from("127.0.0.2", server.udp);
    let r = register(&mut other, &Register::new("alice"), "alice-secret-1", "MD5");
    assert_eq!(r.status(), 200, "{}", r.text);
}
