//! The proxy core on a virtual clock: no sockets, no sleeps. Each test feeds messages, moves
//! `now` from one deadline to the next and inspects what the core queued.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::core::{ProxyCore, Transmit};
use super::keys::Keys;
use super::{Branch, Forward, Inbound, ProxyConfig, Routing, Started};
use crate::metrics::Metrics;
use crate::sip::{HostPort, Limits, Message, ResponseBuilder};
use crate::transaction::{TransactionConfig, TransactionKey, TransactionTable};
use crate::transport::{Target, Transport};

const T1: Duration = Duration::from_millis(500);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn local() -> SocketAddr {
    addr("192.0.2.1:5060")
}
fn caller() -> SocketAddr {
    addr("198.51.100.1:5060")
}
fn bob1() -> Target {
    Target::Udp(addr("203.0.113.1:5060"))
}
fn bob2() -> Target {
    Target::Udp(addr("203.0.113.2:5060"))
}
fn upstream() -> Target {
    Target::Udp(caller())
}

fn core(max_contexts: usize) -> ProxyCore {
    ProxyCore::new(
        ProxyConfig {
            t1: T1,
            max_contexts,
            realms: vec!["example.test".into()],
            names: Default::default(),
        },
        Keys::random(),
        TransactionTable::new(TransactionConfig::new(T1, 100).unwrap()),
        Metrics::new(),
        None,
    )
}

fn parse(bytes: Bytes) -> Message {
    Message::parse(bytes, &Limits::default()).unwrap()
}

fn invite(call: &str) -> Message {
    parse(Bytes::from(format!(
        "INVITE sip:bob@example.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKc-{call}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a\r\n\
         To: <sip:bob@example.test>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    )))
}

fn key(call: &str) -> TransactionKey {
    TransactionKey::rfc3261(&format!("z9hG4bKc-{call}"), "198.51.100.1:5060", "INVITE").unwrap()
}

/// A call from the UDP caller forked to `targets`.
fn start(core: &mut ProxyCore, call: &str, targets: &[Target], now: Instant) -> Started {
    let msg = invite(call);
    let branches: Vec<Branch<'_>> = targets
        .iter()
        .map(|t| Branch {
            target: *t,
            request_uri: Some("sip:bob@203.0.113.1"),
            route: Vec::new(),
        })
        .collect();
    let fwd = Forward {
        msg: &msg,
        inbound: Inbound {
            upstream: upstream(),
            transport: Transport::Udp,
            local: HostPort::from_addr(local()),
            peer: caller(),
            flow: None,
        },
        server_key: key(call),
        branches: &branches,
        routing: Routing {
            record_route: true,
            ..Routing::default()
        },
        trying: None,
    };
    core.start(
        fwd,
        |_| Some((Transport::Udp, HostPort::from_addr(local()))),
        now,
    )
}

fn drain(core: &mut ProxyCore) -> Vec<Transmit> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

/// What was queued, as (target, "INVITE" / "CANCEL" / "ACK" / the status).
fn sent(core: &mut ProxyCore) -> Vec<(Target, String)> {
    drain(core)
        .into_iter()
        .map(|t| {
            let m = parse(t.bytes);
            let what = match m.status() {
                Some(s) => s.to_string(),
                None => m.cseq().unwrap().method.to_owned(),
            };
            (t.target, what)
        })
        .collect()
}

/// The requests queued to each branch, by target.
fn requests(core: &mut ProxyCore) -> Vec<(Target, Message)> {
    drain(core)
        .into_iter()
        .map(|t| (t.target, parse(t.bytes)))
        .collect()
}

fn answer(req: &Message, status: u16) -> Message {
    parse(
        ResponseBuilder::new(req, status, "Reason")
            .to_tag("callee")
            .build(),
    )
}

fn one(s: &str) -> (Target, String) {
    (upstream(), s.to_owned())
}

/// Runs every deadline up to `until`; returns what was queued with its offset from `from`.
fn run_until(
    core: &mut ProxyCore,
    from: Instant,
    until: Instant,
) -> Vec<(Duration, Target, String)> {
    let mut out = Vec::new();
    while let Some(at) = core.poll_timeout() {
        if at > until {
            break;
        }
        core.handle_timeout(at);
        for (target, what) in sent(core) {
            out.push((at - from, target, what));
        }
    }
    out
}

#[test]
fn fork_to_two_branches_first_2xx_wins_and_the_other_is_cancelled() {
    let mut c = core(10);
    let t0 = Instant::now();
    assert_eq!(
        start(&mut c, "fork", &[bob1(), bob2()], t0),
        Started::Forwarded
    );
    let reqs = requests(&mut c);
    assert_eq!(
        reqs.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [bob1(), bob2()]
    );
    let (inv1, inv2) = (&reqs[0].1, &reqs[1].1);

    assert!(c.on_response(&answer(inv2, 180), t0));
    assert_eq!(sent(&mut c), [one("180")]);
    assert!(c.on_response(&answer(inv1, 200), t0));
    assert_eq!(sent(&mut c), [one("200"), (bob2(), "CANCEL".into())]);

    // Branch 2 answers the CANCEL and then 487: ACKed hop by hop, nothing more upstream.
    let cancel = parse(c_last_cancel(inv2));
    assert!(c.on_response(&answer(&cancel, 200), t0));
    assert!(c.on_response(&answer(inv2, 487), t0));
    assert_eq!(sent(&mut c), [(bob2(), "ACK".to_owned())]);
    // A retransmitted 2xx still goes up (RFC 6026); nothing is ever sent to branch 1 but
    // its INVITE.
    assert!(c.on_response(&answer(inv1, 200), t0));
    assert_eq!(sent(&mut c), [one("200")]);
}

/// The CANCEL the core sends on the branch of `inv` (same Via, CSeq method CANCEL).
fn c_last_cancel(inv: &Message) -> Bytes {
    let via = inv.value(crate::sip::HeaderName::Via).unwrap();
    Bytes::from(format!(
        "CANCEL sip:bob@203.0.113.1 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:alice@example.test>;tag=a\r\n\
         To: <sip:bob@example.test>\r\nCall-ID: fork\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    ))
}

#[test]
fn caller_cancel_cancels_each_branch_once_it_has_a_provisional() {
    let mut c = core(10);
    let t0 = Instant::now();
    start(&mut c, "cancel", &[bob1(), bob2()], t0);
    let reqs = requests(&mut c);
    let (inv1, inv2) = (&reqs[0].1, &reqs[1].1);
    assert!(c.on_response(&answer(inv1, 180), t0));
    assert_eq!(sent(&mut c), [one("180")]);

    assert!(c.cancel(&key("cancel"), t0));
    // Branch 2 has sent nothing yet: its CANCEL waits for its first provisional (§9.1).
    assert_eq!(sent(&mut c), [(bob1(), "CANCEL".to_owned())]);
    assert!(c.on_response(&answer(inv2, 183), t0));
    assert_eq!(sent(&mut c), [(bob2(), "CANCEL".to_owned()), one("183")]);

    assert!(c.on_response(&answer(inv1, 487), t0));
    assert_eq!(sent(&mut c), [(bob1(), "ACK".to_owned())]);
    assert!(c.on_response(&answer(inv2, 487), t0));
    assert_eq!(sent(&mut c), [(bob2(), "ACK".to_owned()), one("487")]);
    // A CANCEL for no forwarded INVITE: false (dispatch answers 481).
    assert!(!c.cancel(&key("other"), t0));
}

#[test]
fn an_unanswered_branch_gives_408_after_64_t1() {
    let mut c = core(10);
    let t0 = Instant::now();
    start(&mut c, "timeout", &[bob1()], t0);
    assert_eq!(sent(&mut c), [(bob1(), "INVITE".to_owned())]);
    let events = run_until(&mut c, t0, t0 + T1 * 64);
    let retransmits: Vec<u128> = events
        .iter()
        .filter(|(_, t, w)| *t == bob1() && w == "INVITE")
        .map(|(at, _, _)| at.as_millis())
        .collect();
    assert_eq!(retransmits, [500, 1500, 3500, 7500, 15500, 31500]);
    let upstream_finals: Vec<(Duration, String)> = events
        .iter()
        .filter(|(_, t, _)| *t == upstream())
        .map(|(at, _, w)| (*at, w.clone()))
        .collect();
    assert_eq!(upstream_finals, [(T1 * 64, "408".to_owned())]);
}

#[test]
fn best_final_is_a_6xx_over_a_4xx_whatever_the_order() {
    // 486 first, then 603: the 603 goes up once both branches have a final.
    let mut c = core(10);
    let t0 = Instant::now();
    start(&mut c, "busy", &[bob1(), bob2()], t0);
    let reqs = requests(&mut c);
    let (inv1, inv2) = (&reqs[0].1, &reqs[1].1);
    assert!(c.on_response(&answer(inv1, 486), t0));
    assert_eq!(sent(&mut c), [(bob1(), "ACK".to_owned())]);
    assert!(c.on_response(&answer(inv2, 603), t0));
    assert_eq!(sent(&mut c), [(bob2(), "ACK".to_owned()), one("603")]);

    // 603 first: the other branch is cancelled, and its 486 loses to the 603.
    let mut c = core(10);
    start(&mut c, "decline", &[bob1(), bob2()], t0);
    let reqs = requests(&mut c);
    let (inv1, inv2) = (&reqs[0].1, &reqs[1].1);
    assert!(c.on_response(&answer(inv2, 180), t0));
    assert_eq!(sent(&mut c), [one("180")]);
    assert!(c.on_response(&answer(inv1, 603), t0));
    assert_eq!(
        sent(&mut c),
        [(bob1(), "ACK".to_owned()), (bob2(), "CANCEL".to_owned())]
    );
    assert!(c.on_response(&answer(inv2, 486), t0));
    assert_eq!(sent(&mut c), [(bob2(), "ACK".to_owned()), one("603")]);
}

#[test]
fn timer_g_retransmits_a_relayed_non_2xx_to_a_udp_caller_until_its_ack() {
    let mut c = core(10);
    let t0 = Instant::now();
    start(&mut c, "g", &[bob1()], t0);
    let reqs = requests(&mut c);
    let t_final = t0 + Duration::from_secs(1);
    assert!(c.on_response(&answer(&reqs[0].1, 486), t_final));
    assert_eq!(sent(&mut c), [(bob1(), "ACK".to_owned()), one("486")]);

    let events = run_until(&mut c, t_final, t_final + Duration::from_secs(12));
    let again: Vec<u128> = events
        .iter()
        .filter(|(_, t, w)| *t == upstream() && w == "486")
        .map(|(at, _, _)| at.as_millis())
        .collect();
    // T1, then doubling up to T2 (4 s): 0.5, 1.5, 3.5, 7.5, 11.5 s after the final.
    assert_eq!(again, [500, 1500, 3500, 7500, 11500]);

    assert!(c.on_ack(&key("g"), t_final + Duration::from_secs(12)));
    let after = run_until(&mut c, t_final, t_final + Duration::from_secs(400));
    assert!(
        after.iter().all(|(_, t, _)| *t != upstream()),
        "nothing goes up after the ACK: {after:?}"
    );
    assert_eq!(c.len(), 0, "the context ends once its timers have run out");
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn the_context_cap_answers_overloaded() {
    let mut c = core(1);
    let t0 = Instant::now();
    assert_eq!(start(&mut c, "a", &[bob1()], t0), Started::Forwarded);
    assert_eq!(start(&mut c, "b", &[bob1()], t0), Started::Overloaded);
    assert_eq!(c.len(), 1);
}

#[test]
fn a_timeout_visits_only_the_contexts_that_are_due() {
    let mut c = core(100);
    let t0 = Instant::now();
    for n in 0..10 {
        start(
            &mut c,
            &format!("late{n}"),
            &[bob1()],
            t0 + Duration::from_secs(10),
        );
    }
    start(&mut c, "early", &[bob2()], t0);
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0 + T1));
    // Between deadlines nothing is due: a (spurious) wake-up visits no context.
    c.handle_timeout(t0 + T1 / 2);
    assert_eq!(c.stats().visited, 0);
    assert!(drain(&mut c).is_empty());
    // At the early context's deadline only it is visited, and only its branch retransmits.
    c.handle_timeout(t0 + T1);
    assert_eq!(c.stats().visited, 1);
    assert_eq!(sent(&mut c), [(bob2(), "INVITE".to_owned())]);
    // Timer A doubles: the next retransmission is 2·T1 later.
    assert_eq!(c.poll_timeout(), Some(t0 + T1 * 3));
}
