//! Stream framing for TCP and TLS (RFC 3261 §18.3): buffer bytes, find the end of the
//! header section, require Content-Length, cut exactly one message, and recognise RFC 5626
//! CRLF keep-alives. Input may be split at any byte.
//!
//! It owns the connection's receive buffer and its limits. It must not parse more than the
//! Content-Length it needs; `Message::parse` does the rest.

use bytes::{Bytes, BytesMut};

use super::error::ParseError;
use super::message::{parse_content_length, Limits};
use super::scan::is_token;

/// Room the buffer gets when it must grow for a read: one read's worth.
const READ_CHUNK: usize = 4096;

/// What the framer found at the front of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message (header section and body), ready for `Message::parse`.
    Message(Bytes),
    /// A double-CRLF keep-alive ping: answer with a single CRLF (RFC 5626 §3.5.1).
    Ping,
}

/// Per-connection framer. Worst-case memory: `max_header_bytes + max_body_bytes` plus one
/// read's worth of bytes. Between messages it can hold nothing at all ([`Self::release_if_idle`]):
/// an idle connection then costs no receive buffer.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    limits: Limits,
    /// How far the header-end search has looked, so a slow sender costs O(n) not O(n²).
    scanned: usize,
}

impl StreamFramer {
    pub fn new(limits: Limits) -> StreamFramer {
        StreamFramer {
            buf: BytesMut::new(),
            limits,
            scanned: 0,
        }
    }

    /// The buffer to read into (for `AsyncReadExt::read_buf`).
    pub fn read_buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        &mut self.buf
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.buf.capacity() == 0 {
            // The rest of the message usually follows: one allocation for both reads.
            self.buf.reserve(data.len().max(READ_CHUNK));
        }
        self.buf.extend_from_slice(data);
    }

    /// Gives the receive buffer back when no partial message is in it, so an idle connection
    /// holds no buffer (the next `read_buf` or `push` allocates one again).
    pub fn release_if_idle(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
            self.scanned = 0;
        }
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a partial message has started (used for the header-section deadline).
    pub fn in_message(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The header section at the front of the buffer, through the blank line that ends it
    /// (CRLF CRLF, or LF LF for bare-LF line ends), when it is complete within the header
    /// limit. After [`Self::next_frame`] failed, it is what a stateless error reply can copy
    /// its Via, From, To, Call-ID and CSeq from; `None` when nothing complete arrived.
    pub fn pending_head(&self) -> Option<Bytes> {
        let skip = leading_line_ends(&self.buf);
        let window = &self.buf[..self.buf.len().min(self.limits.max_header_bytes + skip + 4)];
        let crlf = memchr::memmem::find(window, b"\r\n\r\n").map(|p| p + 4);
        let lf =
            memchr::memmem::find(&window[skip.min(window.len())..], b"\n\n").map(|p| skip + p + 2);
        let end = match (crlf, lf) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(Bytes::copy_from_slice(&self.buf[..end]))
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or an error after
    /// which the connection must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ParseError> {
        // Keep-alives and stray CRLFs between messages.
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                let _ = self.buf.split_to(4);
                self.scanned = 0;
                return Ok(Some(Frame::Ping));
            }
            if self.buf.starts_with(b"\r\n") && self.buf.len() >= 3 && self.buf[2] != b'\r' {
                // a lone CRLF (a pong, or padding): drop it
                let _ = self.buf.split_to(2);
                self.scanned = 0;
                continue;
            }
            if self.buf.is_empty()
                || self.buf.starts_with(b"\r")
                    && self.buf.len() < 4
                    && b"\r\n\r\n".starts_with(&self.buf)
            {
                return Ok(None);
            }
            break;
        }
        let from = self.scanned.saturating_sub(3);
        let limit = self.limits.max_header_bytes + 4;
        let window_end = self.buf.len().min(limit);
        let found = memchr::memmem::find(&self.buf[from..window_end], b"\r\n\r\n");
        // A bare-LF blank line before the header end (or before the end of what arrived):
        // LF-only line ends, which the parser refuses too. Searched after the CR/LF run the
        // parser skips before a start line.
        let lf_from = from.max(leading_line_ends(&self.buf));
        let lf_to = found.map_or(window_end, |p| from + p).max(lf_from);
        if memchr::memmem::find(&self.buf[lf_from..lf_to], b"\n\n").is_some() {
            return Err(ParseError::BareLineFeeds);
        }
        let header_end = match found {
            Some(p) => from + p + 2,
            None => {
                if self.buf.len() >= limit {
                    return Err(ParseError::HeaderSectionTooLarge);
                }
                self.scanned = self.buf.len();
                return Ok(None);
            }
        };
        let content_length = content_length_of(&self.buf[..header_end], &self.limits)?;
        if content_length > self.limits.max_body_bytes {
            return Err(ParseError::BodyTooLarge);
        }
        let total = header_end + 2 + content_length;
        if self.buf.len() < total {
            self.scanned = header_end;
            return Ok(None);
        }
        self.scanned = 0;
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }
}

/// How many CR and LF bytes start `buf` (skipped before a start line, RFC 3261 §7.5).
fn leading_line_ends(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Finds the single Content-Length (long or compact name) in a header section.
///
/// Header lines are cut exactly as `Message::parse` cuts them (leading CR/LF skipped, lines
/// end at a CRLF not followed by SP/HT, a bare LF ends nothing, the name is a token before
/// optional SP/HT and `:`), so the framer never honours a Content-Length the parser does not
/// see: a bare-LF or folded `Content-Length` inside another header would otherwise let the
/// framer and the parser disagree on where the message ends.
fn content_length_of(head: &[u8], limits: &Limits) -> Result<usize, ParseError> {
    let skip = head
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let head = &head[skip..];
    let Some(start_line_end) = memchr::memmem::find(head, b"\r\n") else {
        return Err(ParseError::MissingContentLength);
    };
    let mut found = None;
    let mut headers = 0usize;
    let mut pos = start_line_end + 2;
    while pos < head.len() {
        let mut end = pos;
        loop {
            match memchr::memmem::find(&head[end..], b"\r\n") {
                Some(rel) => end += rel,
                None => end = head.len(),
            }
            if end + 2 < head.len() && matches!(head[end + 2], b' ' | b'\t') {
                end += 2;
                continue;
            }
            break;
        }
        let line = &head[pos..end];
        pos = end + 2;
        headers += 1;
        if headers > limits.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        let name_end = line
            .iter()
            .position(|&b| !is_token(b))
            .unwrap_or(line.len());
        let after = &line[name_end..];
        let colon = after.iter().position(|&b| !matches!(b, b' ' | b'\t'));
        let Some(colon) = colon.filter(|&c| after[c] == b':') else {
            continue; // not a header line: the parser rejects the message
        };
        let name = &line[..name_end];
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            if found.is_some() {
                return Err(ParseError::DuplicateContentLength);
            }
            // Trimmed as the parser trims a value: SP, HT, CR, LF only.
            let mut value = &after[colon + 1..];
            while let [b' ' | b'\t' | b'\r' | b'\n', rest @ ..] = value {
                value = rest;
            }
            while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = value {
                value = rest;
            }
            let value = std::str::from_utf8(value).map_err(|_| ParseError::InvalidContentLength)?;
            found = Some(parse_content_length(value)?);
        }
    }
    found.ok_or(ParseError::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 3\r\n\r\nabc";

    fn frames(chunks: &[&[u8]]) -> Result<Vec<Frame>, ParseError> {
        let mut f = StreamFramer::new(Limits::default());
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(fr) = f.next_frame()? {
                out.push(fr);
            }
        }
        Ok(out)
    }

    #[test]
    fn one_byte_at_a_time_and_two_in_one() {
        let chunks: Vec<&[u8]> = MSG.chunks(1).collect();
        assert_eq!(
            frames(&chunks).unwrap(),
            vec![Frame::Message(Bytes::from_static(MSG))]
        );
        let two = [MSG, MSG].concat();
        assert_eq!(frames(&[&two]).unwrap().len(), 2);
    }

    #[test]
    fn an_idle_framer_holds_no_buffer_and_a_partial_message_keeps_its_bytes() {
        let mut f = StreamFramer::new(Limits::default());
        assert!(f.read_buf().capacity() > 0);
        f.release_if_idle();
        assert_eq!(f.buf.capacity(), 0);

        let (head, tail) = MSG.split_at(20);
        f.push(head);
        f.release_if_idle();
        assert_eq!(f.buffered(), head.len(), "a partial message is kept");
        assert_eq!(f.next_frame(), Ok(None));
        f.push(tail);
        assert_eq!(
            f.next_frame(),
            Ok(Some(Frame::Message(Bytes::from_static(MSG))))
        );
        f.release_if_idle();
        assert_eq!(f.buf.capacity(), 0);
        assert!(!f.in_message());
    }

    #[test]
    fn keepalives() {
        let mut input = b"\r\n\r\n".to_vec();
        input.extend_from_slice(MSG);
        input.extend_from_slice(b"\r\n\r\n");
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            frames(&chunks).unwrap(),
            vec![
                Frame::Ping,
                Frame::Message(Bytes::from_static(MSG)),
                Frame::Ping
            ]
        );
    }

    /// Found by the `stream_framing` fuzz target: a bare LF or a folded line inside another
    /// header is not a header line for the parser, so it must not be one for the framer.
    #[test]
    fn content_length_lines_are_cut_as_the_parser_cuts_them() {
        let head = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n";
        for hidden in [
            "Subject: x\nContent-Length: 2",
            "Subject: x\r\n Content-Length: 2",
        ] {
            let input = format!("{head}{hidden}\r\nl: 0\r\n\r\nab");
            assert_eq!(
                frames(&[input.as_bytes()]).unwrap(),
                vec![Frame::Message(Bytes::from(
                    input[..input.len() - 2].to_owned()
                ))],
                "{hidden:?}"
            );
            let input = format!("{head}{hidden}\r\n\r\nab");
            assert_eq!(
                frames(&[input.as_bytes()]),
                Err(ParseError::MissingContentLength),
                "{hidden:?}"
            );
        }
        // A folded value is one value, as in the parser.
        let input = format!("{head}Content-Length:\r\n 2\r\n\r\nab");
        assert_eq!(
            frames(&[input.as_bytes()]).unwrap(),
            vec![Frame::Message(Bytes::from(input))]
        );
        // Leading CRLFs before the start line are skipped, as in the parser.
        let input = format!("\r\n\rX{head}l: 1\r\n\r\na");
        assert_eq!(frames(&[input.as_bytes()]).unwrap().len(), 1);
    }

    /// Issue 12 item 13: LF-only line ends are refused as the parser refuses them, whether
    /// the blank line has arrived or not, and the header section is there for the answer.
    /// A body holding LF LF after a proper header end is a message like any other.
    #[test]
    fn bare_lf_line_ends_are_refused_and_their_head_kept_for_the_answer() {
        let lf = b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nl: 0\n\n";
        assert_eq!(frames(&[lf]), Err(ParseError::BareLineFeeds));
        let chunks: Vec<&[u8]> = lf.chunks(1).collect();
        assert_eq!(frames(&chunks), Err(ParseError::BareLineFeeds));
        let mut f = StreamFramer::new(Limits::default());
        f.push(lf);
        assert_eq!(f.next_frame(), Err(ParseError::BareLineFeeds));
        assert_eq!(f.pending_head().as_deref(), Some(&lf[..]));

        let body =
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 2\r\n\r\n\n\n";
        assert_eq!(
            frames(&[body]).unwrap(),
            vec![Frame::Message(Bytes::from_static(body))]
        );
        // Leading line ends (skipped before a start line) are not a blank line.
        let mut lead = b"\n\n".to_vec();
        lead.extend_from_slice(MSG);
        assert_eq!(frames(&[&lead]).unwrap().len(), 1);
    }

    #[test]
    fn the_pending_head_is_the_complete_header_section_only() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n");
        assert_eq!(f.pending_head(), None);
        f.push(b"\r\nbody");
        assert_eq!(f.next_frame(), Err(ParseError::MissingContentLength));
        assert_eq!(
            f.pending_head().as_deref(),
            Some(&b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n"[..])
        );
    }

    #[test]
    fn faults_are_distinct() {
        assert_eq!(
            frames(&[b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n"]),
            Err(ParseError::MissingContentLength)
        );
        assert_eq!(
            frames(&[b"A\r\nl: -999\r\n\r\n"]),
            Err(ParseError::InvalidContentLength)
        );
        assert_eq!(
            frames(&[b"A\r\nl: 1\r\nContent-Length: 2\r\n\r\n"]),
            Err(ParseError::DuplicateContentLength)
        );
        assert_eq!(
            frames(&[b"A\r\nl: 99999999\r\n\r\n"]),
            Err(ParseError::BodyTooLarge)
        );
        let big = vec![b'a'; 20_000];
        assert_eq!(frames(&[&big]), Err(ParseError::HeaderSectionTooLarge));
    }
}
