//! Configuration: one TOML file, read once at start, parsed into the validated domain types below.
//! This module owns the file format (serde structs with `deny_unknown_fields` in `raw`), every
//! default and range, reading the secret files the TOML names (relative to the TOML file's
//! folder), and the embedded development profile. It reports every problem at once, each as
//! `key.path: problem`, and never puts a secret in a message. It must not open sockets, start
//! tasks, or know how other modules use the values; they receive ready types (`SocketAddr`,
//! `Duration`, enums) and never see a string that still needs checking; the sections also
//! build the domain types of the modules that use them (`typed.rs`), so nobody checks twice.
//!
//! | file | owns |
//! | --- | --- |
//! | `raw.rs` | the serde shapes, the default functions, each numeric key's `Setting` |
//! | `problems.rs` | the problem list, `Setting`, closed sets (`Named`, `OneOf`), TOML errors with their key; imports no other config file |
//! | `validate.rs` | raw → validated sections: ranges, cross-checks, secret files |
//! | `domains.rs` | `[[domains]]` and `[[accounts]]` |
//! | `issuers.rs` | `[[issuers]]`: claims, connectivity and opaque-token keys |
//! | `urls.rs` | the issuer/fetch URL rule (https, or http on loopback), proxy URLs, CA bundles, claim paths |
//! | `token_api.rs` | `[token_api]` |
//! | `secret.rs` | secret files, redaction |
//! | `network.rs` | listener entries with `advertise`, `sip.aliases`, `registrar.path`, the warnings of a loadable config |
//! | `ws.rs` | `[ws]` and `[[ws.listeners]]` (SIP over WebSocket): limits, WSS, the Origin allowlist |
//! | `typed.rs` | sections → `sip::Limits`, `TransactionConfig`, `RegistrarPolicy`, nonce, replay and limiter configs |

mod domains;
mod issuers;
mod lifecycle;
mod network;
mod problems;
mod raw;
mod redis;
mod secret;
mod token_api;
mod typed;
mod urls;
mod validate;
mod ws;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use problems::{ConfigErrors, ConfigProblem};
pub use secret::{AdminToken, Secret};

pub use issuers::{IntrospectionSecret, Issuer, Opaque};
pub use lifecycle::{AuditConfig, BackchannelLogout, RoleMapping, ScimProvider, UserMatch};
pub use network::{Advertise, PathPolicy};
use problems::Named;
pub use token_api::{Sso, TokenApiConfig, MEMORY_STORE};
pub use urls::{check_claim_path, check_url};
pub use ws::{OriginPolicy, WsConfig, WsListener};

/// The development profile compiled into the binary (`config/dev.toml`): loopback listeners,
/// domain `example.test`, two demo accounts, a known admin token. Development only.
pub const DEV_PROFILE: &str = include_str!("../../config/dev.toml");

/// A validated configuration. Build it with [`Config::load`], [`Config::from_toml_str`] or
/// [`Config::dev`].
#[derive(Debug, Clone)]
pub struct Config {
    pub log: LogConfig,
    pub server: ServerConfig,
    pub sip: SipConfig,
    pub registrar: RegistrarConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    /// `[tls]`; `None` when no TLS listener is configured.
    pub tls: Option<TlsConfig>,
    /// At least one; names are lowercase and unique.
    pub domains: Vec<Domain>,
    /// `(username, domain)` is unique; `domain` names an entry of `domains`.
    pub accounts: Vec<Account>,
    /// `[token_api]`; used only when `issuers` is not empty.
    pub token_api: TokenApiConfig,
    /// `[[issuers]]`; empty = the token API is off.
    pub issuers: Vec<Issuer>,
    /// `[ws]`; `None` when no `[[ws.listeners]]` is configured.
    pub ws: Option<WsConfig>,
    /// `[redis]`; `Some` exactly when `registrar.persistence = "redis"`.
    pub redis: Option<RedisConfig>,
    /// `[[scim]]`: SCIM 2.0 provisioning, one entry per issuer (docs/lifecycle.md).
    pub scim: Vec<ScimProvider>,
    /// `[audit]`: the audit trail's file (docs/lifecycle.md).
    pub audit: AuditConfig,
    /// `[[backchannel_logout]]`: OIDC Back-Channel Logout per issuer (docs/lifecycle.md).
    pub backchannel_logout: Vec<BackchannelLogout>,
    /// `[[roles]]`: group/role claim values → `admin` / `auditor` per issuer.
    pub roles: Vec<RoleMapping>,
    /// Every secret file the TOML names (key, password, token and key-list files), resolved;
    /// checked for group/world read access at start (`fsutil::exposed`).
    pub secret_files: Vec<PathBuf>,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `sipward=debug,info`. `RUST_LOG`, when set,
    /// wins; the caller applies that rule.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Named for LogFormat {
    const ALL: &'static [Self] = &[Self::Text, Self::Json];
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Value of the `Server` header in responses; `None` sends no header.
    pub server_header: Option<String>,
    /// On SIGTERM: stop reading, let open transactions finish, exit within this.
    pub drain_grace: Duration,
}

/// `[sip]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipConfig {
    /// UDP sockets to bind; may be empty when `tcp` is not.
    pub udp: Vec<SocketAddr>,
    /// TCP listeners to bind; may be empty when `udp` is not.
    pub tcp: Vec<SocketAddr>,
    /// Receive threads per UDP socket; `None` means one per core.
    pub udp_workers: Option<NonZeroUsize>,
    /// `SO_RCVBUF` requested for each UDP socket (the kernel may cap it).
    pub udp_recv_buffer_bytes: usize,
    /// Largest whole message: a UDP datagram or one framed stream message.
    pub max_message_bytes: usize,
    /// Largest header section; never above `max_message_bytes`.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub tcp_max_connections: usize,
    pub tcp_idle_timeout: Duration,
    /// Slowloris deadline: a stream must deliver one whole header section within this.
    pub tcp_header_timeout: Duration,
    /// RFC 3261 T1, the RTT estimate that scales every transaction timer.
    pub t1: Duration,
    /// Cap on live server transactions; see `TransactionConfig::max_transactions`.
    pub max_transactions: usize,
    /// The listeners (UDP, TCP and `[[tls.listeners]]`) that set `advertise`: the name they
    /// write for themselves in Via and Record-Route, which also means us.
    pub advertise: Vec<Advertise>,
    /// `sip.aliases`: more names that mean us in a Route or Request-URI.
    pub aliases: Vec<crate::sip::HostPort>,
}

/// `[registrar]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shortest expiry granted; shorter requests get 423 with `Min-Expires`.
    pub min_expires: Duration,
    /// Longest expiry granted; longer requests are shortened to it.
    pub max_expires: Duration,
    /// Granted when the REGISTER names no expiry. `min <= default <= max`.
    pub default_expires: Duration,
    pub max_bindings_per_aor: usize,
    pub max_aors: usize,
    /// Granted expiries are shortened by a random 0..=N percent to spread re-registration storms.
    pub expiry_jitter_percent: u8,
    /// A binding learned over a stream is removed when its connection closes.
    pub remove_bindings_on_close: bool,
    pub purge_interval: Duration,
    /// A Path header without `Supported: path`: stored, refused (420) or ignored.
    pub path: PathPolicy,
    /// Where bindings survive a restart: `none` (memory only) or `sqlite`.
    pub persistence: Persistence,
    /// The SQLite location store's file (`registrar.store_path`, relative to the config
    /// file's folder); used with `persistence = "sqlite"`.
    pub store_path: PathBuf,
    /// Most REGISTERs waiting for the location store's writer; one more gets 503.
    pub store_queue: usize,
    /// The least time between the starts of two location store transactions
    /// (`registrar.store_commit_interval_ms`): a transaction that would start sooner waits,
    /// so batches grow and one fsync is shared by more REGISTERs. Zero: commit at once.
    pub store_commit_interval: Duration,
}

/// `registrar.persistence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Bindings in memory only: a restart loses them.
    None,
    /// Bindings written to a SQLite file; a REGISTER is answered once its change is on disk.
    Sqlite,
    /// Bindings written to Redis (standalone or Redis Cluster, `[redis]`); a REGISTER is
    /// answered once Redis acknowledged its change.
    Redis,
}

/// `[redis]`: where the location store lives with `registrar.persistence = "redis"`.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://host:port` or `rediss://host:port` (TLS); a standalone server, or seed nodes of
    /// a cluster. At least one.
    pub urls: Vec<String>,
    /// Use the Redis Cluster client (MOVED/ASK, failover) instead of one standalone server.
    pub cluster: bool,
    /// ACL user (`AUTH username password`); `None`: the default user.
    pub username: Option<String>,
    /// From `password_file`; never logged.
    pub password: Option<Secret>,
    /// This node's name in the keys it owns (`sipward:{aor}:b:NODE:ID`): unique per node, the
    /// same across restarts of a node.
    pub node: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// How often one write is retried (a cluster failover, a reconnect) before its REGISTERs
    /// are answered 503.
    pub retries: u32,
    /// Connections for reading other nodes' bindings on routing lookups (the writer has its
    /// own one).
    pub pool_size: usize,
    /// `redis.peers`: every node's name → its SIP UDP address. A node routes a request for
    /// another node's TCP/TLS/WS binding to that node's address (a Path-like hop), and takes
    /// requests from these addresses' IPs as already authenticated (no Digest challenge).
    pub peers: Vec<(String, std::net::SocketAddr)>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("urls", &self.urls)
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("node", &self.node)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("retries", &self.retries)
            .field("pool_size", &self.pool_size)
            .field("peers", &self.peers)
            .finish()
    }
}

impl Named for Persistence {
    const ALL: &'static [Self] = &[Self::None, Self::Sqlite, Self::Redis];
    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Sqlite => "sqlite",
            Self::Redis => "redis",
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub nonce_lifetime: Duration,
    /// How far a nonce's timestamp may lie in the future (clock skew between cluster nodes).
    pub nonce_max_drift: Duration,
    /// At least 32 bytes. `None`: draw a random secret at start (nonces die with the process, and
    /// nodes of a cluster cannot verify each other's nonces).
    pub nonce_secret: Option<Secret>,
    /// Bind each nonce to the client's source address, so it is useless from elsewhere.
    pub bind_nonce_to_source: bool,
    /// Slots of the replay table (`auth::ReplayConfig::capacity`), 24 bytes each, allocated at
    /// start.
    pub replay_table_size: usize,
    pub max_failures_per_source: u32,
    pub max_failures_per_user: u32,
    pub failure_window: Duration,
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// API, health and metrics listener; `None` disables HTTP.
    pub listen: Option<SocketAddr>,
    /// `None`: no admin token is configured, so the admin endpoints refuse every request.
    pub admin_token: Option<AdminToken>,
    /// Origins (`scheme://host[:port]`, lower-case) whose pages may call `/v1/login-options`
    /// and `/v1/sip/credentials` (CORS); empty = none.
    pub cors_origins: Vec<String>,
    /// `http.serve_web_phone`: the folder the reference web phone is served from under
    /// `/phone/`; `None` = not served (the default).
    pub web_phone: Option<PathBuf>,
}

/// `[tls]`: SIP over TLS. File paths are resolved against the config file's folder and read
/// by the TLS module at start and on every reload (SIGHUP); this module only checks that they
/// are given where they are needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// At least one; addresses unique.
    pub listeners: Vec<TlsListener>,
    /// PEM chain, leaf first: the default certificate (no SNI, or an SNI no entry names).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// PEM bundle of the CAs that issue device certificates; required when a listener
    /// asks for client certificates.
    pub client_ca_file: Option<PathBuf>,
    /// PEM CRLs checked against client certificates.
    pub crl_files: Vec<PathBuf>,
    /// Per SIP domain (SNI) certificates.
    pub certificates: Vec<SniCertificate>,
    /// Bounds each handshake step: reading the ClientHello, waiting for a handshake slot, and
    /// the rest (so a connection lives at most three times this before its handshake is done).
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; more wait (within their deadline) for a slot.
    pub max_handshakes: usize,
    /// Open TLS connections at most per TLS listener (handshaking or established).
    pub max_connections: usize,
}

/// `[[tls.listeners]]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsListener {
    pub addr: SocketAddr,
    pub client_auth: ClientAuth,
}

/// Whether a TLS listener asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// No certificate requested.
    Off,
    /// Requested and verified when sent; connections without one use Digest.
    Optional,
    /// The handshake fails without a certificate from `client_ca_file`.
    Required,
}

/// `[[tls.certificates]]`: the certificate served when SNI names `domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCertificate {
    /// Lowercase.
    pub domain: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[[domains]]`: a SIP domain, which is also its Digest realm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Lowercase.
    pub name: String,
    /// Challenged in this order; not empty, no repeats.
    pub algorithms: Vec<DigestAlgorithmName>,
    /// SSO policy; `Enforce` refuses static `human` accounts at REGISTER.
    pub sso: Sso,
    /// Names of the issuers this domain trusts (the token API mints identities here only
    /// from these).
    pub issuers: Vec<String>,
    /// The SIP URI the token API tells devices to register at (`sip:<name>` by default).
    pub registrar: String,
    /// What a verified client certificate is worth for a REGISTER in this domain.
    pub client_cert: ClientCertPolicy,
}

/// `domains[].client_cert`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertPolicy {
    /// A certificate identity authenticates a REGISTER on its own (no Digest challenge).
    Sufficient,
    /// Digest is required as well; the certificate still restricts which AoR may register.
    PlusDigest,
}

impl ClientAuth {
    /// The spelling used in the file: `off`, `optional`, `required`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

impl Named for ClientAuth {
    const ALL: &'static [Self] = &[Self::Off, Self::Optional, Self::Required];
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl ClientCertPolicy {
    /// The spelling used in the file: `sufficient`, `plus-digest`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sufficient => "sufficient",
            Self::PlusDigest => "plus-digest",
        }
    }
}

impl Named for ClientCertPolicy {
    const ALL: &'static [Self] = &[Self::Sufficient, Self::PlusDigest];
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// A Digest algorithm as named in the file (RFC 7616 / RFC 8760 spelling). The auth module maps
/// it to its own algorithm type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithmName {
    Md5,
    Sha256,
    Sha512_256,
}

/// `[[accounts]]`: a static SIP account.
#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    /// Lowercase; names a configured domain, whose name is the realm.
    pub domain: String,
    pub kind: AccountKind,
    pub secret: AccountSecret,
    /// Algorithms challenged for this account, in order, never empty. The account's own list if
    /// given; otherwise the domain's list, minus algorithms an `Ha1` secret has no value for.
    pub algorithms: Vec<DigestAlgorithmName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountKind {
    Device,
    Trunk,
    Human,
    BreakGlass,
}

/// What the server knows to verify an account's Digest response.
#[derive(Clone)]
pub enum AccountSecret {
    /// The password itself (file content, trailing line ending stripped; never empty).
    Password(Secret),
    /// Precomputed `H(username:realm:password)`, lowercase hex, per algorithm; at least one is
    /// set. These are password-equivalent for the realm, so `Debug` redacts them.
    Ha1 {
        md5: Option<String>,
        sha256: Option<String>,
        sha512_256: Option<String>,
    },
}

/// Unknown keys named in one report before giving up.
const MAX_UNKNOWN_KEYS_REPORTED: usize = 64;

/// Comments out the line holding byte `at` (for a table header, the whole table), keeping line
/// numbers unchanged. False if nothing changed.
fn comment_out(text: &mut String, at: usize) -> bool {
    let Some(prefix) = text.get(..at) else {
        return false;
    };
    let start = prefix.rfind('\n').map_or(0, |i| i + 1);
    let is_header = text[start..].trim_start().starts_with('[');
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..start]);
    let mut changed = false;
    let mut in_scope = true;
    for (n, line) in text[start..].split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if n > 0 && (!is_header || trimmed.starts_with('[')) {
            in_scope = false;
        }
        if in_scope && !trimmed.starts_with('#') && !trimmed.is_empty() {
            out.push('#');
            changed = true;
        }
        out.push_str(line);
    }
    if changed {
        *text = out;
    }
    changed
}

impl Config {
    /// Reads and validates the TOML file at `path`. Secret files it names are resolved relative
    /// to the folder holding `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigErrors::one(
                "config",
                format!("cannot read {:?}: {}", path, secret::io_reason(&err)),
            )
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new(""));
        Config::from_toml_str(&text, base_dir)
    }

    /// Parses and validates TOML text. Relative secret file paths are resolved against
    /// `base_dir`.
    ///
    /// Every bad key is named in one run: an unknown key (or table) or a value of the wrong
    /// type is reported, commented out and the text parsed again, so the remaining values are
    /// still validated. Parsing stops at broken TOML (a syntax error) or a missing table.
    /// Every problem names its key and, where the file has it, its line.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let original = text.to_string();
        let mut text = text.to_string();
        let mut problems = Vec::new();
        for _ in 0..MAX_UNKNOWN_KEYS_REPORTED {
            match toml::from_str::<raw::RawConfig>(&text) {
                Ok(raw) => {
                    return match validate::config(raw, base_dir) {
                        Ok(config) if problems.is_empty() => Ok(config),
                        Ok(_) => Err(ConfigErrors::from_problems(problems)),
                        Err(errors) => {
                            let original = original.as_str();
                            problems.extend(
                                errors
                                    .problems
                                    .into_iter()
                                    .map(|p| problems::with_line(p, original)),
                            );
                            Err(ConfigErrors::from_problems(problems))
                        }
                    };
                }
                Err(err) => {
                    let problem = problems::toml_problem(&text, &err);
                    // A required key left without a value by an earlier comment-out is not
                    // a problem of its own.
                    if !problems.iter().any(|p| problems::follows_from(p, &problem)) {
                        problems.push(problem);
                    }
                    match err.span() {
                        Some(span)
                            if problems::skippable(err.message())
                                && comment_out(&mut text, span.start) =>
                        {
                            continue
                        }
                        _ => break,
                    }
                }
            }
        }
        Err(ConfigErrors::from_problems(problems))
    }

    /// The embedded development profile, [`DEV_PROFILE`]. Development only: its passwords and
    /// admin token are published.
    ///
    /// Its TLS files (`certs/dev/`) are resolved as if the profile were read from `config/` in
    /// the source tree the binary was built from (as `check-config config/dev.toml` does), so
    /// `cargo run` works from any folder; a binary moved elsewhere fails at start with a
    /// message naming the missing file.
    pub fn dev() -> Config {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        // The profile is compiled in and a unit test validates it, so this cannot fail at run time.
        Config::from_toml_str(DEV_PROFILE, &base).expect("embedded dev profile is valid")
    }

    /// The configured domain called `name` (compared case-insensitively).
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains
            .iter()
            .find(|domain| domain.name.eq_ignore_ascii_case(name))
    }
}

impl DigestAlgorithmName {
    pub const ALL: [DigestAlgorithmName; 3] = [Self::Md5, Self::Sha256, Self::Sha512_256];

    /// The RFC 7616 / RFC 8760 token: `MD5`, `SHA-256`, `SHA-512-256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
            Self::Sha512_256 => "SHA-512-256",
        }
    }

    /// Parses the token, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str().eq_ignore_ascii_case(name))
    }

    /// Hex digits in an HA1 (and any digest) of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::Sha256 | Self::Sha512_256 => 64,
        }
    }
}

impl Named for DigestAlgorithmName {
    const ALL: &'static [Self] = &Self::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
    /// Algorithm tokens are case-insensitive (RFC 7616 §3.3).
    fn is_named(self, text: &str) -> bool {
        self.as_str().eq_ignore_ascii_case(text)
    }
}

impl fmt::Display for DigestAlgorithmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AccountKind {
    /// The spelling used in the file: `device`, `trunk`, `human`, `break-glass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Trunk => "trunk",
            Self::Human => "human",
            Self::BreakGlass => "break-glass",
        }
    }
}

impl Named for AccountKind {
    const ALL: &'static [Self] = &[Self::Device, Self::Trunk, Self::Human, Self::BreakGlass];
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl AccountSecret {
    /// The HA1 hex for `algorithm`, if this secret is given as HA1 values and has that one.
    pub fn ha1(&self, algorithm: DigestAlgorithmName) -> Option<&str> {
        match self {
            Self::Password(_) => None,
            Self::Ha1 {
                md5,
                sha256,
                sha512_256,
            } => match algorithm {
                DigestAlgorithmName::Md5 => md5.as_deref(),
                DigestAlgorithmName::Sha256 => sha256.as_deref(),
                DigestAlgorithmName::Sha512_256 => sha512_256.as_deref(),
            },
        }
    }

    /// Whether this secret can answer a challenge with `algorithm`.
    pub fn supports(&self, algorithm: DigestAlgorithmName) -> bool {
        matches!(self, Self::Password(_)) || self.ha1(algorithm).is_some()
    }
}

impl fmt::Debug for AccountSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |value: &Option<String>| value.as_ref().map(|_| secret::REDACTED);
        match self {
            Self::Password(secret) => f.debug_tuple("Password").field(secret).finish(),
            Self::Ha1 {
                md5,
                sha256,
                sha512_256,
            } => f
                .debug_struct("Ha1")
                .field("md5", &redact(md5))
                .field("sha256", &redact(sha256))
                .field("sha512_256", &redact(sha512_256))
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests;
