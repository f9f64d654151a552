//! The one error type of the message layer and how a server reacts to each variant.
//!
//! Owns `ParseError` and its mapping to a wire reaction (`Reaction`). It must not log or
//! send anything: the transport decides what to do with the reaction.

use super::header::HeaderName;

/// Everything that can be wrong with bytes that claim to be a SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("header section not terminated by an empty line")]
    IncompleteHeaders,
    #[error("header lines end in a bare LF (CRLF is required)")]
    BareLineFeeds,
    #[error("header section larger than the limit")]
    HeaderSectionTooLarge,
    #[error("more header fields than the limit")]
    TooManyHeaders,
    #[error("body larger than the limit")]
    BodyTooLarge,
    #[error("header section is not UTF-8")]
    NotUtf8,
    #[error("malformed start line")]
    MalformedStartLine,
    #[error("malformed Request-Line")]
    MalformedRequestLine,
    #[error("method is not a token")]
    InvalidMethod,
    #[error("malformed Request-URI")]
    InvalidRequestUri,
    #[error("Request-URI carries URI headers")]
    RequestUriHeaders,
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    #[error("invalid status code")]
    InvalidStatusCode,
    #[error("malformed header line")]
    MalformedHeader,
    #[error("header name is not a token")]
    InvalidHeaderName,
    #[error("invalid Content-Length")]
    InvalidContentLength,
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    #[error("Content-Length required on a stream")]
    MissingContentLength,
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    #[error("header {0:?} appears more than once")]
    DuplicateHeader(HeaderName),
    #[error("required header {0:?} missing")]
    MissingHeader(HeaderName),
    #[error("invalid CSeq")]
    InvalidCSeq,
    #[error("CSeq method differs from the request method")]
    CSeqMethodMismatch,
    #[error("invalid Via")]
    InvalidVia,
    #[error("invalid name-addr in {0:?}")]
    InvalidNameAddr(HeaderName),
    #[error("invalid URI")]
    InvalidUri,
    #[error("invalid Contact")]
    InvalidContact,
    #[error("invalid Expires")]
    InvalidExpires,
    #[error("invalid Max-Forwards")]
    InvalidMaxForwards,
    #[error("invalid Call-ID")]
    InvalidCallId,
    #[error("invalid credentials header")]
    InvalidAuthorization,
    #[error("invalid parameter")]
    InvalidParam,
}

/// What a server does about a message that failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Answer statelessly with this status and reason phrase (requests only).
    Respond(u16, &'static str),
    /// Say nothing (responses, oversize input, or nothing to answer to).
    Drop,
}

impl ParseError {
    /// The reaction to a request (`is_request`) or response that failed with `self`.
    ///
    /// Responses are always dropped (RFC 3261 §18.1.2). A request is answered whenever its
    /// fault has a status, and dispatch answers only when `Message::parse_for_error_reply`
    /// finds a Via header to copy (the answer's address comes from it, RFC 3261 §18.2.2). Dropped: nothing to answer (empty), a
    /// header section with no end (a truncated datagram; on a stream the framer waits),
    /// a header section over the size limit (no reflection of large input), and one that
    /// is not UTF-8 (nothing in it can be copied into a reply as text).
    pub fn reaction(self, is_request: bool) -> Reaction {
        if !is_request {
            return Reaction::Drop;
        }
        use ParseError::*;
        match self {
            Empty | IncompleteHeaders | HeaderSectionTooLarge | NotUtf8 | InvalidStatusCode => {
                Reaction::Drop
            }
            BareLineFeeds => Reaction::Respond(400, "CRLF Line Endings Required"),
            TooManyHeaders => Reaction::Respond(513, "Too Many Header Fields"),
            BodyTooLarge => Reaction::Respond(413, "Request Entity Too Large"),
            MalformedStartLine => Reaction::Respond(400, "Bad Start Line"),
            UnsupportedVersion => Reaction::Respond(505, "Version Not Supported"),
            MalformedRequestLine | InvalidMethod => Reaction::Respond(400, "Bad Request-Line"),
            InvalidRequestUri | RequestUriHeaders => Reaction::Respond(400, "Bad Request-URI"),
            MalformedHeader => Reaction::Respond(400, "Bad Header Line"),
            InvalidHeaderName => Reaction::Respond(400, "Bad Header Name"),
            MissingContentLength => Reaction::Respond(400, "Content-Length Required"),
            InvalidContentLength | DuplicateContentLength | BodyTruncated => {
                Reaction::Respond(400, "Bad Content-Length")
            }
            DuplicateHeader(_) => Reaction::Respond(400, "Duplicate Header"),
            MissingHeader(_) => Reaction::Respond(400, "Missing Header"),
            InvalidCSeq | CSeqMethodMismatch => Reaction::Respond(400, "Bad CSeq"),
            InvalidVia => Reaction::Respond(400, "Bad Via"),
            InvalidNameAddr(HeaderName::To) => Reaction::Respond(400, "Bad To"),
            InvalidNameAddr(HeaderName::From) => Reaction::Respond(400, "Bad From"),
            InvalidNameAddr(_) | InvalidUri | InvalidParam => Reaction::Respond(400, "Bad Header"),
            InvalidContact => Reaction::Respond(400, "Bad Contact"),
            InvalidExpires => Reaction::Respond(400, "Bad Expires"),
            InvalidMaxForwards => Reaction::Respond(400, "Bad Max-Forwards"),
            InvalidCallId => Reaction::Respond(400, "Bad Call-ID"),
            InvalidAuthorization => Reaction::Respond(400, "Bad Authorization"),
        }
    }

    /// Whether a stream (TCP/TLS) connection must be closed: framing can no longer be trusted.
    pub fn breaks_stream(self) -> bool {
        matches!(
            self,
            ParseError::IncompleteHeaders
                | ParseError::BareLineFeeds
                | ParseError::HeaderSectionTooLarge
                | ParseError::TooManyHeaders
                | ParseError::BodyTooLarge
                | ParseError::InvalidContentLength
                | ParseError::DuplicateContentLength
                | ParseError::MissingContentLength
                | ParseError::BodyTruncated
        )
    }
}
