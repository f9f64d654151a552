//! SIP over TLS against the in-process server (the binary for `openssl s_client` and SIGHUP): REGISTER with Digest (MD5, SHA-256) and with a client
//! certificate alone, driven by a rustls client and by `openssl s_client`; the certificate
//! identity rule; docs/testing.md T1–T3, T5–T7, T9, T11 and T13; flows; reload on SIGHUP.
//!
//! Certificates come from `sipward certs dev` (a fresh set per test process, see
//! `common::dev_certs`); bad ones (RSA-1024, self-signed) are made with openssl.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HANDSHAKES: &str = "sipward_tls_handshakes_total";

fn handshakes(server: &Server, outcome: &str) -> f64 {
    server.metric(&format!("{HANDSHAKES}{{outcome=\"{outcome}\"}}"))
}

fn tls_server(client_auth: &str) -> Server {
    Server::start(&Options {
        tls: Some(client_auth),
        ..Options::default()
    })
}

/// The binary with a TLS listener: for `openssl s_client` and SIGHUP.
fn tls_binary(client_auth: &str) -> Server {
    Server::start_binary(&Options {
        tls: Some(client_auth),
        ..Options::default()
    })
}

fn tls_addr(server: &Server) -> SocketAddr {
    server.tls.expect("a TLS listener")
}

/// A REGISTER for `user` on `c`, no credentials.
fn register_plain(c: &mut Client, user: &str) -> Option<Resp> {
    let msg = Register::new(user).build(c);
    c.request(&msg)
}

fn bindings(server: &Server) -> serde_json::Value {
    serde_json::from_str(&server.admin_bindings()).expect("bindings JSON")
}

fn bound_aors(server: &Server) -> Vec<String> {
    bindings(server)
        .as_array()
        .expect("array")
        .iter()
        .map(|b| b["aor"].as_str().expect("aor").to_owned())
        .collect()
}

/// Waits until the server has counted `n` more handshakes with `outcome` than `before`.
fn wait_handshakes(server: &Server, outcome: &str, at_least: f64) -> f64 {
    server
        .wait_metric(
            &format!("{HANDSHAKES}{{outcome=\"{outcome}\"}}"),
            Duration::from_secs(10),
            |v| v >= at_least,
        )
        .0
}

#[test]
fn digest_register_over_tls_md5_and_sha256() {
    let server = tls_server("off");
    let mut phones = Vec::new();
    for alg in ["MD5", "SHA-256"] {
        let mut c = Client::tls(tls_addr(&server), None).expect("handshake");
        let r = register(&mut c, &Register::new("alice"), "alice-secret-1", alg);
        assert_eq!(r.status(), 200, "{alg}: {}", r.text);
        assert!(
            r.header("Contact").is_some(),
            "{alg}: 200 lists the binding"
        );
        phones.push(c);
    }
    // The same Contact from the second connection updates the one binding.
    let b = bindings(&server);
    assert_eq!(b.as_array().map(Vec::len), Some(1), "one contact: {b}");
    assert_eq!(b[0]["bindings"][0]["transport"], "tls", "{b}");
    assert_eq!(handshakes(&server, "ok"), 2.0);
    assert_eq!(server.metric("sipward_tls_connections"), 2.0);
    drop(phones);
    // Both clients are gone; their connections are closed and no longer counted.
    let (open, _) = server.wait_metric("sipward_tls_connections", Duration::from_secs(5), |v| {
        v == 0.0
    });
    assert_eq!(open, 0.0);
}

#[test]
fn client_certificate_alone_registers_its_own_aor() {
    let server = tls_server("optional");
    let mut c = Client::tls(tls_addr(&server), Some("alice")).expect("handshake");
    let r = register_plain(&mut c, "alice").expect("response");
    assert_eq!(
        r.status(),
        200,
        "no challenge with a certificate: {}",
        r.text
    );
    assert!(r.header("WWW-Authenticate").is_none());
    assert_eq!(bound_aors(&server), ["sip:alice@example.test"]);
    // The gauge counts this connection while it is open.
    assert_eq!(server.metric("sipward_tls_connections"), 1.0);
}

/// T5 (A22): a certificate for alice may not register bob, not even with bob's valid Digest
/// credentials.
#[test]
fn t5_certificate_for_alice_cannot_register_bob() {
    let server = tls_server("optional");
    let mut c = Client::tls(tls_addr(&server), Some("alice")).expect("handshake");
    let r = register_plain(&mut c, "bob").expect("response");
    assert_eq!(r.status(), 403, "{}", r.text);
    // Credentials cannot widen the certificate: bob's Digest gets 403 as well.
    let mut reg = Register::new("bob");
    reg.authorization = vec![authorization(
        "MD5",
        "bob",
        "bob-secret-2",
        "REGISTER",
        &reg.ruri,
        "bogus-nonce",
        1,
        "c",
    )];
    let r = c.request(&reg.build(&c)).expect("response");
    assert_eq!(r.status(), 403, "{}", r.text);
    assert_eq!(bound_aors(&server), Vec::<String>::new());
    // Without a certificate, bob's Digest works on the same listener.
    let mut d = Client::tls(tls_addr(&server), None).expect("handshake");
    let r = register(&mut d, &Register::new("bob"), "bob-secret-2", "SHA-256");
    assert_eq!(r.status(), 200, "{}", r.text);
}

/// T6, the identity rule: a CN-only certificate proves nothing (Digest needed); a
/// certificate with two SIP SAN URIs may register either AoR and nothing else.
#[test]
fn t6_identity_rule_cn_only_and_several_san_uris() {
    let server = Server::start(&Options {
        tls: Some("optional"),
        accounts: &[
            ("alice", "alice-secret-1"),
            ("bob", "bob-secret-2"),
            ("carol", "carol-secret-3"),
        ],
        ..Options::default()
    });
    let mut cn_only = Client::tls(tls_addr(&server), Some("cn-only")).expect("handshake");
    let r = register_plain(&mut cn_only, "alice").expect("response");
    assert_eq!(
        r.status(),
        401,
        "CN-only certificate is challenged: {}",
        r.text
    );
    let r = register(
        &mut cn_only,
        &Register::new("alice"),
        "alice-secret-1",
        "MD5",
    );
    assert_eq!(r.status(), 200, "then Digest works: {}", r.text);

    let mut two = Client::tls(tls_addr(&server), Some("two-aors")).expect("handshake");
    for user in ["alice", "bob"] {
        let r = register_plain(&mut two, user).expect("response");
        assert_eq!(r.status(), 200, "{user}: {}", r.text);
    }
    let r = register_plain(&mut two, "carol").expect("response");
    assert_eq!(
        r.status(),
        403,
        "carol is not in the certificate: {}",
        r.text
    );
    let mut aors = bound_aors(&server);
    aors.sort();
    assert_eq!(aors, ["sip:alice@example.test", "sip:bob@example.test"]);
}

/// With `client_cert = "plus-digest"`, the certificate still limits the AoR but Digest is
/// required too.
#[test]
fn plus_digest_domain_requires_both() {
    let server = Server::start(&Options {
        tls: Some("optional"),
        domain: "client_cert = \"plus-digest\"",
        ..Options::default()
    });
    let mut c = Client::tls(tls_addr(&server), Some("alice")).expect("handshake");
    let r = register_plain(&mut c, "alice").expect("response");
    assert_eq!(r.status(), 401, "{}", r.text);
    let r = register(&mut c, &Register::new("alice"), "alice-secret-1", "SHA-256");
    assert_eq!(r.status(), 200, "{}", r.text);
    let r = register_plain(&mut c, "bob").expect("response");
    assert_eq!(r.status(), 403, "{}", r.text);
}

/// What a refused client certificate looks like from the client: the handshake fails, or
/// (TLS 1.3, where the client finishes first) the first read gets the server's alert or a
/// close. Either way no SIP response.
fn refused(server: &Server, cert: Option<(&Path, &Path)>, what: &str) {
    let config = tls_client_config(&dev_certs().join("ca.pem"), cert);
    let before = handshakes(server, "failed_verification");
    match tls_connect(tls_addr(server), config) {
        Err(_) => {}
        Ok(stream) => {
            let mut c = Client::over(Proto::Tls, tls_addr(server), Box::new(stream));
            let msg = Register::new("alice").build(&c);
            // The write itself may fail once the alert has arrived (send_raw panics then).
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                c.send_raw(msg.as_bytes());
                c.recv(Duration::from_secs(2))
            }));
            assert!(
                !matches!(got, Ok(Some(_))),
                "{what}: got a SIP response: {got:?}"
            );
        }
    }
    let after = wait_handshakes(server, "failed_verification", before + 1.0);
    assert_eq!(
        after,
        before + 1.0,
        "{what}: counted as failed_verification"
    );
}

/// T1 (expired, not yet valid), T2 (untrusted CA, self-signed), T3 (EKU serverAuth only):
/// refused at the handshake; no binding; the server stays up.
#[test]
fn t1_t2_t3_bad_client_certificates_are_refused() {
    let mut server = tls_server("optional");
    let work = tempfile::tempdir().unwrap();
    let self_signed = self_signed_cert(work.path());
    for name in ["expired", "not-yet-valid", "untrusted", "server-auth-only"] {
        let (cert, key) = client_cert(name);
        refused(&server, Some((&cert, &key)), name);
    }
    refused(
        &server,
        Some((&self_signed.0, &self_signed.1)),
        "self-signed",
    );
    assert_eq!(bound_aors(&server), Vec::<String>::new());
    assert!(server.is_alive());
    // A good certificate still works afterwards.
    let mut c = Client::tls(tls_addr(&server), Some("alice")).expect("handshake");
    assert_eq!(
        register_plain(&mut c, "alice").map(|r| r.status()),
        Some(200)
    );
}

/// `client_auth = "required"`: no certificate, no connection.
#[test]
fn required_client_auth_refuses_a_client_without_certificate() {
    let server = tls_server("required");
    refused(&server, None, "no certificate");
    let mut c = Client::tls(tls_addr(&server), Some("bob")).expect("handshake");
    assert_eq!(register_plain(&mut c, "bob").map(|r| r.status()), Some(200));
}

/// T4 (beyond the list): with the CA's CRL loaded, the revoked certificate fails;
/// alice's still works.
#[test]
fn revoked_certificate_is_refused_with_crl() {
    let crl = format!("crl_files = [\"{}\"]", dev_certs().join("ca.crl").display());
    let server = Server::start(&Options {
        tls: Some("optional"),
        tls_extra: &crl,
        ..Options::default()
    });
    let (cert, key) = client_cert("revoked");
    refused(&server, Some((&cert, &key)), "revoked");
    let mut c = Client::tls(tls_addr(&server), Some("alice")).expect("handshake");
    assert_eq!(
        register_plain(&mut c, "alice").map(|r| r.status()),
        Some(200)
    );
}

fn self_signed_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    assert!(require_tool("openssl", "openssl"), "openssl is needed");
    let cert = dir.join("self.pem");
    let key = dir.join("self.key");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=alice",
            "-addext",
            "subjectAltName=URI:sip:alice@example.test",
            "-addext",
            "extendedKeyUsage=clientAuth",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl req")
        .success();
    assert!(ok, "openssl made the self-signed certificate");
    (cert, key)
}

/// An RSA-1024 client certificate for alice issued by the dev CA (openssl; rcgen makes no
/// RSA keys under 2048 bits).
fn rsa1024_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let certs = dev_certs();
    let key = dir.join("rsa1024.key");
    let csr = dir.join("rsa1024.csr");
    let cert = dir.join("rsa1024.pem");
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=URI:sip:alice@example.test\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:1024",
        "-nodes",
        "-subj",
        "/CN=alice",
        "-keyout",
        "rsa1024.key",
        "-out",
        "rsa1024.csr",
    ]);
    let ca = certs.join("ca.pem");
    let ca_key = certs.join("ca.key");
    run(&[
        "x509",
        "-req",
        "-in",
        "rsa1024.csr",
        "-CA",
        ca.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-set_serial",
        "99",
        "-days",
        "30",
        "-extfile",
        "ext.cnf",
        "-out",
        "rsa1024.pem",
    ]);
    assert!(csr.exists());
    (cert, key)
}

/// Runs `openssl s_client` against `addr` with `args`, writes `input`, and returns what it
/// printed (stdout) within `wait` plus whether it exited successfully.
fn s_client(addr: SocketAddr, args: &[&str], input: &[u8], wait: Duration) -> (String, bool) {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            out.push_str(&line);
            line.clear();
            let _ = tx.send(out.clone());
        }
    });
    let deadline = Instant::now() + wait;
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(out) = rx.recv_timeout(Duration::from_millis(100)) {
            seen = out;
            if seen.contains("\r\n\r\n") {
                break;
            }
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
    }
    drop(stdin);
    let ok = match child.try_wait() {
        Ok(Some(status)) => status.success(),
        _ => {
            let _ = child.kill();
            child.wait().map(|s| s.success()).unwrap_or(false)
        }
    };
    (seen, ok)
}

/// Acceptance 1 with a real client: `openssl s_client` presenting the dev client certificate
/// registers alice with no Digest, and one without a certificate gets the Digest challenge.
#[test]
fn openssl_s_client_registers_with_the_dev_client_certificate() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let server = tls_binary("optional");
    let certs = dev_certs();
    let (cert, key) = client_cert("alice");
    let msg = |user: &str| {
        format!(
            "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@example.test>;tag=ossl\r\nTo: <sip:{user}@example.test>\r\n\
             Call-ID: ossl-{}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@127.0.0.1:5999;transport=tls>\r\n\
             Expires: 300\r\nContent-Length: 0\r\n\r\n",
            rand_token(),
            rand_token()
        )
    };
    let ca = certs.join("ca.pem");
    let common = [
        "-CAfile",
        ca.to_str().unwrap(),
        "-verify_return_error",
        "-servername",
        "localhost",
        "-quiet",
    ];
    let mut with_cert: Vec<&str> = common.to_vec();
    with_cert.extend([
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
    ]);
    let (out, _) = s_client(
        tls_addr(&server),
        &with_cert,
        msg("alice").as_bytes(),
        Duration::from_secs(10),
    );
    assert!(
        out.starts_with("SIP/2.0 200 OK"),
        "s_client with alice.pem: {out:?}"
    );
    assert!(
        out.contains("Contact: <sip:alice@127.0.0.1:5999;transport=tls>;expires="),
        "the 200 lists the new binding: {out:?}"
    );
    // s_client has exited: the binding went with its connection.
    let (left, _) = server.wait_metric("sipward_bindings", Duration::from_secs(5), |v| v == 0.0);
    assert_eq!(left, 0.0);

    let (out, _) = s_client(
        tls_addr(&server),
        &common,
        msg("bob").as_bytes(),
        Duration::from_secs(10),
    );
    assert!(
        out.starts_with("SIP/2.0 401"),
        "s_client without a certificate: {out:?}"
    );
    assert!(out.contains("WWW-Authenticate: Digest"), "{out:?}");
}

/// T7: TLS 1.0 and 1.1, NULL suites, static-RSA/CBC/3DES suites and an RSA-1024 client key
/// are refused. The client runs at OpenSSL security level 0 so that it really offers them;
/// the server's metrics show each attempt reached it and failed. (SSLv3 and EXPORT suites
/// cannot be offered at all by this OpenSSL 3 build; rustls implements none of them.)
#[test]
fn t7_old_protocols_weak_suites_and_small_keys_are_refused() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let server = tls_binary("optional");
    let ca = dev_certs().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let attempts: &[(&str, &[&str])] = &[
        ("TLS 1.0", &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
        ("TLS 1.1", &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
        (
            "NULL suites",
            &["-tls1_2", "-cipher", "NULL:eNULL:@SECLEVEL=0"],
        ),
        (
            "static-RSA, CBC and 3DES suites",
            &[
                "-tls1_2",
                "-cipher",
                "AES128-SHA:AES256-SHA:DES-CBC3-SHA:@SECLEVEL=0",
            ],
        ),
    ];
    for (what, args) in attempts {
        let before = handshakes(&server, "protocol_error");
        let mut all = vec!["-CAfile", ca];
        all.extend_from_slice(args);
        let (out, ok) = s_client(
            tls_addr(&server),
            &all,
            b"OPTIONS sip:example.test SIP/2.0\r\n\r\n",
            Duration::from_secs(5),
        );
        assert!(!ok, "{what}: s_client succeeded: {out}");
        assert!(!out.contains("SIP/2.0"), "{what}: got SIP: {out}");
        let after = wait_handshakes(&server, "protocol_error", before + 1.0);
        assert!(
            after > before,
            "{what}: the server saw no failed handshake (did the client even connect?)"
        );
    }
    assert_eq!(handshakes(&server, "ok"), 0.0);

    let work = tempfile::tempdir().unwrap();
    let (cert, key) = rsa1024_cert(work.path());
    let failed =
        |s: &Server| handshakes(s, "failed_verification") + handshakes(s, "protocol_error");
    let before = failed(&server);
    let msg = format!(
        "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK{}\r\n\
         From: <sip:alice@example.test>;tag=a\r\nTo: <sip:alice@example.test>\r\nCall-ID: rsa-{}\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n",
        rand_token(),
        rand_token()
    );
    let (out, _) = s_client(
        tls_addr(&server),
        &[
            "-CAfile",
            ca,
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-quiet",
        ],
        msg.as_bytes(),
        Duration::from_secs(5),
    );
    assert!(!out.contains("SIP/2.0 200"), "RSA-1024 registered: {out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while failed(&server) <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        failed(&server) > before,
        "the RSA-1024 handshake was not refused"
    );
    assert_eq!(bound_aors(&server), Vec::<String>::new());
}

/// T9: 500 connections that send a partial ClientHello and stall. Reading the ClientHello
/// takes no handshake slot, so they cost only their connection slots until the deadline; a
/// real client still gets through at once, and every stalled one is closed on time.
#[test]
fn t9_stalled_handshakes_are_bounded_and_time_out() {
    let mut server = Server::start(&Options {
        tls: Some("optional"),
        tls_extra: "max_handshakes = 50\nhandshake_timeout_secs = 2",
        ..Options::default()
    });
    let addr = tls_addr(&server);
    // A TLS record header announcing a 512-byte ClientHello, then 10 of its bytes.
    let partial: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
    let mut stalled = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.write_all(partial).expect("partial hello");
        stalled.push(s);
    }
    let started = Instant::now();
    let mut c = Client::tls(addr, Some("alice")).expect("a real handshake gets through");
    let waited = started.elapsed();
    assert_eq!(
        register_plain(&mut c, "alice").map(|r| r.status()),
        Some(200)
    );
    eprintln!("real client's handshake took {waited:?} behind 500 stalled ones");
    let (timeouts, _) = server.wait_metric(
        &format!("{HANDSHAKES}{{outcome=\"timeout\"}}"),
        Duration::from_secs(20),
        |v| v >= 500.0,
    );
    assert_eq!(timeouts, 500.0, "every stalled handshake timed out");
    // The server closed them: each read sees EOF or a reset.
    for s in stalled.iter_mut().take(20) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        assert!(
            matches!(s.read(&mut b), Ok(0) | Err(_)),
            "stalled connection still open"
        );
    }
    assert!(server.is_alive());
}

/// T11: plain SIP on the TLS port closes the connection; TLS and TCP keep working.
#[test]
fn t11_plain_text_on_the_tls_port_is_closed() {
    let mut server = tls_server("optional");
    let addr = tls_addr(&server);
    let before = handshakes(&server, "protocol_error");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    let probe = Client::new(Proto::Udp, server.udp);
    s.write_all(Register::new("alice").build(&probe).as_bytes())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        !String::from_utf8_lossy(&out).contains("SIP/2.0"),
        "no SIP answer on the TLS port"
    );
    assert_eq!(
        wait_handshakes(&server, "protocol_error", before + 1.0),
        before + 1.0
    );
    assert!(server.is_alive());
    let mut c = Client::tls(addr, None).expect("handshake");
    assert_eq!(
        register_plain(&mut c, "alice").map(|r| r.status()),
        Some(401)
    );
    let mut t = Client::new(Proto::Tcp, server.tcp);
    assert_eq!(
        register_plain(&mut t, "alice").map(|r| r.status()),
        Some(401)
    );
}

/// Flows: a binding made over TLS belongs to its connection; when the phone closes it, the
/// binding goes (registrar.remove_bindings_on_close, the default).
#[test]
fn binding_follows_its_tls_connection() {
    let server = tls_server("optional");
    let mut c = Client::tls(tls_addr(&server), Some("alice")).expect("handshake");
    assert_eq!(
        register_plain(&mut c, "alice").map(|r| r.status()),
        Some(200)
    );
    assert_eq!(server.metric("sipward_bindings"), 1.0);
    drop(c);
    let (left, _) = server.wait_metric("sipward_bindings", Duration::from_secs(5), |v| v == 0.0);
    assert_eq!(left, 0.0, "the binding went with its connection");
    assert_eq!(bound_aors(&server), Vec::<String>::new());
}

/// The served leaf certificate's SHA-256, as a client saw it.
fn served_cert(addr: SocketAddr, ca: &Path) -> std::io::Result<String> {
    served_cert_for(addr, ca, "localhost")
}

/// The same with `name` as SNI.
fn served_cert_for(addr: SocketAddr, ca: &Path, name: &str) -> std::io::Result<String> {
    let stream = tls_connect_named(addr, tls_client_config(ca, None), name)?;
    let leaf = stream.conn.peer_certificates().expect("server certificate")[0].clone();
    Ok(sha256_hex(&leaf))
}

fn pem_sha256(path: &Path) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(path).expect("PEM");
    sha256_hex(&der)
}

/// T13 and acceptance 4: a phone stays connected and registered across a SIGHUP that swaps
/// the server certificate (to one from another CA); new connections get the new
/// certificate; a later reload with a broken key keeps the last good material.
#[test]
fn t13_sighup_swaps_the_certificate_without_dropping_phones() {
    let mut server = tls_binary("optional");
    let addr = tls_addr(&server);
    let old_ca = dev_certs().join("ca.pem");
    let mut phone = Client::tls(addr, None).expect("handshake");
    let r = register(
        &mut phone,
        &Register::new("alice"),
        "alice-secret-1",
        "SHA-256",
    );
    assert_eq!(r.status(), 200, "{}", r.text);
    assert_eq!(
        served_cert(addr, &old_ca).expect("old CA"),
        pem_sha256(&dev_certs().join("server.pem"))
    );
    let expiry_before =
        server.metric("sipward_tls_cert_expiry_timestamp_seconds{cert=\"default\"}");
    assert!(expiry_before > 1.7e9, "expiry gauge set: {expiry_before}");

    // A second certificate set from a new CA replaces the server's files, then SIGHUP.
    let next = tempfile::tempdir().unwrap();
    make_certs(next.path());
    for f in ["server.pem", "server.key"] {
        std::fs::copy(next.path().join(f), server.dir.path().join(f)).unwrap();
    }
    hangup(&server);
    let (reloads, _) = server.wait_metric(
        "sipward_tls_cert_reloads_total{outcome=\"ok\"}",
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    assert_eq!(reloads, 1.0);
    let new_ca = next.path().join("ca.pem");
    let new_leaf = pem_sha256(&next.path().join("server.pem"));
    assert_eq!(served_cert(addr, &new_ca).expect("new CA"), new_leaf);
    assert!(
        served_cert(addr, &old_ca).is_err(),
        "a client trusting only the old CA now fails"
    );

    // The phone's connection is the same one, still registered, and re-registers on it.
    assert_eq!(bound_aors(&server), ["sip:alice@example.test"]);
    let mut again = Register::new("alice");
    again.cseq = 10;
    let r = register(&mut phone, &again, "alice-secret-1", "SHA-256");
    assert_eq!(
        r.status(),
        200,
        "re-REGISTER on the old connection: {}",
        r.text
    );
    assert_eq!(server.metric("sipward_bindings"), 1.0);

    // A broken key: the reload fails, is counted, and the new certificate stays in use.
    std::fs::write(server.dir.path().join("server.key"), "not a key").unwrap();
    hangup(&server);
    let (failed, _) = server.wait_metric(
        "sipward_tls_cert_reloads_total{outcome=\"failed\"}",
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    assert_eq!(failed, 1.0);
    assert_eq!(served_cert(addr, &new_ca).expect("still served"), new_leaf);
    assert!(server.stderr().contains("tls reload failed"), "logged why");
    assert!(server.is_alive());
}

fn hangup(server: &Server) {
    let ok = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill -HUP")
        .success();
    assert!(ok);
}

/// SNI: a domain with its own certificate gets it; any other name gets the default one.
#[test]
fn sni_selects_the_domain_certificate() {
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path());
    let sni = format!(
        "\n[[tls.certificates]]\ndomain = \"example.test\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        other.path().join("server.pem").display(),
        other.path().join("server.key").display()
    );
    let server = Server::start(&Options {
        tls: Some("off"),
        tls_extra: &sni,
        ..Options::default()
    });
    let addr = tls_addr(&server);
    let domain_leaf = pem_sha256(&other.path().join("server.pem"));
    let default_leaf = pem_sha256(&dev_certs().join("server.pem"));
    assert_eq!(
        served_cert_for(addr, &other.path().join("ca.pem"), "example.test").expect("SNI"),
        domain_leaf
    );
    assert_eq!(
        served_cert_for(addr, &other.path().join("ca.pem"), "EXAMPLE.test").expect("SNI case"),
        domain_leaf
    );
    assert_eq!(
        served_cert_for(addr, &dev_certs().join("ca.pem"), "localhost").expect("default"),
        default_leaf
    );
    let expiry = server.metric("sipward_tls_cert_expiry_timestamp_seconds{cert=\"example.test\"}");
    assert!(expiry > 1.7e9, "per-domain expiry gauge: {expiry}");
}
