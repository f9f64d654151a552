//! Failed-attempt limits (docs/testing.md A3, E8): count authentication failures per key in a fixed
//! window and block the key once it reaches the limit, until that window ends. The registrar
//! keeps two: one keyed by source address ([`source_key`]) and one keyed by username.
//!
//! This file owns the counting only. It must not decide what counts as a failure or what a
//! blocked client is told (the caller answers a blocked key exactly as it answers any failure,
//! or drops it), and it never reads the clock: `now` is an `Instant` parameter.
//!
//! Window: starts at a key's first failure; the `max_failures`-th failure inside it blocks the
//! key until `first failure + window`; then the key starts afresh. Failures while blocked are
//! not counted and do not extend the block. A success never resets a key: otherwise an attacker
//! with one valid account could interleave successes to keep guessing another's password.
//!
//! Full table: a tracked key is never evicted before its window ends, so flooding the table
//! cannot free a blocked attacker. New keys that find the table full after a purge are **not
//! tracked** (fail open for that key, [`FailureOutcome::Untracked`] for a metric) rather than
//! blocked (fail closed would let a flood lock every legitimate client out). Filling the table
//! takes `max_keys` distinct keys failing within one window, and the other limiter still applies.
//!
//! Memory: a slot is `size_of::<K>()` rounded up to 8 plus 24 bytes, plus a control byte, in
//! `DashMap` shard tables between 7/16 and 7/8 full, plus any heap `K` owns. For `IpAddr` keys
//! that is a 48-byte slot and at worst 112 bytes per key, so the default
//! [`DEFAULT_MAX_TRACKED_KEYS`] cost at most about 11 MB; `String` usernames have the same slot
//! size plus the string on the heap (the parser bounds its length).

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Default keys tracked by each limiter.
pub const DEFAULT_MAX_TRACKED_KEYS: usize = 100_000;

/// A full table triggers at most one purge per this interval, so a flood cannot turn every
/// failure into a full scan.
const FULL_PURGE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Length of a key's counting window, and the longest a block lasts.
    pub window: Duration,
    /// Failures within one window that block the key. 0 is treated as 1.
    pub max_failures: u32,
    /// Most keys tracked at once. Default [`DEFAULT_MAX_TRACKED_KEYS`].
    pub max_keys: usize,
}

impl LimiterConfig {
    /// Per source address: 20 failures in 60 s.
    pub fn per_source() -> LimiterConfig {
        LimiterConfig {
            window: Duration::from_secs(60),
            max_failures: 20,
            max_keys: DEFAULT_MAX_TRACKED_KEYS,
        }
    }

    /// Per username: 10 failures in 60 s (docs/testing.md E8).
    pub fn per_username() -> LimiterConfig {
        LimiterConfig {
            window: Duration::from_secs(60),
            max_failures: 10,
            max_keys: DEFAULT_MAX_TRACKED_KEYS,
        }
    }
}

/// The key a source address is limited under: IPv4 (including IPv4-mapped IPv6) as is, IPv6 by
/// its /64, because one host commonly owns a whole /64 and could otherwise rotate addresses to
/// get a fresh budget (and fill the table) at will.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// What [`FailureLimiter::record_failure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; the key is not blocked.
    Counted,
    /// The key is blocked (by this failure or an earlier one in the window).
    Blocked,
    /// The table is full of live keys: this key is not tracked.
    Untracked,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    window_start: Instant,
    count: u32,
}

/// A bounded failure counter; a cheap `Clone` handle, safe to use from many tasks.
pub struct FailureLimiter<K: Hash + Eq + Clone> {
    inner: Arc<Inner<K>>,
}

struct Inner<K: Hash + Eq + Clone> {
    config: LimiterConfig,
    map: DashMap<K, Failures>,
    /// Entries in `map`, maintained by reservation so concurrent inserts cannot overshoot.
    len: AtomicUsize,
    /// When a full table last triggered a purge (see [`FULL_PURGE_INTERVAL`]).
    last_full_purge: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Clone> Clone for FailureLimiter<K> {
    fn clone(&self) -> Self {
        FailureLimiter {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    pub fn new(mut config: LimiterConfig) -> FailureLimiter<K> {
        config.max_failures = config.max_failures.max(1);
        FailureLimiter {
            inner: Arc::new(Inner {
                config,
                map: DashMap::new(),
                len: AtomicUsize::new(0),
                last_full_purge: Mutex::new(None),
            }),
        }
    }

    /// Whether `key` has reached the limit in its current window. Check it before verifying,
    /// and treat a blocked key like any failure.
    pub fn is_blocked<Q>(&self, key: &Q, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner
            .map
            .get(key)
            .is_some_and(|failures| self.blocks(&failures, now))
    }

    /// Counts one failure for `key` at `now`.
    pub fn record_failure(&self, key: K, now: Instant) -> FailureOutcome {
        match self.try_record(key.clone(), now) {
            FailureOutcome::Untracked if self.purge_if_due(now) => self.try_record(key, now),
            outcome => outcome,
        }
    }

    fn try_record(&self, key: K, now: Instant) -> FailureOutcome {
        let inner = &self.inner;
        match inner.map.entry(key) {
            Entry::Occupied(mut entry) => {
                let failures = entry.get_mut();
                if !self.in_window(failures, now) {
                    *failures = Failures {
                        window_start: now,
                        count: 0,
                    };
                }
                if failures.count < inner.config.max_failures {
                    failures.count += 1;
                }
                self.outcome(failures, now)
            }
            Entry::Vacant(entry) => {
                if !self.reserve() {
                    return FailureOutcome::Untracked;
                }
                let failures = Failures {
                    window_start: now,
                    count: 1,
                };
                entry.insert(failures);
                self.outcome(&failures, now)
            }
        }
    }

    /// Blocks `key` until `until`, as if it had reached the limit in a window ending then:
    /// what another node decided (`cluster`'s shared counts). A block already lasting longer
    /// is kept. Bounded like [`Self::record_failure`]: a full table leaves the key untracked.
    pub fn block_until(&self, key: K, until: Instant, now: Instant) -> FailureOutcome {
        let inner = &self.inner;
        let window_start = until.checked_sub(inner.config.window).unwrap_or(now);
        let blocked = Failures {
            window_start,
            count: inner.config.max_failures,
        };
        match inner.map.entry(key) {
            Entry::Occupied(mut entry) => {
                let current = entry.get_mut();
                if !(self.blocks(current, now) && current.window_start >= window_start) {
                    *current = blocked;
                }
            }
            Entry::Vacant(entry) => {
                if !self.reserve() {
                    return FailureOutcome::Untracked;
                }
                entry.insert(blocked);
            }
        }
        FailureOutcome::Blocked
    }

    /// Takes room for one more key; false when the table is full.
    fn reserve(&self) -> bool {
        let max_keys = self.inner.config.max_keys;
        self.inner
            .len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_keys).then_some(n + 1)
            })
            .is_ok()
    }

    /// The limits this limiter counts against.
    pub fn config(&self) -> LimiterConfig {
        self.inner.config
    }

    /// Drops keys whose window has ended (blocked ones included: their block is over). Run it
    /// periodically from the one purge task; a full table also triggers it.
    pub fn purge(&self, now: Instant) -> usize {
        let mut removed = 0;
        self.inner.map.retain(|_, failures| {
            let keep = self.in_window(failures, now);
            if !keep {
                removed += 1;
            }
            keep
        });
        self.inner.len.fetch_sub(removed, Ordering::AcqRel);
        removed
    }

    fn purge_if_due(&self, now: Instant) -> bool {
        // try_lock: if another task is deciding or purging, this one just reports Untracked.
        let Ok(mut last) = self.inner.last_full_purge.try_lock() else {
            return false;
        };
        let due = last.is_none_or(|at| now.saturating_duration_since(at) >= FULL_PURGE_INTERVAL);
        if !due {
            return false;
        }
        *last = Some(now);
        drop(last);
        self.purge(now);
        true
    }

    /// Keys currently tracked (for a gauge).
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn in_window(&self, failures: &Failures, now: Instant) -> bool {
        failures
            .window_start
            .checked_add(self.inner.config.window)
            .is_none_or(|end| now < end)
    }

    fn blocks(&self, failures: &Failures, now: Instant) -> bool {
        failures.count >= self.inner.config.max_failures && self.in_window(failures, now)
    }

    fn outcome(&self, failures: &Failures, now: Instant) -> FailureOutcome {
        if self.blocks(failures, now) {
            FailureOutcome::Blocked
        } else {
            FailureOutcome::Counted
        }
    }
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for FailureLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLimiter")
            .field("config", &self.inner.config)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A virtual clock: a fixed base plus offsets.
    struct Clock(Instant);

    impl Clock {
        fn at(&self, secs: u64) -> Instant {
            self.0 + Duration::from_secs(secs)
        }
    }

    fn limiter(max_failures: u32, max_keys: usize) -> FailureLimiter<String> {
        FailureLimiter::new(LimiterConfig {
            window: Duration::from_secs(60),
            max_failures,
            max_keys,
        })
    }

    #[test]
    fn documented_entry_size_holds() {
        assert_eq!(std::mem::size_of::<(IpAddr, Failures)>(), 48);
        assert_eq!(std::mem::size_of::<(String, Failures)>(), 48);
    }

    #[test]
    fn a_block_from_another_node_lasts_until_its_end_and_never_shortens_a_longer_one() {
        let limiter: FailureLimiter<u32> = FailureLimiter::new(LimiterConfig {
            window: Duration::from_secs(60),
            max_failures: 5,
            max_keys: 1,
        });
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(30);
        assert_eq!(limiter.block_until(1, until, t0), FailureOutcome::Blocked);
        assert!(limiter.is_blocked(&1, t0));
        assert!(limiter.is_blocked(&1, until - Duration::from_millis(1)));
        assert!(!limiter.is_blocked(&1, until));
        // A shorter block does not cut a longer one short.
        limiter.block_until(1, t0 + Duration::from_secs(10), t0);
        assert!(limiter.is_blocked(&1, t0 + Duration::from_secs(20)));
        // Bounded: a second key finds the table full.
        assert_eq!(limiter.block_until(2, until, t0), FailureOutcome::Untracked);
        assert!(!limiter.is_blocked(&2, t0));
    }

    #[test]
    fn blocks_at_the_limit_until_the_window_ends() {
        let clock = Clock(Instant::now());
        let l = limiter(3, 10);
        let alice = "alice".to_string();
        assert_eq!(
            l.record_failure(alice.clone(), clock.at(0)),
            FailureOutcome::Counted
        );
        assert_eq!(
            l.record_failure(alice.clone(), clock.at(10)),
            FailureOutcome::Counted
        );
        assert!(!l.is_blocked("alice", clock.at(10)));
        assert_eq!(
            l.record_failure(alice.clone(), clock.at(20)),
            FailureOutcome::Blocked
        );
        assert!(l.is_blocked("alice", clock.at(20)));
        assert!(l.is_blocked("alice", clock.at(59)));
        // Failures while blocked do not extend the block.
        assert_eq!(
            l.record_failure(alice.clone(), clock.at(59)),
            FailureOutcome::Blocked
        );
        assert!(!l.is_blocked("alice", clock.at(60)));
        // A new window starts from scratch.
        assert_eq!(
            l.record_failure(alice, clock.at(61)),
            FailureOutcome::Counted
        );
        assert!(!l.is_blocked("alice", clock.at(61)));
    }

    #[test]
    fn failures_in_an_old_window_do_not_add_up() {
        let clock = Clock(Instant::now());
        let l = limiter(2, 10);
        l.record_failure("bob".to_string(), clock.at(0));
        assert_eq!(
            l.record_failure("bob".to_string(), clock.at(60)),
            FailureOutcome::Counted
        );
        assert!(!l.is_blocked("bob", clock.at(60)));
    }

    #[test]
    fn keys_are_independent() {
        let clock = Clock(Instant::now());
        let l = limiter(1, 10);
        l.record_failure("mallory".to_string(), clock.at(0));
        assert!(l.is_blocked("mallory", clock.at(1)));
        assert!(!l.is_blocked("alice", clock.at(1)));
    }

    #[test]
    fn full_table_never_evicts_a_live_key_and_leaves_new_keys_untracked() {
        let clock = Clock(Instant::now());
        let l = limiter(2, 2);
        l.record_failure("attacker".to_string(), clock.at(0));
        l.record_failure("attacker".to_string(), clock.at(0));
        l.record_failure("a".to_string(), clock.at(30));
        for i in 0..100 {
            assert_eq!(
                l.record_failure(format!("flood{i}"), clock.at(31)),
                FailureOutcome::Untracked
            );
        }
        assert!(l.is_blocked("attacker", clock.at(31)));
        assert!(!l.is_blocked("flood1", clock.at(31)));
        assert_eq!(l.len(), 2);
        // Once the attacker's window ends, a full table purges it to make room.
        assert_eq!(
            l.record_failure("new".to_string(), clock.at(61)),
            FailureOutcome::Counted
        );
        assert!(!l.is_blocked("attacker", clock.at(61)));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn purge_drops_only_finished_windows() {
        let clock = Clock(Instant::now());
        let l = limiter(5, 10);
        l.record_failure("old".to_string(), clock.at(0));
        l.record_failure("new".to_string(), clock.at(30));
        assert_eq!(l.purge(clock.at(59)), 0);
        assert_eq!(l.purge(clock.at(60)), 1);
        assert_eq!(l.len(), 1);
        assert_eq!(l.purge(clock.at(90)), 1);
        assert!(l.is_empty());
    }

    #[test]
    fn zero_max_failures_means_one() {
        let clock = Clock(Instant::now());
        let l = limiter(0, 10);
        assert!(!l.is_blocked("x", clock.at(0)));
        assert_eq!(
            l.record_failure("x".to_string(), clock.at(0)),
            FailureOutcome::Blocked
        );
    }

    #[test]
    fn ip_limiter_defaults_and_ipv6_prefix_keys() {
        let clock = Clock(Instant::now());
        let l: FailureLimiter<IpAddr> = FailureLimiter::new(LimiterConfig::per_source());
        let first: IpAddr = "2001:db8:1:2::1".parse().expect("literal");
        for i in 0..20u16 {
            // Rotating the interface id stays within one /64.
            let rotated = match first {
                IpAddr::V6(v6) => {
                    let mut segments = v6.segments();
                    segments[7] = i;
                    IpAddr::V6(Ipv6Addr::from(segments))
                }
                IpAddr::V4(_) => first,
            };
            l.record_failure(source_key(rotated), clock.at(0));
        }
        assert!(l.is_blocked(&source_key(first), clock.at(1)));
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("literal");
        assert!(!l.is_blocked(&source_key(other), clock.at(1)));
        let v4: IpAddr = "192.0.2.1".parse().expect("literal");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("literal");
        assert_eq!(source_key(mapped), v4);
        assert_eq!(source_key(v4), v4);
    }

    #[test]
    fn username_defaults() {
        let clock = Clock(Instant::now());
        let l: FailureLimiter<String> = FailureLimiter::new(LimiterConfig::per_username());
        for _ in 0..9 {
            l.record_failure("alice".to_string(), clock.at(0));
        }
        assert!(!l.is_blocked("alice", clock.at(0)));
        l.record_failure("alice".to_string(), clock.at(0));
        assert!(l.is_blocked("alice", clock.at(59)));
        assert!(!l.is_blocked("alice", clock.at(60)));
    }

    #[test]
    fn concurrent_new_keys_never_exceed_max_keys() {
        let clock = Clock(Instant::now());
        let l = limiter(3, 50);
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let l = l.clone();
                let now = clock.at(0);
                scope.spawn(move || {
                    for i in 0..100 {
                        l.record_failure(format!("k{thread}-{i}"), now);
                    }
                });
            }
        });
        assert_eq!(l.len(), 50);
        assert_eq!(l.inner.map.len(), 50);
    }
}
