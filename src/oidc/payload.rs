//! The payload claims of an already validated JWT, for decisions on claims `Verified` does not
//! carry (the role claim of `api::roles`). Kept apart from `claims.rs` (the claim mapping,
//! which `token.rs` uses) because this reads the token through `token.rs`.

use serde_json::{Map, Value};

/// The payload claims of a token that [`super::IssuerRegistry::validate`] has already
/// accepted, for decisions on claims `Verified` does not carry (the role claim of
/// `api::roles`). Must never be called on a token that was not validated first. `None` for a
/// token that is not a JWT (an opaque token's claims come from its introspection answer and
/// are not kept: roles from groups need JWT access tokens).
pub fn of_validated(token: &str) -> Option<Map<String, Value>> {
    super::token::parse(token).ok().map(|p| p.claims)
}

/// A claim as a list of strings: a string (space-separated) or an array of strings.
pub fn strings(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}
