//! The browser-facing side of the token API (issue 21) against the real test IdP: CORS for
//! `http.cors_origins` on the sign-in routes (preflight, allowed headers, never credentials;
//! nothing for other origins or other routes), and `/v1/login-options` giving a browser what
//! Authorization Code + PKCE needs (endpoints from the IdP's discovery document). The web phone
//! files under `/phone/` only with `http.serve_web_phone`.

mod common;
mod token;

use common::*;
use token::*;

use std::path::Path;
use std::time::{Duration, Instant};

const PAGE: &str = "https://phone.example.test";

/// The IdP and an in-process token server allowing `PAGE`; with `web_phone`, also serving web/.
fn start(web_phone: bool) -> Option<(Idp, Server)> {
    if !idp_available() {
        return None;
    }
    let idp = Idp::start();
    let dir = tempfile::tempdir().unwrap();
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let http = match web_phone {
        true => format!(
            "[http]\ncors_origins = [\"{PAGE}\"]\nserve_web_phone = true\nweb_phone_dir = \"{}\"\n",
            web.display()
        ),
        false => format!("[http]\ncors_origins = [\"{PAGE}\"]\n"),
    };
    let config = config_text(&idp.issuer, &Setup::default(), dir.path(), Ports::default())
        .replacen("[http]\n", &http, 1);
    let path = dir.path().join("sipward.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::in_process(path, dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .http_get("/readyz", None)
        .map(|(s, _)| s)
        .unwrap_or(0)
        != 200
    {
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((idp, server))
}

#[test]
fn cors_preflight_and_answers_for_allowed_origins_only() {
    let Some((idp, server)) = start(false) else {
        return;
    };
    let preflight = |origin: &str, path: &str| {
        http(
            server.http,
            "OPTIONS",
            path,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            ],
            "",
        )
    };
    let ok = preflight(PAGE, "/v1/sip/credentials");
    assert_eq!(ok.status, 204, "{ok:?}");
    assert_eq!(ok.header("Access-Control-Allow-Origin"), Some(PAGE));
    let methods = ok.header("Access-Control-Allow-Methods").unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let headers = ok.header("Access-Control-Allow-Headers").unwrap();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(ok.header("Access-Control-Allow-Credentials"), None);
    assert_eq!(ok.header("Vary"), Some("Origin"));

    let foreign = preflight("https://evil.example", "/v1/sip/credentials");
    assert_eq!(foreign.status, 403, "{foreign:?}");
    assert_eq!(foreign.header("Access-Control-Allow-Origin"), None);

    // The exchange itself from the page: allowed, with the header and no credentials flag.
    let token = idp.token_for("alice");
    let bearer = format!("Bearer {token}");
    let body = r#"{"device_id":"web-1","device_name":"Web","platform":"web"}"#;
    let issued = http(
        server.http,
        "POST",
        "/v1/sip/credentials",
        &[
            ("Origin", PAGE),
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    assert_eq!(issued.status, 201, "{issued:?}");
    assert_eq!(issued.header("Access-Control-Allow-Origin"), Some(PAGE));
    assert_eq!(issued.header("Access-Control-Allow-Credentials"), None);

    // Another origin gets its answer without the header (the browser withholds it).
    let other = http(
        server.http,
        "GET",
        "/v1/login-options?domain=example.test",
        &[("Origin", "https://evil.example")],
        "",
    );
    assert_eq!(other.status, 200);
    assert_eq!(other.header("Access-Control-Allow-Origin"), None);
    // Routes other than the sign-in ones take no part.
    let admin = http(
        server.http,
        "OPTIONS",
        "/admin/v1/bindings",
        &[("Origin", PAGE), ("Access-Control-Request-Method", "GET")],
        "",
    );
    assert_ne!(admin.status, 204, "{admin:?}");
    assert_eq!(admin.header("Access-Control-Allow-Origin"), None);
}

#[test]
fn login_options_give_what_authorization_code_with_pkce_needs() {
    let Some((idp, server)) = start(false) else {
        return;
    };
    let r = http(
        server.http,
        "GET",
        "/v1/login-options?domain=example.test",
        &[("Origin", PAGE)],
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(PAGE));
    let v = r.json();
    let m = &v["methods"][0];
    // oidc-provider's discovery document names these endpoints.
    assert_eq!(m["authorization_endpoint"], format!("{}/auth", idp.issuer));
    assert_eq!(m["token_endpoint"], format!("{}/token", idp.issuer));
    assert_eq!(m["client_id"], "softphone");
    assert_eq!(m["pkce"], "S256");
    assert_eq!(m["flow"], "authorization_code");
    assert_eq!(m["redirect_uri_pattern"], "{origin}/phone/callback.html");
    assert!(
        m["scopes"].as_array().unwrap().iter().any(|s| s == "sip"),
        "{m}"
    );
    // No web phone unless configured.
    let (status, _) = server.http_get("/phone/", None).unwrap();
    assert_eq!(status, 404);
}

#[test]
fn the_web_phone_is_served_when_configured() {
    if !Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("web/index.html")
        .is_file()
    {
        panic!("web/index.html is part of the repository");
    }
    let Some((_idp, server)) = start(true) else {
        return;
    };
    let (status, body) = server.http_get("/phone/", None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("sipward web phone"), "{body}");
    let (status, body) = server.http_get("/phone/phone.js", None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("code_challenge_method"), "PKCE in phone.js");
    // Only the listed files: nothing else under web/ or above it.
    for path in [
        "/phone/package.json",
        "/phone/..%2FCargo.toml",
        "/phone/node_modules",
    ] {
        let (status, _) = server.http_get(path, None).unwrap();
        assert_eq!(status, 404, "{path}");
    }
    let r = http(server.http, "GET", "/phone/index.html", &[], "");
    let csp = r.header("Content-Security-Policy").unwrap_or("");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let (status, body) = server.http_get("/phone/config.json", None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("websocket_urls"), "{body}");
}
