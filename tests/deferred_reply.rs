//! The deferred reply seam of `transport::Handler` (issue 14 item 4), over real sockets on
//! 127.0.0.1:0: a handler that takes a `Responder`, returns at once, and answers from another
//! thread later; the receive thread or connection task stays free meanwhile; a dropped
//! responder sends nothing and holds nothing open.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipward::metrics::Metrics;
use sipward::sip::Limits;
use sipward::transport::tcp::{self, StreamContext, StreamLimits};
use sipward::transport::{udp, Flows, Handler, Later, Reply, Responder, Source};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Answers a message tagged `now-N` at once with `now:now-N`; for one tagged `later-N` it
/// hands its responder to the test (which answers when it chooses) and returns nothing.
/// UDP messages are bare tags; on TCP they are SIP requests (for the framer), see [`sip`].
struct TestHandler {
    responders: Mutex<mpsc::Sender<(String, Responder, SocketAddr)>>,
}

impl Handler for TestHandler {
    fn on_message(&self, data: Bytes, src: &Source) -> Reply {
        Reply {
            bytes: Some(Bytes::from(format!("now:{}", tag(&data)))),
            to: Some(src.peer),
            close: false,
        }
    }

    fn handle(&self, data: Bytes, src: &Source, later: Later<'_>) -> Reply {
        if !tag(&data).starts_with("later") {
            return self.on_message(data, src);
        }
        let sent = self
            .responders
            .lock()
            .unwrap()
            .send((tag(&data), later.responder(), src.peer));
        assert!(sent.is_ok(), "the test holds the receiving end");
        Reply::none()
    }
}

/// The tag a test message carries: the SIP message's Call-ID, or the whole datagram.
fn tag(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .unwrap_or(&text)
        .trim()
        .to_owned()
}

/// A complete SIP request (so the stream framer passes it up) tagged by its Call-ID.
fn sip(tag: &str) -> String {
    format!(
        "OPTIONS sip:a@example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK{tag}\r\n\
         From: <sip:b@example.test>;tag=1\r\nTo: <sip:a@example.test>\r\nCall-ID: {tag}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

fn handler() -> (
    Arc<TestHandler>,
    mpsc::Receiver<(String, Responder, SocketAddr)>,
) {
    let (tx, rx) = mpsc::channel();
    (
        Arc::new(TestHandler {
            responders: Mutex::new(tx),
        }),
        rx,
    )
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn udp_handler_answers_later_from_another_thread() {
    let (handler, responders) = handler();
    let listener = Arc::new(udp::bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap());
    let server = listener.local_addr();
    let shutdown = CancellationToken::new();
    // One receive thread: if it were blocked by the pending answer, nothing else would be
    // answered.
    let receiver = {
        let (listener, shutdown) = (listener.clone(), shutdown.clone());
        std::thread::spawn(move || udp::receive_loop(listener, handler, shutdown))
    };
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 2048];
    let mut recv = || {
        let n = client.recv(&mut buf).expect("an answer");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    client.send_to(b"later-1", server).unwrap();
    let (tag, responder, peer) = responders.recv_timeout(WAIT).expect("a responder");
    assert_eq!(tag, "later-1");
    assert_eq!(peer, client.local_addr().unwrap());

    // The receive thread is free while the answer is pending.
    client.send_to(b"now-2", server).unwrap();
    assert_eq!(recv(), "now:now-2");

    // Answer from another thread, after the handler has long returned.
    let answered = std::thread::spawn(move || {
        responder.send(Reply {
            bytes: Some(Bytes::from_static(b"later:later-1")),
            to: Some(peer),
            close: false,
        })
    });
    assert!(
        answered.join().unwrap(),
        "the datagram was handed to the kernel"
    );
    assert_eq!(recv(), "later:later-1");

    // A dropped responder sends nothing and gives back what it held (its share of the
    // socket): the next datagram the client gets is the answer to the next message.
    let before = Arc::strong_count(&listener);
    client.send_to(b"later-3", server).unwrap();
    let (tag, responder, _) = responders.recv_timeout(WAIT).expect("a responder");
    assert_eq!(tag, "later-3");
    assert_eq!(Arc::strong_count(&listener), before + 1);
    std::thread::spawn(move || drop(responder)).join().unwrap();
    assert_eq!(Arc::strong_count(&listener), before);
    client.send_to(b"now-4", server).unwrap();
    assert_eq!(recv(), "now:now-4");

    shutdown.cancel();
    receiver.join().unwrap();
}

/// A TCP server with a [`TestHandler`] on a one-thread runtime, and a client connected to it
/// (reads time out after [`WAIT`]).
struct TcpCase {
    client: TcpStream,
    responders: mpsc::Receiver<(String, Responder, SocketAddr)>,
    flows: Flows,
    shutdown: CancellationToken,
    /// Dropped last: the server runs on it.
    _rt: tokio::runtime::Runtime,
}

fn start_tcp() -> TcpCase {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (handler, responders) = handler();
    let flows = Flows::default();
    let shutdown = CancellationToken::new();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let ctx = StreamContext {
        handler,
        flows: flows.clone(),
        limits: StreamLimits {
            max_connections: 8,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            framing: Limits::default(),
        },
        metrics: Metrics::new(),
        shutdown: shutdown.clone(),
        halt: shutdown.clone(),
    };
    rt.spawn(tcp::accept_loop(listener, ctx, TaskTracker::new()));
    let client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    TcpCase {
        client,
        responders,
        flows,
        shutdown,
        _rt: rt,
    }
}

/// Reads from `stream` until `want` bytes have arrived (or EOF / the read timeout).
fn read_exact_text(stream: &mut TcpStream, want: usize) -> String {
    let mut got = vec![0u8; want];
    stream.read_exact(&mut got).expect("the expected bytes");
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn tcp_handler_answers_later_on_the_same_connection() {
    let TcpCase {
        mut client,
        responders,
        flows: _flows,
        shutdown,
        _rt,
    } = start_tcp();

    client.write_all(sip("later-1").as_bytes()).unwrap();
    let (tag, responder, _) = responders.recv_timeout(WAIT).expect("a responder");
    assert_eq!(tag, "later-1");

    // The connection task is free while the answer is pending.
    client.write_all(sip("now-2").as_bytes()).unwrap();
    assert_eq!(read_exact_text(&mut client, 9), "now:now-2");

    let answered = std::thread::spawn(move || {
        responder.send(Reply {
            bytes: Some(Bytes::from_static(b"later:later-1")),
            to: None,
            close: false,
        })
    });
    assert!(answered.join().unwrap(), "queued on the connection");
    assert_eq!(read_exact_text(&mut client, 13), "later:later-1");

    // A deferred answer that closes: written, then the connection ends.
    client.write_all(sip("later-3").as_bytes()).unwrap();
    let (_, responder, _) = responders.recv_timeout(WAIT).expect("a responder");
    assert!(responder.send(Reply {
        bytes: Some(Bytes::from_static(b"bye")),
        to: None,
        close: true,
    }));
    assert_eq!(read_exact_text(&mut client, 3), "bye");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("the server closes");
    assert!(rest.is_empty());

    shutdown.cancel();
}

#[test]
fn tcp_dropped_or_stale_responder_sends_nothing_and_holds_nothing_open() {
    let TcpCase {
        mut client,
        responders,
        flows,
        shutdown,
        _rt,
    } = start_tcp();

    // Dropped on another thread: nothing is written; the next answer is the first bytes.
    client.write_all(sip("later-1").as_bytes()).unwrap();
    let (_, responder, _) = responders.recv_timeout(WAIT).expect("a responder");
    std::thread::spawn(move || drop(responder)).join().unwrap();
    client.write_all(sip("now-2").as_bytes()).unwrap();
    assert_eq!(read_exact_text(&mut client, 9), "now:now-2");

    // Held past the connection's end: the connection still closes and leaves the flow
    // table, and the late answer goes nowhere.
    client.write_all(sip("later-3").as_bytes()).unwrap();
    let (_, responder, _) = responders.recv_timeout(WAIT).expect("a responder");
    assert_eq!(flows.len(), 1);
    drop(client);
    let deadline = Instant::now() + WAIT;
    while !flows.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the connection left the flow table while a responder was held"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!responder.send(Reply {
        bytes: Some(Bytes::from_static(b"late")),
        to: None,
        close: false,
    }));

    shutdown.cancel();
}
