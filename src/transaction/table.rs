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

    /// The earliest deadline in the table, for the driver task to sleep until.
    ///
    /// `None` means the table has nothing scheduled; the driver may then sleep for
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
mod tests {
    use std::time::Duration;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const NANO: Duration = Duration::from_nanos(1);
    const UDP: bool = false;
    const TCP: bool = true;
    const AUTH: Admission = Admission::Authenticated;
    const FIRST: Admission = Admission::Unauthenticated;

    fn key(branch: &str, method: &str) -> TransactionKey {
        TransactionKey::rfc3261(branch, "pc33.example.com", method).expect("valid key")
    }

    fn table() -> TransactionTable {
        TransactionTable::new(TransactionConfig::default())
    }

    fn ok() -> Bytes {
        Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n")
    }

    #[test]
    fn new_then_retransmission_absorbed_in_trying() {
        let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
        assert_eq!(
            table.on_request(k.clone(), UDP, AUTH, t0),
            RequestDisposition::New
        );
        assert_eq!(
            table.on_request(k.clone(), UDP, AUTH, t0 + SECOND),
            RequestDisposition::Absorb
        );
        assert_eq!(table.state(&k), Some(State::Trying));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn provisional_then_final_response_are_replayed() {
        let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
        table.on_request(k.clone(), UDP, AUTH, t0);
        let trying = Bytes::from_static(b"SIP/2.0 100 Trying\r\n\r\n");
        assert_eq!(table.on_response(&k, trying.clone(), 100, t0), Ok(()));
        assert_eq!(
            table.on_request(k.clone(), UDP, AUTH, t0 + SECOND),
            RequestDisposition::Retransmit(trying)
        );
        assert_eq!(table.on_response(&k, ok(), 200, t0 + SECOND), Ok(()));
        for _ in 0..2 {
            assert_eq!(
                table.on_request(k.clone(), UDP, AUTH, t0 + 2 * SECOND),
                RequestDisposition::Retransmit(ok())
            );
        }
        assert_eq!(
            table.on_response(&k, ok(), 200, t0 + 2 * SECOND),
            Err(TransactionError::AlreadyCompleted)
        );
    }

    #[test]
    fn timer_j_expires_at_exactly_32_seconds_on_udp() {
        let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
        table.on_request(k.clone(), UDP, AUTH, t0);
        let answered = t0 + 5 * SECOND;
        assert_eq!(table.on_response(&k, ok(), 200, answered), Ok(()));
        assert_eq!(table.next_deadline(), Some(answered + 32 * SECOND));

        assert_eq!(table.poll(answered + 32 * SECOND - NANO), 0);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.on_request(k.clone(), UDP, AUTH, answered + 32 * SECOND - NANO),
            RequestDisposition::Retransmit(ok())
        );

        assert_eq!(table.poll(answered + 32 * SECOND), 1);
        assert!(table.is_empty());
        assert_eq!(table.next_deadline(), None);
        assert_eq!(table.state(&k), None);
    }

    #[test]
    fn reliable_final_response_frees_the_entry_at_once() {
        let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
        assert_eq!(
            table.on_request(k.clone(), TCP, AUTH, t0),
            RequestDisposition::New
        );
        assert_eq!(table.on_response(&k, ok(), 200, t0), Ok(()));
        assert!(table.is_empty());
        assert_eq!(table.next_deadline(), None);
        assert_eq!(table.poll(t0 + 64 * SECOND), 0);
    }

    #[test]
    fn reliable_provisional_keeps_the_entry() {
        let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
        table.on_request(k.clone(), TCP, AUTH, t0);
        assert_eq!(table.on_response(&k, Bytes::new(), 100, t0), Ok(()));
        assert_eq!(table.state(&k), Some(State::Proceeding));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn trying_without_answer_times_out_after_64_t1() {
        let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
        table.on_request(k.clone(), UDP, AUTH, t0);
        assert_eq!(table.next_deadline(), Some(t0 + 32 * SECOND));
        assert_eq!(table.poll(t0 + 32 * SECOND - NANO), 0);
        assert_eq!(table.poll(t0 + 32 * SECOND), 1);
        assert!(table.is_empty());
        assert_eq!(
            table.on_response(&k, ok(), 200, t0 + 33 * SECOND),
            Err(TransactionError::UnknownTransaction)
        );
    }

    #[test]
    fn expired_but_unpolled_transaction_behaves_as_terminated() {
        let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
        table.on_request(k.clone(), UDP, AUTH, t0);
        // The hung TU answers after 64*T1, before the driver polled: not sent, entry freed.
        assert_eq!(
            table.on_response(&k, ok(), 200, t0 + 40 * SECOND),
            Err(TransactionError::UnknownTransaction)
        );
        assert!(table.is_empty());
        assert_eq!(table.next_deadline(), None);

        // A request arriving after Timer J but before the poll opens a fresh transaction.
        table.on_request(k.clone(), UDP, AUTH, t0);
        table.on_response(&k, ok(), 200, t0).expect("answered");
        assert_eq!(
            table.on_request(k.clone(), UDP, AUTH, t0 + 32 * SECOND),
            RequestDisposition::New
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table.next_deadline(), Some(t0 + 64 * SECOND));
        // The stale Timer J entry was replaced, so polling at 32 s removes nothing.
        assert_eq!(table.poll(t0 + 32 * SECOND), 0);
        assert_eq!(table.poll(t0 + 64 * SECOND), 1);
    }

    #[test]
    fn table_full_is_overloaded_until_room_frees() {
        let config = TransactionConfig::new(Duration::from_millis(500), 2).expect("config");
        let (table, t0) = (TransactionTable::new(config), Instant::now());
        assert_eq!(
            table.on_request(key("z9hG4bK1", "REGISTER"), UDP, AUTH, t0),
            RequestDisposition::New
        );
        assert_eq!(
            table.on_request(key("z9hG4bK2", "REGISTER"), TCP, AUTH, t0),
            RequestDisposition::New
        );
        assert_eq!(
            table.on_request(key("z9hG4bK3", "REGISTER"), UDP, AUTH, t0),
            RequestDisposition::Overloaded
        );
        // Retransmissions of known transactions are still served when full.
        assert_eq!(
            table.on_request(key("z9hG4bK1", "REGISTER"), UDP, AUTH, t0),
            RequestDisposition::Absorb
        );
        assert_eq!(table.len(), 2);
        table
            .on_response(&key("z9hG4bK2", "REGISTER"), ok(), 200, t0)
            .expect("answered");
        assert_eq!(
            table.on_request(key("z9hG4bK3", "REGISTER"), UDP, AUTH, t0),
            RequestDisposition::New
        );
    }

    #[test]
    fn a_full_table_gives_way_oldest_completed_first() {
        let config = TransactionConfig::new(Duration::from_millis(500), 3).expect("config");
        let (table, t0) = (TransactionTable::new(config), Instant::now());
        let (k1, k2, k3) = (
            key("z9hG4bK1", "REGISTER"),
            key("z9hG4bK2", "REGISTER"),
            key("z9hG4bK3", "REGISTER"),
        );
        for (k, at) in [(&k1, t0), (&k2, t0 + SECOND)] {
            assert_eq!(
                table.on_request(k.clone(), UDP, AUTH, at),
                RequestDisposition::New
            );
            table.on_response(k, ok(), 200, at).expect("answered");
        }
        assert_eq!(
            table.on_request(k3.clone(), UDP, AUTH, t0),
            RequestDisposition::New
        );
        assert_eq!((table.len(), table.in_progress()), (3, 1));
        // Full: a new request, even one without credentials, takes k1's room (the oldest
        // answer), not k2's, and the transaction in progress stays.
        let k4 = key("z9hG4bK4", "REGISTER");
        assert_eq!(
            table.on_request(k4.clone(), UDP, FIRST, t0 + 2 * SECOND),
            RequestDisposition::New
        );
        assert_eq!(table.state(&k1), None);
        assert_eq!(table.state(&k2), Some(State::Completed));
        assert_eq!(table.state(&k3), Some(State::Trying));
        assert_eq!((table.len(), table.evicted()), (3, 1));
        // k1's retransmission is processed afresh, in k2's room.
        assert_eq!(
            table.on_request(k1.clone(), UDP, AUTH, t0 + 3 * SECOND),
            RequestDisposition::New
        );
        assert_eq!(table.state(&k2), None);
        // Nothing completed is left: refused, until a final response or a poll frees room.
        let k5 = key("z9hG4bK5", "REGISTER");
        assert_eq!(
            table.on_request(k5.clone(), UDP, AUTH, t0),
            RequestDisposition::Overloaded
        );
        table
            .on_response(&k3, ok(), 200, t0 + 3 * SECOND)
            .expect("answered");
        assert_eq!(table.on_request(k5, UDP, AUTH, t0), RequestDisposition::New);
        // The queues still account for every entry: all expire on time.
        assert_eq!(table.poll(t0 + 64 * SECOND), 3);
        assert!(table.is_empty());
        assert_eq!(table.in_progress(), 0);
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn requests_without_credentials_are_shed_first() {
        let config = TransactionConfig::new(Duration::from_millis(500), 16).expect("config");
        let (table, t0) = (TransactionTable::new(config), Instant::now());
        for i in 0..14 {
            let k = key(&format!("z9hG4bK{i}"), "INVITE");
            assert_eq!(table.on_request(k, UDP, FIRST, t0), RequestDisposition::New);
        }
        // 14 of 16 in progress: the last eighth is kept for requests that can complete.
        assert_eq!(
            table.on_request(key("z9hG4bKx", "INVITE"), UDP, FIRST, t0),
            RequestDisposition::Overloaded
        );
        assert!(!table.admits(FIRST) && table.admits(AUTH));
        for i in 14..16 {
            let k = key(&format!("z9hG4bK{i}"), "REGISTER");
            assert_eq!(table.on_request(k, UDP, AUTH, t0), RequestDisposition::New);
        }
        assert_eq!(
            table.on_request(key("z9hG4bKy", "REGISTER"), UDP, AUTH, t0),
            RequestDisposition::Overloaded
        );
        // Completed transactions do not count: once two are answered, both kinds get in again.
        for i in 0..3 {
            let k = key(&format!("z9hG4bK{i}"), "INVITE");
            table.on_response(&k, ok(), 486, t0).expect("answered");
        }
        assert_eq!(table.in_progress(), 13);
        assert_eq!(
            table.on_request(key("z9hG4bKx", "INVITE"), UDP, FIRST, t0),
            RequestDisposition::New
        );
        assert_eq!(table.evicted(), 1);
    }

    #[test]
    fn cancel_and_register_with_same_branch_are_separate_transactions() {
        let (table, t0) = (table(), Instant::now());
        let register = key("z9hG4bK1", "REGISTER");
        let cancel = key("z9hG4bK1", "CANCEL");
        assert_eq!(
            table.on_request(register.clone(), UDP, AUTH, t0),
            RequestDisposition::New
        );
        assert_eq!(
            table.on_request(cancel.clone(), UDP, AUTH, t0),
            RequestDisposition::New
        );
        table.on_response(&cancel, ok(), 200, t0).expect("answered");
        assert_eq!(table.state(&register), Some(State::Trying));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn poll_drains_more_than_one_batch_in_deadline_order() {
        let (table, t0) = (table(), Instant::now());
        let count = POLL_BATCH * 2 + 7;
        for i in 0..count {
            let k = key(&format!("z9hG4bK{i}"), "REGISTER");
            // Arrival times are deliberately out of order, as from concurrent tasks.
            let at = t0 + Duration::from_millis((count - i) as u64);
            assert_eq!(table.on_request(k, UDP, AUTH, at), RequestDisposition::New);
        }
        assert_eq!(
            table.next_deadline(),
            Some(t0 + 32 * SECOND + Duration::from_millis(1))
        );
        assert_eq!(table.poll(t0 + 32 * SECOND + Duration::from_millis(10)), 10);
        assert_eq!(table.poll(t0 + 33 * SECOND), count - 10);
        assert!(table.is_empty());
    }

    #[test]
    fn concurrent_first_copies_open_exactly_one_transaction() {
        let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (table, k) = (table.clone(), k.clone());
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| {
                            table.on_request(k.clone(), UDP, AUTH, t0) == RequestDisposition::New
                        })
                        .count()
                })
            })
            .collect();
        let opened: usize = handles
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .sum();
        assert_eq!(opened, 1);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn forget_frees_the_slot_and_its_deadline() {
        let table = TransactionTable::new(TransactionConfig::new(SECOND / 2, 1).unwrap());
        let (t0, k) = (Instant::now(), key("z9hG4bKforget", "REGISTER"));
        assert_eq!(
            table.on_request(k.clone(), UDP, AUTH, t0),
            RequestDisposition::New
        );
        assert!(table.forget(&k));
        assert!(!table.forget(&k));
        assert_eq!(table.len(), 0);
        assert_eq!(table.next_deadline(), None);
        // The one slot is free again, and a retransmission opens a new transaction.
        assert_eq!(
            table.on_request(k, UDP, AUTH, t0 + SECOND),
            RequestDisposition::New
        );
    }
}
