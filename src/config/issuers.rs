//! `[[issuers]]`: the OpenID providers a domain trusts, as the file spells them (`RawIssuer`)
//! and validated (`Issuer`); the URL, proxy, CA bundle and claim path rules are in `urls.rs`. `HS*` and `none` are never
//! accepted for IdP tokens (docs/testing.md J3, J19).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::problems::{Named, OneOf, Problems};
use super::urls::{check_claim_path, check_proxy_url, check_url, read_ca_bundle};

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
    /// The claim holding scopes or roles: a top-level name, or a dotted path into nested
    /// objects (`realm_access.roles`, `resource_access.sipward.roles`). Its value may be a
    /// space-separated string or an array of strings.
    pub scope_claim: String,
    /// Needed in `scope_claim`; `None` = no scope check.
    pub required_scope: Option<String>,
    /// Accepted `client_id` / `azp` / `cid` / `appid` values; empty = any client.
    pub client_ids: Vec<String>,
    /// `(claim path, allowed values)`; `None` = no tenant check.
    pub tenant: Option<(String, Vec<String>)>,
    /// The claim (or dotted path) whose value gives the AoR user part (`alice` or
    /// `alice@domain`).
    pub username_claim: String,
    /// The token must carry `email_verified: true` (Google, Keycloak, Auth0 user claims).
    pub require_email_verified: bool,
    /// When not empty, the user's domain must be one of these (lowercase): the value of
    /// `user_domain_claim`, or, when that is empty, the part after `@` of the username claim.
    pub user_domains: Vec<String>,
    /// The claim naming the user's domain (`hd` for Google Workspace); "" = the username's.
    pub user_domain_claim: String,
    /// `(claim, values)` that make a caller an admin; `None` = no SSO admins.
    pub admin: Option<(String, Vec<String>)>,
    /// For `GET /v1/login-options`.
    pub login_client_id: String,
    pub login_scopes: Vec<String>,
    pub label: String,
    /// The domains that trust this issuer (filled from `domains[].issuers`), lowercase.
    pub domains: Vec<String>,
    /// Extra trust anchors for this issuer's HTTPS endpoints (a company CA), besides the
    /// public web roots: the file (resolved) and its PEM certificates, read at load.
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Vec<u8>,
    /// An HTTP proxy that https requests to this issuer go through with CONNECT.
    pub proxy: Option<String>,
    /// `token_format = "opaque"`: how its tokens are validated; `None` = JWT access tokens.
    pub opaque: Option<Opaque>,
}

/// How an issuer's opaque access tokens are validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opaque {
    /// RFC 7662 introspection with client_secret_basic.
    Introspection {
        endpoint: String,
        client_id: String,
        secret: IntrospectionSecret,
        cache: std::time::Duration,
    },
    /// OIDC userinfo with the token as Bearer, plus the provider's token-info endpoint for the
    /// audience, client, scope and expiry (Google).
    Userinfo {
        endpoint: String,
        tokeninfo_endpoint: String,
        cache: std::time::Duration,
    },
}

/// The introspection client secret. `Debug` never shows it; compared only by the IdP.
#[derive(Clone)]
pub struct IntrospectionSecret(pub super::Secret);

impl PartialEq for IntrospectionSecret {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.0.expose(), other.0.expose()).into()
    }
}
impl Eq for IntrospectionSecret {}

impl std::fmt::Debug for IntrospectionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenFormat {
    Jwt,
    Opaque,
}

impl Named for TokenFormat {
    const ALL: &'static [Self] = &[Self::Jwt, Self::Opaque];
    fn name(self) -> &'static str {
        match self {
            TokenFormat::Jwt => "jwt",
            TokenFormat::Opaque => "opaque",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpaqueValidation {
    Introspection,
    Userinfo,
}

impl Named for OpaqueValidation {
    const ALL: &'static [Self] = &[Self::Introspection, Self::Userinfo];
    fn name(self) -> &'static str {
        match self {
            OpaqueValidation::Introspection => "introspection",
            OpaqueValidation::Userinfo => "userinfo",
        }
    }
}

/// Longest time an opaque token's validation result is cached (and the default).
const MAX_OPAQUE_CACHE_SECS: u64 = 3600;
const DEFAULT_OPAQUE_CACHE_SECS: u64 = 60;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    pub(super) name: String,
    pub(super) issuer: String,
    pub(super) audience: String,
    #[serde(default = "default_issuer_algorithms")]
    pub(super) algorithms: Vec<OneOf<JwsAlgorithm>>,
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
    pub(super) require_email_verified: bool,
    #[serde(default)]
    pub(super) user_domains: Vec<String>,
    #[serde(default)]
    pub(super) user_domain_claim: String,
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
    #[serde(default)]
    pub(super) ca_file: String,
    #[serde(default)]
    pub(super) proxy: String,
    #[serde(default = "default_token_format")]
    pub(super) token_format: OneOf<TokenFormat>,
    #[serde(default = "default_opaque_validation")]
    pub(super) opaque_validation: OneOf<OpaqueValidation>,
    #[serde(default)]
    pub(super) introspection_endpoint: String,
    #[serde(default)]
    pub(super) introspection_client_id: String,
    #[serde(default)]
    pub(super) introspection_secret_file: String,
    #[serde(default)]
    pub(super) userinfo_endpoint: String,
    #[serde(default)]
    pub(super) tokeninfo_endpoint: String,
    #[serde(default = "default_opaque_cache_secs")]
    pub(super) opaque_cache_secs: u64,
}

fn default_token_format() -> OneOf<TokenFormat> {
    OneOf::known(TokenFormat::Jwt)
}
fn default_opaque_validation() -> OneOf<OpaqueValidation> {
    OneOf::known(OpaqueValidation::Introspection)
}
fn default_opaque_cache_secs() -> u64 {
    DEFAULT_OPAQUE_CACHE_SECS
}

fn default_issuer_algorithms() -> Vec<OneOf<JwsAlgorithm>> {
    ["RS256", "PS256", "ES256", "EdDSA"]
        .map(|name| OneOf::parse(name.to_owned()))
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

/// A JWS algorithm an issuer may list: asymmetric only (HMAC and `none` are refused with a
/// message of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JwsAlgorithm(&'static str);

impl Named for JwsAlgorithm {
    const ALL: &'static [Self] = &[
        Self("RS256"),
        Self("RS384"),
        Self("RS512"),
        Self("PS256"),
        Self("PS384"),
        Self("PS512"),
        Self("ES256"),
        Self("ES384"),
        Self("EdDSA"),
    ];
    fn name(self) -> &'static str {
        self.0
    }
}

/// Validates `[[issuers]]`. `trusted_by` maps each issuer name to the domains listing it.
pub(super) fn issuers(
    problems: &mut Problems,
    raw: Vec<RawIssuer>,
    trusted_by: &HashMap<String, Vec<String>>,
    base_dir: &Path,
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
        let mut algorithms = Vec::with_capacity(raw.algorithms.len());
        for (n, alg) in raw.algorithms.iter().enumerate() {
            let text = &alg.text;
            if text.to_ascii_uppercase().starts_with("HS") || text.eq_ignore_ascii_case("none") {
                problems.push(
                    format!("{key}.algorithms[{n}]"),
                    format!(
                        "{text:?} is never accepted for IdP tokens (HMAC and none are refused)"
                    ),
                );
            } else if let Some(alg) = problems.known(format!("{key}.algorithms[{n}]"), alg) {
                algorithms.push(alg.name().to_owned());
            }
        }
        if raw.token_types.is_empty() {
            problems.push(
                format!("{key}.token_types"),
                "must list at least one typ value (\"at+jwt\", or \"JWT\" for Entra/Keycloak)",
            );
        }
        for (field, path) in [
            ("scope_claim", &raw.scope_claim),
            ("username_claim", &raw.username_claim),
        ] {
            if let Err(message) = check_claim_path(path) {
                problems.push(format!("{key}.{field}"), message);
            }
        }
        for (field, path) in [
            ("tenant_claim", &raw.tenant_claim),
            ("user_domain_claim", &raw.user_domain_claim),
            ("admin_claim", &raw.admin_claim),
        ] {
            if !path.is_empty() {
                if let Err(message) = check_claim_path(path) {
                    problems.push(format!("{key}.{field}"), message);
                }
            }
        }
        let mut user_domains = Vec::with_capacity(raw.user_domains.len());
        for (n, d) in raw.user_domains.iter().enumerate() {
            let d = d.trim().to_ascii_lowercase();
            if d.is_empty()
                || d.len() > 253
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                problems.push(
                    format!("{key}.user_domains[{n}]"),
                    "must be a DNS domain name (letters, digits, '.', '-')",
                );
            }
            user_domains.push(d);
        }
        if !raw.user_domain_claim.is_empty() && user_domains.is_empty() {
            problems.push(
                format!("{key}.user_domain_claim"),
                "is only used with user_domains; list the allowed domains there",
            );
        }
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
        let (ca_file, ca_pem) = if raw.ca_file.is_empty() {
            (None, Vec::new())
        } else {
            let path = base_dir.join(&raw.ca_file);
            match read_ca_bundle(&path) {
                Ok(pem) => (Some(path), pem),
                Err(message) => {
                    problems.push(format!("{key}.ca_file"), message);
                    (None, Vec::new())
                }
            }
        };
        if !raw.proxy.is_empty() {
            if let Err(message) = check_proxy_url(&raw.proxy) {
                problems.push(format!("{key}.proxy"), message);
            }
        }
        let opaque = opaque(problems, &key, &raw, base_dir);
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
            algorithms,
            token_types: raw.token_types,
            scope_claim: raw.scope_claim,
            required_scope: (!raw.required_scope.is_empty()).then_some(raw.required_scope),
            client_ids: raw.client_ids,
            tenant,
            username_claim: raw.username_claim,
            require_email_verified: raw.require_email_verified,
            user_domains,
            user_domain_claim: raw.user_domain_claim,
            admin,
            login_client_id: raw.login_client_id,
            login_scopes: raw.login_scopes,
            label,
            domains,
            ca_file,
            ca_pem,
            proxy: (!raw.proxy.is_empty()).then_some(raw.proxy),
            opaque,
        });
    }
    out
}

/// The opaque-token keys of one issuer; `None` for JWT issuers (the opaque keys must then be
/// left out).
fn opaque(problems: &mut Problems, key: &str, raw: &RawIssuer, base_dir: &Path) -> Option<Opaque> {
    let format = problems.one_of(
        format!("{key}.token_format"),
        &raw.token_format,
        TokenFormat::Jwt,
    );
    let method = problems.one_of(
        format!("{key}.opaque_validation"),
        &raw.opaque_validation,
        OpaqueValidation::Introspection,
    );
    let set: Vec<&str> = [
        ("introspection_endpoint", &raw.introspection_endpoint),
        ("introspection_client_id", &raw.introspection_client_id),
        ("introspection_secret_file", &raw.introspection_secret_file),
        ("userinfo_endpoint", &raw.userinfo_endpoint),
        ("tokeninfo_endpoint", &raw.tokeninfo_endpoint),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, _)| k)
    .collect();
    if format == TokenFormat::Jwt {
        for k in set {
            problems.push(
                format!("{key}.{k}"),
                "is only used with token_format = \"opaque\"",
            );
        }
        return None;
    }
    if raw.opaque_cache_secs > MAX_OPAQUE_CACHE_SECS {
        problems.push(
            format!("{key}.opaque_cache_secs"),
            format!("must be between 0 and {MAX_OPAQUE_CACHE_SECS}"),
        );
    }
    let cache = std::time::Duration::from_secs(raw.opaque_cache_secs.min(MAX_OPAQUE_CACHE_SECS));
    let url = |problems: &mut Problems, name: &str, value: &str| {
        if value.is_empty() {
            problems.push(
                format!("{key}.{name}"),
                format!(
                    "is required with token_format = \"opaque\" and opaque_validation = {:?}",
                    method.name()
                ),
            );
        } else if let Err(message) = check_url(value) {
            problems.push(format!("{key}.{name}"), message);
        }
        value.to_owned()
    };
    match method {
        OpaqueValidation::Introspection => {
            let endpoint = url(
                problems,
                "introspection_endpoint",
                &raw.introspection_endpoint,
            );
            if raw.introspection_client_id.is_empty() {
                problems.push(
                    format!("{key}.introspection_client_id"),
                    "is required for introspection (client_secret_basic)",
                );
            }
            let secret = if raw.introspection_secret_file.is_empty() {
                problems.push(
                    format!("{key}.introspection_secret_file"),
                    "is required for introspection (client_secret_basic)",
                );
                Vec::new()
            } else {
                let path = super::secret::resolve(base_dir, &raw.introspection_secret_file);
                match super::secret::read_file(&path) {
                    Ok(bytes) => {
                        let bytes = super::secret::strip_line_endings(bytes);
                        if bytes.is_empty() {
                            problems.push(
                                format!("{key}.introspection_secret_file"),
                                "the file is empty",
                            );
                        }
                        bytes
                    }
                    Err(message) => {
                        problems.push(format!("{key}.introspection_secret_file"), message);
                        Vec::new()
                    }
                }
            };
            for k in ["userinfo_endpoint", "tokeninfo_endpoint"] {
                if set.contains(&k) {
                    problems.push(
                        format!("{key}.{k}"),
                        "is only used with opaque_validation = \"userinfo\"",
                    );
                }
            }
            Some(Opaque::Introspection {
                endpoint,
                client_id: raw.introspection_client_id.clone(),
                secret: IntrospectionSecret(super::Secret::new(secret)),
                cache,
            })
        }
        OpaqueValidation::Userinfo => {
            let endpoint = url(problems, "userinfo_endpoint", &raw.userinfo_endpoint);
            // Without the token-info check, a token any other app obtained for the user would
            // be accepted (userinfo says who, not for whom).
            let tokeninfo_endpoint = url(problems, "tokeninfo_endpoint", &raw.tokeninfo_endpoint);
            for k in [
                "introspection_endpoint",
                "introspection_client_id",
                "introspection_secret_file",
            ] {
                if set.contains(&k) {
                    problems.push(
                        format!("{key}.{k}"),
                        "is only used with opaque_validation = \"introspection\"",
                    );
                }
            }
            Some(Opaque::Userinfo {
                endpoint,
                tokeninfo_endpoint,
                cache,
            })
        }
    }
}
