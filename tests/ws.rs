//! SIP over WebSocket (RFC 7118) against the real binary, with a small non-browser WebSocket
//! SIP client (tungstenite, blocking): the upgrade's refusals (no `sip` subprotocol, a foreign
//! Origin), the size limit, the idle timeout with ping/pong keep-alive, REGISTER with Digest
//! as an RFC 5626 outbound flow, the binding removed when the socket closes, and a call
//! between a UDP phone and the WebSocket phone through the proxy (double Record-Route at the
//! transport change, in-dialog requests down the WebSocket by the flow token).

mod common;
use common::*;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

const ALICE_PW: &str = "alice-secret-1";
const BOB_PW: &str = "bob-secret-2";
const ORIGIN: &str = "https://phone.example.test";

/// The binary with one plain WS listener allowing `ORIGIN`; `ws_extra` goes into `[ws]`.
fn start(ws_extra: &str) -> (Server, SocketAddr) {
    let port = free_port();
    let tables = format!(
        "[ws]\n{ws_extra}\n\n[[ws.listeners]]\naddr = \"127.0.0.1:{port}\"\norigins = [\"{ORIGIN}\"]\n"
    );
    let server = Server::start_binary(&Options {
        tables: &tables,
        ..Options::default()
    });
    (server, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A WebSocket SIP phone: its socket and the `.invalid` host it names itself with.
struct WsPhone {
    ws: WebSocket<TcpStream>,
    host: String,
}

/// Opens a WebSocket to `addr` offering `protocol` (if any) with `origin` (if any).
fn connect(
    addr: SocketAddr,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<WsPhone, tungstenite::Error> {
    let mut req = format!("ws://{addr}/").into_client_request()?;
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    // The upgrade may wait for a connection slot; reads after it poll in short steps.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ws, resp) = tungstenite::client::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => {
            tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into())
        }
    })?;
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("sip"),
        "the server selects the sip subprotocol"
    );
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    Ok(WsPhone {
        ws,
        host: format!("{}.invalid", rand_token().to_lowercase()),
    })
}

/// What came from the server while waiting.
#[derive(Debug)]
enum Got {
    Sip(Resp),
    Closed(Option<u16>),
    Nothing,
}

impl WsPhone {
    fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("ws send");
    }

    /// The next SIP message, a close, or nothing within `limit` (reading answers pings).
    fn next(&mut self, limit: Duration) -> Got {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Got::Sip(Resp {
                        text: t.to_string(),
                    })
                }
                Ok(Message::Binary(b)) => {
                    return Got::Sip(Resp {
                        text: String::from_utf8_lossy(&b).into_owned(),
                    })
                }
                Ok(Message::Close(frame)) => return Got::Closed(frame.map(|f| f.code.into())),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return Got::Closed(None),
            }
        }
        Got::Nothing
    }

    /// The next SIP message that is not `100 Trying`.
    fn sip(&mut self, what: &str) -> Resp {
        loop {
            match self.next(Duration::from_secs(10)) {
                Got::Sip(r) if r.status() == 100 => continue,
                Got::Sip(r) => return r,
                other => panic!("ws phone: no {what}: {other:?}"),
            }
        }
    }

    fn register(&mut self, user: &str, expires: u32, auth: Option<String>, cseq: u32) -> String {
        let host = &self.host;
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/WS {host};branch=z9hG4bK{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=ws{cseq}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
             Call-ID: reg-{host}\r\nCSeq: {cseq} REGISTER\r\nSupported: path, outbound\r\n\
             Contact: <sip:{user}@{host};transport=ws;ob>;+sip.instance=\"<urn:uuid:6ee0b3a4-0c3e-4f52-9d8b-{:012}>\";reg-id=1\r\n\
             Expires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n",
            rand_token(),
            cseq
        )
    }

    /// REGISTER with Digest: 401, then credentials; the final response.
    fn register_digest(&mut self, user: &str, password: &str) -> Resp {
        let first = self.register(user, 300, None, 1);
        self.send(&first);
        let challenge = self.sip("401");
        assert_eq!(challenge.status(), 401, "{}", challenge.text);
        let auth = authorization(
            "SHA-256",
            user,
            password,
            "REGISTER",
            &format!("sip:{DOMAIN}"),
            &challenge.nonce_for("SHA-256").expect("a SHA-256 challenge"),
            1,
            &rand_token(),
        );
        let next = self.register(user, 300, Some(auth), 2);
        self.send(&next);
        self.sip("200")
    }

    fn contact(&self, user: &str) -> String {
        format!("sip:{user}@{};transport=ws", self.host)
    }
}

/// The bindings of `user@example.test` as the admin API lists them.
fn bindings(server: &Server, user: &str) -> Vec<serde_json::Value> {
    let (status, body) = server
        .http_get(
            &format!("/admin/v1/bindings?aor={user}@{DOMAIN}"),
            Some(ADMIN_TOKEN),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .and_then(|aors| aors.first())
        .and_then(|aor| aor["bindings"].as_array().cloned())
        .unwrap_or_default()
}

fn http_status(e: &tungstenite::Error) -> Option<u16> {
    match e {
        tungstenite::Error::Http(resp) => Some(resp.status().as_u16()),
        _ => None,
    }
}

#[test]
fn upgrade_without_sip_subprotocol_or_from_a_foreign_origin_is_refused() {
    let (server, addr) = start("");
    let no_protocol = connect(addr, None, Some(ORIGIN)).err().expect("refused");
    assert_eq!(http_status(&no_protocol), Some(400), "{no_protocol:?}");
    let other_protocol = connect(addr, Some("chat"), Some(ORIGIN))
        .err()
        .expect("refused");
    assert_eq!(
        http_status(&other_protocol),
        Some(400),
        "{other_protocol:?}"
    );
    let foreign = connect(addr, Some("sip"), Some("https://evil.example"))
        .err()
        .expect("refused");
    assert_eq!(http_status(&foreign), Some(403), "{foreign:?}");
    // The allowed origin, and a non-browser client (no Origin), are upgraded.
    assert!(connect(addr, Some("sip"), Some(ORIGIN)).is_ok());
    assert!(connect(addr, Some("sip"), None).is_ok());
    drop(server);
}

#[test]
fn oversize_message_closes_the_connection() {
    let (_server, addr) = start("max_message_bytes = 4096");
    let mut phone = connect(addr, Some("sip"), Some(ORIGIN)).unwrap();
    let big = format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(5000)
    );
    phone.send(&big);
    match phone.next(Duration::from_secs(5)) {
        Got::Closed(code) => assert!(
            code.is_none() || code == Some(u16::from(CloseCode::Size)),
            "{code:?}"
        ),
        other => panic!("not closed: {other:?}"),
    }
    // A message within the limit is served on a new connection.
    let mut phone = connect(addr, Some("sip"), Some(ORIGIN)).unwrap();
    let reg = phone.register("alice", 300, None, 1);
    phone.send(&reg);
    assert_eq!(phone.sip("401").status(), 401);
}

/// Pings keep a peer that answers them (tungstenite answers while reading) open past the idle
/// timeout; a peer that stops reading is closed once the idle timeout passes.
#[test]
fn idle_connection_is_closed_and_pongs_keep_it_open() {
    let (_server, addr) = start("idle_timeout_secs = 2\nping_interval_secs = 1");
    let mut phone = connect(addr, Some("sip"), Some(ORIGIN)).unwrap();
    // Reading for 4 s (twice the idle timeout) answers the server's pings.
    match phone.next(Duration::from_secs(4)) {
        Got::Nothing => {}
        other => panic!("answered pings, yet: {other:?}"),
    }
    let reg = phone.register("alice", 300, None, 1);
    phone.send(&reg);
    assert_eq!(phone.sip("401").status(), 401, "still open after 4 s");
    // Now silent: no reads, so no pongs.
    std::thread::sleep(Duration::from_secs(4));
    match phone.next(Duration::from_secs(5)) {
        Got::Closed(_) => {}
        other => panic!("idle connection not closed: {other:?}"),
    }
}

#[test]
fn register_with_digest_then_binding_gone_on_close() {
    let (server, addr) = start("");
    let mut phone = connect(addr, Some("sip"), Some(ORIGIN)).unwrap();
    let ok = phone.register_digest("bob", BOB_PW);
    assert_eq!(ok.status(), 200, "{}", ok.text);
    let contact = ok.header("Contact").expect("Contact in 200");
    assert!(contact.contains(&phone.host), "{contact}");
    assert!(
        ok.header("Require").is_some_and(|r| r.contains("outbound")),
        "outbound flow: {}",
        ok.text
    );
    let b = bindings(&server, "bob");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["transport"], "ws", "{b:?}");
    assert_eq!(server.metric("sipward_ws_connections"), 1.0);

    phone.ws.close(None).unwrap();
    let _ = phone.next(Duration::from_secs(1));
    drop(phone);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !bindings(&server, "bob").is_empty() {
        assert!(Instant::now() < deadline, "binding still there after close");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Alice over UDP calls bob's WebSocket phone: the INVITE goes down bob's socket with two
/// Record-Routes (UDP in, WS out); the ACK and BYE alice sends along the route set reach bob
/// over the same socket by the flow token.
#[test]
fn call_between_udp_and_websocket() {
    let (server, addr) = start("");
    let mut bob = connect(addr, Some("sip"), Some(ORIGIN)).unwrap();
    let ok = bob.register_digest("bob", BOB_PW);
    assert_eq!(ok.status(), 200, "{}", ok.text);

    let mut alice = Client::new(Proto::Udp, server.addr(Proto::Udp));
    let call_id = format!("ws-call-{}", rand_token());
    let invite = |c: &Client, cseq: u32, auth: &str| {
        format!(
            "INVITE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=al\r\nTo: <sip:bob@{DOMAIN}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@{}>\r\n{auth}\
             Content-Length: 0\r\n\r\n",
            c.local,
            rand_token(),
            c.local
        )
    };
    let first = alice.request(&invite(&alice, 1, "")).expect("407");
    assert_eq!(first.status(), 407, "{}", first.text);
    let ack407 = format!(
        "ACK sip:bob@{DOMAIN} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=al\r\n\
         To: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        first.header("Via").unwrap(),
        first.header("To").unwrap()
    );
    alice.send_raw(ack407.as_bytes());
    let pa = authorization(
        "MD5",
        "alice",
        ALICE_PW,
        "INVITE",
        &format!("sip:bob@{DOMAIN}"),
        &first.nonce(),
        1,
        &rand_token(),
    );
    alice.send_raw(invite(&alice, 2, &format!("Proxy-Authorization: {pa}\r\n")).as_bytes());

    let inv = bob.sip("INVITE");
    assert!(inv.text.starts_with("INVITE sip:bob@"), "{}", inv.text);
    assert_eq!(inv.header("Call-ID"), Some(call_id.clone()));
    let rr = inv.headers("Record-Route");
    assert_eq!(rr.len(), 2, "double Record-Route (UDP in, WS out): {rr:?}");
    assert!(
        rr[0].contains("transport=ws") && !rr[1].contains("transport="),
        "{rr:?}"
    );
    let contact = bob.contact("bob");
    bob.send(&response_to(
        &inv, 180, "Ringing", "bobtag", &contact, false,
    ));
    bob.send(&response_to(&inv, 200, "OK", "bobtag", &contact, true));

    // Alice: the 200, then ACK and BYE along the reversed Record-Route set.
    let ok = loop {
        let r = alice.recv(Duration::from_secs(5)).expect("a response");
        if r.status() >= 200 {
            break r;
        }
    };
    assert_eq!(ok.status(), 200, "{}", ok.text);
    let remote = ok.header("Contact").unwrap();
    let remote = remote.trim_matches(['<', '>']).to_owned();
    let routes: Vec<String> = ok.headers("Record-Route").into_iter().rev().collect();
    let to = ok.header("To").unwrap();
    let in_dialog = |method: &str, cseq: u32, c: &Client| {
        let mut m = format!(
            "{method} {remote} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=al\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n",
            c.local,
            rand_token()
        );
        for r in &routes {
            m.push_str(&format!("Route: {r}\r\n"));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    };
    alice.send_raw(in_dialog("ACK", 2, &alice).as_bytes());
    let ack = bob.sip("ACK");
    assert!(ack.text.starts_with("ACK sip:bob@"), "{}", ack.text);
    alice.send_raw(in_dialog("BYE", 3, &alice).as_bytes());
    let bye = bob.sip("BYE");
    assert!(bye.text.starts_with("BYE sip:bob@"), "{}", bye.text);
    bob.send(&response_to(&bye, 200, "OK", "", &contact, false));
    let bye_ok = alice.recv(Duration::from_secs(5)).expect("200 to BYE");
    assert_eq!(bye_ok.status(), 200, "{}", bye_ok.text);
    assert!(bye_ok.text.contains("CSeq: 3 BYE"), "{}", bye_ok.text);
}

/// WSS: TLS with the `[tls]` material, then the same upgrade; a REGISTER with Digest binds
/// over `wss`.
#[test]
fn wss_listener_serves_the_tls_certificate_and_registers() {
    let port = free_port();
    let tables = format!(
        "[[ws.listeners]]\naddr = \"127.0.0.1:{port}\"\ntls = true\norigins = [\"{ORIGIN}\"]\n"
    );
    let server = Server::start_binary(&Options {
        tls: Some("off"),
        tables: &tables,
        ..Options::default()
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = tls_client_config(&dev_certs().join("ca.pem"), None);
    let stream = tls_connect(addr, config).expect("tls handshake");
    stream
        .sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut req = format!("wss://127.0.0.1:{port}/")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    req.headers_mut().insert("Origin", ORIGIN.parse().unwrap());
    let (ws, _) = tungstenite::client::client(req, stream)
        .map_err(|e| format!("{e:?}"))
        .expect("upgrade over TLS");
    let mut phone = WssPhone {
        ws,
        host: format!("{}.invalid", rand_token().to_lowercase()),
    };
    let first = phone.register("alice", 1);
    phone.ws.send(Message::text(first)).unwrap();
    let challenge = phone.sip();
    assert_eq!(challenge.status(), 401, "{}", challenge.text);
    let auth = authorization(
        "MD5",
        "alice",
        ALICE_PW,
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        &challenge.nonce_for("MD5").expect("an MD5 challenge"),
        1,
        &rand_token(),
    );
    let next = phone.register("alice", 2).replace(
        "Content-Length: 0",
        &format!("Authorization: {auth}\r\nContent-Length: 0"),
    );
    phone.ws.send(Message::text(next)).unwrap();
    let ok = phone.sip();
    assert_eq!(ok.status(), 200, "{}", ok.text);
    let b = bindings(&server, "alice");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["transport"], "wss", "{b:?}");
}

/// The WSS client of [`wss_listener_serves_the_tls_certificate_and_registers`].
struct WssPhone {
    ws: WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    host: String,
}

impl WssPhone {
    fn register(&self, user: &str, cseq: u32) -> String {
        let host = &self.host;
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/WSS {host};branch=z9hG4bK{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=wss\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
             Call-ID: reg-{host}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{host};transport=ws>\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n",
            rand_token()
        )
    }

    fn sip(&mut self) -> Resp {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Resp {
                        text: t.to_string(),
                    }
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("wss read: {e}"),
            }
        }
        panic!("wss: no response");
    }
}

/// The handshake deadline: a TCP connection that never sends its upgrade is closed once
/// `handshake_timeout_secs` has passed.
#[test]
fn a_connection_that_never_upgrades_is_closed_at_the_handshake_deadline() {
    use std::io::Read;
    let (_server, addr) = start("handshake_timeout_secs = 1");
    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    // EOF or a reset is the close; a read timeout (10 s, ten times the deadline) is not.
    let read = silent.read(&mut buf);
    let closed = match &read {
        Ok(0) => true,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
        Ok(_) => false,
    };
    assert!(closed, "still open after the deadline: {read:?}");
}

/// The connection slot is taken before accept: with `max_connections = 1` a second client
/// gets no upgrade while the first is open, and gets it once the first has closed.
#[test]
fn the_connection_slot_is_taken_before_the_upgrade() {
    let (_server, addr) = start("max_connections = 1");
    let mut first = connect(addr, Some("sip"), Some(ORIGIN)).unwrap();
    let second = std::thread::spawn(move || connect(addr, Some("sip"), Some(ORIGIN)).is_ok());
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !second.is_finished(),
        "a second upgrade while the slot is held"
    );
    first.ws.close(None).unwrap();
    let _ = first.next(Duration::from_secs(1));
    drop(first);
    assert!(second.join().unwrap(), "upgraded once the slot was free");
}
