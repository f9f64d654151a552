//! `sipward check-config` on the real binary (issue 18): a file with six problems of every kind
//! (an unknown key, two values of the wrong type, a number out of range, a name outside its
//! set, a missing file) is reported in one run, one line each, every line naming its key and
//! its line in the file, in operator's words (no `expected u64`); a client-only certificate
//! (extended key usage clientAuth) as the server certificate is refused by name.

mod common;

use std::process::Command;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_sipward");

fn check(text: &str) -> (Option<i32>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sipward.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = stderr
        .lines()
        .skip_while(|l| !l.ends_with("invalid configuration:"))
        .skip(1)
        .map(str::to_owned)
        .collect();
    (out.status.code(), lines)
}

const SIX_PROBLEMS: &str = r#"[log]
format = "text"
level = "info"
colour = "always"

[sip]
udp = ["127.0.0.1:5060"]
tcp_max_connections = "lots"

[registrar]
min_expires = 0
persistence = "mongodb"

[http]
listen = "127.0.0.1:8080"
admin_token_file = "/nonexistent/admin-token"

[auth]
nonce_lifetime_secs = true

[[domains]]
name = "example.test"
"#;

#[test]
fn six_problems_are_reported_in_one_run_with_their_keys_and_lines() {
    let (code, lines) = check(SIX_PROBLEMS);
    assert_eq!(code, Some(2), "{lines:#?}");
    println!("{}", lines.join("\n"));
    let expected = [
        ("log.colour:", "line 4"),
        ("sip.tcp_max_connections:", "line 8"),
        ("auth.nonce_lifetime_secs:", "line 19"),
        ("registrar.min_expires:", "line 11"),
        ("registrar.persistence:", "line 12"),
        ("http.admin_token_file:", "line 16"),
    ];
    for (key, line) in expected {
        let found = lines
            .iter()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no problem for {key}:\n{}", lines.join("\n")));
        assert!(found.contains(line), "{found}");
    }
    assert_eq!(lines.len(), 6, "{}", lines.join("\n"));
    let all = lines.join("\n");
    for jargon in ["expected u", "expected a boolean", "invalid type"] {
        assert!(!all.contains(jargon), "{jargon}: {all}");
    }
    let tcp = lines.iter().find(|l| l.starts_with("sip.tcp")).unwrap();
    assert!(
        tcp.contains("must be a whole number, not the text \"lots\""),
        "{tcp}"
    );
    let ttl = lines.iter().find(|l| l.starts_with("auth.nonce")).unwrap();
    assert!(ttl.contains("must be a whole number, not true"), "{ttl}");
}

#[test]
fn a_client_only_certificate_as_the_server_certificate_is_refused() {
    let certs = dev_certs();
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:5060\"]\n\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n\n\
         [[tls.listeners]]\naddr = \"127.0.0.1:5061\"\n\n[[domains]]\nname = \"example.test\"\n",
        certs.join("alice.pem"),
        certs.join("alice.key"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sipward.toml");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tls.cert_file"), "{stderr}");
    assert!(
        stderr.contains("clientAuth only: a client certificate")
            && stderr.contains("needs serverAuth"),
        "{stderr}"
    );
    // The server certificate itself passes.
    let good = text
        .replace("alice.pem", "server.pem")
        .replace("alice.key", "server.key");
    std::fs::write(&path, good).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
