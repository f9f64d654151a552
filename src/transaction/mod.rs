//! RFC 3261 §17 transactions as state machines with no I/O: server transactions (the
//! non-INVITE ones of §17.2.2, and the request side of an INVITE), client transactions
//! (§17.1), and the INVITE server transaction's timers after its final.
//!
//! This module owns the transaction key (§17.2.3), the server state machine
//! (Trying → Proceeding → Completed → Terminated) and the shared table that absorbs request
//! retransmissions, replays the last response and expires transactions on Timer J. It must not
//! touch sockets, spawn tasks, sleep or read the clock: every event takes `now: Instant`. The
//! server table sends nothing on a timer (a server transaction only forgets), so no driver
//! sleeps on it: the one purge task calls [`TransactionTable::poll`] every
//! `registrar.purge_interval`, which frees what expired by then (its ordered deadline index
//! reads only due entries; [`TransactionTable::next_deadline`] tells when the next one is).
//! The proxy's driver runs the client transactions' timers (`proxy::drive`). It does not
//! parse SIP either: callers pass the typed values the `sip` layer already extracted.
//!
//! `client.rs` holds the client transactions (§17.1, INVITE and non-INVITE, Timers A–F, K, M)
//! the proxy runs per branch; `invite_server.rs` the INVITE server transaction's timers after
//! the final (G, H, I, and RFC 6026's L), which the proxy runs per forwarded INVITE. That
//! INVITE's request side uses the table here: its 100 Trying and the responses relayed
//! upstream are stored, so an INVITE retransmission is absorbed and answered with the latest
//! of them. Non-2xx finals sipward answers itself (407, 404, 480) are not retransmitted by
//! Timer G: a lost one is answered again when the INVITE is retransmitted.

use std::time::{Duration, Instant};

pub mod client;
mod compact;
pub mod invite_server;
mod key;
mod server;
mod table;

pub use compact::StoredResponse;
pub use key::{is_rfc3261_branch, TransactionKey, MAGIC_COOKIE};
pub use server::{Retransmission, ServerTransaction, State};
pub use table::{Admission, RequestDisposition, TransactionTable};

/// Default T1, the RTT estimate of RFC 3261 §17.1.1.1.
pub const DEFAULT_T1: Duration = Duration::from_millis(500);

/// Default cap on live server transactions, see [`TransactionConfig::max_transactions`]:
/// about 20 MB at about 200 B for each completed REGISTER (benches/RESULTS.md, issue 22).
pub const DEFAULT_MAX_TRANSACTIONS: usize = 100_000;

/// Largest T1 accepted by [`TransactionConfig::new`]; 64*T1 is then at most 64 minutes.
pub const MAX_T1: Duration = Duration::from_secs(60);

/// Errors of the transaction layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// The top Via branch lacks the `z9hG4bK` magic cookie (or is only the cookie): the caller
    /// must build an RFC 2543 key instead.
    #[error("Via branch is not an RFC 3261 branch")]
    NotRfc3261Branch,
    /// The Via sent-by is not `host[:port]` (empty host, bad port, unbalanced IPv6 brackets).
    #[error("invalid Via sent-by")]
    InvalidSentBy,
    /// No live transaction has this key: it never existed, timed out, or already terminated.
    #[error("no live server transaction for this key")]
    UnknownTransaction,
    /// The transaction already has a final response; RFC 3261 §17.2.2 says later responses from
    /// the TU are discarded, so the caller must not send this one.
    #[error("server transaction already has a final response")]
    AlreadyCompleted,
    /// A response status outside 100..=699.
    #[error("response status {0} is outside 100..=699")]
    InvalidStatus(u16),
    /// T1 of zero or above [`MAX_T1`].
    #[error("T1 must be between 1 ms and {MAX_T1:?}, got {0:?}")]
    InvalidT1(Duration),
}

/// Timers and limits of the server transaction layer, validated once at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionConfig {
    t1: Duration,
    max_transactions: usize,
}

impl TransactionConfig {
    /// Builds a config; `t1` must be in 1 ms..=[`MAX_T1`] so that deadlines cannot overflow.
    pub fn new(t1: Duration, max_transactions: usize) -> Result<Self, TransactionError> {
        if t1 < Duration::from_millis(1) || t1 > MAX_T1 {
            return Err(TransactionError::InvalidT1(t1));
        }
        Ok(Self {
            t1,
            max_transactions,
        })
    }

    /// T1, the RTT estimate (default [`DEFAULT_T1`], 500 ms).
    pub fn t1(&self) -> Duration {
        self.t1
    }

    /// Cap on live transactions (default [`DEFAULT_MAX_TRANSACTIONS`]). At the cap the oldest
    /// completed transaction gives way to a new request; only when none is completed does a
    /// new request get [`RequestDisposition::Overloaded`] (see `table.rs`), so the cap bounds
    /// memory, not the request rate.
    ///
    /// Worst-case memory is `max_transactions × (≈ 70 B of table and expiry queue + the stored
    /// response)`. A response sipward builds is stored as a template over its request (see
    /// `compact.rs`): about 110 B for a REGISTER's 200 (170–205 B per entry in all, ≈ 17 MB
    /// for 100 000; benches/RESULTS.md "Transaction memory"). A relayed response is stored verbatim, bounded only by the transport's
    /// message size limit: ≈ 6.6 GB in the pathological case of 100 000 64 KiB responses.
    pub fn max_transactions(&self) -> usize {
        self.max_transactions
    }

    /// 64*T1: Timer J on unreliable transports, and also how long a transaction may stay in
    /// Trying/Proceeding without a final response (the client's Timer F gives up then).
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer J for this transport: 64*T1 on unreliable transports, zero on reliable ones.
    pub fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.timeout()
        }
    }
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            t1: DEFAULT_T1,
            max_transactions: DEFAULT_MAX_TRANSACTIONS,
        }
    }
}

/// A point on a transaction table's clock: nanoseconds since its epoch, shortly before the
/// table was made. Eight bytes where an `Instant` takes sixteen; the table converts the
/// `Instant`s its callers pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(u64);

impl Tick {
    /// The tick `nanos` nanoseconds after the epoch.
    pub fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the epoch.
    pub fn nanos(self) -> u64 {
        self.0
    }

    /// `self + after`, saturating instead of overflowing (unreachable with a validated
    /// [`TransactionConfig`], but this module never panics).
    pub fn after(self, after: Duration) -> Self {
        let after = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(after))
    }
}

/// The epoch [`Tick`]s count from, and the conversions.
#[derive(Debug, Clone, Copy)]
struct Clock {
    epoch: Instant,
}

impl Clock {
    /// Epoch an hour before `now` where the platform allows it, so that an `Instant` taken by
    /// another task just before the table was made is still after it.
    fn new(now: Instant) -> Self {
        let epoch = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
        Self { epoch }
    }

    /// `now` on this clock; an instant before the epoch counts as the epoch.
    fn tick(&self, now: Instant) -> Tick {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        Tick(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn instant(&self, tick: Tick) -> Instant {
        let after = Duration::from_nanos(tick.0);
        self.epoch.checked_add(after).unwrap_or(self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = TransactionConfig::default();
        assert_eq!(config.t1(), Duration::from_millis(500));
        assert_eq!(config.max_transactions(), 100_000);
        assert_eq!(config.timer_j(false), Duration::from_secs(32));
        assert_eq!(config.timer_j(true), Duration::ZERO);
    }

    #[test]
    fn t1_is_validated() {
        assert_eq!(
            TransactionConfig::new(Duration::ZERO, 10),
            Err(TransactionError::InvalidT1(Duration::ZERO))
        );
        assert!(TransactionConfig::new(Duration::from_secs(61), 10).is_err());
        assert!(TransactionConfig::new(Duration::from_millis(100), 10).is_ok());
    }
}
