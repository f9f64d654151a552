//! The TOML file as serde sees it: one struct per table, `deny_unknown_fields` everywhere, every
//! default a named function, every numeric key's default and range one [`Setting`], and every
//! closed set of names a [`OneOf`] of its domain enum. Nothing here is checked beyond TOML
//! types; `validate` turns these structs into the domain types in `crate::config`.
//! Keep the field order in step with `config/example.toml`, which documents each key.

use serde::Deserialize;

use super::issuers::RawIssuer;
use super::network::{PathPolicy, RawListener};
use super::problems::{setting, OneOf, Setting};
use super::token_api::{RawTokenApi, Sso};
use super::Persistence;
use super::{AccountKind, ClientAuth, ClientCertPolicy, DigestAlgorithmName, LogFormat};

/// The whole file.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) sip: RawSip,
    #[serde(default)]
    pub(super) registrar: RawRegistrar,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) http: RawHttp,
    #[serde(default)]
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) domains: Vec<RawDomain>,
    #[serde(default)]
    pub(super) accounts: Vec<RawAccount>,
    #[serde(default)]
    pub(super) token_api: RawTokenApi,
    #[serde(default)]
    pub(super) issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub(super) ws: super::ws::RawWs,
    #[serde(default)]
    pub(super) redis: RawRedis,
    #[serde(default)]
    pub(super) scim: Vec<super::lifecycle::RawScim>,
    #[serde(default)]
    pub(super) audit: super::lifecycle::RawAudit,
    #[serde(default)]
    pub(super) backchannel_logout: Vec<super::lifecycle::RawBackchannelLogout>,
    #[serde(default)]
    pub(super) roles: Vec<super::lifecycle::RawRoles>,
}

/// `[redis]`: used with `registrar.persistence = "redis"`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    #[serde(default)]
    pub(super) urls: Vec<String>,
    #[serde(default)]
    pub(super) cluster: bool,
    #[serde(default)]
    pub(super) username: String,
    #[serde(default)]
    pub(super) password_file: String,
    #[serde(default)]
    pub(super) node: String,
    #[serde(default = "default_redis_connect_timeout_ms")]
    pub(super) connect_timeout_ms: u64,
    #[serde(default = "default_redis_response_timeout_ms")]
    pub(super) response_timeout_ms: u64,
    #[serde(default = "default_redis_retries")]
    pub(super) retries: u64,
    #[serde(default = "default_redis_pool_size")]
    pub(super) pool_size: u64,
    #[serde(default)]
    pub(super) peers: std::collections::BTreeMap<String, String>,
}

impl Default for RawRedis {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            cluster: false,
            username: String::new(),
            password_file: String::new(),
            node: String::new(),
            peers: Default::default(),
            connect_timeout_ms: default_redis_connect_timeout_ms(),
            response_timeout_ms: default_redis_response_timeout_ms(),
            retries: default_redis_retries(),
            pool_size: default_redis_pool_size(),
        }
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default = "default_log_format")]
    pub(super) format: OneOf<LogFormat>,
    #[serde(default = "default_log_level")]
    pub(super) level: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default = "default_server_header")]
    pub(super) server_header: String,
    #[serde(default = "default_drain_grace_secs")]
    pub(super) drain_grace_secs: u64,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSip {
    #[serde(default = "default_sip_listeners")]
    pub(super) udp: Vec<RawListener>,
    #[serde(default = "default_sip_listeners")]
    pub(super) tcp: Vec<RawListener>,
    /// Other names that mean us (`host` or `host:port`).
    #[serde(default)]
    pub(super) aliases: Vec<String>,
    #[serde(default = "default_udp_workers")]
    pub(super) udp_workers: u64,
    #[serde(default = "default_udp_recv_buffer_bytes")]
    pub(super) udp_recv_buffer_bytes: u64,
    #[serde(default = "default_max_message_bytes")]
    pub(super) max_message_bytes: u64,
    #[serde(default = "default_max_header_bytes")]
    pub(super) max_header_bytes: u64,
    #[serde(default = "default_max_headers")]
    pub(super) max_headers: u64,
    #[serde(default = "default_tcp_max_connections")]
    pub(super) tcp_max_connections: u64,
    #[serde(default = "default_tcp_idle_timeout_secs")]
    pub(super) tcp_idle_timeout_secs: u64,
    #[serde(default = "default_tcp_header_timeout_secs")]
    pub(super) tcp_header_timeout_secs: u64,
    #[serde(default = "default_t1_ms")]
    pub(super) t1_ms: u64,
    #[serde(default = "default_max_transactions")]
    pub(super) max_transactions: u64,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistrar {
    #[serde(default = "default_min_expires")]
    pub(super) min_expires: u64,
    #[serde(default = "default_max_expires")]
    pub(super) max_expires: u64,
    #[serde(default = "default_default_expires")]
    pub(super) default_expires: u64,
    #[serde(default = "default_max_bindings_per_aor")]
    pub(super) max_bindings_per_aor: u64,
    #[serde(default = "default_max_aors")]
    pub(super) max_aors: u64,
    #[serde(default = "default_expiry_jitter_percent")]
    pub(super) expiry_jitter_percent: u64,
    #[serde(default = "default_remove_bindings_on_close")]
    pub(super) remove_bindings_on_close: bool,
    #[serde(default = "default_purge_interval_secs")]
    pub(super) purge_interval_secs: u64,
    #[serde(default = "default_path_policy")]
    pub(super) path: OneOf<PathPolicy>,
    #[serde(default = "default_persistence")]
    pub(super) persistence: OneOf<Persistence>,
    #[serde(default = "default_store_path")]
    pub(super) store_path: String,
    #[serde(default = "default_store_queue")]
    pub(super) store_queue: u64,
    #[serde(default = "default_store_commit_interval_ms")]
    pub(super) store_commit_interval_ms: u64,
}

fn default_persistence() -> OneOf<Persistence> {
    OneOf::known(Persistence::Sqlite)
}

fn default_store_path() -> String {
    "location.db".to_owned()
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(default = "default_nonce_lifetime_secs")]
    pub(super) nonce_lifetime_secs: u64,
    #[serde(default = "default_nonce_max_drift_secs")]
    pub(super) nonce_max_drift_secs: u64,
    #[serde(default)]
    pub(super) nonce_secret_file: String,
    #[serde(default = "default_bind_nonce_to_source")]
    pub(super) bind_nonce_to_source: bool,
    #[serde(default = "default_replay_table_size")]
    pub(super) replay_table_size: u64,
    #[serde(default = "default_max_failures_per_source")]
    pub(super) max_failures_per_source: u64,
    #[serde(default = "default_max_failures_per_user")]
    pub(super) max_failures_per_user: u64,
    #[serde(default = "default_failure_window_secs")]
    pub(super) failure_window_secs: u64,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    #[serde(default = "default_http_listen")]
    pub(super) listen: String,
    #[serde(default)]
    pub(super) admin_token_file: String,
    #[serde(default)]
    pub(super) admin_token_sha256: String,
    /// Browser origins allowed to call the token API's sign-in routes (CORS).
    #[serde(default)]
    pub(super) cors_origins: Vec<String>,
    #[serde(default)]
    pub(super) serve_web_phone: bool,
    #[serde(default = "default_web_phone_dir")]
    pub(super) web_phone_dir: String,
}

fn default_web_phone_dir() -> String {
    "web".to_owned()
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    #[serde(default)]
    pub(super) listeners: Vec<RawTlsListener>,
    #[serde(default)]
    pub(super) cert_file: String,
    #[serde(default)]
    pub(super) key_file: String,
    #[serde(default)]
    pub(super) client_ca_file: String,
    #[serde(default)]
    pub(super) crl_files: Vec<String>,
    #[serde(default)]
    pub(super) certificates: Vec<RawSniCertificate>,
    #[serde(default = "default_tls_handshake_timeout_secs")]
    pub(super) handshake_timeout_secs: u64,
    #[serde(default = "default_tls_max_handshakes")]
    pub(super) max_handshakes: u64,
    #[serde(default = "default_tls_max_connections")]
    pub(super) max_connections: u64,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsListener {
    pub(super) addr: String,
    #[serde(default = "default_client_auth")]
    pub(super) client_auth: OneOf<ClientAuth>,
    /// "" = none.
    #[serde(default)]
    pub(super) advertise: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSniCertificate {
    pub(super) domain: String,
    pub(super) cert_file: String,
    pub(super) key_file: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomain {
    pub(super) name: String,
    #[serde(default = "default_domain_algorithms")]
    pub(super) algorithms: Vec<OneOf<DigestAlgorithmName>>,
    #[serde(default = "default_sso")]
    pub(super) sso: OneOf<Sso>,
    /// Names of `[[issuers]]` this domain trusts.
    #[serde(default)]
    pub(super) issuers: Vec<String>,
    /// The SIP URI handed to devices by the token API; "" = `sip:<name>`.
    #[serde(default)]
    pub(super) registrar: String,
    #[serde(default = "default_client_cert")]
    pub(super) client_cert: OneOf<ClientCertPolicy>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) username: String,
    pub(super) domain: String,
    pub(super) kind: OneOf<AccountKind>,
    #[serde(default)]
    pub(super) password_file: String,
    #[serde(default)]
    pub(super) ha1_md5: String,
    #[serde(default)]
    pub(super) ha1_sha256: String,
    #[serde(default)]
    pub(super) ha1_sha512_256: String,
    /// Empty means "the domain's list".
    #[serde(default)]
    pub(super) algorithms: Vec<OneOf<DigestAlgorithmName>>,
}

// Defaults. `Default` for each table is built from the same functions, so a missing table and a
// table with every key missing mean the same thing.

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            server_header: default_server_header(),
            drain_grace_secs: default_drain_grace_secs(),
        }
    }
}

impl Default for RawSip {
    fn default() -> Self {
        Self {
            udp: default_sip_listeners(),
            tcp: default_sip_listeners(),
            aliases: Vec::new(),
            udp_workers: default_udp_workers(),
            udp_recv_buffer_bytes: default_udp_recv_buffer_bytes(),
            max_message_bytes: default_max_message_bytes(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            tcp_max_connections: default_tcp_max_connections(),
            tcp_idle_timeout_secs: default_tcp_idle_timeout_secs(),
            tcp_header_timeout_secs: default_tcp_header_timeout_secs(),
            t1_ms: default_t1_ms(),
            max_transactions: default_max_transactions(),
        }
    }
}

impl Default for RawRegistrar {
    fn default() -> Self {
        Self {
            min_expires: default_min_expires(),
            max_expires: default_max_expires(),
            default_expires: default_default_expires(),
            max_bindings_per_aor: default_max_bindings_per_aor(),
            max_aors: default_max_aors(),
            expiry_jitter_percent: default_expiry_jitter_percent(),
            remove_bindings_on_close: default_remove_bindings_on_close(),
            purge_interval_secs: default_purge_interval_secs(),
            path: default_path_policy(),
            persistence: default_persistence(),
            store_path: default_store_path(),
            store_queue: default_store_queue(),
            store_commit_interval_ms: default_store_commit_interval_ms(),
        }
    }
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            nonce_lifetime_secs: default_nonce_lifetime_secs(),
            nonce_max_drift_secs: default_nonce_max_drift_secs(),
            nonce_secret_file: String::new(),
            bind_nonce_to_source: default_bind_nonce_to_source(),
            replay_table_size: default_replay_table_size(),
            max_failures_per_source: default_max_failures_per_source(),
            max_failures_per_user: default_max_failures_per_user(),
            failure_window_secs: default_failure_window_secs(),
        }
    }
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            admin_token_file: String::new(),
            admin_token_sha256: String::new(),
            cors_origins: Vec::new(),
            serve_web_phone: false,
            web_phone_dir: default_web_phone_dir(),
        }
    }
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            listeners: Vec::new(),
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            crl_files: Vec::new(),
            certificates: Vec::new(),
            handshake_timeout_secs: default_tls_handshake_timeout_secs(),
            max_handshakes: default_tls_max_handshakes(),
            max_connections: default_tls_max_connections(),
        }
    }
}

fn default_log_format() -> OneOf<LogFormat> {
    OneOf::known(LogFormat::Text)
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_server_header() -> String {
    "sipward".to_owned()
}
fn default_sip_listeners() -> Vec<RawListener> {
    vec![RawListener::at("127.0.0.1:5060")]
}
fn default_path_policy() -> OneOf<PathPolicy> {
    OneOf::known(PathPolicy::Store)
}
fn default_remove_bindings_on_close() -> bool {
    true
}
fn default_bind_nonce_to_source() -> bool {
    false
}
fn default_http_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_client_auth() -> OneOf<ClientAuth> {
    OneOf::known(ClientAuth::Off)
}
fn default_client_cert() -> OneOf<ClientCertPolicy> {
    OneOf::known(ClientCertPolicy::Sufficient)
}
fn default_sso() -> OneOf<Sso> {
    OneOf::known(Sso::Off)
}
fn default_domain_algorithms() -> Vec<OneOf<DigestAlgorithmName>> {
    vec![
        OneOf::known(DigestAlgorithmName::Sha256),
        OneOf::known(DigestAlgorithmName::Md5),
    ]
}

// Numeric keys: default and inclusive range, once each. `config/example.toml` states both
// next to its key.

setting!(
    DRAIN_GRACE_SECS,
    default_drain_grace_secs,
    Setting::new(5, 0, 600)
);
setting!(
    /// 0 means one receive thread per core.
    UDP_WORKERS,
    default_udp_workers,
    Setting::new(0, 0, 1024)
);
setting!(
    UDP_RECV_BUFFER_BYTES,
    default_udp_recv_buffer_bytes,
    Setting::new(4 * 1024 * 1024, 65_536, 268_435_456)
);
setting!(
    /// RFC 3261 §18.1.1: an element must accept at least 1300 bytes over UDP.
    MAX_MESSAGE_BYTES,
    default_max_message_bytes,
    Setting::new(65_535, 1300, 1_048_576)
);
setting!(
    MAX_HEADER_BYTES,
    default_max_header_bytes,
    Setting::new(16 * 1024, 1024, 1_048_576)
);
setting!(
    MAX_HEADERS,
    default_max_headers,
    Setting::new(128, 16, 1024)
);
setting!(
    TCP_MAX_CONNECTIONS,
    default_tcp_max_connections,
    Setting::new(10_000, 1, 1_000_000)
);
setting!(
    TCP_IDLE_TIMEOUT_SECS,
    default_tcp_idle_timeout_secs,
    Setting::new(600, 10, 86_400)
);
setting!(
    TCP_HEADER_TIMEOUT_SECS,
    default_tcp_header_timeout_secs,
    Setting::new(10, 1, 300)
);
setting!(T1_MS, default_t1_ms, Setting::new(500, 50, 5000));
setting!(
    MAX_TRANSACTIONS,
    default_max_transactions,
    Setting::new(
        crate::transaction::DEFAULT_MAX_TRANSACTIONS as u64,
        1000,
        100_000_000
    )
);
/// One week; 0 is not an expiry (a zero Expires removes a binding).
const EXPIRES_SECS: Setting = Setting::new(3600, 1, 604_800);
setting!(
    MIN_EXPIRES,
    default_min_expires,
    EXPIRES_SECS.with_default(60)
);
setting!(MAX_EXPIRES, default_max_expires, EXPIRES_SECS);
setting!(DEFAULT_EXPIRES, default_default_expires, EXPIRES_SECS);
setting!(
    MAX_BINDINGS_PER_AOR,
    default_max_bindings_per_aor,
    Setting::new(10, 1, 1000)
);
setting!(
    MAX_AORS,
    default_max_aors,
    Setting::new(1_000_000, 1, 100_000_000)
);
setting!(
    EXPIRY_JITTER_PERCENT,
    default_expiry_jitter_percent,
    Setting::new(0, 0, 50)
);
setting!(
    PURGE_INTERVAL_SECS,
    default_purge_interval_secs,
    Setting::new(1, 1, 60)
);
setting!(
    STORE_QUEUE,
    default_store_queue,
    Setting::new(10_000, 1, 1_000_000)
);
setting!(
    STORE_COMMIT_INTERVAL_MS,
    default_store_commit_interval_ms,
    Setting::new(10, 0, 200)
);
setting!(
    REDIS_CONNECT_TIMEOUT_MS,
    default_redis_connect_timeout_ms,
    Setting::new(1000, 10, 60_000)
);
setting!(
    REDIS_RESPONSE_TIMEOUT_MS,
    default_redis_response_timeout_ms,
    Setting::new(1000, 10, 60_000)
);
setting!(REDIS_RETRIES, default_redis_retries, Setting::new(3, 0, 20));
setting!(
    REDIS_POOL_SIZE,
    default_redis_pool_size,
    Setting::new(4, 1, 256)
);
setting!(
    NONCE_LIFETIME_SECS,
    default_nonce_lifetime_secs,
    Setting::new(300, 10, 3600)
);
setting!(
    NONCE_MAX_DRIFT_SECS,
    default_nonce_max_drift_secs,
    Setting::new(3, 0, 60)
);
setting!(
    REPLAY_TABLE_SIZE,
    default_replay_table_size,
    Setting::new(
        crate::auth::DEFAULT_REPLAY_CAPACITY as u64,
        1024,
        100_000_000
    )
);
setting!(
    MAX_FAILURES_PER_SOURCE,
    default_max_failures_per_source,
    Setting::new(20, 1, 1_000_000)
);
setting!(
    MAX_FAILURES_PER_USER,
    default_max_failures_per_user,
    Setting::new(10, 1, 1_000_000)
);
setting!(
    FAILURE_WINDOW_SECS,
    default_failure_window_secs,
    Setting::new(60, 1, 86_400)
);
setting!(
    TLS_HANDSHAKE_TIMEOUT_SECS,
    default_tls_handshake_timeout_secs,
    Setting::new(10, 1, 120)
);
setting!(
    TLS_MAX_HANDSHAKES,
    default_tls_max_handshakes,
    Setting::new(256, 1, 100_000)
);
setting!(
    TLS_MAX_CONNECTIONS,
    default_tls_max_connections,
    TCP_MAX_CONNECTIONS
);
