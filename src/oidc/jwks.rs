//! A JWKS document turned into verification keys. Keys that cannot verify an allowed IdP
//! signature are dropped while loading, before the count cap is applied, so entries padding
//! the document cannot push the real keys out: `oct` (symmetric), `use = "enc"`, unknown key
//! types and curves, keys that fit none of the issuer's allowed algorithms (a JWK's `alg`, when
//! given, pins the key to that one algorithm; its `kty`/`crv` must fit in any case), and key
//! material of the wrong size (RSA moduli under 2048 bits, EC or Ed25519 coordinates not of the
//! curve's length). Only then are keys past the cap dropped.
//!
//! A token without `kid` is verified only when the set holds exactly one key (docs/token-api.md
//! step 2), not when exactly one of several keys fits its `alg`.

use std::sync::Arc;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};

/// One usable key.
pub struct VerifyKey {
    pub kid: Option<String>,
    /// `RSA`, `EC` or `OKP`.
    kty: String,
    /// `P-256`, `P-384`, `Ed25519` for EC/OKP.
    crv: Option<String>,
    /// The JWK's own `alg`, if it names one.
    alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl VerifyKey {
    /// Whether this key may verify a signature made with `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self.kty == "RSA",
            Algorithm::ES256 => self.kty == "EC" && self.crv.as_deref() == Some("P-256"),
            Algorithm::ES384 => self.kty == "EC" && self.crv.as_deref() == Some("P-384"),
            Algorithm::EdDSA => self.kty == "OKP" && self.crv.as_deref() == Some("Ed25519"),
            _ => false,
        }
    }
}

/// The keys of one issuer at one moment. Immutable; replaced whole on refresh.
#[derive(Default)]
pub(super) struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token header: by `kid`; without a `kid` only when the set holds exactly
    /// one key and it fits `alg` (docs/token-api.md step 2).
    pub(super) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) if k.fits(alg) => Lookup::Found(k.clone()),
                Some(_) => Lookup::Mismatch,
                None => Lookup::Unknown,
            },
            None => match self.keys.as_slice() {
                [only] if only.fits(alg) => Lookup::Found(only.clone()),
                _ => Lookup::Mismatch,
            },
        }
    }
}

pub(super) enum Lookup {
    Found(Arc<VerifyKey>),
    /// No key has this kid.
    Unknown,
    /// A key exists but does not fit the algorithm (or no kid and not exactly one key).
    Mismatch,
}

/// Parses a JWKS body, keeping the keys that fit one of `allowed` (at most `max_keys` of
/// them). Returns the usable keys and how many entries were dropped.
pub(super) fn parse(
    body: &[u8],
    max_keys: usize,
    allowed: &[Algorithm],
) -> Result<(KeySet, usize), String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let entries = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("JWKS has no \"keys\" array")?;
    let mut keys = Vec::new();
    let mut dropped = 0;
    for entry in entries {
        match key(entry).filter(|k| allowed.iter().any(|alg| k.fits(*alg))) {
            Some(k) if keys.len() < max_keys => keys.push(Arc::new(k)),
            _ => dropped += 1,
        }
    }
    Ok((KeySet { keys }, dropped))
}

fn key(entry: &serde_json::Value) -> Option<VerifyKey> {
    let kty = entry.get("kty")?.as_str()?;
    if !matches!(kty, "RSA" | "EC" | "OKP") {
        return None; // `oct` and anything unknown
    }
    if entry
        .get("use")
        .and_then(|u| u.as_str())
        .is_some_and(|u| u != "sig")
    {
        return None;
    }
    let alg = match entry.get("alg").and_then(|a| a.as_str()) {
        Some(name) => {
            let alg: Algorithm = name.parse().ok()?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return None;
            }
            Some(alg)
        }
        None => None,
    };
    let crv = entry.get("crv").and_then(|c| c.as_str()).map(str::to_owned);
    if !material_fits(entry, kty, crv.as_deref()) {
        return None;
    }
    let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerifyKey {
        kid: entry.get("kid").and_then(|k| k.as_str()).map(str::to_owned),
        kty: kty.to_owned(),
        crv,
        alg,
        key,
    })
}

/// Smallest RSA modulus accepted (RFC 7518 §3.3: 2048 bits or larger).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Whether the key material has the size its type and curve need.
fn material_fits(entry: &serde_json::Value, kty: &str, crv: Option<&str>) -> bool {
    let bytes = |name: &str| {
        entry.get(name).and_then(|v| v.as_str()).and_then(|v| {
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v).ok()
        })
    };
    match (kty, crv) {
        ("RSA", _) => bytes("n").is_some_and(|n| {
            let significant = n.iter().skip_while(|b| **b == 0).count();
            significant >= MIN_RSA_MODULUS_BYTES
        }),
        ("EC", Some(crv)) => {
            let len = match crv {
                "P-256" => 32,
                "P-384" => 48,
                _ => return false,
            };
            bytes("x").is_some_and(|x| x.len() == len) && bytes("y").is_some_and(|y| y.len() == len)
        }
        ("OKP", Some("Ed25519")) => bytes("x").is_some_and(|x| x.len() == 32),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: &str = r#"{"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;
    const EC: &str = r#"{"kty":"EC","kid":"e1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    const ALLOWED: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];

    #[test]
    fn drops_symmetric_encryption_and_unknown_keys() {
        let body = format!(
            r#"{{"keys":[{RSA},{EC},{{"kty":"oct","k":"c2VjcmV0","kid":"h"}},
            {{"kty":"RSA","use":"enc","kid":"x","n":"AQAB","e":"AQAB"}},{{"kty":"XYZ"}},
            {{"kty":"RSA","kid":"hs","alg":"HS256","n":"AQAB","e":"AQAB"}}]}}"#
        );
        let (set, dropped) = parse(body.as_bytes(), 10, ALLOWED).unwrap();
        assert_eq!((set.len(), dropped), (2, 4));
        assert!(matches!(
            set.find(Some("r1"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("r1"), Algorithm::PS256),
            Lookup::Mismatch
        ));
        assert!(matches!(
            set.find(Some("e1"), Algorithm::ES256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("e1"), Algorithm::ES384),
            Lookup::Mismatch
        ));
        assert!(matches!(
            set.find(Some("h"), Algorithm::RS256),
            Lookup::Unknown
        ));
        // Two keys: a token without kid is refused even though only one key fits its alg.
        assert!(matches!(set.find(None, Algorithm::ES256), Lookup::Mismatch));
        assert!(matches!(set.find(None, Algorithm::RS256), Lookup::Mismatch));
        let (one, _) = parse(format!(r#"{{"keys":[{EC}]}}"#).as_bytes(), 10, ALLOWED).unwrap();
        assert!(matches!(one.find(None, Algorithm::ES256), Lookup::Found(_)));
        assert!(matches!(one.find(None, Algorithm::RS256), Lookup::Mismatch));
    }

    #[test]
    fn unusable_entries_do_not_count_towards_the_cap() {
        let rsa: serde_json::Value = serde_json::from_str(RSA).unwrap();
        let ec: serde_json::Value = serde_json::from_str(EC).unwrap();
        let mut entries = Vec::new();
        for i in 0..100 {
            let mut e = match i % 4 {
                0 => rsa.clone(),
                _ => ec.clone(),
            };
            e["kid"] = serde_json::json!(format!("pad-{i}"));
            match i % 4 {
                0 => e["alg"] = serde_json::json!("RS512"), // not allowed for the issuer
                1 => e["alg"] = serde_json::json!("ES384"), // a P-256 key labelled ES384
                2 => e["x"] = serde_json::json!("AQAB"),    // too short for P-256
                _ => {
                    e = serde_json::json!({"kty": "RSA", "kid": format!("pad-{i}"), "n": "AQAAAAAAAAE", "e": "AQAB"})
                }
            }
            entries.push(e);
        }
        entries.push(rsa);
        entries.push(ec);
        let body = serde_json::json!({ "keys": entries }).to_string();
        let (set, dropped) = parse(body.as_bytes(), 32, ALLOWED).unwrap();
        assert_eq!((set.len(), dropped), (2, 100));
        assert!(matches!(
            set.find(Some("r1"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("e1"), Algorithm::ES256),
            Lookup::Found(_)
        ));
        // Only keys the issuer cannot use: an empty set (the caller keeps its old keys).
        let (set, _) = parse(
            format!(r#"{{"keys":[{RSA}]}}"#).as_bytes(),
            32,
            &[Algorithm::ES256],
        )
        .unwrap();
        assert!(set.is_empty());
    }

    #[test]
    fn caps_the_key_count_and_refuses_junk() {
        let body = format!(r#"{{"keys":[{RSA},{EC}]}}"#);
        let (set, dropped) = parse(body.as_bytes(), 1, ALLOWED).unwrap();
        assert_eq!((set.len(), dropped), (1, 1));
        assert!(parse(b"{\"keys\": [ not json", 10, ALLOWED).is_err());
        assert!(parse(b"{}", 10, ALLOWED).is_err());
    }
}
