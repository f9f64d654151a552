//! `sipward ctl` (the real binary) against a real server (the binary too) over its HTTP
//! listener: bindings listed a page at a time in AoR order with the credential that made each
//! one and the next-page cursor, filtered by AoR and by credential, one binding and one AoR
//! removed, status, a TLS reload, the token from a file and the environment, and the exit
//! status of a refusal. The device commands run against the token API in tests/token_api.rs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sipward");

/// `sipward ctl --url … ARGS` with the token in SIPWARD_ADMIN_TOKEN (unless `env` sets
/// otherwise).
fn ctl_with(server: &Server, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("ctl")
        .env_remove("SIPWARD_ADMIN_URL")
        .env_remove("SIPWARD_ADMIN_TOKEN_FILE")
        .env("SIPWARD_ADMIN_TOKEN", ADMIN_TOKEN);
    if !env.iter().any(|(k, _)| *k == "SIPWARD_ADMIN_URL") {
        cmd.args(["--url", &format!("http://{}", server.http)]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("run sipward ctl")
}

fn ctl(server: &Server, args: &[&str]) -> String {
    let out = ctl_with(server, &[], args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ctl {args:?}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn ctl_json(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(server, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?}: not JSON ({e}): {out}"))
}

/// A raw GET returning the response head and body.
fn get_head(server: &Server, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&server.http, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    (head.to_ascii_lowercase(), body.to_owned())
}

fn aors_of(page: &Value) -> Vec<String> {
    page["aors"]
        .as_array()
        .expect("aors")
        .iter()
        .map(|a| a["aor"].as_str().expect("aor").to_owned())
        .collect()
}

#[test]
fn ctl_pages_filters_and_removes_bindings_and_reports_status_on_the_real_binary() {
    let accounts = [
        ("dave", "dave-secret-4"),
        ("alice", "alice-secret-1"),
        ("carol", "carol-secret-3"),
        ("bob", "bob-secret-2"),
    ];
    let server = Server::start_binary(&Options {
        accounts: &accounts,
        tls: Some("off"),
        ..Options::default()
    });
    for (user, password) in accounts {
        let mut c = Client::new(Proto::Udp, server.udp);
        let reg = Register::new(user);
        assert_eq!(register(&mut c, &reg, password, "MD5").status(), 200);
    }
    // A second binding for alice, from another contact.
    let mut c = Client::new(Proto::Udp, server.udp);
    let mut reg = Register::new("alice");
    reg.contact = Some("<sip:alice@127.0.0.1:5998>".into());
    assert_eq!(
        register(&mut c, &reg, "alice-secret-1", "MD5").status(),
        200
    );
    assert_eq!(server.metric("sipward_bindings"), 5.0);

    // Pages of 2 AoRs walk all four once, in order, following the cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["bindings", "--limit", "2"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = ctl_json(&server, &args);
        pages += 1;
        seen.extend(aors_of(&page));
        match &page["next_cursor"] {
            Value::String(c) => cursor = Some(c.clone()),
            Value::Null => break,
            other => panic!("next_cursor {other}"),
        }
        assert!(pages < 5, "the pages never end");
    }
    let expected: Vec<String> = ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|u| format!("sip:{u}@example.test"))
        .collect();
    assert_eq!(pages, 2);
    assert_eq!(seen, expected);

    // The truncation marker on the wire: a Link to the next page and the cursor header.
    let (head, body) = get_head(&server, "/admin/v1/bindings?limit=3");
    assert!(head.contains("sipward-next-cursor: "), "{head}");
    assert!(
        head.contains("link: </admin/v1/bindings?limit=3&cursor="),
        "{head}"
    );
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    let (head, _) = get_head(&server, "/admin/v1/bindings");
    assert!(!head.contains("sipward-next-cursor"), "one page: {head}");
    let (head, _) = get_head(&server, "/admin/v1/bindings?limit=0");
    assert!(head.starts_with("http/1.1 400"), "{head}");

    // One AoR, with the credential that made each binding and the id to remove it by.
    let alice = ctl_json(&server, &["bindings", "--aor", "Alice@Example.Test"]);
    assert!(
        aors_of(&alice).is_empty(),
        "the user part is case-sensitive"
    );
    let alice = ctl_json(&server, &["bindings", "--aor", "alice@example.test"]);
    let bindings = alice["aors"][0]["bindings"].as_array().expect("bindings");
    assert_eq!(bindings.len(), 2);
    assert!(bindings.iter().all(|b| b["credential"] == "alice"));
    let by_user = ctl_json(&server, &["bindings", "--user", "bob"]);
    assert_eq!(aors_of(&by_user), ["sip:bob@example.test"]);

    // The table names every binding.
    let table = ctl(&server, &["bindings"]);
    let first = table.lines().next().expect("a header");
    assert!(
        first.starts_with("AOR") && first.contains("CREDENTIAL"),
        "{table}"
    );
    assert!(table.contains("5 binding(s)"), "{table}");
    assert!(table.contains("sip:alice@127.0.0.1:5998"), "{table}");

    // Remove one binding by id, then a whole AoR; a second removal finds nothing (exit 1).
    let id = bindings[0]["id"].as_u64().expect("id").to_string();
    let out = ctl(
        &server,
        &[
            "bindings",
            "remove",
            "--aor",
            "alice@example.test",
            "--id",
            &id,
        ],
    );
    assert!(
        out.contains("removed 1 binding(s) of sip:alice@example.test"),
        "{out}"
    );
    let alice = ctl_json(&server, &["bindings", "--aor", "alice@example.test"]);
    assert_eq!(
        alice["aors"][0]["bindings"].as_array().map(Vec::len),
        Some(1)
    );
    let removed = ctl_json(
        &server,
        &["bindings", "remove", "--aor", "bob@example.test"],
    );
    assert_eq!(removed["bindings_removed"], 1);
    let again = ctl_with(
        &server,
        &[],
        &["bindings", "remove", "--aor", "bob@example.test"],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("404"));
    assert_eq!(server.metric("sipward_bindings"), 3.0);

    // Status: version, counts, readiness.
    let status = ctl_json(&server, &["status"]);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["bindings"], 3);
    assert_eq!(status["aors"], 3);
    assert_eq!(status["ready"], true);
    assert_eq!(status["tls"], true);
    assert_eq!(status["token_api"], false);
    assert!(status["uptime_secs"].is_u64());
    let table = ctl(&server, &["status"]);
    assert!(
        table.contains("ready:") && table.contains("ready\n"),
        "{table}"
    );

    // TLS reload, counted like SIGHUP's.
    let before = server.metric("sipward_tls_cert_reloads_total{outcome=\"ok\"}");
    assert_eq!(
        ctl(&server, &["tls", "reload"]).trim(),
        "tls material reloaded"
    );
    assert_eq!(
        server.metric("sipward_tls_cert_reloads_total{outcome=\"ok\"}"),
        before + 1.0
    );

    // Devices need the token API: a 404 with the hint, exit 1.
    let out = ctl_with(&server, &[], &["devices"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token API is off"));

    // The URL and a token file from the environment; a wrong token is refused (exit 1), no
    // token at all is a usage error (exit 2), and neither is printed.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    write_secret(&token_file, &format!("{ADMIN_TOKEN}\n"));
    let url = format!("http://{}", server.http);
    let token_path = token_file.to_str().unwrap();
    let mut cmd = Command::new(BIN);
    let out = cmd
        .args(["ctl", "--json", "status"])
        .env("SIPWARD_ADMIN_URL", &url)
        .env("SIPWARD_ADMIN_TOKEN_FILE", token_path)
        .env_remove("SIPWARD_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = ctl_with(
        &server,
        &[("SIPWARD_ADMIN_TOKEN", "not-the-admin-token-000")],
        &["status"],
    );
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains("not-the-admin-token"), "{stderr}");
    let none = Command::new(BIN)
        .args(["ctl", "--url", &url, "status"])
        .env_remove("SIPWARD_ADMIN_TOKEN")
        .env_remove("SIPWARD_ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no admin token"));
}
