//! Drain on SIGTERM, against the real binary with raw UDP phones: a call being set up when the
//! signal arrives still completes (the callee's 200 reaches the caller, the caller's ACK and a
//! later BYE reach the callee), a new request outside a dialog is refused with 503 and
//! `Retry-After`, and the process exits 0 once the proxy holds no transaction, within
//! `server.drain_grace_secs`; with nothing in flight it exits at once.

mod common;
use common::*;

use std::time::{Duration, Instant};

const ALICE_PW: &str = "alice-secret-1";
const BOB_PW: &str = "bob-secret-2";

/// A server whose transactions end quickly (T1 = 50 ms, so an INVITE client transaction
/// lingers 64·T1 = 3.2 s after its 2xx) and whose drain grace is `grace_secs`.
fn start(grace_secs: u64) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let http_port = free_port();
    let mut accounts = String::new();
    for (user, pw) in [("alice", ALICE_PW), ("bob", BOB_PW)] {
        let file = dir.path().join(format!("{user}.pw"));
        std::fs::write(&file, pw).unwrap();
        accounts.push_str(&format!(
            "[[accounts]]\nusername = \"{user}\"\ndomain = \"{DOMAIN}\"\nkind = \"device\"\npassword_file = \"{}\"\n\n",
            file.display()
        ));
    }
    let config = format!(
        "[log]\nlevel = \"info\"\n\n[server]\ndrain_grace_secs = {grace_secs}\n\n\
         [sip]\nudp = [\"127.0.0.1:{port}\"]\ntcp = [\"127.0.0.1:{port}\"]\nudp_workers = 2\nt1_ms = 50\n\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
         [[domains]]\nname = \"{DOMAIN}\"\nalgorithms = [\"MD5\"]\n\n{accounts}"
    );
    let path = dir.path().join("sipward.toml");
    std::fs::write(&path, config).unwrap();
    Server::start_with_file(path, dir, port, http_port, None)
}

/// Sends SIGTERM and waits until the drain has begun: the HTTP listener is the first thing
/// to close.
fn begin_drain(server: &Server) {
    server.send_sigterm();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.http_get("/healthz", None).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the HTTP listener is still open 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bob_phone(server: &Server) -> Client {
    let mut bob = Client::new(Proto::Udp, server.udp);
    let mut reg = Register::new("bob");
    reg.contact = Some(format!("<sip:bob@{}>", bob.local));
    let r = register(&mut bob, &reg, BOB_PW, "MD5");
    assert_eq!(r.status(), 200, "{}", r.text);
    bob
}

fn invite(c: &Client, call_id: &str, cseq: u32, branch: &str, extra: &str) -> String {
    format!(
        "INVITE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\nTo: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@{}>\r\n{extra}\
         Content-Length: 0\r\n\r\n",
        c.local, c.local
    )
}

/// The next message that is not 100 Trying.
fn next_non_trying(c: &mut Client, what: &str) -> Resp {
    loop {
        let r = c
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no {what}"));
        if r.status() != 100 {
            return r;
        }
    }
}

/// The next request `method` that arrives at `c`, skipping anything else.
fn next_request(c: &mut Client, method: &str) -> Resp {
    std::iter::from_fn(|| c.recv(Duration::from_secs(5)))
        .find(|m| m.text.starts_with(&format!("{method} ")))
        .unwrap_or_else(|| panic!("no {method} arrived"))
}

/// Alice's INVITE to bob through the 407 challenge; returns once the authenticated INVITE
/// is answered 100.
fn call_bob(c: &mut Client, call_id: &str) {
    let b1 = format!("z9hG4bK{}", rand_token());
    c.send_raw(invite(c, call_id, 1, &b1, "").as_bytes());
    let challenge = next_non_trying(c, "407");
    assert_eq!(challenge.status(), 407, "{}", challenge.text);
    let ack = format!(
        "ACK sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={b1};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\nTo: {}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        c.local,
        challenge.header("To").unwrap()
    );
    c.send_raw(ack.as_bytes());
    let ruri = format!("sip:bob@{DOMAIN}");
    let pa = authorization(
        "MD5",
        "alice",
        ALICE_PW,
        "INVITE",
        &ruri,
        &challenge.nonce(),
        1,
        &rand_token(),
    );
    let b2 = format!("z9hG4bK{}", rand_token());
    c.send_raw(
        invite(
            c,
            call_id,
            2,
            &b2,
            &format!("Proxy-Authorization: {pa}\r\n"),
        )
        .as_bytes(),
    );
    let trying = c.recv(Duration::from_secs(5)).expect("100 Trying");
    assert_eq!(trying.status(), 100, "{}", trying.text);
}

/// A response from the callee to `req`, with its To tag `bobtag`.
fn answer(req: &Resp, status: u16, reason: &str, contact: &str) -> String {
    response_to(
        req,
        status,
        reason,
        "bobtag",
        &format!("sip:bob@{contact}"),
        false,
    )
}

/// An in-dialog request from alice to bob along the Record-Route of `answer`.
fn in_dialog(
    c: &Client,
    method: &str,
    cseq: u32,
    call_id: &str,
    bob: &Client,
    ok: &Resp,
) -> String {
    let route = ok.header("Record-Route").expect("Record-Route on the 200");
    format!(
        "{method} sip:bob@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\n\
         To: {}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        bob.local,
        c.local,
        rand_token(),
        ok.header("To").unwrap(),
    )
}

/// SIGTERM after the callee's 180: the call still completes through sipward, a new call is
/// refused with 503, and the process exits 0 within the grace period.
#[test]
fn sigterm_during_call_setup_lets_the_call_finish() {
    let grace = 10;
    let mut server = start(grace);
    let mut bob = bob_phone(&server);
    let mut alice = Client::new(Proto::Udp, server.udp);
    let call_id = rand_token();
    call_bob(&mut alice, &call_id);
    let fwd = next_request(&mut bob, "INVITE");
    let contact = bob.local.to_string();
    bob.send_raw(answer(&fwd, 180, "Ringing", &contact).as_bytes());
    let ringing = next_non_trying(&mut alice, "180");
    assert_eq!(ringing.status(), 180, "{}", ringing.text);

    begin_drain(&server);
    let terminated = Instant::now();

    // A new call (outside any dialog) is refused while draining.
    let mut carol = Client::new(Proto::Udp, server.udp);
    let new_call = rand_token();
    let branch = format!("z9hG4bK{}", rand_token());
    carol.send_raw(invite(&carol, &new_call, 1, &branch, "").as_bytes());
    let refused = next_non_trying(&mut carol, "answer to a new INVITE during drain");
    assert_eq!(refused.status(), 503, "{}", refused.text);
    assert!(
        refused.header("Retry-After").is_some(),
        "503 without Retry-After: {}",
        refused.text
    );

    // The callee answers about a second after the signal; the 200 still reaches the caller.
    std::thread::sleep(Duration::from_secs(1));
    bob.send_raw(answer(&fwd, 200, "OK", &contact).as_bytes());
    let ok = next_non_trying(&mut alice, "200 after SIGTERM");
    assert_eq!(ok.status(), 200, "{}", ok.text);

    // The ACK for the 2xx and a BYE (in-dialog requests) still pass.
    alice.send_raw(in_dialog(&alice, "ACK", 2, &call_id, &bob, &ok).as_bytes());
    let ack = next_request(&mut bob, "ACK");
    assert!(ack.text.contains(&call_id), "{}", ack.text);
    alice.send_raw(in_dialog(&alice, "BYE", 3, &call_id, &bob, &ok).as_bytes());
    let bye = next_request(&mut bob, "BYE");
    bob.send_raw(answer(&bye, 200, "OK", &contact).as_bytes());
    let bye_ok = next_non_trying(&mut alice, "200 to the BYE");
    assert_eq!(bye_ok.status(), 200, "{}", bye_ok.text);
    assert_eq!(bye_ok.header("CSeq").as_deref(), Some("3 BYE"));

    // Exit 0 within the grace period (counted from the signal), with a second to spare for
    // the process to be reaped.
    let left = Duration::from_secs(grace + 1).saturating_sub(terminated.elapsed());
    let code = server.wait_exit(left);
    assert_eq!(
        code,
        Some(0),
        "no exit 0 within drain_grace_secs; stderr:\n{}",
        server.stderr()
    );
    assert!(
        !server.stderr().contains("drain grace period passed"),
        "the drain ran out of time instead of finishing; stderr:\n{}",
        server.stderr()
    );
}

/// With nothing in flight, SIGTERM ends the process at once, not after the grace period
/// (here a minute, so an exit within the wait below cannot be the grace running out).
#[test]
fn sigterm_with_nothing_in_flight_exits_without_waiting_for_the_grace() {
    let mut server = start(60);
    let _bob = bob_phone(&server);
    server.send_sigterm();
    let code = server.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "stderr:\n{}", server.stderr());
}
