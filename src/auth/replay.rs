//! Nonce-count replay protection (TESTING.md A6, A7): per nonce, the last accepted `nc` and the
//! Call-ID and source of its first use, so a captured `Authorization` cannot be sent again.
//!
//! This file owns that bounded table and nothing else. It must not verify digests or nonces:
//! the caller records a use only after `super::nonce` said `Valid` **and** `super::digest` said
//! `Accepted`, so only holders of real credentials can add entries, and an attacker who saw a
//! nonce cannot burn its `nc` space with garbage responses. It never reads the clock.
//!
//! Memory: an entry is a 48-byte slot (a keyed 64-bit hash of the nonce, the last `nc`, a keyed
//! 64-bit hash of the Call-ID, the source and the expiry) plus a control byte, in `DashMap` shard
//! tables that are between 7/16 and 7/8 full: at worst [`WORST_BYTES_PER_ENTRY`] bytes, so the
//! default capacity of [`DEFAULT_REPLAY_CAPACITY`] entries costs at most about 22 MB. Hashing
//! makes a 4 KB Call-ID cost the same as a short one. The hash key is random per table, so
//! nobody can aim for a collision, and a chance collision (about 1e-9 for a full table) only
//! makes two nonces share one counter: a refusal and a re-challenge, never an acceptance of a
//! replay.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::nonce::NonceConfig;

/// Default number of nonces tracked at once: 200 000 first uses within one nonce lifetime is
/// about 660 successful authentications per second, sustained.
pub const DEFAULT_REPLAY_CAPACITY: usize = 200_000;

/// Worst-case bytes per entry (just after a table doubles), checked against `size_of` in a test.
pub const WORST_BYTES_PER_ENTRY: usize = 112;

/// Why a use of a nonce was refused. Every case means: challenge again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("nonce count {got:#010x} is not above the last accepted {last:#010x}")]
    NonceCountNotIncreasing { last: u32, got: u32 },
    #[error("nonce reused with a different Call-ID")]
    CallIdMismatch,
    #[error("nonce reused from a different source address")]
    SourceMismatch,
    #[error("replay table full")]
    TableFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Most nonces tracked at once. Default [`DEFAULT_REPLAY_CAPACITY`].
    pub capacity: usize,
    /// How long an entry is kept after the first use of its nonce. Must cover the rest of the
    /// nonce's life, or a replay becomes possible once the entry is purged: use
    /// [`ReplayConfig::for_nonces`]. Default 303 s (nonce lifetime plus drift).
    pub entry_lifetime: Duration,
}

impl ReplayConfig {
    /// Keeps entries for `lifetime + max_drift`: a nonce is at most `max_drift` younger than
    /// `now` at first use, so it is dead before its entry goes.
    pub fn for_nonces(nonces: &NonceConfig) -> ReplayConfig {
        ReplayConfig {
            capacity: DEFAULT_REPLAY_CAPACITY,
            entry_lifetime: nonces.lifetime.saturating_add(nonces.max_drift),
        }
    }
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig::for_nonces(&NonceConfig::default())
    }
}

#[derive(Clone, Copy)]
struct Use {
    last_nc: u32,
    /// Keyed hash of the first use's Call-ID (see the file header).
    call_id: u64,
    source: Option<IpAddr>,
    /// Last Unix second the nonce may still be valid; [`ReplayTable::purge`] drops the entry after it.
    expires_at: u64,
}

/// The shared table: a cheap `Clone` handle. Safe to call from many tasks at once; each call
/// holds one `DashMap` shard lock for a few comparisons, and a purge holds each shard's lock in
/// turn for one pass over that shard.
#[derive(Clone)]
pub struct ReplayTable {
    inner: Arc<Inner>,
}

struct Inner {
    config: ReplayConfig,
    /// Keyed by a keyed hash of the nonce (see the file header).
    map: DashMap<u64, Use>,
    /// Entries in `map`, maintained by reservation so concurrent inserts cannot overshoot.
    len: AtomicUsize,
    /// Unix second of the last purge triggered by a full table: at most one full scan per
    /// second, so a full table cannot be turned into a CPU amplifier.
    last_full_purge: AtomicU64,
    /// Random key for the nonce and Call-ID hashes.
    hasher: RandomState,
}

impl ReplayTable {
    pub fn new(config: ReplayConfig) -> ReplayTable {
        ReplayTable {
            inner: Arc::new(Inner {
                config,
                map: DashMap::new(),
                len: AtomicUsize::new(0),
                last_full_purge: AtomicU64::new(0),
                hasher: RandomState::new(),
            }),
        }
    }

    /// Accepts this use of `nonce` if `nc` is above the last accepted one and the Call-ID and
    /// source match the first use, then records `nc`. A first use needs `nc >= 1`. When the
    /// table is full it purges expired entries (at most once a second) and otherwise refuses
    /// with [`ReplayError::TableFull`]; the caller then sends a fresh challenge.
    pub fn check_and_record(
        &self,
        nonce: &str,
        nc: u32,
        call_id: &str,
        source: Option<IpAddr>,
        now_unix_secs: u64,
    ) -> Result<(), ReplayError> {
        let inner = &self.inner;
        let key = inner.hasher.hash_one(nonce);
        let this_use = Use {
            last_nc: nc,
            call_id: inner.hasher.hash_one(call_id),
            source: source.map(|ip| ip.to_canonical()),
            expires_at: now_unix_secs.saturating_add(inner.config.entry_lifetime.as_secs()),
        };
        match self.try_record(key, this_use) {
            Err(ReplayError::TableFull) if self.purge_if_due(now_unix_secs) => {
                self.try_record(key, this_use)
            }
            result => result,
        }
    }

    fn try_record(&self, key: u64, this_use: Use) -> Result<(), ReplayError> {
        let inner = &self.inner;
        match inner.map.entry(key) {
            Entry::Occupied(mut entry) => {
                let first = entry.get_mut();
                // An expired entry still guards its nonce until it is purged: the nonce itself
                // is stale by then (see `ReplayConfig::entry_lifetime`).
                if first.call_id != this_use.call_id {
                    return Err(ReplayError::CallIdMismatch);
                }
                if first.source != this_use.source {
                    return Err(ReplayError::SourceMismatch);
                }
                if this_use.last_nc <= first.last_nc {
                    return Err(ReplayError::NonceCountNotIncreasing {
                        last: first.last_nc,
                        got: this_use.last_nc,
                    });
                }
                first.last_nc = this_use.last_nc;
                Ok(())
            }
            Entry::Vacant(entry) => {
                if this_use.last_nc == 0 {
                    return Err(ReplayError::NonceCountNotIncreasing { last: 0, got: 0 });
                }
                let capacity = inner.config.capacity;
                let reserved = inner
                    .len
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < capacity).then_some(n + 1)
                    })
                    .is_ok();
                if !reserved {
                    return Err(ReplayError::TableFull);
                }
                entry.insert(this_use);
                Ok(())
            }
        }
    }

    /// Drops entries whose nonce can no longer be valid; returns how many. Run it periodically
    /// (e.g. every nonce lifetime) from the one purge task; a full table also triggers it.
    pub fn purge(&self, now_unix_secs: u64) -> usize {
        let mut removed = 0;
        self.inner.map.retain(|_, entry| {
            let keep = entry.expires_at >= now_unix_secs;
            if !keep {
                removed += 1;
            }
            keep
        });
        self.inner.len.fetch_sub(removed, Ordering::AcqRel);
        removed
    }

    fn purge_if_due(&self, now_unix_secs: u64) -> bool {
        let last = &self.inner.last_full_purge;
        let previous = last.load(Ordering::Acquire);
        if now_unix_secs <= previous
            || last
                .compare_exchange(previous, now_unix_secs, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        self.purge(now_unix_secs);
        true
    }

    /// Entries currently held (for a gauge).
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for ReplayTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayTable")
            .field("config", &self.inner.config)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;
    const NONCE: &str = "AAAAAGVT8QABu9M4ZyqHxkQKyZ0CR9bH";

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("literal"))
    }

    fn table(capacity: usize) -> ReplayTable {
        ReplayTable::new(ReplayConfig {
            capacity,
            ..ReplayConfig::default()
        })
    }

    #[test]
    fn documented_entry_size_holds() {
        let slot = std::mem::size_of::<(u64, Use)>();
        assert_eq!(slot, 48);
        // hashbrown has one control byte per slot and is between 7/16 and 7/8 full.
        let worst = (slot + 1) * 16 / 7;
        assert!(worst <= WORST_BYTES_PER_ENTRY, "{slot} -> {worst}");
    }

    #[test]
    fn rising_nc_passes_with_gaps() {
        let t = table(10);
        for nc in [1, 2, 5, 6] {
            assert_eq!(
                t.check_and_record(NONCE, nc, "c1", ip("192.0.2.1"), T0),
                Ok(())
            );
        }
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn repeated_or_backwards_nc_fails() {
        let t = table(10);
        t.check_and_record(NONCE, 2, "c1", ip("192.0.2.1"), T0)
            .expect("first use");
        assert_eq!(
            t.check_and_record(NONCE, 2, "c1", ip("192.0.2.1"), T0),
            Err(ReplayError::NonceCountNotIncreasing { last: 2, got: 2 })
        );
        assert_eq!(
            t.check_and_record(NONCE, 1, "c1", ip("192.0.2.1"), T0),
            Err(ReplayError::NonceCountNotIncreasing { last: 2, got: 1 })
        );
        // A refused attempt does not move the counter.
        assert_eq!(
            t.check_and_record(NONCE, 3, "c1", ip("192.0.2.1"), T0),
            Ok(())
        );
    }

    #[test]
    fn zero_nc_on_first_use_fails() {
        let t = table(10);
        assert!(t.check_and_record(NONCE, 0, "c1", None, T0).is_err());
        assert!(t.is_empty());
    }

    #[test]
    fn other_call_id_or_source_fails() {
        let t = table(10);
        t.check_and_record(NONCE, 1, "c1", ip("192.0.2.1"), T0)
            .expect("first use");
        assert_eq!(
            t.check_and_record(NONCE, 2, "c2", ip("192.0.2.1"), T0),
            Err(ReplayError::CallIdMismatch)
        );
        assert_eq!(
            t.check_and_record(NONCE, 2, "c1", ip("192.0.2.2"), T0),
            Err(ReplayError::SourceMismatch)
        );
        assert_eq!(
            t.check_and_record(NONCE, 2, "c1", None, T0),
            Err(ReplayError::SourceMismatch)
        );
        assert_eq!(
            t.check_and_record(NONCE, 2, "c1", ip("::ffff:192.0.2.1"), T0),
            Ok(())
        );
    }

    #[test]
    fn entries_expire_with_the_nonce() {
        let t = table(10);
        t.check_and_record(NONCE, 1, "c1", None, T0)
            .expect("first use");
        assert_eq!(t.purge(T0 + 303), 0);
        // Still guarded until purged, even past its expiry.
        assert!(t.check_and_record(NONCE, 1, "c1", None, T0 + 400).is_err());
        assert_eq!(t.purge(T0 + 304), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_purges_expired_then_refuses() {
        let t = table(2);
        t.check_and_record("n1", 1, "c", None, T0).expect("room");
        t.check_and_record("n2", 1, "c", None, T0 + 100)
            .expect("room");
        assert_eq!(
            t.check_and_record("n3", 1, "c", None, T0 + 200),
            Err(ReplayError::TableFull)
        );
        // Known nonces are still served when full.
        assert_eq!(t.check_and_record("n1", 2, "c", None, T0 + 200), Ok(()));
        // n1 has expired by now: the full table purges it and takes n3.
        assert_eq!(t.check_and_record("n3", 1, "c", None, T0 + 350), Ok(()));
        assert_eq!(t.len(), 2);
        // Nothing expired: refused, and no second scan within the same second.
        assert_eq!(
            t.check_and_record("n4", 1, "c", None, T0 + 350),
            Err(ReplayError::TableFull)
        );
    }

    #[test]
    fn concurrent_first_uses_never_exceed_capacity() {
        let t = table(100);
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let t = t.clone();
                scope.spawn(move || {
                    for i in 0..100 {
                        let nonce = format!("n{thread}-{i}");
                        let _ = t.check_and_record(&nonce, 1, "c", None, T0);
                    }
                });
            }
        });
        assert_eq!(t.len(), 100);
        assert_eq!(t.inner.map.len(), 100);
    }
}
