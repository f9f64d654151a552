//! The proxy with SIPp as the phones, against the real binary (and a rustls client where SIPp
//! has no TLS), and with Rust-driven phones against the in-process server: calls over UDP, TCP and UDP→TLS; CANCEL before answer; forking to two
//! bindings; the refusals (407 before any lookup, 404, 480, 483, 482); byte-faithful
//! forwarding of unknown headers and the body; 2xx retransmissions relayed and INVITE
//! retransmissions absorbed.
//!
//! SIPp scenarios are in tests/sipp/ (uac-call.xml, uac-cancel.xml, uas-answer.xml,
//! uas-ring-cancel.xml). A SIPp callee registers itself over its own transport with the
//! call's Call-ID, so that SIPp files the INVITE that sipward forks to it under the same
//! scenario.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ALICE_PW: &str = "alice-secret-1";
const BOB_PW: &str = "bob-secret-2";

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/sipp/{name}"))
}

const ACCOUNTS: &[Account<'static>] = &[
    ("alice", ALICE_PW),
    ("bob", BOB_PW),
    ("carol", "carol-secret-3"),
];

/// An in-process server, for the Rust-driven cases.
fn start() -> Server {
    Server::start(&Options {
        accounts: ACCOUNTS,
        tls: Some("optional"),
        ..Options::default()
    })
}

/// The binary, for the cases SIPp drives.
fn start_binary() -> Server {
    Server::start_binary(&Options {
        accounts: ACCOUNTS,
        tls: Some("optional"),
        ..Options::default()
    })
}

/// One SIPp process running a scenario once.
struct Sipp {
    child: Child,
    name: String,
    dir: tempfile::TempDir,
}

impl Sipp {
    /// `transport`: SIPp's `-t` (`u1` or `t1`). `fields`: the injection line.
    fn spawn(
        server: SocketAddr,
        scenario_file: &str,
        transport: &str,
        port: u16,
        call_id: &str,
        fields: &str,
        extra: &[&str],
    ) -> Sipp {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("fields.csv");
        std::fs::write(&csv, format!("SEQUENTIAL\n{fields}\n")).unwrap();
        let child = Command::new("sipp")
            .current_dir(dir.path())
            .arg("-sf")
            .arg(scenario(scenario_file))
            .arg("-inf")
            .arg(&csv)
            .args(["-t", transport, "-m", "1", "-l", "1"])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-nostdin", "-timeout", "40s", "-timeout_error"])
            .args(["-trace_msg", "-trace_err"])
            // Every process of one call uses the call's Call-ID, so SIPp maps the messages
            // of the other legs to its scenario.
            .args(["-cid_str", call_id])
            .args(extra)
            .arg(server.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sipp");
        Sipp {
            child,
            name: scenario_file.to_owned(),
            dir,
        }
    }

    /// Waits for SIPp to exit; panics with its message log (and the other legs') if the
    /// scenario failed.
    fn expect_success(self, limit: Duration) {
        self.expect_success_with(limit, &[]);
    }

    fn expect_success_with(mut self, limit: Duration, others: &[&Sipp]) {
        let deadline = Instant::now() + limit;
        let other_logs = || -> String {
            others
                .iter()
                .map(|o| format!("==== {}\n{}", o.name, o.logs()))
                .collect()
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                if status.success() {
                    return;
                }
                panic!(
                    "{}: sipp exited with {status}\n{}\n{}",
                    self.name,
                    self.logs(),
                    other_logs()
                );
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{}: sipp did not finish\n{}\n{}",
                    self.name,
                    self.logs(),
                    other_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                out.push_str(&format!("---- {}\n", p.display()));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: String = text
                    .chars()
                    .rev()
                    .take(6000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                out.push_str(&tail);
            }
        }
        out
    }
}

/// Who a SIPp phone is.
#[derive(Clone, Copy)]
enum Role {
    /// bob, registering itself from its scenario.
    Callee,
    /// alice, registered from its port first (see [`register_caller`]), calling bob.
    Caller,
}

impl Sipp {
    /// A SIPp phone in `role` running `scenario_file` over `transport` on `port`.
    fn phone(
        server: &Server,
        role: Role,
        scenario_file: &str,
        transport: &str,
        port: u16,
        call_id: &str,
    ) -> Sipp {
        let (fields, extra): (String, &[&str]) = match role {
            Role::Callee => (format!("bob;{}", auth("bob", BOB_PW)), &[]),
            Role::Caller => {
                register_caller(server, port);
                (
                    format!("alice;bob;{}", auth("alice", ALICE_PW)),
                    &["-auth_uri", "bob@example.test"],
                )
            }
        };
        Sipp::spawn(
            server.udp,
            scenario_file,
            transport,
            port,
            call_id,
            &fields,
            extra,
        )
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn auth(user: &str, pw: &str) -> String {
    format!("[authentication username={user} password={pw}]")
}

/// Waits until the location service holds `n` bindings.
fn wait_bindings(server: &Server, n: f64) {
    let (got, _) = server.wait_metric("sipward_bindings", Duration::from_secs(15), |v| v >= n);
    assert!(got >= n, "expected {n} bindings, have {got}");
}

/// Registers alice from the UDP port the SIPp caller will use, so the caller is a
/// registered user too (its call needs only the INVITE's own authentication).
fn register_caller(server: &Server, port: u16) {
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = Client::udp_on(local, server.udp);
    let mut reg = Register::new("alice");
    reg.contact = Some(format!("<sip:alice@{local}>"));
    let r = register(&mut c, &reg, ALICE_PW, "MD5");
    assert_eq!(r.status(), 200, "{}", r.text);
}

fn proxied(server: &Server, method: &str, outcome: &str) -> f64 {
    server.metric(&format!(
        "sipward_proxy_requests_total{{method=\"{method}\",outcome=\"{outcome}\"}}"
    ))
}

/// Acceptance 1: a SIPp callee registered as bob and a SIPp caller registered as alice
/// complete INVITE, 100, 180, 200, ACK, BYE, 200 through sipward over `transport`.
fn call_over(transport: &str) {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let server = start_binary();
    let call_id = format!("call-{}", rand_token());
    let (uas_port, uac_port) = (free_port(), free_port());
    let uas = Sipp::phone(
        &server,
        Role::Callee,
        "uas-answer.xml",
        transport,
        uas_port,
        &call_id,
    );
    wait_bindings(&server, 1.0);
    let uac = Sipp::phone(
        &server,
        Role::Caller,
        "uac-call.xml",
        transport,
        uac_port,
        &call_id,
    );
    uac.expect_success_with(Duration::from_secs(40), &[&uas]);
    uas.expect_success(Duration::from_secs(10));
    assert_eq!(proxied(&server, "INVITE", "2xx"), 1.0);
    assert_eq!(proxied(&server, "BYE", "2xx"), 1.0);
    // Both transactions timed, forwarding to final (issue 18's proxy transaction histogram).
    assert_eq!(
        server.metric("sipward_proxy_transaction_duration_seconds_count"),
        2.0
    );
}

#[test]
fn call_over_udp() {
    call_over("u1");
}

#[test]
fn call_over_tcp() {
    call_over("t1");
}

/// A minimal callee over TLS (SIPp has no TLS): registers with Digest, answers the INVITE.
struct TlsPhone {
    c: Client,
}

impl TlsPhone {
    fn register(server: &Server, user: &str, pw: &str) -> TlsPhone {
        let mut c = Client::tls(server.tls.expect("tls"), None).expect("handshake");
        let mut reg = Register::new(user);
        reg.contact = Some(format!("<sip:{user}@{};transport=tls>", c.local));
        let r = register(&mut c, &reg, pw, "SHA-256");
        assert_eq!(r.status(), 200, "{}", r.text);
        TlsPhone { c }
    }

    /// The next request (skipping nothing: the proxy sends only requests here).
    fn next(&mut self, what: &str) -> Resp {
        self.c
            .recv(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("TLS phone: no {what}"))
    }

    fn answer(&mut self, req: &Resp, status: u16, reason: &str, to_tag: &str, sdp: bool) {
        let msg = response_to(req, status, reason, to_tag, &tls_contact(&self.c), sdp);
        self.c.send_raw(msg.as_bytes());
    }
}

/// The Contact URI of bob's responses in these tests.
fn tls_contact(bob: &Client) -> String {
    format!("sip:bob@{};transport=tls", bob.local)
}

/// Acceptance 1, third case: SIPp caller over UDP, callee over TLS (a rustls client).
/// The transport changes, so sipward Record-Routes twice.
#[test]
fn call_from_udp_to_tls() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let server = start_binary();
    let mut phone = TlsPhone::register(&server, "bob", BOB_PW);
    let call_id = format!("call-{}", rand_token());
    let uac_port = free_port();
    let uac = Sipp::phone(
        &server,
        Role::Caller,
        "uac-call.xml",
        "u1",
        uac_port,
        &call_id,
    );
    let invite = phone.next("INVITE");
    assert!(
        invite.text.starts_with("INVITE sip:bob@"),
        "{}",
        invite.text
    );
    assert_eq!(invite.header("Call-ID"), Some(call_id.clone()));
    let rr = invite.headers("Record-Route");
    assert_eq!(rr.len(), 2, "double Record-Route (UDP in, TLS out): {rr:?}");
    assert!(
        rr[0].contains("transport=tls") && !rr[1].contains("transport="),
        "{rr:?}"
    );
    phone.answer(&invite, 180, "Ringing", "bobtag", false);
    phone.answer(&invite, 200, "OK", "bobtag", true);
    let ack = phone.next("ACK");
    assert!(ack.text.starts_with("ACK sip:bob@"), "{}", ack.text);
    let bye = phone.next("BYE");
    assert!(bye.text.starts_with("BYE sip:bob@"), "{}", bye.text);
    phone.answer(&bye, 200, "OK", "", false);
    uac.expect_success(Duration::from_secs(30));
    assert_eq!(proxied(&server, "BYE", "2xx"), 1.0);
}

/// Acceptance 2: CANCEL before answer. The callee gets CANCEL and answers 487; the caller
/// gets 200 for its CANCEL, then 487, and ACKs.
#[test]
fn cancel_before_answer() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let server = start_binary();
    let call_id = format!("cancel-{}", rand_token());
    let (uas_port, uac_port) = (free_port(), free_port());
    let uas = Sipp::phone(
        &server,
        Role::Callee,
        "uas-ring-cancel.xml",
        "u1",
        uas_port,
        &call_id,
    );
    wait_bindings(&server, 1.0);
    let uac = Sipp::phone(
        &server,
        Role::Caller,
        "uac-cancel.xml",
        "u1",
        uac_port,
        &call_id,
    );
    uac.expect_success_with(Duration::from_secs(40), &[&uas]);
    uas.expect_success(Duration::from_secs(10));
    assert_eq!(proxied(&server, "INVITE", "4xx"), 1.0, "the 487 went up");
}

/// Acceptance 3: two bindings for bob ring in parallel; the first 200 wins and the other
/// branch is cancelled (it answers 487 and gets sipward's ACK).
#[test]
fn fork_to_two_bindings_first_200_wins() {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let server = start_binary();
    let call_id = format!("fork-{}", rand_token());
    let (answer_port, ring_port, uac_port) = (free_port(), free_port(), free_port());
    let ringer = Sipp::phone(
        &server,
        Role::Callee,
        "uas-ring-cancel.xml",
        "u1",
        ring_port,
        &call_id,
    );
    wait_bindings(&server, 1.0);
    let answerer = Sipp::phone(
        &server,
        Role::Callee,
        "uas-answer.xml",
        "u1",
        answer_port,
        &call_id,
    );
    wait_bindings(&server, 2.0);
    let uac = Sipp::phone(
        &server,
        Role::Caller,
        "uac-call.xml",
        "u1",
        uac_port,
        &call_id,
    );
    uac.expect_success_with(Duration::from_secs(40), &[&answerer, &ringer]);
    answerer.expect_success(Duration::from_secs(10));
    ringer.expect_success(Duration::from_secs(10));
    assert_eq!(
        server.metric("sipward_proxy_branches_total"),
        3.0,
        "2 INVITE branches + BYE"
    );
}

// ---- Rust-driven cases -------------------------------------------------------------------

/// An INVITE from alice to `to`, optionally with Proxy-Authorization and extra header lines.
fn invite(
    c: &Client,
    to: &str,
    call_id: &str,
    cseq: u32,
    branch: &str,
    extra: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m = format!(
        "INVITE sip:{to}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\nTo: <sip:{to}@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@{}>\r\n{extra}",
        c.local, c.local
    )
    .into_bytes();
    m.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    m.extend_from_slice(body);
    m
}

fn ack_non_2xx(c: &mut Client, to: &str, call_id: &str, cseq: u32, branch: &str, resp: &Resp) {
    let msg = format!(
        "ACK sip:{to}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\nTo: {}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
        c.local,
        resp.header("To").unwrap()
    );
    c.send_raw(msg.as_bytes());
}

/// Sends alice's INVITE to `to` through the 407 challenge; returns the first response to
/// the authenticated INVITE and the request bytes (for retransmission).
fn authenticated_invite(
    c: &mut Client,
    to: &str,
    call_id: &str,
    extra: &str,
    body: &[u8],
) -> (Resp, Vec<u8>) {
    let b1 = format!("z9hG4bK{}", rand_token());
    c.send_raw(&invite(c, to, call_id, 1, &b1, extra, body));
    let r = first_final(c);
    assert_eq!(r.status(), 407, "{}", r.text);
    ack_non_2xx(c, to, call_id, 1, &b1, &r);
    let ruri = format!("sip:{to}@{DOMAIN}");
    let pa = authorization(
        "MD5",
        "alice",
        ALICE_PW,
        "INVITE",
        &ruri,
        &r.nonce(),
        1,
        &rand_token(),
    );
    let b2 = format!("z9hG4bK{}", rand_token());
    let bytes = invite(
        c,
        to,
        call_id,
        2,
        &b2,
        &format!("Proxy-Authorization: {pa}\r\n{extra}"),
        body,
    );
    c.send_raw(&bytes);
    (first_final_or_trying(c), bytes)
}

/// The first response that is not 100 Trying.
fn first_final(c: &mut Client) -> Resp {
    loop {
        let r = c.recv(Duration::from_secs(5)).expect("a response");
        if r.status() != 100 {
            return r;
        }
    }
}

fn first_final_or_trying(c: &mut Client) -> Resp {
    c.recv(Duration::from_secs(5)).expect("a response")
}

/// Acceptance 4: unauthenticated INVITE → 407 before any lookup, the same for an existing
/// and a non-existing callee; then 404 for an unknown user and 480 for an unregistered one
/// (both only after authentication); Max-Forwards 0 → 483; a loop → 482.
#[test]
fn refusals_407_404_480_483_482() {
    let server = start();
    let mut c = Client::new(Proto::Udp, server.udp);
    // 407 for bob (exists) and for nobody (does not): same status line and challenge shape.
    let mut shapes = Vec::new();
    for to in ["bob", "nobody"] {
        let call_id = rand_token();
        let branch = format!("z9hG4bK{}", rand_token());
        c.send_raw(&invite(&c, to, &call_id, 1, &branch, "", b""));
        let r = first_final(&mut c);
        assert_eq!(r.status_line(), "SIP/2.0 407 Proxy Authentication Required");
        ack_non_2xx(&mut c, to, &call_id, 1, &branch, &r);
        let names: Vec<String> = r
            .text
            .lines()
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
            .collect();
        let challenge: Vec<String> = r
            .headers("Proxy-Authenticate")
            .iter()
            .map(|h| h.split("nonce=").next().unwrap().to_string())
            .collect();
        shapes.push((names, challenge));
    }
    assert_eq!(
        shapes[0], shapes[1],
        "407 for an existing and a missing callee differ"
    );

    let (r, _) = authenticated_invite(&mut c, "nobody", &rand_token(), "", b"");
    let r = if r.status() == 100 {
        first_final(&mut c)
    } else {
        r
    };
    assert_eq!(r.status(), 404, "{}", r.text);
    let (r, _) = authenticated_invite(&mut c, "carol", &rand_token(), "", b"");
    let r = if r.status() == 100 {
        first_final(&mut c)
    } else {
        r
    };
    assert_eq!(r.status(), 480, "{}", r.text);

    // Max-Forwards: 0 is refused before authentication.
    let call_id = rand_token();
    let branch = format!("z9hG4bK{}", rand_token());
    let msg = String::from_utf8(invite(&c, "bob", &call_id, 1, &branch, "", b"")).unwrap();
    c.send_raw(
        msg.replace("Max-Forwards: 70", "Max-Forwards: 0")
            .as_bytes(),
    );
    assert_eq!(first_final(&mut c).status(), 483);

    // A loop: bob's phone sends the forwarded INVITE straight back to sipward with the
    // original Request-URI (as a misconfigured forwarder would).
    let mut bob = Client::new(Proto::Udp, server.udp);
    let mut reg = Register::new("bob");
    reg.contact = Some(format!("<sip:bob@{}>", bob.local));
    assert_eq!(register(&mut bob, &reg, BOB_PW, "MD5").status(), 200);
    let call_id = rand_token();
    let (trying, _) = authenticated_invite(&mut c, "bob", &call_id, "", b"");
    assert_eq!(trying.status(), 100);
    let fwd = bob.recv(Duration::from_secs(5)).expect("forwarded INVITE");
    let back = fwd.text.replacen(
        &format!("INVITE sip:bob@{}", bob.local),
        &format!("INVITE sip:bob@{DOMAIN}"),
        1,
    );
    assert_ne!(back, fwd.text, "Request-URI restored");
    bob.send_raw(back.as_bytes());
    let looped = std::iter::from_fn(|| bob.recv(Duration::from_secs(5)))
        .find(|m| m.status() != 0)
        .expect("a response to the looped INVITE");
    assert_eq!(looped.status_line(), "SIP/2.0 482 Loop Detected");
}

/// A Rust-driven call: bob's UDP phone has alice's authenticated INVITE (sent with
/// `extra` header lines and `body`), which sipward answered 100.
struct Invited {
    /// Bound by every test (a `..` would drop it, and the server with it).
    server: Server,
    bob: Client,
    /// alice's UDP client.
    c: Client,
    call_id: String,
    /// The authenticated INVITE as sent (for retransmission).
    sent: Vec<u8>,
    /// The INVITE as it reached bob.
    fwd: Resp,
}

fn invite_bob(extra: &str, body: &[u8]) -> Invited {
    let server = start();
    let mut bob = bob_phone(&server);
    let mut c = Client::new(Proto::Udp, server.udp);
    let call_id = rand_token();
    let (trying, sent) = authenticated_invite(&mut c, "bob", &call_id, extra, body);
    assert_eq!(trying.status(), 100);
    let fwd = bob.recv(Duration::from_secs(5)).expect("forwarded INVITE");
    Invited {
        server,
        bob,
        c,
        call_id,
        sent,
        fwd,
    }
}

/// A UDP phone registered as bob.
fn bob_phone(server: &Server) -> Client {
    let mut bob = Client::new(Proto::Udp, server.udp);
    let mut reg = Register::new("bob");
    reg.contact = Some(format!("<sip:bob@{}>", bob.local));
    assert_eq!(register(&mut bob, &reg, BOB_PW, "MD5").status(), 200);
    bob
}

/// Acceptance 5: wsinv.dat's unknown headers (one folded) and an SDP body reach the callee
/// byte for byte.
#[test]
fn unknown_headers_and_body_pass_byte_for_byte() {
    let server = start();
    let mut bob = bob_phone(&server);
    let wsinv = std::fs::read(testdata("rfc4475/wsinv.dat")).expect("wsinv.dat");
    let text = String::from_utf8_lossy(&wsinv).into_owned();
    let start = text.find("NewFangledHeader:").expect("NewFangledHeader");
    let end = text
        .find("Content-Type:")
        .expect("after the unknown headers");
    let unknown = &text[start..end];
    assert!(
        unknown.contains("\r\n continued newfangled value\r\n"),
        "folded line kept"
    );
    let body = &wsinv[text.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.len(), 150, "wsinv's SDP body");
    let extra = format!("{unknown}Content-Type: application/sdp\r\n");
    let mut c = Client::new(Proto::Udp, server.udp);
    let (trying, sent) = authenticated_invite(&mut c, "bob", &rand_token(), &extra, body);
    assert_eq!(trying.status(), 100);
    let fwd = bob.recv(Duration::from_secs(5)).expect("forwarded INVITE");
    assert!(
        fwd.text.contains(unknown),
        "unknown headers changed:\n{}",
        fwd.text
    );
    let got_body = &fwd.text.as_bytes()[fwd.text.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(got_body, body, "body changed");
    let sent_body = &sent[sent.len() - body.len()..];
    assert_eq!(sent_body, body);
}

/// Acceptance 6: a 200 retransmitted by the callee reaches the caller each time; the
/// caller's INVITE retransmission is absorbed (the callee sees one INVITE) and answered
/// from the server transaction.
#[test]
fn retransmitted_200_relayed_and_retransmitted_invite_absorbed() {
    let Invited {
        server: _server,
        mut bob,
        mut c,
        sent: invite_bytes,
        fwd,
        ..
    } = invite_bob("", b"");
    // The caller retransmits its INVITE: answered 100 again, not forwarded again.
    c.send_raw(&invite_bytes);
    let again = c
        .recv(Duration::from_secs(2))
        .expect("replayed provisional");
    assert_eq!(again.status(), 100);
    let ok = response_to(&fwd, 200, "OK", "bobtag", &tls_contact(&bob), true);
    bob.send_raw(ok.as_bytes());
    let first = first_final(&mut c);
    assert_eq!(first.status(), 200, "{}", first.text);
    bob.send_raw(ok.as_bytes());
    let second = c
        .recv(Duration::from_secs(2))
        .expect("the retransmitted 200");
    assert_eq!(second.status(), 200);
    assert_eq!(second.text, first.text, "relayed unchanged");
    // bob got exactly one INVITE (no second copy within T1·2, when sipward's own Timer A
    // would not fire yet either: it stopped at the first response).
    let extra = bob.recv(Duration::from_millis(1500));
    assert!(
        extra.as_ref().is_none_or(|m| !m.text.starts_with("INVITE")),
        "the INVITE retransmission was forwarded: {extra:?}"
    );
}

/// Timer G: a non-2xx final relayed to a UDP caller is retransmitted until the caller's ACK;
/// sipward ACKs the callee's 486 itself (hop by hop).
#[test]
fn non_2xx_final_is_retransmitted_until_acked() {
    let Invited {
        server: _server,
        mut bob,
        mut c,
        call_id,
        sent,
        fwd,
        ..
    } = invite_bob("", b"");
    let busy = response_to(&fwd, 486, "Busy Here", "bobtag", &tls_contact(&bob), false);
    bob.send_raw(busy.as_bytes());
    let ack = bob
        .recv(Duration::from_secs(5))
        .expect("sipward's ACK for the 486");
    assert!(ack.text.starts_with("ACK sip:bob@"), "{}", ack.text);
    let first = first_final(&mut c);
    assert_eq!(first.status(), 486);
    // No ACK from the caller: the 486 comes again (Timer G, T1 = 500 ms).
    let again = c.recv(Duration::from_secs(3)).expect("retransmitted 486");
    assert_eq!(again.status(), 486);
    assert_eq!(again.text, first.text);
    let text = String::from_utf8(sent).unwrap();
    let branch = text
        .lines()
        .find(|l| l.starts_with("Via:"))
        .and_then(|l| l.split("branch=").nth(1))
        .and_then(|b| b.split(';').next())
        .unwrap()
        .to_string();
    ack_non_2xx(&mut c, "bob", &call_id, 2, &branch, &first);
    // Drain anything already in flight, then expect silence.
    std::thread::sleep(Duration::from_millis(200));
    while c.recv(Duration::from_millis(50)).is_some() {}
    assert!(
        c.recv(Duration::from_millis(2500)).is_none(),
        "486 still retransmitted after the ACK"
    );
}

/// RFC 3261 §16.4 strict-routing interop: a BYE whose Request-URI is sipward's Record-Route
/// URI and whose last Route is the callee reaches the callee with that Request-URI and
/// without the Route.
#[test]
fn strict_routed_bye_reaches_the_callee() {
    let Invited {
        server: _server,
        mut bob,
        mut c,
        call_id,
        fwd,
        ..
    } = invite_bob("", b"");
    let ok = response_to(&fwd, 200, "OK", "bobtag", &tls_contact(&bob), true);
    bob.send_raw(ok.as_bytes());
    let answer = first_final(&mut c);
    assert_eq!(answer.status(), 200);
    let rr = answer.header("Record-Route").expect("Record-Route");
    let rr_uri = rr
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    let contact = format!("sip:bob@{}", bob.local);
    // A strict router puts the next hop in the Request-URI and the target last in Route.
    let bye = format!(
        "BYE {rr_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nRoute: <{contact}>\r\nFrom: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\n\
         To: <sip:bob@{DOMAIN}>;tag=bobtag\r\nCall-ID: {call_id}\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n",
        c.local,
        rand_token()
    );
    c.send_raw(bye.as_bytes());
    let got = std::iter::from_fn(|| bob.recv(Duration::from_secs(5)))
        .find(|m| m.text.starts_with("BYE"))
        .expect("the BYE at bob");
    assert!(
        got.text.starts_with(&format!("BYE {contact} SIP/2.0")),
        "{}",
        got.text
    );
    assert!(
        got.header("Route").is_none(),
        "the last Route was removed: {}",
        got.text
    );
    let ok = response_to(&got, 200, "OK", "", &tls_contact(&bob), false);
    bob.send_raw(ok.as_bytes());
    let r = first_final(&mut c);
    assert_eq!(r.status(), 200, "{}", r.text);
    assert_eq!(r.header("CSeq").as_deref(), Some("3 BYE"));
}

/// A Digest credential header value for `realm` (never verified by anyone: what matters is
/// whether it reaches the callee).
fn credential(realm: &str, tag: &str) -> String {
    format!(
        "Digest username=\"alice\", realm=\"{realm}\", nonce=\"nonce-{tag}\", \
         uri=\"sip:bob@{DOMAIN}\", response=\"0123456789abcdef0123456789abcdef\", \
         cnonce=\"cnonce-{tag}\", qop=auth, nc=00000001, algorithm=MD5"
    )
}

/// The credential header lines of a request, as `name: value`.
fn credential_lines(req: &Resp) -> Vec<String> {
    ["Authorization", "Proxy-Authorization"]
        .iter()
        .flat_map(|n| req.headers(n).into_iter().map(move |v| format!("{n}: {v}")))
        .collect()
}

/// Issue 12 item 10: the caller's credentials for our realm (the Proxy-Authorization that
/// authenticated the INVITE, and an Authorization for our realm) are consumed: bob's phone
/// gets none of them, neither in the INVITE nor in an in-dialog BYE. Credentials for another
/// realm pass byte for byte. Before the fix bob received alice's username, nonce, cnonce and
/// response.
#[test]
fn credentials_for_our_realm_never_reach_the_callee() {
    let server = start();
    let mut bob = bob_phone(&server);
    let mut c = Client::new(Proto::Udp, server.udp);
    let other_proxy = format!(
        "Proxy-Authorization: {}\r\n",
        credential("edge.example.net", "p")
    );
    let other_uas = format!("Authorization: {}\r\n", credential("bob.example.org", "u"));
    let ours_uas = format!("Authorization: {}\r\n", credential(DOMAIN, "ours"));
    let extra = format!("{other_proxy}{ours_uas}{other_uas}");
    let call_id = rand_token();
    let (trying, sent) = authenticated_invite(&mut c, "bob", &call_id, &extra, b"");
    assert_eq!(trying.status(), 100, "{}", trying.text);
    assert!(
        String::from_utf8_lossy(&sent).contains(&format!("realm=\"{DOMAIN}\"")),
        "the caller did send credentials for our realm"
    );
    let fwd = bob.recv(Duration::from_secs(5)).expect("forwarded INVITE");
    assert!(fwd.text.starts_with("INVITE "), "{}", fwd.text);
    let lines = credential_lines(&fwd);
    assert_eq!(
        lines,
        vec![
            other_uas.trim_end().to_owned(),
            other_proxy.trim_end().to_owned()
        ],
        "credentials at the callee:\n{}",
        fwd.text
    );
    assert!(
        fwd.text.contains(&other_proxy) && fwd.text.contains(&other_uas),
        "other realms' credentials changed:\n{}",
        fwd.text
    );
    assert!(
        !fwd.text.contains(&format!("realm=\"{DOMAIN}\"")),
        "{}",
        fwd.text
    );

    // The call is answered; alice's BYE (loose-routed through sipward) carries her
    // credentials again, as some phones do: consumed too.
    let ok = response_to(&fwd, 200, "OK", "bobtag", &tls_contact(&bob), true);
    bob.send_raw(ok.as_bytes());
    let answer = first_final(&mut c);
    assert_eq!(answer.status(), 200, "{}", answer.text);
    let rr = answer.header("Record-Route").expect("Record-Route");
    let contact = format!("sip:bob@{}", bob.local);
    let bye = format!(
        "BYE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nRoute: {rr}\r\nFrom: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\n\
         To: <sip:bob@{DOMAIN}>;tag=bobtag\r\nCall-ID: {call_id}\r\nCSeq: 3 BYE\r\n\
         Proxy-Authorization: {}\r\n{other_proxy}Content-Length: 0\r\n\r\n",
        c.local,
        rand_token(),
        credential(DOMAIN, "bye"),
    );
    c.send_raw(bye.as_bytes());
    let got = std::iter::from_fn(|| bob.recv(Duration::from_secs(5)))
        .find(|m| m.text.starts_with("BYE"))
        .expect("the BYE at bob");
    assert_eq!(
        credential_lines(&got),
        vec![other_proxy.trim_end().to_owned()],
        "credentials in the BYE at the callee:\n{}",
        got.text
    );
}

/// Issue 12 item 11: a Contact registered with URI headers and a `method` parameter is kept
/// verbatim by the registrar (the 200 lists it as registered, so the phone recognises its
/// binding), but when it becomes a Request-URI the headers and `method` are gone (RFC 3261
/// §19.1.1, §19.1.5 table), in the INVITE and in sipward's own ACK on that branch. Before
/// the fix the INVITE went to `sip:bob@…;method=INVITE?Route=%3Csip:evil%3E&Call-ID=x`.
#[test]
fn uri_headers_of_a_contact_never_reach_the_request_uri() {
    let server = start();
    let mut bob = Client::new(Proto::Udp, server.udp);
    let target = format!("sip:bob@{};method=INVITE", bob.local);
    let registered = format!("{target}?Route=%3Csip:evil.example%3E&Call-ID=x");
    let mut reg = Register::new("bob");
    reg.contact = Some(format!("<{registered}>"));
    let r = register(&mut bob, &reg, BOB_PW, "MD5");
    assert_eq!(r.status(), 200, "{}", r.text);
    let listed = r.header("Contact").expect("Contact in the 200");
    assert!(
        listed.starts_with(&format!("<{registered}>")),
        "the 200 lists the Contact as registered: {listed}"
    );

    let mut c = Client::new(Proto::Udp, server.udp);
    let call_id = rand_token();
    let (trying, _) = authenticated_invite(&mut c, "bob", &call_id, "", b"");
    assert_eq!(trying.status(), 100, "{}", trying.text);
    let fwd = bob.recv(Duration::from_secs(5)).expect("forwarded INVITE");
    let plain = format!("sip:bob@{}", bob.local);
    assert!(
        fwd.text.starts_with(&format!("INVITE {plain} SIP/2.0\r\n")),
        "{}",
        fwd.text
    );
    assert_eq!(fwd.header("Call-ID"), Some(call_id.clone()));
    assert!(!fwd.text.contains("evil"), "{}", fwd.text);

    let busy = response_to(&fwd, 486, "Busy Here", "bobtag", &tls_contact(&bob), false);
    bob.send_raw(busy.as_bytes());
    let ack = bob
        .recv(Duration::from_secs(5))
        .expect("sipward's ACK for the 486");
    assert!(
        ack.text.starts_with(&format!("ACK {plain} SIP/2.0\r\n")),
        "{}",
        ack.text
    );
    assert_eq!(first_final(&mut c).status(), 486);
}

/// The proxy holds at most `sip.max_transactions` response contexts (issue 14: app used to
/// pass the built-in 100 000, ignoring the setting). With the smallest cap, 1 000, 1 000
/// answered calls keep their contexts (Timers L and M, 64·T1), while their server
/// transactions are completed and give way; the next INVITE gets 503 from the proxy.
#[test]
fn the_proxy_holds_at_most_sip_max_transactions_contexts() {
    const CAP: u32 = 1000;
    let server = Server::start(&Options {
        accounts: &[("alice", ALICE_PW), ("bob", BOB_PW)],
        // 64·T1 = 128 s: every context outlives the loop below.
        sip: "max_transactions = 1000\nt1_ms = 2000",
        ..Options::default()
    });
    let mut bob = bob_phone(&server);
    // WINDOW callers, each with its own challenge and Call-ID; every INVITE of a caller reuses
    // its nonce with a rising nc (each has its own CSeq, so none is a loop). One INVITE per
    // caller is in flight at a time, so each nonce's counts arrive in order.
    const WINDOW: u32 = 20;
    struct Caller {
        c: Client,
        call_id: String,
        nonce: String,
    }
    let mut callers: Vec<Caller> = (0..WINDOW)
        .map(|_| {
            let mut c = Client::new(Proto::Udp, server.udp);
            let call_id = rand_token();
            let b1 = format!("z9hG4bK{}", rand_token());
            c.send_raw(&invite(&c, "bob", &call_id, 1, &b1, "", b""));
            let challenge = first_final(&mut c);
            assert_eq!(challenge.status(), 407, "{}", challenge.text);
            ack_non_2xx(&mut c, "bob", &call_id, 1, &b1, &challenge);
            let nonce = challenge.nonce();
            Caller { c, call_id, nonce }
        })
        .collect();
    let send_invite = |caller: &mut Caller, cseq: u32| {
        let pa = authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "INVITE",
            &format!("sip:bob@{DOMAIN}"),
            &caller.nonce,
            cseq - 1,
            &rand_token(),
        );
        let branch = format!("z9hG4bK{}", rand_token());
        let extra = format!("Proxy-Authorization: {pa}\r\n");
        let bytes = invite(
            &caller.c,
            "bob",
            &caller.call_id,
            cseq,
            &branch,
            &extra,
            b"",
        );
        caller.c.send_raw(&bytes);
    };
    // Every call is forwarded, answered 200 by bob and relayed, so each keeps its context.
    for round in 0..CAP / WINDOW {
        let cseq = 2 + round;
        for caller in &mut callers {
            send_invite(caller, cseq);
        }
        for _ in 0..WINDOW {
            let fwd = bob.recv(Duration::from_secs(5)).expect("forwarded INVITE");
            let ok = response_to(&fwd, 200, "OK", "bobtag", &tls_contact(&bob), false);
            bob.send_raw(ok.as_bytes());
        }
        for caller in &mut callers {
            let r = first_final(&mut caller.c);
            assert_eq!(r.status(), 200, "call with CSeq {cseq}: {}", r.text);
        }
    }
    assert_eq!(server.metric("sipward_proxy_contexts"), f64::from(CAP));
    let last = &mut callers[0];
    send_invite(last, 2 + CAP / WINDOW);
    let r = loop {
        match last.c.recv(Duration::from_secs(5)) {
            Some(r) if r.status() == 100 => continue,
            other => break other,
        }
    };
    assert_eq!(
        r.map(|r| r.status()),
        Some(503),
        "the INVITE over the cap must be refused, not forwarded"
    );
    assert_eq!(proxied(&server, "INVITE", "overloaded"), 1.0);
}
