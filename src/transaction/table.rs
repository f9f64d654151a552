//! The table of live non-INVITE server transactions that every receive task shares.
//!
//! This file owns the map from [`TransactionKey`] to [`ServerTransaction`], the cap on its size
//! and what gives way at the cap, and the expiry queues that the one driver task drains with
//! [`TransactionTable::poll`].
//!
//! At the cap (issue 13), room is made before anything is refused: a completed transaction
//! only waits to answer a retransmission with its final response, so the oldest one is
//! dropped for a new request (a retransmission arriving later is processed afresh; for an
//! authenticated REGISTER that is one `stale=true` round trip). Only when every transaction is
//! still in progress are new requests refused, and those without credentials first: they
//! cost a full round trip and at best earn a challenge, so they may not take the last eighth
//! of the table ([`Admission`]).
//!
//! Memory (issue 22): every UDP transaction stays Completed for 64*T1 = 32 s, so the table
//! holds rate × 32 s entries, and each is kept small. The map key is a keyed 64-bit hash of
//! the [`TransactionKey`] (its fingerprint), not the key; the value is the 24-byte
//! [`ServerTransaction`]; a response is one exact-size [`StoredResponse`], a template over the
//! request when the caller passes it ([`TransactionTable::on_response_to`]); and a completed
//! transaction's place in the expiry order is a 16-byte entry in a FIFO. Two keys with the
//! same fingerprint (about one lookup in 2^64 / live entries) cost no wrong answer: a
//! completed transaction's response is sent only if it rebuilds, from the request at hand,
//! the bytes whose digest was taken when it was stored; otherwise the request is processed
//! afresh. While a transaction is in progress a colliding request is absorbed, and its
//! client retransmits.
//!
//! It must not do I/O, sleep, spawn or read the clock: callers pass `now` and send whatever bytes
//! it hands back. No lock is held beyond one map shard plus, briefly and always in that order,
//! the expiry queue's mutex; `poll` takes them one after the other, never nested, so there is no
//! lock-order inversion, and nothing here awaits.

use std::collections::{BTreeSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{
    Clock, Retransmission, ServerTransaction, State, StoredResponse, Tick, TransactionConfig,
    TransactionError, TransactionKey,
};

/// How many due entries `poll` pops per hold of the expiry mutex, so a burst of expiries never
/// blocks receive tasks for long.
const POLL_BATCH: usize = 256;

/// How much a new request is worth when the table is short of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Carries no credentials: at best it earns a challenge and another round trip. Refused
    /// once transactions in progress fill 7/8 of the table.
    Unauthenticated,
    /// Carries credentials, a client certificate, or belongs to a dialog: it can complete.
    Authenticated,
}

/// What the receive path must do with an incoming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDisposition {
    /// A new transaction was opened: process the request and answer through
    /// [`TransactionTable::on_response_to`] or [`TransactionTable::on_response`].
    New,
    /// A retransmission while the TU is still working (Trying): drop it.
    Absorb,
    /// A retransmission after a response: send these bytes again, do nothing else.
    Retransmit(Bytes),
    /// No room: the table holds `max_transactions` in progress (7/8 of it for an
    /// [`Admission::Unauthenticated`] request). Answer 503 statelessly or drop the request.
    Overloaded,
}

/// The shared server transaction table: a cheap `Clone` handle.
#[derive(Debug, Clone)]
pub struct TransactionTable {
    inner: Arc<Inner>,
}

/// A key's keyed 64-bit hash: the map key.
type Fingerprint = u64;

#[derive(Debug)]
struct Inner {
    config: TransactionConfig,
    clock: Clock,
    /// Keys the fingerprints, so that no client can aim two requests at one fingerprint.
    fingerprints: RandomState,
    /// Keys the digests that check a rebuilt response.
    digests: RandomState,
    transactions: DashMap<Fingerprint, ServerTransaction, BuildHasherDefault<Prehashed>>,
    /// Live entries; kept apart from `DashMap::len` (which locks every shard) so the cap is
    /// checked and reserved atomically.
    live: AtomicUsize,
    /// Entries in Completed, so that `live - completed` is the number in progress without
    /// taking the mutex.
    completed: AtomicUsize,
    /// Completed transactions dropped early to make room.
    evicted: AtomicU64,
    expiry: Mutex<Expiry>,
}

/// The map's hasher: fingerprints are already uniform keyed hashes, so it passes them on.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Where a transaction stands in the expiry queues: what its state and deadline imply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheduled {
    /// In `pending` under (deadline, fingerprint).
    Pending(Tick),
    /// In `completed` (possibly behind stale entries) with this deadline.
    Completed(Tick),
    /// Terminated, or not in the table.
    Nowhere,
}

impl Scheduled {
    fn of(tx: &ServerTransaction) -> Self {
        match (tx.state(), tx.deadline()) {
            (State::Trying | State::Proceeding, Some(deadline)) => Self::Pending(deadline),
            (State::Completed, Some(deadline)) => Self::Completed(deadline),
            _ => Self::Nowhere,
        }
    }
}

/// Deadlines in order, in two queues.
///
/// `pending` holds the transactions in progress, ordered, and loses an entry as soon as its
/// transaction completes or goes: `now` comes from many tasks and is not monotonic across
/// them, and the entries are few unless the TU is slow. `completed` holds completed
/// transactions in the order of their final responses, which is also the order of their
/// deadlines (Timer J is one duration for all; tasks' `now`s disagree by microseconds): the
/// front is the oldest answer, the first to expire and the first to give way at the cap. It
/// is a FIFO of 16-byte entries, cleaned lazily: an entry whose transaction was forgotten,
/// replaced or evicted stays until it reaches the front, where `poll`, the eviction and
/// [`TransactionTable::next_deadline`] skip it. Such entries arise only from those rare events.
#[derive(Debug, Default)]
struct Expiry {
    pending: BTreeSet<(Tick, Fingerprint)>,
    completed: VecDeque<(Tick, Fingerprint)>,
}

impl Expiry {
    /// Pops up to `room` entries due at `now`, pending ones first.
    fn pop_due(&mut self, now: Tick, room: usize, due: &mut Vec<(Fingerprint, Scheduled)>) {
        while due.len() < room {
            match self.pending.first() {
                Some(&(deadline, fp)) if deadline <= now => {
                    self.pending.pop_first();
                    due.push((fp, Scheduled::Pending(deadline)));
                }
                _ => break,
            }
        }
        while due.len() < room {
            match self.completed.front() {
                Some(&(deadline, fp)) if deadline <= now => {
                    self.completed.pop_front();
                    due.push((fp, Scheduled::Completed(deadline)));
                }
                _ => break,
            }
        }
        // After a burst, give back what the queue no longer needs (it never shrinks itself).
        let (len, capacity) = (self.completed.len(), self.completed.capacity());
        if capacity > 4096 && len < capacity / 4 {
            self.completed.shrink_to(len * 2);
        }
    }
}

impl TransactionTable {
    /// An empty table.
    pub fn new(config: TransactionConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                clock: Clock::new(Instant::now()),
                fingerprints: RandomState::new(),
                digests: RandomState::new(),
                transactions: DashMap::default(),
                live: AtomicUsize::new(0),
                completed: AtomicUsize::new(0),
                evicted: AtomicU64::new(0),
                expiry: Mutex::new(Expiry::default()),
            }),
        }
    }

    /// The config the table was built with.
    pub fn config(&self) -> &TransactionConfig {
        &self.inner.config
    }

    /// A `request` with `key` arrived at `now` over a `reliable` (TCP/TLS) or unreliable (UDP)
    /// transport. A request whose transaction has ended (deadline reached but not yet polled)
    /// opens a new one, as RFC 3261 prescribes after termination. A new one that finds the
    /// table full takes the room of the oldest completed transaction (see the file header).
    ///
    /// `request` is the whole message as received: a response stored with
    /// [`Self::on_response_to`] is rebuilt from it. If it does not rebuild (the retransmission
    /// differs from the original where the response copied it), a completed transaction is
    /// replaced by a new one and the request is processed afresh.
    pub fn on_request(
        &self,
        key: &TransactionKey,
        request: &[u8],
        reliable: bool,
        admission: Admission,
        now: Instant,
    ) -> RequestDisposition {
        let (fp, now) = (self.fingerprint(key), self.inner.clock.tick(now));
        // Each round either opens the transaction or frees one completed slot; another task
        // may take that slot first, so a few rounds are allowed before giving up.
        for _ in 0..4 {
            match self.try_open(fp, request, reliable, admission, now) {
                Some(disposition) => return disposition,
                None if self.evict_oldest_completed() => {}
                None => break,
            }
        }
        RequestDisposition::Overloaded
    }

    /// Whether a new request of this kind may open a transaction, counting only transactions
    /// in progress (completed ones give way).
    pub fn admits(&self, admission: Admission) -> bool {
        let max = self.inner.config.max_transactions();
        let limit = match admission {
            Admission::Authenticated => max,
            Admission::Unauthenticated => max - max / 8,
        };
        self.in_progress() < limit
    }

    /// `None`: the key is new and the table is full.
    fn try_open(
        &self,
        fp: Fingerprint,
        request: &[u8],
        reliable: bool,
        admission: Admission,
        now: Tick,
    ) -> Option<RequestDisposition> {
        let config = &self.inner.config;
        Some(match self.inner.transactions.entry(fp) {
            Entry::Occupied(mut occupied) => {
                let tx = occupied.get_mut();
                let before = Scheduled::of(tx);
                let replay = match tx.on_retransmission(now) {
                    Retransmission::Absorb => return Some(RequestDisposition::Absorb),
                    Retransmission::Send(stored) => stored.rebuild(request, |b| self.digest(b)),
                    Retransmission::Terminated => None,
                };
                if let Some(bytes) = replay {
                    return Some(RequestDisposition::Retransmit(Bytes::from(bytes)));
                }
                if tx.state() == State::Proceeding {
                    // Not the request the TU is still answering: leave that one alone.
                    return Some(RequestDisposition::Absorb);
                }
                *tx = ServerTransaction::new(reliable, now, config);
                self.track(fp, before, Scheduled::of(tx));
                RequestDisposition::New
            }
            Entry::Vacant(vacant) => {
                if !self.admits(admission) {
                    return Some(RequestDisposition::Overloaded);
                }
                if !self.reserve() {
                    return None;
                }
                let tx = ServerTransaction::new(reliable, now, config);
                self.track(fp, Scheduled::Nowhere, Scheduled::of(&tx));
                vacant.insert(tx);
                RequestDisposition::New
            }
        })
    }

    /// Drops the completed transaction with the earliest Timer J, if any. Takes the expiry
    /// mutex and then a map shard, one after the other, like `poll`.
    fn evict_oldest_completed(&self) -> bool {
        loop {
            let Some((deadline, fp)) = self.expiry().completed.pop_front() else {
                return false;
            };
            if self.remove_if_still(fp, Scheduled::Completed(deadline)) {
                self.inner.evicted.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            // Replaced or removed meanwhile: try the next.
        }
    }

    /// The TU answers the transaction `key` with `response` (`status` 100..=699) at `now`,
    /// and the table keeps the response as it is: for a response relayed from elsewhere,
    /// whose bytes are not made from the request. See [`Self::on_response_to`].
    pub fn on_response(
        &self,
        key: &TransactionKey,
        response: Bytes,
        status: u16,
        now: Instant,
    ) -> Result<(), TransactionError> {
        self.respond(key, status, now, || StoredResponse::verbatim(&response))
    }

    /// The TU answers the transaction `key`, opened by `request`, with `response` (`status`
    /// 100..=699) at `now`. The response is kept as a template over `request` (see
    /// `compact.rs`): a fraction of its size when it copies the request, as every response
    /// sipward builds does.
    ///
    /// A provisional response moves it to Proceeding; a final one to Completed with Timer J
    /// scheduled, or, on a reliable transport, terminates it and frees the entry at once
    /// (nothing is kept then). `Ok` means the caller sends `response`; an error means it must
    /// not (see [`TransactionError`]).
    pub fn on_response_to(
        &self,
        key: &TransactionKey,
        request: &[u8],
        response: &[u8],
        status: u16,
        now: Instant,
    ) -> Result<(), TransactionError> {
        self.respond(key, status, now, || {
            StoredResponse::template(response, request, self.digest(response))
        })
    }

    fn respond(
        &self,
        key: &TransactionKey,
        status: u16,
        now: Instant,
        store: impl FnOnce() -> StoredResponse,
    ) -> Result<(), TransactionError> {
        let (fp, now) = (self.fingerprint(key), self.inner.clock.tick(now));
        let Entry::Occupied(mut occupied) = self.inner.transactions.entry(fp) else {
            return Err(TransactionError::UnknownTransaction);
        };
        let tx = occupied.get_mut();
        let before = Scheduled::of(tx);
        let result = tx.on_response(status, now, &self.inner.config, store);
        let after = Scheduled::of(tx);
        self.track(fp, before, after);
        if after == Scheduled::Nowhere {
            occupied.remove();
            self.release();
        }
        result
    }

    /// Ends the transaction `key` without keeping a response, because the TU answered it
    /// statelessly (RFC 3261 §8.2.7): a retransmission of the request is then processed afresh.
    /// Frees its slot at once. Returns whether the table held it.
    pub fn forget(&self, key: &TransactionKey) -> bool {
        let fp = self.fingerprint(key);
        let Some((_, tx)) = self.inner.transactions.remove(&fp) else {
            return false;
        };
        self.track(fp, Scheduled::of(&tx), Scheduled::Nowhere);
        self.release();
        true
    }

    /// Removes every transaction whose deadline is at or before `now`; returns how many.
    pub fn poll(&self, now: Instant) -> usize {
        let now = self.inner.clock.tick(now);
        let mut removed = 0;
        let mut due = Vec::with_capacity(POLL_BATCH);
        loop {
            self.expiry().pop_due(now, POLL_BATCH, &mut due);
            let batch_was_full = due.len() == POLL_BATCH;
            for (fp, scheduled) in due.drain(..) {
                // A transaction that moved on since the pop has a newer entry and stays.
                if self.remove_if_still(fp, scheduled) {
                    removed += 1;
                }
            }
            if !batch_was_full {
                return removed;
            }
        }
    }

    /// The earliest deadline in the table: when [`TransactionTable::poll`] next has work. Today
    /// the purge task polls at a fixed interval instead (expiry only frees memory; nothing is
    /// sent), so this serves tests and a future driver.
    ///
    /// `None` means the table has nothing scheduled; a driver may then sleep for
    /// [`TransactionConfig::timeout`] (64*T1): every deadline is set at least that far after the
    /// event that sets it, so no transaction created meanwhile can fall due earlier.
    pub fn next_deadline(&self) -> Option<Instant> {
        loop {
            let (pending, completed) = {
                let expiry = self.expiry();
                let pending = expiry.pending.first().map(|p| p.0);
                (pending, expiry.completed.front().copied())
            };
            // A stale front entry is dropped here, so that the answer is exact.
            if let Some((deadline, fp)) = completed {
                if !self.holds(fp, Scheduled::Completed(deadline)) {
                    let mut expiry = self.expiry();
                    if expiry.completed.front() == Some(&(deadline, fp)) {
                        expiry.completed.pop_front();
                    }
                    continue;
                }
            }
            let first = match (pending, completed.map(|c| c.0)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            return first.map(|tick| self.inner.clock.instant(tick));
        }
    }

    /// The state of the transaction `key`, if the table holds it (as of its last event).
    pub fn state(&self, key: &TransactionKey) -> Option<State> {
        self.inner
            .transactions
            .get(&self.fingerprint(key))
            .map(|tx| tx.state())
    }

    /// Live transactions, for a metrics gauge.
    pub fn len(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Transactions without a final response yet (Trying, Proceeding).
    pub fn in_progress(&self) -> usize {
        self.len()
            .saturating_sub(self.inner.completed.load(Ordering::Relaxed))
    }

    /// Completed transactions dropped before their Timer J to make room, since the start.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }

    /// Whether the table holds no transaction.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fingerprint(&self, key: &TransactionKey) -> Fingerprint {
        self.inner.fingerprints.hash_one(key)
    }

    fn digest(&self, response: &[u8]) -> u64 {
        self.inner.digests.hash_one(response)
    }

    /// Whether the table holds `fp` where `scheduled` says.
    fn holds(&self, fp: Fingerprint, scheduled: Scheduled) -> bool {
        self.inner
            .transactions
            .get(&fp)
            .is_some_and(|tx| Scheduled::of(&tx) == scheduled)
    }

    /// Removes `fp` if it is still where a popped queue entry said; the entry is already gone.
    fn remove_if_still(&self, fp: Fingerprint, scheduled: Scheduled) -> bool {
        let gone = self
            .inner
            .transactions
            .remove_if(&fp, |_, tx| Scheduled::of(tx) == scheduled);
        if gone.is_some() {
            if let Scheduled::Completed(_) = scheduled {
                self.inner.completed.fetch_sub(1, Ordering::Relaxed);
            }
            self.release();
        }
        gone.is_some()
    }

    /// Moves a transaction's queue entries from `before` to `after`. Called with its shard
    /// locked (or after removing it); takes the expiry mutex inside (the only nesting order).
    fn track(&self, fp: Fingerprint, before: Scheduled, after: Scheduled) {
        if before == after {
            return;
        }
        if let Scheduled::Completed(_) = before {
            self.inner.completed.fetch_sub(1, Ordering::Relaxed);
        }
        if let Scheduled::Completed(_) = after {
            self.inner.completed.fetch_add(1, Ordering::Relaxed);
        }
        let mut expiry = self.expiry();
        if let Scheduled::Pending(deadline) = before {
            expiry.pending.remove(&(deadline, fp));
        }
        match after {
            Scheduled::Pending(deadline) => {
                expiry.pending.insert((deadline, fp));
            }
            Scheduled::Completed(deadline) => expiry.completed.push_back((deadline, fp)),
            Scheduled::Nowhere => {}
        }
    }

    /// Claims room for one more transaction, or reports the table full.
    fn reserve(&self) -> bool {
        let max = self.inner.config.max_transactions();
        self.inner
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                (live < max).then_some(live + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.inner.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// The expiry queue; a poisoned mutex is still usable because no code path here can leave
    /// the queue half-updated.
    fn expiry(&self) -> MutexGuard<'_, Expiry> {
        self.inner
            .expiry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
