//! `Status`: a SIP response status code (RFC 3261 §7.2, §21), and `StatusClass`, its class
//! (`1xx` … `6xx`), the label metrics count responses by. On its own so the parser, the
//! response builder, the proxy and metrics all name statuses the same way.
//!
//! A `Status` from the wire is built only by parsing (exactly three digits, 100 to 699); the
//! statuses this server sends are the named constants.

use std::fmt;

/// A status code, 100 to 699.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(u16);

impl Status {
    pub const TRYING: Status = Status(100);
    pub const OK: Status = Status(200);
    pub const BAD_REQUEST: Status = Status(400);
    pub const UNAUTHORIZED: Status = Status(401);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    pub const PROXY_AUTHENTICATION_REQUIRED: Status = Status(407);
    pub const REQUEST_TIMEOUT: Status = Status(408);
    pub const BAD_EXTENSION: Status = Status(420);
    pub const INTERVAL_TOO_BRIEF: Status = Status(423);
    pub const TEMPORARILY_UNAVAILABLE: Status = Status(480);
    pub const CALL_DOES_NOT_EXIST: Status = Status(481);
    pub const LOOP_DETECTED: Status = Status(482);
    pub const TOO_MANY_HOPS: Status = Status(483);
    pub const REQUEST_TERMINATED: Status = Status(487);
    pub const SERVER_INTERNAL_ERROR: Status = Status(500);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    pub const VERSION_NOT_SUPPORTED: Status = Status(505);

    /// The Status-Code of a Status-Line: exactly three digits, 100 to 699.
    pub fn parse(text: &str) -> Option<Status> {
        let digits = text.as_bytes();
        if digits.len() != 3 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let code = digits
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        (100..=699).contains(&code).then_some(Status(code))
    }

    pub fn code(self) -> u16 {
        self.0
    }

    pub fn class(self) -> StatusClass {
        StatusClass::of(self.0)
    }

    /// A final response (2xx to 6xx), not a provisional one.
    pub fn is_final(self) -> bool {
        self.0 >= 200
    }

    /// The reason phrase RFC 3261 §21 gives this code, or the class's name for a code it
    /// does not list.
    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Trying",
            180 => "Ringing",
            181 => "Call Is Being Forwarded",
            182 => "Queued",
            183 => "Session Progress",
            200 => "OK",
            202 => "Accepted",
            300 => "Multiple Choices",
            301 => "Moved Permanently",
            302 => "Moved Temporarily",
            305 => "Use Proxy",
            380 => "Alternative Service",
            400 => "Bad Request",
            401 => "Unauthorized",
            402 => "Payment Required",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            410 => "Gone",
            413 => "Request Entity Too Large",
            414 => "Request-URI Too Long",
            415 => "Unsupported Media Type",
            416 => "Unsupported URI Scheme",
            420 => "Bad Extension",
            421 => "Extension Required",
            423 => "Interval Too Brief",
            480 => "Temporarily Unavailable",
            481 => "Call/Transaction Does Not Exist",
            482 => "Loop Detected",
            483 => "Too Many Hops",
            484 => "Address Incomplete",
            485 => "Ambiguous",
            486 => "Busy Here",
            487 => "Request Terminated",
            488 => "Not Acceptable Here",
            491 => "Request Pending",
            493 => "Undecipherable",
            500 => "Server Internal Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Server Time-out",
            505 => "Version Not Supported",
            513 => "Message Too Large",
            600 => "Busy Everywhere",
            603 => "Decline",
            604 => "Does Not Exist Anywhere",
            606 => "Not Acceptable",
            _ => self.class().name(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The class of a status code (RFC 3261 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    Provisional,
    Success,
    Redirection,
    ClientError,
    ServerError,
    GlobalFailure,
}

impl StatusClass {
    pub const ALL: [StatusClass; 6] = [
        StatusClass::Provisional,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::GlobalFailure,
    ];

    /// The class of a code as this crate passes codes around (`u16`); anything outside 100
    /// to 599 counts as a global failure, so a label is always one of six.
    pub fn of(code: u16) -> StatusClass {
        match code {
            100..=199 => StatusClass::Provisional,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => StatusClass::GlobalFailure,
        }
    }

    /// The metric label: `1xx` … `6xx`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Provisional => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::GlobalFailure => "6xx",
        }
    }

    fn name(self) -> &'static str {
        match self {
            StatusClass::Provisional => "Provisional",
            StatusClass::Success => "Success",
            StatusClass::Redirection => "Redirection",
            StatusClass::ClientError => "Client Error",
            StatusClass::ServerError => "Server Error",
            StatusClass::GlobalFailure => "Global Failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_parse_as_three_digits_from_100_to_699() {
        assert_eq!(Status::parse("200"), Some(Status::OK));
        assert_eq!(Status::parse("699").map(Status::code), Some(699));
        for bad in [
            "",
            "99",
            "099",
            "700",
            "2000",
            "20a",
            "+20",
            " 200",
            "２００",
        ] {
            assert_eq!(Status::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn class_and_reason() {
        assert_eq!(Status::TRYING.class(), StatusClass::Provisional);
        assert!(!Status::TRYING.is_final() && Status::OK.is_final());
        assert_eq!(Status::INTERVAL_TOO_BRIEF.reason(), "Interval Too Brief");
        assert_eq!(Status::parse("499").unwrap().reason(), "Client Error");
        let labels: Vec<&str> = StatusClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels, ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"]);
        assert_eq!(StatusClass::of(99), StatusClass::GlobalFailure);
        assert_eq!(StatusClass::of(700), StatusClass::GlobalFailure);
        assert_eq!(StatusClass::of(487), StatusClass::ClientError);
    }
}
