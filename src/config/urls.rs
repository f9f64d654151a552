//! The rules for what an issuer's config points at: every issuer or fetch URL is `https://`,
//! or `http://` on a loopback host only (tests, development); a proxy URL holds no
//! credentials; a CA bundle is PEM certificates that parse; a claim path is a name or a short
//! dotted path.

use std::net::IpAddr;
use std::path::Path;

/// Largest CA bundle read.
const MAX_CA_BUNDLE_BYTES: u64 = 1024 * 1024;

/// Reads a PEM bundle of CA certificates: at least one `CERTIFICATE` block, each a parsable
/// X.509 certificate.
pub(super) fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .len();
    if size > MAX_CA_BUNDLE_BYTES {
        return Err(format!(
            "{shown} is larger than {MAX_CA_BUNDLE_BYTES} bytes"
        ));
    }
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut count = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(&pem) {
        let block = block.map_err(|e| format!("{shown} is not PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        block
            .parse_x509()
            .map_err(|e| format!("{shown}: certificate {} does not parse: {e}", count + 1))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!("{shown} holds no PEM CERTIFICATE block"));
    }
    Ok(pem)
}

/// A proxy URL: `http://host:port` (or `https://`), no credentials, path or query. Messages
/// never repeat the value (it might hold a password).
pub(super) fn check_proxy_url(text: &str) -> Result<(), String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        return Err(
            "must not hold credentials (user:password@); proxy authentication is not supported"
                .to_owned(),
        );
    }
    if authority.is_empty() || authority.contains(['/', '?', '#']) {
        return Err("must be a proxy's scheme, host and port only (no path or query)".to_owned());
    }
    Ok(())
}

/// Longest claim path accepted, and most segments in it.
const MAX_CLAIM_PATH: usize = 256;
const MAX_CLAIM_SEGMENTS: usize = 8;

/// A claim name or dotted path (`scp`, `realm_access.roles`, `https://example.com/user`): not
/// empty, no control characters or whitespace, at most 8 non-empty segments. A name that
/// contains dots is first looked up whole (namespaced claims such as Auth0's), then as a path.
pub fn check_claim_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if path.len() > MAX_CLAIM_PATH || path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{path:?} must be at most {MAX_CLAIM_PATH} bytes without whitespace or control characters"
        ));
    }
    if !path.contains("://") {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.len() > MAX_CLAIM_SEGMENTS || segments.iter().any(|s| s.is_empty()) {
            return Err(format!(
                "{path:?} must be a claim name or a dotted path of at most {MAX_CLAIM_SEGMENTS} non-empty names (e.g. \"realm_access.roles\")"
            ));
        }
    }
    Ok(())
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
}
