//! The request-head gate in front of hyper: reads one request head off a new connection,
//! checks it the way hyper's HTTP/1 parser would (httparse, the same header count, the URI,
//! `Content-Length` and `Transfer-Encoding` rules), and answers a refusal itself, because
//! hyper's own answers to a bad head (431, 400) cannot be given headers or a body. So every
//! response of the HTTP listener carries `Cache-Control: no-store` and an RFC 6750-shaped
//! JSON error, these included.
//!
//! A head that passes is handed to hyper unchanged, with every byte read so far ([`Rewind`]).
//! Costs: at most `max_header_bytes` plus one read chunk buffered per connection while its
//! head arrives; each buffered byte is scanned once for the end of the head and the head is
//! parsed once. It must not interpret the request beyond that: routing and bodies are
//! hyper's and axum's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// Header lines accepted in one request head (hyper's default; more is 431).
pub const MAX_HEADERS: usize = 100;
/// Bytes read from the socket at a time while the head arrives.
pub const READ_CHUNK: usize = 4096;
/// After a refusal, request bytes still arriving are read and dropped for at most this long
/// (and [`DRAIN_MAX_BYTES`]) so that closing does not reset the connection before the client
/// has read the answer.
const DRAIN_TIME: Duration = Duration::from_secs(2);
const DRAIN_MAX_BYTES: usize = 256 * 1024;

/// Why a head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than `max_header_bytes`, or more than [`MAX_HEADERS`] header lines: 431.
    TooLarge,
    /// Not an HTTP/1.x request head (bad request line, header name or value, NUL, obs-fold,
    /// URI, `Content-Length` or `Transfer-Encoding`): 400.
    Malformed,
}

impl Refusal {
    fn status_line(self) -> &'static str {
        match self {
            Refusal::TooLarge => "431 Request Header Fields Too Large",
            Refusal::Malformed => "400 Bad Request",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Refusal::TooLarge => "the request head is too large",
            Refusal::Malformed => "the request head is malformed",
        }
    }

    /// The whole response: status, `no-store`, a JSON error, and `Connection: close`.
    pub fn response(self) -> Vec<u8> {
        let body = serde_json::json!({
            "error": "invalid_request",
            "error_description": self.description(),
        })
        .to_string();
        format!(
            "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            self.status_line(),
            body.len()
        )
        .into_bytes()
    }
}

/// What reading a head ended with.
#[derive(Debug)]
pub enum Head {
    /// A complete head that hyper will accept; the bytes read so far (head and any body).
    Ready(Vec<u8>),
    Refused(Refusal),
    /// The peer closed (or the read failed) before a complete head.
    Closed,
}

/// Reads until a complete head or a refusal. No deadline here: the caller wraps it.
pub async fn read<R: AsyncRead + Unpin>(io: &mut R, max_header_bytes: usize) -> Head {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    // Every byte before `scanned` has been looked at as the possible end of the head.
    let mut scanned = 0;
    loop {
        // Look for the end of the head (CRLF CRLF, or LF LF as httparse also accepts) in the
        // bytes not scanned yet; parse only when one is found (a terminator can also end
        // empty lines before the request line: then the head is still partial).
        while let Some(end) = find_end(&buf, scanned) {
            if end > max_header_bytes {
                return Head::Refused(Refusal::TooLarge);
            }
            match check(&buf[..end]) {
                Check::Complete => return Head::Ready(buf),
                Check::Refused(r) => return Head::Refused(r),
                Check::Partial => scanned = end,
            }
        }
        scanned = buf.len();
        if buf.len() > max_header_bytes {
            return Head::Refused(Refusal::TooLarge);
        }
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        match io.read(&mut buf[start..]).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(n) => buf.truncate(start + n),
        }
    }
}

/// Writes the refusal, then reads and drops what the client still sends (bounded), so the
/// close does not reset the connection before the answer is read.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, refusal: Refusal) {
    if io.write_all(&refusal.response()).await.is_err() {
        return;
    }
    let _ = io.flush().await;
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut sink = [0u8; READ_CHUNK];
        let mut drained = 0;
        while drained < DRAIN_MAX_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// The index just past the first head terminator that ends at or after `from`.
fn find_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if i >= 1 && buf[i - 1] == b'\n' {
                return Some(i + 1);
            }
            if i >= 3 && &buf[i - 3..i] == b"\r\n\r" {
                return Some(i + 1);
            }
        }
        i += 1;
    }
    None
}

enum Check {
    Complete,
    Partial,
    Refused(Refusal),
}

/// hyper's checks of a request head (its `Server::parse`), as far as they refuse a request.
fn check(head: &[u8]) -> Check {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Check::Partial,
        Err(httparse::Error::TooManyHeaders) => return Check::Refused(Refusal::TooLarge),
        Err(_) => return Check::Refused(Refusal::Malformed),
    }
    let uri_ok = req
        .path
        .is_some_and(|p| p.parse::<axum::http::Uri>().is_ok());
    let http11 = req.version == Some(1);
    let mut te = None;
    let mut length = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Check::Refused(Refusal::Malformed);
            }
            te = Some(last_is_chunked(h.value));
        } else if h.name.eq_ignore_ascii_case("content-length") && te.is_none() {
            let Some(n) = content_length(h.value) else {
                return Check::Refused(Refusal::Malformed);
            };
            if length.is_some_and(|prev| prev != n) {
                return Check::Refused(Refusal::Malformed);
            }
            length = Some(n);
        }
    }
    if !uri_ok || te == Some(false) {
        return Check::Refused(Refusal::Malformed);
    }
    Check::Complete
}

fn last_is_chunked(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|v| {
        v.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    })
}

/// A `Content-Length` value: digits, or a comma-separated list of one repeated number.
fn content_length(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let mut out = None;
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = part.parse().ok()?;
        if out.is_some_and(|prev| prev != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// A connection whose first bytes were already read: they are read again first.
pub struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Vec<u8>, inner: T) -> Rewind<T> {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all_chunked(input: &[u8], chunk: usize, max: usize) -> Head {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let data = input.to_vec();
        let writer = tokio::spawn(async move {
            for piece in data.chunks(chunk) {
                if client.write_all(piece).await.is_err() {
                    break;
                }
            }
            // Dropping the client here ends the stream: a cut-off head reads as closed.
        });
        let head = read(&mut server, max).await;
        drop(server);
        let _ = writer.await;
        head
    }

    #[tokio::test]
    async fn complete_heads_pass_with_every_byte_in_any_chunking() {
        let req = b"POST /v1/sip/credentials HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody";
        for chunk in [1, 2, 3, 7, 4096] {
            match read_all_chunked(req, chunk, 16384).await {
                Head::Ready(bytes) => assert!(
                    req.starts_with(&bytes) && bytes.len() >= req.len() - 4,
                    "{chunk}"
                ),
                other => panic!("chunk {chunk}: {other:?}"),
            }
        }
        let lf_only = b"GET / HTTP/1.1\nHost: x\n\n";
        assert!(matches!(
            read_all_chunked(lf_only, 1, 16384).await,
            Head::Ready(_)
        ));
        let leading_crlf = b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            read_all_chunked(leading_crlf, 1, 16384).await,
            Head::Ready(_)
        ));
    }

    #[tokio::test]
    async fn bad_heads_are_refused_with_the_right_status() {
        let long = format!("GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "a".repeat(20_000));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let cases: [(&[u8], Refusal); 9] = [
            (long.as_bytes(), Refusal::TooLarge),
            (many.as_bytes(), Refusal::TooLarge),
            (b"GET / HTTP/1.1\r\nX-Bad: a\0b\r\n\r\n", Refusal::Malformed),
            (
                b"GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
                Refusal::Malformed,
            ),
            (b"GET / HTTP/1.1\r\nTo\x01: a\r\n\r\n", Refusal::Malformed),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                Refusal::Malformed,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                Refusal::Malformed,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                Refusal::Malformed,
            ),
            (b"GET / HTTP/2.0\r\n\r\n", Refusal::Malformed),
        ];
        for (input, expected) in cases {
            let got = read_all_chunked(input, 512, 16384).await;
            assert!(
                matches!(got, Head::Refused(r) if r == expected),
                "{:?}: {got:?}",
                String::from_utf8_lossy(&input[..input.len().min(60)])
            );
        }
        assert!(matches!(
            read_all_chunked(b"GET / HT", 3, 16384).await,
            Head::Closed
        ));
    }

    #[test]
    fn a_refusal_is_json_with_no_store() {
        let text = String::from_utf8(Refusal::TooLarge.response()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains("cache-control: no-store"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "invalid_request");
    }

    #[tokio::test]
    async fn rewind_replays_the_prefix_then_reads_on() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut r = Rewind::new(b"hello".to_vec(), server);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
