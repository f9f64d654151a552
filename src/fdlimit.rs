//! The open-files limit (`RLIMIT_NOFILE`) against sipward's own connection limits.
//!
//! At start [`raise`] lifts the soft limit to the hard one (systemd's default soft limit is
//! 1024, the hard one 512K; the packaged unit sets `LimitNOFILE` anyway). [`plan`] then checks
//! the configured stream connection caps against it. Decision (docs/production.md "Open
//! files"): sipward does not refuse to start, since UDP keeps serving whatever the limit, but
//! warns loudly, naming the keys, and lowers the stream caps it applies so that
//! [`RESERVE`] descriptors and a share for the HTTP listener stay free: at the connection
//! limit `accept` on the SIP listeners waits for a slot instead of failing with EMFILE, and
//! `/healthz` and `/metrics` still answer. A failing `accept` (EMFILE) is logged once per
//! interval, not per attempt ([`AcceptFailures`]). Pure decisions and one system call
//! ([`raise`]); it names no other module.

use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept out of every connection budget: listeners, UDP sockets, the epoll and
/// signal descriptors, store files, logs, outbound IdP connections, and health probes.
pub const RESERVE: u64 = 64;

/// The limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub was: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. `Err` when the limit cannot be read;
/// a failed raise leaves the soft limit as it was (and says so in `soft`).
pub fn raise() -> Result<NoFile, nix::Error> {
    let (was, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if was >= hard {
        return Ok(NoFile {
            was,
            soft: was,
            hard,
        });
    }
    let soft = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(_) => was,
    };
    Ok(NoFile { was, soft, hard })
}

/// What the stream listeners may hold, and whether the configuration had to be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Per TCP listener (as `sip.tcp_max_connections`).
    pub tcp_max_connections: usize,
    /// Per TLS listener (as `tls.max_connections`).
    pub tls_max_connections: usize,
    /// What the configuration asks for in all: stream caps × listeners + the HTTP cap +
    /// [`RESERVE`].
    pub needed: u64,
    /// The caps were lowered to fit `soft`.
    pub capped: bool,
}

/// The stream caps to apply under the soft limit `soft`, for `tcp_listeners` listeners of
/// `tcp` connections each, `tls_listeners` of `tls`, and an HTTP listener holding up to
/// `http`. When everything fits, the configured caps. Otherwise three quarters of what is
/// left after [`RESERVE`] go to the stream listeners, shared in proportion to what each asked
/// for (at least one connection per listener), and the last quarter to HTTP, so a full set
/// of SIP connections never takes the descriptors a health probe needs.
pub fn plan(
    soft: u64,
    tcp_listeners: usize,
    tcp: usize,
    tls_listeners: usize,
    tls: usize,
    http: usize,
) -> Plan {
    let tcp_total = (tcp_listeners * tcp) as u64;
    let tls_total = (tls_listeners * tls) as u64;
    let needed = tcp_total + tls_total + http as u64 + RESERVE;
    if needed <= soft {
        return Plan {
            tcp_max_connections: tcp,
            tls_max_connections: tls,
            needed,
            capped: false,
        };
    }
    let streams = soft.saturating_sub(RESERVE) * 3 / 4;
    let asked = (tcp_total + tls_total).max(1);
    let share = |total: u64, listeners: usize, configured: usize| -> usize {
        if listeners == 0 {
            return configured;
        }
        let budget = streams * total / asked / listeners as u64;
        (budget as usize).clamp(1, configured.max(1))
    };
    Plan {
        tcp_max_connections: share(tcp_total, tcp_listeners, tcp),
        tls_max_connections: share(tls_total, tls_listeners, tls),
        needed,
        capped: true,
    }
}

/// A failing `accept` is logged at most once per this interval (with the count since the
/// last line); the SIP listeners count every failure in `sipward_sip_accept_failures_total`.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// When to log failed accepts: the first at once, then at most one line per
/// [`ACCEPT_LOG_INTERVAL`] saying how many failed meanwhile. Takes `now`; no I/O.
#[derive(Debug, Default)]
pub struct AcceptFailures {
    last_line: Option<std::time::Instant>,
    unlogged: u64,
}

impl AcceptFailures {
    /// One failure at `now`: `Some(n)` when a line is due, `n` failures since the last one.
    pub fn record(&mut self, now: std::time::Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_line
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_INTERVAL);
        if !due {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enough_descriptors_keep_the_configured_caps() {
        let p = plan(65_536, 1, 10_000, 1, 1000, 1024);
        assert_eq!(
            (p.tcp_max_connections, p.tls_max_connections),
            (10_000, 1000)
        );
        assert!(!p.capped);
        assert_eq!(p.needed, 10_000 + 1000 + 1024 + RESERVE);
    }

    #[test]
    fn a_low_limit_caps_the_streams_and_leaves_room_for_http_and_the_reserve() {
        // The case: ulimit -n 256, the default 10000 TCP connections.
        let p = plan(256, 1, 10_000, 0, 1000, 1024);
        assert!(p.capped);
        assert_eq!(p.tcp_max_connections, 144, "(256 - 64) * 3/4");
        let used = p.tcp_max_connections as u64 + RESERVE;
        assert!(used + 48 <= 256, "a quarter of the rest stays for HTTP");
        // Two TCP listeners and one TLS listener share the same budget.
        let p = plan(1024, 2, 10_000, 1, 1000, 1024);
        let streams = 2 * p.tcp_max_connections + p.tls_max_connections;
        assert!(streams as u64 <= (1024 - RESERVE) * 3 / 4, "{p:?}");
        assert!(p.tls_max_connections >= 1);
        // A limit below the reserve still leaves each listener one connection.
        let p = plan(16, 1, 10_000, 1, 1000, 1024);
        assert_eq!((p.tcp_max_connections, p.tls_max_connections), (1, 1));
    }

    #[test]
    fn raise_lifts_the_soft_limit_to_the_hard_one() {
        let r = raise().expect("getrlimit");
        assert!(r.soft >= r.was && r.soft <= r.hard);
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, r.soft);
    }

    #[test]
    fn accept_failures_are_logged_once_per_interval_with_their_count() {
        let mut f = AcceptFailures::default();
        let t0 = std::time::Instant::now();
        assert_eq!(f.record(t0), Some(1), "the first at once");
        // 10 attempts a second (the back-off) for the whole interval: no line.
        for i in 1..100 {
            assert_eq!(f.record(t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(f.record(t0 + ACCEPT_LOG_INTERVAL), Some(100));
        assert_eq!(f.record(t0 + ACCEPT_LOG_INTERVAL * 3), Some(1));
    }
}
