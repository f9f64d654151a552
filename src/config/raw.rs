//! The TOML file as serde sees it: one struct per table, `deny_unknown_fields` everywhere, every
//! default a named function and every numeric range a named constant. Nothing here is checked
//! beyond TOML types; `validate` turns these structs into the domain types in `crate::config`.
//! Keep the field order in step with `config/example.toml`, which documents each key.

use std::ops::RangeInclusive;

use serde::Deserialize;

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
    pub(super) token_api: super::token_api::RawTokenApi,
    #[serde(default)]
    pub(super) issuers: Vec<super::token_api::RawIssuer>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default = "default_log_format")]
    pub(super) format: String,
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
    pub(super) udp: Vec<String>,
    #[serde(default = "default_sip_listeners")]
    pub(super) tcp: Vec<String>,
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
    pub(super) client_auth: String,
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
    pub(super) algorithms: Vec<String>,
    /// `off`, `enable` or `enforce` (see `token_api::Sso`).
    #[serde(default = "super::token_api::default_sso")]
    pub(super) sso: String,
    /// Names of `[[issuers]]` this domain trusts.
    #[serde(default)]
    pub(super) issuers: Vec<String>,
    /// The SIP URI handed to devices by the token API; "" = `sip:<name>`.
    #[serde(default)]
    pub(super) registrar: String,
    #[serde(default = "default_client_cert")]
    pub(super) client_cert: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) username: String,
    pub(super) domain: String,
    pub(super) kind: String,
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
    pub(super) algorithms: Vec<String>,
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

fn default_log_format() -> String {
    "text".to_owned()
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_server_header() -> String {
    "sipward".to_owned()
}
fn default_drain_grace_secs() -> u64 {
    5
}
fn default_sip_listeners() -> Vec<String> {
    vec!["127.0.0.1:5060".to_owned()]
}
fn default_udp_workers() -> u64 {
    0
}
fn default_udp_recv_buffer_bytes() -> u64 {
    4 * 1024 * 1024
}
fn default_max_message_bytes() -> u64 {
    65_535
}
fn default_max_header_bytes() -> u64 {
    16 * 1024
}
fn default_max_headers() -> u64 {
    128
}
fn default_tcp_max_connections() -> u64 {
    10_000
}
fn default_tcp_idle_timeout_secs() -> u64 {
    600
}
fn default_tcp_header_timeout_secs() -> u64 {
    10
}
fn default_t1_ms() -> u64 {
    500
}
fn default_max_transactions() -> u64 {
    crate::transaction::DEFAULT_MAX_TRANSACTIONS as u64
}
fn default_min_expires() -> u64 {
    60
}
fn default_max_expires() -> u64 {
    3600
}
fn default_default_expires() -> u64 {
    3600
}
fn default_max_bindings_per_aor() -> u64 {
    10
}
fn default_max_aors() -> u64 {
    1_000_000
}
fn default_expiry_jitter_percent() -> u64 {
    0
}
fn default_remove_bindings_on_close() -> bool {
    true
}
fn default_purge_interval_secs() -> u64 {
    1
}
fn default_nonce_lifetime_secs() -> u64 {
    300
}
fn default_nonce_max_drift_secs() -> u64 {
    3
}
fn default_bind_nonce_to_source() -> bool {
    false
}
fn default_replay_table_size() -> u64 {
    crate::auth::DEFAULT_REPLAY_CAPACITY as u64
}
fn default_max_failures_per_source() -> u64 {
    20
}
fn default_max_failures_per_user() -> u64 {
    10
}
fn default_failure_window_secs() -> u64 {
    60
}
fn default_http_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_tls_handshake_timeout_secs() -> u64 {
    10
}
fn default_tls_max_handshakes() -> u64 {
    256
}
fn default_tls_max_connections() -> u64 {
    10_000
}
fn default_client_auth() -> String {
    "off".to_owned()
}
fn default_client_cert() -> String {
    "sufficient".to_owned()
}
fn default_domain_algorithms() -> Vec<String> {
    vec!["SHA-256".to_owned(), "MD5".to_owned()]
}

// Ranges, inclusive. `config/example.toml` states each one next to its key.

pub(super) const DRAIN_GRACE_SECS: RangeInclusive<u64> = 0..=600;
/// Upper bound only: 0 means one receive thread per core.
pub(super) const UDP_WORKERS: RangeInclusive<u64> = 0..=1024;
pub(super) const UDP_RECV_BUFFER_BYTES: RangeInclusive<u64> = 65_536..=268_435_456;
/// RFC 3261 §18.1.1: an element must accept at least 1300 bytes over UDP.
pub(super) const MAX_MESSAGE_BYTES: RangeInclusive<u64> = 1300..=1_048_576;
pub(super) const MAX_HEADER_BYTES: RangeInclusive<u64> = 1024..=1_048_576;
pub(super) const MAX_HEADERS: RangeInclusive<u64> = 16..=1024;
pub(super) const TCP_MAX_CONNECTIONS: RangeInclusive<u64> = 1..=1_000_000;
pub(super) const TCP_IDLE_TIMEOUT_SECS: RangeInclusive<u64> = 10..=86_400;
pub(super) const TCP_HEADER_TIMEOUT_SECS: RangeInclusive<u64> = 1..=300;
pub(super) const T1_MS: RangeInclusive<u64> = 50..=5000;
pub(super) const MAX_TRANSACTIONS: RangeInclusive<u64> = 1000..=100_000_000;
/// One week; 0 is not an expiry (a zero Expires removes a binding).
pub(super) const EXPIRES_SECS: RangeInclusive<u64> = 1..=604_800;
pub(super) const MAX_BINDINGS_PER_AOR: RangeInclusive<u64> = 1..=1000;
pub(super) const MAX_AORS: RangeInclusive<u64> = 1..=100_000_000;
pub(super) const EXPIRY_JITTER_PERCENT: RangeInclusive<u64> = 0..=50;
pub(super) const PURGE_INTERVAL_SECS: RangeInclusive<u64> = 1..=60;
pub(super) const NONCE_LIFETIME_SECS: RangeInclusive<u64> = 10..=3600;
pub(super) const NONCE_MAX_DRIFT_SECS: RangeInclusive<u64> = 0..=60;
pub(super) const REPLAY_TABLE_SIZE: RangeInclusive<u64> = 1024..=100_000_000;
pub(super) const MAX_FAILURES: RangeInclusive<u64> = 1..=1_000_000;
pub(super) const FAILURE_WINDOW_SECS: RangeInclusive<u64> = 1..=86_400;
pub(super) const TLS_HANDSHAKE_TIMEOUT_SECS: RangeInclusive<u64> = 1..=120;
pub(super) const TLS_MAX_HANDSHAKES: RangeInclusive<u64> = 1..=100_000;
