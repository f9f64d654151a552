//! The stored form of a response a server transaction replays (issue 22).
//!
//! This file owns how a response is kept for 64*T1 in as few bytes as possible and rebuilt
//! byte for byte for a retransmission (RFC 3261 §17.2.2 resends the same response). A
//! response sipward builds copies most of its bytes from the request it answers (Via, From,
//! To, Call-ID, CSeq, and for a REGISTER the Contact URIs and Expires), and a retransmission
//! repeats that request. So a response is stored as a template over its request: runs copied
//! from the request (or from a small fixed dictionary of response fragments) and the literal
//! bytes in between (the To-tag, the Date). A retransmission rebuilds it from its own bytes,
//! and the rebuilt response is sent only if its keyed 64-bit digest equals the one taken
//! of the original: a retransmission that is not byte-identical where the template reads it
//! rebuilds other bytes, fails the check, and the caller processes it afresh. A response
//! stored without its request (a relayed one) is kept verbatim.
//!
//! It must not know about transactions, keys or time, and holds no state beyond the one
//! exact-size allocation per stored response (and the dictionary's index, built once).

use std::sync::OnceLock;

/// Fragments of the responses sipward builds that the request does not contain. Copies from
/// here are addressed before the request: offsets below its length point into it.
const DICTIONARY: &[u8] = b"SIP/2.0 200 OK\r\nSIP/2.0 100 Trying\r\nSIP/2.0 486 Busy Here\r\n\
SIP/2.0 480 Temporarily Unavailable\r\nSIP/2.0 404 Not Found\r\nSIP/2.0 403 Forbidden\r\n\
SIP/2.0 500 Server Internal Error\r\nSIP/2.0 503 Service Unavailable\r\nRetry-After: \
;received=;rport=;expires=3600\r\nContact: <sip:>;expires=Date: \
 GMT\r\nSupported: path, outbound\r\nRequire: outbound\r\nServer: sipward\r\n\
Content-Length: 0\r\n\r\n";

/// Shortest run worth a copy: a copy costs 3 bytes and may split a literal run (1 more).
const MIN_COPY: usize = 6;
/// Longest copy one op encodes (7 bits of length above `MIN_COPY`).
const MAX_COPY: usize = MIN_COPY + 0x7f;
/// Longest literal run one op encodes.
const MAX_LITERAL: usize = 0x80;
/// Dictionary candidates tried per position.
const MAX_CANDIDATES: usize = 8;
/// Hash-chain heads (4-byte prefixes).
const HEAD_BITS: u32 = 10;
const NONE: u16 = u16::MAX;

const VERBATIM: u8 = 0;
const TEMPLATE: u8 = 1;
/// Format byte + digest (8) + length (4).
const TEMPLATE_HEADER: usize = 13;

/// One stored response: one allocation of exactly its size. The first byte says which form
/// follows: `VERBATIM` then the response; or `TEMPLATE`, the response's digest (u64 LE),
/// its length (u32 LE), then ops: `0lllllll` = the next `l + 1` bytes are literal;
/// `1lllllll oo oo` = copy `l + MIN_COPY` bytes from offset `o` (u16 LE) of the dictionary
/// followed by the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse(Box<[u8]>);

impl StoredResponse {
    /// Keeps `response` as it is (a relayed response, whose request is not at hand).
    pub fn verbatim(response: &[u8]) -> Self {
        let mut out = Vec::with_capacity(response.len() + 1);
        out.push(VERBATIM);
        out.extend_from_slice(response);
        Self(out.into_boxed_slice())
    }

    /// Keeps `response` as a template over `request`; `digest` is the caller's keyed digest of
    /// `response`, checked again by [`Self::rebuild`]. Falls back to verbatim when the template
    /// would not be smaller, or the response is too large to describe.
    pub fn template(response: &[u8], request: &[u8], digest: u64) -> Self {
        let Ok(len) = u32::try_from(response.len()) else {
            return Self::verbatim(response);
        };
        let mut out = Vec::with_capacity(TEMPLATE_HEADER + response.len() / 2);
        out.push(TEMPLATE);
        out.extend_from_slice(&digest.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        encode(response, request, &mut out);
        if out.len() > response.len() {
            return Self::verbatim(response);
        }
        Self(out.into_boxed_slice())
    }

    /// The response again: `request` is the retransmitted request, `digest` the caller's keyed
    /// digest function. `None` when the rebuilt bytes are not the original response (the
    /// retransmission differs from the request in a byte the template copies).
    pub fn rebuild(&self, request: &[u8], digest: impl Fn(&[u8]) -> u64) -> Option<Vec<u8>> {
        match self.0.split_first() {
            Some((&VERBATIM, response)) => Some(response.to_vec()),
            Some((&TEMPLATE, rest)) if rest.len() >= TEMPLATE_HEADER - 1 => {
                let (head, ops) = rest.split_at(TEMPLATE_HEADER - 1);
                let (want, len) = head.split_at(8);
                let want = u64::from_le_bytes(want.try_into().ok()?);
                let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
                let out = decode(ops, request, len)?;
                (out.len() == len && digest(&out) == want).then_some(out)
            }
            _ => None,
        }
    }

    /// Bytes held (the allocation's requested size).
    pub fn stored_len(&self) -> usize {
        self.0.len()
    }
}

/// Line by line: a response copies the header lines it shares with its request (Via, From,
/// To, Call-ID, CSeq, Contact, Content-Length) whole or with a parameter added. So each
/// response line is matched against the request line with the longest common prefix, the
/// common prefix and suffix become copies, and what lies between, and every line no request
/// line starts alike, is searched in the dictionary (4-byte hash chains built once) and
/// otherwise kept literal. No index of the request is built: linear in both messages.
fn encode(response: &[u8], request: &[u8], out: &mut Vec<u8>) {
    static DICTIONARY_INDEX: OnceLock<Index> = OnceLock::new();
    let dictionary = DICTIONARY_INDEX.get_or_init(|| Index::new(DICTIONARY));
    let request = &request[..request.len().min(usize::from(u16::MAX) - DICTIONARY.len())];
    let lines = Lines::of(request);
    let mut encoder = Encoder {
        response,
        out,
        dictionary,
        literal_from: 0,
        last_copy: None,
    };
    let mut start = 0;
    while start < response.len() {
        let end =
            memchr::memchr(b'\n', &response[start..]).map_or(response.len(), |i| start + i + 1);
        let line = &response[start..end];
        let (prefix, from) = lines.longest_prefix(line, request);
        if prefix < MIN_COPY {
            encoder.search(start, end, None);
        } else {
            let theirs = &request[from..lines.end_of(from, request)];
            let room = line.len().min(theirs.len()) - prefix;
            let suffix = line
                .iter()
                .rev()
                .zip(theirs.iter().rev())
                .take(room)
                .take_while(|(a, b)| a == b)
                .count();
            let suffix = if suffix >= MIN_COPY { suffix } else { 0 };
            encoder.copy(start, prefix, DICTIONARY.len() + from);
            encoder.search(start + prefix, end - suffix, Some((theirs, from)));
            if suffix > 0 {
                let from = DICTIONARY.len() + from + theirs.len() - suffix;
                encoder.copy(end - suffix, suffix, from);
            }
        }
        start = end;
    }
    encoder.finish();
}

/// Up to `MAX_LINES` line starts of the request (each line runs to its `\n` inclusive).
struct Lines {
    starts: [u16; MAX_LINES],
    len: usize,
}

/// Lines of a request looked at; later ones (a long header section) are not copied from.
const MAX_LINES: usize = 48;

impl Lines {
    fn of(request: &[u8]) -> Self {
        let mut lines = Self {
            starts: [0; MAX_LINES],
            len: 1,
        };
        for end in memchr::memchr_iter(b'\n', request) {
            if lines.len == MAX_LINES || end + 1 >= request.len() {
                break;
            }
            lines.starts[lines.len] = (end + 1) as u16;
            lines.len += 1;
        }
        lines
    }

    /// The request line sharing the longest prefix with `line`: (length, its start).
    fn longest_prefix(&self, line: &[u8], request: &[u8]) -> (usize, usize) {
        let mut best = (0, 0);
        for &start in &self.starts[..self.len] {
            let Some(theirs) = request.get(usize::from(start)..) else {
                continue;
            };
            if theirs.first() != line.first() || theirs.get(1) != line.get(1) {
                continue;
            }
            let len = line.iter().zip(theirs).take_while(|(a, b)| a == b).count();
            if len > best.0 {
                best = (len, usize::from(start));
            }
        }
        best
    }

    /// Where the request line starting at `start` ends (after its `\n`).
    fn end_of(&self, start: usize, request: &[u8]) -> usize {
        memchr::memchr(b'\n', &request[start..]).map_or(request.len(), |i| start + i + 1)
    }
}

/// Writes ops for the response from left to right; `literal_from` is where the bytes not yet
/// written (to become literals) begin.
struct Encoder<'a> {
    response: &'a [u8],
    out: &'a mut Vec<u8>,
    dictionary: &'a Index,
    literal_from: usize,
    /// The last copy op written: its index in `out` and where its source ends.
    last_copy: Option<(usize, usize)>,
}

impl Encoder<'_> {
    /// Response bytes `at..at + len` are a copy from offset `from` (dictionary, then request).
    /// A tail shorter than `MIN_COPY` is left to the literals.
    fn copy(&mut self, mut at: usize, len: usize, mut from: usize) {
        let mut left = len;
        // Continues the last copy when the source runs on (one header line after another).
        if let Some((op, _)) = self
            .last_copy
            .filter(|&(_, end)| at == self.literal_from && end == from)
        {
            let grow = left.min(MAX_COPY - (usize::from(self.out[op] & 0x7f) + MIN_COPY));
            self.out[op] += grow as u8;
            (left, from, at) = (left - grow, from + grow, at + grow);
            self.last_copy = Some((op, from));
            if left < MIN_COPY {
                self.literal_from = at;
                return;
            }
        }
        push_literals(&self.response[self.literal_from..at], self.out);
        while left >= MIN_COPY {
            let take = left.min(MAX_COPY);
            self.last_copy = Some((self.out.len(), from + take));
            self.out.push(0x80 | (take - MIN_COPY) as u8);
            self.out.extend_from_slice(&(from as u16).to_le_bytes());
            (left, from, at) = (left - take, from + take, at + take);
        }
        self.literal_from = at;
    }

    /// Copies what the request line `theirs` (at `from` in the request) or the dictionary
    /// holds of `start..end`, at each token start (an address the response repeats, a
    /// parameter name).
    fn search(&mut self, start: usize, end: usize, theirs: Option<(&[u8], usize)>) {
        let mut at = start.max(self.literal_from);
        while at + MIN_COPY <= end {
            if at != self.literal_from && !starts_token(self.response, at) {
                at += 1;
                continue;
            }
            let rest = &self.response[at..end];
            let mut best = self.dictionary.longest_run(rest, DICTIONARY);
            if let Some((theirs, from)) = theirs {
                for (i, _) in theirs.iter().enumerate().filter(|(_, &b)| b == rest[0]) {
                    let len = common_prefix(rest, &theirs[i..]);
                    if len > best.0 {
                        best = (len, DICTIONARY.len() + from + i);
                    }
                }
            }
            if best.0 < MIN_COPY {
                at += 1;
                continue;
            }
            self.copy(at, best.0, best.1);
            at += best.0;
        }
    }

    fn finish(self) {
        push_literals(&self.response[self.literal_from..], self.out);
    }
}

/// Hash chains over one source: the last position of each 4-byte prefix hash, and for each
/// position the previous one with the same hash.
#[derive(Debug)]
struct Index {
    head: [u16; 1 << HEAD_BITS],
    prev: Vec<u16>,
}

impl Index {
    fn new(bytes: &[u8]) -> Self {
        let mut index = Self {
            head: [NONE; 1 << HEAD_BITS],
            prev: vec![NONE; bytes.len()],
        };
        for pos in (0..bytes.len().saturating_sub(3)).filter(|&pos| starts_token(bytes, pos)) {
            let h = prefix_hash(&bytes[pos..]);
            index.prev[pos] = index.head[h];
            index.head[h] = pos as u16;
        }
        index
    }

    /// The longest prefix of `rest` found in `bytes`: (length, position).
    fn longest_run(&self, rest: &[u8], bytes: &[u8]) -> (usize, usize) {
        let mut best = (0, 0);
        if rest.len() < 4 {
            return best;
        }
        let mut candidate = self.head[prefix_hash(rest)];
        for _ in 0..MAX_CANDIDATES {
            let Some(source) = bytes.get(usize::from(candidate)..) else {
                break;
            };
            let len = rest.iter().zip(source).take_while(|(a, b)| a == b).count();
            if len > best.0 {
                best = (len, usize::from(candidate));
            }
            candidate = self.prev[usize::from(candidate)];
        }
        best
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Runs are looked for only where a token starts (after a byte that is not a letter or a
/// digit): copies of header values start there, and it skips most positions.
fn starts_token(bytes: &[u8], pos: usize) -> bool {
    pos == 0 || !bytes[pos - 1].is_ascii_alphanumeric()
}

fn prefix_hash(bytes: &[u8]) -> usize {
    let word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    (word.wrapping_mul(0x9E37_79B1) >> (32 - HEAD_BITS)) as usize
}

fn push_literals(mut bytes: &[u8], out: &mut Vec<u8>) {
    while !bytes.is_empty() {
        let (run, rest) = bytes.split_at(bytes.len().min(MAX_LITERAL));
        out.push((run.len() - 1) as u8);
        out.extend_from_slice(run);
        bytes = rest;
    }
}

fn decode(mut ops: &[u8], request: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    while let Some((&op, rest)) = ops.split_first() {
        if op & 0x80 == 0 {
            let (run, rest) = rest.split_at_checked(usize::from(op) + 1)?;
            out.extend_from_slice(run);
            ops = rest;
        } else {
            let (offset, rest) = rest.split_at_checked(2)?;
            let from = usize::from(u16::from_le_bytes([offset[0], offset[1]]));
            let take = usize::from(op & 0x7f) + MIN_COPY;
            let run = match from.checked_sub(DICTIONARY.len()) {
                None => DICTIONARY.get(from..from + take)?,
                Some(from) => request.get(from..from + take)?,
            };
            out.extend_from_slice(run);
            ops = rest;
        }
        if out.len() > len {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"REGISTER sip:bench.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-3111-1-2\r\n\
From: <sip:u100000@bench.test>;tag=1\r\nTo: <sip:u100000@bench.test>\r\n\
Call-ID: 1-3111@127.0.0.1\r\nCSeq: 2 REGISTER\r\n\
Contact: <sip:u100000@127.0.0.1:5070;transport=UDP>\r\nMax-Forwards: 70\r\n\
Expires: 3600\r\nContent-Length: 0\r\n\r\n";

    const RESPONSE: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-3111-1-2;received=127.0.0.1\r\n\
From: <sip:u100000@bench.test>;tag=1\r\nTo: <sip:u100000@bench.test>;tag=5e1f0c2d9a8b7c6d\r\n\
Call-ID: 1-3111@127.0.0.1\r\nCSeq: 2 REGISTER\r\n\
Contact: <sip:u100000@127.0.0.1:5070;transport=UDP>;expires=3600\r\n\
Date: Mon, 07 Dec 2026 22:40:00 GMT\r\nSupported: path, outbound\r\n\
Server: sipward/0.1.0\r\nContent-Length: 0\r\n\r\n";

    fn digest(bytes: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        // A fixed key is enough here; the table keys its digest per process.
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(bytes)
    }

    #[test]
    fn a_template_rebuilds_the_exact_response_from_the_same_request() {
        let stored = StoredResponse::template(RESPONSE, REQUEST, digest(RESPONSE));
        assert_eq!(stored.rebuild(REQUEST, digest).as_deref(), Some(RESPONSE));
        // Most of the response is copied: the template is a fraction of it.
        assert!(
            stored.stored_len() * 3 < RESPONSE.len(),
            "{} of {}",
            stored.stored_len(),
            RESPONSE.len()
        );
    }

    #[test]
    fn a_different_request_is_refused_not_answered_with_other_bytes() {
        let stored = StoredResponse::template(RESPONSE, REQUEST, digest(RESPONSE));
        let mut other = REQUEST.to_vec();
        let at = other.windows(6).position(|w| w == b"u10000").expect("user");
        other[at + 6] = b'9';
        assert_eq!(stored.rebuild(&other, digest), None);
        assert_eq!(stored.rebuild(&REQUEST[..40], digest), None);
        assert_eq!(stored.rebuild(b"", digest), None);
    }

    #[test]
    fn verbatim_needs_no_request() {
        let stored = StoredResponse::verbatim(RESPONSE);
        assert_eq!(stored.rebuild(b"", digest).as_deref(), Some(RESPONSE));
        assert_eq!(stored.stored_len(), RESPONSE.len() + 1);
    }

    #[test]
    fn unrelated_or_tiny_responses_fall_back_to_verbatim() {
        for response in [&b""[..], b"x", b"SIP/2.0 100 Trying\r\n\r\n", &[0xff; 300]] {
            let stored = StoredResponse::template(response, REQUEST, digest(response));
            assert!(stored.stored_len() <= response.len() + 1);
            assert_eq!(stored.rebuild(REQUEST, digest).as_deref(), Some(response));
        }
    }

    #[test]
    fn long_runs_and_long_literals_are_split_and_rebuilt() {
        let mut request = b"OPTIONS sip:x SIP/2.0\r\n".to_vec();
        request.extend((0..2000u32).map(|i| b'a' + (i * 7 % 26) as u8));
        let mut response = request[23..1500].to_vec();
        response.extend((0..700u32).map(|i| (i * 13 % 251) as u8));
        response.extend_from_slice(&request[100..400]);
        let stored = StoredResponse::template(&response, &request, digest(&response));
        assert!(stored.stored_len() < response.len() / 2);
        assert_eq!(
            stored.rebuild(&request, digest).as_deref(),
            Some(&response[..])
        );
    }
}
