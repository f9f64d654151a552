//! What the location service tells a durable store, and how a REGISTER learns that its change
//! is on disk.
//!
//! The location service stays in memory and the source of truth while running; a
//! [`Journal`] (attached once with [`Location::attach_journal`](super::Location::attach_journal))
//! receives every applied change as [`BindingChange`]s, in the order they were applied: the
//! journal is called while the AoR's entry is still held, so two changes of one AoR can never
//! reach the store in the other order (a revoke's removal cannot be overtaken by the REGISTER
//! it removed). A REGISTER first reserves a place in the journal's bounded queue (before
//! anything is applied, so a full queue refuses the request with nothing changed) and gets an
//! [`Ack`] that completes once its change is durable. Removals (unregistration, revocation,
//! purge, closed connections) take no place: they are bounded by the bindings that exist.
//!
//! This module does no I/O and reads no clock: a [`BindingRecord`] carries the deadline as an
//! `Instant`; the store converts it to wall-clock time.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::binding::{Aor, Binding, Transport};

/// One binding as a durable store keeps it: what routing to it needs after a restart. The
/// flow (a connection of this process) is not part of it: a restored binding has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingRecord {
    /// Unique across restarts: a restored location service continues above the largest id.
    pub id: u64,
    pub aor: Aor,
    /// The Contact URI as received.
    pub uri: String,
    /// The RFC 3261 §19.1.4 comparison key; `None` when it equals `uri`.
    pub uri_key: Option<String>,
    pub params: String,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    pub q: Option<u16>,
    pub call_id: String,
    pub cseq: u32,
    pub user_agent: Option<String>,
    /// The device credential that made or last refreshed the binding.
    pub credential: Option<String>,
    pub path: Vec<String>,
    pub source: SocketAddr,
    pub transport: Transport,
    /// Seconds granted by the REGISTER that set `deadline`.
    pub granted: u32,
    pub deadline: Instant,
}

impl BindingRecord {
    pub(super) fn of(aor: &Aor, b: &Binding) -> BindingRecord {
        let uri = b.text.uri();
        let uri_key = b.text.uri_key();
        BindingRecord {
            id: b.id.0,
            aor: aor.clone(),
            uri: uri.to_owned(),
            uri_key: (uri_key != uri).then(|| uri_key.to_owned()),
            params: b.text.params().to_owned(),
            instance: b.text.instance().map(str::to_owned),
            reg_id: b.reg_id,
            q: b.q,
            call_id: b.text.call_id().to_owned(),
            cseq: b.cseq,
            user_agent: b.text.user_agent().map(str::to_owned),
            credential: b.text.credential().map(str::to_owned),
            path: b
                .path
                .as_deref()
                .map_or_else(Vec::new, |p| p.iter().map(|s| String::from(&**s)).collect()),
            source: b.source,
            transport: b.transport,
            granted: b.granted,
            deadline: b.deadline,
        }
    }
}

/// One change of the location service, as applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingChange {
    /// A new binding, or one whose contact, Path, credential or transport changed.
    Put(Box<BindingRecord>),
    /// A re-REGISTER that changed only the Call-ID, the CSeq, the source address and the
    /// expiry of an existing binding (a phone that restarted its Call-ID, or one behind a NAT
    /// that moved it to another port). The whole binding comes along, so a store may write
    /// it as a [`BindingChange::Put`]; SQLite writes only those columns (and the whole row
    /// if it does not have it).
    Renew(Box<BindingRecord>),
    /// A refresh that changed only the CSeq and the expiry (the common REGISTER): written as
    /// a compact update.
    Refresh {
        id: u64,
        cseq: u32,
        granted: u32,
        deadline: Instant,
    },
    /// The binding is gone (Expires: 0, `*`, revoke, purge, closed connection).
    Remove { id: u64 },
}

impl BindingChange {
    /// The change that turns `old` (same id) into `new`.
    pub(super) fn update(aor: &Aor, old: &Binding, new: &Binding) -> BindingChange {
        let same_text = old.text.uri() == new.text.uri()
            && old.text.uri_key() == new.text.uri_key()
            && old.text.params() == new.text.params()
            && old.text.instance() == new.text.instance()
            && old.text.user_agent() == new.text.user_agent()
            && old.text.credential() == new.text.credential();
        let same_contact = same_text
            && old.path == new.path
            && (old.transport, old.q, old.reg_id) == (new.transport, new.q, new.reg_id);
        if same_contact && old.source == new.source && old.text.call_id() == new.text.call_id() {
            BindingChange::Refresh {
                id: new.id.0,
                cseq: new.cseq,
                granted: new.granted,
                deadline: new.deadline,
            }
        } else if same_contact {
            BindingChange::Renew(Box::new(BindingRecord::of(aor, new)))
        } else {
            BindingChange::Put(Box::new(BindingRecord::of(aor, new)))
        }
    }
}

/// Where the location service sends its changes (the durable store's writer). Called while
/// an AoR entry is held: it must only queue, never wait for the disk.
pub trait Journal: Send + Sync + 'static {
    /// Takes one place in the bounded queue for a REGISTER's change; false when full (the
    /// REGISTER is then refused with nothing applied).
    fn reserve(&self) -> bool;
    /// Queues a REGISTER's changes in the place [`Journal::reserve`] took; the ack completes
    /// once they are durable (or failed).
    fn append_reserved(&self, changes: Vec<BindingChange>, ack: Ack);
    /// Queues removals, which take no place and are never refused.
    fn append(&self, changes: Vec<BindingChange>);
}

/// The bindings other sipward nodes made for an AoR, read from the store they share. Called
/// on a routing lookup, outside every lock of the location service; blocking, bounded by
/// the store's response timeout. Errors read as "none" (the local bindings still route).
pub trait SharedBindings: Send + Sync + 'static {
    fn others(&self, aor: &Aor) -> Vec<BindingRecord>;
    /// Deletes the bindings other nodes made for `aor` with the device credential `name`
    /// (revoked): gone everywhere at once, even where the node that made them is down.
    /// Returns how many.
    fn remove_credential(&self, aor: &Aor, name: &str) -> usize;
}

impl std::fmt::Debug for dyn SharedBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedBindings")
    }
}

type Callback = Box<dyn FnOnce(bool) + Send>;

enum AckState {
    Pending {
        callback: Option<Callback>,
        /// A thread sleeps in [`Ack::wait`]: only then does completing wake the condvar (a
        /// futex call per REGISTER on the writer's thread otherwise).
        waiting: bool,
    },
    Done(bool),
}

/// Completes once a REGISTER's change is durable (`true`) or could not be written
/// (`false`). Whoever answers the REGISTER attaches what to do then with
/// [`Ack::on_complete`]; it runs on the thread that completes (the store's writer), or at
/// once if that already happened.
#[derive(Clone)]
pub struct Ack {
    inner: Arc<(Mutex<AckState>, Condvar)>,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

impl Default for Ack {
    fn default() -> Self {
        Ack {
            inner: Arc::new((
                Mutex::new(AckState::Pending {
                    callback: None,
                    waiting: false,
                }),
                Condvar::new(),
            )),
        }
    }
}

impl Ack {
    fn state(&self) -> MutexGuard<'_, AckState> {
        // Each operation replaces the state whole: a poisoned lock is still consistent.
        self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the outcome and runs the attached callback, if any (outside the lock).
    pub fn complete(&self, durable: bool) {
        let (callback, waiting) = {
            let mut state = self.state();
            match std::mem::replace(&mut *state, AckState::Done(durable)) {
                AckState::Pending { callback, waiting } => (callback, waiting),
                AckState::Done(first) => {
                    *state = AckState::Done(first);
                    (None, false)
                }
            }
        };
        if waiting {
            self.inner.1.notify_all();
        }
        if let Some(callback) = callback {
            callback(durable);
        }
    }

    /// Runs `f(durable)` once the ack completes: now, if it already has.
    pub fn on_complete(&self, f: impl FnOnce(bool) + Send + 'static) {
        let done = {
            let mut state = self.state();
            match &mut *state {
                AckState::Done(durable) => Some(*durable),
                AckState::Pending { callback, .. } => {
                    *callback = Some(Box::new(f));
                    return;
                }
            }
        };
        if let Some(durable) = done {
            f(durable);
        }
    }

    /// Blocks until the ack completes. Only for callers that cannot answer later.
    pub fn wait(&self) -> bool {
        let mut state = self.state();
        loop {
            match &mut *state {
                AckState::Done(durable) => return *durable,
                AckState::Pending { waiting, .. } => *waiting = true,
            }
            state = self
                .inner
                .1
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The journal a location service sends to, once attached; empty without persistence.
#[derive(Default)]
pub(super) struct JournalSlot(std::sync::OnceLock<Arc<dyn Journal>>);

impl JournalSlot {
    pub(super) fn get(&self) -> Option<&dyn Journal> {
        self.0.get().map(|j| &**j)
    }

    /// False when a journal was attached already.
    pub(super) fn set(&self, journal: Arc<dyn Journal>) -> bool {
        self.0.set(journal).is_ok()
    }
}

impl std::fmt::Debug for JournalSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "JournalSlot(attached)"
        } else {
            "JournalSlot(none)"
        })
    }
}

/// The binding a stored record describes, with no flow (the connection it came on belonged
/// to another process). `None` when its text no longer fits the limits.
pub(super) fn binding_of(r: &BindingRecord) -> Option<Binding> {
    use super::binding::{BindingId, BindingText, TextParts};
    let text = BindingText::new(
        &TextParts {
            uri: &r.uri,
            uri_key: r.uri_key.as_deref().unwrap_or(&r.uri),
            params: &r.params,
            instance: r.instance.as_deref(),
            call_id: &r.call_id,
            user_agent: r.user_agent.as_deref(),
            credential: r.credential.as_deref(),
        },
        super::MAX_BINDING_TEXT,
    )?;
    let path: Option<Arc<[Box<str>]>> =
        (!r.path.is_empty()).then(|| r.path.iter().map(|p| Box::from(p.as_str())).collect());
    Some(Binding {
        id: BindingId(r.id),
        deadline: r.deadline,
        text,
        path,
        source: r.source,
        flow: None,
        reg_id: r.reg_id,
        cseq: r.cseq,
        granted: r.granted,
        q: r.q,
        transport: r.transport,
    })
}
