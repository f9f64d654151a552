//! Limits a client controls, against the in-process server: the TCP connection cap (taken before
//! accept), the TCP idle timeout, and the failure limiters (E8: an attacking source is
//! dropped, other sources are not affected; a guessed user's own phone and the working phones
//! behind a broken phone's NAT address are not locked out).

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
    // Now that source's credentials get nothing, even correct ones for a user it never
    // authenticated as. A request without credentials is still challenged (a working
    // phone's refresh starts that way; see the NAT test below).
    assert_eq!(
        try_register(
            &server,
            &mut attacker,
            &Register::new("alice"),
            "alice-secret-1"
        ),
        Err(Step::Dropped),
        "blocked source still answered"
    );
    assert!(server.metric("sipward_sip_dropped_total{reason=\"throttled\"}") >= 1.0);
    // Another source address registers alice normally.
    let mut other = Client::udp_from("127.0.0.2", server.udp);
    let r = register(&mut other, &Register::new("alice"), "alice-secret-1", "MD5");
    assert_eq!(r.status(), 200, "{}", r.text);
}

/// Issue 12 item 12, case 1: many addresses guess one user's password. The user limit
/// blocks the username, but not the user's own phone, which authenticated from its address
/// before; a new address with the right password waits for the window like the guessers.
#[test]
fn distributed_guessing_of_one_user_does_not_lock_out_the_users_phone() {
    let server = Server::start(&Options {
        auth: "max_failures_per_user = 10\nmax_failures_per_source = 1000",
        ..Options::default()
    });
    let mut phone = Client::udp_from("127.0.0.2", server.udp);
    let mut reg = Register::new("alice");
    reg.contact = Some(format!("<sip:alice@{}>", phone.local));
    assert_eq!(
        try_register(&server, &mut phone, &reg, "alice-secret-1"),
        Ok(200)
    );
    // 30 guesses from three other addresses, interleaved with the phone's refreshes.
    let mut guessers: Vec<Client> = ["127.0.0.3", "127.0.0.4", "127.0.0.5"]
        .iter()
        .map(|ip| Client::udp_from(ip, server.udp))
        .collect();
    let mut refreshes = 0;
    for round in 0..10 {
        for g in &mut guessers {
            let guess = format!("guess-{round}");
            let _ = try_register(&server, g, &Register::new("alice"), &guess);
        }
        reg.call_id = rand_token();
        assert_eq!(
            try_register(&server, &mut phone, &reg, "alice-secret-1"),
            Ok(200),
            "round {round}: alice's own phone was refused"
        );
        refreshes += 1;
    }
    assert_eq!(refreshes, 10);
    // The username is blocked for everyone else: guessers, and a new address even with the
    // right password.
    assert_eq!(
        try_register(
            &server,
            &mut guessers[0],
            &Register::new("alice"),
            "guess-x"
        ),
        Err(Step::Dropped)
    );
    let mut stranger = Client::udp_from("127.0.0.6", server.udp);
    assert_eq!(
        try_register(
            &server,
            &mut stranger,
            &Register::new("alice"),
            "alice-secret-1"
        ),
        Err(Step::Dropped)
    );
    assert!(server.metric("sipward_sip_dropped_total{reason=\"throttled\"}") >= 2.0);
}

/// Case 2: one address guesses many users. The source limit blocks it for every user it has
/// not authenticated as, while a phone it did authenticate as and other addresses go on.
#[test]
fn one_source_guessing_many_users_is_throttled_but_its_known_phone_is_not() {
    let users: Vec<(String, String)> = (0..30)
        .map(|n| (format!("user{n}"), format!("secret-{n}")))
        .collect();
    let accounts: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .chain([("alice", "alice-secret-1")])
        .collect();
    let server = Server::start(&Options {
        accounts: &accounts,
        auth: "max_failures_per_source = 20\nmax_failures_per_user = 10",
        ..Options::default()
    });
    let mut source = Client::udp_from("127.0.0.7", server.udp);
    let alice = Register::new("alice");
    assert_eq!(
        try_register(&server, &mut source, &alice, "alice-secret-1"),
        Ok(200)
    );
    for (user, _) in users.iter().take(20) {
        assert_eq!(
            try_register(&server, &mut source, &Register::new(user), "wrong"),
            Ok(401),
            "{user}"
        );
    }
    // Blocked now, for a guess and for a correct password of a user it never was.
    assert_eq!(
        try_register(&server, &mut source, &Register::new("user25"), "wrong"),
        Err(Step::Dropped)
    );
    assert_eq!(
        try_register(&server, &mut source, &Register::new("user26"), "secret-26"),
        Err(Step::Dropped)
    );
    // The phone that authenticated as alice from there still registers.
    let mut refresh = alice.clone();
    refresh.call_id = rand_token();
    assert_eq!(
        try_register(&server, &mut source, &refresh, "alice-secret-1"),
        Ok(200)
    );
    // Other addresses are unaffected.
    let mut other = Client::udp_from("127.0.0.8", server.udp);
    assert_eq!(
        try_register(&server, &mut other, &Register::new("user26"), "secret-26"),
        Ok(200)
    );
}

/// Case 3: a broken desk phone behind an office's NAT address retries stale passwords on
/// its three lines until the address is blocked (each line's username is blocked after 10
/// failures, so it takes more than one line to reach the 20 per source); the 20 working phones
/// behind the same address keep registering, and the broken phone stays throttled.
#[test]
fn a_broken_phone_behind_one_nat_address_does_not_lock_out_the_office() {
    let users: Vec<(String, String)> = (0..23)
        .map(|n| (format!("desk{n}"), format!("desk-secret-{n}")))
        .collect();
    let accounts: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let server = Server::start(&Options {
        accounts: &accounts,
        ..Options::default()
    });
    // Every line registers once, the broken phone's three (desk20..desk22) included, with
    // their old passwords.
    let mut phones: Vec<(Client, Register, &str)> = users
        .iter()
        .map(|(user, password)| {
            let c = Client::udp_from("127.0.0.9", server.udp);
            let mut reg = Register::new(user);
            reg.contact = Some(format!("<sip:{user}@{}>", c.local));
            (c, reg, password.as_str())
        })
        .collect();
    for (c, reg, password) in &mut phones {
        assert_eq!(
            try_register(&server, c, reg, password),
            Ok(200),
            "{}",
            reg.user
        );
    }
    // The passwords change; the phone retries the stale ones (defaults: 20 failures per
    // source in 60 s block the address, 10 per user block the username).
    let (working, broken) = phones.split_at_mut(20);
    let mut failures = 0;
    for _ in 0..11 {
        for line in broken.iter_mut() {
            line.1.call_id = rand_token();
            match try_register(&server, &mut line.0, &line.1, "stale-password") {
                Ok(401) => failures += 1,
                Ok(other) => panic!("the stale password got {other}"),
                Err(_) => {}
            }
        }
    }
    assert!(failures >= 20, "{failures} failures answered");
    // The address is blocked: a phone that never registered from it is refused too.
    let mut newcomer = Client::udp_from("127.0.0.9", server.udp);
    assert_eq!(
        try_register(
            &server,
            &mut newcomer,
            &Register::new("alice"),
            "alice-secret-1"
        ),
        Err(Step::Dropped),
        "the office address is not blocked"
    );
    for line in broken.iter_mut() {
        assert_eq!(
            try_register(&server, &mut line.0, &line.1, "stale-password"),
            Err(Step::Dropped),
            "the broken phone is throttled"
        );
    }
    // Every working phone behind the same address refreshes.
    for (c, reg, password) in working.iter_mut() {
        reg.call_id = rand_token();
        assert_eq!(
            try_register(&server, c, reg, password),
            Ok(200),
            "{}",
            reg.user
        );
    }
    assert!(server.metric("sipward_sip_dropped_total{reason=\"throttled\"}") >= 4.0);
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
