//! Real identity providers (issue 19): the worked configurations in `config/idp/` pass
//! `sipward check-config`, and each runs the in-process server against the test IdP
//! (`tests/idp`, provider shapes in `tests/idp/shapes.mjs`) with only the issuer URL and the
//! ports changed. Per provider: a token shaped like that provider's (issuer form, claim names,
//! array or string scopes, `typ` as the provider sends it) is exchanged for a credential that
//! REGISTERs, and one is refused for the provider-specific reason.
//!
//! Without Node or `tests/idp/node_modules` the IdP tests are skipped loudly, or fail when
//! `CI=true`.

mod common;
mod token;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use common::*;
use token::*;

const BIN: &str = env!("CARGO_BIN_EXE_sipward");

fn worked(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/idp")
        .join(format!("{name}.toml"))
}

/// A provider-shaped token from the test IdP: `(token, issuer)`. `extra` may hold `set`,
/// `remove`, `header`, `tid`, `origin`, `opaque`.
fn mint(idp: &Idp, shape: &str, user: &str, extra: Value) -> (String, String) {
    let mut body = json!({"shape": shape, "user": user});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    let r = http(
        idp.addr,
        "POST",
        "/shapes/mint",
        &[("Content-Type", "application/json")],
        &body.to_string(),
    );
    assert_eq!(r.status, 200, "mint {shape}: {}", r.body);
    let v = r.json();
    (
        v["token"].as_str().unwrap().to_owned(),
        v["issuer"].as_str().unwrap().to_owned(),
    )
}

/// The worked configuration `name` with its issuer replaced by `issuer`, listening on
/// kernel-chosen loopback ports, and `replace` applied (`(from, to)` text pairs).
fn worked_config(name: &str, issuer: &str, replace: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(worked(name)).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("issuer = "))
        .expect("an issuer line")
        .to_owned();
    text = text.replace(&line, &format!("issuer = \"{issuer}\""));
    text = text
        .replace("\"127.0.0.1:5060\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"");
    for (from, to) in replace {
        assert!(text.contains(from), "{name}.toml has no {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// The in-process server for `config`; files it names relative to the config live in its
/// folder (`files`: name and content, written 0600).
fn server_for(config: &str, files: &[(&str, &str)]) -> TokenServer {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let path = dir.path().join("sipward.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::in_process(path, dir);
    TokenServer {
        server,
        config: config.to_owned(),
    }
}

/// Exchange, then REGISTER `alice` with SHA-256.
fn exchange_and_register(s: &TokenServer, token: &str) {
    let cred = s.credential(token, "laptop-1");
    assert_eq!(cred.aor, "sip:alice@example.test");
    let mut c = Client::new(Proto::Udp, s.server.udp);
    let r = register_device(&mut c, "alice", &cred, "SHA-256", Some("60"));
    assert_eq!(r.status(), 200, "{}", r.text);
}

/// A refused exchange: the status, the error code, and the reason counted.
fn refused(s: &TokenServer, token: &str, status: u16, error: &str, reason: &str) {
    let r = s.exchange(token, "laptop-1");
    assert_eq!(r.status, status, "{}\n{}", r.body, s.server.stderr());
    assert_eq!(r.json()["error"], error, "{}", r.body);
    assert_eq!(
        s.metric(&format!(
            "sipward_token_rejections_total{{reason=\"{reason}\"}}"
        )),
        1.0,
        "{}",
        s.server.stderr()
    );
}

/// The secret files a worked configuration names (`*_file = "name"`), as they would be
/// deployed: created next to the copy with mode 0600.
fn secret_files_of(config: &str) -> Vec<(String, String)> {
    config
        .lines()
        .filter(|l| l.starts_with("introspection_secret_file = "))
        .map(|l| {
            let name = l.split('"').nth(1).unwrap().to_owned();
            (name, "introspection-secret-for-tests\n".to_owned())
        })
        .collect()
}

#[test]
fn every_worked_configuration_passes_check_config() {
    let mut names: Vec<String> = std::fs::read_dir(worked("x").parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    for expected in ["auth0", "entra", "google", "keycloak", "okta", "okta-org"] {
        assert!(
            names.contains(&format!("{expected}.toml")),
            "config/idp/{expected}.toml missing: {names:?}"
        );
    }
    for name in &names {
        let text = std::fs::read_to_string(worked(name.trim_end_matches(".toml"))).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (file, content) in secret_files_of(&text) {
            let path = dir.path().join(file);
            std::fs::write(&path, content).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.trim().is_empty(), "{name} warns: {stderr}");
    }
}

#[test]
fn entra_v2_token_registers_and_another_tenant_is_refused() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let (token, issuer) = mint(&idp, "entra", "alice", json!({}));
    let s = server_for(&worked_config("entra", &issuer, &[]), &[]);
    exchange_and_register(&s, &token);
    // The same tenant's issuer, but a token naming another tenant: 403 access_denied.
    let (other, _) = mint(
        &idp,
        "entra",
        "alice",
        json!({"set": {"tid": "00000000-0000-0000-0000-000000000000"}}),
    );
    refused(&s, &other, 403, "access_denied", "tenant");
    // A v1.0 token of the same tenant (sts.windows.net form, appid): another issuer, 401.
    let (v1, _) = mint(&idp, "entra-v1", "alice", json!({}));
    let r = s.exchange(&v1, "laptop-2");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        s.metric("sipward_token_rejections_total{reason=\"unknown_issuer\"}"),
        1.0
    );
}

#[test]
fn okta_custom_server_token_registers_and_one_without_the_scope_is_refused() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let (token, issuer) = mint(&idp, "okta", "alice", json!({}));
    let s = server_for(&worked_config("okta", &issuer, &[]), &[]);
    exchange_and_register(&s, &token);
    let (no_scope, _) = mint(
        &idp,
        "okta",
        "alice",
        json!({"set": {"scp": ["openid", "profile"]}}),
    );
    refused(&s, &no_scope, 403, "insufficient_scope", "scope");
    // Another Okta app (cid) is refused as another client.
    let (other, _) = mint(&idp, "okta", "alice", json!({"set": {"cid": "0oa9other"}}));
    let r = s.exchange(&other, "laptop-2");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        s.metric("sipward_token_rejections_total{reason=\"client\"}"),
        1.0
    );
}

#[test]
fn keycloak_token_registers_and_another_client_or_unverified_email_is_refused() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let (token, issuer) = mint(&idp, "keycloak", "alice", json!({}));
    let s = server_for(&worked_config("keycloak", &issuer, &[]), &[]);
    exchange_and_register(&s, &token);
    let (other, _) = mint(
        &idp,
        "keycloak",
        "alice",
        json!({"set": {"azp": "other-app"}}),
    );
    refused(&s, &other, 401, "invalid_token", "client");
    let (unverified, _) = mint(
        &idp,
        "keycloak",
        "alice",
        json!({"set": {"email_verified": false}}),
    );
    refused(&s, &unverified, 403, "access_denied", "email_unverified");
    // The client role under resource_access replaced by an object of the wrong shape.
    let (odd, _) = mint(
        &idp,
        "keycloak",
        "alice",
        json!({"set": {"resource_access": {"sipward-api": {"roles": {"sip-register": true}}}}}),
    );
    refused(&s, &odd, 401, "invalid_token", "claim_shape");
    assert!(s
        .server
        .stderr()
        .contains("resource_access.sipward-api.roles"));
}

#[test]
fn auth0_token_registers_and_another_organization_is_refused() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let (token, issuer) = mint(&idp, "auth0", "alice", json!({}));
    assert!(issuer.ends_with("/auth0/"), "{issuer}");
    let s = server_for(&worked_config("auth0", &issuer, &[]), &[]);
    exchange_and_register(&s, &token);
    let (other_org, _) = mint(
        &idp,
        "auth0",
        "alice",
        json!({"set": {"org_id": "org_someoneelse"}}),
    );
    refused(&s, &other_org, 403, "access_denied", "tenant");
    // Permission missing from the `permissions` array.
    let (no_perm, _) = mint(
        &idp,
        "auth0",
        "alice",
        json!({"set": {"permissions": ["sip:read"]}}),
    );
    let r = s.exchange(&no_perm, "laptop-2");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "insufficient_scope");
}

// ---- Connectivity: a company CA and an egress proxy ----

/// A test CA and a server certificate for `host` signed by it: `(ca_pem, cert_pem, key_pem)`.
fn test_ca_and_server_cert(host: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sipward test company CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, host);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// A small HTTP CONNECT proxy on loopback: it counts CONNECT requests, records their
/// targets, and connects every target host to 127.0.0.1 (so a name only the proxy knows, as
/// behind a company egress proxy, reaches the test IdP). Anything but CONNECT gets 405.
struct ConnectProxy {
    addr: std::net::SocketAddr,
    targets: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let targets = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = targets.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { break };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let mut client = client;
                    let mut parts = line.split_whitespace();
                    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
                        let _ = client.write_all(
                            b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n",
                        );
                        return;
                    };
                    seen.lock().unwrap().push(target.to_owned());
                    let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
                    let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                        return;
                    };
                    client
                        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                        .unwrap();
                    // Bytes the reader buffered past the head belong to the tunnel.
                    let buffered = reader.buffer().to_vec();
                    let mut up_w = upstream.try_clone().unwrap();
                    up_w.write_all(&buffered).unwrap();
                    let mut up_r = upstream;
                    let mut client_w = client.try_clone().unwrap();
                    let mut client_r = client;
                    let t = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut up_r, &mut client_w);
                        let _ = client_w.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut client_r, &mut up_w);
                    let _ = up_w.shutdown(std::net::Shutdown::Write);
                    let _ = t.join();
                });
            }
        });
        ConnectProxy { addr, targets }
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

/// The test IdP also serving HTTPS with `cert`/`key` (files in `dir`): `(idp, tls_port)`.
fn idp_over_https(dir: &Path, cert: &str, key: &str) -> (Idp, u16) {
    use std::io::BufRead as _;
    let cert_path = dir.join("idp.pem");
    let key_path = dir.join("idp.key");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let mut child = Command::new("node")
        .arg(idp_dir().join("server.mjs"))
        .env("IDP_PORT", "0")
        .env("IDP_TLS_PORT", "0")
        .env("IDP_TLS_CERT", &cert_path)
        .env("IDP_TLS_KEY", &key_path)
        .env("IDP_AUDIENCE", AUDIENCE)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn node");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("IdP start ({e}): {line:?}"));
    let port = v["port"].as_u64().unwrap() as u16;
    let idp = Idp::from_child(
        child,
        v["issuer"].as_str().unwrap(),
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    );
    (idp, v["tls_port"].as_u64().unwrap() as u16)
}

/// Issue 19: an on-premises Keycloak with a company CA, reachable only through an egress
/// proxy. The IdP serves HTTPS under a name only the proxy resolves, with a certificate from
/// a CA generated here; sipward gets that CA in `ca_file` and the proxy in `proxy`. With
/// both, the token registers (and every fetch went through CONNECT); without the CA, or
/// without the proxy, the IdP is unreachable and the exchange gets 503, never 401.
#[test]
fn keycloak_behind_a_company_ca_and_a_connect_proxy() {
    if !idp_available() {
        return;
    }
    const HOST: &str = "keycloak.corp.test";
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca_and_server_cert(HOST);
    let (idp, tls_port) = idp_over_https(dir.path(), &cert, &key);
    let proxy = ConnectProxy::start();
    let origin = format!("https://{HOST}:{tls_port}");
    let (token, issuer) = mint(&idp, "keycloak", "alice", json!({"origin": origin}));
    assert!(
        issuer.starts_with("https://keycloak.corp.test:"),
        "{issuer}"
    );
    let proxy_line = format!("proxy = \"http://{}\"", proxy.addr);
    let with = |extra: &str| {
        worked_config(
            "keycloak",
            &issuer,
            &[(
                "label = \"Keycloak\"",
                &format!("label = \"Keycloak\"\n{extra}"),
            )],
        )
    };
    let files = [("corp-ca.pem", ca.as_str())];

    let s = server_for(
        &with(&format!("ca_file = \"corp-ca.pem\"\n{proxy_line}")),
        &files,
    );
    exchange_and_register(&s, &token);
    let targets = proxy.targets();
    assert!(!targets.is_empty(), "no CONNECT went through the proxy");
    assert!(
        targets.iter().all(|t| *t == format!("{HOST}:{tls_port}")),
        "{targets:?}"
    );
    println!("CONNECT requests through the test proxy: {}", targets.len());
    drop(s);

    // The proxy without the company CA: the IdP's certificate is not trusted.
    let s = server_for(&with(&proxy_line), &files);
    let r = s.exchange(&token, "laptop-1");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    drop(s);

    // The CA without the proxy: the name resolves nowhere.
    let s = server_for(&with("ca_file = \"corp-ca.pem\""), &files);
    let r = s.exchange(&token, "laptop-1");
    assert_eq!(r.status, 503, "{}", r.body);
}

#[test]
fn a_bad_ca_file_or_proxy_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
    let text = std::fs::read_to_string(worked("keycloak"))
        .unwrap()
        .replace(
            "label = \"Keycloak\"",
            "label = \"Keycloak\"\nca_file = \"junk.pem\"\nproxy = \"http://user:pw@proxy.example.test:3128\"",
        );
    let path = dir.path().join("sipward.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("issuers[0].ca_file"), "{stderr}");
    assert!(stderr.contains("no PEM CERTIFICATE"), "{stderr}");
    assert!(stderr.contains("issuers[0].proxy"), "{stderr}");
    assert!(
        !stderr.contains("pw@"),
        "the proxy password is echoed: {stderr}"
    );
}

// ---- Opaque tokens ----

fn shapes_post(idp: &Idp, path: &str, body: Value) -> Value {
    let r = http(
        idp.addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &body.to_string(),
    );
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

/// How often the test IdP was asked about `token` (introspection, userinfo, token-info).
fn idp_calls_for(idp: &Idp, token: &str) -> u64 {
    use sha2::Digest as _;
    let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let stats = http(idp.addr, "GET", "/shapes/stats", &[], "").json();
    stats["per_token"][&hash[..16]].as_u64().unwrap_or(0)
}

/// The Okta org worked configuration against the test IdP, with `opaque_cache_secs`.
fn okta_org_server(idp: &Idp, cache_secs: u64) -> TokenServer {
    let (_, issuer) = mint(idp, "okta-org", "alice", json!({}));
    let origin = issuer.trim_end_matches("/okta");
    let text = worked_config(
        "okta-org",
        &issuer,
        &[
            (
                "audience = \"https://dev-123456.okta.com\"",
                &format!("audience = \"{issuer}\""),
            ),
            (
                "https://dev-123456.okta.com/oauth2/v1/introspect",
                &format!("{origin}/okta/oauth2/v1/introspect"),
            ),
            (
                "opaque_cache_secs = 60",
                &format!("opaque_cache_secs = {cache_secs}"),
            ),
        ],
    );
    let secrets = secret_files_of(&text);
    let files: Vec<(&str, &str)> = secrets
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    server_for(&text, &files)
}

/// Issue 19, opaque tokens: active → credential → REGISTER; the IdP is asked once per token
/// within the cache window (counted at the IdP); another client and an unknown token are 401.
#[test]
fn okta_org_opaque_token_is_introspected_once_and_registers() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = okta_org_server(&idp, 60);
    let (token, _) = mint(&idp, "okta-org", "alice", json!({}));
    exchange_and_register(&s, &token);
    for n in 0..4 {
        let r = s.exchange(&token, &format!("phone-{n}"));
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
    }
    assert_eq!(
        idp_calls_for(&idp, &token),
        1,
        "one introspection per token"
    );
    // A fresh token (another user) used by 5 requests at once: one introspection serves all.
    let (fresh, _) = mint(&idp, "okta-org", "bob", json!({}));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..5)
            .map(|n| {
                let (s, fresh) = (&s, &fresh);
                scope.spawn(move || s.exchange(fresh, &format!("tablet-{n}")))
            })
            .collect();
        for h in handles {
            let r = h.join().unwrap();
            assert!(
                r.status == 201 || r.status == 200,
                "{} {}",
                r.status,
                r.body
            );
        }
    });
    assert_eq!(
        idp_calls_for(&idp, &fresh),
        1,
        "concurrent requests each asked the IdP"
    );
    assert_eq!(
        s.metric("sipward_oidc_introspections_total{result=\"ok\"}"),
        2.0,
        "{}",
        s.server.metrics()
    );
    // Another Okta app's token: refused as another client.
    let (other, _) = mint(
        &idp,
        "okta-org",
        "alice",
        json!({"set": {"cid": "0oa9other"}}),
    );
    refused(&s, &other, 401, "invalid_token", "client");
    // A token the IdP never issued: inactive.
    let unknown = format!("{}x", &token[..token.len() - 1]);
    refused(&s, &unknown, 401, "invalid_token", "inactive");
    assert_eq!(r_body_of_invalid(&s, &unknown), INVALID_TOKEN_BODY);
    // A JWT with a refused header keeps its reason and is never sent to introspection.
    let forged = raw_token(
        r#"{"alg":"none"}"#,
        r#"{"iss":"x","sub":"alice","active":true}"#,
        b"x",
    );
    refused(&s, &forged, 401, "invalid_token", "algorithm");
    assert_eq!(idp_calls_for(&idp, &forged), 0);
}

fn r_body_of_invalid(s: &TokenServer, token: &str) -> String {
    s.exchange(token, "laptop-9").body
}

/// A revoked opaque token keeps working only while its cached result lasts
/// (`opaque_cache_secs`), and a cached result never outlives the token.
#[test]
fn opaque_results_are_cached_up_to_the_ceiling_and_the_token_life() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = okta_org_server(&idp, 2);
    let (token, _) = mint(&idp, "okta-org", "alice", json!({}));
    s.credential(&token, "phone-1");
    shapes_post(&idp, "/shapes/revoke", json!({"token": token}));
    // Within the window: the cached answer (the revoke is not seen yet, by design).
    s.credential(&token, "phone-1");
    assert_eq!(idp_calls_for(&idp, &token), 1);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    // After the ceiling: asked again, now inactive.
    let r = s.exchange(&token, "phone-1");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(idp_calls_for(&idp, &token), 2);

    // opaque_cache_secs = 0: nothing is kept, every request asks, and each answer is used.
    let s0 = okta_org_server(&idp, 0);
    let (uncached, _) = mint(&idp, "okta-org", "alice", json!({}));
    s0.credential(&uncached, "phone-0");
    s0.credential(&uncached, "phone-0");
    assert_eq!(idp_calls_for(&idp, &uncached), 2);
    drop(s0);

    // A token with 2 s to live under a 60 s ceiling: cached only until it expires.
    let s = okta_org_server(&idp, 60);
    let (short, _) = mint(&idp, "okta-org", "alice", json!({"ttl": 2}));
    s.credential(&short, "phone-2");
    assert_eq!(idp_calls_for(&idp, &short), 1);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let r = s.exchange(&short, "phone-2");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        idp_calls_for(&idp, &short),
        2,
        "the cached result outlived the token"
    );
}

/// Introspection down or failing: 503 with Retry-After, never 401; not cached, so the same
/// token works once the IdP is back.
#[test]
fn introspection_endpoint_down_gives_503_never_401() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = okta_org_server(&idp, 60);
    let (token, _) = mint(&idp, "okta-org", "alice", json!({}));
    for mode in ["down", "error"] {
        shapes_post(&idp, "/shapes/mode", json!({"introspection": mode}));
        let r = s.exchange(&token, "phone-1");
        assert_eq!(r.status, 503, "{mode}: {}", r.body);
        assert!(r.header("retry-after").is_some(), "{mode}");
    }
    assert_eq!(
        s.metric("sipward_token_rejections_total{reason=\"introspection_unavailable\"}"),
        2.0
    );
    shapes_post(&idp, "/shapes/mode", json!({"introspection": "ok"}));
    exchange_and_register(&s, &token);
}

fn google_server(idp: &Idp) -> TokenServer {
    let (_, issuer) = mint(idp, "google", "alice", json!({}));
    let text = worked_config(
        "google",
        &issuer,
        &[
            (
                "https://openidconnect.googleapis.com/v1/userinfo",
                &format!("{issuer}/userinfo"),
            ),
            (
                "https://oauth2.googleapis.com/tokeninfo",
                &format!("{issuer}/tokeninfo"),
            ),
        ],
    );
    server_for(&text, &[])
}

#[test]
fn google_token_registers_and_unverified_consumer_or_other_app_tokens_are_refused() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = google_server(&idp);
    let (token, _) = mint(&idp, "google", "alice", json!({}));
    assert!(token.starts_with("ya29."));
    exchange_and_register(&s, &token);
    // One token-info and one userinfo call for the token, then the cache.
    s.credential(&token, "phone-2");
    assert_eq!(idp_calls_for(&idp, &token), 2);
    let (unverified, _) = mint(
        &idp,
        "google",
        "alice",
        json!({"set": {"email_verified": false}}),
    );
    refused(&s, &unverified, 403, "access_denied", "email_unverified");
    let (consumer, _) = mint(
        &idp,
        "google",
        "alice",
        json!({"remove": ["hd"], "set": {"email": "alice@gmail.com"}}),
    );
    refused(&s, &consumer, 403, "access_denied", "user_domain");
    let (other_app, _) = mint(
        &idp,
        "google",
        "alice",
        json!({"set": {"aud": "999-other.apps.googleusercontent.com", "azp": "999-other.apps.googleusercontent.com"}}),
    );
    refused(&s, &other_app, 401, "invalid_token", "audience");
}
