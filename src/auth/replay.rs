//! Nonce-count replay protection (docs/testing.md A6, A7) in fixed memory: per nonce, the last
//! accepted `nc` and the Call-ID and source of its first use, so a captured `Authorization`
//! cannot be sent again, and a fresh nonce is never refused for lack of room.
//!
//! This file owns that fixed table and nothing else. It must not verify digests or nonces:
//! the caller records a use only after `super::nonce` said `Valid` **and** `super::digest` said
//! `Accepted`, so only holders of real credentials can claim slots, and an attacker who saw a
//! nonce cannot burn its `nc` space with garbage responses. It never reads the clock.
//!
//! # How it works
//!
//! Every nonce carries a sequence number `s` (see `super::nonce`): unique, growing in mint
//! order within this process, covered by the nonce's MAC. The table is a fixed array of `N`
//! slots; the nonce `s` keeps its state in slot `s mod N`, which holds the sequence number of
//! the nonce it belongs to, the last accepted `nc`, and hashes of the first use's Call-ID and
//! source. A use of `s` with count `nc` is decided under the slot's lock:
//!
//! - the slot holds a smaller number (an older nonce, or nothing): a **first use**. Accepted
//!   if `nc >= 1`; the slot now belongs to `s` and the older nonce's state is dropped.
//! - the slot holds `s`: accepted only if `nc` is above the last accepted one and the Call-ID
//!   and source are those of the first use; `nc` is recorded.
//! - the slot holds a larger number: a newer nonce took it, and `s` is refused as
//!   [`ReplayError::Superseded`]: the caller answers `401/407 … stale=true`, and the phone
//!   re-authenticates with the new nonce without asking its user (RFC 7616 §3.3), one extra
//!   round trip. Likewise a nonce of another process ([`ReplayError::Foreign`]): its uses were
//!   recorded there, or before a restart, not here.
//!
//! # Why no replay is ever accepted
//!
//! A replay is a second acceptance of a `(nonce, nc)` pair; more strictly, the accepted counts
//! of each nonce must rise. Take a nonce `s` accepted once with count `c`:
//!
//! 1. A slot's number never decreases: it is only ever overwritten by a larger one (first use)
//!    or kept. So from that acceptance on, slot `s mod N` holds `s` or something larger.
//! 2. While it holds `s`, a use of `s` passes only with `nc` above the recorded count, which
//!    itself only rises; the first use is never taken again, since that needs a smaller number
//!    in the slot.
//! 3. Once it holds something larger, it never holds `s` again (1), and every use of `s` is
//!    refused.
//!
//! So after `c`, only counts above `c` can ever be accepted for `s`: no `(s, nc)` twice. This
//! holds whatever the interleaving of uses, evictions (a slot taken by a newer nonce) and
//! replays, because each decision and its write happen under the slot's lock; the property
//! test below drives random interleavings against a model. What the argument needs from
//! outside: sequence numbers are unique and only grow within one process (`NonceSequence`),
//! and the MAC stops anyone from changing the number inside a nonce. Hash collisions of the
//! Call-ID or source can only refuse a use, never accept one.
//!
//! # Why a fresh nonce always works
//!
//! A nonce is refused at first use only if a nonce minted at least `N` challenges after it was
//! used first. The newest challenge is therefore always accepted at first use, whatever the
//! rate: the table never fills. With the default [`DEFAULT_REPLAY_CAPACITY`] slots, a nonce
//! keeps its state for `N / (challenge rate)`: 419 s at 2 500 challenges/s, longer than the
//! nonce lifetime; at 20 000/s it is 52 s, after which a phone reusing its nonce gets one
//! stale round trip.
//!
//! Memory: [`SLOT_BYTES`] per slot, allocated once: 24 MiB for the default 1 048 576 slots,
//! whatever the traffic. Hashing makes a 4 KB Call-ID cost the same as a short one; the hash
//! key is random per table, so nobody can aim for a collision.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::nonce::{nonce_sequence, NonceIssuer, NonceSequence};

/// Default number of slots: 2^20. A nonce keeps its state for 2^20 challenges (419 s at
/// 2 500/s); 24 MiB.
pub const DEFAULT_REPLAY_CAPACITY: usize = 1 << 20;

/// Bytes per slot, checked against `size_of` in a test.
pub const SLOT_BYTES: usize = 24;

/// Slots are split over this many locks; two cores contend on one with probability 1/64.
const SHARDS: usize = 64;

/// Why a use of a nonce was refused. Every case means: challenge again, with `stale=true`
/// (see [`ReplayError::is_stale`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("nonce count {got:#010x} is not above the last accepted {last:#010x}")]
    NonceCountNotIncreasing { last: u32, got: u32 },
    #[error("nonce reused with a different Call-ID")]
    CallIdMismatch,
    #[error("nonce reused from a different source address")]
    SourceMismatch,
    #[error("nonce superseded: its slot belongs to a newer nonce")]
    Superseded,
    #[error("nonce minted by another process")]
    Foreign,
}

impl ReplayError {
    /// Whether the refusal is about the nonce having gone rather than about this use. Every
    /// refusal here comes after the digest verified, so the password is right in all cases
    /// and a stale challenge never makes a phone prompt its user; a replayed header gains
    /// nothing from it. This tells the metrics apart.
    pub fn is_stale(&self) -> bool {
        matches!(self, ReplayError::Superseded | ReplayError::Foreign)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Number of slots, rounded up to a multiple of 64. Default [`DEFAULT_REPLAY_CAPACITY`].
    pub capacity: usize,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            capacity: DEFAULT_REPLAY_CAPACITY,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Sequence number of the nonce this slot belongs to; 0 for none (no nonce has 0).
    sequence: u64,
    /// Keyed hash of the first use's Call-ID (see the file header).
    call_id: u64,
    last_nc: u32,
    /// Keyed hash of the first use's source address, cut to 32 bits.
    source: u32,
}

/// The shared table: a cheap `Clone` handle. Safe to call from many threads at once; each call
/// holds one of 64 locks for a few comparisons.
#[derive(Clone)]
pub struct ReplayTable {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tells our nonces from those of other processes.
    sequence: Arc<NonceSequence>,
    /// Slot `i` lives in `shards[i % SHARDS][i / SHARDS]`.
    shards: Vec<Mutex<Box<[Slot]>>>,
    /// Total slots, `shards.len() * per-shard length`.
    capacity: u64,
    /// Random key for the Call-ID and source hashes.
    hasher: RandomState,
}

impl ReplayTable {
    /// A table for the nonces `issuer` mints, with all its memory allocated now.
    pub fn new(config: ReplayConfig, issuer: &NonceIssuer) -> ReplayTable {
        let per_shard = config.capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(vec![Slot::default(); per_shard].into_boxed_slice()))
            .collect();
        ReplayTable {
            inner: Arc::new(Inner {
                sequence: issuer.sequence(),
                shards,
                capacity: (per_shard * SHARDS) as u64,
                hasher: RandomState::new(),
            }),
        }
    }

    /// Accepts this use of `nonce` (already checked `Valid` and verified) if it is the first
    /// use with `nc >= 1`, or `nc` is above the last accepted one and the Call-ID and source
    /// match the first use; then records `nc`. See the file header for the rules and why they
    /// never accept a replay.
    pub fn check_and_record(
        &self,
        nonce: &str,
        nc: u32,
        call_id: &str,
        source: Option<IpAddr>,
    ) -> Result<(), ReplayError> {
        let inner = &self.inner;
        let sequence = match nonce_sequence(nonce) {
            Some(s) if inner.sequence.is_ours(s) => s,
            _ => return Err(ReplayError::Foreign),
        };
        let call_id = inner.hasher.hash_one(call_id);
        // Truncation is fine: a collision can only refuse.
        let source = inner.hasher.hash_one(source.map(|ip| ip.to_canonical())) as u32;
        let index = sequence % inner.capacity;
        let mut shard = self.shard(index);
        let slot = &mut shard[(index / SHARDS as u64) as usize];
        if slot.sequence > sequence {
            return Err(ReplayError::Superseded);
        }
        if slot.sequence < sequence {
            if nc == 0 {
                return Err(ReplayError::NonceCountNotIncreasing { last: 0, got: 0 });
            }
            *slot = Slot {
                sequence,
                call_id,
                last_nc: nc,
                source,
            };
            return Ok(());
        }
        if slot.call_id != call_id {
            return Err(ReplayError::CallIdMismatch);
        }
        if slot.source != source {
            return Err(ReplayError::SourceMismatch);
        }
        if nc <= slot.last_nc {
            return Err(ReplayError::NonceCountNotIncreasing {
                last: slot.last_nc,
                got: nc,
            });
        }
        slot.last_nc = nc;
        Ok(())
    }

    fn shard(&self, index: u64) -> MutexGuard<'_, Box<[Slot]>> {
        // A panic cannot leave a slot half-written (plain copies), so a poisoned lock is usable.
        self.inner.shards[(index % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.inner.capacity as usize
    }
}

impl std::fmt::Debug for ReplayTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayTable")
            .field("capacity", &self.inner.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::super::nonce::{NonceConfig, NonceKeys};
    use super::*;

    const T0: u64 = 1_700_000_000;
    const REALM: &str = "example.test";

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("literal"))
    }

    fn issuer(instance: u16) -> NonceIssuer {
        NonceIssuer::with_instance(NonceKeys::random(), NonceConfig::default(), instance)
    }

    fn setup(capacity: usize) -> (NonceIssuer, ReplayTable) {
        let issuer = issuer(1);
        let table = ReplayTable::new(ReplayConfig { capacity }, &issuer);
        (issuer, table)
    }

    #[test]
    fn documented_slot_size_holds() {
        assert_eq!(std::mem::size_of::<Slot>(), SLOT_BYTES);
        let (_, t) = setup(1000);
        assert_eq!(t.capacity(), 1024, "rounded up to a multiple of the shards");
    }

    #[test]
    fn rising_nc_passes_with_gaps() {
        let (issuer, t) = setup(64);
        let nonce = issuer.mint(REALM, None, T0);
        for nc in [1, 2, 5, 6] {
            assert_eq!(
                t.check_and_record(&nonce, nc, "c1", ip("192.0.2.1")),
                Ok(())
            );
        }
    }

    #[test]
    fn repeated_or_backwards_nc_fails() {
        let (issuer, t) = setup(64);
        let nonce = issuer.mint(REALM, None, T0);
        t.check_and_record(&nonce, 2, "c1", ip("192.0.2.1"))
            .expect("first use");
        assert_eq!(
            t.check_and_record(&nonce, 2, "c1", ip("192.0.2.1")),
            Err(ReplayError::NonceCountNotIncreasing { last: 2, got: 2 })
        );
        assert_eq!(
            t.check_and_record(&nonce, 1, "c1", ip("192.0.2.1")),
            Err(ReplayError::NonceCountNotIncreasing { last: 2, got: 1 })
        );
        // A refused attempt does not move the counter.
        assert_eq!(t.check_and_record(&nonce, 3, "c1", ip("192.0.2.1")), Ok(()));
    }

    #[test]
    fn zero_nc_on_first_use_fails_and_claims_nothing() {
        let (issuer, t) = setup(64);
        let nonce = issuer.mint(REALM, None, T0);
        assert!(t.check_and_record(&nonce, 0, "c1", None).is_err());
        assert_eq!(t.check_and_record(&nonce, 1, "c1", None), Ok(()));
    }

    #[test]
    fn other_call_id_or_source_fails() {
        let (issuer, t) = setup(64);
        let nonce = issuer.mint(REALM, None, T0);
        t.check_and_record(&nonce, 1, "c1", ip("192.0.2.1"))
            .expect("first use");
        assert_eq!(
            t.check_and_record(&nonce, 2, "c2", ip("192.0.2.1")),
            Err(ReplayError::CallIdMismatch)
        );
        assert_eq!(
            t.check_and_record(&nonce, 2, "c1", ip("192.0.2.2")),
            Err(ReplayError::SourceMismatch)
        );
        assert_eq!(
            t.check_and_record(&nonce, 2, "c1", None),
            Err(ReplayError::SourceMismatch)
        );
        assert_eq!(
            t.check_and_record(&nonce, 2, "c1", ip("::ffff:192.0.2.1")),
            Ok(())
        );
    }

    #[test]
    fn at_capacity_fresh_nonces_keep_working_and_superseded_ones_are_stale() {
        // 64 slots, 10 000 authentications: far more nonces than room, as in a storm.
        let (issuer, t) = setup(64);
        let mut used = Vec::new();
        for i in 0..10_000 {
            let nonce = issuer.mint(REALM, None, T0);
            let call_id = format!("c{i}");
            assert_eq!(t.check_and_record(&nonce, 1, &call_id, None), Ok(()));
            used.push((nonce, call_id));
        }
        // Every captured header replayed: refused. The last 64 still have their slots (a
        // plain replay), the rest were superseded (stale).
        for (n, (nonce, call_id)) in used.iter().enumerate() {
            let refused = t
                .check_and_record(nonce, 1, call_id, None)
                .expect_err("replay");
            assert_eq!(refused.is_stale(), n < 10_000 - 64, "{n}: {refused:?}");
        }
        // A nonce used after 64 newer ones were: stale once, then the next one works.
        let old = issuer.mint(REALM, None, T0);
        for i in 0..64 {
            let newer = issuer.mint(REALM, None, T0);
            t.check_and_record(&newer, 1, &format!("n{i}"), None)
                .expect("fresh");
        }
        assert_eq!(
            t.check_and_record(&old, 1, "late", None),
            Err(ReplayError::Superseded)
        );
        let retry = issuer.mint(REALM, None, T0);
        assert_eq!(t.check_and_record(&retry, 1, "late", None), Ok(()));
    }

    #[test]
    fn a_nonce_of_another_process_is_stale() {
        let (_, t) = setup(64);
        let nonce = issuer(2).mint(REALM, None, T0);
        assert_eq!(
            t.check_and_record(&nonce, 1, "c1", None),
            Err(ReplayError::Foreign)
        );
        assert!(ReplayError::Foreign.is_stale());
        assert_eq!(
            t.check_and_record("not a nonce", 1, "c1", None),
            Err(ReplayError::Foreign)
        );
    }

    #[test]
    fn concurrent_uses_of_one_nonce_accept_each_nc_once() {
        let (issuer, t) = setup(64);
        let nonce = issuer.mint(REALM, None, T0);
        let accepted: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (t, nonce) = (t.clone(), nonce.clone());
                    scope.spawn(move || {
                        (1..=500u32)
                            .filter(|&nc| t.check_and_record(&nonce, nc, "c", None).is_ok())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        // Each nc in 1..=500 at most once across all threads.
        assert!((1..=500).contains(&accepted), "{accepted}");
        assert_eq!(
            t.check_and_record(&nonce, 500, "c", None),
            Err(ReplayError::NonceCountNotIncreasing {
                last: 500,
                got: 500
            })
        );
    }

    /// One step of an interleaving: mint a nonce, use one (with some nc, Call-ID and source),
    /// or replay a use that was accepted earlier, byte for byte.
    #[derive(Debug, Clone)]
    enum Step {
        Mint,
        Use {
            nonce: usize,
            nc: u32,
            call_id: u8,
            source: u8,
        },
        Replay(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            2 => Just(Step::Mint),
            4 => (any::<usize>(), 0u32..6, 0u8..2, 0u8..2).prop_map(|(nonce, nc, call_id, source)| {
                Step::Use { nonce, nc, call_id, source }
            }),
            2 => any::<usize>().prop_map(Step::Replay),
        ]
    }

    proptest! {
        /// Any interleaving of uses, evictions (a 64-slot table, so slots are taken over all
        /// the time) and replays. Safety, checked against nothing but the history: no
        /// (nonce, nc) is accepted twice, the accepted counts of each nonce rise, and every
        /// later use matches the first use's Call-ID and source. Liveness: a first use is
        /// refused only if a newer nonce with the same slot was used before it (never for
        /// lack of room), which the model below predicts exactly.
        #[test]
        fn no_replay_is_ever_accepted(steps in proptest::collection::vec(step(), 1..400)) {
            const SLOTS: usize = 64;
            let (issuer, t) = setup(SLOTS);
            let sources = [ip("192.0.2.1"), ip("192.0.2.2")];
            let mut nonces: Vec<String> = Vec::new();
            // Per nonce: the last accepted nc and the first use's (Call-ID, source).
            let mut history: HashMap<usize, (u32, (u8, u8))> = HashMap::new();
            let mut accepted: Vec<(usize, u32, u8, u8)> = Vec::new();
            // The model: per slot, the newest nonce index that was accepted there.
            let mut owner: [Option<usize>; SLOTS] = [None; SLOTS];
            for step in steps {
                let (n, nc, call_id, source) = match step {
                    Step::Mint => {
                        nonces.push(issuer.mint(REALM, None, T0));
                        continue;
                    }
                    Step::Use { .. } if nonces.is_empty() => continue,
                    Step::Use { nonce, nc, call_id, source } => {
                        (nonce % nonces.len(), nc, call_id, source)
                    }
                    Step::Replay(_) if accepted.is_empty() => continue,
                    Step::Replay(i) => accepted[i % accepted.len()],
                };
                let result = t.check_and_record(
                    &nonces[n],
                    nc,
                    &format!("c{call_id}"),
                    sources[usize::from(source)],
                );
                // Sequence numbers start at 1, so nonce n has slot (n + 1) mod SLOTS.
                let slot = (n + 1) % SLOTS;
                let expected = match owner[slot] {
                    Some(o) if o > n => false,
                    Some(o) if o == n => {
                        let (last, first) = history[&n];
                        nc > last && first == (call_id, source)
                    }
                    _ => nc >= 1,
                };
                prop_assert_eq!(result.is_ok(), expected, "{:?}", result);
                if let Err(e) = result {
                    prop_assert_eq!(e.is_stale(), matches!(owner[slot], Some(o) if o > n));
                    continue;
                }
                match history.get(&n) {
                    Some(&(last, first)) => {
                        prop_assert!(nc > last, "nonce {}: nc {} after {}", n, nc, last);
                        prop_assert_eq!(first, (call_id, source));
                    }
                    None => prop_assert!(nc >= 1),
                }
                let first = history.get(&n).map_or((call_id, source), |h| h.1);
                history.insert(n, (nc, first));
                owner[slot] = Some(n);
                accepted.push((n, nc, call_id, source));
            }
            let mut pairs: Vec<(usize, u32)> = accepted.iter().map(|a| (a.0, a.1)).collect();
            pairs.sort_unstable();
            let before = pairs.len();
            pairs.dedup();
            prop_assert_eq!(before, pairs.len(), "a (nonce, nc) pair was accepted twice");
        }
    }
}
