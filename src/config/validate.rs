//! From `raw` to the domain types: every range, every cross-check, every secret file read. Each
//! check records its problem and carries on, so one run reports everything wrong with a file.
//! Messages name the key and may quote non-secret values (addresses, names); they never quote a
//! password, an HA1, a token or the content of any secret file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use super::problems::Problems;
use super::raw::{self, RawConfig};
use super::secret::{self, AdminToken, Secret};
use super::{domains, issuers, network, token_api};
use super::{
    AuthConfig, ClientAuth, Config, ConfigErrors, Domain, HttpConfig, LogConfig, LogFormat,
    PathPolicy, Persistence, RegistrarConfig, ServerConfig, SipConfig, SniCertificate, TlsConfig,
    TlsListener,
};
use crate::sip::Transport;

/// The nonce key must hold at least this many bytes (256 bits).
const MIN_NONCE_SECRET_BYTES: usize = 32;
/// An admin token read from a file must be at least this long.
const MIN_ADMIN_TOKEN_BYTES: usize = 16;
const MAX_SERVER_HEADER_BYTES: usize = 256;

pub(super) fn config(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut problems = Problems::default();
    let secret_files = secret_files(&raw, base_dir);
    let log = log(&mut problems, raw.log);
    let server = server(&mut problems, raw.server);
    let sip = sip(&mut problems, raw.sip);
    let registrar = registrar(&mut problems, raw.registrar, base_dir);
    let auth = auth(&mut problems, raw.auth, base_dir);
    let http = http(&mut problems, raw.http, base_dir);
    let domains = domains::domains(&mut problems, raw.domains);
    let mut sip = sip;
    let tls = tls(
        &mut problems,
        raw.tls,
        &domains,
        base_dir,
        &mut sip.advertise,
    );
    let ws = super::ws::ws(&mut problems, raw.ws, tls.is_some());
    if sip.udp.is_empty() && sip.tcp.is_empty() && tls.is_none() && ws.is_none() {
        problems.push(
            "sip",
            "at least one listener is required in sip.udp, sip.tcp, tls.listeners or ws.listeners",
        );
    }
    let accounts = domains::accounts(&mut problems, raw.accounts, &domains, base_dir);
    let token_api = token_api::token_api(&mut problems, raw.token_api, base_dir);
    let redis = (registrar.persistence == super::Persistence::Redis)
        .then(|| super::redis::validate(&mut problems, raw.redis, base_dir));
    let issuers = issuers(&mut problems, raw.issuers, &domains, base_dir);
    if !issuers.is_empty() {
        for (index, account) in accounts.iter().enumerate() {
            if account.username.starts_with("d-") {
                problems.push(
                    format!("accounts[{index}].username"),
                    "names starting with \"d-\" are reserved for token API devices",
                );
            }
        }
    }
    if !problems.0.is_empty() {
        return Err(ConfigErrors::from_problems(problems.0));
    }
    Ok(Config {
        log,
        server,
        sip,
        registrar,
        auth,
        http,
        tls,
        domains,
        accounts,
        token_api,
        issuers,
        ws,
        secret_files,
        redis,
    })
}

/// Every secret file the TOML names (resolved; empty values skipped), for the start-up
/// permission warning: key files, password files, the nonce key, the admin token, the
/// credential keys.
fn secret_files(raw: &RawConfig, base_dir: &Path) -> Vec<std::path::PathBuf> {
    let named = [
        raw.auth.nonce_secret_file.as_str(),
        raw.http.admin_token_file.as_str(),
        raw.token_api.credential_keys_file.as_str(),
        raw.tls.key_file.as_str(),
        raw.redis.password_file.as_str(),
    ];
    named
        .into_iter()
        .chain(raw.tls.certificates.iter().map(|c| c.key_file.as_str()))
        .chain(raw.accounts.iter().map(|a| a.password_file.as_str()))
        .chain(
            raw.issuers
                .iter()
                .map(|i| i.introspection_secret_file.as_str()),
        )
        .filter(|f| !f.is_empty())
        .map(|f| secret::resolve(base_dir, f))
        .collect()
}

/// `[[issuers]]` plus the cross-checks with `domains[].issuers` and `domains[].sso`.
fn issuers(
    problems: &mut Problems,
    raw: Vec<issuers::RawIssuer>,
    domains: &[Domain],
    base_dir: &Path,
) -> Vec<issuers::Issuer> {
    let names: Vec<&str> = raw.iter().map(|i| i.name.as_str()).collect();
    let mut trusted_by: HashMap<String, Vec<String>> = HashMap::new();
    for (index, domain) in domains.iter().enumerate() {
        for (n, name) in domain.issuers.iter().enumerate() {
            if !names.contains(&name.as_str()) {
                problems.push(
                    format!("domains[{index}].issuers[{n}]"),
                    format!("{name:?} is not the name of an [[issuers]] entry"),
                );
            }
            trusted_by
                .entry(name.clone())
                .or_default()
                .push(domain.name.clone());
        }
        match (domain.sso, domain.issuers.is_empty()) {
            (token_api::Sso::Off, false) => problems.push(
                format!("domains[{index}].sso"),
                "is \"off\" but issuers are listed; set \"enable\" or \"enforce\", or list none",
            ),
            (token_api::Sso::Enable | token_api::Sso::Enforce, true) => problems.push(
                format!("domains[{index}].issuers"),
                format!("sso = {:?} needs at least one issuer", domain.sso.as_str()),
            ),
            _ => {}
        }
    }
    issuers::issuers(problems, raw, &trusted_by, base_dir)
}

fn log(problems: &mut Problems, raw: raw::RawLog) -> LogConfig {
    let format = problems.one_of("log.format", &raw.format, LogFormat::Text);
    if raw.level.trim().is_empty() {
        problems.push(
            "log.level",
            "must not be empty (use a tracing filter such as \"info\")",
        );
    }
    LogConfig {
        format,
        level: raw.level,
    }
}

fn server(problems: &mut Problems, raw: raw::RawServer) -> ServerConfig {
    let header = raw.server_header;
    if header.chars().any(char::is_control) {
        problems.push(
            "server.server_header",
            "must not contain control characters",
        );
    } else if header.len() > MAX_SERVER_HEADER_BYTES {
        problems.push(
            "server.server_header",
            format!("must not be longer than {MAX_SERVER_HEADER_BYTES} bytes"),
        );
    }
    ServerConfig {
        server_header: (!header.is_empty()).then_some(header),
        drain_grace: problems.range_secs(
            "server.drain_grace_secs",
            raw.drain_grace_secs,
            raw::DRAIN_GRACE_SECS,
        ),
    }
}

fn sip(problems: &mut Problems, raw: raw::RawSip) -> SipConfig {
    let mut advertise = Vec::new();
    let udp = network::listeners(
        problems,
        "sip.udp",
        Transport::Udp,
        &raw.udp,
        &mut advertise,
    );
    let tcp = network::listeners(
        problems,
        "sip.tcp",
        Transport::Tcp,
        &raw.tcp,
        &mut advertise,
    );
    let aliases = network::aliases(problems, &raw.aliases);
    let udp_workers = problems.range_usize("sip.udp_workers", raw.udp_workers, raw::UDP_WORKERS);
    let max_message_bytes = problems.range_usize(
        "sip.max_message_bytes",
        raw.max_message_bytes,
        raw::MAX_MESSAGE_BYTES,
    );
    let max_header_bytes = problems.range_usize(
        "sip.max_header_bytes",
        raw.max_header_bytes,
        raw::MAX_HEADER_BYTES,
    );
    if raw.max_header_bytes > raw.max_message_bytes {
        problems.push(
            "sip.max_header_bytes",
            format!(
                "must not exceed sip.max_message_bytes ({} > {})",
                raw.max_header_bytes, raw.max_message_bytes
            ),
        );
    }
    let tcp_idle_timeout = problems.range_secs(
        "sip.tcp_idle_timeout_secs",
        raw.tcp_idle_timeout_secs,
        raw::TCP_IDLE_TIMEOUT_SECS,
    );
    let tcp_header_timeout = problems.range_secs(
        "sip.tcp_header_timeout_secs",
        raw.tcp_header_timeout_secs,
        raw::TCP_HEADER_TIMEOUT_SECS,
    );
    if raw.tcp_header_timeout_secs > raw.tcp_idle_timeout_secs {
        problems.push(
            "sip.tcp_header_timeout_secs",
            format!(
                "must not exceed sip.tcp_idle_timeout_secs ({} > {})",
                raw.tcp_header_timeout_secs, raw.tcp_idle_timeout_secs
            ),
        );
    }
    SipConfig {
        udp,
        tcp,
        udp_workers: NonZeroUsize::new(udp_workers),
        udp_recv_buffer_bytes: problems.range_usize(
            "sip.udp_recv_buffer_bytes",
            raw.udp_recv_buffer_bytes,
            raw::UDP_RECV_BUFFER_BYTES,
        ),
        max_message_bytes,
        max_header_bytes,
        max_headers: problems.range_usize("sip.max_headers", raw.max_headers, raw::MAX_HEADERS),
        tcp_max_connections: problems.range_usize(
            "sip.tcp_max_connections",
            raw.tcp_max_connections,
            raw::TCP_MAX_CONNECTIONS,
        ),
        tcp_idle_timeout,
        tcp_header_timeout,
        t1: Duration::from_millis(problems.range("sip.t1_ms", raw.t1_ms, raw::T1_MS)),
        max_transactions: problems.range_usize(
            "sip.max_transactions",
            raw.max_transactions,
            raw::MAX_TRANSACTIONS,
        ),
        advertise,
        aliases,
    }
}

fn registrar(problems: &mut Problems, raw: raw::RawRegistrar, base_dir: &Path) -> RegistrarConfig {
    let min = problems.range("registrar.min_expires", raw.min_expires, raw::MIN_EXPIRES);
    let max = problems.range("registrar.max_expires", raw.max_expires, raw::MAX_EXPIRES);
    let default = problems.range(
        "registrar.default_expires",
        raw.default_expires,
        raw::DEFAULT_EXPIRES,
    );
    if min > max {
        problems.push(
            "registrar.min_expires",
            format!("must not exceed registrar.max_expires ({min} > {max})"),
        );
    } else if !(min..=max).contains(&default) {
        problems.push(
            "registrar.default_expires",
            format!(
                "must lie between registrar.min_expires and registrar.max_expires \
                 ({min}..={max}, got {default})"
            ),
        );
    }
    let jitter = problems.range(
        "registrar.expiry_jitter_percent",
        raw.expiry_jitter_percent,
        raw::EXPIRY_JITTER_PERCENT,
    );
    RegistrarConfig {
        min_expires: Duration::from_secs(min),
        max_expires: Duration::from_secs(max),
        default_expires: Duration::from_secs(default),
        max_bindings_per_aor: problems.range_usize(
            "registrar.max_bindings_per_aor",
            raw.max_bindings_per_aor,
            raw::MAX_BINDINGS_PER_AOR,
        ),
        max_aors: problems.range_usize("registrar.max_aors", raw.max_aors, raw::MAX_AORS),
        expiry_jitter_percent: u8::try_from(jitter).unwrap_or(u8::MAX),
        remove_bindings_on_close: raw.remove_bindings_on_close,
        purge_interval: problems.range_secs(
            "registrar.purge_interval_secs",
            raw.purge_interval_secs,
            raw::PURGE_INTERVAL_SECS,
        ),
        path: problems.one_of("registrar.path", &raw.path, PathPolicy::Store),
        persistence: problems.one_of("registrar.persistence", &raw.persistence, Persistence::None),
        store_path: {
            if raw.store_path.is_empty() {
                problems.push("registrar.store_path", "must not be empty (a file path)");
            }
            secret::resolve(base_dir, &raw.store_path)
        },
        store_queue: problems.range_usize(
            "registrar.store_queue",
            raw.store_queue,
            raw::STORE_QUEUE,
        ),
        store_commit_interval: Duration::from_millis(problems.range(
            "registrar.store_commit_interval_ms",
            raw.store_commit_interval_ms,
            raw::STORE_COMMIT_INTERVAL_MS,
        )),
    }
}

fn auth(problems: &mut Problems, raw: raw::RawAuth, base_dir: &Path) -> AuthConfig {
    let lifetime = problems.range(
        "auth.nonce_lifetime_secs",
        raw.nonce_lifetime_secs,
        raw::NONCE_LIFETIME_SECS,
    );
    let drift = problems.range(
        "auth.nonce_max_drift_secs",
        raw.nonce_max_drift_secs,
        raw::NONCE_MAX_DRIFT_SECS,
    );
    if drift >= lifetime {
        problems.push(
            "auth.nonce_max_drift_secs",
            format!("must be less than auth.nonce_lifetime_secs ({drift} >= {lifetime})"),
        );
    }
    let nonce_secret = if raw.nonce_secret_file.is_empty() {
        None
    } else {
        let path = secret::resolve(base_dir, &raw.nonce_secret_file);
        match secret::read_file(&path).and_then(|bytes| nonce_secret(&path, bytes)) {
            Ok(secret) => Some(secret),
            Err(message) => {
                problems.push("auth.nonce_secret_file", message);
                None
            }
        }
    };
    let max_failures = |problems: &mut Problems, key: &str, value: u64, setting| {
        u32::try_from(problems.range(key, value, setting)).unwrap_or(u32::MAX)
    };
    AuthConfig {
        nonce_lifetime: Duration::from_secs(lifetime),
        nonce_max_drift: Duration::from_secs(drift),
        nonce_secret,
        bind_nonce_to_source: raw.bind_nonce_to_source,
        replay_table_size: problems.range_usize(
            "auth.replay_table_size",
            raw.replay_table_size,
            raw::REPLAY_TABLE_SIZE,
        ),
        max_failures_per_source: max_failures(
            problems,
            "auth.max_failures_per_source",
            raw.max_failures_per_source,
            raw::MAX_FAILURES_PER_SOURCE,
        ),
        max_failures_per_user: max_failures(
            problems,
            "auth.max_failures_per_user",
            raw.max_failures_per_user,
            raw::MAX_FAILURES_PER_USER,
        ),
        failure_window: problems.range_secs(
            "auth.failure_window_secs",
            raw.failure_window_secs,
            raw::FAILURE_WINDOW_SECS,
        ),
    }
}

/// A nonce key file holds hex (an even number of hex digits, surrounding whitespace ignored) or
/// raw bytes (used exactly as stored). Either way it must yield at least 32 bytes.
fn nonce_secret(path: &Path, bytes: Vec<u8>) -> Result<Secret, String> {
    let trimmed = bytes.trim_ascii();
    let looks_hex =
        !trimmed.is_empty() && trimmed.len() % 2 == 0 && trimmed.iter().all(u8::is_ascii_hexdigit);
    let (secret, form) = if looks_hex {
        let decoded = hex::decode(trimmed).map_err(|_| format!("{path:?} holds malformed hex"))?;
        (decoded, "hex-encoded ")
    } else {
        (bytes, "")
    };
    if secret.len() < MIN_NONCE_SECRET_BYTES {
        return Err(format!(
            "{path:?} holds {} bytes of {form}secret; at least {MIN_NONCE_SECRET_BYTES} are required",
            secret.len()
        ));
    }
    Ok(Secret::new(secret))
}

fn http(problems: &mut Problems, raw: raw::RawHttp, base_dir: &Path) -> HttpConfig {
    let listen = if raw.listen.is_empty() {
        None
    } else {
        match raw.listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let message = format!("{:?} is not an address:port", raw.listen);
                problems.push("http.listen", message);
                None
            }
        }
    };
    let admin_token = match (
        raw.admin_token_file.is_empty(),
        raw.admin_token_sha256.is_empty(),
    ) {
        (true, true) => None,
        (false, false) => {
            problems.push(
                "http",
                "give either admin_token_file or admin_token_sha256, not both",
            );
            None
        }
        (false, true) => {
            let path = secret::resolve(base_dir, &raw.admin_token_file);
            let token = secret::read_file(&path).map(secret::strip_line_endings);
            match token {
                Ok(token) if token.len() < MIN_ADMIN_TOKEN_BYTES => {
                    problems.push(
                        "http.admin_token_file",
                        format!(
                            "{path:?} holds a token shorter than {MIN_ADMIN_TOKEN_BYTES} bytes"
                        ),
                    );
                    None
                }
                Ok(token) => Some(AdminToken::from_token(&token)),
                Err(message) => {
                    problems.push("http.admin_token_file", message);
                    None
                }
            }
        }
        (true, false) => match hex_digest::<32>(&raw.admin_token_sha256) {
            Some(hash) => Some(AdminToken::Sha256(hash)),
            None => {
                problems.push(
                    "http.admin_token_sha256",
                    "must be 64 hex digits (the SHA-256 of the token)",
                );
                None
            }
        },
    };
    let (cors_origins, web_phone) = super::ws::web(
        problems,
        &raw.cors_origins,
        raw.serve_web_phone,
        &raw.web_phone_dir,
        base_dir,
    );
    HttpConfig {
        listen,
        admin_token,
        cors_origins,
        web_phone,
    }
}

fn tls(
    problems: &mut Problems,
    raw: raw::RawTls,
    domains: &[Domain],
    base_dir: &Path,
    advertised: &mut Vec<network::Advertise>,
) -> Option<TlsConfig> {
    let handshake_timeout = problems.range_secs(
        "tls.handshake_timeout_secs",
        raw.handshake_timeout_secs,
        raw::TLS_HANDSHAKE_TIMEOUT_SECS,
    );
    let max_handshakes = problems.range_usize(
        "tls.max_handshakes",
        raw.max_handshakes,
        raw::TLS_MAX_HANDSHAKES,
    );
    let max_connections = problems.range_usize(
        "tls.max_connections",
        raw.max_connections,
        raw::TLS_MAX_CONNECTIONS,
    );
    let mut listeners: Vec<TlsListener> = Vec::with_capacity(raw.listeners.len());
    for (index, listener) in raw.listeners.iter().enumerate() {
        let key = format!("tls.listeners[{index}]");
        let client_auth = problems.one_of(
            format!("{key}.client_auth"),
            &listener.client_auth,
            ClientAuth::Off,
        );
        match listener.addr.parse::<SocketAddr>() {
            Ok(addr) if listeners.iter().any(|l| l.addr == addr) => {
                problems.push(
                    format!("{key}.addr"),
                    format!("{:?} is listed twice", listener.addr),
                );
            }
            Ok(addr) => {
                listeners.push(TlsListener { addr, client_auth });
                let key = format!("{key}.advertise");
                if let Some(name) = network::advertise(problems, &key, &listener.advertise) {
                    advertised.push(network::Advertise {
                        transport: Transport::Tls,
                        addr,
                        name,
                    });
                }
            }
            Err(_) => problems.push(
                format!("{key}.addr"),
                format!("{:?} is not an address:port", listener.addr),
            ),
        }
    }
    let file = |problems: &mut Problems, key: &str, value: &str, required: bool| {
        if value.is_empty() {
            if required {
                problems.push(key, "is required when tls.listeners is not empty");
            }
            return None;
        }
        Some(secret::resolve(base_dir, value))
    };
    let enabled = !raw.listeners.is_empty();
    let cert_file = file(problems, "tls.cert_file", &raw.cert_file, enabled);
    let key_file = file(problems, "tls.key_file", &raw.key_file, enabled);
    let wants_client_certs = listeners.iter().any(|l| l.client_auth != ClientAuth::Off);
    let client_ca_file = file(problems, "tls.client_ca_file", &raw.client_ca_file, false);
    if wants_client_certs && client_ca_file.is_none() {
        problems.push(
            "tls.client_ca_file",
            "is required when a listener has client_auth \"optional\" or \"required\"",
        );
    }
    let crl_files = raw
        .crl_files
        .iter()
        .map(|f| secret::resolve(base_dir, f))
        .collect();
    if !raw.crl_files.is_empty() && client_ca_file.is_none() {
        problems.push("tls.crl_files", "CRLs need tls.client_ca_file");
    }
    let mut certificates: Vec<SniCertificate> = Vec::with_capacity(raw.certificates.len());
    for (index, sni) in raw.certificates.iter().enumerate() {
        let key = format!("tls.certificates[{index}]");
        let domain = sni.domain.to_ascii_lowercase();
        if !domains.iter().any(|d| d.name == domain) {
            problems.push(
                format!("{key}.domain"),
                format!("{:?} is not a configured domain", sni.domain),
            );
        } else if certificates.iter().any(|c| c.domain == domain) {
            problems.push(
                format!("{key}.domain"),
                format!("{domain:?} already has a certificate"),
            );
            continue;
        }
        let cert = file(problems, &format!("{key}.cert_file"), &sni.cert_file, true);
        let key_path = file(problems, &format!("{key}.key_file"), &sni.key_file, true);
        if let (Some(cert_file), Some(key_file)) = (cert, key_path) {
            certificates.push(SniCertificate {
                domain,
                cert_file,
                key_file,
            });
        }
    }
    if !enabled {
        return None;
    }
    Some(TlsConfig {
        listeners,
        cert_file: cert_file?,
        key_file: key_file?,
        client_ca_file,
        crl_files,
        certificates,
        handshake_timeout,
        max_handshakes,
        max_connections,
    })
}

fn hex_digest<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}
