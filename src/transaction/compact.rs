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
/// Candidates tried per position and source: enough for the repeated `sip:user@host` of a
/// REGISTER.
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

/// Greedy LZ77 over the dictionary and the request (both at most 64 KiB in all): at each
/// position of the response where a token starts, the longest run found through 4-byte hash
/// chains of the positions where a token starts; the dictionary's chains are built once.
fn encode(response: &[u8], request: &[u8], out: &mut Vec<u8>) {
    static DICTIONARY_INDEX: OnceLock<Index> = OnceLock::new();
    let dictionary = DICTIONARY_INDEX.get_or_init(|| Index::new(DICTIONARY));
    let request = &request[..request.len().min(usize::from(u16::MAX) - DICTIONARY.len())];
    let sources = [
        (DICTIONARY, dictionary, 0),
        (request, &Index::new(request), DICTIONARY.len()),
    ];
    let (mut at, mut literal_from) = (0, 0);
    while at + MIN_COPY <= response.len() {
        if at != literal_from && !starts_token(response, at) {
            at += 1;
            continue;
        }
        let rest = &response[at..];
        let (len, from) = sources
            .iter()
            .map(|(bytes, index, base)| {
                let (len, pos) = index.longest_run(rest, bytes);
                (len, pos + base)
            })
            .max_by_key(|run| run.0)
            .unwrap_or((0, 0));
        if len < MIN_COPY {
            at += 1;
            continue;
        }
        push_literals(&response[literal_from..at], out);
        let (mut left, mut from) = (len, from);
        while left >= MIN_COPY {
            let take = left.min(MAX_COPY);
            out.push(0x80 | (take - MIN_COPY) as u8);
            out.extend_from_slice(&(from as u16).to_le_bytes());
            (left, from, at) = (left - take, from + take, at + take);
        }
        literal_from = at;
        at += left;
    }
    push_literals(&response[literal_from..], out);
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
