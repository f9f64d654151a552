//! The HTTP listener's accept loop on hyper directly (instead of `axum::serve`), so the
//! limits that axum does not expose are set: header section size (larger heads get 431), a
//! deadline for the request head (slowloris), and a connection cap taken before a connection
//! is served. The head is read and checked by our own gate (`head.rs`) first, so that a
//! refused head gets a JSON error with `no-store` like every other answer; a connection
//! therefore serves one request (`Connection: close`), as every later head would reach hyper
//! unchecked. Each request carries the peer address ([`Peer`]) for per-source limits. On
//! shutdown the loop stops accepting and open connections finish gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::head::{self, Head, Rewind};

/// Open HTTP connections at most; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// A request head must arrive within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The TCP peer of a request.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request head; hyper needs at least 8192.
    pub max_header_bytes: usize,
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut failures = crate::fdlimit::AcceptFailures::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    if let Some(failed) = failures.record(std::time::Instant::now()) {
                        tracing::warn!(error = %e, failed, "http accept failed; the next failures within the interval are not logged");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "http connection refused: at the connection cap");
            continue;
        };
        let router = router.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let mut stream = stream;
            let read = head::read(&mut stream, limits.max_header_bytes);
            let prefix = tokio::select! {
                _ = stop.cancelled() => return,
                read = tokio::time::timeout(HEADER_READ_TIMEOUT, read) => match read {
                    Ok(Head::Ready(prefix)) => prefix,
                    Ok(Head::Refused(refusal)) => {
                        tracing::debug!(%peer, ?refusal, "http request head refused");
                        head::refuse(&mut stream, refusal).await;
                        return;
                    }
                    Ok(Head::Closed) | Err(_) => return,
                },
            };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .max_headers(head::MAX_HEADERS)
                // The gate has seen the whole head within max_header_bytes; hyper's buffer
                // also holds the body bytes that came with it.
                .max_buf_size((limits.max_header_bytes + 2 * head::READ_CHUNK).max(8192));
            let io = Rewind::new(prefix, stream);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
