//! Fills a server transaction table with N completed UDP REGISTER transactions, each answered
//! with a 200 built as sipward builds it (To-tag, Contact with expires, Date, Supported,
//! Server), and prints the process's RSS growth per transaction: the memory that N
//! registrations hold for Timer J (64*T1 = 32 s). Issue 22; benches/RESULTS.md. Not a test.
//!
//!     cargo run --release --example txn_fill -- [N]

use std::time::{Duration, Instant};

use bytes::Bytes;
use sipward::sip::{Limits, Message, ResponseBuilder, ViaReceived};
use sipward::transaction::{
    Admission, RequestDisposition, TransactionConfig, TransactionKey, TransactionTable,
};

/// The binary's allocator, so the figure is the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(100_000), |v| v.parse())?;
    let config = TransactionConfig::new(Duration::from_millis(500), n + 1)?;
    let table = TransactionTable::new(config);
    let limits = Limits::default();
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let now = Instant::now();
    // One warm-up round outside the measurement: allocator arenas, the parser's statics.
    let warm = TransactionTable::new(config);
    register(&warm, &limits, &date, 0, now)?;
    let before = rss();
    let mut in_table = Duration::ZERO;
    for i in 1..=n {
        in_table += register(&table, &limits, &date, i, now)?;
    }
    let after = rss();
    println!(
        "{n} completed transactions held ({} live): RSS {} -> {} KiB, {:.0} B per transaction; \
         {:.2} us in the table per request and response; at 30 000/s x 32 s: {:.0} MB",
        table.len(),
        before / 1024,
        after / 1024,
        (after - before) as f64 / n as f64,
        in_table.as_secs_f64() * 1e6 / n as f64,
        (after - before) as f64 / n as f64 * 960_000.0 / 1e6,
    );
    // A retransmission of the last one is answered with the same bytes.
    let (request, key, response) = build(&limits, &date, n)?;
    match table.on_request(&key, &request, false, Admission::Authenticated, now) {
        RequestDisposition::Retransmit(bytes) if bytes == response => {
            println!("retransmission answered byte for byte")
        }
        other => return Err(format!("retransmission: {other:?}").into()),
    }
    Ok(())
}

fn register(
    table: &TransactionTable,
    limits: &Limits,
    date: &str,
    i: usize,
    now: Instant,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let (request, key, response) = build(limits, date, i)?;
    let started = Instant::now();
    let opened = table.on_request(&key, &request, false, Admission::Authenticated, now);
    if opened != RequestDisposition::New {
        return Err(format!("request {i}: {opened:?}").into());
    }
    table.on_response_to(&key, &request, &response, 200, now)?;
    Ok(started.elapsed())
}

/// SIPp's second REGISTER of benches/sipp/reg-digest.xml for user `i`, its key, and the 200.
fn build(
    limits: &Limits,
    date: &str,
    i: usize,
) -> Result<(Bytes, TransactionKey, Bytes), Box<dyn std::error::Error>> {
    let (user, port) = (100_000 + i, 5070 + (i % 1000));
    let branch = format!("z9hG4bK-4242-{i}-2");
    let request = format!(
        "REGISTER sip:bench.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}\r\n\
         From: <sip:u{user}@bench.test>;tag={i}\r\n\
         To: <sip:u{user}@bench.test>\r\n\
         Call-ID: {i}-4242@127.0.0.1\r\n\
         CSeq: 2 REGISTER\r\n\
         Contact: <sip:u{user}@127.0.0.1:{port};transport=UDP>\r\n\
         Authorization: Digest username=\"u{user}\",realm=\"bench.test\",cnonce=\"6b8b4567\",\
         nc=00000001,qop=auth,uri=\"sip:bench.test\",nonce=\"AZq3dGxhbWJkYS1ub25jZS0{i:08x}\",\
         response=\"{:032x}\",algorithm=MD5\r\n\
         Max-Forwards: 70\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n",
        i as u128 * 0x9E37_79B9_7F4A_7C15
    );
    let request = Bytes::from(request);
    let msg = Message::parse(request.clone(), limits)?;
    let key = TransactionKey::rfc3261(&branch, &format!("127.0.0.1:{port}"), "REGISTER")?;
    let contact = format!("<sip:u{user}@127.0.0.1:{port};transport=UDP>;expires=3600");
    let tag = format!("{:016x}", (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let response = ResponseBuilder::new(&msg, 200, "OK")
        .received(ViaReceived {
            addr: ([127, 0, 0, 1], port as u16).into(),
        })
        .server(Some("sipward"))
        .to_tag(&tag)
        .header("Contact", &contact)
        .header("Date", date)
        .header("Supported", "path, outbound")
        .build();
    Ok((request, key, response))
}

/// Resident set size, from /proc/self/statm.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
