//! The one outbound HTTP client: discovery documents, JWKS, and for opaque tokens the
//! configured introspection, userinfo and token-info endpoints, and nothing else. Redirects
//! are never followed, every request has a timeout, bodies are capped while they stream in,
//! and only `https://` (or `http://` on loopback) URLs are fetched. URLs come from config and
//! from the configured issuer's discovery document, never from a token (docs/testing.md J6).
//!
//! TLS is rustls with the aws-lc-rs provider (the binary's one crypto backend) and the
//! Mozilla root set (`webpki-roots`), plus, per issuer, the CA certificates of its `ca_file`
//! (a company CA in front of an on-premises IdP). Environment proxies are not used; an
//! issuer's `proxy` carries its https requests through HTTP CONNECT (reqwest's own proxy
//! support: the proxy sees the host name, never the TLS content). Each issuer has its own
//! client, so one issuer's CA or proxy never applies to another.

use std::time::Duration;

use crate::config::check_url;

/// A fetched JSON body and its `Cache-Control: max-age`, if any.
#[derive(Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub max_age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("refused URL: {0}")]
    Url(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_bytes: usize,
}

impl Fetcher {
    pub fn new(timeout: Duration, max_bytes: usize) -> Result<Fetcher, FetchError> {
        Fetcher::with_connectivity(timeout, max_bytes, &[], None)
    }

    /// A client that also trusts the PEM certificates in `extra_roots` and sends https
    /// requests through the CONNECT proxy `proxy`.
    pub fn with_connectivity(
        timeout: Duration,
        max_bytes: usize,
        extra_roots: &[u8],
        proxy: Option<&str>,
    ) -> Result<Fetcher, FetchError> {
        // reqwest's rustls has no built-in provider here: install aws-lc-rs process-wide (a
        // no-op if the TLS listener already did).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .user_agent(concat!("sipward/", env!("CARGO_PKG_VERSION")));
        if !extra_roots.is_empty() {
            for cert in reqwest::Certificate::from_pem_bundle(extra_roots)
                .map_err(|e| FetchError::Request(format!("ca_file: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(proxy) = proxy {
            builder = builder.proxy(
                reqwest::Proxy::https(proxy)
                    .map_err(|e| FetchError::Request(format!("proxy: {e}")))?,
            );
        }
        let client = builder
            .build()
            .map_err(|e| FetchError::Request(e.to_string()))?;
        Ok(Fetcher { client, max_bytes })
    }

    pub async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        check_url(url).map_err(FetchError::Url)?;
        let response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| FetchError::Request(without_url(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        self.read(response).await
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body of `form`, and, when given,
    /// HTTP Basic client authentication as RFC 6749 §2.3.1 spells it (both parts
    /// form-urlencoded first). Any status is returned with its (capped) body.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &[u8])],
        basic: Option<(&str, &[u8])>,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        check_url(url).map_err(FetchError::Url)?;
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k.as_bytes()), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        if let Some((id, secret)) = basic {
            use base64::Engine as _;
            let pair = format!("{}:{}", form_encode(id.as_bytes()), form_encode(secret));
            let mut value = reqwest::header::HeaderValue::try_from(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
            .map_err(|_| FetchError::Request("client credentials".to_owned()))?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        self.answered(request).await
    }

    /// `GET url` with `Authorization: Bearer token`. Any status is returned with its body.
    pub async fn get_bearer(&self, url: &str, token: &str) -> Result<(u16, Vec<u8>), FetchError> {
        check_url(url).map_err(FetchError::Url)?;
        let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| FetchError::Request("token is not a header value".to_owned()))?;
        value.set_sensitive(true);
        let request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::AUTHORIZATION, value);
        self.answered(request).await
    }

    async fn answered(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        let response = request
            .send()
            .await
            .map_err(|e| FetchError::Request(without_url(&e)))?;
        let status = response.status().as_u16();
        Ok((status, self.read(response).await?.body))
    }

    async fn read(&self, mut response: reqwest::Response) -> Result<Fetched, FetchError> {
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(FetchError::TooLarge(self.max_bytes));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Request(without_url(&e)))?
        {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(FetchError::TooLarge(self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, max_age })
    }
}

/// `application/x-www-form-urlencoded` encoding of bytes.
fn form_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    format!("{kind}: {}", e.without_url_ref())
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        use std::error::Error as _;
        let mut text = String::new();
        let mut source = self.source();
        while let Some(s) = source {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&s.to_string());
            source = s.source();
        }
        if text.is_empty() {
            "failed".to_owned()
        } else {
            text
        }
    }
}

/// `max-age=N` from a Cache-Control value (`no-store`/`no-cache` give 0).
fn max_age(value: &str) -> Option<Duration> {
    let mut out = None;
    for directive in value.split(',') {
        let d = directive.trim();
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if let Some((name, v)) = d.split_once('=') {
            if name.trim().eq_ignore_ascii_case("max-age") {
                out = v
                    .trim()
                    .trim_matches('"')
                    .parse()
                    .ok()
                    .map(Duration::from_secs);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_parsing() {
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode(b"a b+c/d:e%"), "a+b%2Bc%2Fd%3Ae%25");
        assert_eq!(form_encode(b"Az09-_.*"), "Az09-_.*");
    }
}
