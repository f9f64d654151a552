//! `[ws]` and `[[ws.listeners]]`: SIP over WebSocket (RFC 7118) for browser softphones.
//! The raw TOML shape, its validation, and the validated [`WsConfig`].
//!
//! Decisions the issue leaves open (docs/architecture.md repeats them):
//! - `origins` empty refuses every upgrade that carries an `Origin` header (so only
//!   non-browser clients connect); `"*"` allows any origin; otherwise the header must equal
//!   one entry exactly (scheme, host and port, as browsers send it).
//! - A WSS listener (`tls = true`) serves the `[tls]` material (certificates and SNI, reloaded
//!   on SIGHUP), so it needs `[tls]` configured with at least one `[[tls.listeners]]`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::problems::{setting, Problems, Setting};

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWs {
    #[serde(default)]
    pub(super) listeners: Vec<RawWsListener>,
    #[serde(default = "default_ws_max_connections")]
    pub(super) max_connections: u64,
    #[serde(default = "default_ws_idle_timeout_secs")]
    pub(super) idle_timeout_secs: u64,
    #[serde(default = "default_ws_handshake_timeout_secs")]
    pub(super) handshake_timeout_secs: u64,
    #[serde(default = "default_ws_max_message_bytes")]
    pub(super) max_message_bytes: u64,
    #[serde(default = "default_ws_ping_interval_secs")]
    pub(super) ping_interval_secs: u64,
}

impl Default for RawWs {
    fn default() -> RawWs {
        RawWs {
            listeners: Vec::new(),
            max_connections: default_ws_max_connections(),
            idle_timeout_secs: default_ws_idle_timeout_secs(),
            handshake_timeout_secs: default_ws_handshake_timeout_secs(),
            max_message_bytes: default_ws_max_message_bytes(),
            ping_interval_secs: default_ws_ping_interval_secs(),
        }
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWsListener {
    pub(super) addr: String,
    #[serde(default)]
    pub(super) tls: bool,
    #[serde(default)]
    pub(super) origins: Vec<String>,
}

setting!(
    WS_MAX_CONNECTIONS,
    default_ws_max_connections,
    Setting::new(1024, 1, 1_000_000)
);
setting!(
    WS_IDLE_TIMEOUT_SECS,
    default_ws_idle_timeout_secs,
    Setting::new(120, 1, 86_400)
);
setting!(
    WS_HANDSHAKE_TIMEOUT_SECS,
    default_ws_handshake_timeout_secs,
    Setting::new(10, 1, 120)
);
setting!(
    WS_MAX_MESSAGE_BYTES,
    default_ws_max_message_bytes,
    Setting::new(65_535, 1024, 1 << 20)
);
setting!(
    WS_PING_INTERVAL_SECS,
    default_ws_ping_interval_secs,
    Setting::new(30, 1, 3600)
);

/// `[ws]`: present only when at least one `[[ws.listeners]]` is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    pub listeners: Vec<WsListener>,
    /// Open connections at most per listener (upgrading or established); the slot is taken
    /// before the TCP accept.
    pub max_connections: usize,
    /// Close a connection that has sent nothing (no frame, no pong) for this long.
    pub idle_timeout: Duration,
    /// From the TCP accept to the finished upgrade (TLS handshake included on WSS).
    pub handshake_timeout: Duration,
    /// The largest frame or message accepted; a larger one closes the connection (1009).
    pub max_message_bytes: usize,
    /// A ping goes out after this long without traffic from the peer; the idle timeout closes
    /// a peer that does not answer.
    pub ping_interval: Duration,
}

/// `[[ws.listeners]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsListener {
    pub addr: SocketAddr,
    /// WSS: TLS with the `[tls]` material before the upgrade.
    pub tls: bool,
    pub origins: OriginPolicy,
}

/// Which `Origin` headers an upgrade may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// `"*"`: any origin, and none.
    Any,
    /// Only these (lower-cased, no trailing slash); an upgrade without `Origin` (not a
    /// browser) is allowed.
    Listed(Vec<String>),
}

impl OriginPolicy {
    /// Whether an upgrade with this `Origin` header (None: absent) may proceed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (OriginPolicy::Any, _) | (_, None) => true,
            (OriginPolicy::Listed(list), Some(o)) => {
                let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
                list.contains(&o)
            }
        }
    }
}

/// Validates `[ws]`; `tls_configured`: whether `[tls]` has its material and listeners (a WSS
/// listener serves with them).
pub(super) fn ws(problems: &mut Problems, raw: RawWs, tls_configured: bool) -> Option<WsConfig> {
    let max_connections = problems.range_usize(
        "ws.max_connections",
        raw.max_connections,
        WS_MAX_CONNECTIONS,
    );
    let idle_timeout = problems.range_secs(
        "ws.idle_timeout_secs",
        raw.idle_timeout_secs,
        WS_IDLE_TIMEOUT_SECS,
    );
    let handshake_timeout = problems.range_secs(
        "ws.handshake_timeout_secs",
        raw.handshake_timeout_secs,
        WS_HANDSHAKE_TIMEOUT_SECS,
    );
    let max_message_bytes = problems.range_usize(
        "ws.max_message_bytes",
        raw.max_message_bytes,
        WS_MAX_MESSAGE_BYTES,
    );
    let ping_interval = problems.range_secs(
        "ws.ping_interval_secs",
        raw.ping_interval_secs,
        WS_PING_INTERVAL_SECS,
    );
    let mut listeners: Vec<WsListener> = Vec::with_capacity(raw.listeners.len());
    for (index, l) in raw.listeners.iter().enumerate() {
        let key = format!("ws.listeners[{index}]");
        if l.tls && !tls_configured {
            problems.push(
                format!("{key}.tls"),
                "a WSS listener serves the [tls] certificates: configure [tls] cert_file, key_file and at least one [[tls.listeners]]",
            );
        }
        let origins = origins(problems, &key, &l.origins);
        match l.addr.parse::<SocketAddr>() {
            Ok(addr) if listeners.iter().any(|x| x.addr == addr) => problems.push(
                format!("{key}.addr"),
                format!("{:?} is listed twice", l.addr),
            ),
            Ok(addr) => listeners.push(WsListener {
                addr,
                tls: l.tls,
                origins,
            }),
            Err(_) => problems.push(
                format!("{key}.addr"),
                format!("{:?} is not an address:port", l.addr),
            ),
        }
    }
    (!listeners.is_empty()).then_some(WsConfig {
        listeners,
        max_connections,
        idle_timeout,
        handshake_timeout,
        max_message_bytes,
        ping_interval,
    })
}

/// `http.cors_origins` (each an origin) and `http.serve_web_phone` with `http.web_phone_dir`
/// (resolved against the config file's folder; it must hold `index.html`).
pub(super) fn web(
    problems: &mut Problems,
    cors: &[String],
    serve: bool,
    dir: &str,
    base_dir: &std::path::Path,
) -> (Vec<String>, Option<std::path::PathBuf>) {
    let mut origins = Vec::with_capacity(cors.len());
    for (i, o) in cors.iter().enumerate() {
        match origin(o) {
            Some(o) => origins.push(o),
            None => problems.push(
                format!("http.cors_origins[{i}]"),
                format!("{o:?} is not an origin such as \"https://phone.example.com\""),
            ),
        }
    }
    let web_phone = serve.then(|| super::secret::resolve(base_dir, dir));
    if let Some(path) = &web_phone {
        if !path.join("index.html").is_file() {
            problems.push(
                "http.web_phone_dir",
                format!(
                    "{} holds no index.html (the web phone is in the repository's web/ folder)",
                    path.display()
                ),
            );
        }
    }
    (origins, web_phone)
}

/// `origins`: `"*"` alone, or each an `http(s)://host[:port]` origin.
fn origins(problems: &mut Problems, key: &str, raw: &[String]) -> OriginPolicy {
    if raw.iter().any(|o| o == "*") {
        if raw.len() > 1 {
            problems.push(
                format!("{key}.origins"),
                "\"*\" allows every origin; list it alone",
            );
        }
        return OriginPolicy::Any;
    }
    let mut list = Vec::with_capacity(raw.len());
    for (i, o) in raw.iter().enumerate() {
        match origin(o) {
            Some(o) => list.push(o),
            None => problems.push(
                format!("{key}.origins[{i}]"),
                format!("{o:?} is not an origin such as \"https://phone.example.com\" (scheme, host, optional port, no path)"),
            ),
        }
    }
    OriginPolicy::Listed(list)
}

/// An origin as browsers send it (`scheme://host[:port]`), lower-cased; `None` if it is not one.
pub(super) fn origin(text: &str) -> Option<String> {
    let t = text.trim_end_matches('/').to_ascii_lowercase();
    let rest = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))?;
    let ok = !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && rest.chars().all(|c| c.is_ascii_graphic());
    ok.then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README "Try it" runs this file: it loads, serves the web phone and a WS listener.
    #[test]
    fn the_web_phone_try_it_config_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/web-phone.toml");
        let config = crate::config::Config::load(&path).expect("config/web-phone.toml loads");
        let ws = config.ws.expect("a [[ws.listeners]] entry");
        assert_eq!(ws.listeners[0].addr.to_string(), "127.0.0.1:8081");
        assert!(config
            .http
            .web_phone
            .expect("serve_web_phone")
            .join("phone.js")
            .is_file());
    }

    #[test]
    fn origins_are_matched_exactly_and_absent_is_allowed() {
        let p = OriginPolicy::Listed(vec!["https://phone.example.com".into()]);
        assert!(p.allows(Some("https://phone.example.com")));
        assert!(p.allows(Some("HTTPS://Phone.Example.com/")));
        assert!(!p.allows(Some("https://evil.example")));
        assert!(!p.allows(Some("http://phone.example.com")));
        assert!(p.allows(None));
        assert!(OriginPolicy::Any.allows(Some("https://anything")));
        assert!(!OriginPolicy::Listed(vec![]).allows(Some("https://a.example")));
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut problems = Problems::default();
        let raw = RawWs {
            listeners: vec![
                RawWsListener {
                    addr: "nope".into(),
                    tls: true,
                    origins: vec!["phone.example.com".into()],
                },
                RawWsListener {
                    addr: "127.0.0.1:0".into(),
                    tls: false,
                    origins: vec!["*".into(), "https://a.example".into()],
                },
            ],
            max_connections: 0,
            ..RawWs::default()
        };
        let _ = ws(&mut problems, raw, false);
        let keys: Vec<String> = problems.0.iter().map(|p| p.key().to_owned()).collect();
        for k in [
            "ws.max_connections",
            "ws.listeners[0].tls",
            "ws.listeners[0].origins[0]",
            "ws.listeners[0].addr",
            "ws.listeners[1].origins",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing in {keys:?}");
        }
    }
}
