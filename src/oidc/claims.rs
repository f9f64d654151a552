//! The claim mapping (docs/token-api.md steps 6 and 7) on claims already trusted, from a
//! verified JWT or an introspection/userinfo answer: the client (`client_id`, `azp`, `cid`,
//! `appid`), scopes or roles from a string or an array at a claim path
//! (`realm_access.roles`), the tenant, the username, `email_verified` and the user's domain.
//! A claim of a shape the mapping does not know fails closed ([`Rejection::ClaimShape`]) with
//! a WARN naming the issuer and the claim.

use serde_json::{Map, Value};

use super::{Purpose, Rejection};
use crate::config::Issuer;

/// The claims that name a client, in the shapes IdPs send: RFC 9068 `client_id`, OIDC `azp`
/// (Entra v2, Keycloak, Auth0), Okta's `cid`, Entra v1's `appid`.
pub(super) const CLIENT_CLAIMS: [&str; 4] = ["client_id", "azp", "cid", "appid"];

/// What the claim mapping found besides `sub`.
pub(super) struct Mapped {
    pub username: Option<String>,
    pub is_admin: bool,
}

/// Steps 6 (client, scope, tenant) and 7 (username, `email_verified`, user domain) on claims
/// already trusted: from a verified JWT or from an introspection/userinfo answer. Returns
/// `sub` and the mapped values. A claim of a shape the mapping does not know (an object where
/// a string or list is expected, a list holding a non-string) fails closed with
/// [`Rejection::ClaimShape`] and a log line naming the claim.
pub(super) fn mapped_claims(
    config: &Issuer,
    claims: &Map<String, Value>,
    purpose: Purpose,
) -> Result<(String, Mapped), Rejection> {
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(Rejection::MissingClaim),
    };
    if !config.client_ids.is_empty() {
        // Each client-naming claim that is present must name an allowed client, and one of
        // them must be present: `client_id` naming ours does not cover an `azp` naming another.
        let named: Vec<Option<&str>> = CLIENT_CLAIMS
            .iter()
            .filter_map(|name| claims.get(*name))
            .map(Value::as_str)
            .collect();
        let allowed = |c: &Option<&str>| {
            c.is_some_and(|c| config.client_ids.iter().any(|allowed| allowed == c))
        };
        if named.is_empty() || !named.iter().all(allowed) {
            return Err(Rejection::Client);
        }
    }
    let is_admin = match &config.admin {
        Some((claim, values)) => list_claim(config, claims, claim)?
            .iter()
            .any(|v| values.iter().any(|a| a == v)),
        None => false,
    };
    match purpose {
        Purpose::Credentials => {
            if let Some(required) = &config.required_scope {
                if !list_claim(config, claims, &config.scope_claim)?
                    .iter()
                    .any(|s| s == required)
                {
                    return Err(Rejection::Scope);
                }
            }
        }
        Purpose::Admin => {
            if !is_admin {
                return Err(Rejection::Scope);
            }
        }
    }
    if let Some((claim, allowed)) = &config.tenant {
        let tenant = string_claim(config, claims, claim)?;
        if !tenant.is_some_and(|t| allowed.iter().any(|a| a == t)) {
            return Err(Rejection::Tenant);
        }
    }
    let username = match purpose {
        Purpose::Credentials => {
            let name =
                string_claim(config, claims, &config.username_claim)?.ok_or(Rejection::Username)?;
            if config.require_email_verified && !email_verified(claims.get("email_verified")) {
                return Err(Rejection::EmailUnverified);
            }
            if !config.user_domains.is_empty() {
                let domain = if config.user_domain_claim.is_empty() {
                    name.rsplit_once('@').map(|(_, d)| d)
                } else {
                    string_claim(config, claims, &config.user_domain_claim)?
                };
                let ok = domain.is_some_and(|d| {
                    config
                        .user_domains
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(d))
                });
                if !ok {
                    return Err(Rejection::UserDomain);
                }
            }
            Some(name.to_owned())
        }
        Purpose::Admin => None,
    };
    Ok((sub, Mapped { username, is_admin }))
}

/// `email_verified` as IdPs send it: JSON `true`, or the string `"true"` (Google's tokeninfo).
fn email_verified(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// The value at `path`: the top-level claim of that exact name (namespaced claims such as
/// `https://example.com/roles` contain dots), else the dotted path through nested objects.
pub(super) fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    if path.contains("://") {
        return None;
    }
    let mut segments = path.split('.');
    let mut value = claims.get(segments.next()?)?;
    for segment in segments {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

/// A scope/role list: a space-separated string or an array of strings; absent or `null` is
/// empty. Anything else is a shape this mapping does not know.
fn list_claim(
    config: &Issuer,
    claims: &Map<String, Value>,
    path: &str,
) -> Result<Vec<String>, Rejection> {
    match claim_at(claims, path) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| shape(config, path, "an array holding a non-string")),
        Some(other) => Err(shape(config, path, json_type(other))),
    }
}

/// A single string claim; absent is `None`, another JSON type a shape error.
fn string_claim<'a>(
    config: &Issuer,
    claims: &'a Map<String, Value>,
    path: &str,
) -> Result<Option<&'a str>, Rejection> {
    match claim_at(claims, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(shape(config, path, json_type(other))),
    }
}

fn shape(config: &Issuer, path: &str, found: &str) -> Rejection {
    tracing::warn!(
        issuer = %config.name,
        claim = path,
        found,
        "token refused: a claim has a shape the claim mapping does not know (fail closed)"
    );
    Rejection::ClaimShape
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer {
        Issuer {
            name: "t".into(),
            issuer: "https://idp.example.test".into(),
            discovery_url: String::new(),
            audience: "api".into(),
            algorithms: vec!["RS256".into()],
            token_types: vec!["JWT".into()],
            scope_claim: "scp".into(),
            required_scope: Some("sip".into()),
            client_ids: vec!["phone".into()],
            tenant: None,
            username_claim: "preferred_username".into(),
            require_email_verified: false,
            user_domains: Vec::new(),
            user_domain_claim: String::new(),
            admin: None,
            login_client_id: String::new(),
            login_scopes: Vec::new(),
            label: String::new(),
            domains: vec!["example.test".into()],
            ca_file: None,
            ca_pem: Vec::new(),
            proxy: None,
            opaque: None,
        }
    }

    fn map(config: &Issuer, claims: serde_json::Value) -> Result<Mapped, Rejection> {
        let serde_json::Value::Object(claims) = claims else {
            panic!("object")
        };
        mapped_claims(config, &claims, Purpose::Credentials).map(|(_, m)| m)
    }

    #[test]
    fn scopes_come_from_a_string_or_an_array_at_a_nested_path() {
        use serde_json::json;
        let mut c = issuer();
        let base = |scp: serde_json::Value| json!({"sub": "s", "azp": "phone", "preferred_username": "alice", "scp": scp});
        assert!(map(&c, base(json!("openid sip profile"))).is_ok());
        assert!(map(&c, base(json!(["openid", "sip"]))).is_ok());
        assert_eq!(map(&c, base(json!("sipx"))).err(), Some(Rejection::Scope));
        assert_eq!(map(&c, base(json!([]))).err(), Some(Rejection::Scope));
        // Unknown shapes fail closed, distinctly from a missing scope.
        for bad in [
            json!({"sip": true}),
            json!(["sip", 1]),
            json!(7),
            json!(true),
        ] {
            assert_eq!(map(&c, base(bad)).err(), Some(Rejection::ClaimShape));
        }
        c.scope_claim = "realm_access.roles".into();
        let kc = json!({"sub": "s", "azp": "phone", "preferred_username": "alice",
                        "realm_access": {"roles": ["offline_access", "sip"]}});
        assert!(map(&c, kc).is_ok());
        let kc = json!({"sub": "s", "azp": "phone", "preferred_username": "alice",
                        "realm_access": {"roles": ["offline_access"]}});
        assert_eq!(map(&c, kc).err(), Some(Rejection::Scope));
        let kc = json!({"sub": "s", "azp": "phone", "preferred_username": "alice",
                        "realm_access": "sip"});
        assert_eq!(map(&c, kc).err(), Some(Rejection::Scope));
        // A namespaced claim with dots is read whole.
        c.scope_claim = "https://sipward.example/roles".into();
        let a0 = json!({"sub": "s", "azp": "phone", "preferred_username": "alice",
                        "https://sipward.example/roles": ["sip"]});
        assert!(map(&c, a0).is_ok());
    }

    #[test]
    fn every_client_claim_present_must_name_an_allowed_client() {
        use serde_json::json;
        let c = issuer();
        for name in CLIENT_CLAIMS {
            let ok = json!({"sub": "s", name: "phone", "preferred_username": "a", "scp": "sip"});
            assert!(map(&c, ok).is_ok(), "{name}");
            let other = json!({"sub": "s", name: "other", "preferred_username": "a", "scp": "sip"});
            assert_eq!(map(&c, other).err(), Some(Rejection::Client), "{name}");
            let mixed = json!({"sub": "s", "azp": "phone", name: "other",
                               "preferred_username": "a", "scp": "sip"});
            assert_eq!(map(&c, mixed).err(), Some(Rejection::Client), "{name}");
        }
        let none = json!({"sub": "s", "preferred_username": "a", "scp": "sip"});
        assert_eq!(map(&c, none).err(), Some(Rejection::Client));
        let number = json!({"sub": "s", "cid": 5, "preferred_username": "a", "scp": "sip"});
        assert_eq!(map(&c, number).err(), Some(Rejection::Client));
    }

    #[test]
    fn tenant_email_verified_and_user_domain() {
        use serde_json::json;
        let mut c = issuer();
        c.tenant = Some(("tid".into(), vec!["t1".into()]));
        c.require_email_verified = true;
        c.username_claim = "email".into();
        c.user_domains = vec!["example.test".into()];
        let good = json!({"sub": "s", "azp": "phone", "scp": "sip", "tid": "t1",
                          "email": "alice@example.test", "email_verified": true});
        assert!(map(&c, good.clone()).is_ok());
        let with = |k: &str, v: serde_json::Value| {
            let mut g = good.clone();
            g[k] = v;
            g
        };
        assert_eq!(
            map(&c, with("tid", json!("t2"))).err(),
            Some(Rejection::Tenant)
        );
        assert_eq!(
            map(&c, with("tid", json!(["t1"]))).err(),
            Some(Rejection::ClaimShape)
        );
        assert!(map(&c, with("email_verified", json!("true"))).is_ok());
        for bad in [
            json!(false),
            json!("false"),
            json!(1),
            serde_json::Value::Null,
        ] {
            assert_eq!(
                map(&c, with("email_verified", bad)).err(),
                Some(Rejection::EmailUnverified)
            );
        }
        assert_eq!(
            map(&c, with("email", json!("alice@evil.test"))).err(),
            Some(Rejection::UserDomain)
        );
        assert_eq!(
            map(&c, with("email", json!({"v": 1}))).err(),
            Some(Rejection::ClaimShape)
        );
        // Google Workspace: the domain from `hd`.
        c.user_domain_claim = "hd".into();
        assert_eq!(map(&c, good.clone()).err(), Some(Rejection::UserDomain));
        assert!(map(&c, with("hd", json!("EXAMPLE.test"))).is_ok());
        assert_eq!(
            map(&c, with("hd", json!("gmail.com"))).err(),
            Some(Rejection::UserDomain)
        );
        let mut no_email = good.clone();
        no_email.as_object_mut().unwrap().remove("email");
        assert_eq!(map(&c, no_email).err(), Some(Rejection::Username));
    }
}
