//! sipward on a real network (issue 15, part A), over real sockets: a listener on a wildcard
//! address writes the address each request arrived on (the binary; 127.0.0.2 is one of the
//! host's loopback addresses), an `advertise` name replaces it, the names that mean us (domain,
//! alias, `localhost`, with and without port) are ours in a Route, IPv6 listeners (`[::1]`,
//! `[::]`) serve REGISTER and calls beside IPv4, and `registrar.path` (store, strict, ignore),
//! finally with Kamailio as a real edge proxy that adds Path.

mod common;
use common::*;
use std::os::unix::process::CommandExt;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ALICE_PW: &str = "alice-secret-1";
const BOB_PW: &str = "bob-secret-2";
const CAROL_PW: &str = "carol-secret-3";
const ACCOUNTS: &[Account<'static>] = &[("alice", ALICE_PW), ("bob", BOB_PW), ("carol", CAROL_PW)];

/// The binary with the `[sip]` lines `sip` (`{port}` stands for a free port, used by every
/// listener); the server's `udp`/`tcp` are 127.0.0.1 on that port.
fn binary(sip: &str) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, http) = (free_port(), free_port());
    let config_path = write_config(dir.path(), &sip.replace("{port}", &port.to_string()), http);
    Server::start_with_file(config_path, dir, port, http, None)
}

fn write_config(dir: &Path, sip: &str, http: u16) -> std::path::PathBuf {
    let mut accounts = String::new();
    for (user, pw) in ACCOUNTS {
        let file = dir.join(format!("{user}.pw"));
        write_secret(&file, pw);
        accounts.push_str(&format!(
            "[[accounts]]\nusername = \"{user}\"\ndomain = \"{DOMAIN}\"\nkind = \"device\"\npassword_file = \"{}\"\n\n",
            file.display()
        ));
    }
    let text = format!(
        "[log]\nlevel = \"info\"\n\n[sip]\n{sip}\nudp_workers = 2\n\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\nadmin_token_sha256 = \"{}\"\n\n\
         [[domains]]\nname = \"{DOMAIN}\"\nalgorithms = [\"MD5\"]\n\n{accounts}",
        sha256_hex(ADMIN_TOKEN.as_bytes())
    );
    let path = dir.join("sipward.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `sipward check-config`: (exit code, stdout, stderr).
fn check_config(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipward"))
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run sipward check-config");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// `user` registered from client `c` (its own address as Contact, `;transport=tcp` on TCP).
fn registered(mut c: Client, user: &str, pw: &str) -> Client {
    let mut reg = Register::new(user);
    let transport = if c.proto == Proto::Tcp {
        ";transport=tcp"
    } else {
        ""
    };
    reg.contact = Some(format!("<sip:{user}@{}{transport}>", c.local));
    let r = register(&mut c, &reg, pw, "MD5");
    assert_eq!(r.status(), 200, "{user} registers: {}", r.text);
    c
}

/// An INVITE from alice (client `c`) to `to`, with extra header lines.
fn invite(c: &Client, to: &str, call_id: &str, cseq: u32, branch: &str, extra: &str) -> String {
    format!(
        "INVITE sip:{to}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\nTo: <sip:{to}@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@{}>\r\n{extra}Content-Length: 0\r\n\r\n",
        c.proto.via(),
        c.local,
        c.local
    )
}

/// Alice's INVITE to `to` through the 407 challenge; the answer to the authenticated one
/// (100 Trying when forwarded).
fn call(c: &mut Client, to: &str, call_id: &str, extra: &str) -> Resp {
    let b1 = format!("z9hG4bK{}", rand_token());
    c.send_raw(invite(c, to, call_id, 1, &b1, extra).as_bytes());
    let r = final_for(c, call_id);
    assert_eq!(r.status(), 407, "{}", r.text);
    let ack = format!(
        "ACK sip:{to}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={b1};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n",
        c.proto.via(),
        c.local,
        r.header("To").unwrap()
    );
    c.send_raw(ack.as_bytes());
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
    let extra = format!("Proxy-Authorization: {pa}\r\n{extra}");
    c.send_raw(invite(c, to, call_id, 2, &b2, &extra).as_bytes());
    next_for(c, call_id)
}

/// The next message on `c` for `call_id` (others, such as retransmissions of an earlier
/// call, are skipped).
fn next_for(c: &mut Client, call_id: &str) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(m) = c.recv(Duration::from_secs(1)) {
            if m.header("Call-ID").as_deref() == Some(call_id) {
                return m;
            }
        }
    }
    panic!("nothing for {call_id} within 5 s");
}

/// The next final response for `call_id`.
fn final_for(c: &mut Client, call_id: &str) -> Resp {
    loop {
        let r = next_for(c, call_id);
        if r.status() >= 200 {
            return r;
        }
    }
}

fn top_via(m: &Resp) -> String {
    m.header("Via").expect("a Via")
}

/// An in-dialog request (BYE) from `c` with `routes` and Request-URI `target`.
#[allow(clippy::too_many_arguments)]
fn bye(c: &Client, target: &str, routes: &[String], from: &str, to: &str, call_id: &str) -> String {
    let mut m = format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\n",
        c.proto.via(),
        c.local,
        rand_token()
    );
    for r in routes {
        m.push_str(&format!("Route: {r}\r\n"));
    }
    m.push_str(&format!(
        "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    ));
    m
}

/// Acceptance (issue 15): a proxied INVITE through a `0.0.0.0` listener carries the address
/// the request really arrived on, never `0.0.0.0`: alice sends to 127.0.0.2, bob registered
/// through 127.0.0.1. Over UDP the packet information tells it (and the answer leaves from
/// 127.0.0.2), over TCP the accepted socket's local address. The in-dialog BYE naming both
/// addresses in its Route set is routed as ours. `check-config` warns about the listener.
#[test]
fn a_wildcard_listener_writes_the_address_each_request_arrived_on() {
    let server = binary("udp = [\"0.0.0.0:{port}\"]\ntcp = [\"0.0.0.0:{port}\"]");
    let port = server.udp.port();
    let (code, stdout, stderr) = check_config(&server.config_path);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: sip.udp[0]: 0.0.0.0:{port} listens on every address and has no advertise"
        )) && stderr.contains("warning: sip.tcp[0]"),
        "{stderr}"
    );
    assert!(
        server.stderr().contains("listens on every address"),
        "start-up warns too"
    );

    // The answer to a request sent to 127.0.0.2 comes from 127.0.0.2 (RFC 3581 §4).
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let options = format!(
        "OPTIONS sip:127.0.0.2:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{DOMAIN}>;tag=p\r\nTo: <sip:127.0.0.2:{port}>\r\n\
         Call-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        raw.local_addr().unwrap(),
        rand_token(),
        rand_token()
    );
    raw.send_to(options.as_bytes(), ("127.0.0.2", port))
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = raw.recv_from(&mut buf).expect("OPTIONS answered");
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(
        from,
        SocketAddr::from(([127, 0, 0, 2], port)),
        "answered from the address it was sent to"
    );

    let mut bob = registered(Client::new(Proto::Udp, server.udp), "bob", BOB_PW);
    let to_127_0_0_2 = SocketAddr::from(([127, 0, 0, 2], port));
    let mut alice = Client::udp_from("127.0.0.1", to_127_0_0_2);
    let call_id = rand_token();
    assert_eq!(call(&mut alice, "bob", &call_id, "").status(), 100);
    let fwd = next_for(&mut bob, &call_id);
    assert!(
        !fwd.text.contains("0.0.0.0"),
        "a wildcard address reached the callee:\n{}",
        fwd.text
    );
    let via = top_via(&fwd);
    assert!(
        via.starts_with(&format!("SIP/2.0/UDP 127.0.0.1:{port};branch=")),
        "{via}"
    );
    let rr = fwd.headers("Record-Route");
    assert_eq!(rr.len(), 2, "in on 127.0.0.2, out on 127.0.0.1: {rr:?}");
    assert!(rr[0].contains(&format!("@127.0.0.1:{port};lr>")), "{rr:?}");
    assert!(rr[1].contains(&format!("@127.0.0.2:{port};lr>")), "{rr:?}");

    let contact = format!("sip:bob@{}", bob.local);
    bob.send_raw(response_to(&fwd, 200, "OK", "bobtag", &contact, false).as_bytes());
    // The relayed 200 leaves from the address alice sent her INVITE to.
    let (ok, from) = alice
        .recv_with_source(Duration::from_secs(5))
        .expect("the 200");
    assert_eq!(ok.status(), 200, "{}", ok.text);
    assert_eq!(
        from, to_127_0_0_2,
        "relayed from the address the INVITE arrived on"
    );
    // Alice's route set is the Record-Route reversed; both entries name us.
    let routes: Vec<String> = ok.headers("Record-Route").into_iter().rev().collect();
    let to = ok.header("To").unwrap();
    let from = format!("<sip:alice@{DOMAIN}>;tag=a{call_id}");
    alice.send_raw(bye(&alice, &contact, &routes, &from, &to, &call_id).as_bytes());
    let got = next_for(&mut bob, &call_id);
    assert!(got.text.starts_with("BYE "), "{}", got.text);
    assert!(
        got.header("Route").is_none(),
        "our Route entries removed: {}",
        got.text
    );

    // Over TCP to 127.0.0.2: the accepted connection's local address.
    let mut alice_tcp = Client::new(Proto::Tcp, to_127_0_0_2);
    let call_id = rand_token();
    assert_eq!(call(&mut alice_tcp, "bob", &call_id, "").status(), 100);
    let fwd = next_for(&mut bob, &call_id);
    let rr = fwd.headers("Record-Route");
    assert!(
        rr.iter()
            .any(|r| r.contains(&format!("@127.0.0.2:{port};transport=tcp;lr>"))),
        "{rr:?}"
    );
    assert!(!fwd.text.contains("0.0.0.0"), "{}", fwd.text);
}

/// Acceptance (issue 15): with `advertise = "203.0.113.7"` the callee sees that address in
/// sipward's Via and Record-Route, the callee's answer still matches, and an in-dialog
/// request whose Route names the advertised address is ours.
#[test]
fn an_advertised_address_is_what_the_callee_sees() {
    let server = binary(
        "udp = [{ addr = \"0.0.0.0:{port}\", advertise = \"203.0.113.7\" }]\ntcp = [\"127.0.0.1:{port}\"]",
    );
    let port = server.udp.port();
    let (code, stdout, stderr) = check_config(&server.config_path);
    assert_eq!(
        (code, stderr.contains("warning")),
        (0, false),
        "{stdout}{stderr}"
    );

    let mut bob = registered(Client::new(Proto::Udp, server.udp), "bob", BOB_PW);
    let mut alice = Client::new(Proto::Udp, server.udp);
    let call_id = rand_token();
    assert_eq!(call(&mut alice, "bob", &call_id, "").status(), 100);
    let fwd = next_for(&mut bob, &call_id);
    let via = top_via(&fwd);
    assert!(
        via.starts_with(&format!("SIP/2.0/UDP 203.0.113.7:{port};branch=")),
        "{via}"
    );
    let rr = fwd.headers("Record-Route");
    assert_eq!(rr.len(), 1, "{rr:?}");
    assert!(
        rr[0].ends_with(&format!("@203.0.113.7:{port};lr>")),
        "{rr:?}"
    );
    assert!(
        !fwd.text.contains("0.0.0.0") && !via.contains("127.0.0.1"),
        "{}",
        fwd.text
    );

    let contact = format!("sip:bob@{}", bob.local);
    bob.send_raw(response_to(&fwd, 200, "OK", "bobtag", &contact, false).as_bytes());
    assert_eq!(final_for(&mut alice, &call_id).status(), 200);
    // Bob hangs up along the Record-Route: the advertised address is us.
    let alice_contact = format!("sip:alice@{}", alice.local);
    let from = format!("{};tag=bobtag", fwd.header("To").unwrap());
    let to = fwd.header("From").unwrap();
    bob.send_raw(bye(&bob, &alice_contact, &rr, &from, &to, &call_id).as_bytes());
    let got = next_for(&mut alice, &call_id);
    assert!(got.text.starts_with("BYE "), "{}", got.text);
}

/// Acceptance (issue 15): the Route variants that got `403 Relaying Not Allowed` are ours:
/// `localhost` on the TLS port (a listener is on 127.0.0.1), the domain without and with our
/// port, an alias with port and transport. A Route to another port or host is still refused.
/// A Request-URI naming the alias is ours too (OPTIONS answered, REGISTER challenged).
#[test]
fn routes_naming_us_by_domain_alias_or_localhost_are_ours() {
    let server = Server::start(&Options {
        accounts: ACCOUNTS,
        tls: Some("off"),
        sip: "aliases = [\"sip.example.test\"]",
        ..Options::default()
    });
    let (udp, tls) = (server.udp.port(), server.tls.expect("tls").port());
    let mut bob = registered(Client::new(Proto::Udp, server.udp), "bob", BOB_PW);
    for route in [
        format!("<sip:localhost:{tls};transport=tls;lr>"),
        format!("<sip:{DOMAIN};lr>"),
        format!("<sip:{DOMAIN}:{udp};lr>"),
        format!("<sip:sip.example.test:{udp};transport=udp;lr>"),
    ] {
        let mut alice = Client::new(Proto::Udp, server.udp);
        let call_id = rand_token();
        let r = call(&mut alice, "bob", &call_id, &format!("Route: {route}\r\n"));
        assert_eq!(r.status(), 100, "{route}: {}", r.text);
        let fwd = next_for(&mut bob, &call_id);
        assert!(fwd.text.starts_with("INVITE "), "{route}: {}", fwd.text);
        assert!(
            fwd.header("Route").is_none(),
            "{route} removed: {}",
            fwd.text
        );
        bob.send_raw(
            response_to(&fwd, 486, "Busy Here", "b", "sip:bob@127.0.0.1", false).as_bytes(),
        );
        assert_eq!(final_for(&mut alice, &call_id).status(), 486);
    }
    for route in [
        format!("<sip:{DOMAIN}:1;lr>"),
        "<sip:203.0.113.9;lr>".to_owned(),
    ] {
        let mut alice = Client::new(Proto::Udp, server.udp);
        let call_id = rand_token();
        let b = format!("z9hG4bK{}", rand_token());
        alice.send_raw(
            invite(
                &alice,
                "bob",
                &call_id,
                1,
                &b,
                &format!("Route: {route}\r\n"),
            )
            .as_bytes(),
        );
        let r = final_for(&mut alice, &call_id);
        assert_eq!(
            r.status_line(),
            "SIP/2.0 403 Relaying Not Allowed",
            "{route}"
        );
    }
    let mut c = Client::new(Proto::Udp, server.udp);
    let options = format!(
        "OPTIONS sip:sip.example.test:{udp} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=o\r\nTo: <sip:sip.example.test>\r\n\
         Call-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        c.local,
        rand_token(),
        rand_token()
    );
    let r = c.request(&options).expect("OPTIONS answered");
    assert_eq!(r.status(), 200, "{}", r.text);
    assert!(
        r.header("Allow").is_some(),
        "answered by us, not forwarded: {}",
        r.text
    );
    let mut reg = Register::new("carol");
    reg.ruri = "sip:sip.example.test".into();
    assert_eq!(
        c.request(&reg.build(&c))
            .expect("REGISTER answered")
            .status(),
        401
    );
}

/// IPv6 beside IPv4: UDP on 127.0.0.1 and `[::]` (same port: the IPv6 socket is IPv6-only),
/// TCP on 127.0.0.1 and `[::1]`. bob registers over UDP/IPv6 through the wildcard, carol
/// over TCP/IPv6; alice calls bob over IPv4 and carol over IPv6; each callee sees sipward's
/// IPv6 address, never `[::]`.
#[test]
fn ipv6_listeners_register_and_call_beside_ipv4() {
    let server = binary(
        "udp = [\"127.0.0.1:{port}\", \"[::]:{port}\"]\ntcp = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]",
    );
    let port = server.udp.port();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut bob = registered(Client::udp_from("::1", v6), "bob", BOB_PW);
    let mut carol = registered(Client::new(Proto::Tcp, v6), "carol", CAROL_PW);
    let bindings = server.admin_bindings();
    assert!(
        bindings.contains(&format!("sip:bob@{}", bob.local)),
        "{bindings}"
    );
    assert!(
        bindings.contains(&format!("sip:carol@{};transport=tcp", carol.local)),
        "{bindings}"
    );

    // alice over IPv4 → bob over IPv6.
    let mut alice = Client::new(Proto::Udp, server.udp);
    let contact = format!("sip:bob@{}", bob.local);
    let expected = Relayed {
        via: format!("SIP/2.0/UDP [::1]:{port};branch="),
        record_route: [
            format!("@[::1]:{port};lr>"),
            format!("@127.0.0.1:{port};lr>"),
        ],
    };
    call_and_answer(&mut alice, &mut bob, "bob", &contact, &expected);

    // alice over IPv6 (through the [::] UDP socket) → carol over TCP on [::1].
    let mut alice6 = Client::udp_from("::1", v6);
    let contact = format!("sip:carol@{};transport=tcp", carol.local);
    let expected = Relayed {
        via: format!("SIP/2.0/TCP [::1]:{port};branch="),
        record_route: [
            format!("@[::1]:{port};transport=tcp;lr>"),
            format!("@[::1]:{port};lr>"),
        ],
    };
    call_and_answer(&mut alice6, &mut carol, "carol", &contact, &expected);
}

/// What the callee must see of sipward on a relayed INVITE: the start of the top Via, and
/// the two Record-Route entries (callee side first).
struct Relayed {
    via: String,
    record_route: [String; 2],
}

/// `caller` calls `user`; the INVITE reaches `callee` as `expected` says (never naming
/// `[::]`), the callee answers 200 from `contact`, and the caller gets it.
fn call_and_answer(
    caller: &mut Client,
    callee: &mut Client,
    user: &str,
    contact: &str,
    expected: &Relayed,
) {
    let call_id = rand_token();
    assert_eq!(call(caller, user, &call_id, "").status(), 100);
    let fwd = next_for(callee, &call_id);
    assert!(top_via(&fwd).starts_with(&expected.via), "{}", fwd.text);
    assert!(!fwd.text.contains("[::]"), "{}", fwd.text);
    let rr = fwd.headers("Record-Route");
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert!(
        rr[0].contains(&expected.record_route[0]) && rr[1].contains(&expected.record_route[1]),
        "{rr:?}"
    );
    let tag = format!("{user}tag");
    callee.send_raw(response_to(&fwd, 200, "OK", &tag, contact, false).as_bytes());
    assert_eq!(final_for(caller, &call_id).status(), 200);
}

/// A REGISTER as from an edge proxy: bob's contact, a Path naming `edge`, and `Supported:
/// path` when `supported`.
fn register_through(c: &mut Client, edge: SocketAddr, supported: bool) -> Register {
    let mut reg = Register::new("bob");
    reg.contact = Some(format!("<sip:bob@{}>", c.local));
    reg.extra.push(format!("Path: <sip:{edge};lr>"));
    if supported {
        reg.extra.push("Supported: path".into());
    }
    reg
}

/// `registrar.path`: `store` (the default) keeps a Path the REGISTER does not say it supports,
/// does not echo it, and a call to the phone goes to the edge proxy with the Path as Route;
/// `strict` answers 420 with `Unsupported: path` (and stores and echoes a supported one);
/// `ignore` drops it.
#[test]
fn path_policy_store_strict_and_ignore() {
    let edge = UdpSocket::bind("127.0.0.1:0").unwrap();
    edge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let edge_addr = edge.local_addr().unwrap();
    let path = format!("<sip:{edge_addr};lr>");

    let server = Server::start(&Options {
        accounts: ACCOUNTS,
        ..Options::default()
    });
    let mut bob = Client::new(Proto::Udp, server.udp);
    let reg = register_through(&mut bob, edge_addr, false);
    let ok = register(&mut bob, &reg, BOB_PW, "MD5");
    assert_eq!(ok.status(), 200, "{}", ok.text);
    assert!(
        ok.header("Path").is_none(),
        "not echoed without Supported: path: {}",
        ok.text
    );
    assert!(
        server.admin_bindings().contains(&path),
        "stored: {}",
        server.admin_bindings()
    );
    let mut alice = Client::new(Proto::Udp, server.udp);
    let call_id = rand_token();
    assert_eq!(call(&mut alice, "bob", &call_id, "").status(), 100);
    let mut buf = vec![0u8; 65535];
    let (n, _) = edge
        .recv_from(&mut buf)
        .expect("the INVITE goes to the edge proxy");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        text.starts_with(&format!("INVITE sip:bob@{} SIP/2.0", bob.local)),
        "{text}"
    );
    assert!(text.contains(&format!("\r\nRoute: {path}\r\n")), "{text}");

    let server = Server::start(&Options {
        accounts: ACCOUNTS,
        registrar: "path = \"strict\"",
        ..Options::default()
    });
    let mut bob = Client::new(Proto::Udp, server.udp);
    let reg = register_through(&mut bob, edge_addr, false);
    let refused = bob.request(&reg.build(&bob)).expect("an answer");
    assert_eq!(
        refused.status_line(),
        "SIP/2.0 420 Bad Extension",
        "{}",
        refused.text
    );
    assert_eq!(refused.header("Unsupported").as_deref(), Some("path"));
    let reg = register_through(&mut bob, edge_addr, true);
    let ok = register(&mut bob, &reg, BOB_PW, "MD5");
    assert_eq!(ok.status(), 200, "{}", ok.text);
    assert_eq!(
        ok.header("Path"),
        Some(path.clone()),
        "echoed when supported"
    );

    let server = Server::start(&Options {
        accounts: ACCOUNTS,
        registrar: "path = \"ignore\"",
        ..Options::default()
    });
    let mut bob = Client::new(Proto::Udp, server.udp);
    let reg = register_through(&mut bob, edge_addr, false);
    assert_eq!(register(&mut bob, &reg, BOB_PW, "MD5").status(), 200);
    let bindings = server.admin_bindings();
    assert!(
        bindings.contains("sip:bob@") && !bindings.contains(&path),
        "{bindings}"
    );
}

/// Kamailio, started by this test on loopback with tests/kamailio/edge.cfg.
struct Kamailio {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    fn start(sipward: SocketAddr) -> Kamailio {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("kamailio.log");
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kamailio/edge.cfg");
        // Its own process group, so the drop ends the workers too (fork=yes).
        let child = Command::new("kamailio")
            .process_group(0)
            .arg("-f")
            .arg(&config)
            .args(["-DD", "-E", "-m", "32", "-M", "4", "-w"])
            .arg(dir.path())
            .args(["-A", &format!("EDGE_PORT={port}")])
            .args(["-A", &format!("SIPWARD_URI=\"sip:{sipward}\"")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start kamailio");
        let mut k = Kamailio {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        k.wait_ready();
        k
    }

    /// Polls with OPTIONS until Kamailio answers (at most 20 s).
    fn wait_ready(&mut self) {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kamailio exited ({status}):\n{}", self.log());
            }
            let options = format!(
                "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\n\
                 From: <sip:probe@{DOMAIN}>;tag=p\r\nTo: <sip:{}>\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n",
                self.addr,
                probe.local_addr().unwrap(),
                rand_token(),
                self.addr,
                rand_token()
            );
            probe.send_to(options.as_bytes(), self.addr).unwrap();
            if let Ok((n, _)) = probe.recv_from(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
        }
        panic!(
            "kamailio did not answer OPTIONS within 20 s:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Issue 15 acceptance, with Kamailio as a real edge proxy: bob registers through Kamailio,
/// which adds a Path (bob does not say `Supported: path`); with the default
/// `registrar.path = "store"` sipward keeps it. alice calls bob directly at sipward, and the
/// INVITE reaches bob through Kamailio (its Via on top of sipward's, Kamailio's log); bob's
/// 200 goes back through Kamailio and sipward to alice.
#[test]
fn a_call_reaches_a_phone_registered_through_a_kamailio_edge() {
    if !require_tool("kamailio", "kamailio") {
        return;
    }
    let server = binary("udp = [\"127.0.0.1:{port}\"]\ntcp = [\"127.0.0.1:{port}\"]");
    let kamailio = Kamailio::start(server.udp);
    let mut bob = Client::new(Proto::Udp, kamailio.addr);
    let mut reg = Register::new("bob");
    reg.contact = Some(format!("<sip:bob@{}>", bob.local));
    let ok = register(&mut bob, &reg, BOB_PW, "MD5");
    assert_eq!(
        ok.status(),
        200,
        "{}\nkamailio:\n{}",
        ok.text,
        kamailio.log()
    );
    assert!(
        ok.header("Path").is_none(),
        "bob did not say Supported: path: {}",
        ok.text
    );
    let edge_path = format!("<sip:{};lr>", kamailio.addr);
    let bindings = server.admin_bindings();
    assert!(
        bindings.contains(&edge_path),
        "Kamailio's Path stored: {bindings}"
    );

    let mut alice = Client::new(Proto::Udp, server.udp);
    let call_id = rand_token();
    assert_eq!(call(&mut alice, "bob", &call_id, "").status(), 100);
    let fwd = next_for(&mut bob, &call_id);
    assert!(
        fwd.text
            .starts_with(&format!("INVITE sip:bob@{} SIP/2.0", bob.local)),
        "{}",
        fwd.text
    );
    let vias = fwd.headers("Via");
    assert!(vias.len() >= 3, "Kamailio, sipward, alice: {vias:?}");
    assert!(
        vias[0].starts_with(&format!("SIP/2.0/UDP {};", kamailio.addr)),
        "Kamailio's Via on top: {vias:?}"
    );
    assert!(
        vias[1].starts_with(&format!("SIP/2.0/UDP {};", server.udp)),
        "then sipward's: {vias:?}"
    );
    assert!(
        fwd.header("Route").is_none(),
        "Kamailio removed its own Route: {}",
        fwd.text
    );
    let contact = format!("sip:bob@{}", bob.local);
    bob.send_raw(response_to(&fwd, 200, "OK", "bobtag", &contact, false).as_bytes());
    let answer = final_for(&mut alice, &call_id);
    assert_eq!(answer.status(), 200, "{}", answer.text);
    let log = kamailio.log();
    assert!(
        log.contains("edge: REGISTER sip:example.test")
            && log.contains(&format!("edge: INVITE sip:bob@{}", bob.local)),
        "{log}"
    );
    assert!(log.contains("edge: reply 200 OK for INVITE"), "{log}");
}
