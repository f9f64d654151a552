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

/// Issue 13: the transaction cap is not what breaks in a registration storm. With room for
/// 1000 transactions, 2500 registrations in a row (each leaves a completed UDP transaction
/// that would be kept 32 s) all succeed: a REGISTER without credentials keeps no transaction,
/// and a new request takes the room of the oldest completed one. The retransmission of a
/// recent REGISTER is still answered from its transaction; that of one whose transaction gave
/// way is processed afresh: a stale challenge, never a second acceptance.
#[test]
fn a_full_transaction_table_gives_way_and_registrations_keep_succeeding() {
    let server = Server::start(&Options {
        sip: "max_transactions = 1000",
        ..Options::default()
    });
    let mut c = Client::new(Proto::Udp, server.udp);
    let mut sent = Vec::new();
    for n in 0..2500 {
        let mut reg = Register::new("alice");
        reg.branch = format!("z9hG4bK-storm-{n}");
        let challenge = c.request(&reg.build(&c)).expect("challenge");
        assert_eq!(
            challenge.status(),
            401,
            "registration {n}: {}",
            challenge.text
        );
        reg.cseq += 1;
        reg.authorization = vec![authorization(
            "MD5",
            "alice",
            "alice-secret-1",
            "REGISTER",
            &reg.ruri,
            &challenge.nonce(),
            1,
            &rand_token(),
        )];
        let msg = reg.build(&c);
        let ok = c.request(&msg).expect("final response");
        assert_eq!(ok.status(), 200, "registration {n}: {}", ok.text);
        sent.push((msg, ok.text));
    }
    assert_eq!(
        server.metric("sipward_sip_dropped_total{reason=\"overloaded\"}"),
        0.0
    );
    let (last, last_answer) = sent.last().expect("registrations");
    let again = c.request(last).expect("retransmission answered");
    assert_eq!(&again.text, last_answer, "not the stored response");
    let (first, _) = &sent[0];
    let again = c.request(first).expect("retransmission answered");
    assert_eq!(again.status(), 401, "{}", again.text);
    let header = again.header("WWW-Authenticate").expect("a challenge");
    assert!(header.contains("stale=true"), "{}", again.text);
}
