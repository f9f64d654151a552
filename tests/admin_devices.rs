//! The admin view of token API devices through `sipward ctl` (the real binary) against the
//! in-process server and the real OpenID provider in `tests/idp`: every active device listed
//! with the bindings it made (and the bindings listing naming the device that made each
//! one), a user's devices, pages, one device revoked (its credential refused at once, the
//! user's other device untouched), then the whole user revoked (no device listed).
//!
//! Without Node or `tests/idp/node_modules` the test is skipped loudly, or fails when
//! `CI=true` (as tests/token_api.rs).

mod common;
mod token;

use std::process::Command;

use common::*;
use serde_json::Value;
use token::*;

fn ctl(s: &TokenServer, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sipward"))
        .args([
            "ctl",
            "--json",
            "--url",
            &format!("http://{}", s.server.http),
        ])
        .args(args)
        .env("SIPWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run sipward ctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {stdout}"))
}

fn usernames(list: &Value) -> Vec<String> {
    list["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["username"].as_str().expect("username").to_owned())
        .collect()
}

#[test]
fn ctl_lists_devices_with_their_bindings_and_revokes_one_then_the_user() {
    let Some((idp, s)) = idp_and_server(&Setup::default()) else {
        return;
    };
    let alice = idp.token_for("alice");
    let laptop = s.credential(&alice, "laptop");
    let phone = s.credential(&alice, "phone");
    let desk = s.credential(&idp.token_for("bob"), "desk");
    let mut clients = Vec::new();
    for (n, cred) in [&laptop, &phone].into_iter().enumerate() {
        let mut c = Client::new(Proto::Udp, s.server.udp);
        let mut reg = Register::new("alice");
        reg.contact = Some(format!("<sip:alice@127.0.0.1:{}>", 5100 + n));
        assert_eq!(register_with(&mut c, &reg, cred, "MD5", None).status(), 200);
        clients.push((c, reg));
    }
    let mut cb = Client::new(Proto::Udp, s.server.udp);
    assert_eq!(
        register_device(&mut cb, "bob", &desk, "MD5", None).status(),
        200
    );

    // Three exchanges, each timed.
    assert_eq!(
        s.metric("sipward_token_exchange_duration_seconds_count"),
        3.0
    );

    // Every active device, in username order, each with the one binding it made.
    let all = ctl(&s, &["devices"]);
    let mut expected = vec![
        laptop.username.clone(),
        phone.username.clone(),
        desk.username.clone(),
    ];
    expected.sort();
    assert_eq!(usernames(&all), expected);
    assert_eq!(all["next_cursor"], Value::Null);
    for d in all["devices"].as_array().unwrap() {
        assert_eq!(d["bindings"], 1, "{d}");
        assert_eq!(d["issuer"], idp.issuer.as_str(), "{d}");
    }
    let laptop_view = all["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["username"] == laptop.username.as_str())
        .expect("the laptop");
    assert_eq!(laptop_view["device_id"], "laptop");
    assert_eq!(laptop_view["aor"], "sip:alice@example.test");

    // The bindings listing names the device that made each binding.
    let bindings = ctl(&s, &["bindings", "--aor", "alice@example.test"]);
    let mut credentials: Vec<&str> = bindings["aors"][0]["bindings"]
        .as_array()
        .expect("bindings")
        .iter()
        .map(|b| b["credential"].as_str().expect("credential"))
        .collect();
    credentials.sort();
    let mut alices = vec![laptop.username.as_str(), phone.username.as_str()];
    alices.sort();
    assert_eq!(credentials, alices);

    // One user's devices; pages of one.
    let mine = ctl(&s, &["devices", "--user", "alice@example.test"]);
    assert_eq!(usernames(&mine), alices);
    let first = ctl(&s, &["devices", "--limit", "1"]);
    assert_eq!(usernames(&first), [expected[0].as_str()]);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = ctl(&s, &["devices", "--limit", "1", "--cursor", cursor]);
    assert_eq!(usernames(&second), [expected[1].as_str()]);

    // Revoke the laptop: its credential is refused at once, its binding gone; the phone and
    // bob carry on.
    let revoked = ctl(&s, &["devices", "revoke", &laptop.username]);
    assert_eq!(revoked["device_id"], "laptop");
    assert_eq!(revoked["bindings_removed"], 1);
    assert_eq!(s.metric("sipward_devices_revoked_total{by=\"admin\"}"), 1.0);
    let (c, reg) = &mut clients[0];
    assert_eq!(register_with(c, reg, &laptop, "MD5", None).status(), 401);
    let (c, reg) = &mut clients[1];
    reg.cseq += 10;
    assert_eq!(register_with(c, reg, &phone, "MD5", None).status(), 200);
    assert_eq!(s.bindings_of("alice").len(), 1);
    let mine = ctl(&s, &["devices", "--user", "alice@example.test"]);
    assert_eq!(usernames(&mine), [phone.username.as_str()]);

    // The whole user: no device left to list; bob untouched.
    let gone = ctl(&s, &["users", "revoke", "alice@example.test"]);
    assert_eq!(gone["devices_revoked"], 1);
    let mine = ctl(&s, &["devices", "--user", "alice@example.test"]);
    assert!(usernames(&mine).is_empty());
    assert_eq!(usernames(&ctl(&s, &["devices"])), [desk.username.as_str()]);
}
