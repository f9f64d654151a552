//! A parsed SIP message: the received `Bytes`, the start line, an index of header lines as
//! offsets, and the body as a range. Parsing copies no header text (the UTF-8 checked header
//! section is a `ByteString` sharing the same buffer); the index is the only heap
//! allocation. Typed views (`views.rs`) are parsed lazily from the index.
//!
//! `Message::parse` applies the checks every element needs before it can even answer:
//! start line and version, header line syntax, Content-Length framing, single-valued
//! headers not repeated, the required headers present, and CSeq (number ≤ 2^32-1, method
//! equal to the request method). It must not look deeper into header values.

use bytes::Bytes;
use bytestring::ByteString;

use super::cseq::CSeq;
use super::error::ParseError;
use super::header::HeaderName;
use super::scan::{is_lws, is_token, parse_u32_strict, skip_lws, skip_token};
use super::status::Status;

/// Limits applied while parsing and framing; each has a default and a worst case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header section (start line to the empty line). Default 16 KiB: a long but
    /// legitimate REGISTER is under 2 KiB. Worst case per stream connection: this many bytes
    /// buffered while waiting for the header end.
    pub max_header_bytes: usize,
    /// Largest body. Default 64 KiB (SDP and small MIME bodies).
    pub max_body_bytes: usize,
    /// Most header lines. Default 128; each costs 20 bytes in the index.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            max_headers: 128,
        }
    }
}

/// A byte range into the message buffer. `u32` keeps the header index small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        // Message sizes are bounded by `Limits` far below u32::MAX.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// The methods the stack treats specially; anything else is `Extension`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Options,
    Bye,
    Cancel,
    Register,
    Subscribe,
    Notify,
    Refer,
    Message,
    Info,
    Update,
    Prack,
    Publish,
    Extension,
}

impl Method {
    /// Methods are case-sensitive tokens (RFC 3261 §7.1): `register` and `RE%47IST%45R`
    /// are extension methods, not REGISTER.
    pub fn from_token(t: &str) -> Method {
        match t {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "OPTIONS" => Method::Options,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "PUBLISH" => Method::Publish,
            _ => Method::Extension,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Method,
        method_span: Span,
        uri: Span,
    },
    Response {
        code: Status,
        reason: Span,
    },
}

/// One header line of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: HeaderName,
    /// The name as written.
    pub name: Span,
    /// The value, leading and trailing white space removed; folded lines included.
    pub value: Span,
    /// The whole line including continuation lines and the final CRLF, for forwarding.
    pub line: Span,
}

/// A parsed message. Cheap to clone (the buffer is reference-counted).
#[derive(Debug, Clone)]
pub struct Message {
    buf: Bytes,
    /// The header section (start line to the last header's CRLF), UTF-8 checked once by
    /// `parse`: the same bytes as `buf`, shared, so `text` slices without checking again.
    head: ByteString,
    start: StartLine,
    /// The start line including its CRLF.
    start_line: Span,
    headers: Vec<Header>,
    body: Span,
    /// Bytes after the body in a datagram (RFC 3261 §18.3: ignored, never parsed).
    trailing: usize,
    /// CSeq number and method span, read once by `parse` (which requires a valid CSeq) so
    /// `cseq()` does not parse it again; `None` from `parse_for_error_reply`.
    cseq: Option<(u32, Span)>,
}

impl Message {
    /// Parses one message from a datagram or a framed stream message. The body is exactly
    /// Content-Length bytes; without Content-Length (allowed on UDP only) it is the rest of
    /// the buffer. Bytes after the body are ignored.
    pub fn parse(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
        // RFC 3261 §7.5: CRLFs before the start line are ignored.
        let skip = buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if skip == buf.len() {
            return Err(ParseError::Empty);
        }
        let search_end = buf
            .len()
            .min(limits.max_header_bytes.saturating_add(skip + 4));
        let (header_end, mut line_ends) = LineEnds::scan(&buf, skip, search_end);
        let header_end = match header_end {
            HeaderEnd::Crlf(pos) => pos + 2,
            HeaderEnd::BareLf(_) => return Err(ParseError::BareLineFeeds),
            HeaderEnd::None if buf.len() > search_end => {
                return Err(ParseError::HeaderSectionTooLarge)
            }
            HeaderEnd::None => return Err(ParseError::IncompleteHeaders),
        };
        let head_text =
            ByteString::try_from(buf.slice(..header_end)).map_err(|_| ParseError::NotUtf8)?;
        let head: &str = &head_text;

        let first_crlf = line_ends
            .next_crlf(head.as_bytes(), skip)
            .unwrap_or(header_end);
        let start = parse_start_line(head, skip, first_crlf)?;
        let is_request = matches!(start, StartLine::Request { .. });

        let (headers, seen, content_length) = index_headers(
            head,
            first_crlf + 2,
            header_end,
            &mut line_ends,
            limits,
            true,
        )?;

        let body_start = header_end + 2;
        let available = buf.len() - body_start;
        let body_len = match content_length {
            Some(n) if n > limits.max_body_bytes => return Err(ParseError::BodyTooLarge),
            Some(n) if n > available => return Err(ParseError::BodyTruncated),
            Some(n) => n,
            None if available > limits.max_body_bytes => return Err(ParseError::BodyTooLarge),
            None => available,
        };

        for required in [HeaderName::Via, HeaderName::CSeq] {
            if seen & (1u64 << (required as u8)) == 0 {
                return Err(ParseError::MissingHeader(required));
            }
        }
        if is_request {
            for required in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
                if seen & (1u64 << (required as u8)) == 0 {
                    return Err(ParseError::MissingHeader(required));
                }
            }
        }

        // Present: checked above.
        let cseq_value = headers
            .iter()
            .find(|h| h.kind == HeaderName::CSeq)
            .map_or(Span::default(), |h| h.value);
        let (seq, method) = CSeq::parse_parts(&head[cseq_value.range()])?;
        let cseq_method = Span::new(
            cseq_value.start as usize + method.start,
            cseq_value.start as usize + method.end,
        );
        if let StartLine::Request { method_span, .. } = start {
            if head.as_bytes()[cseq_method.range()] != head.as_bytes()[method_span.range()] {
                return Err(ParseError::CSeqMethodMismatch);
            }
        }
        Ok(Message {
            start,
            start_line: Span::new(skip, first_crlf + 2),
            headers,
            body: Span::new(body_start, body_start + body_len),
            trailing: available - body_len,
            cseq: Some((seq, cseq_method)),
            head: head_text,
            buf,
        })
    }

    /// A best-effort parse of a request that failed `parse`, so that a stateless error
    /// response (400, 505 ...) can copy its Via, From, To, Call-ID and CSeq. The start line
    /// just has to look like a request; header lines that do not parse are skipped, only the
    /// headers such a reply copies are indexed (at most `max_headers` of them), and a header
    /// section with bare-LF line ends is read as if they were CRLFs (on a copy). Never use
    /// the result for anything but building that reply.
    pub fn parse_for_error_reply(buf: Bytes, limits: &Limits) -> Option<Message> {
        let skip = buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        let search_end = buf
            .len()
            .min(limits.max_header_bytes.saturating_add(skip + 4));
        if skip > search_end {
            return None;
        }
        let (header_end, mut line_ends) = match LineEnds::scan(&buf, skip, search_end) {
            (HeaderEnd::Crlf(end), line_ends) => (end + 2, line_ends),
            (HeaderEnd::BareLf(end), _) => {
                let crlf = with_crlf_line_ends(&buf[..end + 1]);
                // Room for the CRs added (a line is at least one byte and its LF).
                let wider = Limits {
                    max_header_bytes: limits.max_header_bytes.saturating_mul(2),
                    ..*limits
                };
                return Message::parse_for_error_reply(crlf, &wider);
            }
            (HeaderEnd::None, _) => return None,
        };
        let head_text = ByteString::try_from(buf.slice(..header_end)).ok()?;
        let head: &str = &head_text;
        let first_crlf = line_ends.next_crlf(head.as_bytes(), skip)?;
        let line = &head[skip..first_crlf];
        if line.starts_with("SIP/") {
            return None;
        }
        let method_len = line.find(' ').unwrap_or(line.len());
        if method_len == 0 || !line[..method_len].bytes().all(is_token) {
            return None;
        }
        let (headers, seen, _) = index_headers(
            head,
            first_crlf + 2,
            header_end,
            &mut line_ends,
            limits,
            false,
        )
        .ok()?;
        if seen & (1u64 << (HeaderName::Via as u8)) == 0 {
            return None;
        }
        let method_span = Span::new(skip, skip + method_len);
        Some(Message {
            start: StartLine::Request {
                method: Method::from_token(&line[..method_len]),
                method_span,
                uri: Span::new(skip + method_len, skip + method_len),
            },
            start_line: Span::new(skip, first_crlf + 2),
            headers,
            body: Span::new(header_end + 2, header_end + 2),
            trailing: 0,
            cseq: None,
            head: head_text,
            buf,
        })
    }

    /// The CSeq that `parse` read, if it did.
    pub(crate) fn parsed_cseq(&self) -> Option<(u32, Span)> {
        self.cseq
    }

    /// The whole received buffer.
    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }

    /// The text of a span of the header section. Spans come from this message's index,
    /// which lies inside the UTF-8 checked header section; any other span gives "".
    pub fn text(&self, span: Span) -> &str {
        self.head.get(span.range()).unwrap_or("")
    }

    pub fn start_line(&self) -> StartLine {
        self.start
    }

    pub(crate) fn start_line_span(&self) -> Span {
        self.start_line
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method, `None` for a response.
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The method token as written (requests), or the CSeq method (responses).
    pub fn method_str(&self) -> &str {
        match self.start {
            StartLine::Request { method_span, .. } => self.text(method_span),
            StartLine::Response { .. } => self.cseq().map(|c| c.method).unwrap_or(""),
        }
    }

    /// The Request-URI text (requests only).
    pub fn request_uri(&self) -> Option<&str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(self.text(uri)),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code.code()),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self.start {
            StartLine::Response { reason, .. } => Some(self.text(reason)),
            StartLine::Request { .. } => None,
        }
    }

    /// Header lines in order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Values of every header of this kind, in order.
    pub fn values(&self, kind: HeaderName) -> impl Iterator<Item = &str> + '_ {
        self.headers
            .iter()
            .filter(move |h| h.kind == kind)
            .map(|h| self.text(h.value))
    }

    /// The first value of a header of this kind.
    pub fn value(&self, kind: HeaderName) -> Option<&str> {
        self.values(kind).next()
    }

    /// Values of a header not known by name, matched case-insensitively.
    pub fn values_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| self.text(h.name).eq_ignore_ascii_case(name))
            .map(|h| self.text(h.value))
    }

    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.range()]
    }

    /// Bytes after the body that a datagram carried (ignored per RFC 3261 §18.3).
    pub fn trailing_bytes(&self) -> usize {
        self.trailing
    }

    /// Length of the message itself (without trailing bytes).
    pub fn wire_len(&self) -> usize {
        self.body.end as usize
    }
}

/// The CRLFs of a header section, found once while looking for the blank line that ends
/// it and then handed out in order, so indexing does not search the same bytes again. Only
/// the first `LINE_ENDS_CAP` are kept (on the stack: the parse path allocates nothing but
/// the header index); past those, `next_crlf` searches the bytes again.
struct LineEnds {
    at: [u32; LINE_ENDS_CAP],
    len: usize,
    cursor: usize,
}

/// Line ends kept by `LineEnds`: 256 bytes of stack, more lines than a REGISTER or INVITE has.
const LINE_ENDS_CAP: usize = 64;

/// Where a header section ends, as `LineEnds::scan` found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderEnd {
    /// At the first CRLF CRLF, which starts at this index.
    Crlf(usize),
    /// A bare-LF blank line (`LF LF`, the second LF at this index) comes first: the lines
    /// end in LF only, which RFC 3261 §7 does not allow.
    BareLf(usize),
    /// No end within the limit.
    None,
}

impl LineEnds {
    /// The end of the header section in `buf[from..limit]` (as an index into `buf`), and
    /// the CRLFs before it.
    fn scan(buf: &[u8], from: usize, limit: usize) -> (HeaderEnd, LineEnds) {
        let mut ends = LineEnds {
            at: [0; LINE_ENDS_CAP],
            len: 0,
            cursor: 0,
        };
        let b = &buf[from..limit];
        for lf in memchr::memchr_iter(b'\n', b) {
            if lf == 0 || b[lf - 1] != b'\r' {
                if lf > 0 && b[lf - 1] == b'\n' {
                    return (HeaderEnd::BareLf(from + lf), ends);
                }
                continue;
            }
            if lf >= 3 && b[lf - 3..lf - 1] == *b"\r\n" {
                return (HeaderEnd::Crlf(from + lf - 3), ends);
            }
            if ends.len < LINE_ENDS_CAP {
                // Below the header size limit, far below u32::MAX (as `Span`).
                ends.at[ends.len] = (from + lf - 1) as u32;
                ends.len += 1;
            }
        }
        (HeaderEnd::None, ends)
    }

    /// Index of the first CRLF in `b` that starts at or after `from`.
    #[inline]
    fn next_crlf(&mut self, b: &[u8], from: usize) -> Option<usize> {
        while self.cursor < self.len {
            let at = self.at[self.cursor] as usize;
            if at >= from {
                return Some(at);
            }
            self.cursor += 1;
        }
        find_crlf(b, from)
    }
}

/// Index of the first CRLF that starts at or after `from`.
#[inline]
fn find_crlf(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let lf = i + memchr::memchr(b'\n', b.get(i..)?)?;
        if lf > from && b[lf - 1] == b'\r' {
            return Some(lf - 1);
        }
        i = lf + 1;
    }
}

/// A header section whose lines end in bare LFs, rewritten with CRLFs and the blank line
/// that ends it (for an error reply only). `head` ends with the LF of the blank line.
fn with_crlf_line_ends(head: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(head.len() + head.len() / 8 + 2);
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    Bytes::from(out)
}

/// Whether a lenient index keeps a header: the ones an error reply copies or reads.
fn copied_into_error_reply(kind: HeaderName) -> bool {
    matches!(
        kind,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
    )
}

/// Indexes the header lines of `head[from..header_end]`. `strict` rejects malformed lines,
/// repeated single-valued headers and bad Content-Length, and holds at most `max_headers`
/// lines. The lenient mode (for an error reply) skips lines that do not parse and keeps only
/// the headers such a reply copies, at most `max_headers` of them.
fn index_headers(
    head: &str,
    from: usize,
    header_end: usize,
    line_ends: &mut LineEnds,
    limits: &Limits,
    strict: bool,
) -> Result<(Vec<Header>, u64, Option<usize>), ParseError> {
    let mut headers = Vec::with_capacity(32);
    let mut seen: u64 = 0;
    let mut content_length: Option<usize> = None;
    let mut pos = from;
    let hb = &head.as_bytes()[..header_end];
    while pos < header_end {
        // A header line runs to a CRLF not followed by SP/HT (RFC 3261 §7.3.1 folding).
        let mut end = pos;
        loop {
            end = line_ends
                .next_crlf(hb, end)
                .ok_or(ParseError::MalformedHeader)?;
            if end + 2 < header_end && matches!(hb[end + 2], b' ' | b'\t') {
                end += 2;
                continue;
            }
            break;
        }
        let line_start = pos;
        pos = end + 2;
        let fault = if matches!(hb[line_start], b' ' | b'\t') {
            Some(ParseError::MalformedHeader)
        } else {
            None
        };
        let name_end = skip_token(&hb[..end], line_start);
        let mut colon = name_end;
        while colon < end && matches!(hb[colon], b' ' | b'\t') {
            colon += 1;
        }
        let fault = fault.or(if name_end == line_start || colon >= end {
            Some(ParseError::MalformedHeader)
        } else if hb[colon] == b':' {
            None
        } else if colon == name_end {
            // A byte that is neither a token byte, white space nor the colon inside the
            // name (a control character, say).
            Some(ParseError::InvalidHeaderName)
        } else {
            Some(ParseError::MalformedHeader)
        });
        let kind = HeaderName::from_wire(&hb[line_start..name_end]);
        if !strict && (fault.is_some() || !copied_into_error_reply(kind)) {
            continue;
        }
        if let Some(fault) = fault {
            return Err(fault);
        }
        let vs = skip_lws(&hb[..end], colon + 1);
        let mut ve = end;
        while ve > vs && is_lws(hb[ve - 1]) {
            ve -= 1;
        }
        if headers.len() >= limits.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        if kind != HeaderName::Other {
            let bit = 1u64 << (kind as u8);
            if strict && kind.single_valued() && seen & bit != 0 {
                return Err(if kind == HeaderName::ContentLength {
                    ParseError::DuplicateContentLength
                } else {
                    ParseError::DuplicateHeader(kind)
                });
            }
            seen |= bit;
        }
        if kind == HeaderName::ContentLength {
            match parse_content_length(&head[vs..ve]) {
                Ok(n) => content_length = Some(n),
                Err(e) if strict => return Err(e),
                Err(_) => {}
            }
        }
        headers.push(Header {
            kind,
            name: Span::new(line_start, name_end),
            value: Span::new(vs, ve),
            line: Span::new(line_start, end + 2),
        });
    }

    Ok((headers, seen, content_length))
}

fn parse_start_line(head: &str, start: usize, end: usize) -> Result<StartLine, ParseError> {
    let line = &head[start..end];
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = rest.find(' ').ok_or(ParseError::MalformedStartLine)?;
        check_version(&line[..4 + sp])?;
        let after = &rest[sp + 1..];
        let code_end = after.find(' ').ok_or(ParseError::InvalidStatusCode)?;
        let code_text = &after[..code_end];
        let code = Status::parse(code_text).ok_or(ParseError::InvalidStatusCode)?;
        let reason_start = start + 4 + sp + 1 + code_end + 1;
        return Ok(StartLine::Response {
            code,
            reason: Span::new(reason_start, end),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces, nothing after.
    let (Some(method), Some(uri), Some(version)) = split_request_line(line) else {
        return Err(
            if line.bytes().all(|b| b.is_ascii_graphic() || b == b' ') && line.contains(' ') {
                ParseError::MalformedRequestLine
            } else {
                ParseError::MalformedStartLine
            },
        );
    };
    if method.is_empty() || !method.bytes().all(is_token) {
        return Err(ParseError::InvalidMethod);
    }
    if uri.is_empty() {
        return Err(ParseError::MalformedRequestLine);
    }
    check_version(version)?;
    if uri.starts_with('<') {
        return Err(ParseError::InvalidRequestUri);
    }
    let parsed = super::uri::Uri::parse(uri).map_err(|_| ParseError::InvalidRequestUri)?;
    if parsed.is_sip() && parsed.headers.is_some() {
        return Err(ParseError::RequestUriHeaders);
    }
    let method_start = start;
    let uri_start = method_start + method.len() + 1;
    Ok(StartLine::Request {
        method: Method::from_token(method),
        method_span: Span::new(method_start, method_start + method.len()),
        uri: Span::new(uri_start, uri_start + uri.len()),
    })
}

/// The three parts of a request line when it holds exactly two spaces.
fn split_request_line(line: &str) -> (Option<&str>, Option<&str>, Option<&str>) {
    let b = line.as_bytes();
    let Some(sp1) = b.iter().position(|&c| c == b' ') else {
        return (None, None, None);
    };
    let Some(sp2) = b[sp1 + 1..]
        .iter()
        .position(|&c| c == b' ')
        .map(|p| p + sp1 + 1)
    else {
        return (None, None, None);
    };
    if b[sp2 + 1..].contains(&b' ') {
        return (None, None, None);
    }
    (
        Some(&line[..sp1]),
        Some(&line[sp1 + 1..sp2]),
        Some(&line[sp2 + 1..]),
    )
}

/// `SIP/2.0`, case-insensitive per the ABNF. Another well-formed version is
/// `UnsupportedVersion` (505); anything else is a malformed line.
fn check_version(v: &str) -> Result<(), ParseError> {
    let b = v.as_bytes();
    if b.len() < 7 || !b[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(ParseError::MalformedRequestLine);
    }
    let rest = &v[4..];
    let dot = rest
        .bytes()
        .position(|c| c == b'.')
        .ok_or(ParseError::MalformedRequestLine)?;
    let (major, minor) = (&rest[..dot], &rest[dot + 1..]);
    if major.is_empty()
        || minor.is_empty()
        || !major.bytes().all(|b| b.is_ascii_digit())
        || !minor.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ParseError::MalformedRequestLine);
    }
    if rest != "2.0" {
        return Err(ParseError::UnsupportedVersion);
    }
    Ok(())
}

/// Content-Length: 1*DIGIT. A sign, letters or a value past our address space are invalid.
pub(crate) fn parse_content_length(v: &str) -> Result<usize, ParseError> {
    parse_u32_strict(v)
        .map(|n| n as usize)
        .ok_or(ParseError::InvalidContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with_headers(n: usize) -> Bytes {
        let mut m =
            String::from("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n");
        m.push_str("From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n");
        for i in 0..n.saturating_sub(6) {
            m.push_str(&format!("X-H{i}: v\r\n"));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        Bytes::from(m)
    }

    #[test]
    fn header_count_limit_is_enforced() {
        let limits = Limits::default();
        assert!(Message::parse(request_with_headers(limits.max_headers), &limits).is_ok());
        assert_eq!(
            Message::parse(request_with_headers(limits.max_headers + 1), &limits).err(),
            Some(ParseError::TooManyHeaders)
        );
    }

    const REGISTER: &str = "REGISTER sip:b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
        From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
        Content-Length: 0\r\n\r\n";

    /// Issue 12 item 13: each fault is told apart, and the lenient parse for the answer
    /// still finds what the answer copies.
    #[test]
    fn lf_only_control_characters_and_too_many_lines_can_be_answered() {
        let limits = Limits::default();
        let reply_parse = |text: String| {
            let m = Message::parse_for_error_reply(Bytes::from(text), &limits)
                .expect("an error reply can be built");
            assert_eq!(m.call_id().ok(), Some("c"));
            assert_eq!(m.top_via().ok().and_then(|v| v.branch()), Some("z9hG4bK1"));
            m
        };

        let lf = REGISTER.replace("\r\n", "\n");
        assert_eq!(
            Message::parse(Bytes::from(lf.clone()), &limits).err(),
            Some(ParseError::BareLineFeeds)
        );
        reply_parse(lf);

        let ctl = REGISTER.replace("\r\nTo:", "\r\nTo\x01:");
        assert_eq!(
            Message::parse(Bytes::from(ctl.clone()), &limits).err(),
            Some(ParseError::InvalidHeaderName)
        );
        let m = reply_parse(ctl);
        assert!(
            m.value(HeaderName::To).is_none(),
            "the broken line is skipped"
        );

        let no_colon = REGISTER.replace("\r\nTo:", "\r\nTo ");
        assert_eq!(
            Message::parse(Bytes::from(no_colon), &limits).err(),
            Some(ParseError::MalformedHeader)
        );

        let many: String = (0..200)
            .map(|n| format!("Contact: <sip:a@h:{n}>\r\n"))
            .collect();
        let many = REGISTER.replace("Content-Length", &format!("{many}Content-Length"));
        assert_eq!(
            Message::parse(Bytes::from(many.clone()), &limits).err(),
            Some(ParseError::TooManyHeaders)
        );
        let m = reply_parse(many);
        assert!(m.headers().len() <= limits.max_headers);
    }

    #[test]
    fn header_section_and_body_limits_are_enforced() {
        let limits = Limits {
            max_header_bytes: 200,
            max_body_bytes: 4,
            max_headers: 128,
        };
        assert_eq!(
            Message::parse(request_with_headers(20), &limits).err(),
            Some(ParseError::HeaderSectionTooLarge)
        );
        let small = Limits {
            max_header_bytes: 16 * 1024,
            ..limits
        };
        let body = Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(
            Message::parse(body, &small).err(),
            Some(ParseError::BodyTooLarge)
        );
    }
}
