//! The token API's part of the file: `[token_api]` (device store, credential keys, TTLs, HTTP
//! limits, rate limits, JWKS cache bounds) and `[[issuers]]` (the OpenID providers a domain
//! trusts, in `issuers.rs`), plus the per-domain `sso`, `issuers` and `registrar` keys. Raw
//! serde shapes, defaults, ranges and validation for `[token_api]` live here so the token
//! API's config stays in one place; `raw.rs` and `validate.rs` only hook them in.
//!
//! Rules that are security decisions, not just syntax:
//! - an issuer URL is `https://`, or `http://` on a loopback host only (tests, development);
//! - `HS*` and `none` are never accepted for IdP tokens (docs/testing.md J3, J19);
//! - a durable device store needs a credential key file, else credentials would stop
//!   verifying at the next start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::problems::{setting, Named, Problems, Setting};
use super::secret::{self, Secret};

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

impl Named for Sso {
    const ALL: &'static [Self] = &[Sso::Off, Sso::Enable, Sso::Enforce];
    fn name(self) -> &'static str {
        self.as_str()
    }
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
// Numeric keys: default and inclusive range, once each; `config/example.toml` states both
// next to its key.
setting!(
    CREDENTIAL_TTL_SECS,
    default_credential_ttl_secs,
    Setting::new(43_200, 60, 86_400)
);
setting!(
    MAX_DEVICES_PER_USER,
    default_max_devices_per_user,
    Setting::new(5, 1, 100)
);
setting!(
    MAX_BODY_BYTES,
    default_max_body_bytes,
    Setting::new(4096, 256, 65_536)
);
setting!(
    /// hyper refuses a read buffer below 8 KiB.
    MAX_HEADER_BYTES,
    default_max_header_bytes,
    Setting::new(16_384, 8192, 65_536)
);
setting!(
    REQUEST_TIMEOUT_SECS,
    default_request_timeout_secs,
    Setting::new(10, 1, 120)
);
setting!(
    FAILURES_PER_SOURCE,
    default_failures_per_source,
    Setting::new(60, 1, 1_000_000)
);
setting!(
    RATE_PER_USER,
    default_rate_per_user,
    Setting::new(30, 1, 1_000_000)
);
setting!(
    RATE_PER_DEVICE,
    default_rate_per_device,
    Setting::new(10, 1, 1_000_000)
);
setting!(
    /// RFC 8725 practice and docs/testing.md J8: never more than 60 s.
    LEEWAY_SECS,
    default_leeway_secs,
    Setting::new(60, 0, 60)
);
setting!(
    FETCH_TIMEOUT_SECS,
    default_fetch_timeout_secs,
    Setting::new(5, 1, 60)
);
setting!(
    MAX_JWKS_BYTES,
    default_max_jwks_bytes,
    Setting::new(262_144, 1024, 4_194_304)
);
setting!(
    MAX_JWKS_KEYS,
    default_max_jwks_keys,
    Setting::new(32, 1, 1000)
);
setting!(
    JWKS_MIN_CACHE_SECS,
    default_jwks_min_cache_secs,
    Setting::new(300, 1, 604_800)
);
setting!(
    JWKS_MAX_CACHE_SECS,
    default_jwks_max_cache_secs,
    Setting::new(86_400, 1, 604_800)
);
setting!(
    JWKS_REFETCH_COOLDOWN_SECS,
    default_jwks_refetch_cooldown_secs,
    Setting::new(60, 1, 3600)
);
setting!(
    DISCOVERY_REFRESH_SECS,
    default_discovery_refresh_secs,
    Setting::new(86_400, 10, 604_800)
);

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
        JWKS_MIN_CACHE_SECS,
    );
    let max_cache = problems.range(
        "token_api.jwks_max_cache_secs",
        raw.jwks_max_cache_secs,
        JWKS_MAX_CACHE_SECS,
    );
    if min_cache > max_cache {
        problems.push(
            "token_api.jwks_min_cache_secs",
            format!("must not exceed token_api.jwks_max_cache_secs ({min_cache} > {max_cache})"),
        );
    }
    let rate = |problems: &mut Problems, key: &str, value: u64, setting| {
        u32::try_from(problems.range(key, value, setting)).unwrap_or(u32::MAX)
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
            FAILURES_PER_SOURCE,
        ),
        rate_per_user_per_minute: rate(
            problems,
            "token_api.rate_per_user_per_minute",
            raw.rate_per_user_per_minute,
            RATE_PER_USER,
        ),
        rate_per_device_per_minute: rate(
            problems,
            "token_api.rate_per_device_per_minute",
            raw.rate_per_device_per_minute,
            RATE_PER_DEVICE,
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

#[cfg(test)]
mod tests {
    use super::*;

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
