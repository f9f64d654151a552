//! The table of live non-INVITE server transactions that every receive task shares.
//!
//! This file owns the map from [`TransactionKey`] to [`ServerTransaction`], the cap on its size
//! and what gives way at the cap, and the ordered expiry queues that the one driver task drains
//! with [`TransactionTable::poll`].
//!
//! At the cap (issue 13), room is made before anything is refused: a completed transaction
//! only waits to answer a retransmission with its final response, so the oldest one is
//! dropped for a new request (a retransmission arriving later is processed afresh; for an
//! authenticated REGISTER that is one `stale=true` round trip). Only when every transaction is
//! still in progress are new requests refused, and those without credentials first: they
//! cost a full round trip and at best earn a challenge, so they may not take the last eighth
//! of the table ([`Admission`]).
//! It must not do I/O, sleep, spawn or read the clock: callers pass `now` and send whatever bytes
//! it hands back. No lock is held beyond one map shard plus, briefly and always in that order,
//! the expiry queue's mutex; `poll` takes them one after the other, never nested, so there is no
//! lock-order inversion, and nothing here awaits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{
    Retransmission, ServerTransaction, State, TransactionConfig, TransactionError, TransactionKey,
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
    /// [`TransactionTable::on_response`].
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

#[derive(Debug)]
struct Inner {
    config: TransactionConfig,
    transactions: DashMap<TransactionKey, Slot>,
    /// Live entries; kept apart from `DashMap::len` (which locks every shard) so the cap is
    /// checked and reserved atomically.
    live: AtomicUsize,
    /// Entries in the `completed` queue (maintained under the expiry mutex), so that
    /// `live - completed` is the number in progress without taking the mutex.
    completed: AtomicUsize,
    /// Completed transactions dropped early to make room.
    evicted: AtomicU64,
    expiry: Mutex<Expiry>,
}

#[derive(Debug)]
struct Slot {
    transaction: ServerTransaction,
    /// The expiry queue entry that currently stands for this transaction's deadline.
    scheduled: Option<Scheduled>,
}

/// One expiry queue entry's identity. The generation makes entries with equal deadlines
/// distinct and lets `poll` tell a stale popped entry from the one the slot holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    deadline: Instant,
    generation: u64,
    /// Which queue holds it.
    completed: bool,
}

/// Deadlines in order, in two queues: transactions in progress, and completed ones (whose
/// deadline is Timer J after the final response, so the first is also the oldest answer and
/// the first to give way at the cap). `BTreeMap`s rather than FIFOs: `now` comes from many
/// tasks and is not monotonic across them, and eager removal on reschedule keeps the queues
/// exactly as large as the table. O(log n) per operation.
#[derive(Debug, Default)]
struct Expiry {
    pending: BTreeMap<Scheduled, TransactionKey>,
    completed: BTreeMap<Scheduled, TransactionKey>,
    next_generation: u64,
}

impl Expiry {
    fn schedule(&mut self, deadline: Instant, completed: bool, key: TransactionKey) -> Scheduled {
        let scheduled = Scheduled {
            deadline,
            generation: self.next_generation,
            completed,
        };
        self.next_generation = self.next_generation.wrapping_add(1);
        self.queue(completed).insert(scheduled, key);
        scheduled
    }

    fn queue(&mut self, completed: bool) -> &mut BTreeMap<Scheduled, TransactionKey> {
        if completed {
            &mut self.completed
        } else {
            &mut self.pending
        }
    }

    fn first_deadline(&self) -> Option<Instant> {
        let first =
            |q: &BTreeMap<Scheduled, TransactionKey>| q.first_key_value().map(|e| e.0.deadline);
        match (first(&self.pending), first(&self.completed)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Pops the earliest entry due at `now` from either queue.
    fn pop_due(&mut self, now: Instant) -> Option<(Scheduled, TransactionKey)> {
        let due = |q: &BTreeMap<Scheduled, TransactionKey>| {
            q.first_key_value()
                .map(|e| e.0.deadline)
                .filter(|d| *d <= now)
        };
        match (due(&self.pending), due(&self.completed)) {
            (Some(a), Some(b)) if b < a => self.completed.pop_first(),
            (Some(_), _) => self.pending.pop_first(),
            (None, Some(_)) => self.completed.pop_first(),
            (None, None) => None,
        }
    }
}

impl TransactionTable {
    /// An empty table.
    pub fn new(config: TransactionConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                transactions: DashMap::new(),
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

    /// A request with `key` arrived at `now` over a `reliable` (TCP/TLS) or unreliable (UDP)
    /// transport. A request whose transaction has ended (deadline reached but not yet polled)
    /// opens a new one, as RFC 3261 prescribes after termination. A new one that finds the
    /// table full takes the room of the oldest completed transaction (see the file header).
    pub fn on_request(
        &self,
        key: TransactionKey,
        reliable: bool,
        admission: Admission,
        now: Instant,
    ) -> RequestDisposition {
        // Each round either opens the transaction or frees one completed slot; another task
        // may take that slot first, so a few rounds are allowed before giving up.
        for _ in 0..4 {
            match self.try_open(&key, reliable, admission, now) {
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
        key: &TransactionKey,
        reliable: bool,
        admission: Admission,
        now: Instant,
    ) -> Option<RequestDisposition> {
        let config = &self.inner.config;
        Some(match self.inner.transactions.entry(key.clone()) {
            Entry::Occupied(mut occupied) => {
                let key = occupied.key().clone();
                let slot = occupied.get_mut();
                match slot.transaction.on_retransmission(now) {
                    Retransmission::Absorb => RequestDisposition::Absorb,
                    Retransmission::Send(response) => RequestDisposition::Retransmit(response),
                    Retransmission::Terminated => {
                        slot.transaction = ServerTransaction::new(reliable, now, config);
                        self.sync_expiry(&key, slot);
                        RequestDisposition::New
                    }
                }
            }
            Entry::Vacant(vacant) => {
                if !self.admits(admission) {
                    return Some(RequestDisposition::Overloaded);
                }
                if !self.reserve() {
                    return None;
                }
                let mut slot = Slot {
                    transaction: ServerTransaction::new(reliable, now, config),
                    scheduled: None,
                };
                self.sync_expiry(vacant.key(), &mut slot);
                vacant.insert(slot);
                RequestDisposition::New
            }
        })
    }

    /// Drops the completed transaction with the earliest Timer J, if any. Takes the expiry
    /// mutex and then a map shard, one after the other, like `poll`.
    fn evict_oldest_completed(&self) -> bool {
        loop {
            let Some((scheduled, key)) = self.expiry().completed.pop_first() else {
                return false;
            };
            self.inner.completed.fetch_sub(1, Ordering::Relaxed);
            let gone = self
                .inner
                .transactions
                .remove_if(&key, |_, slot| slot.scheduled == Some(scheduled));
            if gone.is_some() {
                self.release();
                self.inner.evicted.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            // Rescheduled or removed meanwhile: try the next.
        }
    }

    /// The TU answers the transaction `key` with `response` (`status` 100..=699) at `now`.
    ///
    /// A provisional response moves it to Proceeding; a final one to Completed with Timer J
    /// scheduled, or, on a reliable transport, terminates it and frees the entry at once. `Ok`
    /// means the caller sends `response`; an error means it must not (see
    /// [`TransactionError`]).
    pub fn on_response(
        &self,
        key: &TransactionKey,
        response: Bytes,
        status: u16,
        now: Instant,
    ) -> Result<(), TransactionError> {
        let Entry::Occupied(mut occupied) = self.inner.transactions.entry(key.clone()) else {
            return Err(TransactionError::UnknownTransaction);
        };
        let slot = occupied.get_mut();
        let result = slot.transaction.on_response(response, status, now);
        self.sync_expiry(key, slot);
        if slot.transaction.state() == State::Terminated {
            occupied.remove();
            self.release();
        }
        result
    }

    /// Ends the transaction `key` without keeping a response, because the TU answered it
    /// statelessly (RFC 3261 §8.2.7): a retransmission of the request is then processed afresh.
    /// Frees its slot at once. Returns whether the table held it.
    pub fn forget(&self, key: &TransactionKey) -> bool {
        let Some((_, slot)) = self.inner.transactions.remove(key) else {
            return false;
        };
        if let Some(scheduled) = slot.scheduled {
            self.unschedule(&mut self.expiry(), &scheduled);
        }
        self.release();
        true
    }

    /// Removes every transaction whose deadline is at or before `now`; returns how many.
    pub fn poll(&self, now: Instant) -> usize {
        let mut removed = 0;
        let mut due = Vec::with_capacity(POLL_BATCH);
        loop {
            {
                let mut expiry = self.expiry();
                while due.len() < POLL_BATCH {
                    let Some(entry) = expiry.pop_due(now) else {
                        break;
                    };
                    if entry.0.completed {
                        self.inner.completed.fetch_sub(1, Ordering::Relaxed);
                    }
                    due.push(entry);
                }
            }
            let batch_was_full = due.len() == POLL_BATCH;
            for (scheduled, key) in due.drain(..) {
                // A slot rescheduled since the pop holds a newer entry and stays.
                let gone = self
                    .inner
                    .transactions
                    .remove_if(&key, |_, slot| slot.scheduled == Some(scheduled));
                if gone.is_some() {
                    self.release();
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
        self.expiry().first_deadline()
    }

    /// The state of the transaction `key`, if the table holds it (as of its last event).
    pub fn state(&self, key: &TransactionKey) -> Option<State> {
        self.inner
            .transactions
            .get(key)
            .map(|slot| slot.transaction.state())
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

    /// Makes the expiry queue hold exactly the slot's current deadline. Called with the slot's
    /// shard locked; takes the expiry mutex inside it (the only nesting order in this file).
    fn sync_expiry(&self, key: &TransactionKey, slot: &mut Slot) {
        let wanted = slot.transaction.deadline();
        let completed = slot.transaction.state() == State::Completed;
        if slot.scheduled.map(|s| (s.deadline, s.completed)) == wanted.map(|d| (d, completed)) {
            return;
        }
        let mut expiry = self.expiry();
        if let Some(old) = slot.scheduled.take() {
            self.unschedule(&mut expiry, &old);
        }
        slot.scheduled = wanted.map(|deadline| {
            if completed {
                self.inner.completed.fetch_add(1, Ordering::Relaxed);
            }
            expiry.schedule(deadline, completed, key.clone())
        });
    }

    fn unschedule(&self, expiry: &mut Expiry, scheduled: &Scheduled) {
        if expiry
            .queue(scheduled.completed)
            .remove(scheduled)
            .is_some()
            && scheduled.completed
        {
            self.inner.completed.fetch_sub(1, Ordering::Relaxed);
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
