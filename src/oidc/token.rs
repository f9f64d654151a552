//! Access-token validation, in docs/token-api.md's order, failing closed:
//!
//! 1. size ≤ 8 KiB, exactly three segments of strict base64url (no padding, no `+/`), header
//!    and payload strict JSON (no duplicate keys, nesting ≤ 16): all before any crypto;
//! 2. header: `alg` a known asymmetric algorithm (never `none`/HS*), no `crit`, `kid` a short
//!    string if present; `jku`, `x5u`, `jwk`, `x5c` are ignored (never fetched);
//! 3. the issuer picked from the registry by the exact, not yet trusted `iss`; `alg` in its
//!    allowlist;
//! 4. the key by `kid` from its JWKS cache (`issuer.rs`);
//! 5. signature and registered claims with `jsonwebtoken`: `exp`, `iat`, `iss`, `aud`, `sub`
//!    required, exact `iss`, our audience, `nbf` checked, the configured leeway (≤ 60 s);
//! 6. ours: `typ`, no ID token (`nonce`, or `aud` naming a client), client id (each of
//!    `client_id`, `azp`, `cid` and `appid` that is present must name an allowed client),
//!    scope/role (a string or an array, at a configurable claim path), tenant;
//! 7. the username claim present as a string (the API maps it to an AoR, `api::aor`), with
//!    `email_verified` and the user's domain checked when configured.
//!
//! Steps 6 and 7 are [`mapped_claims`], shared with opaque tokens (introspection answers).
//!
//! Every failure is a [`Rejection`]; the API turns all token faults into one generic 401.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{IssuerRegistry, Purpose, Rejection, Verified};
use crate::config::Issuer;

/// Largest token accepted (docs/token-api.md step 1).
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Deepest JSON nesting accepted in a header or payload.
pub const MAX_JSON_DEPTH: usize = 16;
/// Longest `kid` looked up.
pub const MAX_KID_BYTES: usize = 256;

/// The parsed, not yet trusted parts of a token.
pub(crate) struct Parts {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub claims: Map<String, Value>,
}

/// Step 1 and 2: shape, strict JSON, header rules. No crypto.
pub(crate) fn parse(token: &str) -> Result<Parts, Rejection> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::Malformed);
    }
    let mut segments = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(Rejection::Malformed);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(Rejection::Malformed);
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.decode(h).map_err(|_| Rejection::Malformed)?;
    let payload = b64.decode(p).map_err(|_| Rejection::Malformed)?;
    b64.decode(s).map_err(|_| Rejection::Malformed)?;
    let Value::Object(header) = strict_json(&header)? else {
        return Err(Rejection::Malformed);
    };
    let Value::Object(claims) = strict_json(&payload)? else {
        return Err(Rejection::Malformed);
    };
    if header.contains_key("crit") {
        return Err(Rejection::Header);
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => asymmetric(name).ok_or(Rejection::Algorithm)?,
        _ => return Err(Rejection::Algorithm),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_BYTES => {
            Some(kid.clone())
        }
        Some(_) => return Err(Rejection::Header),
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(Rejection::Header),
    };
    Ok(Parts {
        alg,
        kid,
        typ,
        claims,
    })
}

/// The asymmetric JWS algorithms, by exact name.
pub(super) fn asymmetric(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Steps 3 to 7.
pub(crate) async fn validate(
    registry: &IssuerRegistry,
    token: &str,
    purpose: Purpose,
    now: u64,
) -> Result<Verified, Rejection> {
    let parts = match parse(token) {
        Ok(parts) => parts,
        Err(r) => return not_a_jwt(registry, token, purpose, now, r).await,
    };
    let iss = match parts.claims.get("iss") {
        Some(Value::String(iss)) => iss.as_str(),
        _ => return Err(Rejection::UnknownIssuer),
    };
    let issuer = registry.issuer(iss).ok_or(Rejection::UnknownIssuer)?;
    let config = &issuer.config;
    if config.opaque.is_some() {
        // A JWT-shaped token of an opaque issuer (Okta's org server): its keys are not for
        // us; the issuer says whether it is active.
        return super::opaque::validate(issuer, token, purpose, now, registry.leeway()).await;
    }
    if !config
        .algorithms
        .iter()
        .any(|a| asymmetric(a) == Some(parts.alg))
    {
        return Err(Rejection::Algorithm);
    }
    let key = issuer.key(parts.kid.as_deref(), parts.alg).await?;

    let mut validation = Validation::new(parts.alg);
    validation.algorithms = vec![parts.alg];
    validation.leeway = registry.leeway().as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[config.issuer.as_str()]);
    validation.set_audience(&[config.audience.as_str()]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        .map_err(|e| decode_rejection(&e))?;
    let claims = data.claims;

    // iat: required, a number, not in the future beyond the leeway (J8).
    let iat = match claims.get("iat").and_then(Value::as_u64) {
        Some(iat) => iat,
        None => return Err(Rejection::MissingClaim),
    };
    if iat > now + registry.leeway().as_secs() {
        return Err(Rejection::IssuedInFuture);
    }
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);

    // Explicit typing (RFC 8725 §3.11, RFC 9068 §2.1). An empty entry in `token_types`
    // accepts a header without `typ` (Okta).
    let typ_ok = match parts.typ.as_deref() {
        None => config.token_types.iter().any(String::is_empty),
        Some(typ) => {
            let typ = typ.strip_prefix("application/").unwrap_or(typ);
            config.token_types.iter().any(|t| {
                !t.is_empty()
                    && t.strip_prefix("application/")
                        .unwrap_or(t)
                        .eq_ignore_ascii_case(typ)
            })
        }
    };
    if !typ_ok {
        return Err(Rejection::TokenType);
    }
    // An ID token on this path: it carries a nonce, or its audience is a client.
    let auds = strings(claims.get("aud"));
    if claims.contains_key("nonce")
        || auds.iter().any(|a| {
            config.client_ids.iter().any(|c| c == a)
                || (!config.login_client_id.is_empty() && *a == config.login_client_id)
        })
    {
        return Err(Rejection::IdToken);
    }
    let (sub, username) = mapped_claims(config, &claims, purpose)?;
    Ok(Verified {
        issuer_name: config.name.clone(),
        iss: config.issuer.clone(),
        sub,
        jti: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
        kid: parts.kid,
        iat,
        exp,
        username: username.username,
        issuer_domains: config.domains.clone(),
        admin_domains: if username.is_admin {
            config.domains.clone()
        } else {
            Vec::new()
        },
    })
}

/// A token that does not parse as a JWT: refused with `jwt_rejection` unless it is not
/// JWT-shaped at all (`Malformed`; a JWT with a refused header keeps its reason) and opaque
/// issuers are configured, which are then asked in config order until one says it is active.
async fn not_a_jwt(
    registry: &IssuerRegistry,
    token: &str,
    purpose: Purpose,
    now: u64,
    jwt_rejection: Rejection,
) -> Result<Verified, Rejection> {
    let issuers = registry.opaque_issuers();
    if issuers.is_empty()
        || jwt_rejection != Rejection::Malformed
        || !super::opaque::plausible(token)
    {
        return Err(jwt_rejection);
    }
    for issuer in issuers {
        match super::opaque::validate(issuer, token, purpose, now, registry.leeway()).await {
            Err(Rejection::Inactive) => continue,
            other => return other,
        }
    }
    Err(Rejection::Inactive)
}

/// The claims that name a client, in the shapes IdPs send: RFC 9068 `client_id`, OIDC `azp`
/// (Entra v2, Keycloak, Auth0), Okta's `cid`, Entra v1's `appid`.
pub(crate) const CLIENT_CLAIMS: [&str; 4] = ["client_id", "azp", "cid", "appid"];

/// What the claim mapping found besides `sub`.
pub(crate) struct Mapped {
    pub username: Option<String>,
    pub is_admin: bool,
}

/// Steps 6 (client, scope, tenant) and 7 (username, `email_verified`, user domain) on claims
/// already trusted: from a verified JWT or from an introspection/userinfo answer. Returns
/// `sub` and the mapped values. A claim of a shape the mapping does not know (an object where
/// a string or list is expected, a list holding a non-string) fails closed with
/// [`Rejection::ClaimShape`] and a log line naming the claim.
pub(crate) fn mapped_claims(
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
pub(crate) fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
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

fn decode_rejection(e: &jsonwebtoken::errors::Error) -> Rejection {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => Rejection::Expired,
        K::ImmatureSignature => Rejection::NotYetValid,
        K::InvalidIssuer => Rejection::Issuer,
        K::InvalidAudience => Rejection::Audience,
        K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) | K::InvalidSubject => {
            Rejection::MissingClaim
        }
        K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidEddsaKey => {
            Rejection::Signature
        }
        K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName => Rejection::Algorithm,
        _ => Rejection::Signature,
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// JSON with duplicate keys or nesting deeper than [`MAX_JSON_DEPTH`] refused.
pub(super) fn strict_json(bytes: &[u8]) -> Result<Value, Rejection> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { depth: 0 }
        .deserialize(&mut de)
        .map_err(|_| Rejection::Malformed)?;
    de.end().map_err(|_| Rejection::Malformed)?;
    Ok(value)
}

struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(A::Error::custom("nested too deep"));
        }
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict {
            depth: self.depth + 1,
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(A::Error::custom("nested too deep"));
        }
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(A::Error::custom("duplicate key"));
            }
            let v = map.next_value_seed(Strict {
                depth: self.depth + 1,
            })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }

    #[test]
    fn shape_and_json_are_checked_before_crypto() {
        let good = token(r#"{"alg":"ES256","kid":"k"}"#, r#"{"iss":"x"}"#);
        assert!(parse(&good).is_ok());
        for bad in [
            String::new(),
            "a.b".to_owned(),
            format!("{good}.x.y"),
            format!("{good}="),
            good.replace('.', ".+"),
            token(r#"{"alg":"ES256","alg":"none"}"#, "{}"),
            token(r#"{"alg":"ES256"}"#, r#"{"iss":"a","iss":"b"}"#),
            token(
                &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
                "{}",
            ),
            token(
                r#"{"alg":"ES256"}"#,
                &format!("{{\"a\":{}1{}}}", "[".repeat(20), "]".repeat(20)),
            ),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(
                matches!(parse(&bad), Err(Rejection::Malformed)),
                "{bad:.80}"
            );
        }
        for alg in ["none", "None", "NONE", "nOnE", "HS256", "es256"] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            assert!(matches!(parse(&t), Err(Rejection::Algorithm)), "{alg}");
        }
        let crit = token(r#"{"alg":"ES256","crit":["exp"]}"#, "{}");
        assert!(matches!(parse(&crit), Err(Rejection::Header)));
        let long_kid = token(
            &format!(r#"{{"alg":"ES256","kid":"{}"}}"#, "a".repeat(300)),
            "{}",
        );
        assert!(matches!(parse(&long_kid), Err(Rejection::Header)));
    }

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
