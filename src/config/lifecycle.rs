//! `[[scim]]`: the SCIM 2.0 service providers (issue 20), one per IdP that provisions users:
//! which `[[issuers]]` entry the provisioned users belong to, the bearer token the IdP's SCIM
//! client presents (read from a secret file, kept only as its SHA-256), how a SCIM user is
//! matched to token API users, and the directory's bounds.

use serde::Deserialize;

use super::problems::{Named, OneOf, Problems, Setting};
use super::secret::{self, AdminToken};

/// A SCIM bearer token read from a file must be at least this long.
const MIN_SCIM_TOKEN_BYTES: usize = 16;
const MAX_USERS: Setting = Setting::new(100_000, 1, 10_000_000);
const MAX_GROUPS: Setting = Setting::new(10_000, 1, 1_000_000);

/// One `[[scim]]` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimProvider {
    /// The `[[issuers]]` name whose users this provider provisions.
    pub issuer: String,
    /// The SCIM client's bearer token (compared in constant time over SHA-256).
    pub token: AdminToken,
    pub user_match: UserMatch,
    /// Users held at most (a create above it gets 400 with `scimType` `tooMany`... see docs).
    pub max_users: usize,
    pub max_groups: usize,
}

/// How a SCIM user names a token API user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMatch {
    /// `userName` ↔ the issuer's username claim (the AoR the exchange makes of it).
    UserName,
    /// `externalId` ↔ the token's `sub`.
    ExternalId,
}

impl Named for UserMatch {
    const ALL: &'static [Self] = &[Self::UserName, Self::ExternalId];
    fn name(self) -> &'static str {
        match self {
            UserMatch::UserName => "user_name",
            UserMatch::ExternalId => "external_id",
        }
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScim {
    pub(super) issuer: String,
    pub(super) token_file: String,
    #[serde(default = "default_user_match")]
    pub(super) user_match: OneOf<UserMatch>,
    #[serde(default = "default_max_users")]
    pub(super) max_users: u64,
    #[serde(default = "default_max_groups")]
    pub(super) max_groups: u64,
}

fn default_user_match() -> OneOf<UserMatch> {
    OneOf::known(UserMatch::UserName)
}
fn default_max_users() -> u64 {
    MAX_USERS.default
}
fn default_max_groups() -> u64 {
    MAX_GROUPS.default
}

/// Validates `[[scim]]` against the issuer names.
pub(super) fn scim(
    problems: &mut Problems,
    raw: Vec<RawScim>,
    issuer_names: &[&str],
    base_dir: &std::path::Path,
) -> Vec<ScimProvider> {
    let mut out = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (index, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("scim[{index}].{k}");
        if !issuer_names.contains(&r.issuer.as_str()) {
            problems.push(
                key("issuer"),
                format!("{:?} is not the name of an [[issuers]] entry", r.issuer),
            );
        }
        if seen.contains(&r.issuer) {
            problems.push(key("issuer"), "one [[scim]] entry per issuer");
        }
        seen.push(r.issuer.clone());
        let path = secret::resolve(base_dir, &r.token_file);
        let token = match secret::read_file(&path).map(secret::strip_line_endings) {
            Ok(t) if t.len() < MIN_SCIM_TOKEN_BYTES => {
                problems.push(
                    key("token_file"),
                    format!("{path:?} holds a token shorter than {MIN_SCIM_TOKEN_BYTES} bytes"),
                );
                None
            }
            Ok(t) => Some(AdminToken::from_token(&t)),
            Err(message) => {
                problems.push(key("token_file"), message);
                None
            }
        };
        let user_match = problems.one_of(key("user_match"), &r.user_match, UserMatch::UserName);
        let max_users = problems.range_usize(&key("max_users"), r.max_users, MAX_USERS);
        let max_groups = problems.range_usize(&key("max_groups"), r.max_groups, MAX_GROUPS);
        if let Some(token) = token {
            out.push(ScimProvider {
                issuer: r.issuer,
                token,
                user_match,
                max_users,
                max_groups,
            });
        }
    }
    out
}

/// `[audit]`: where the audit trail goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// The JSON-lines file (created 0600, reopened on SIGHUP); `None` = no audit trail.
    pub file: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    #[serde(default)]
    pub(super) file: String,
}

pub(super) fn audit(
    problems: &mut Problems,
    raw: RawAudit,
    base_dir: &std::path::Path,
) -> AuditConfig {
    if raw.file.trim().is_empty() {
        return AuditConfig::default();
    }
    let path = secret::resolve(base_dir, &raw.file);
    let folder_ok = path
        .parent()
        .is_some_and(|p| p.as_os_str().is_empty() || p.is_dir());
    if !folder_ok {
        problems.push("audit.file", format!("{path:?}: its folder does not exist"));
    }
    AuditConfig { file: Some(path) }
}

/// `[[backchannel_logout]]`: OpenID Connect Back-Channel Logout 1.0 for one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackchannelLogout {
    pub issuer: String,
    /// Our client id at the IdP: a logout token's `aud` must name it.
    pub client_id: String,
    /// Whether a logout revokes every device of the user (else it is only recorded).
    pub revoke_devices_on_logout: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackchannelLogout {
    pub(super) issuer: String,
    #[serde(default)]
    pub(super) client_id: String,
    #[serde(default = "default_revoke_on_logout")]
    pub(super) revoke_devices_on_logout: bool,
}

fn default_revoke_on_logout() -> bool {
    true
}

/// Validates `[[backchannel_logout]]`; `client_id` defaults to the issuer's `login_client_id`.
pub(super) fn backchannel_logout(
    problems: &mut Problems,
    raw: Vec<RawBackchannelLogout>,
    issuers: &[super::Issuer],
) -> Vec<BackchannelLogout> {
    let mut out: Vec<BackchannelLogout> = Vec::new();
    for (index, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("backchannel_logout[{index}].{k}");
        let Some(issuer) = issuers.iter().find(|i| i.name == r.issuer) else {
            problems.push(
                key("issuer"),
                format!("{:?} is not the name of an [[issuers]] entry", r.issuer),
            );
            continue;
        };
        if out.iter().any(|b| b.issuer == r.issuer) {
            problems.push(key("issuer"), "one [[backchannel_logout]] entry per issuer");
        }
        let client_id = match r.client_id.trim() {
            "" => issuer.login_client_id.clone(),
            c => c.to_owned(),
        };
        if client_id.is_empty() {
            problems.push(
                key("client_id"),
                "is required when the issuer has no login_client_id",
            );
        }
        out.push(BackchannelLogout {
            issuer: r.issuer,
            client_id,
            revoke_devices_on_logout: r.revoke_devices_on_logout,
        });
    }
    out
}

/// `[[roles]]`: which values of an issuer's group/role claim (and which SCIM group names of
/// its `[[scim]]` provider) make a caller `admin` or `auditor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMapping {
    pub issuer: String,
    pub claim: String,
    pub admin: Vec<String>,
    pub auditor: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoles {
    pub(super) issuer: String,
    #[serde(default = "default_role_claim")]
    pub(super) claim: String,
    #[serde(default)]
    pub(super) admin: Vec<String>,
    #[serde(default)]
    pub(super) auditor: Vec<String>,
}

fn default_role_claim() -> String {
    "groups".to_owned()
}

pub(super) fn roles(
    problems: &mut Problems,
    raw: Vec<RawRoles>,
    issuer_names: &[&str],
) -> Vec<RoleMapping> {
    let mut out: Vec<RoleMapping> = Vec::new();
    for (index, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("roles[{index}].{k}");
        if !issuer_names.contains(&r.issuer.as_str()) {
            problems.push(
                key("issuer"),
                format!("{:?} is not the name of an [[issuers]] entry", r.issuer),
            );
        }
        if out.iter().any(|m| m.issuer == r.issuer) {
            problems.push(key("issuer"), "one [[roles]] entry per issuer");
        }
        if r.claim.trim().is_empty() {
            problems.push(
                key("claim"),
                "must name a claim (e.g. \"groups\" or \"roles\")",
            );
        }
        out.push(RoleMapping {
            issuer: r.issuer,
            claim: r.claim,
            admin: r.admin,
            auditor: r.auditor,
        });
    }
    out
}
