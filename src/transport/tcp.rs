//! TCP (and the stream half of TLS): an accept loop that takes a connection slot before accepting (so a flood cannot
//! exhaust descriptors), and one task per connection that frames the stream, enforces an
//! idle timeout and a deadline for each header section (slowloris), hands each message to
//! the handler, and writes replies and queued flow traffic back on the same connection. A
//! framing fault goes to the handler too (with the header section, for its answer), and then
//! the connection is closed.
//!
//! It must not parse beyond framing, and never holds a connection open past its deadlines.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// After answering a fault and closing, read and discard the peer's input for at most this
/// long (see the lingering close in `serve_stream`): it holds the connection's slot.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// ... and at most this many bytes.
const LINGER_BYTES: usize = 64 * 1024;
/// How long a closing connection waits to flush and send its FIN (TLS: close_notify).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed `accept` (EMFILE and friends), wait this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A write to a stream that cannot complete within this long closes the connection: a peer
/// that stops reading holds at most its connection slot and one queued message this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

use super::{Flows, Handler, Later, Source, Transport};
use crate::metrics::Metrics;
use crate::sip::{Frame, Limits, StreamFramer};

/// Limits for stream connections.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Open connections at most; each costs a descriptor and up to one framer buffer
    /// (`max_header_bytes + max_body_bytes`) of memory.
    pub max_connections: usize,
    /// Close a connection that has sent nothing for this long.
    pub idle_timeout: Duration,
    /// A header section must complete within this long after its first byte.
    pub header_timeout: Duration,
    /// A write that cannot complete in this long closes the connection.
    pub write_timeout: Duration,
    pub framing: Limits,
}

/// Everything a connection task needs.
#[derive(Clone)]
pub struct StreamContext {
    pub handler: Arc<dyn Handler>,
    pub flows: Flows,
    pub limits: StreamLimits,
    pub metrics: Metrics,
    /// Stop accepting (drain begins); TLS handshakes in progress are abandoned too.
    pub shutdown: CancellationToken,
    /// Close the open connections (drain ended): until then they keep carrying responses,
    /// ACKs and CANCELs for the transactions in flight.
    pub halt: CancellationToken,
}

/// Listen backlog of a stream listener (tokio's `TcpListener::bind` uses the same).
const BACKLOG: i32 = 1024;

/// Binds a stream listener (TCP, or TLS under it). An IPv6 address listens on IPv6 only
/// (`IPV6_V6ONLY`, as the UDP sockets do), so `[::]` and `0.0.0.0` on the same port are two
/// listeners side by side instead of the second failing with "address in use".
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

pub async fn accept_loop(listener: TcpListener, ctx: StreamContext, tracker: TaskTracker) {
    let serve_ctx = ctx.clone();
    accept_each(listener, &ctx, &tracker, move |stream, peer, local| {
        let src = Source {
            transport: Transport::Tcp,
            peer,
            local,
            flow: None,
            identity: None,
        };
        serve_stream(stream, src, serve_ctx.clone())
    })
    .await;
}

/// Accepts connections on `listener` while one of `ctx.limits.max_connections` slots is free
/// (the slot is taken before `accept`, so a flood cannot exhaust descriptors), and runs
/// `serve` for each in its own task, which holds the slot until it ends.
pub(super) async fn accept_each<F, Fut>(
    listener: TcpListener,
    ctx: &StreamContext,
    tracker: &TaskTracker,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections));
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "stream listener has no local address");
            return;
        }
    };
    let mut failures = crate::fdlimit::AcceptFailures::default();
    loop {
        let permit = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; UDP keeps serving. One
                // line per interval, not one per attempt.
                ctx.metrics.sip_accept_failure();
                if let Some(failed) = failures.record(std::time::Instant::now()) {
                    tracing::warn!(error = %e, %local, failed, interval = ?crate::fdlimit::ACCEPT_LOG_INTERVAL, "accept failed; the next failures within the interval are counted, not logged");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // On a wildcard listener, the accepted socket knows which of our addresses the peer
        // connected to.
        let local = match local.ip().is_unspecified() {
            true => stream.local_addr().unwrap_or(local),
            false => local,
        };
        let served = serve(stream, peer, local);
        tracker.spawn(async move {
            let _permit = permit;
            served.await;
        });
    }
}

/// Serves one established stream (TCP, or TLS after its handshake).
pub async fn serve_stream<S>(stream: S, mut src: Source, ctx: StreamContext)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (flow, mut outbound) = ctx.flows.open(super::FlowInfo {
        transport: src.transport,
        local: src.local,
        peer: src.peer,
    });
    src.flow = Some(flow);
    let open_gauge = ctx.metrics.stream_connections(src.transport).clone();
    open_gauge.inc();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut framer = StreamFramer::new(ctx.limits.framing);
    let mut idle_deadline = Instant::now() + ctx.limits.idle_timeout;
    let mut header_deadline: Option<Instant> = None;
    // Set when we close after answering a fault while the peer may still be sending.
    let mut linger = false;
    'conn: loop {
        let deadline = header_deadline.map_or(idle_deadline, |h| h.min(idle_deadline));
        tokio::select! {
            _ = ctx.halt.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(peer = %src.peer, "stream deadline passed; closing");
                break;
            }
            out = outbound.recv() => {
                let Some(out) = out else { break };
                if !write(&mut writer, &out.bytes, ctx.limits.write_timeout).await {
                    break;
                }
                if out.close {
                    linger = true;
                    break;
                }
            }
            read = read_some(&mut reader, &mut framer) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                idle_deadline = Instant::now() + ctx.limits.idle_timeout;
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Ping)) => {
                            if !write(&mut writer, b"\r\n", ctx.limits.write_timeout).await {
                                break 'conn;
                            }
                        }
                        Ok(Some(Frame::Message(data))) => {
                            let reply = ctx.handler.handle(data, &src, Later::flow(&ctx.flows, flow));
                            if let Some(bytes) = reply.bytes {
                                if !write(&mut writer, &bytes, ctx.limits.write_timeout).await {
                                    break 'conn;
                                }
                            }
                            if reply.close {
                                linger = true;
                                break 'conn;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(peer = %src.peer, error = %e, "stream framing error; closing");
                            let reply = ctx.handler.on_framing_error(e, framer.pending_head(), &src);
                            if let Some(bytes) = reply.bytes {
                                let _ = write(&mut writer, &bytes, ctx.limits.write_timeout).await;
                            }
                            linger = true;
                            break 'conn;
                        }
                    }
                }
                framer.release_if_idle();
                header_deadline = if framer.in_message() {
                    Some(header_deadline.unwrap_or_else(|| Instant::now() + ctx.limits.header_timeout))
                } else {
                    None
                };
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.shutdown()).await;
    if linger {
        // Lingering close: closing a socket with unread input makes the kernel send a RST,
        // which can destroy our answer before the peer reads it. So after the FIN (TLS:
        // close_notify) read and discard what the peer still sends, bounded in time and bytes.
        let drain = async {
            let mut sink = [0u8; 4096];
            let mut left = LINGER_BYTES;
            while left > 0 {
                match reader.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    }
    ctx.flows.close(flow);
    open_gauge.dec();
    ctx.handler.on_flow_closed(flow);
}

/// Reads what the peer sent into the framer. Between messages the framer holds no buffer: the
/// first bytes land in a small array that lives only in this task, and the framer allocates
/// when they arrive. That keeps an idle connection's memory to its TLS state and its task
/// (benches/RESULTS.md, memory per idle TLS connection).
async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    framer: &mut StreamFramer,
) -> std::io::Result<usize> {
    if framer.in_message() {
        return reader.read_buf(framer.read_buf()).await;
    }
    let mut first = [0u8; 512];
    let n = reader.read(&mut first).await?;
    framer.push(&first[..n]);
    Ok(n)
}

async fn write<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8], limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, w.write_all(bytes)).await,
        Ok(Ok(()))
    )
}
