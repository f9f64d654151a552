//! The proxy's one async driver: it sleeps until the core's next deadline, runs the timers
//! that are due and sends what they queued through the proxy's `Outbound`. Woken early when
//! an input makes an earlier deadline; between deadlines it does nothing (no periodic tick).

use tokio_util::sync::CancellationToken;

use super::Proxy;

/// Runs `proxy`'s timers until `halt` is cancelled. The app cancels `halt` only after the
/// drain, so in-flight transactions keep their retransmissions and timeouts while it lasts.
/// The transmits go through the `Outbound` the proxy was built with (inputs on the receive
/// path send through it too).
pub async fn drive(proxy: Proxy, halt: CancellationToken) {
    loop {
        // Registered before reading the deadline, so that an input moving it earlier in
        // between is not missed.
        let moved = proxy.deadline_moved().notified();
        tokio::pin!(moved);
        moved.as_mut().enable();
        let next = proxy.poll_timeout();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = halt.cancelled() => return,
            _ = moved => continue,
            _ = sleep => proxy.handle_timeout(tokio::time::Instant::now().into_std()),
        }
    }
}
