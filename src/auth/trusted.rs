//! Known-good (username, source) pairs: the pairs that authenticated successfully not long
//! ago. The failure limiters ([`super::FailureLimiter`]) block a guessed username and a
//! guessing source; without this set they would also lock out the real phone of a guessed
//! user, and every working phone behind the NAT address of one broken phone. A pair in this
//! set is not refused by either limiter, so working phones keep working during an attack or
//! beside a broken phone, while the attacker's and the broken phone's pairs stay throttled.
//!
//! Rules:
//! - A pair enters on a successful Digest verification and stays for `ttl` after its last
//!   success (the registrar sets it to outlive a re-registration interval).
//! - A verification failure of the pair removes it at once: a phone whose password went stale
//!   becomes an ordinary (throttled) client on its first failure, and an attacker never gets a
//!   pair without the password.
//! - Keys are a keyed 64-bit hash of the username and the source's limiter key
//!   ([`super::source_key`]: an IPv6 source by its /64). A collision only lets one pair skip
//!   the throttle, never authenticates anything; the random key makes collisions unplannable.
//!
//! Bounds: at most `max_pairs` entries; when full and a purge of expired ones frees nothing,
//! a new pair is not added (it is simply throttled like today). An entry is a 24-byte slot
//! (u64 key, `Instant`) plus a control byte in a `DashMap` shard table between 7/16 and 7/8
//! full: at worst about 57 bytes, so the default [`DEFAULT_MAX_TRUSTED_PAIRS`] costs at most
//! about 11 MB. Only successful authentications add entries, so filling it takes that many
//! valid credentials. It never reads the clock: `now` is a parameter.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::source_key;

/// Default most pairs remembered.
pub const DEFAULT_MAX_TRUSTED_PAIRS: usize = 200_000;

/// Remembered (username, source) pairs that authenticated recently. Cheap `Clone` handle.
#[derive(Clone)]
pub struct TrustedPairs {
    inner: Arc<Inner>,
}

struct Inner {
    /// Pair hash → when its trust ends.
    map: DashMap<u64, Instant>,
    hasher: std::collections::hash_map::RandomState,
    ttl: Duration,
    max_pairs: usize,
    /// Entries in `map`, reserved before insert so concurrent inserts cannot overshoot.
    len: AtomicUsize,
}

impl TrustedPairs {
    pub fn new(ttl: Duration, max_pairs: usize) -> TrustedPairs {
        TrustedPairs {
            inner: Arc::new(Inner {
                map: DashMap::new(),
                hasher: std::collections::hash_map::RandomState::new(),
                ttl,
                max_pairs,
                len: AtomicUsize::new(0),
            }),
        }
    }

    fn key(&self, username: &str, source: IpAddr) -> u64 {
        self.inner.hasher.hash_one((username, source_key(source)))
    }

    /// Whether `username` authenticated from `source` within the last `ttl`.
    pub fn contains(&self, username: &str, source: IpAddr, now: Instant) -> bool {
        self.inner
            .map
            .get(&self.key(username, source))
            .is_some_and(|until| now < *until)
    }

    /// A successful verification: trust the pair until `now + ttl`.
    pub fn record_success(&self, username: &str, source: IpAddr, now: Instant) {
        let until = now.checked_add(self.inner.ttl).unwrap_or(now);
        let key = self.key(username, source);
        if !self.try_insert(key, until) {
            self.purge(now);
            self.try_insert(key, until);
        }
    }

    fn try_insert(&self, key: u64, until: Instant) -> bool {
        let inner = &self.inner;
        match inner.map.entry(key) {
            Entry::Occupied(mut e) => {
                *e.get_mut() = until;
                true
            }
            Entry::Vacant(e) => {
                let reserved = inner
                    .len
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < inner.max_pairs).then_some(n + 1)
                    })
                    .is_ok();
                if reserved {
                    e.insert(until);
                }
                reserved
            }
        }
    }

    /// A failed verification: the pair is no longer trusted.
    pub fn record_failure(&self, username: &str, source: IpAddr) {
        if self.inner.map.remove(&self.key(username, source)).is_some() {
            self.inner.len.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Drops expired pairs; returns how many. Run from the purge task; a full set also runs it.
    pub fn purge(&self, now: Instant) -> usize {
        let mut removed = 0;
        self.inner.map.retain(|_, until| {
            let keep = now < *until;
            removed += usize::from(!keep);
            keep
        });
        self.inner.len.fetch_sub(removed, Ordering::AcqRel);
        removed
    }

    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for TrustedPairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedPairs")
            .field("ttl", &self.inner.ttl)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_success_trusts_the_pair_until_its_ttl_and_a_failure_ends_it() {
        let t = TrustedPairs::new(Duration::from_secs(100), 10);
        let t0 = Instant::now();
        let office = ip("198.51.100.7");
        assert!(!t.contains("alice", office, t0));
        t.record_success("alice", office, t0);
        assert!(t.contains("alice", office, t0 + Duration::from_secs(99)));
        assert!(!t.contains("alice", office, t0 + Duration::from_secs(100)));
        assert!(
            !t.contains("bob", office, t0),
            "only the pair that succeeded"
        );
        assert!(!t.contains("alice", ip("203.0.113.9"), t0));
        // Another address in the same IPv6 /64 is the same source.
        t.record_success("carol", ip("2001:db8::1"), t0);
        assert!(t.contains("carol", ip("2001:db8::ffff"), t0));
        t.record_failure("alice", office);
        assert!(!t.contains("alice", office, t0));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_full_set_purges_expired_pairs_then_refuses_new_ones() {
        let t = TrustedPairs::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        let office = ip("198.51.100.7");
        t.record_success("a", office, t0);
        t.record_success("b", office, t0 + Duration::from_secs(5));
        t.record_success("c", office, t0 + Duration::from_secs(6));
        assert!(
            !t.contains("c", office, t0 + Duration::from_secs(6)),
            "full"
        );
        // A refresh of a known pair still works when full.
        t.record_success("b", office, t0 + Duration::from_secs(7));
        assert!(t.contains("b", office, t0 + Duration::from_secs(16)));
        // At 11 s "a" has expired: the purge makes room.
        t.record_success("c", office, t0 + Duration::from_secs(11));
        assert!(t.contains("c", office, t0 + Duration::from_secs(11)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.purge(t0 + Duration::from_secs(100)), 2);
        assert!(t.is_empty());
    }
}
