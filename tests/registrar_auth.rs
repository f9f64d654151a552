//! End-to-end tests of REGISTER authentication and the registrar rules (docs/testing.md §2, A1–A21),
//! of user enumeration (§3, E1–E5), and of a few server-wide behaviours (OPTIONS to us, Require,
//! REGISTER outcome metrics, SIGTERM drain, `check-config`), against the in-process server
//! (the binary for SIGTERM and `check-config`).
//!
//! Every case runs over UDP and TCP. One server per test function, reused for both transports;
//! where state would interfere, each transport's part cleans up after itself. Note that TCP
//! bindings are removed when their connection closes (`remove_bindings_on_close` defaults to
//! true), so a TCP client is kept open while its bindings are inspected.
mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

const ALICE_PW: &str = "alice-secret-1";
const BOB_PW: &str = "bob-secret-2";
const ALICE_AOR: &str = "alice@example.test";
const BOB_AOR: &str = "bob@example.test";
const PROTOS: [Proto; 2] = [Proto::Udp, Proto::Tcp];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Sends one request and waits for its response; panics if none comes.
fn send_text(c: &mut Client, msg: &str) -> Resp {
    c.request(msg)
        .unwrap_or_else(|| panic!("{:?}: no response to\n{msg}", c.proto))
}

fn send(c: &mut Client, reg: &Register) -> Resp {
    let msg = reg.build(c);
    send_text(c, &msg)
}

/// Asserts the status, showing the transport and the whole response otherwise.
#[track_caller]
fn expect(r: &Resp, status: u16, what: &str) {
    assert_eq!(r.status(), status, "{what}: {}", r.text);
}

/// An unauthenticated REGISTER must be challenged; returns the nonce.
fn challenge(c: &mut Client, reg: &Register) -> String {
    let r = send(c, reg);
    expect(&r, 401, &format!("{:?} challenge", c.proto));
    r.nonce()
}

/// One REGISTER "dialog": a Call-ID with rising CSeq, one nonce and a rising nc.
struct Session {
    reg: Register,
    user: String,
    password: String,
    alg: &'static str,
    nonce: String,
    nc: u32,
    cnonce: String,
}

impl Session {
    /// Sends `reg` without credentials (its CSeq) and keeps the nonce of the 401.
    fn start(c: &mut Client, reg: Register, user: &str, password: &str) -> Session {
        let nonce = challenge(c, &reg);
        Session {
            reg,
            user: user.into(),
            password: password.into(),
            alg: "MD5",
            nonce,
            nc: 0,
            cnonce: rand_token(),
        }
    }

    /// The Authorization for the next nc.
    fn auth(&mut self, ruri: &str) -> String {
        self.nc += 1;
        authorization(
            self.alg,
            &self.user,
            &self.password,
            "REGISTER",
            ruri,
            &self.nonce,
            self.nc,
            &self.cnonce,
        )
    }

    /// The next request: CSeq + 1, nc + 1, valid credentials; `edit` changes this request only.
    fn next(&mut self, c: &mut Client, edit: impl FnOnce(&mut Register)) -> Resp {
        self.reg.cseq += 1;
        let mut r = self.reg.clone();
        r.authorization = vec![self.auth(&r.ruri.clone())];
        edit(&mut r);
        send(c, &r)
    }
}

/// The bindings of `aor` as the admin endpoint lists them (JSON objects).
fn bindings(server: &Server, aor: &str) -> Vec<serde_json::Value> {
    let (status, body) = server
        .http_get(&format!("/admin/v1/bindings?aor={aor}"), Some(ADMIN_TOKEN))
        .expect("admin request");
    assert_eq!(status, 200, "admin bindings: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("admin JSON");
    let list = v.as_array().expect("a JSON array");
    for entry in list {
        assert_eq!(entry["aor"], format!("sip:{aor}"), "{body}");
    }
    list.iter()
        .flat_map(|e| e["bindings"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The contact URIs bound to `aor`, sorted.
fn contacts(server: &Server, aor: &str) -> Vec<String> {
    let mut v: Vec<String> = bindings(server, aor)
        .iter()
        .map(|b| b["contact"].as_str().expect("contact").to_string())
        .collect();
    v.sort();
    v
}

/// A unique contact per transport, so the two runs never see each other's bindings.
fn contact_for(user: &str, proto: Proto, n: u16) -> String {
    let port = match proto {
        Proto::Udp => 6000 + n,
        Proto::Tcp => 7000 + n,
        Proto::Tls => 8000 + n,
    };
    format!("sip:{user}@127.0.0.1:{port}")
}

/// The challenge headers (WWW- or Proxy-Authenticate) of a response.
fn challenges(r: &Resp) -> Vec<String> {
    let mut v = r.headers("WWW-Authenticate");
    v.extend(r.headers("Proxy-Authenticate"));
    v
}

/// Masks what legitimately differs between answers to two different requests: the Via values
/// (branch, rport, received), the Call-ID, the user part and tag of From and To (both echoed
/// from the request), and the nonce value (its length is kept). Everything else, status line,
/// reason phrase, header names, order, realm, algorithms, Server, Content-Length, stays.
fn normalize(r: &Resp) -> String {
    r.text
        .split("\r\n")
        .map(|line| {
            let Some((name, value)) = line.split_once(':') else {
                return line.to_string();
            };
            match name.to_ascii_lowercase().as_str() {
                "via" | "v" => format!("{name}: <via>"),
                "call-id" | "i" => format!("{name}: <call-id>"),
                "from" | "f" | "to" | "t" => format!("{name}:{}", mask_user_and_tag(value)),
                "www-authenticate" | "proxy-authenticate" => {
                    format!("{name}:{}", mask_nonce(value))
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn mask_user_and_tag(value: &str) -> String {
    let mut out = value.to_string();
    if let (Some(s), Some(at)) = (out.find("sip:"), out.find('@')) {
        if s + 4 <= at {
            out.replace_range(s + 4..at, "<user>");
        }
    }
    if let Some(t) = out.find(";tag=") {
        let start = t + 5;
        let end = out[start..]
            .find([';', ' ', '>'])
            .map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "<tag>");
    }
    out
}

fn mask_nonce(value: &str) -> String {
    let mut out = value.to_string();
    if let Some(i) = out.find("nonce=\"") {
        let start = i + 7;
        let end = start + out[start..].find('"').expect("closing quote");
        let len = end - start;
        out.replace_range(start..end, &format!("<nonce:{len}>"));
    }
    out
}

/// A non-REGISTER request from `from_user` to `to_user`.
#[allow(clippy::too_many_arguments)]
fn request(
    c: &Client,
    method: &str,
    to_user: &str,
    from_user: &str,
    call_id: &str,
    cseq: u32,
    branch: &str,
    proxy_auth: Option<&str>,
) -> String {
    let ruri = format!("sip:{to_user}@{DOMAIN}");
    let mut m = format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:{from_user}@{DOMAIN}>;tag=f{call_id}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nContact: <sip:{from_user}@{}>\r\n",
        c.proto.via(),
        c.local,
        c.local
    );
    if method == "SUBSCRIBE" {
        m.push_str("Event: presence\r\nExpires: 600\r\n");
    }
    if let Some(a) = proxy_auth {
        m.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m
}

/// For an INVITE: the ACK of its non-2xx final response (same branch, To-tag of the answer).
fn ack_for(c: &mut Client, invite: &str, resp: &Resp) {
    let head: Vec<&str> = invite.split("\r\n").collect();
    let ruri = head[0].split(' ').nth(1).unwrap();
    let get = |n: &str| head.iter().find(|l| l.starts_with(n)).unwrap().to_string();
    let to = resp.header("To").unwrap();
    let cseq_no = get("CSeq:").split(' ').nth(1).unwrap().to_string();
    let ack = format!(
        "ACK {ruri} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\n{}\r\nTo: {to}\r\n{}\r\nCSeq: {cseq_no} ACK\r\nContent-Length: 0\r\n\r\n",
        get("Via:"),
        get("From:"),
        get("Call-ID:")
    );
    c.send_raw(ack.as_bytes());
}

fn fresh_branch() -> String {
    format!("z9hG4bK{}", rand_token())
}

// ---------------------------------------------------------------------------------------------
// A1, A2: challenge, success, admin listing
// ---------------------------------------------------------------------------------------------

#[test]
fn a01_a02_challenge_then_success_and_admin_listing() {
    let server = Server::start(&Options::default());

    // The admin endpoint refuses a missing or wrong token.
    let path = format!("/admin/v1/bindings?aor={ALICE_AOR}");
    let (status, _) = server.http_get(&path, None).unwrap();
    assert_eq!(status, 401);
    let (status, _) = server.http_get(&path, Some("wrong-token")).unwrap();
    assert_eq!(status, 401);
    let (status, _) = server
        .http_get(&path, Some(&format!("{ADMIN_TOKEN}x")))
        .unwrap();
    assert_eq!(status, 401);

    for proto in PROTOS {
        let mut c = server.client(proto);
        let contact = contact_for("alice", proto, 1);
        let mut reg = Register::new("alice");
        reg.contact = Some(format!("<{contact}>"));

        // A1: 401, one challenge per configured algorithm in config order, nothing stored.
        let r = send(&mut c, &reg);
        expect(&r, 401, &format!("{proto:?} A1"));
        assert_eq!(r.status_line(), "SIP/2.0 401 Unauthorized");
        let ch = r.headers("WWW-Authenticate");
        assert_eq!(ch.len(), 2, "{}", r.text);
        let nonce = r.nonce();
        assert_eq!(nonce.len(), 44, "{nonce}");
        assert!(
            nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{nonce}"
        );
        assert_eq!(
            ch[0],
            format!(
                "Digest realm=\"example.test\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\""
            )
        );
        assert_eq!(
            ch[1],
            format!(
                "Digest realm=\"example.test\", nonce=\"{nonce}\", algorithm=SHA-256, qop=\"auth\""
            )
        );
        assert!(r.header("Contact").is_none(), "{}", r.text);
        assert!(contacts(&server, ALICE_AOR).is_empty());

        // A2: the right answer → 200, Contact echoed with its expiry; then listed by the admin.
        let mut ok = reg.clone();
        ok.cseq += 1;
        ok.authorization = vec![authorization(
            "SHA-256",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &nonce,
            1,
            &rand_token(),
        )];
        let r = send(&mut c, &ok);
        expect(&r, 200, &format!("{proto:?} A2"));
        assert_eq!(
            r.headers("Contact"),
            vec![format!("<{contact}>;expires=3600")]
        );
        assert!(r.header("Date").is_some());
        let listed = bindings(&server, ALICE_AOR);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["contact"], contact.as_str());
        assert_eq!(listed[0]["call_id"], reg.call_id.as_str());
        assert_eq!(listed[0]["cseq"], 2);
        assert_eq!(
            listed[0]["transport"],
            match proto {
                Proto::Udp => "udp",
                Proto::Tcp => "tcp",
                Proto::Tls => "tls",
            }
        );
        let expires = listed[0]["expires"].as_u64().unwrap();
        assert!((3595..=3600).contains(&expires), "{expires}");
        assert_eq!(listed[0]["source"], c.local.to_string());

        // Clean up: unregister everything so the next transport starts from nothing.
        let mut off = ok.clone();
        off.cseq += 1;
        off.contact = Some("*".into());
        off.expires = Some("0".into());
        off.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &nonce,
            2,
            &rand_token(),
        )];
        // A different cnonce with the next nc is still the same nonce dialog: accepted.
        expect(&send(&mut c, &off), 200, &format!("{proto:?} unregister"));
        assert!(contacts(&server, ALICE_AOR).is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// A3, A4, A7, A9, A21: refused credentials
// ---------------------------------------------------------------------------------------------

#[test]
fn a03_wrong_password_is_a_fresh_401_and_counts_as_a_failure() {
    let server = Server::start(&Options::default());
    let wrong = "sipward_auth_failures_total{reason=\"wrong_response\"}";
    let failed = "sipward_register_outcomes_total{outcome=\"auth_failed\"}";
    for proto in PROTOS {
        let mut c = server.client(proto);
        let (before, failed_before) = (server.metric(wrong), server.metric(failed));
        let mut s = Session::start(&mut c, Register::new("alice"), "alice", "not-the-password");
        let used = s.nonce.clone();
        let r = s.next(&mut c, |_| {});
        expect(&r, 401, &format!("{proto:?} A3"));
        assert_ne!(r.nonce(), used, "a fresh nonce");
        assert_eq!(r.headers("WWW-Authenticate").len(), 2);
        assert!(
            challenges(&r).iter().all(|h| !h.contains("stale")),
            "{}",
            r.text
        );
        assert_eq!(server.metric(wrong), before + 1.0);
        assert_eq!(server.metric(failed), failed_before + 1.0);
        assert!(contacts(&server, ALICE_AOR).is_empty());
    }
}

#[test]
fn a04_a_nonce_we_never_issued_gets_a_new_challenge() {
    let server = Server::start(&Options::default());
    let invalid = "sipward_auth_failures_total{reason=\"invalid_nonce\"}";
    for proto in PROTOS {
        let mut c = server.client(proto);
        let reg = Register::new("alice");
        let before = server.metric(invalid);
        // A well-formed 44-character base64url string (33 bytes), and garbage.
        let forged = format!(
            "AAAAAGZmZmYA{}",
            &"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo"[..32]
        );
        assert_eq!(forged.len(), 44);
        for (n, nonce) in [forged.as_str(), "garbage", ""].into_iter().enumerate() {
            let mut r = reg.clone();
            r.cseq = 10 + n as u32;
            r.authorization = vec![authorization(
                "MD5",
                "alice",
                ALICE_PW,
                "REGISTER",
                &reg.ruri,
                nonce,
                1,
                &rand_token(),
            )];
            let resp = send(&mut c, &r);
            expect(&resp, 401, &format!("{proto:?} A4 nonce {nonce:?}"));
            assert_ne!(resp.nonce(), nonce);
            assert_eq!(resp.nonce().len(), 44);
            assert!(challenges(&resp).iter().all(|h| !h.contains("stale")));
        }
        assert_eq!(server.metric(invalid), before + 3.0);
        assert!(contacts(&server, ALICE_AOR).is_empty());
        // The retry with a nonce we issued succeeds.
        let r = register(&mut c, &reg, ALICE_PW, "MD5");
        expect(&r, 200, &format!("{proto:?} A4 retry"));
        let mut off = Session::start(&mut c, Register::new("alice"), "alice", ALICE_PW);
        let r = off.next(&mut c, |r| {
            r.contact = Some("*".into());
            r.expires = Some("0".into());
        });
        expect(&r, 200, "cleanup");
    }
}

#[test]
fn a07_nonce_count_going_backwards_is_refused() {
    let server = Server::start(&Options::default());
    for proto in PROTOS {
        let mut c = server.client(proto);
        let mut reg = Register::new("alice");
        reg.contact = Some(format!("<{}>", contact_for("alice", proto, 7)));
        let mut s = Session::start(&mut c, reg, "alice", ALICE_PW);
        s.nc = 1; // the first use is nc=00000002
        expect(&s.next(&mut c, |_| {}), 200, &format!("{proto:?} nc=2"));
        s.nc = 0; // now nc=00000001
        let r = s.next(&mut c, |r| r.expires = Some("0".into()));
        expect(&r, 401, &format!("{proto:?} A7 nc=1 after nc=2"));
        // The refusal changed nothing: the binding is still there.
        assert_eq!(contacts(&server, ALICE_AOR).len(), 1);
        // nc=00000003 is above the last accepted one: accepted.
        s.nc = 2;
        let r = s.next(&mut c, |r| r.expires = Some("0".into()));
        expect(&r, 200, &format!("{proto:?} nc=3"));
        assert!(contacts(&server, ALICE_AOR).is_empty());
    }
}

#[test]
fn a09_digest_uri_differing_from_the_request_uri_is_400() {
    let server = Server::start(&Options::default());
    for proto in PROTOS {
        let mut c = server.client(proto);
        let reg = Register::new("alice");
        let nonce = challenge(&mut c, &reg);
        for (n, uri) in [
            "sip:other.test",
            "sip:example.test;transport=tcp",
            "sip:alice@example.test",
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = reg.clone();
            r.cseq = 2 + n as u32;
            // The response is right for the uri it names, so only the mismatch can refuse it.
            r.authorization = vec![authorization(
                "MD5",
                "alice",
                ALICE_PW,
                "REGISTER",
                uri,
                &nonce,
                1 + n as u32,
                &rand_token(),
            )];
            let resp = send(&mut c, &r);
            expect(&resp, 400, &format!("{proto:?} A9 uri {uri}"));
            assert_eq!(resp.status_line(), "SIP/2.0 400 Digest URI Mismatch");
        }
        assert!(contacts(&server, ALICE_AOR).is_empty());
        // The same nonce and the matching uri: 200 (the nonce was never consumed).
        let mut r = reg.clone();
        r.cseq = 10;
        r.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &nonce,
            1,
            &rand_token(),
        )];
        expect(&send(&mut c, &r), 200, &format!("{proto:?} matching uri"));
        r.cseq = 11;
        r.contact = Some("*".into());
        r.expires = Some("0".into());
        r.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &nonce,
            2,
            &rand_token(),
        )];
        expect(&send(&mut c, &r), 200, "cleanup");
    }
}

#[test]
fn a21_two_authorization_headers_for_one_realm_are_400() {
    let server = Server::start(&Options::default());
    for proto in PROTOS {
        let mut c = server.client(proto);
        let reg = Register::new("alice");
        let nonce = challenge(&mut c, &reg);
        let good = authorization(
            "MD5", "alice", ALICE_PW, "REGISTER", &reg.ruri, &nonce, 1, "c1",
        );
        let bad = authorization(
            "MD5",
            "alice",
            "wrong-password",
            "REGISTER",
            &reg.ruri,
            &nonce,
            1,
            "c2",
        );
        for (n, pair) in [
            vec![good.clone(), bad.clone()],
            vec![bad.clone(), good.clone()],
            vec![good.clone(), good.clone()],
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = reg.clone();
            r.cseq = 2 + n as u32;
            r.authorization = pair;
            let resp = send(&mut c, &r);
            expect(&resp, 400, &format!("{proto:?} A21 case {n}"));
            assert_eq!(resp.status_line(), "SIP/2.0 400 Bad Authorization");
        }
        assert!(contacts(&server, ALICE_AOR).is_empty());
        // The nonce was not consumed by those: the good header alone still works.
        let mut r = reg.clone();
        r.cseq = 9;
        r.contact = None; // a fetch: stores nothing
        r.authorization = vec![good];
        expect(&send(&mut c, &r), 200, &format!("{proto:?} single header"));
    }
}

// ---------------------------------------------------------------------------------------------
// A5, E3: stale nonces. The order (stale before any lookup) is a unit test of the
// authenticator on a virtual clock (src/auth/authenticator_tests.rs
// `a05_e03_expired_nonce_is_stale_for_known_and_unknown_users_before_any_lookup`); the wire
// answer is below, with nonces the server itself would have issued an hour ago.
// ---------------------------------------------------------------------------------------------

/// A nonce as the server minted it `age_secs` ago: same secret (`auth.nonce_secret_file`),
/// same key derivation, same realm. Waiting out a nonce lifetime would give the same nonce.
fn aged_nonce(secret: &[u8], age_secs: u64) -> String {
    use sha2::Digest;
    let key: [u8; 32] = sha2::Sha256::digest(secret).into();
    let keys = sipward::auth::NonceKeys::from_bytes(&[(1, key)]).expect("nonce key");
    let issuer = sipward::auth::NonceIssuer::new(
        keys,
        sipward::auth::NonceConfig {
            lifetime: sipward::auth::DEFAULT_NONCE_LIFETIME,
            max_drift: sipward::auth::DEFAULT_NONCE_MAX_DRIFT,
        },
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    issuer.mint(DOMAIN, None, now - age_secs)
}

#[test]
fn a05_e03_expired_nonce_is_stale_for_known_and_unknown_users() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = b"a-test-nonce-secret-of-at-least-thirty-two-bytes";
    let secret_file = secret_dir.path().join("nonce.secret");
    std::fs::write(&secret_file, secret).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let auth = format!(
        "nonce_lifetime_secs = 10\nnonce_secret_file = \"{}\"",
        secret_file.display()
    );
    let server = Server::start(&Options {
        auth: &auth,
        ..Options::default()
    });
    let stale = "sipward_auth_failures_total{reason=\"stale_nonce\"}";
    let stale_before = server.metric(stale);
    let mut answered = 0.0;

    // A5: 401 with stale=true; the retry with the new nonce gets 200.
    for proto in PROTOS {
        let mut c = server.client(proto);
        let mut r = Register::new("alice");
        let old = aged_nonce(secret, 3600);
        r.cseq = 2;
        r.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &r.ruri,
            &old,
            1,
            &rand_token(),
        )];
        let resp = send(&mut c, &r);
        expect(&resp, 401, &format!("{proto:?} A5 stale"));
        answered += 1.0;
        let ch = resp.headers("WWW-Authenticate");
        assert_eq!(ch.len(), 2);
        assert!(ch.iter().all(|h| h.ends_with(", stale=true")), "{ch:?}");
        let fresh = resp.nonce();
        assert_ne!(fresh, old);
        r.cseq = 3;
        r.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &r.ruri,
            &fresh,
            1,
            &rand_token(),
        )];
        expect(&send(&mut c, &r), 200, &format!("{proto:?} A5 retry"));
    }

    // E3: garbage credentials on an expired nonce, known and unknown users: the same stale=true.
    let mut seen: Vec<(Proto, String, String)> = Vec::new();
    for proto in PROTOS {
        for user in ["alice", "bob", "ghost", "u4821"] {
            let mut c = server.client(proto);
            let mut r = Register::new(user);
            r.cseq = 2;
            r.authorization = vec![format!(
                "Digest username=\"{user}\", realm=\"{DOMAIN}\", nonce=\"{}\", uri=\"{}\", \
                 response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, cnonce=\"x\", qop=auth, nc=00000001",
                aged_nonce(secret, 3600),
                r.ruri
            )];
            let resp = send(&mut c, &r);
            expect(&resp, 401, &format!("{proto:?} E3 {user}"));
            answered += 1.0;
            assert!(
                challenges(&resp)
                    .iter()
                    .all(|h| h.ends_with(", stale=true")),
                "{}",
                resp.text
            );
            seen.push((proto, user.to_string(), normalize(&resp)));
        }
    }
    for proto in PROTOS {
        let of: Vec<&(Proto, String, String)> = seen.iter().filter(|s| s.0 == proto).collect();
        for s in &of[1..] {
            assert_eq!(s.2, of[0].2, "{proto:?}: {} vs {}", s.1, of[0].1);
        }
    }
    assert_eq!(server.metric(stale), stale_before + answered);
}

/// Every REGISTER refusal counts one outcome: a Digest `uri` mismatch is a 400 like any other
/// (`sipward_register_outcomes_total{outcome="bad_request"}`), counted once.
#[test]
fn a09_a_digest_uri_mismatch_counts_as_a_bad_request_register() {
    let server = Server::start(&Options::default());
    let bad = "sipward_register_outcomes_total{outcome=\"bad_request\"}";
    let malformed = "sipward_auth_failures_total{reason=\"malformed\"}";
    for proto in PROTOS {
        let mut c = server.client(proto);
        let reg = Register::new("alice");
        let nonce = challenge(&mut c, &reg);
        let (bad_before, malformed_before) = (server.metric(bad), server.metric(malformed));
        let mut r = reg.clone();
        r.cseq = 2;
        r.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            "sip:other.test",
            &nonce,
            1,
            &rand_token(),
        )];
        let resp = send(&mut c, &r);
        assert_eq!(resp.status_line(), "SIP/2.0 400 Digest URI Mismatch");
        assert_eq!(server.metric(bad), bad_before + 1.0, "{proto:?}");
        assert_eq!(
            server.metric(malformed),
            malformed_before + 1.0,
            "{proto:?}"
        );
    }
}

#[test]
fn a06_replayed_credentials_are_refused() {
    let server = Server::start(&Options::default());
    let replay = "sipward_auth_failures_total{reason=\"replay\"}";
    for proto in PROTOS {
        let mut c = server.client(proto);
        let mut reg = Register::new("alice");
        reg.contact = Some(format!("<{}>", contact_for("alice", proto, 6)));
        let nonce = challenge(&mut c, &reg);
        let captured = authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &nonce,
            1,
            "replayed-cnonce",
        );
        let mut first = reg.clone();
        first.cseq = 2;
        first.authorization = vec![captured.clone()];
        expect(&send(&mut c, &first), 200, &format!("{proto:?} first use"));
        let before = server.metric(replay);

        // The same Authorization again (a new transaction, higher CSeq so that only the
        // credentials can be the reason), asking to remove the binding.
        let mut again = first.clone();
        again.cseq = 3;
        again.expires = Some("0".into());
        expect(
            &send(&mut c, &again),
            401,
            &format!("{proto:?} A6 same socket"),
        );

        // From another Call-ID.
        let mut other_call = again.clone();
        other_call.call_id = format!("other-{}", rand_token());
        other_call.cseq = 4;
        expect(
            &send(&mut c, &other_call),
            401,
            &format!("{proto:?} A6 other Call-ID"),
        );

        // From another socket (another source port; for TCP another connection), same IP:
        // the same Call-ID and nc is still refused, and so is another Call-ID.
        for p in PROTOS {
            let mut other = server.client(p);
            let mut r = again.clone();
            r.cseq = 5;
            expect(
                &send(&mut other, &r),
                401,
                &format!("{proto:?}→{p:?} A6 other socket, same Call-ID"),
            );
            r.call_id = format!("other-{}", rand_token());
            expect(
                &send(&mut other, &r),
                401,
                &format!("{proto:?}→{p:?} A6 other socket, other Call-ID"),
            );
        }
        assert_eq!(server.metric(replay), before + 6.0);
        // Nothing above changed the binding.
        assert_eq!(contacts(&server, ALICE_AOR).len(), 1);

        // Pinned: the nonce is bound to its first Call-ID and source IP, not to the port, so
        // the next nc from another socket on the same IP is accepted (NAT rebinding, A23).
        let mut other = server.client(proto);
        let mut r = first.clone();
        r.cseq = 6;
        r.expires = Some("0".into());
        r.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &nonce,
            2,
            "replayed-cnonce",
        )];
        expect(
            &send(&mut other, &r),
            200,
            &format!("{proto:?} nc=2 other socket"),
        );
        assert!(contacts(&server, ALICE_AOR).is_empty());
    }
}

/// Issue 13: a replay table far smaller than the number of nonces in use (the smallest allowed,
/// 1024 slots, against 1500 registrations) never refuses a fresh nonce; a nonce whose slot a
/// newer one took gets one `stale=true` round trip; every captured Authorization replayed
/// afterwards is refused and changes nothing.
#[test]
fn a06_replay_table_at_capacity_serves_fresh_nonces_and_refuses_replays() {
    let server = Server::start(&Options {
        auth: "replay_table_size = 1024",
        ..Options::default()
    });
    let mut c = Client::new(Proto::Udp, server.udp);
    // A nonce handed out now and first used after 1500 newer ones were.
    let mut late = Register::new("alice");
    let late_nonce = challenge(&mut c, &late);

    let mut captured = Vec::new();
    for n in 0..1500 {
        let mut reg = Register::new("alice");
        reg.contact = Some("<sip:alice@127.0.0.1:5999>".into());
        let nonce = challenge(&mut c, &reg);
        reg.cseq = 2;
        reg.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &nonce,
            1,
            &rand_token(),
        )];
        expect(&send(&mut c, &reg), 200, &format!("registration {n}"));
        captured.push(reg);
    }

    // The late nonce lost its slot: stale, and the phone's retry with the new nonce works.
    late.cseq = 2;
    late.authorization = vec![authorization(
        "MD5",
        "alice",
        ALICE_PW,
        "REGISTER",
        &late.ruri,
        &late_nonce,
        1,
        &rand_token(),
    )];
    let r = send(&mut c, &late);
    expect(&r, 401, "superseded nonce");
    let challenge_header = r.header("WWW-Authenticate").expect("a challenge");
    assert!(challenge_header.contains("stale=true"), "{}", r.text);
    late.cseq = 3;
    late.authorization = vec![authorization(
        "MD5",
        "alice",
        ALICE_PW,
        "REGISTER",
        &late.ruri,
        &r.nonce(),
        1,
        &rand_token(),
    )];
    expect(&send(&mut c, &late), 200, "retry with the new nonce");

    // Every captured header again, asking to remove the binding: all refused.
    let ok_before = server.metric("sipward_register_outcomes_total{outcome=\"ok\"}");
    for (n, reg) in captured.iter().enumerate() {
        let mut replay = reg.clone();
        replay.cseq = 10;
        replay.expires = Some("0".into());
        expect(&send(&mut c, &replay), 401, &format!("replay of {n}"));
    }
    assert_eq!(
        server.metric("sipward_register_outcomes_total{outcome=\"ok\"}"),
        ok_before
    );
    assert_eq!(contacts(&server, ALICE_AOR).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// A8: a nonce from another server instance
// ---------------------------------------------------------------------------------------------

#[test]
fn a08_a_nonce_from_another_instance_is_refused() {
    let ours = Server::start(&Options::default());
    let theirs = Server::start(&Options::default());
    for proto in PROTOS {
        let mut c_theirs = theirs.client(proto);
        let mut c = ours.client(proto);
        let reg = Register::new("alice");
        let foreign = challenge(&mut c_theirs, &reg);
        let mut r = reg.clone();
        r.cseq = 2;
        r.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &foreign,
            1,
            &rand_token(),
        )];
        let resp = send(&mut c, &r);
        expect(&resp, 401, &format!("{proto:?} A8"));
        assert!(challenges(&resp).iter().all(|h| !h.contains("stale")));
        assert!(contacts(&ours, ALICE_AOR).is_empty());
        // Our own nonce then works.
        r.cseq = 3;
        r.contact = None;
        r.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &resp.nonce(),
            1,
            &rand_token(),
        )];
        expect(&send(&mut c, &r), 200, &format!("{proto:?} own nonce"));
    }
}

// ---------------------------------------------------------------------------------------------
// A10, A11, A12: who may bind what
// ---------------------------------------------------------------------------------------------

#[test]
fn a10_a11_a12_identity_and_request_uri_rules() {
    let server = Server::start(&Options::default());
    for proto in PROTOS {
        let mut c = server.client(proto);

        // A10: alice's credentials with To and From = bob → 403; bob's AoR stays unbound.
        let mut s = Session::start(&mut c, Register::new("bob"), "alice", ALICE_PW);
        let r = s.next(&mut c, |_| {});
        expect(&r, 403, &format!("{proto:?} A10 To/From bob"));
        // And with From = alice, To = bob.
        let mut reg = Register::new("alice");
        reg.to_user = "bob".into();
        let mut s = Session::start(&mut c, reg, "alice", ALICE_PW);
        expect(
            &s.next(&mut c, |_| {}),
            403,
            &format!("{proto:?} A10 To bob"),
        );
        assert!(contacts(&server, BOB_AOR).is_empty());
        assert!(contacts(&server, ALICE_AOR).is_empty());

        // A11: To names a user that does not exist. The hijack rule (identity ≠ To AoR) runs
        // first, so this is the same 403 as for another existing user: the answer says
        // nothing about whether the AoR exists, and it is only given after authentication.
        let mut reg = Register::new("alice");
        reg.to_user = format!("nobody{}", rand_token());
        let mut s = Session::start(&mut c, reg.clone(), "alice", ALICE_PW);
        let unknown = s.next(&mut c, |_| {});
        expect(&unknown, 403, &format!("{proto:?} A11"));
        assert_eq!(unknown.status_line(), "SIP/2.0 403 Forbidden");
        assert!(contacts(&server, &format!("{}@{DOMAIN}", reg.to_user)).is_empty());

        // A12: a user part in the Request-URI → 400, with or without credentials.
        let mut reg = Register::new("alice");
        reg.ruri = format!("sip:alice@{DOMAIN}");
        let r = send(&mut c, &reg);
        expect(&r, 400, &format!("{proto:?} A12 anonymous"));
        assert_eq!(r.status_line(), "SIP/2.0 400 User In Request-URI");
        let nonce = challenge(&mut c, &Register::new("alice"));
        let mut r2 = reg.clone();
        r2.cseq = 2;
        r2.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &nonce,
            1,
            &rand_token(),
        )];
        expect(
            &send(&mut c, &r2),
            400,
            &format!("{proto:?} A12 with credentials"),
        );
        assert!(contacts(&server, ALICE_AOR).is_empty());
    }
}

/// Issue 12 item 13: a To without a user part names no AoR; like a To naming another user it
/// is challenged first (401) and refused only after authentication (403), so the order of
/// checks is the same for every malformed AoR. Before the fix it was a 403 before any
/// challenge.
#[test]
fn to_without_a_user_part_is_challenged_before_it_is_refused() {
    let server = Server::start(&Options::default());
    for proto in PROTOS {
        let mut c = server.client(proto);
        let mut reg = Register::new("alice");
        reg.to_user = String::new();
        let no_user = |r: &Register, c: &Client| {
            let text = r.build(c);
            let fixed = text.replace(
                &format!("To: <sip:@{DOMAIN}>"),
                &format!("To: <sip:{DOMAIN}>"),
            );
            assert_ne!(fixed, text, "To rewritten");
            fixed
        };
        let text = no_user(&reg, &c);
        let first = send_text(&mut c, &text);
        expect(
            &first,
            401,
            &format!("{proto:?} To without user, no credentials"),
        );
        let mut next = reg.clone();
        next.cseq += 1;
        next.authorization = vec![authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "REGISTER",
            &reg.ruri,
            &first.nonce(),
            1,
            &rand_token(),
        )];
        let text = no_user(&next, &c);
        let r = send_text(&mut c, &text);
        expect(
            &r,
            403,
            &format!("{proto:?} To without user, alice's credentials"),
        );
        assert!(contacts(&server, ALICE_AOR).is_empty());
    }
    assert_eq!(server.admin_bindings(), "[]");
}

// ---------------------------------------------------------------------------------------------
// A13, A14: CSeq and Call-ID
// ---------------------------------------------------------------------------------------------

#[test]
fn a13_a14_out_of_order_cseq_and_new_call_id() {
    let server = Server::start(&Options::default());
    for proto in PROTOS {
        let mut c = server.client(proto);
        let contact = contact_for("alice", proto, 13);
        let mut reg = Register::new("alice");
        reg.contact = Some(format!("<{contact}>"));
        reg.cseq = 4;
        let mut s = Session::start(&mut c, reg.clone(), "alice", ALICE_PW);
        expect(&s.next(&mut c, |_| {}), 200, &format!("{proto:?} CSeq 5"));
        let stored = bindings(&server, ALICE_AOR);
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0]["cseq"], 5);

        // A13: same Call-ID, lower CSeq, asking to remove the binding → 400, binding unchanged.
        let r = s.next(&mut c, |r| {
            r.cseq = 3;
            r.expires = Some("0".into());
        });
        expect(&r, 400, &format!("{proto:?} A13 lower CSeq"));
        // The same CSeq again is not higher either.
        let r = s.next(&mut c, |r| {
            r.cseq = 5;
            r.expires = Some("0".into());
        });
        expect(&r, 400, &format!("{proto:?} A13 equal CSeq"));
        let after = bindings(&server, ALICE_AOR);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0]["cseq"], 5);
        assert_eq!(after[0]["call_id"], reg.call_id.as_str());

        // A14: a new Call-ID with the same CSeq (5) → 200; the binding now carries that Call-ID.
        let mut other = reg.clone();
        other.call_id = format!("alice-new-{}", rand_token());
        let mut s2 = Session::start(&mut c, other.clone(), "alice", ALICE_PW);
        expect(&s2.next(&mut c, |_| {}), 200, &format!("{proto:?} A14"));
        let after = bindings(&server, ALICE_AOR);
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(after[0]["cseq"], 5);
        assert_eq!(after[0]["call_id"], other.call_id.as_str());

        let r = s2.next(&mut c, |r| {
            r.contact = Some("*".into());
            r.expires = Some("0".into());
        });
        expect(&r, 200, "cleanup");
    }
}

// ---------------------------------------------------------------------------------------------
// A15, A16: Contact: *
// ---------------------------------------------------------------------------------------------

#[test]
fn a15_a16_star_contact_rules() {
    let server = Server::start(&Options::default());
    for proto in PROTOS {
        let mut c = server.client(proto);

        // A16: unregistering an AoR without bindings: 401 without credentials (nothing leaks
        // to anonymous clients), 404 after authentication.
        let mut star = Register::new("alice");
        star.contact = Some("*".into());
        star.expires = Some("0".into());
        let mut s = Session::start(&mut c, star, "alice", ALICE_PW);
        let r = s.next(&mut c, |_| {});
        expect(&r, 404, &format!("{proto:?} A16"));
        assert_eq!(r.status_line(), "SIP/2.0 404 Not Found");

        // Register two contacts.
        let (c1, c2) = (
            contact_for("alice", proto, 1),
            contact_for("alice", proto, 2),
        );
        let r = s.next(&mut c, |r| {
            r.contact = Some(format!("<{c1}>, <{c2}>"));
            r.expires = None;
        });
        expect(&r, 200, &format!("{proto:?} two contacts"));
        let mut want = vec![c1.clone(), c2.clone()];
        want.sort();
        assert_eq!(contacts(&server, ALICE_AOR), want);

        // A15: `*` with a non-zero Expires, without Expires, or next to another contact → 400.
        let r = s.next(&mut c, |r| r.expires = Some("3600".into()));
        expect(&r, 400, &format!("{proto:?} A15 * Expires 3600"));
        let r = s.next(&mut c, |r| r.expires = None);
        expect(&r, 400, &format!("{proto:?} A15 * without Expires"));
        let r = s.next(&mut c, |r| r.contact = Some(format!("*, <{c1}>")));
        expect(&r, 400, &format!("{proto:?} A15 * and a contact"));
        let r = s.next(&mut c, |r| r.contact = Some(format!("<{c1}>, *")));
        expect(&r, 400, &format!("{proto:?} A15 a contact and *"));
        let r = s.next(&mut c, |r| r.contact = Some(format!("<{c1}>;expires=0, *")));
        expect(&r, 400, &format!("{proto:?} A15 contact;expires=0 and *"));
        assert_eq!(contacts(&server, ALICE_AOR), want, "400s changed nothing");

        // `*` with Expires: 0 → 200, everything gone.
        let r = s.next(&mut c, |_| {});
        expect(&r, 200, &format!("{proto:?} A15 * Expires 0"));
        assert!(r.header("Contact").is_none(), "{}", r.text);
        assert!(contacts(&server, ALICE_AOR).is_empty());
        // And again: nothing left → 404.
        expect(
            &s.next(&mut c, |_| {}),
            404,
            &format!("{proto:?} A16 again"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A17, A18: expiry limits
// ---------------------------------------------------------------------------------------------

#[test]
fn a17_a18_expires_below_minimum_and_above_maximum() {
    let server = Server::start(&Options::default());
    for proto in PROTOS {
        let mut c = server.client(proto);
        let contact = contact_for("alice", proto, 17);
        let mut reg = Register::new("alice");
        reg.contact = Some(format!("<{contact}>"));
        let mut s = Session::start(&mut c, reg, "alice", ALICE_PW);

        // A17: below the minimum (60), by header or by contact parameter → 423 Min-Expires: 60.
        let r = s.next(&mut c, |r| r.expires = Some("30".into()));
        expect(&r, 423, &format!("{proto:?} A17 header"));
        assert_eq!(r.status_line(), "SIP/2.0 423 Interval Too Brief");
        assert_eq!(r.headers("Min-Expires"), vec!["60".to_string()]);
        let r = s.next(&mut c, |r| {
            r.contact = Some(format!("<{contact}>;expires=59"))
        });
        expect(&r, 423, &format!("{proto:?} A17 param"));
        assert_eq!(r.headers("Min-Expires"), vec!["60".to_string()]);
        assert!(contacts(&server, ALICE_AOR).is_empty());

        // 60 exactly is enough.
        let r = s.next(&mut c, |r| r.expires = Some("60".into()));
        expect(&r, 200, &format!("{proto:?} 60 s"));
        assert_eq!(
            r.headers("Contact"),
            vec![format!("<{contact}>;expires=60")]
        );

        // A18: above the maximum (3600) → 200, clamped to 3600.
        let r = s.next(&mut c, |r| r.expires = Some("100000".into()));
        expect(&r, 200, &format!("{proto:?} A18 header"));
        assert_eq!(
            r.headers("Contact"),
            vec![format!("<{contact}>;expires=3600")]
        );
        let r = s.next(&mut c, |r| {
            r.contact = Some(format!("<{contact}>;expires=4294967296"))
        });
        expect(&r, 200, &format!("{proto:?} A18 param above u32"));
        assert_eq!(
            r.headers("Contact"),
            vec![format!("<{contact}>;expires=3600")]
        );
        let listed = bindings(&server, ALICE_AOR);
        assert_eq!(listed.len(), 1);
        let left = listed[0]["expires"].as_u64().unwrap();
        assert!((3595..=3600).contains(&left), "{left}");

        let r = s.next(&mut c, |r| {
            r.contact = Some("*".into());
            r.expires = Some("0".into());
        });
        expect(&r, 200, "cleanup");
    }
}

// ---------------------------------------------------------------------------------------------
// A19: binding limit
// ---------------------------------------------------------------------------------------------

#[test]
fn a19_more_contacts_than_allowed_is_503_and_stores_nothing_beyond() {
    let server = Server::start(&Options {
        registrar: "max_bindings_per_aor = 2",
        ..Options::default()
    });
    for proto in PROTOS {
        let mut c = server.client(proto);
        let cs: Vec<String> = (1..=3).map(|n| contact_for("alice", proto, n)).collect();
        let mut s = Session::start(&mut c, Register::new("alice"), "alice", ALICE_PW);

        // Three at once: 503, nothing stored.
        let r = s.next(&mut c, |r| {
            r.contact = Some(format!("<{}>, <{}>, <{}>", cs[0], cs[1], cs[2]))
        });
        expect(&r, 503, &format!("{proto:?} A19 three at once"));
        assert_eq!(r.status_line(), "SIP/2.0 503 Too Many Registered Contacts");
        assert!(contacts(&server, ALICE_AOR).is_empty());

        // Two: fine.
        let r = s.next(&mut c, |r| {
            r.contact = Some(format!("<{}>, <{}>", cs[0], cs[1]))
        });
        expect(&r, 200, &format!("{proto:?} two"));
        let two = vec![cs[0].clone(), cs[1].clone()];
        assert_eq!(contacts(&server, ALICE_AOR), two);

        // A third: 503, still the two.
        let r = s.next(&mut c, |r| r.contact = Some(format!("<{}>", cs[2])));
        expect(&r, 503, &format!("{proto:?} A19 third"));
        assert_eq!(contacts(&server, ALICE_AOR), two);

        // Replacing one (remove one, add another, in one request) stays within the limit.
        let r = s.next(&mut c, |r| {
            r.contact = Some(format!("<{}>;expires=0, <{}>", cs[0], cs[2]))
        });
        expect(&r, 200, &format!("{proto:?} swap"));
        assert_eq!(
            contacts(&server, ALICE_AOR),
            vec![cs[1].clone(), cs[2].clone()]
        );

        let r = s.next(&mut c, |r| {
            r.contact = Some("*".into());
            r.expires = Some("0".into());
        });
        expect(&r, 200, "cleanup");
    }
}

// ---------------------------------------------------------------------------------------------
// A20: algorithm downgrade
// ---------------------------------------------------------------------------------------------

#[test]
fn a20_only_configured_algorithms_are_accepted_or_offered() {
    let server = Server::start(&Options {
        algorithms: &["SHA-256"],
        ..Options::default()
    });
    let algorithm_failures = "sipward_auth_failures_total{reason=\"algorithm\"}";
    for proto in PROTOS {
        let mut c = server.client(proto);
        let reg = Register::new("alice");
        let first = send(&mut c, &reg);
        expect(&first, 401, "challenge");
        let only_sha256 = |r: &Resp| {
            let ch = r.headers("WWW-Authenticate");
            assert_eq!(ch.len(), 1, "{}", r.text);
            assert!(ch[0].contains(", algorithm=SHA-256, "), "{}", ch[0]);
            assert!(!r.text.contains("MD5"), "{}", r.text);
        };
        only_sha256(&first);
        let nonce = first.nonce();
        let before = server.metric(algorithm_failures);

        let uri = reg.ruri.clone();
        let md5 = authorization("MD5", "alice", ALICE_PW, "REGISTER", &uri, &nonce, 1, "c");
        // MD5-sess computed properly: HA1 = MD5(MD5(user:realm:pw):nonce:cnonce).
        let sess_ha1 = h(
            "MD5",
            &format!(
                "{}:{nonce}:c",
                h("MD5", &format!("alice:{DOMAIN}:{ALICE_PW}"))
            ),
        );
        let ha2 = h("MD5", &format!("REGISTER:{uri}"));
        let sess_resp = h("MD5", &format!("{sess_ha1}:{nonce}:00000001:c:auth:{ha2}"));
        let md5_sess = format!(
            "Digest username=\"alice\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{sess_resp}\", algorithm=MD5-sess, cnonce=\"c\", qop=auth, nc=00000001"
        );
        let unknown = md5.replace("algorithm=MD5", "algorithm=SHA-1");
        // No algorithm parameter means MD5 (RFC 2617).
        let absent = md5.replace(", algorithm=MD5", "");
        for (n, (name, a)) in [
            ("MD5", md5),
            ("MD5-sess", md5_sess),
            ("unknown", unknown),
            ("absent", absent),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = reg.clone();
            r.cseq = 2 + n as u32;
            r.authorization = vec![a];
            let resp = send(&mut c, &r);
            expect(&resp, 401, &format!("{proto:?} A20 {name}"));
            only_sha256(&resp);
        }
        assert_eq!(server.metric(algorithm_failures), before + 4.0);
        assert!(contacts(&server, ALICE_AOR).is_empty());

        // SHA-256 on the same nonce (never consumed by the refusals) → 200.
        let mut r = reg.clone();
        r.cseq = 10;
        r.contact = None;
        r.authorization = vec![authorization(
            "SHA-256", "alice", ALICE_PW, "REGISTER", &uri, &nonce, 1, "c",
        )];
        expect(&send(&mut c, &r), 200, &format!("{proto:?} SHA-256"));
    }
}

// ---------------------------------------------------------------------------------------------
// E1, E2 (and E4, measured only): known and unknown users look the same
// ---------------------------------------------------------------------------------------------

#[test]
fn e01_e02_known_and_unknown_users_get_identical_answers() {
    let names: Vec<(String, String)> = (0..50)
        .map(|n| (format!("user{n:02}"), format!("pw-{n}-{}", rand_token())))
        .collect();
    let accounts: Vec<Account<'_>> = names
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let server = Server::start(&Options {
        accounts: &accounts,
        // 200 wrong answers from 127.0.0.1 must not trip the per-source limiter.
        auth: "max_failures_per_source = 100000",
        ..Options::default()
    });
    let unknown: Vec<String> = (0..50)
        .map(|n| format!("{}{:x}", ["x", "ext", "zz"][n % 3], rand::random::<u32>()))
        .collect();
    assert!(unknown.iter().all(|u| !u.starts_with("user")));

    for proto in PROTOS {
        let mut c = server.client(proto);
        let mut e1: Vec<(String, String)> = Vec::new();
        let mut e2: Vec<(String, String)> = Vec::new();
        let mut timing: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        let users = names
            .iter()
            .map(|(u, _)| (u.as_str(), true))
            .chain(unknown.iter().map(|u| (u.as_str(), false)));
        for (user, known) in users {
            // E1: no credentials.
            let reg = Register::new(user);
            let r = send(&mut c, &reg);
            expect(&r, 401, &format!("{proto:?} E1 {user}"));
            assert_eq!(r.nonce().len(), 44);
            assert_eq!(r.header("Server").as_deref(), Some("sipward"));
            e1.push((user.to_string(), normalize(&r)));
            // E2: wrong credentials on that nonce.
            let mut bad = reg.clone();
            bad.cseq = 2;
            bad.authorization = vec![authorization(
                "MD5",
                user,
                "wrong-password",
                "REGISTER",
                &reg.ruri,
                &r.nonce(),
                1,
                &rand_token(),
            )];
            let t0 = Instant::now();
            let r = send(&mut c, &bad);
            timing[usize::from(known)].push(t0.elapsed());
            expect(&r, 401, &format!("{proto:?} E2 {user}"));
            e2.push((user.to_string(), normalize(&r)));
        }
        for (case, all) in [("E1", &e1), ("E2", &e2)] {
            for (user, text) in &all[1..] {
                assert_eq!(
                    text, &all[0].1,
                    "{proto:?} {case}: {user} differs from {}",
                    all[0].0
                );
            }
        }
        // E4 (docs/testing.md): a timing comparison is not asserted here, because this machine is
        // shared and noisy; the benchmark issue owns it. Printed for information only.
        for t in &mut timing {
            t.sort();
        }
        println!(
            "{proto:?} E4 (informational) wrong-password median: known {:?}, unknown {:?}",
            timing[1][timing[1].len() / 2],
            timing[0][timing[0].len() / 2]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// E5: other methods are challenged before any lookup
// ---------------------------------------------------------------------------------------------

#[test]
fn e05_other_methods_get_the_same_407_before_any_lookup() {
    let server = Server::start(&Options {
        accounts: &[
            ("alice", ALICE_PW),
            ("bob", BOB_PW),
            ("carol", "carol-secret-3"),
        ],
        ..Options::default()
    });
    // bob is registered (over UDP, so the binding outlives the client); carol is known but
    // not registered; the third target does not exist.
    let mut cb = Client::new(Proto::Udp, server.udp);
    expect(
        &register(&mut cb, &Register::new("bob"), BOB_PW, "MD5"),
        200,
        "bob registers",
    );
    let ghost = format!("ghost{:x}", rand::random::<u32>());
    let targets = [
        ("bob", "registered"),
        ("carol", "unregistered"),
        (ghost.as_str(), "unknown"),
    ];

    for proto in PROTOS {
        let mut c = server.client(proto);
        for method in ["INVITE", "OPTIONS", "MESSAGE", "SUBSCRIBE"] {
            let mut seen: Vec<(String, String)> = Vec::new();
            for (user, kind) in targets {
                // Anonymous (no Proxy-Authorization; From is alice or an anonymous caller).
                for from in ["alice", "anonymous"] {
                    let call_id = rand_token();
                    let msg = request(&c, method, user, from, &call_id, 1, &fresh_branch(), None);
                    let r = send_text(&mut c, &msg);
                    expect(
                        &r,
                        407,
                        &format!("{proto:?} E5 {method} to {kind} from {from}"),
                    );
                    assert_eq!(r.status_line(), "SIP/2.0 407 Proxy Authentication Required");
                    assert_eq!(r.headers("Proxy-Authenticate").len(), 2, "{}", r.text);
                    assert!(r.header("WWW-Authenticate").is_none());
                    if method == "INVITE" {
                        ack_for(&mut c, &msg, &r);
                    }
                    seen.push((format!("{kind} from {from}"), normalize(&r)));
                }
            }
            for (what, text) in &seen[1..] {
                assert_eq!(
                    text, &seen[0].1,
                    "{proto:?} {method}: {what} vs {}",
                    seen[0].0
                );
            }

            // With alice's valid Proxy-Authorization, the location is consulted.
            for (user, kind) in targets {
                let call_id = rand_token();
                let anon = request(
                    &c,
                    method,
                    user,
                    "alice",
                    &call_id,
                    1,
                    &fresh_branch(),
                    None,
                );
                let r = send_text(&mut c, &anon);
                expect(&r, 407, "challenge");
                if method == "INVITE" {
                    ack_for(&mut c, &anon, &r);
                }
                let ruri = format!("sip:{user}@{DOMAIN}");
                let auth = authorization(
                    "MD5",
                    "alice",
                    ALICE_PW,
                    method,
                    &ruri,
                    &r.nonce(),
                    1,
                    &rand_token(),
                );
                let msg = request(
                    &c,
                    method,
                    user,
                    "alice",
                    &call_id,
                    2,
                    &fresh_branch(),
                    Some(&auth),
                );
                let what = format!("{proto:?} E5 {method} to {kind}, authenticated");
                if kind == "registered" {
                    // Past authentication and lookup, the request is forwarded to bob's
                    // binding (his UDP client); an INVITE is answered 100 Trying first.
                    c.send_raw(msg.as_bytes());
                    if method == "INVITE" {
                        let trying = c.recv(Duration::from_secs(2)).expect("100 Trying");
                        expect(&trying, 100, &what);
                    }
                    // Skip retransmissions of earlier forwarded INVITEs (bob never answers).
                    let fwd = std::iter::from_fn(|| cb.recv(Duration::from_secs(2)))
                        .find(|m| m.header("Call-ID").as_deref() == Some(call_id.as_str()))
                        .expect("forwarded to bob");
                    assert!(
                        fwd.text
                            .starts_with(&format!("{method} sip:bob@127.0.0.1:5999 SIP/2.0")),
                        "{what}: {}",
                        fwd.text
                    );
                    assert_eq!(fwd.header("Call-ID"), Some(call_id.clone()), "{what}");
                    continue;
                }
                let r = send_text(&mut c, &msg);
                if method == "INVITE" {
                    ack_for(&mut c, &msg, &r);
                }
                match kind {
                    "unknown" => {
                        expect(&r, 404, &what);
                        assert_eq!(r.status_line(), "SIP/2.0 404 Not Found");
                    }
                    "unregistered" => {
                        expect(&r, 480, &what);
                        assert_eq!(r.status_line(), "SIP/2.0 480 Temporarily Unavailable");
                    }
                    other => unreachable!("target kind {other}"),
                }
            }
        }
        // Credentials for another user than From are refused (403), even when valid.
        let call_id = rand_token();
        let anon = request(
            &c,
            "MESSAGE",
            "carol",
            "bob",
            &call_id,
            1,
            &fresh_branch(),
            None,
        );
        let r = send_text(&mut c, &anon);
        let ruri = format!("sip:carol@{DOMAIN}");
        let auth = authorization(
            "MD5",
            "alice",
            ALICE_PW,
            "MESSAGE",
            &ruri,
            &r.nonce(),
            1,
            "c",
        );
        let msg = request(
            &c,
            "MESSAGE",
            "carol",
            "bob",
            &call_id,
            2,
            &fresh_branch(),
            Some(&auth),
        );
        expect(
            &send_text(&mut c, &msg),
            403,
            &format!("{proto:?} From bob, alice's credentials"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// OPTIONS to us, Require, REGISTER outcome metrics, SIGTERM
// ---------------------------------------------------------------------------------------------

#[test]
fn options_require_register_metrics_and_sigterm_drain() {
    let mut server = Server::start_binary(&Options::default());
    let ok = "sipward_register_outcomes_total{outcome=\"ok\"}";
    let challenged = "sipward_register_outcomes_total{outcome=\"challenged\"}";
    let auth_failed = "sipward_register_outcomes_total{outcome=\"auth_failed\"}";
    let bad_extension = "sipward_register_outcomes_total{outcome=\"bad_extension\"}";
    let m0 = [ok, challenged, auth_failed, bad_extension].map(|s| server.metric(s));
    assert_eq!(m0, [0.0; 4], "a fresh server has counted nothing");

    for proto in PROTOS {
        let mut c = server.client(proto);

        // OPTIONS aimed at the registrar itself: 200 with Allow, no authentication.
        let local = c.local;
        let opts = |require: Option<&str>| {
            let mut m = format!(
                "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={};rport\r\nMax-Forwards: 70\r\n\
                 From: <sip:probe@{DOMAIN}>;tag=p1\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\n",
                proto.via(),
                local,
                fresh_branch(),
                rand_token()
            );
            if let Some(r) = require {
                m.push_str(&format!("Require: {r}\r\n"));
            }
            m.push_str("Content-Length: 0\r\n\r\n");
            m
        };
        let r = send_text(&mut c, &opts(None));
        expect(&r, 200, &format!("{proto:?} OPTIONS"));
        let allow = r.header("Allow").expect("Allow");
        for m in ["REGISTER", "OPTIONS"] {
            assert!(allow.split(", ").any(|a| a == m), "{allow}");
        }
        // Require: foo → 420 with Unsupported: foo; a supported tag is fine.
        let r = send_text(&mut c, &opts(Some("foo")));
        expect(&r, 420, &format!("{proto:?} OPTIONS Require: foo"));
        assert_eq!(r.headers("Unsupported"), vec!["foo".to_string()]);
        let r = send_text(&mut c, &opts(Some("path")));
        expect(&r, 200, &format!("{proto:?} OPTIONS Require: path"));
        let mut reg = Register::new("alice");
        reg.extra = vec!["Require: foo, path, bar".into()];
        let r = send(&mut c, &reg);
        expect(&r, 420, &format!("{proto:?} REGISTER Require: foo"));
        assert_eq!(r.headers("Unsupported"), vec!["foo, bar".to_string()]);

        // A known REGISTER sequence: 401 (challenged), 401 (challenged) then 200 (ok),
        // 401 (challenged) then wrong password 401 (auth_failed).
        expect(&send(&mut c, &Register::new("alice")), 401, "bare");
        expect(
            &register(&mut c, &Register::new("alice"), ALICE_PW, "SHA-256"),
            200,
            "register",
        );
        expect(
            &register(&mut c, &Register::new("alice"), "wrong", "MD5"),
            401,
            "wrong password",
        );
    }
    // Scrape /metrics once and check exact moves: per transport 1 ok, 3 challenged,
    // 1 auth_failed, 1 bad_extension.
    let text = server.metrics();
    assert_eq!(metric_value(&text, ok), 2.0, "{text}");
    assert_eq!(metric_value(&text, challenged), 6.0, "{text}");
    assert_eq!(metric_value(&text, auth_failed), 2.0, "{text}");
    assert_eq!(metric_value(&text, bad_extension), 2.0, "{text}");

    // SIGTERM: drain and exit 0.
    assert_eq!(server.terminate(), Some(0), "stderr:\n{}", server.stderr());
}

// ---------------------------------------------------------------------------------------------
// check-config
// ---------------------------------------------------------------------------------------------

fn check_config(path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipward"))
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn check_config_names_each_bad_key_and_accepts_dev_toml() {
    let dir = tempfile::tempdir().unwrap();
    const DOMAIN_TABLE: &str = "[[domains]]\nname = \"example.test\"\n";

    // An unknown key: exit 2, the key named with its line.
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown,
        format!("[registrar]\nmin_expires = 60\nmax_expirse = 600\n\n{DOMAIN_TABLE}"),
    )
    .unwrap();
    let (code, text) = check_config(&unknown);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("registrar.max_expirse"), "{text}");
    assert!(text.contains("unknown field `max_expirse`"), "{text}");
    assert!(text.contains("line 3"), "{text}");

    // Several bad values: exit 2, each key named.
    let values = dir.path().join("values.toml");
    std::fs::write(
        &values,
        format!(
            "[registrar]\nmin_expires = 120\nmax_expires = 60\nmax_bindings_per_aor = 0\n\n\
             [auth]\nnonce_lifetime_secs = 5\n\n{DOMAIN_TABLE}"
        ),
    )
    .unwrap();
    let (code, text) = check_config(&values);
    assert_eq!(code, Some(2), "{text}");
    for key in [
        "registrar.min_expires",
        "registrar.max_bindings_per_aor",
        "auth.nonce_lifetime_secs",
    ] {
        assert!(text.contains(key), "{key} not named:\n{text}");
    }
    assert!(text.contains("120 > 60"), "{text}");

    // The development profile is valid.
    let dev = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dev.toml");
    let (code, text) = check_config(&dev);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(": ok"), "{text}");
}

/// One run names every bad key: unknown keys and tables, and value problems.
#[test]
fn check_config_reports_an_unknown_key_and_a_bad_value_together() {
    let dir = tempfile::tempdir().unwrap();
    let both = dir.path().join("both.toml");
    std::fs::write(
        &both,
        "[registrar]\nmin_expires = 120\nmax_expires = 60\nfoo = 1\n\n[[domains]]\nname = \"example.test\"\n",
    )
    .unwrap();
    let (code, text) = check_config(&both);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("registrar.foo"), "{text}");
    assert!(text.contains("registrar.min_expires"), "{text}");
    std::fs::write(&both, "[sipp]\nx = 1\n\n[sip]\nudpp = 1\ntcp = [\"nonsense\"]\n\n[[domains]]\nname = \"example.test\"\n").unwrap();
    let (code, text) = check_config(&both);
    assert_eq!(code, Some(2), "{text}");
    for key in ["sipp", "sip.udpp", "sip.tcp[0]"] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
}
