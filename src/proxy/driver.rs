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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::metrics::Metrics;
    use crate::proxy::{Branch, Forward, Inbound, ProxyConfig, Routing, Started, TimerStats};
    use crate::sip::{Limits, Message};
    use crate::transaction::{TransactionConfig, TransactionKey, TransactionTable};
    use crate::transport::{udp, Flows, Outbound, Target, Transport};

    const CONTEXTS: usize = 10_000;

    /// A proxy with a real UDP socket on 127.0.0.1, holding `CONTEXTS` unanswered INVITE
    /// branches to `sink` (a socket that never reads), all started at `now`; T1 is `t1`.
    fn idle_proxy(t1: Duration, sink: SocketAddr, now: std::time::Instant) -> Proxy {
        let proxy = empty_proxy(t1);
        for n in 0..CONTEXTS {
            assert_eq!(start_call(&proxy, n, sink, now), Started::Forwarded);
        }
        proxy
    }

    fn empty_proxy(t1: Duration) -> Proxy {
        let listener = udp::bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let out = Outbound::new(vec![Arc::new(listener)], Flows::default());
        Proxy::new(
            out,
            ProxyConfig {
                t1,
                max_contexts: CONTEXTS,
                realms: vec!["example.test".into()],
                names: Default::default(),
            },
            TransactionTable::new(TransactionConfig::new(Duration::from_millis(500), 100).unwrap()),
            Metrics::new(),
            None,
        )
    }

    /// Forwards call `n`, an INVITE from 127.0.0.1:9, to `sink`.
    fn start_call(proxy: &Proxy, n: usize, sink: SocketAddr, now: std::time::Instant) -> Started {
        let caller: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let local = crate::sip::HostPort::from_addr("127.0.0.1:5060".parse().unwrap());
        {
            let msg = Message::parse(
                Bytes::from(format!(
                    "INVITE sip:bob@example.test SIP/2.0\r\n\
                     Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKidle{n}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a\r\n\
                     To: <sip:bob@example.test>\r\nCall-ID: idle-{n}\r\nCSeq: 1 INVITE\r\n\
                     Content-Length: 0\r\n\r\n"
                )),
                &Limits::default(),
            )
            .unwrap();
            let branches = [Branch {
                target: Target::Udp(sink),
                request_uri: Some("sip:bob@127.0.0.1"),
                route: Vec::new(),
            }];
            let fwd = Forward {
                msg: &msg,
                inbound: Inbound {
                    upstream: Target::Udp(caller),
                    transport: Transport::Udp,
                    local,
                    peer: caller,
                    flow: None,
                },
                server_key: TransactionKey::rfc3261(
                    &format!("z9hG4bKidle{n}"),
                    "127.0.0.1:9",
                    "INVITE",
                )
                .unwrap(),
                branches: &branches,
                routing: Routing {
                    record_route: true,
                    ..Routing::default()
                },
                trying: None,
            };
            proxy.start(fwd, now)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_input_wakes_the_idle_driver_for_its_deadline() {
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let t1 = Duration::from_secs(1);
        let proxy = empty_proxy(t1);
        let halt = CancellationToken::new();
        let driver = tokio::spawn(drive(proxy.clone(), halt.clone()));
        // With no context the driver has no deadline and sleeps for good...
        tokio::time::sleep(t1 * 10).await;
        assert_eq!(proxy.timer_stats(), TimerStats::default());
        // ...until a request is forwarded: its Timer A runs one T1 later.
        let now = tokio::time::Instant::now().into_std();
        assert_eq!(
            start_call(&proxy, 1, sink.local_addr().unwrap(), now),
            Started::Forwarded
        );
        tokio::time::sleep(t1 * 3 / 2).await;
        assert_eq!(
            proxy.timer_stats(),
            TimerStats {
                wakeups: 1,
                visited: 1
            }
        );
        halt.cancel();
        driver.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn with_10_000_idle_contexts_the_driver_does_no_work_between_deadlines() {
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let t1 = Duration::from_secs(10);
        let proxy = idle_proxy(
            t1,
            sink.local_addr().unwrap(),
            tokio::time::Instant::now().into_std(),
        );
        assert_eq!(proxy.len(), CONTEXTS);
        let halt = CancellationToken::new();
        let driver = tokio::spawn(drive(proxy.clone(), halt.clone()));
        tokio::task::yield_now().await;
        let before = proxy.timer_stats();

        // Nine tenths of T1 with no deadline due: the driver neither wakes nor visits.
        tokio::time::sleep(t1 * 9 / 10).await;
        assert_eq!(proxy.timer_stats(), before);

        // Timer A of every branch is due at T1: one wake-up visits each context once.
        tokio::time::sleep(t1 / 5).await;
        let after = proxy.timer_stats();
        assert_eq!(after.wakeups, before.wakeups + 1);
        assert_eq!(after.visited, before.visited + CONTEXTS as u64);

        // And again nothing until the next retransmission, 2·T1 later.
        tokio::time::sleep(t1).await;
        assert_eq!(proxy.timer_stats(), after);
        halt.cancel();
        driver.await.unwrap();
    }

    /// A measurement for the closing note, not a check: the CPU time this process uses in
    /// 5 s of real time while the driver holds 10 000 idle contexts (their first deadline is
    /// a minute away). Run alone:
    /// `cargo test --release --lib proxy::driver::tests::idle_cpu -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement: 5 s of real time"]
    async fn idle_cpu_with_10_000_contexts() {
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rss = rss_kib();
        let proxy = idle_proxy(
            Duration::from_secs(60),
            sink.local_addr().unwrap(),
            std::time::Instant::now(),
        );
        let halt = CancellationToken::new();
        let driver = tokio::spawn(drive(proxy.clone(), halt.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (stats, ticks) = (proxy.timer_stats(), cpu_ticks());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (stats2, ticks2) = (proxy.timer_stats(), cpu_ticks());
        println!(
            "10000 idle contexts hold {} KiB of RSS",
            rss_kib().saturating_sub(rss)
        );
        println!(
            "10000 idle contexts, 5 s: {} CPU ticks (utime+stime, 1/100 s), {} timer wake-ups, {} contexts visited",
            ticks2 - ticks,
            stats2.wakeups - stats.wakeups,
            stats2.visited - stats.visited
        );
        halt.cancel();
        driver.await.unwrap();
    }

    /// Resident set size of this process, from /proc/self/status.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// utime + stime of this process, from /proc/self/stat.
    fn cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after_name = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of proc(5), counted after the command name (field 2).
        let field = |i: usize| {
            fields
                .get(i - 3)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(14) + field(15)
    }
}
