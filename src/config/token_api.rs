//! The token API's part of the file: `[token_api]` (device store, credential keys, TTLs, HTTP
//! limits, rate limits, JWKS cache bounds) and `[[issuers]]` (the OpenID providers a domain
//! trusts), plus the per-domain `sso`, `issuers` and `registrar` keys. Raw serde shapes,
//! defaults, ranges and validation for these tables live here so the token API's config stays
//! in one place; `raw.rs` and `validate.rs` only hook them in.
//!
//! Rules that are security decisions, not just syntax:
//! - an issuer URL is `https://`, or `http://` on a loopback host only (tests, development);
//! - `HS*` and `none` are never accepted for IdP tokens (docs/testing.md J3, J19);
//! - a durable device store needs a credential key file, else credentials would stop
//!   verifying at the next start.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::secret::{self, Secret};
use super::validate::Problems;

// ---- Domain types ----

/// `domains[].sso`: how a domain treats SSO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sso {
    /// No SSO: the token API does not serve this domain.
    Off,
    /// SSO offered beside static accounts.
    Enable,
    /// SSO required for humans: static accounts of kind `human` are refused at REGISTER
    /// (403); `device`, `trunk` and `break-glass` accounts keep working.
    Enforce,
}

impl Sso {
    pub fn as_str(self) -> &'static str {
        match self {
            Sso::Off => "off",
            Sso::Enable => "enable",
            Sso::Enforce => "enforce",
        }
    }
}

/// `[token_api]`, validated.
#[derive(Debug, Clone)]
pub struct TokenApiConfig {
    /// SQLite file for device records; `None` = in memory (records die with the process).
    pub store_path: Option<PathBuf>,
    /// Keys that derive device passwords; `None` = random keys drawn at each start.
    pub credential_keys: Option<Vec<(String, Secret)>>,
    pub credential_ttl: Duration,
    pub max_devices_per_user: usize,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub request_timeout: Duration,
    pub failures_per_source_per_minute: u32,
    pub rate_per_user_per_minute: u32,
    pub rate_per_device_per_minute: u32,
    pub leeway: Duration,
    pub fetch_timeout: Duration,
    pub max_jwks_bytes: usize,
    pub max_jwks_keys: usize,
    pub jwks_min_cache: Duration,
    pub jwks_max_cache: Duration,
    pub jwks_refetch_cooldown: Duration,
    pub discovery_refresh: Duration,
}

/// `[[issuers]]`: one OpenID provider (an `iss` value) and what its tokens must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    /// Short name, referenced by `domains[].issuers`; appears in logs, never in metrics.
    pub name: String,
    /// The exact `iss` string (compared byte for byte).
    pub issuer: String,
    /// Where discovery is fetched from: `<issuer>/.well-known/openid-configuration`.
    pub discovery_url: String,
    /// Our API identifier; `aud` must contain it.
    pub audience: String,
    /// JWS `alg` names accepted, never HS* or none.
    pub algorithms: Vec<String>,
    /// Accepted `typ` header values, compared case-insensitively (`at+jwt`, `JWT`).
    pub token_types: Vec<String>,
    pub scope_claim: ScopeClaim,
    /// Needed in `scope_claim`; `None` = no scope check.
    pub required_scope: Option<String>,
    /// Accepted `client_id` / `azp` values; empty = any client.
    pub client_ids: Vec<String>,
    /// `(claim, allowed values)`; `None` = no tenant check.
    pub tenant: Option<(String, Vec<String>)>,
    /// The claim whose value gives the AoR user part (`alice` or `alice@domain`).
    pub username_claim: String,
    /// `(claim, values)` that make a caller an admin; `None` = no SSO admins.
    pub admin: Option<(String, Vec<String>)>,
    /// For `GET /v1/login-options`.
    pub login_client_id: String,
    pub login_scopes: Vec<String>,
    pub label: String,
    /// The domains that trust this issuer (filled from `domains[].issuers`), lowercase.
    pub domains: Vec<String>,
}

/// Where scopes or roles are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeClaim {
    /// A space-separated string (RFC 8693, RFC 9068).
    Scope,
    /// `scp`: a string or an array (Entra, Okta).
    Scp,
    /// An array of strings.
    Roles,
    Groups,
}

impl ScopeClaim {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeClaim::Scope => "scope",
            ScopeClaim::Scp => "scp",
            ScopeClaim::Roles => "roles",
            ScopeClaim::Groups => "groups",
        }
    }
}

// ---- Raw shapes ----

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokenApi {
    #[serde(default = "default_store_path")]
    pub(super) store_path: String,
    #[serde(default)]
    pub(super) credential_keys_file: String,
    #[serde(default = "default_credential_ttl_secs")]
    pub(super) credential_ttl_secs: u64,
    #[serde(default = "default_max_devices_per_user")]
    pub(super) max_devices_per_user: u64,
    #[serde(default = "default_max_body_bytes")]
    pub(super) max_body_bytes: u64,
    #[serde(default = "default_max_header_bytes")]
    pub(super) max_header_bytes: u64,
    #[serde(default = "default_request_timeout_secs")]
    pub(super) request_timeout_secs: u64,
    /// Before issue 13 this counted every request, valid or not; the old name still loads.
    #[serde(
        default = "default_failures_per_source",
        alias = "rate_per_source_per_minute"
    )]
    pub(super) failures_per_source_per_minute: u64,
    #[serde(default = "default_rate_per_user")]
    pub(super) rate_per_user_per_minute: u64,
    #[serde(default = "default_rate_per_device")]
    pub(super) rate_per_device_per_minute: u64,
    #[serde(default = "default_leeway_secs")]
    pub(super) leeway_secs: u64,
    #[serde(default = "default_fetch_timeout_secs")]
    pub(super) fetch_timeout_secs: u64,
    #[serde(default = "default_max_jwks_bytes")]
    pub(super) max_jwks_bytes: u64,
    #[serde(default = "default_max_jwks_keys")]
    pub(super) max_jwks_keys: u64,
    #[serde(default = "default_jwks_min_cache_secs")]
    pub(super) jwks_min_cache_secs: u64,
    #[serde(default = "default_jwks_max_cache_secs")]
    pub(super) jwks_max_cache_secs: u64,
    #[serde(default = "default_jwks_refetch_cooldown_secs")]
    pub(super) jwks_refetch_cooldown_secs: u64,
    #[serde(default = "default_discovery_refresh_secs")]
    pub(super) discovery_refresh_secs: u64,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    pub(super) name: String,
    pub(super) issuer: String,
    pub(super) audience: String,
    #[serde(default = "default_issuer_algorithms")]
    pub(super) algorithms: Vec<String>,
    #[serde(default = "default_token_types")]
    pub(super) token_types: Vec<String>,
    #[serde(default = "default_scope_claim")]
    pub(super) scope_claim: String,
    #[serde(default = "default_required_scope")]
    pub(super) required_scope: String,
    #[serde(default)]
    pub(super) client_ids: Vec<String>,
    #[serde(default)]
    pub(super) tenant_claim: String,
    #[serde(default)]
    pub(super) tenants: Vec<String>,
    #[serde(default = "default_username_claim")]
    pub(super) username_claim: String,
    #[serde(default)]
    pub(super) admin_claim: String,
    #[serde(default)]
    pub(super) admin_values: Vec<String>,
    #[serde(default)]
    pub(super) login_client_id: String,
    #[serde(default = "default_login_scopes")]
    pub(super) login_scopes: Vec<String>,
    #[serde(default)]
    pub(super) label: String,
}

impl Default for RawTokenApi {
    fn default() -> Self {
        Self {
            store_path: default_store_path(),
            credential_keys_file: String::new(),
            credential_ttl_secs: default_credential_ttl_secs(),
            max_devices_per_user: default_max_devices_per_user(),
            max_body_bytes: default_max_body_bytes(),
            max_header_bytes: default_max_header_bytes(),
            request_timeout_secs: default_request_timeout_secs(),
            failures_per_source_per_minute: default_failures_per_source(),
            rate_per_user_per_minute: default_rate_per_user(),
            rate_per_device_per_minute: default_rate_per_device(),
            leeway_secs: default_leeway_secs(),
            fetch_timeout_secs: default_fetch_timeout_secs(),
            max_jwks_bytes: default_max_jwks_bytes(),
            max_jwks_keys: default_max_jwks_keys(),
            jwks_min_cache_secs: default_jwks_min_cache_secs(),
            jwks_max_cache_secs: default_jwks_max_cache_secs(),
            jwks_refetch_cooldown_secs: default_jwks_refetch_cooldown_secs(),
            discovery_refresh_secs: default_discovery_refresh_secs(),
        }
    }
}

/// The in-memory store's name in `store_path`.
pub const MEMORY_STORE: &str = ":memory:";

fn default_store_path() -> String {
    MEMORY_STORE.to_owned()
}
fn default_credential_ttl_secs() -> u64 {
    43_200
}
fn default_max_devices_per_user() -> u64 {
    5
}
fn default_max_body_bytes() -> u64 {
    4096
}
fn default_max_header_bytes() -> u64 {
    16_384
}
fn default_request_timeout_secs() -> u64 {
    10
}
fn default_failures_per_source() -> u64 {
    60
}
fn default_rate_per_user() -> u64 {
    30
}
fn default_rate_per_device() -> u64 {
    10
}
fn default_leeway_secs() -> u64 {
    60
}
fn default_fetch_timeout_secs() -> u64 {
    5
}
fn default_max_jwks_bytes() -> u64 {
    262_144
}
fn default_max_jwks_keys() -> u64 {
    32
}
fn default_jwks_min_cache_secs() -> u64 {
    300
}
fn default_jwks_max_cache_secs() -> u64 {
    86_400
}
fn default_jwks_refetch_cooldown_secs() -> u64 {
    60
}
fn default_discovery_refresh_secs() -> u64 {
    86_400
}
pub(super) fn default_sso() -> String {
    "off".to_owned()
}
fn default_issuer_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"]
        .map(str::to_owned)
        .to_vec()
}
fn default_token_types() -> Vec<String> {
    vec!["at+jwt".to_owned()]
}
fn default_scope_claim() -> String {
    "scope".to_owned()
}
fn default_required_scope() -> String {
    "sip".to_owned()
}
fn default_username_claim() -> String {
    "preferred_username".to_owned()
}
fn default_login_scopes() -> Vec<String> {
    vec!["openid".to_owned(), "sip".to_owned()]
}

// Ranges, inclusive; `config/example.toml` states each next to its key.
const CREDENTIAL_TTL_SECS: RangeInclusive<u64> = 60..=86_400;
const MAX_DEVICES_PER_USER: RangeInclusive<u64> = 1..=100;
const MAX_BODY_BYTES: RangeInclusive<u64> = 256..=65_536;
/// hyper refuses a read buffer below 8 KiB.
const MAX_HEADER_BYTES: RangeInclusive<u64> = 8192..=65_536;
const REQUEST_TIMEOUT_SECS: RangeInclusive<u64> = 1..=120;
const RATE_PER_MINUTE: RangeInclusive<u64> = 1..=1_000_000;
/// RFC 8725 practice and docs/testing.md J8: never more than 60 s.
const LEEWAY_SECS: RangeInclusive<u64> = 0..=60;
const FETCH_TIMEOUT_SECS: RangeInclusive<u64> = 1..=60;
const MAX_JWKS_BYTES: RangeInclusive<u64> = 1024..=4_194_304;
const MAX_JWKS_KEYS: RangeInclusive<u64> = 1..=1000;
const JWKS_CACHE_SECS: RangeInclusive<u64> = 1..=604_800;
const JWKS_REFETCH_COOLDOWN_SECS: RangeInclusive<u64> = 1..=3600;
const DISCOVERY_REFRESH_SECS: RangeInclusive<u64> = 10..=604_800;
/// Algorithms an issuer may list.
const ASYMMETRIC_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];
/// Credential key: at least 32 bytes (64 hex digits).
const MIN_CREDENTIAL_KEY_BYTES: usize = 32;
const MAX_CREDENTIAL_KEYS: usize = 16;

// ---- Validation ----

pub(super) fn token_api(
    problems: &mut Problems,
    raw: RawTokenApi,
    base_dir: &Path,
) -> TokenApiConfig {
    let store_path = if raw.store_path == MEMORY_STORE {
        None
    } else if raw.store_path.is_empty() {
        problems.push(
            "token_api.store_path",
            format!("must not be empty (a file path, or {MEMORY_STORE:?})"),
        );
        None
    } else {
        Some(secret::resolve(base_dir, &raw.store_path))
    };
    let credential_keys = if raw.credential_keys_file.is_empty() {
        if store_path.is_some() {
            problems.push(
                "token_api.credential_keys_file",
                "is required with a durable token_api.store_path: random keys would make every \
                 stored credential fail after a restart",
            );
        }
        None
    } else {
        let path = secret::resolve(base_dir, &raw.credential_keys_file);
        match secret::read_file(&path).and_then(|bytes| credential_keys(&path, &bytes)) {
            Ok(keys) => Some(keys),
            Err(message) => {
                problems.push("token_api.credential_keys_file", message);
                None
            }
        }
    };
    let min_cache = problems.range(
        "token_api.jwks_min_cache_secs",
        raw.jwks_min_cache_secs,
        JWKS_CACHE_SECS,
    );
    let max_cache = problems.range(
        "token_api.jwks_max_cache_secs",
        raw.jwks_max_cache_secs,
        JWKS_CACHE_SECS,
    );
    if min_cache > max_cache {
        problems.push(
            "token_api.jwks_min_cache_secs",
            format!("must not exceed token_api.jwks_max_cache_secs ({min_cache} > {max_cache})"),
        );
    }
    let rate = |problems: &mut Problems, key: &str, value: u64| {
        u32::try_from(problems.range(key, value, RATE_PER_MINUTE)).unwrap_or(u32::MAX)
    };
    TokenApiConfig {
        store_path,
        credential_keys,
        credential_ttl: problems.range_secs(
            "token_api.credential_ttl_secs",
            raw.credential_ttl_secs,
            CREDENTIAL_TTL_SECS,
        ),
        max_devices_per_user: problems.range_usize(
            "token_api.max_devices_per_user",
            raw.max_devices_per_user,
            MAX_DEVICES_PER_USER,
        ),
        max_body_bytes: problems.range_usize(
            "token_api.max_body_bytes",
            raw.max_body_bytes,
            MAX_BODY_BYTES,
        ),
        max_header_bytes: problems.range_usize(
            "token_api.max_header_bytes",
            raw.max_header_bytes,
            MAX_HEADER_BYTES,
        ),
        request_timeout: problems.range_secs(
            "token_api.request_timeout_secs",
            raw.request_timeout_secs,
            REQUEST_TIMEOUT_SECS,
        ),
        failures_per_source_per_minute: rate(
            problems,
            "token_api.failures_per_source_per_minute",
            raw.failures_per_source_per_minute,
        ),
        rate_per_user_per_minute: rate(
            problems,
            "token_api.rate_per_user_per_minute",
            raw.rate_per_user_per_minute,
        ),
        rate_per_device_per_minute: rate(
            problems,
            "token_api.rate_per_device_per_minute",
            raw.rate_per_device_per_minute,
        ),
        leeway: problems.range_secs("token_api.leeway_secs", raw.leeway_secs, LEEWAY_SECS),
        fetch_timeout: problems.range_secs(
            "token_api.fetch_timeout_secs",
            raw.fetch_timeout_secs,
            FETCH_TIMEOUT_SECS,
        ),
        max_jwks_bytes: problems.range_usize(
            "token_api.max_jwks_bytes",
            raw.max_jwks_bytes,
            MAX_JWKS_BYTES,
        ),
        max_jwks_keys: problems.range_usize(
            "token_api.max_jwks_keys",
            raw.max_jwks_keys,
            MAX_JWKS_KEYS,
        ),
        jwks_min_cache: Duration::from_secs(min_cache),
        jwks_max_cache: Duration::from_secs(max_cache),
        jwks_refetch_cooldown: problems.range_secs(
            "token_api.jwks_refetch_cooldown_secs",
            raw.jwks_refetch_cooldown_secs,
            JWKS_REFETCH_COOLDOWN_SECS,
        ),
        discovery_refresh: problems.range_secs(
            "token_api.discovery_refresh_secs",
            raw.discovery_refresh_secs,
            DISCOVERY_REFRESH_SECS,
        ),
    }
}

/// The credential key file: one key per line, `<id> <hex>`; `#` starts a comment line. The
/// **last** key signs new credentials; every listed key verifies. Ids are 1 to 16 characters
/// of `a-z`, `0-9`, `-`, unique; keys at least 32 bytes (64 hex digits).
fn credential_keys(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Secret)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{path:?} is not UTF-8 text"))?;
    let mut keys: Vec<(String, Secret)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{path:?} line {}", n + 1);
        let mut parts = line.split_whitespace();
        let (Some(id), Some(hex_key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{at}: expected `<id> <hex key>`"));
        };
        let id_ok = (1..=16).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(format!(
                "{at}: key id must be 1 to 16 characters of a-z, 0-9, '-'"
            ));
        }
        if keys.iter().any(|(existing, _)| existing == id) {
            return Err(format!("{at}: key id {id:?} is listed twice"));
        }
        let key = hex::decode(hex_key).map_err(|_| format!("{at}: the key is not hex"))?;
        if key.len() < MIN_CREDENTIAL_KEY_BYTES {
            return Err(format!(
                "{at}: the key has {} bytes; at least {MIN_CREDENTIAL_KEY_BYTES} are required",
                key.len()
            ));
        }
        keys.push((id.to_owned(), Secret::new(key)));
    }
    if keys.is_empty() {
        return Err(format!("{path:?} holds no key"));
    }
    if keys.len() > MAX_CREDENTIAL_KEYS {
        return Err(format!(
            "{path:?} holds {} keys; at most {MAX_CREDENTIAL_KEYS}",
            keys.len()
        ));
    }
    Ok(keys)
}

pub(super) fn sso(problems: &mut Problems, key: &str, raw: &str) -> Sso {
    match raw {
        "off" => Sso::Off,
        "enable" => Sso::Enable,
        "enforce" => Sso::Enforce,
        other => {
            problems.push(
                key,
                format!("{other:?} is not one of \"off\", \"enable\", \"enforce\""),
            );
            Sso::Off
        }
    }
}

/// Validates `[[issuers]]`. `trusted_by` maps each issuer name to the domains listing it.
pub(super) fn issuers(
    problems: &mut Problems,
    raw: Vec<RawIssuer>,
    trusted_by: &HashMap<String, Vec<String>>,
) -> Vec<Issuer> {
    let mut out: Vec<Issuer> = Vec::with_capacity(raw.len());
    for (index, raw) in raw.into_iter().enumerate() {
        let key = format!("issuers[{index}]");
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 32
            && raw
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            problems.push(
                format!("{key}.name"),
                "must be 1 to 32 characters of a-z, 0-9, '-'",
            );
        } else if out.iter().any(|i| i.name == raw.name) {
            problems.push(
                format!("{key}.name"),
                format!("{:?} is already used by another issuer", raw.name),
            );
        }
        if let Err(message) = check_url(&raw.issuer) {
            problems.push(format!("{key}.issuer"), message);
        } else if out.iter().any(|i| i.issuer == raw.issuer) {
            problems.push(
                format!("{key}.issuer"),
                format!("{:?} is already configured", raw.issuer),
            );
        }
        if raw.audience.trim().is_empty() {
            problems.push(format!("{key}.audience"), "must not be empty");
        }
        if raw.algorithms.is_empty() {
            problems.push(
                format!("{key}.algorithms"),
                "must list at least one algorithm",
            );
        }
        for (n, alg) in raw.algorithms.iter().enumerate() {
            if alg.to_ascii_uppercase().starts_with("HS") || alg.eq_ignore_ascii_case("none") {
                problems.push(
                    format!("{key}.algorithms[{n}]"),
                    format!("{alg:?} is never accepted for IdP tokens (HMAC and none are refused)"),
                );
            } else if !ASYMMETRIC_ALGORITHMS.contains(&alg.as_str()) {
                problems.push(
                    format!("{key}.algorithms[{n}]"),
                    format!("{alg:?} is not one of {}", ASYMMETRIC_ALGORITHMS.join(", ")),
                );
            }
        }
        if raw.token_types.is_empty() {
            problems.push(
                format!("{key}.token_types"),
                "must list at least one typ value (\"at+jwt\", or \"JWT\" for Entra/Keycloak)",
            );
        }
        let scope_claim = match raw.scope_claim.as_str() {
            "scope" => ScopeClaim::Scope,
            "scp" => ScopeClaim::Scp,
            "roles" => ScopeClaim::Roles,
            "groups" => ScopeClaim::Groups,
            other => {
                problems.push(
                    format!("{key}.scope_claim"),
                    format!("{other:?} is not one of \"scope\", \"scp\", \"roles\", \"groups\""),
                );
                ScopeClaim::Scope
            }
        };
        let tenant = match (raw.tenant_claim.is_empty(), raw.tenants.is_empty()) {
            (true, true) => None,
            (false, false) => Some((raw.tenant_claim.clone(), raw.tenants.clone())),
            _ => {
                problems.push(
                    key.clone(),
                    "give tenant_claim and tenants together (or neither)",
                );
                None
            }
        };
        let admin = match (raw.admin_claim.is_empty(), raw.admin_values.is_empty()) {
            (true, true) => None,
            (false, false) => Some((raw.admin_claim.clone(), raw.admin_values.clone())),
            _ => {
                problems.push(
                    key.clone(),
                    "give admin_claim and admin_values together (or neither)",
                );
                None
            }
        };
        if raw.username_claim.is_empty() {
            problems.push(format!("{key}.username_claim"), "must not be empty");
        }
        let domains = trusted_by.get(&raw.name).cloned().unwrap_or_default();
        if name_ok && domains.is_empty() {
            problems.push(
                key.clone(),
                format!(
                    "issuer {:?} is not listed in any domains[].issuers, so it could mint no identity",
                    raw.name
                ),
            );
        }
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            raw.issuer.trim_end_matches('/')
        );
        let label = if raw.label.is_empty() {
            raw.name.clone()
        } else {
            raw.label
        };
        out.push(Issuer {
            name: raw.name,
            issuer: raw.issuer,
            discovery_url,
            audience: raw.audience,
            algorithms: raw.algorithms,
            token_types: raw.token_types,
            scope_claim,
            required_scope: (!raw.required_scope.is_empty()).then_some(raw.required_scope),
            client_ids: raw.client_ids,
            tenant,
            username_claim: raw.username_claim,
            admin,
            login_client_id: raw.login_client_id,
            login_scopes: raw.login_scopes,
            label,
            domains,
        });
    }
    out
}

/// An issuer or fetch URL: `https://host…`, or `http://` on a loopback host. No userinfo, no
/// fragment.
pub fn check_url(text: &str) -> Result<(), String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("{text:?} is not an absolute URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') || text.contains('#') {
        return Err(format!(
            "{text:?} must have a host and no userinfo or fragment"
        ));
    }
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback_authority(authority) => Ok(()),
        "http" => Err(format!(
            "{text:?} uses http on a non-loopback host; only https is allowed there"
        )),
        _ => Err(format!("{text:?} must be an https URL")),
    }
}

fn is_loopback_authority(authority: &str) -> bool {
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        assert!(check_url("https://login.example.com/tenant/v2.0").is_ok());
        assert!(check_url("http://127.0.0.1:4400").is_ok());
        assert!(check_url("http://[::1]:4400/x").is_ok());
        assert!(check_url("http://localhost:4400").is_ok());
        assert!(check_url("http://idp.example.com").is_err());
        assert!(check_url("http://127.0.0.1.evil.com").is_err());
        assert!(check_url("file:///etc/passwd").is_err());
        assert!(check_url("https://user@idp.example.com").is_err());
        assert!(check_url("idp.example.com").is_err());
    }

    #[test]
    fn credential_key_file_format() {
        let p = Path::new("keys");
        let k1 = "11".repeat(32);
        let k2 = "22".repeat(32);
        let keys = credential_keys(p, format!("# comment\nk1 {k1}\n\nk2 {k2}\n").as_bytes())
            .expect("valid");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].0, "k2");
        assert!(credential_keys(p, b"").unwrap_err().contains("no key"));
        assert!(credential_keys(p, format!("K1 {k1}").as_bytes())
            .unwrap_err()
            .contains("key id"));
        assert!(credential_keys(p, b"k1 abcd")
            .unwrap_err()
            .contains("2 bytes"));
        assert!(credential_keys(p, format!("k1 {k1}\nk1 {k2}").as_bytes())
            .unwrap_err()
            .contains("twice"));
        let message = credential_keys(p, b"k1 zz-not-hex").unwrap_err();
        assert!(!message.contains("zz-not-hex"), "{message}");
    }
}
