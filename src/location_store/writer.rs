//! The writer: one thread that owns the [`LocationStore`], fed by a bounded queue, with
//! group commit.
//!
//! The location service hands it changes (as its `registrar::Journal`) while an AoR is
//! locked; that only pushes onto the queue under a mutex. The thread takes everything queued
//! at once and writes it as one transaction, then completes the acks of the REGISTERs in it
//! (their 200 OK leaves then, through the deferred-reply seam). While one transaction is
//! being written and fsync'd, the next batch gathers, so the fsync cost is shared by every
//! REGISTER of a batch and the batch grows with the load.
//!
//! Bounds: at most `queue` REGISTERs wait (reserved or queued); one more is refused
//! ([`Journal::reserve`] false → 503 with `Retry-After`). Removals are never refused: each
//! removes a binding that exists, so they are bounded by the bindings held (and they are how
//! revocations reach the disk). Worst case memory: `queue` REGISTERs' records (at most 8 KiB
//! of text each) plus one removal per stored binding.
//!
//! The commit interval: a transaction starts at most once per `commit_interval` (10 ms by
//! default). One that would start sooner waits for the rest of the interval, gathering what
//! arrives meanwhile, unless half the queue is taken or the writer is stopping. So at a few
//! thousand REGISTERs per second a batch holds tens of them instead of one or two, and the
//! transaction's fixed cost (an fsync, the writer's wake-up, SQLite's commit) is shared:
//! that fixed cost, not the per-row work, is what made a durable REGISTER cost twice an
//! in-memory one at low rates (benches/RESULTS.md, "Durable registrations"). It adds at most
//! the interval to a REGISTER's answer when the writer is busy and nothing when it is idle
//! (the first REGISTER after a quiet interval is written at once). Zero turns it off.
//!
//! Between batches, every [`PURGE_EVERY`], it deletes bindings that expired on disk more than
//! [`PURGE_GRACE`] ago, [`PURGE_BATCH`] rows per transaction (the grace keeps a wall clock
//! jump from deleting a row the location service still holds; such a row is removed by the
//! location service's own purge instead). SQLite looks at [`super::PURGE_SCAN`] rows per
//! round (it keeps no index on the expiry), so a round that deletes fewer than
//! [`PURGE_BATCH`] may leave expired rows for the next rounds.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use super::{LocationStore, WallClock};
use crate::registrar::{Ack, BindingChange, Journal};

/// How often expired rows are purged on disk.
pub const PURGE_EVERY: Duration = Duration::from_secs(10);
/// Rows expired for less than this stay (see the module doc).
pub const PURGE_GRACE: Duration = Duration::from_secs(300);
/// Rows deleted per purge transaction.
pub const PURGE_BATCH: usize = 1000;

/// The writer's knobs.
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    /// Most REGISTERs waiting for the disk (`registrar.store_queue`).
    pub queue: usize,
    /// The least time between the starts of two transactions
    /// (`registrar.store_commit_interval_ms`; see the module doc).
    pub commit_interval: Duration,
}

/// The store's metrics, registered in the app's registry.
#[derive(Clone)]
pub struct StoreMetrics {
    pub bytes: IntGauge,
    pub queue_depth: IntGauge,
    /// Changesets (one per REGISTER or removal) per transaction.
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub commit_failures: IntCounter,
    /// REGISTERs refused because the queue was full.
    pub refused: IntCounter,
}

impl StoreMetrics {
    pub fn new(registry: &Registry) -> StoreMetrics {
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("static metric definition");
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        StoreMetrics {
            bytes: gauge(super::STORE_BYTES, "Bytes of the location store on disk"),
            queue_depth: gauge(
                super::QUEUE_DEPTH,
                "Changesets waiting for the location store's writer",
            ),
            batch_size: histogram(
                super::BATCH_SIZE,
                "Changesets (REGISTERs and removals) per location store transaction",
                vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
                ],
            ),
            commit_seconds: histogram(
                super::COMMIT_SECONDS,
                "Time to write and fsync one location store transaction",
                vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ],
            ),
            commit_failures: counter(
                super::COMMIT_FAILURES,
                "Location store transactions that failed (their REGISTERs got 503 with Retry-After)",
            ),
            refused: counter(
                super::REFUSED,
                "REGISTERs refused with 503 because the location store's queue was full",
            ),
        }
    }
}

struct Entry {
    changes: Vec<BindingChange>,
    /// A REGISTER's: completes after the commit.
    ack: Option<Ack>,
}

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    /// REGISTERs reserved or queued, against the capacity.
    registers: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    capacity: usize,
    commit_interval: Duration,
    metrics: StoreMetrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every update leaves the queue consistent: a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, entry: Entry) {
        let (depth, wake) = {
            let mut q = self.lock();
            q.entries.push(entry);
            // The writer waits for a first entry, or gathers until its interval is over or
            // half the queue is taken: only those two need a wake-up, not every entry (a
            // wake-up per REGISTER is a futex call on the receive thread and a context
            // switch on the writer's).
            let wake = q.entries.len() == 1 || q.registers * 2 >= self.capacity;
            (q.entries.len(), wake)
        };
        self.metrics.queue_depth.set(depth as i64);
        if wake {
            self.wake.notify_one();
        }
    }
}

/// The handle: the location service's journal, and how the app stops the thread.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<Box<dyn LocationStore>>>>,
}

impl Writer {
    /// Starts the writer thread over `store` (already loaded from).
    pub fn start(
        store: Box<dyn LocationStore>,
        config: WriterConfig,
        metrics: StoreMetrics,
    ) -> std::io::Result<Arc<Writer>> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            capacity: config.queue.max(1),
            commit_interval: config.commit_interval,
            metrics,
        });
        shared.metrics.bytes.set(store.size_bytes() as i64);
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("location-store".into())
                .spawn(move || run(store, &shared))?
        };
        Ok(Arc::new(Writer {
            shared,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Stops the writer once everything queued so far is written, and waits for it; returns
    /// the store. Blocking: call it from a blocking context after the receive threads
    /// stopped. `None` when already stopped (or the thread panicked).
    pub fn stop(&self) -> Option<Box<dyn LocationStore>> {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        thread.join().ok()
    }
}

impl Writer {
    #[cfg(test)]
    pub(super) fn shared_depth_for_tests(&self) -> usize {
        self.shared.lock().entries.len()
    }
}

impl Journal for Writer {
    fn reserve(&self) -> bool {
        let mut q = self.shared.lock();
        if q.registers >= self.shared.capacity {
            drop(q);
            self.shared.metrics.refused.inc();
            return false;
        }
        q.registers += 1;
        true
    }

    fn append_reserved(&self, changes: Vec<BindingChange>, ack: Ack) {
        self.shared.push(Entry {
            changes,
            ack: Some(ack),
        });
    }

    fn append(&self, changes: Vec<BindingChange>) {
        if !changes.is_empty() {
            self.shared.push(Entry { changes, ack: None });
        }
    }
}

/// The thread: take everything queued, write it as one transaction, complete the acks;
/// purge expired rows between batches; after `stop`, drain and return.
fn run(mut store: Box<dyn LocationStore>, shared: &Shared) -> Box<dyn LocationStore> {
    let mut last_purge = Instant::now();
    let mut last_size = Instant::now();
    // When the last transaction started; the next starts `commit_interval` later at the
    // earliest.
    let mut last_commit: Option<Instant> = None;
    loop {
        let (batch, closed) = {
            let mut q = shared.lock();
            while q.entries.is_empty() && !q.closed {
                let (guard, wait) = shared
                    .wake
                    .wait_timeout(q, PURGE_EVERY)
                    .unwrap_or_else(PoisonError::into_inner);
                q = guard;
                if wait.timed_out() {
                    break;
                }
            }
            if let Some(not_before) = last_commit.map(|at| at + shared.commit_interval) {
                // Gather until the interval is over, half the queue is taken, or stop.
                loop {
                    let now = Instant::now();
                    if q.entries.is_empty()
                        || q.closed
                        || now >= not_before
                        || q.registers * 2 >= shared.capacity
                    {
                        break;
                    }
                    q = shared
                        .wake
                        .wait_timeout(q, not_before - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
            let batch = std::mem::take(&mut q.entries);
            let registers = batch.iter().filter(|e| e.ack.is_some()).count();
            q.registers = q.registers.saturating_sub(registers);
            (batch, q.closed)
        };
        shared.metrics.queue_depth.set(0);
        if batch.is_empty() {
            if closed {
                shared.metrics.bytes.set(store.size_bytes() as i64);
                return store;
            }
        } else {
            last_commit = Some(Instant::now());
            commit(&mut *store, batch, &shared.metrics);
        }
        if last_purge.elapsed() >= PURGE_EVERY {
            purge(&mut *store, shared);
            last_purge = Instant::now();
        }
        if last_size.elapsed() >= Duration::from_secs(1) {
            shared.metrics.bytes.set(store.size_bytes() as i64);
            last_size = Instant::now();
        }
    }
}

fn commit(store: &mut dyn LocationStore, batch: Vec<Entry>, metrics: &StoreMetrics) {
    let mut changes = Vec::with_capacity(batch.len());
    let mut acks = Vec::with_capacity(batch.len());
    metrics.batch_size.observe(batch.len() as f64);
    for entry in batch {
        changes.extend(entry.changes);
        acks.extend(entry.ack);
    }
    let started = Instant::now();
    let result = store.commit(&changes, &WallClock::now());
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics.commit_failures.inc();
        tracing::error!(error = %e, changes = changes.len(), "location store: a transaction failed; its REGISTERs get 500");
    }
    let durable = result.is_ok();
    for ack in acks {
        ack.complete(durable);
    }
}

/// Deletes rows expired on disk for longer than [`PURGE_GRACE`], in batches; stops early
/// when changes are waiting (they go first; the rest waits for the next round).
fn purge(store: &mut dyn LocationStore, shared: &Shared) {
    let clock = WallClock::now();
    let before = clock
        .now_ms()
        .saturating_sub(PURGE_GRACE.as_millis() as u64);
    let mut total = 0;
    loop {
        match store.purge_expired(before, PURGE_BATCH) {
            Ok(n) => {
                total += n;
                if n < PURGE_BATCH || !shared.lock().entries.is_empty() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "location store: purging expired rows failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::debug!(purged = total, "location store: expired rows purged");
    }
}
