//! The location service: every AoR's bindings in a sharded map, plus the flow index and the
//! expiry index that keep `remove_flow` and `purge` from scanning everything.
//!
//! A REGISTER is decided and applied while holding its AoR's map entry, so two requests for the
//! same AoR are serialised and a request is applied entirely or not at all. Lock order is always
//! AoR entry → flow index entry → expiry mutex; no code holds two AoR entries at once or holds
//! a lock across `.await` (there is none here). A binding past its deadline is invisible to
//! every read even before the purge task removes it.
//!
//! The bindings and AoRs gauges are set here and nowhere else: [`Location::with_gauges`] takes
//! the two gauge handles, and every change of the counts moves them by the same delta, so
//! they are exact at every moment (no caller has to remember to refresh them after a
//! REGISTER, a revoke, a closed flow or a purge). The handles are plain `prometheus` gauges,
//! not `crate::metrics`, so the registrar names no upper module.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use prometheus::IntGauge;

use super::binding::{Aor, Binding, BindingId, BindingSnapshot, FlowId, Transport};
use super::count::Count;
use super::expiry::{ExpiryEntry, ExpiryQueue};
use super::journal::{
    self, Ack, BindingChange, BindingRecord, Journal, JournalSlot, SharedBindings,
};
use super::rules::{self, Change, Plan, RegisterError, RegisterInput, RegistrarPolicy};

/// Most expiry entries handled per lock acquisition in [`Location::purge`].
const PURGE_BATCH: usize = 1024;

/// The result of an accepted REGISTER (including a fetch).
#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    /// Every live binding of the AoR after the change, by q descending, most recently
    /// updated first among equals: the Contacts of the 200 OK.
    pub bindings: Vec<BindingSnapshot>,
    pub added: usize,
    pub refreshed: usize,
    pub removed: usize,
    /// Refreshed bindings whose source address, transport or flow changed (NAT rebinding,
    /// RFC 5626 re-registration over a new flow). Allowed; the caller logs them.
    pub rebound: Vec<Rebound>,
    /// Whether the AoR had live bindings before the request (lets the caller answer 404 to
    /// `Contact: *` on an unknown AoR, docs/testing.md A16).
    pub had_bindings: bool,
    /// With a durable store attached: completes once this change is on disk. The 200 OK
    /// waits for it ("acknowledged means durable"). `None`: nothing to wait for.
    pub durable: Option<Ack>,
}

/// A refreshed binding that now comes from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebound {
    /// The contact URI after the refresh.
    pub uri: Box<str>,
    pub old_source: std::net::SocketAddr,
    pub old_transport: Transport,
    pub old_flow: Option<FlowId>,
    pub new_source: std::net::SocketAddr,
    pub new_transport: Transport,
    pub new_flow: Option<FlowId>,
}

/// The shared location service. Cloning is cheap; all clones see the same bindings.
#[derive(Clone, Debug)]
pub struct Location {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    policy: RegistrarPolicy,
    /// Bindings per AoR; an AoR with no binding has no entry.
    aors: DashMap<Aor, Vec<Binding>>,
    /// Bindings per TCP/TLS connection, so a closed connection costs only its own bindings.
    flows: DashMap<FlowId, Vec<(Aor, BindingId)>>,
    expiry: ExpiryQueue,
    next_id: AtomicU64,
    /// Counts kept by hand: `DashMap::len` locks every shard.
    aor_count: Count,
    binding_count: Count,
    /// The durable store's writer, when persistence is on: every applied change goes there,
    /// under the AoR's entry (so in the order applied).
    journal: JournalSlot,
    /// The bindings other nodes made, when nodes share a store (Redis).
    shared: std::sync::OnceLock<Arc<dyn SharedBindings>>,
}

/// The gauges the location service keeps equal to its counts (`sipward_bindings`,
/// `sipward_aors`).
#[derive(Clone)]
pub struct LocationGauges {
    pub bindings: IntGauge,
    pub aors: IntGauge,
}

/// Index updates collected while an AoR entry is held, applied before it is released.
#[derive(Default)]
struct IndexChanges {
    expiry_remove: Vec<ExpiryEntry>,
    expiry_insert: Vec<ExpiryEntry>,
    flow_remove: Vec<(FlowId, BindingId)>,
    flow_insert: Vec<(FlowId, BindingId)>,
}

impl IndexChanges {
    fn detach(&mut self, aor: &Aor, b: &Binding) {
        self.expiry_remove.push(ExpiryEntry {
            deadline: b.deadline,
            id: b.id,
            aor: aor.clone(),
        });
        if let Some(flow) = b.flow {
            self.flow_remove.push((flow, b.id));
        }
    }

    fn attach(&mut self, aor: &Aor, b: &Binding) {
        self.expiry_insert.push(ExpiryEntry {
            deadline: b.deadline,
            id: b.id,
            aor: aor.clone(),
        });
        if let Some(flow) = b.flow {
            self.flow_insert.push((flow, b.id));
        }
    }

    /// Replaces `old` by `new` (same id), touching only the indexes that changed.
    fn replace(&mut self, aor: &Aor, old: &Binding, new: &Binding) {
        if old.deadline != new.deadline {
            self.expiry_remove.push(ExpiryEntry {
                deadline: old.deadline,
                id: old.id,
                aor: aor.clone(),
            });
            self.expiry_insert.push(ExpiryEntry {
                deadline: new.deadline,
                id: new.id,
                aor: aor.clone(),
            });
        }
        if old.flow != new.flow {
            if let Some(flow) = old.flow {
                self.flow_remove.push((flow, old.id));
            }
            if let Some(flow) = new.flow {
                self.flow_insert.push((flow, new.id));
            }
        }
    }
}

impl Location {
    /// An empty location service. Check the policy with [`RegistrarPolicy::validate`] when
    /// loading configuration; an inconsistent one is used as given.
    pub fn new(policy: RegistrarPolicy) -> Self {
        Self::build(policy, None, 0)
    }

    /// Like [`Location::new`], keeping `gauges` equal to the binding and AoR counts.
    pub fn with_gauges(policy: RegistrarPolicy, gauges: LocationGauges) -> Self {
        Self::build(policy, Some(gauges), 0)
    }

    /// Like [`Location::with_gauges`], with room for `aors` AoRs from the start (the
    /// bindings about to be restored: growing the map one insert at a time rehashes it).
    pub fn with_capacity(policy: RegistrarPolicy, gauges: LocationGauges, aors: usize) -> Self {
        Self::build(policy, Some(gauges), aors)
    }

    fn build(policy: RegistrarPolicy, gauges: Option<LocationGauges>, capacity: usize) -> Self {
        let (bindings, aors) = match gauges {
            Some(g) => (Some(g.bindings), Some(g.aors)),
            None => (None, None),
        };
        Self {
            inner: Arc::new(Inner {
                policy,
                aors: DashMap::with_capacity(capacity),
                flows: DashMap::new(),
                expiry: ExpiryQueue::default(),
                next_id: AtomicU64::new(1),
                aor_count: Count::new(aors),
                binding_count: Count::new(bindings),
                journal: JournalSlot::default(),
                shared: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn policy(&self) -> &RegistrarPolicy {
        &self.inner.policy
    }

    /// RFC 3261 §10.3 steps 6–8 for one authenticated REGISTER: validates the whole request,
    /// then applies it atomically, and returns the AoR's bindings afterwards. A REGISTER
    /// without Contact (and without `*`) is a fetch and changes nothing.
    pub fn register(
        &self,
        input: &RegisterInput<'_>,
        now: Instant,
    ) -> Result<RegisterOutcome, RegisterError> {
        let inner = &*self.inner;
        if !input.star && input.contacts.is_empty() {
            let bindings = self.lookup(input.aor, now);
            return Ok(RegisterOutcome {
                had_bindings: !bindings.is_empty(),
                bindings,
                added: 0,
                refreshed: 0,
                removed: 0,
                rebound: Vec::new(),
                durable: None,
            });
        }
        let entry = inner.aors.entry(input.aor.clone());
        // Under the AoR's lock: see `Credential` for why a revoke cannot be overtaken.
        if input.credential.is_some_and(|c| !(c.is_live)()) {
            return Err(RegisterError::CredentialRevoked);
        }
        match entry {
            Entry::Vacant(vacant) => {
                let plan = rules::plan(&[], input, now, &inner.policy)?;
                let mut bindings = Vec::new();
                if plan.final_count() == 0 {
                    return Ok(inner.apply(input, &mut bindings, plan, now).0);
                }
                inner.reserve_aor()?;
                let journal = inner
                    .reserve_journal()
                    .inspect_err(|_| inner.aor_count.sub(1))?;
                let (outcome, changes) = inner.apply(input, &mut bindings, plan, now);
                vacant.insert(bindings);
                Ok(journaled(journal, outcome, changes))
            }
            Entry::Occupied(mut occupied) => {
                let plan = rules::plan(occupied.get(), input, now, &inner.policy)?;
                let journal = inner.reserve_journal()?;
                let (outcome, changes) = inner.apply(input, occupied.get_mut(), plan, now);
                if occupied.get().is_empty() {
                    occupied.remove();
                    inner.aor_count.sub(1);
                }
                Ok(journaled(journal, outcome, changes))
            }
        }
    }

    /// The live bindings of `aor` for routing: q descending (a missing q counts as 1.0), most
    /// recently updated first among equals.
    ///
    /// With [`Location::attach_shared`], other nodes' bindings over UDP or with a Path follow
    /// (another node's connection is not usable here), one per contact.
    pub fn lookup(&self, aor: &Aor, now: Instant) -> Vec<BindingSnapshot> {
        let mut out = match self.inner.aors.get(aor) {
            Some(bindings) => snapshots(&bindings, now),
            None => Vec::new(),
        };
        if let Some(shared) = self.inner.shared.get() {
            let remote: Vec<Binding> = shared
                .others(aor)
                .iter()
                .filter(|r| r.transport == Transport::Udp || !r.path.is_empty())
                .filter_map(journal::binding_of)
                .filter(|b| out.iter().all(|s| s.uri() != b.text.uri()))
                .collect();
            out.extend(snapshots(&remote, now));
        }
        out
    }

    /// Lookups read other nodes' bindings from `shared`. Once only (false after the first).
    pub fn attach_shared(&self, shared: Arc<dyn SharedBindings>) -> bool {
        self.inner.shared.set(shared).is_ok()
    }

    /// Removes every binding that arrived on `flow` (its TCP/TLS connection closed). Uses the
    /// flow index: the cost is the flow's own bindings, not the whole table.
    pub fn remove_flow(&self, flow: FlowId) -> usize {
        let Some((_, members)) = self.inner.flows.remove(&flow) else {
            return 0;
        };
        let mut by_aor: HashMap<Aor, Vec<BindingId>> = HashMap::new();
        for (aor, id) in members {
            by_aor.entry(aor).or_default().push(id);
        }
        let mut removed = 0;
        for (aor, ids) in by_aor {
            removed += self
                .inner
                .remove_where(&aor, |b| b.flow == Some(flow) && ids.contains(&b.id));
        }
        removed
    }

    /// Removes every binding of `aor` (admin, deprovisioning, revoked device). Returns how many
    /// were stored, including any past their deadline not yet purged.
    pub fn remove_aor(&self, aor: &Aor) -> usize {
        self.inner.remove_where(aor, |_| true)
    }

    /// Removes the bindings of `aor` made or last refreshed with the credential `name` (a
    /// revoked device). Call it after the credential stopped being live (`Credential`): then
    /// no binding made with it remains or can appear. Returns how many were removed.
    pub fn remove_credential(&self, aor: &Aor, name: &str) -> usize {
        let here = self.remove_own_credential(aor, name);
        let elsewhere = self
            .inner
            .shared
            .get()
            .map_or(0, |shared| shared.remove_credential(aor, name));
        here + elsewhere
    }

    /// [`Self::remove_credential`] for this node's bindings only: what a node does when it
    /// hears of a revoke another node made (that node already removed the rest from the shared
    /// store).
    pub fn remove_own_credential(&self, aor: &Aor, name: &str) -> usize {
        self.inner
            .remove_where(aor, |b| b.text.credential() == Some(name))
    }

    /// Admin listing: up to `limit` AoRs with live bindings (only `filter` when given), in no
    /// particular order. Each shard is read-locked briefly while it is walked.
    pub fn dump(
        &self,
        filter: Option<&Aor>,
        limit: usize,
        now: Instant,
    ) -> Vec<(Aor, Vec<BindingSnapshot>)> {
        if limit == 0 {
            return Vec::new();
        }
        if let Some(aor) = filter {
            let bindings = self.lookup(aor, now);
            return if bindings.is_empty() {
                Vec::new()
            } else {
                vec![(aor.clone(), bindings)]
            };
        }
        let mut out = Vec::new();
        for entry in self.inner.aors.iter() {
            let bindings = snapshots(entry.value(), now);
            if !bindings.is_empty() {
                out.push((entry.key().clone(), bindings));
                if out.len() >= limit {
                    break;
                }
            }
        }
        out
    }

    /// Removes the one binding of `aor` with id `id` (an admin's per-binding removal); the
    /// journal and the gauges follow as for any removal. Returns whether it was stored.
    pub fn remove_binding(&self, aor: &Aor, id: u64) -> bool {
        self.inner.remove_where(aor, |b| b.id.0 == id) > 0
    }

    /// Every AoR's bindings, for [`super::page`]'s walk.
    pub(super) fn aors(&self) -> &DashMap<Aor, Vec<Binding>> {
        &self.inner.aors
    }

    /// Removes every binding whose deadline is at or before `now`; returns how many. Called by
    /// the one purge task every `registrar.purge_interval` (reads never show an expired
    /// binding meanwhile); [`Location::next_deadline`] says when the next one falls due.
    pub fn purge(&self, now: Instant) -> usize {
        let mut purged = 0;
        loop {
            let due = self.inner.expiry.pop_due(now, PURGE_BATCH);
            let batch = due.len();
            for entry in due {
                purged += self
                    .inner
                    .remove_where(&entry.aor, |b| b.id == entry.id && !b.is_live(now));
            }
            if batch < PURGE_BATCH {
                return purged;
            }
        }
    }

    /// The earliest deadline of any stored binding.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.inner.expiry.next_deadline()
    }

    /// Stored bindings (a gauge; includes any past their deadline until purge runs).
    pub fn binding_count(&self) -> usize {
        self.inner.binding_count.load()
    }

    /// AoRs with at least one stored binding (a gauge).
    pub fn aor_count(&self) -> usize {
        self.inner.aor_count.load()
    }

    /// Sends every change applied from now on to `journal` (a durable store's writer).
    /// Once only: false when a journal was attached already.
    pub fn attach_journal(&self, journal: Arc<dyn Journal>) -> bool {
        self.inner.journal.set(journal)
    }

    /// Loads bindings read back from a durable store, before serving; records past their
    /// deadline at `now`, or whose text no longer fits, are skipped. New ids continue above
    /// the largest restored one. Returns how many were restored.
    pub fn restore(&self, records: &[BindingRecord], now: Instant) -> usize {
        let inner = &*self.inner;
        let mut restored = 0;
        let mut expiry = Vec::with_capacity(records.len());
        for r in records {
            let Some(b) = journal::binding_of(r).filter(|b| b.is_live(now)) else {
                continue;
            };
            inner
                .next_id
                .fetch_max(r.id.saturating_add(1), Ordering::Relaxed);
            expiry.push(ExpiryEntry {
                deadline: b.deadline,
                id: b.id,
                aor: r.aor.clone(),
            });
            let mut entry = inner.aors.entry(r.aor.clone()).or_default();
            if entry.is_empty() {
                inner.aor_count.add(1);
            }
            entry.push(b);
            inner.binding_count.add(1);
            restored += 1;
        }
        inner.expiry.extend(expiry);
        restored
    }

    #[cfg(test)]
    pub(super) fn index_sizes(&self) -> (usize, usize) {
        let flow_entries = self.inner.flows.iter().map(|e| e.value().len()).sum();
        (self.inner.expiry.len(), flow_entries)
    }
}

impl Inner {
    /// With a journal: takes a place in its queue for one REGISTER ([`RegisterError::StoreBusy`]
    /// when full, before anything is applied).
    fn reserve_journal(&self) -> Result<Option<&dyn Journal>, RegisterError> {
        match self.journal.get() {
            Some(j) if j.reserve() => Ok(Some(j)),
            Some(_) => Err(RegisterError::StoreBusy),
            None => Ok(None),
        }
    }

    /// Takes one unit of the global AoR budget.
    fn reserve_aor(&self) -> Result<(), RegisterError> {
        if self.aor_count.increment_below(self.policy.max_aors) {
            Ok(())
        } else {
            Err(RegisterError::Full)
        }
    }

    /// Applies a validated plan to the AoR's bindings (whose entry the caller holds). Cannot
    /// fail.
    fn apply(
        &self,
        input: &RegisterInput<'_>,
        bindings: &mut Vec<Binding>,
        plan: Plan,
        now: Instant,
    ) -> (RegisterOutcome, Vec<BindingChange>) {
        let aor = input.aor;
        let journaled = self.journal.get().is_some();
        let mut changes = Vec::new();
        let had_bindings = plan.had_bindings();
        let old_len = bindings.len();
        let mut old: Vec<Option<Binding>> =
            std::mem::take(bindings).into_iter().map(Some).collect();
        let mut index = IndexChanges::default();
        let (mut added, mut refreshed, mut removed) = (0, 0, 0);
        let mut rebound = Vec::new();

        for i in plan.expired {
            if let Some(b) = old.get_mut(i).and_then(Option::take) {
                index.detach(aor, &b);
            }
        }
        for slot in plan.slots {
            let previous = slot
                .existing
                .and_then(|i| old.get_mut(i))
                .and_then(Option::take);
            match (previous, slot.change) {
                (Some(b), Change::Keep) => bindings.push(b),
                (Some(b), Change::Remove) => {
                    index.detach(aor, &b);
                    if journaled {
                        changes.push(BindingChange::Remove { id: b.id.0 });
                    }
                    removed += 1;
                }
                (previous, Change::Update(u)) => {
                    let id = match &previous {
                        Some(b) => b.id,
                        None => BindingId(self.next_id.fetch_add(1, Ordering::Relaxed)),
                    };
                    let new = Binding {
                        id,
                        deadline: u.deadline,
                        text: u.text,
                        path: plan.path.clone(),
                        source: input.source,
                        flow: input.flow,
                        reg_id: u.reg_id,
                        cseq: input.cseq,
                        granted: u.granted,
                        q: u.q,
                        transport: input.transport,
                    };
                    if journaled {
                        changes.push(match &previous {
                            Some(b) => BindingChange::update(aor, b, &new),
                            None => BindingChange::Put(Box::new(BindingRecord::of(aor, &new))),
                        });
                    }
                    match previous {
                        Some(b) => {
                            index.replace(aor, &b, &new);
                            if (b.source, b.transport, b.flow)
                                != (new.source, new.transport, new.flow)
                            {
                                rebound.push(Rebound {
                                    uri: Box::from(new.text.uri()),
                                    old_source: b.source,
                                    old_transport: b.transport,
                                    old_flow: b.flow,
                                    new_source: new.source,
                                    new_transport: new.transport,
                                    new_flow: new.flow,
                                });
                            }
                            refreshed += 1;
                        }
                        None => {
                            index.attach(aor, &new);
                            added += 1;
                        }
                    }
                    bindings.push(new);
                }
                (None, Change::Keep | Change::Remove) => {}
            }
        }
        // The plan covers every index; anything left is kept rather than lost.
        bindings.extend(old.into_iter().flatten());
        bindings.shrink_to_fit();

        self.commit(aor, index);
        let new_len = bindings.len();
        if new_len >= old_len {
            self.binding_count.add(new_len - old_len);
        } else {
            self.binding_count.sub(old_len - new_len);
        }
        let outcome = RegisterOutcome {
            bindings: snapshots(bindings, now),
            added,
            refreshed,
            removed,
            rebound,
            had_bindings,
            durable: None,
        };
        (outcome, changes)
    }

    /// Applies index changes; called while the AoR entry is still held.
    fn commit(&self, aor: &Aor, index: IndexChanges) {
        for (flow, id) in index.flow_remove {
            self.unindex_flow(flow, id);
        }
        for (flow, id) in index.flow_insert {
            self.flows.entry(flow).or_default().push((aor.clone(), id));
        }
        self.expiry
            .update(&index.expiry_remove, index.expiry_insert);
    }

    fn unindex_flow(&self, flow: FlowId, id: BindingId) {
        if let Entry::Occupied(mut members) = self.flows.entry(flow) {
            members.get_mut().retain(|(_, member)| *member != id);
            if members.get().is_empty() {
                members.remove();
            }
        }
    }

    /// Removes the bindings of `aor` that `doomed` selects, with their index entries; drops
    /// the AoR when it becomes empty. Returns how many were removed.
    fn remove_where(&self, aor: &Aor, doomed: impl Fn(&Binding) -> bool) -> usize {
        let Entry::Occupied(mut entry) = self.aors.entry(aor.clone()) else {
            return 0;
        };
        let mut index = IndexChanges::default();
        let bindings = entry.get_mut();
        let before = bindings.len();
        let mut changes = Vec::new();
        let journal = self.journal.get();
        bindings.retain(|b| {
            let remove = doomed(b);
            if remove {
                index.detach(aor, b);
                if journal.is_some() {
                    changes.push(BindingChange::Remove { id: b.id.0 });
                }
            }
            !remove
        });
        let removed = before - bindings.len();
        if removed == 0 {
            return 0;
        }
        if let Some(j) = journal {
            j.append(changes);
        }
        bindings.shrink_to_fit();
        self.commit(aor, index);
        self.binding_count.sub(removed);
        if entry.get().is_empty() {
            entry.remove();
            self.aor_count.sub(1);
        }
        removed
    }
}

/// Hands a REGISTER's changes to the journal (in the place reserved for them), with the ack
/// the outcome carries. Called while the AoR's entry is held.
fn journaled(
    journal: Option<&dyn Journal>,
    mut outcome: RegisterOutcome,
    changes: Vec<BindingChange>,
) -> RegisterOutcome {
    if let Some(j) = journal {
        let ack = Ack::default();
        j.append_reserved(changes, ack.clone());
        outcome.durable = Some(ack);
    }
    outcome
}

/// Snapshots of the live bindings, q descending then most recently updated first.
pub(super) fn snapshots(bindings: &[Binding], now: Instant) -> Vec<BindingSnapshot> {
    let mut live: Vec<&Binding> = bindings.iter().filter(|b| b.is_live(now)).collect();
    live.sort_by(|a, b| {
        b.q.unwrap_or(1000)
            .cmp(&a.q.unwrap_or(1000))
            .then_with(|| b.updated_at().cmp(&a.updated_at()))
            .then_with(|| a.id.cmp(&b.id))
    });
    live.into_iter().map(|b| b.snapshot(now)).collect()
}
