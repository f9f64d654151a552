//! The token API end to end: the in-process server (the binary for the SIPp case), the real OpenID provider in
//! `tests/idp` (npm oidc-provider), SIPp and a Rust SIP client. A token minted by the IdP is
//! exchanged for a per-device credential that registers with MD5 (SIPp) and SHA-256; devices
//! are listed, revoked (bindings gone at once), capped, rate limited, and survive a restart;
//! `sso = "enforce"` refuses static human accounts; login options answer per domain.
//!
//! Without Node or `tests/idp/node_modules` the tests are skipped loudly, or fail when
//! `CI=true`.

mod common;
mod token;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use token::*;

#[test]
fn end_to_end_sipp_md5_rust_sha256_and_device_listing() {
    if !idp_available() || !require_tool("sipp", "sip-tester") {
        return;
    }
    let idp = Idp::start();
    let s = TokenServer::start_binary(&idp, &Setup::default());
    let token = idp.token_for("alice");
    let started = Instant::now();
    let cred = s.credential(&token, "laptop-7f3a");
    let exchange_took = started.elapsed();
    let body = &cred.body;
    assert_eq!(body["type"], "digest");
    assert_eq!(body["device_id"], "laptop-7f3a");
    assert_eq!(cred.aor, "sip:alice@example.test");
    assert_eq!(body["sip"]["realm"], DOMAIN);
    assert_eq!(
        body["sip"]["algorithms"],
        serde_json::json!(["MD5", "SHA-256"])
    );
    assert!(cred.username.starts_with("d-") && cred.username.len() >= 16);
    assert_eq!(cred.password.len(), 22);
    assert_eq!(body["expires_in"], 43_200);
    assert_eq!(body["refresh_after"], 32_400);
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));

    // SIPp registers with the MD5 credential (AoR user alice, Digest username d-…).
    let work = tempfile::tempdir().unwrap();
    let injection = work.path().join("users.csv");
    std::fs::write(
        &injection,
        format!(
            "SEQUENTIAL\nalice;[authentication username={} password={}];60\n",
            cred.username, cred.password
        ),
    )
    .unwrap();
    let stats = work.path().join("stats.csv");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/reg-digest.xml");
    let sipp_started = Instant::now();
    let out = Command::new("sipp")
        .current_dir(work.path())
        .arg("-sf")
        .arg(&scenario)
        .arg("-inf")
        .arg(&injection)
        .args(["-t", "u1", "-m", "1", "-r", "1"])
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args(["-auth_uri", DOMAIN])
        .args(["-nostdin", "-timeout", "20s", "-timeout_error"])
        .args(["-recv_timeout", "5s", "-trace_stat", "-fd", "1"])
        .arg("-stf")
        .arg(&stats)
        .arg(s.server.udp.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run sipp");
    let text = std::fs::read_to_string(&stats).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or("").to_string();
    let last = lines.next_back().unwrap_or("").to_string();
    let col = |name: &str| -> u64 {
        header
            .split(';')
            .position(|c| c == name)
            .and_then(|i| last.split(';').nth(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    let (ok, failed) = (col("SuccessfulCall(C)"), col("FailedCall(C)"));
    eprintln!(
        "exchange {exchange_took:.1?}; sipp MD5 registration: exit {:?}, {ok} successful, {failed} failed, {:.1?}",
        out.status.code(),
        sipp_started.elapsed()
    );
    assert_eq!(
        (out.status.code(), ok, failed),
        (Some(0), 1, 0),
        "sipp stderr:\n{}\nsipward:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.server.stderr()
    );
    assert_eq!(s.bindings_of("alice").len(), 1);

    // The Rust client registers the same credential with SHA-256, over TCP.
    let mut c = Client::new(Proto::Tcp, s.server.tcp);
    let r = register_device(&mut c, "alice", &cred, "SHA-256", Some("600"));
    assert_eq!(r.status(), 200, "{}", r.text);
    assert_eq!(s.bindings_of("alice").len(), 2);
    assert_eq!(
        s.metric("sipward_register_outcomes_total{outcome=\"ok\"}"),
        2.0
    );

    // The device is listed, with its last REGISTER once the store has it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let device = loop {
        let r = s.http("GET", "/v1/sip/devices", Some(&token), "");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let list = r.json()["devices"].as_array().unwrap().clone();
        assert_eq!(list.len(), 1, "{list:?}");
        if !list[0]["last_register"].is_null() || Instant::now() > deadline {
            break list[0].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(device["device_id"], "laptop-7f3a");
    assert_eq!(device["name"], "laptop-7f3a test");
    assert_eq!(device["username"], cred.username.as_str());
    assert!(device["last_register"].is_string(), "{device}");
    assert_eq!(
        s.metric("sipward_token_exchanges_total{outcome=\"issued\"}"),
        1.0
    );
    assert_eq!(s.metric("sipward_devices_issued_total"), 1.0);
    assert_eq!(s.metric("sipward_devices_active"), 1.0);
}

#[test]
fn wrong_password_aor_and_unknown_device_all_get_the_same_401() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let cred = s.credential(&idp.token_for("alice"), "phone");
    let mut c = Client::new(Proto::Udp, s.server.udp);
    let wrong_pw = Credential {
        password: "x".repeat(22),
        ..cred.clone()
    };
    let unknown = Credential {
        username: "d-aaaaaaaaaaaaaaaa".into(),
        ..cred.clone()
    };
    for (label, user, cred) in [
        ("wrong password", "alice", &wrong_pw),
        ("unknown device", "alice", &unknown),
        ("another AoR", "bob", &cred),
    ] {
        let r = register_device(&mut c, user, cred, "MD5", None);
        assert_eq!(r.status(), 401, "{label}: {}", r.text);
        assert!(r.header("WWW-Authenticate").is_some(), "{label}");
    }
    let r = register_device(&mut c, "alice", &cred, "MD5", None);
    assert_eq!(r.status(), 200, "{}", r.text);
}

#[test]
fn register_expiry_is_capped_by_the_credential_lifetime() {
    let Some((idp, s)) = idp_and_server(&Setup {
        token_api: "credential_ttl_secs = 120",
        registrar: "max_expires = 7200\ndefault_expires = 3600",
        ..Setup::default()
    }) else {
        return;
    };
    let cred = s.credential(&idp.token_for("alice"), "phone");
    assert_eq!(cred.expires_in, 120);
    let mut c = Client::new(Proto::Udp, s.server.udp);
    let r = register_device(&mut c, "alice", &cred, "SHA-256", Some("3600"));
    assert_eq!(r.status(), 200, "{}", r.text);
    let contact = r.header("Contact").unwrap();
    let granted: u64 = param(&contact, "expires").unwrap().parse().unwrap();
    assert!(
        (110..=120).contains(&granted),
        "granted {granted} s for a credential with 120 s left: {contact}"
    );
}

#[test]
fn renewal_keeps_the_previous_generation_until_the_new_one_registers() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let token = idp.token_for("alice");
    let first = s.credential(&token, "phone");
    let r = s.exchange(&token, "phone");
    assert_eq!(r.status, 200, "a renewal answers 200: {}", r.body);
    let v = r.json();
    let second = Credential {
        username: v["sip"]["username"].as_str().unwrap().into(),
        password: v["sip"]["password"].as_str().unwrap().into(),
        aor: first.aor.clone(),
        expires_in: 0,
        body: v.clone(),
    };
    assert_eq!(
        second.username, first.username,
        "one device keeps its username"
    );
    assert_ne!(second.password, first.password);
    assert_eq!(
        s.metric("sipward_token_exchanges_total{outcome=\"renewed\"}"),
        1.0
    );
    let mut c = Client::new(Proto::Udp, s.server.udp);
    assert_eq!(
        register_device(&mut c, "alice", &first, "MD5", None).status(),
        200
    );
    assert_eq!(
        register_device(&mut c, "alice", &second, "MD5", None).status(),
        200
    );
    let r = register_device(&mut c, "alice", &first, "MD5", None);
    assert_eq!(
        r.status(),
        401,
        "the old generation ends at the first REGISTER with the new"
    );
}

#[test]
fn deleting_a_device_removes_its_binding_at_once_and_its_credential_fails() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let token = idp.token_for("alice");
    let laptop = s.credential(&token, "laptop");
    let phone = s.credential(&token, "phone");
    let mut c1 = Client::new(Proto::Udp, s.server.udp);
    let mut c2 = Client::new(Proto::Udp, s.server.udp);
    let mut reg_laptop = Register::new("alice");
    reg_laptop.contact = Some("<sip:alice@127.0.0.1:5001>".into());
    let mut reg_phone = Register::new("alice");
    reg_phone.contact = Some("<sip:alice@127.0.0.1:5002>".into());
    assert_eq!(
        register_with(&mut c1, &reg_laptop, &laptop, "SHA-256", None).status(),
        200
    );
    assert_eq!(
        register_with(&mut c2, &reg_phone, &phone, "MD5", None).status(),
        200
    );
    assert_eq!(s.bindings_of("alice").len(), 2);
    assert_eq!(s.metric("sipward_bindings"), 2.0);
    assert_eq!(s.metric("sipward_devices_active"), 2.0);

    let r = s.http("DELETE", "/v1/sip/devices/laptop", Some(&token), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["bindings_removed"], 1);
    // Gone at once: no waiting for expiry or a purge tick.
    let left = s.bindings_of("alice");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0]["contact"].as_str().unwrap().ends_with(":5002"));
    assert_eq!(s.metric("sipward_bindings"), 1.0);
    assert_eq!(s.metric("sipward_devices_active"), 1.0);
    assert_eq!(s.metric("sipward_devices_revoked_total{by=\"user\"}"), 1.0);
    let r = register_with(&mut c1, &reg_laptop, &laptop, "SHA-256", None);
    assert_eq!(r.status(), 401, "a revoked credential: {}", r.text);
    let r = s.http("DELETE", "/v1/sip/devices/laptop", Some(&token), "");
    assert_eq!(r.status, 404);
    // Another user cannot delete alice's device.
    let r = s.http(
        "DELETE",
        "/v1/sip/devices/phone",
        Some(&idp.token_for("bob")),
        "",
    );
    assert_eq!(r.status, 404);
    reg_phone.cseq += 2; // the same Call-ID must go on with a higher CSeq
    assert_eq!(
        register_with(&mut c2, &reg_phone, &phone, "MD5", None).status(),
        200
    );
}

#[test]
fn admin_revoke_of_a_user_revokes_every_device_and_blocks_old_tokens() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let token = idp.token_for("alice");
    let creds = [
        s.credential(&token, "laptop"),
        s.credential(&token, "phone"),
    ];
    let bob = s.credential(&idp.token_for("bob"), "desk");
    let mut clients = Vec::new();
    for (n, cred) in creds.iter().enumerate() {
        let mut c = Client::new(Proto::Udp, s.server.udp);
        let mut reg = Register::new("alice");
        reg.contact = Some(format!("<sip:alice@127.0.0.1:{}>", 5100 + n));
        assert_eq!(register_with(&mut c, &reg, cred, "MD5", None).status(), 200);
        clients.push((c, reg));
    }
    let mut cb = Client::new(Proto::Udp, s.server.udp);
    assert_eq!(
        register_device(&mut cb, "bob", &bob, "MD5", None).status(),
        200
    );
    assert_eq!(s.metric("sipward_bindings"), 3.0);

    // Neither no token nor a user's token may revoke.
    let r = s.http(
        "POST",
        "/admin/v1/users/alice@example.test/revoke",
        None,
        "",
    );
    assert_eq!(r.status, 401);
    let r = s.http(
        "POST",
        "/admin/v1/users/alice@example.test/revoke",
        Some(&idp.token_for("mallory")),
        "",
    );
    assert_eq!(r.status, 403, "{}", r.body);

    let r = s.http(
        "POST",
        "/admin/v1/users/alice@example.test/revoke",
        Some(ADMIN_TOKEN),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["devices_revoked"], 2);
    assert!(s.bindings_of("alice").is_empty());
    assert_eq!(s.bindings_of("bob").len(), 1);
    assert_eq!(s.metric("sipward_bindings"), 1.0);
    assert_eq!(s.metric("sipward_devices_revoked_total{by=\"admin\"}"), 2.0);
    for ((c, reg), cred) in clients.iter_mut().zip(&creds) {
        assert_eq!(register_with(c, reg, cred, "MD5", None).status(), 401);
    }
    // A token issued before the revoke gets no new credential.
    let r = s.exchange(&token, "laptop");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body, r#"{"error":"access_denied"}"#);
    assert_eq!(
        register_device(&mut cb, "bob", &bob, "MD5", None).status(),
        200
    );

    // An SSO admin (role from the IdP's groups claim) may revoke too.
    let admin = idp.mint(
        "root",
        &Mint {
            groups: Some("sipward-admins"),
            ..Mint::default()
        },
    );
    let r = s.http(
        "POST",
        "/admin/v1/users/bob@example.test/revoke",
        Some(&admin),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        register_device(&mut cb, "bob", &bob, "MD5", None).status(),
        401
    );
}

#[test]
fn credentials_survive_a_restart_and_the_database_holds_no_password_or_ha1() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let durable = tempfile::tempdir().unwrap();
    let setup = Setup {
        durable: Some(durable.path()),
        ..Setup::default()
    };
    let mut s = TokenServer::start(&idp, &setup);
    let token = idp.token_for("alice");
    let cred = s.credential(&token, "laptop");
    let mut c = Client::new(Proto::Udp, s.server.udp);
    assert_eq!(
        register_device(&mut c, "alice", &cred, "MD5", None).status(),
        200
    );
    assert_eq!(s.server.terminate(), Some(0), "{}", s.server.stderr());
    let ports = s.ports();
    drop(s);

    let s = TokenServer::start_on(&idp, &setup, ports);
    assert_eq!(s.metric("sipward_devices_active"), 1.0);
    let mut c = Client::new(Proto::Udp, s.server.udp);
    for alg in ["MD5", "SHA-256"] {
        let r = register_device(&mut c, "alice", &cred, alg, None);
        assert_eq!(r.status(), 200, "{alg} after restart: {}", r.text);
    }
    let r = s.http("GET", "/v1/sip/devices", Some(&token), "");
    assert_eq!(r.json()["devices"].as_array().unwrap().len(), 1);

    // Scan every file of the store (database, WAL, shared memory) for the password and the
    // HA1s, as text and as raw bytes.
    let realm = DOMAIN;
    let secret_forms = [
        cred.password.clone(),
        h(
            "MD5",
            &format!("{}:{realm}:{}", cred.username, cred.password),
        ),
        h(
            "SHA-256",
            &format!("{}:{realm}:{}", cred.username, cred.password),
        ),
    ];
    let mut scanned = 0;
    for entry in std::fs::read_dir(durable.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("devices.db")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for form in &secret_forms {
            assert!(
                !contains(&bytes, form.as_bytes()),
                "{} holds a password or HA1",
                path.display()
            );
            if let Ok(raw) = hex::decode(form) {
                assert!(
                    !contains(&bytes, &raw),
                    "{} holds a raw HA1",
                    path.display()
                );
            }
        }
        assert!(
            !contains(&bytes, token.as_bytes()),
            "{} holds the token",
            path.display()
        );
    }
    assert!(scanned > 0);
    // The username is there (the record), so the scan did read the records.
    let db = std::fs::read(durable.path().join("devices.db")).unwrap();
    let wal = std::fs::read(durable.path().join("devices.db-wal")).unwrap_or_default();
    assert!(contains(&db, cred.username.as_bytes()) || contains(&wal, cred.username.as_bytes()));
    eprintln!("scanned {scanned} bytes of the device store: no password, HA1 or token");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn device_cap_gives_409_but_renewal_still_works() {
    let Some((idp, s)) = idp_and_server(&Setup {
        token_api: "max_devices_per_user = 2",
        ..Setup::default()
    }) else {
        return;
    };
    let token = idp.token_for("alice");
    s.credential(&token, "one");
    s.credential(&token, "two");
    let r = s.exchange(&token, "three");
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body, r#"{"error":"device_limit_reached"}"#);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(s.exchange(&token, "two").status, 200);
    // Another user has their own cap.
    assert_eq!(s.exchange(&idp.token_for("bob"), "three").status, 201);
    // Deleting a device frees a slot.
    assert_eq!(
        s.http("DELETE", "/v1/sip/devices/one", Some(&token), "")
            .status,
        200
    );
    assert_eq!(s.exchange(&token, "three").status, 201);
    assert_eq!(
        s.metric("sipward_token_exchanges_total{outcome=\"device_limit\"}"),
        1.0
    );
}

#[test]
fn rate_limits_per_source_user_and_device_give_429_with_retry_after() {
    let Some((idp, s)) = idp_and_server(&Setup {
        token_api: "failures_per_source_per_minute = 3\nrate_per_user_per_minute = 3\nrate_per_device_per_minute = 2",
        ..Setup::default()
    }) else {
        return;
    };
    let alice = idp.token_for("alice");
    // Per device: the third exchange for one device within a minute.
    assert_eq!(s.exchange(&alice, "phone").status, 201);
    assert_eq!(s.exchange(&alice, "phone").status, 200);
    let r = s.exchange(&alice, "phone");
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // Per user: the fourth request of alice (any route) is over her limit of three.
    let r = s.http("GET", "/v1/sip/devices", Some(&alice), "");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // Bob is not affected by alice's limit, nor by the five valid requests from 127.0.0.1.
    let bob = idp.token_for("bob");
    assert_eq!(s.exchange(&bob, "desk").status, 201);
    // Per source, failures only: three bad tokens from 127.0.0.1 are answered 401, the next
    // request is refused before its token is even looked at, even a valid one.
    for _ in 0..3 {
        let r = s.http("GET", "/v1/sip/devices", Some("not-a-token"), "");
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = s.http("GET", "/v1/sip/devices", Some("not-a-token"), "");
    assert_eq!(r.status, 429, "{}", r.body);
    let carol = idp.token_for("carol");
    assert_eq!(s.exchange(&carol, "desk").status, 429);
    assert!(s.metric("sipward_token_exchanges_total{outcome=\"rate_limited\"}") >= 1.0);
}

/// Issue 13, the 9 am login storm behind one NAT address: 2000 users with valid tokens sign in
/// from 127.0.0.1 with the default limits (faster than 2000 in 5 minutes, which is 400/min
/// against the default 60 failures per source per minute): every one gets a credential. A
/// source sending invalid tokens, 127.0.0.2, is throttled after the default 60 failures,
/// and that does not touch the NAT address.
#[test]
fn login_storm_from_one_address_is_served_while_a_token_guesser_is_throttled() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let tokens: Vec<String> = (0..2000)
        .map(|n| idp.token_for(&format!("user{n:04}")))
        .collect();
    for (n, token) in tokens.iter().enumerate() {
        let r = s.exchange(token, &format!("softphone-{n}"));
        assert_eq!(r.status, 201, "user {n}: {}", r.body);
        assert!(
            r.json()["sip"]["password"].is_string(),
            "user {n}: {}",
            r.body
        );
    }
    assert_eq!(
        s.metric("sipward_token_exchanges_total{outcome=\"issued\"}"),
        2000.0
    );
    let guesser: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let bad = [
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer not-a-token"),
    ];
    let body = r#"{"device_id":"x"}"#;
    let mut statuses = Vec::new();
    for _ in 0..61 {
        let r = http_from(
            guesser,
            s.server.http,
            "POST",
            "/v1/sip/credentials",
            &bad,
            body,
        );
        statuses.push(r.status);
    }
    assert!(statuses[..60].iter().all(|&st| st == 401), "{statuses:?}");
    assert_eq!(statuses[60], 429, "{statuses:?}");
    // The NAT address still signs users in.
    let late = idp.token_for("late-user");
    assert_eq!(s.exchange(&late, "softphone-late").status, 201);
}

#[test]
fn sso_enforce_refuses_static_human_accounts_but_not_trunks_break_glass_or_devices() {
    let Some((idp, s)) = idp_and_server(&Setup {
        sso: "enforce",
        accounts: &[
            ("carol", "carol-static-pw", "human"),
            ("trunk1", "trunk-pw", "trunk"),
            ("desk1", "desk-pw", "device"),
            ("rescue", "rescue-pw", "break-glass"),
        ],
        ..Setup::default()
    }) else {
        return;
    };
    let mut c = Client::new(Proto::Udp, s.server.udp);
    let r = register(&mut c, &Register::new("carol"), "carol-static-pw", "MD5");
    assert_eq!(r.status(), 403, "{}", r.text);
    assert!(
        r.status_line().contains("SSO Required"),
        "{}",
        r.status_line()
    );
    // A wrong password is still a plain 401: the 403 is said only after a correct one.
    let r = register(&mut c, &Register::new("carol"), "wrong", "MD5");
    assert_eq!(r.status(), 401);
    for (user, pw) in [
        ("trunk1", "trunk-pw"),
        ("desk1", "desk-pw"),
        ("rescue", "rescue-pw"),
    ] {
        let r = register(&mut c, &Register::new(user), pw, "SHA-256");
        assert_eq!(r.status(), 200, "{user}: {}", r.text);
    }
    let cred = s.credential(&idp.token_for("carol"), "laptop");
    let r = register_device(&mut c, "carol", &cred, "SHA-256", None);
    assert_eq!(r.status(), 200, "carol through SSO: {}", r.text);
    let r = s.http("GET", "/v1/login-options?domain=example.test", None, "");
    assert_eq!(r.json()["sso_enforced"], true);
    assert_eq!(r.json()["password_sign_in"], false);
}

#[test]
fn login_options_for_a_known_and_an_unknown_domain() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let r = s.http("GET", "/v1/login-options?domain=EXAMPLE.test", None, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["domain"], "example.test");
    assert_eq!(v["sso"], "enable");
    assert_eq!(v["sso_enforced"], false);
    let m = &v["methods"][0];
    assert_eq!(m["type"], "oidc");
    assert_eq!(m["issuer"], idp.issuer.as_str());
    assert_eq!(m["client_id"], "softphone");
    assert_eq!(m["scopes"], serde_json::json!(["openid", "sip"]));
    assert_eq!(m["label"], "Test IdP");
    let r = s.http("GET", "/v1/login-options?domain=unknown.test", None, "");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, r#"{"error":"not_found"}"#);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(s.http("GET", "/v1/login-options", None, "").status, 400);
}

#[test]
fn request_limits_body_head_and_bad_requests() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let token = idp.token_for("alice");
    let big = format!(
        "{{\"device_id\":\"x\",\"device_name\":\"{}\"}}",
        "a".repeat(5000)
    );
    let r = s.http("POST", "/v1/sip/credentials", Some(&token), &big);
    assert_eq!(r.status, 413, "{}", r.body);
    for body in [
        "",
        "not json",
        r#"{"device_id":""}"#,
        r#"{"device_id":"a b"}"#,
        r#"{"device_id":"x","extra":1}"#,
    ] {
        let r = s.http("POST", "/v1/sip/credentials", Some(&token), body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.body, r#"{"error":"invalid_request"}"#);
    }
    let r = s.http("POST", "/v1/sip/credentials", None, r#"{"device_id":"x"}"#);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"sipward\"")
    );
    let huge = "a".repeat(40_000);
    let r = http(
        s.server.http,
        "GET",
        "/v1/sip/devices",
        &[("X-Filler", huge.as_str())],
        "",
    );
    assert_eq!(r.status, 431, "a head over token_api.max_header_bytes");
    let r = s.http("GET", "/nowhere", None, "");
    assert_eq!(
        (r.status, r.header("cache-control")),
        (404, Some("no-store"))
    );
    let r = s.http("GET", "/readyz", None, "");
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A MESSAGE from `from` to `to` over `c`, with optional Proxy-Authorization.
fn message(
    c: &Client,
    from: &str,
    to: &str,
    call_id: &str,
    cseq: u32,
    auth: Option<&str>,
) -> String {
    let mut m = format!(
        "MESSAGE sip:{to}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{from}@{DOMAIN}>;tag={}\r\nTo: <sip:{to}@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} MESSAGE\r\n",
        c.local,
        rand_token(),
        rand_token()
    );
    if let Some(a) = auth {
        m.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m
}

/// Sends a MESSAGE as `from` (Digest user `user`, password `pw`) to `to`; returns the Call-ID.
fn send_message(c: &mut Client, from: &str, user: &str, pw: &str, to: &str) -> String {
    let call_id = rand_token();
    let r = c
        .request(&message(c, from, to, &call_id, 1, None))
        .expect("407");
    assert_eq!(r.status(), 407, "{}", r.text);
    let auth = authorization(
        "MD5",
        user,
        pw,
        "MESSAGE",
        &format!("sip:{to}@{DOMAIN}"),
        &r.nonce(),
        1,
        &rand_token(),
    );
    c.send_raw(message(c, from, to, &call_id, 2, Some(&auth)).as_bytes());
    call_id
}

fn received(c: &mut Client, call_id: &str) -> Option<Resp> {
    std::iter::from_fn(|| c.recv(Duration::from_secs(2)))
        .find(|m| m.header("Call-ID").as_deref() == Some(call_id) && m.text.starts_with("MESSAGE"))
}

#[test]
fn the_proxy_reaches_a_device_user_and_a_device_credential_calls_out() {
    let Some((idp, s)) = idp_and_server(&Setup {
        accounts: &[("bob", "bob-static-pw", "device")],
        ..Setup::default()
    }) else {
        return;
    };
    let cred = s.credential(&idp.token_for("alice"), "laptop");
    let mut alice = Client::new(Proto::Udp, s.server.udp);
    assert_eq!(
        register_device(&mut alice, "alice", &cred, "MD5", None).status(),
        200
    );
    let mut bob = Client::new(Proto::Udp, s.server.udp);
    assert_eq!(
        register(&mut bob, &Register::new("bob"), "bob-static-pw", "MD5").status(),
        200
    );

    // bob → alice: alice exists only as a token API device, and is reached at her binding.
    let call_id = send_message(&mut bob, "bob", "bob", "bob-static-pw", "alice");
    let fwd = received(&mut alice, &call_id).expect("the MESSAGE reaches alice's device");
    assert!(
        fwd.text.starts_with("MESSAGE sip:alice@127.0.0.1:5999"),
        "{}",
        fwd.text
    );

    // alice (device credential) → bob.
    let call_id = send_message(&mut alice, "alice", &cred.username, &cred.password, "bob");
    let fwd = received(&mut bob, &call_id).expect("the MESSAGE from alice's device reaches bob");
    assert!(
        fwd.text.contains("From: <sip:alice@example.test>"),
        "{}",
        fwd.text
    );
}

/// Issue 12 item 2: the admin revoke canonicalises the AoR exactly as the exchange does, and a
/// user or domain that cannot be ours is refused instead of a silent 200.
#[test]
fn admin_revoke_canonicalises_the_aor_like_the_exchange_and_refuses_what_is_not_ours() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let token = idp.token_for("Lc8");
    let cred = s.credential(&token, "phone");
    assert_eq!(cred.aor, "sip:lc8@example.test");
    let mut c = Client::new(Proto::Udp, s.server.udp);
    assert_eq!(
        register_device(&mut c, "lc8", &cred, "MD5", None).status(),
        200
    );

    let revoke = |user: &str| {
        s.http(
            "POST",
            &format!("/admin/v1/users/{user}/revoke"),
            Some(ADMIN_TOKEN),
            "",
        )
    };
    for (user, status, error) in [
        ("Lc8", 400, "invalid_request"),
        ("sip:Lc8", 400, "invalid_request"),
        ("d-abcdefghijklmnop@example.test", 400, "invalid_request"),
        ("a%3Ab@example.test", 400, "invalid_request"),
        ("Lc8@other.test", 404, "not_found"),
        ("sip:lc8@example.test.evil", 404, "not_found"),
    ] {
        let r = revoke(user);
        assert_eq!(r.status, status, "{user}: {}", r.body);
        assert_eq!(r.json()["error"], error, "{user}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{user}");
    }
    assert_eq!(s.bindings_of("lc8").len(), 1, "nothing was revoked");

    // The spelling the operator sees in the IdP revokes the user the exchange made.
    let r = revoke("sip:Lc8@EXAMPLE.test");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["aor"], "sip:lc8@example.test");
    assert_eq!(r.json()["devices_revoked"], 1);
    assert!(s.bindings_of("lc8").is_empty());
    assert_eq!(
        register_device(&mut c, "lc8", &cred, "MD5", None).status(),
        401,
        "the revoked credential"
    );
    let r = s.exchange(&token, "phone");
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, r#"{"error":"access_denied"}"#),
        "a token issued before the revoke"
    );
    // A user of ours without any device yet is still revoked (its old tokens refused).
    let r = revoke("nobody@example.test");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["devices_revoked"], 0);
}

/// Issue 12 item 3: a token minted before the revoke by an IdP whose clock runs 50 s fast
/// (accepted under the 60 s leeway) must not get a credential after the revoke.
#[test]
fn the_revoke_cutoff_covers_tokens_stamped_ahead_within_the_leeway() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let header = idp.header("ES256");
    let mut claims = idp.claims("alice");
    claims["iat"] = serde_json::json!(now() + 50);
    let fast_clock = idp.sign(&header, &claims);
    assert_eq!(
        s.exchange(&fast_clock, "phone").status,
        201,
        "accepted under the leeway"
    );

    let r = s.http(
        "POST",
        "/admin/v1/users/alice@example.test/revoke",
        Some(ADMIN_TOKEN),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let revoked_by = now();
    let r = s.exchange(&fast_clock, "phone");
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, r#"{"error":"access_denied"}"#),
        "minted before the revoke, stamped 50 s ahead"
    );
    // A token stamped after the revoke time plus the leeway is the IdP's new word: accepted.
    while now() <= revoked_by {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut claims = idp.claims("alice");
    claims["iat"] = serde_json::json!(now() + 60);
    let after = idp.sign(&header, &claims);
    let r = s.exchange(&after, "phone");
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Issue 12 item 4: after a user revoke, the revoked user's old tokens get the exchange's 403
/// on every Bearer route, not an empty device list.
#[test]
fn a_revoked_users_old_token_gets_403_on_the_device_routes_too() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let token = idp.token_for("alice");
    s.credential(&token, "phone");
    let r = s.http(
        "POST",
        "/admin/v1/users/alice@example.test/revoke",
        Some(ADMIN_TOKEN),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for (method, path) in [
        ("GET", "/v1/sip/devices"),
        ("DELETE", "/v1/sip/devices/phone"),
    ] {
        let r = s.http(method, path, Some(&token), "");
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, r#"{"error":"access_denied"}"#),
            "{method} {path}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    // Bob's tokens are not affected.
    let r = s.http("GET", "/v1/sip/devices", Some(&idp.token_for("bob")), "");
    assert_eq!(r.status, 200, "{}", r.body);
}
