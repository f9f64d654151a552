//! What browsers need from the HTTP listener: CORS for the sign-in routes, and the reference
//! web phone's static files under `/phone/`.
//!
//! CORS (`http.cors_origins`): a request whose `Origin` is listed gets
//! `Access-Control-Allow-Origin` with that origin (and `Vary: Origin`), never
//! `Access-Control-Allow-Credentials` (the API takes bearer tokens, not cookies). A preflight
//! (`OPTIONS` with `Access-Control-Request-Method`) from a listed origin is answered `204` with
//! the allowed methods and headers (`authorization`, `content-type`); from any other origin
//! `403`. Only the token API's browser routes take part: `/v1/login-options`,
//! `/v1/sip/credentials` and `/v1/sip/devices[/…]` (the sign-out's DELETE).
//!
//! The web phone (`http.serve_web_phone`): a fixed list of file names read from
//! `http.web_phone_dir` on each request (no path from the request ever reaches the file
//! system), so editing the files needs no restart.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether `path` is one of the routes CORS applies to.
pub(super) fn cors_route(path: &str) -> bool {
    path == "/v1/login-options"
        || path == "/v1/sip/credentials"
        || path == "/v1/sip/devices"
        || path.starts_with("/v1/sip/devices/")
}

/// The CORS layer over `origins` (lower-case, as validated by config).
pub(super) async fn cors(origins: std::sync::Arc<[String]>, req: Request, next: Next) -> Response {
    if origins.is_empty() || !cors_route(req.uri().path()) {
        return next.run(req).await;
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
    let allowed = origin
        .as_ref()
        .filter(|o| origins.iter().any(|x| x == *o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let Some(allowed) = allowed else {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({"error": "origin_not_allowed"})),
            )
                .into_response();
        };
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        return r;
    }
    let mut r = next.run(req).await;
    if let Some(allowed) = allowed {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    r
}

/// The web phone's files: (name in the URL, path under the folder, content type).
const FILES: &[(&str, &str, &str)] = &[
    ("", "index.html", "text/html; charset=utf-8"),
    ("index.html", "index.html", "text/html; charset=utf-8"),
    ("callback.html", "callback.html", "text/html; charset=utf-8"),
    ("phone.js", "phone.js", "text/javascript; charset=utf-8"),
    ("phone.css", "phone.css", "text/css; charset=utf-8"),
    (
        "callback.js",
        "callback.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "jssip.min.js",
        "vendor/jssip.min.js",
        "text/javascript; charset=utf-8",
    ),
];

/// `GET /phone/{file}` from `dir`: one of [`FILES`], else 404.
pub(super) async fn phone_file(dir: Option<PathBuf>, file: String) -> Response {
    let Some(dir) = dir else {
        return not_found();
    };
    let Some((_, path, kind)) = FILES.iter().find(|(name, _, _)| *name == file) else {
        return not_found();
    };
    let full = Path::new(&dir).join(path);
    let read = tokio::task::spawn_blocking(move || std::fs::read(full)).await;
    match read.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
        Ok(bytes) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            // The page may load only its own scripts, and talk to its own origin, the IdP
            // (its token endpoint) and WebSocket listeners.
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; connect-src 'self' http: https: ws: wss:; frame-ancestors 'none'",
                ),
            );
            (StatusCode::OK, headers, Body::from(bytes)).into_response()
        }
        Err(e) => {
            tracing::warn!(file = path, error = %e, "web phone file missing");
            not_found()
        }
    }
}

/// `GET /phone/config.json`: the WebSocket URLs the phone registers over, one per
/// `[[ws.listeners]]` entry (`(port, tls)`), on the host the page was loaded from.
pub(super) fn phone_config(
    served: bool,
    websockets: &[(u16, bool)],
    headers: &HeaderMap,
) -> Response {
    if !served {
        return not_found();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(host_of)
        .unwrap_or("127.0.0.1");
    let urls: Vec<String> = websockets
        .iter()
        .map(|(port, tls)| {
            let scheme = if *tls { "wss" } else { "ws" };
            format!("{scheme}://{host}:{port}/")
        })
        .collect();
    axum::Json(serde_json::json!({ "websocket_urls": urls })).into_response()
}

/// The host part of a `Host` header (`name`, `v4`, `[v6]`, each with an optional port);
/// `None` when it holds anything else.
fn host_of(value: &str) -> Option<&str> {
    let host = match value.strip_prefix('[') {
        Some(rest) => &value[..rest.find(']')? + 2],
        None => value.split(':').next()?,
    };
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    ok.then_some(host)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not_found"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_covers_the_sign_in_routes_only() {
        assert!(cors_route("/v1/login-options"));
        assert!(cors_route("/v1/sip/credentials"));
        assert!(cors_route("/v1/sip/devices/abc"));
        assert!(!cors_route("/admin/v1/bindings"));
        assert!(!cors_route("/metrics"));
    }

    #[test]
    fn the_host_header_gives_the_websocket_host() {
        assert_eq!(host_of("127.0.0.1:8080"), Some("127.0.0.1"));
        assert_eq!(host_of("phone.example.com"), Some("phone.example.com"));
        assert_eq!(host_of("[::1]:8080"), Some("[::1]"));
        assert_eq!(host_of("evil\"<x>"), None);
        assert_eq!(host_of("[::1"), None);
    }

    #[test]
    fn only_listed_files_are_served() {
        assert!(FILES.iter().all(|(name, _, _)| !name.contains('/')));
        assert!(!FILES.iter().any(|(name, _, _)| *name == "../Cargo.toml"));
    }
}
