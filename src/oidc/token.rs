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
//! Steps 6 and 7 are `claims::mapped_claims`, shared with opaque tokens (introspection
//! answers).
//!
//! Every failure is a [`Rejection`]; the API turns all token faults into one generic 401.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::claims::mapped_claims;
use super::json::strict_json;
use super::{IssuerRegistry, Purpose, Rejection, Verified};

/// Largest token accepted (docs/token-api.md step 1).
pub const MAX_TOKEN_BYTES: usize = 8192;
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
        return super::opaque::validate(
            issuer.opaque_site(),
            token,
            purpose,
            now,
            registry.leeway(),
        )
        .await;
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
        match super::opaque::validate(issuer.opaque_site(), token, purpose, now, registry.leeway())
            .await
        {
            Err(Rejection::Inactive) => continue,
            other => return other,
        }
    }
    Err(Rejection::Inactive)
}

pub(super) fn decode_rejection(e: &jsonwebtoken::errors::Error) -> Rejection {
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
}
