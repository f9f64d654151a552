//! The HTTP answers of the token and admin routes (RFC 6750 errors, `Retry-After`), the
//! Bearer header they read, and RFC 3339 times for their bodies. Every token fault gives the
//! same 401 body; the reason goes to metrics and logs only.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::oidc::{Answer, Rejection};
use crate::store::StoreError;

/// The one description every token fault gets.
pub const INVALID_TOKEN_DESCRIPTION: &str = "the access token is not valid";

// ---- Responses ----

pub(super) fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

pub(super) fn with_header(mut r: Response, name: header::HeaderName, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

/// 401 without an error code (RFC 6750 §3.1: no credentials were sent).
pub(super) fn missing_token() -> Response {
    with_header(
        json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "unauthorized"}),
        ),
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"sipward\"",
    )
}

pub(super) fn invalid_token() -> Response {
    with_header(
        json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_token", "error_description": INVALID_TOKEN_DESCRIPTION}),
        ),
        header::WWW_AUTHENTICATE,
        &format!(
            "Bearer realm=\"sipward\", error=\"invalid_token\", error_description=\"{INVALID_TOKEN_DESCRIPTION}\""
        ),
    )
}

pub(super) fn bad_request() -> Response {
    with_header(
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request"}),
        ),
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"sipward\", error=\"invalid_request\"",
    )
}

pub(super) fn retry_after(status: StatusCode, error: &str, after: Duration) -> Response {
    let secs = after.as_secs().max(1).to_string();
    with_header(
        json(status, serde_json::json!({"error": error})),
        header::RETRY_AFTER,
        &secs,
    )
}

pub(super) fn rejection_response(r: Rejection) -> Response {
    match r.answer() {
        Answer::InvalidToken => invalid_token(),
        Answer::InsufficientScope => with_header(
            json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "insufficient_scope"}),
            ),
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"sipward\", error=\"insufficient_scope\"",
        ),
        Answer::AccessDenied => json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": "access_denied"}),
        ),
        Answer::Unavailable => retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            Duration::from_secs(5),
        ),
    }
}

pub(super) fn store_failed(e: &StoreError) -> Response {
    tracing::error!(error = %e, "device store failed");
    retry_after(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        Duration::from_secs(5),
    )
}

pub(super) fn not_found() -> Response {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"error": "not_found"}),
    )
}

/// A request with more than one `Authorization` header: malformed (RFC 6750 §3.1), answered
/// 400 `invalid_request` whatever the headers hold, so no order of a valid and a forged
/// token decides anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DuplicateAuthorization;

/// The bearer token: `Ok(None)` when there is no `Authorization` header or it is not the
/// `Bearer` scheme (case-insensitive) with a token.
pub(super) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, DuplicateAuthorization> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(header::AUTHORIZATION) {
            Err(DuplicateAuthorization)
        } else {
            Ok(None)
        };
    };
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    });
    Ok(token)
}

/// RFC 3339 UTC for Unix seconds (proleptic Gregorian, H. Hinnant's civil_from_days).
pub(super) fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_436_490), "2026-11-23T12:21:30Z");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Ok(None));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Ok(Some("abc")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), Ok(None));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), Ok(None));
    }

    #[test]
    fn two_authorization_headers_are_refused_in_either_order() {
        for (first, second) in [("Bearer good", "Bearer forged"), ("Basic x", "Bearer good")] {
            let mut h = HeaderMap::new();
            h.append(header::AUTHORIZATION, HeaderValue::from_static(first));
            h.append(header::AUTHORIZATION, HeaderValue::from_static(second));
            assert_eq!(bearer(&h), Err(DuplicateAuthorization));
        }
    }
}
