//! `StreamFramer` fed the same byte stream in fuzzer-chosen chunks and in one piece.
//!
//! Input layout: byte 0 = number of split points (mod 16), then that many bytes giving chunk
//! lengths (0 allowed), then the stream. Checked:
//! - chunking changes nothing: same frames, same error, same bytes left buffered;
//! - frames are the stream in order: each message is the next bytes of the input, each
//!   Ping is a `CRLFCRLF` there, and only lone CRLFs between them are dropped;
//! - what the framer cut is what the parser reads: a framed message that parses has exactly
//!   its Content-Length of body and no bytes after it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipward::sip::{Frame, HeaderName, Limits, Message, ParseError, StreamFramer};

/// Small limits so the fuzzer reaches the limit paths.
fn limits() -> Limits {
    Limits {
        max_header_bytes: 2048,
        max_body_bytes: 1024,
        max_headers: 32,
    }
}

struct Outcome {
    frames: Vec<Frame>,
    error: Option<ParseError>,
    buffered: usize,
}

fn run(chunks: &[&[u8]]) -> Outcome {
    let mut framer = StreamFramer::new(limits());
    let mut frames = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        loop {
            match framer.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(e),
                        buffered: framer.buffered(),
                    }
                }
            }
        }
    }
    Outcome {
        frames,
        error: None,
        buffered: framer.buffered(),
    }
}

/// Skips lone CRLFs at `pos` while the input there does not start with `want`.
fn skip_crlfs(input: &[u8], mut pos: usize, want: &[u8]) -> usize {
    while !input[pos..].starts_with(want) && input[pos..].starts_with(b"\r\n") {
        pos += 2;
    }
    pos
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let mut chunks = Vec::new();
    let mut at = 0;
    for &s in sizes {
        let end = (at + usize::from(s)).min(stream.len());
        chunks.push(&stream[at..end]);
        at = end;
    }
    chunks.push(&stream[at..]);

    let whole = run(&[stream]);
    let split = run(&chunks);
    assert_eq!(whole.frames, split.frames, "chunking changed the frames");
    assert_eq!(whole.error, split.error, "chunking changed the error");
    if whole.error.is_none() {
        assert_eq!(
            whole.buffered, split.buffered,
            "chunking changed what is buffered"
        );
    }

    let mut pos = 0;
    for frame in &whole.frames {
        let bytes: &[u8] = match frame {
            Frame::Ping => b"\r\n\r\n",
            Frame::Message(m) => m,
        };
        pos = skip_crlfs(stream, pos, bytes);
        assert!(
            stream[pos..].starts_with(bytes),
            "frame is not the next input bytes"
        );
        pos += bytes.len();
        if let Frame::Message(m) = frame {
            check_parse(m);
        }
    }
    if whole.error.is_none() {
        // What is left buffered is the rest of the input, less lone CRLFs dropped.
        let left = stream.len() - pos;
        assert!(whole.buffered <= left);
        let dropped = left - whole.buffered;
        assert!(dropped.is_multiple_of(2));
        assert!(stream[pos..pos + dropped].chunks(2).all(|c| c == b"\r\n"));
    }
});

fn check_parse(frame: &Bytes) {
    let Ok(msg) = Message::parse(frame.clone(), &limits()) else {
        return;
    };
    assert_eq!(
        msg.trailing_bytes(),
        0,
        "framer and parser disagree on the end"
    );
    let declared = msg
        .value(HeaderName::ContentLength)
        .map(str::parse::<usize>);
    assert_eq!(
        declared,
        Some(Ok(msg.body().len())),
        "framer and parser disagree on Content-Length"
    );
}
