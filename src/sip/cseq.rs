//! `CSeq` (RFC 3261 §20.16): the sequence number and method, parsed by `Message::parse`
//! (which keeps them) and by the views. On its own so the message and its views, which both
//! need it, do not import each other.

use super::error::ParseError;
use super::scan::{is_lws, is_token, parse_u32_strict, skip_lws, trim_lws};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: &'a str,
}

impl<'a> CSeq<'a> {
    pub fn parse(v: &'a str) -> Result<CSeq<'a>, ParseError> {
        let (seq, method) = CSeq::parse_parts(v)?;
        Ok(CSeq {
            seq,
            method: &v[method],
        })
    }

    /// The number and the byte range of the method in `v` (so `Message::parse` can keep
    /// it as a span).
    pub(crate) fn parse_parts(v: &str) -> Result<(u32, std::ops::Range<usize>), ParseError> {
        let lead = skip_lws(v.as_bytes(), 0);
        let t = trim_lws(v);
        let sp = t.bytes().position(is_lws).ok_or(ParseError::InvalidCSeq)?;
        let seq = parse_u32_strict(&t[..sp]).ok_or(ParseError::InvalidCSeq)?;
        let method = trim_lws(&t[sp..]);
        if method.is_empty() || !method.bytes().all(is_token) {
            return Err(ParseError::InvalidCSeq);
        }
        let start = lead + skip_lws(t.as_bytes(), sp);
        Ok((seq, start..start + method.len()))
    }
}
