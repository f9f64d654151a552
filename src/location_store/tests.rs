//! The store's contract (SQLite and memory), the writer's group commit and bound, and the
//! location service's changes surviving a reopen.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::registrar::{
    Ack, Aor, BindingChange, BindingRecord, ContactInput, Journal, Location, RegisterInput,
    RegistrarPolicy, Transport,
};

/// The writer reads the real clocks, so the tests do too.
fn clock() -> WallClock {
    WallClock::now()
}

fn aor(user: &str) -> Aor {
    Aor::parse(&format!("sip:{user}@example.test")).unwrap()
}

fn record(id: u64, user: &str, clock: &WallClock, secs: u64) -> BindingRecord {
    BindingRecord {
        id,
        aor: aor(user),
        uri: format!("sip:{user}@192.0.2.1:5060;transport=tcp"),
        uri_key: Some(format!("sip:{user}@192.0.2.1:5060;transport=tcp")),
        params: ";+sip.instance=\"<urn:uuid:1>\"".into(),
        instance: Some("<urn:uuid:1>".into()),
        reg_id: Some(1),
        q: Some(500),
        call_id: format!("call-{id}"),
        cseq: 7,
        user_agent: Some("phone/1".into()),
        credential: Some("d-abc".into()),
        path: vec!["<sip:edge.example.test;lr>".into()],
        source: "192.0.2.1:5060".parse().unwrap(),
        transport: Transport::Tcp,
        granted: secs as u32,
        deadline: clock.instant() + Duration::from_secs(secs),
    }
}

/// Deadlines round-trip through milliseconds: compare at that precision.
fn ms(clock: &WallClock, r: &BindingRecord) -> (u64, BindingRecord) {
    let mut r = r.clone();
    let at = clock.unix_ms(r.deadline);
    r.deadline = clock.instant();
    (at, r)
}

fn sorted(clock: &WallClock, mut v: Vec<BindingRecord>) -> Vec<(u64, BindingRecord)> {
    v.sort_by_key(|r| r.id);
    v.iter().map(|r| ms(clock, r)).collect()
}

#[test]
fn sqlite_keeps_puts_refreshes_and_removals_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("location.db");
    let c = clock();
    let (a, b) = (record(1, "alice", &c, 600), record(2, "bob", &c, 600));
    {
        let mut store = SqliteLocationStore::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the store is private to its owner");
        store
            .commit(
                &[
                    BindingChange::Put(Box::new(a.clone())),
                    BindingChange::Put(Box::new(b.clone())),
                ],
                &c,
            )
            .unwrap();
        let refreshed = c.instant() + Duration::from_secs(900);
        store
            .commit(
                &[
                    BindingChange::Refresh {
                        id: 1,
                        cseq: 8,
                        granted: 900,
                        deadline: refreshed,
                    },
                    BindingChange::Remove { id: 2 },
                ],
                &c,
            )
            .unwrap();
    }
    let mut store = SqliteLocationStore::open(&path).unwrap();
    let loaded = store.load(&c).unwrap();
    let mut want = a.clone();
    want.cseq = 8;
    want.granted = 900;
    want.deadline = c.instant() + Duration::from_secs(900);
    assert_eq!(sorted(&c, loaded), sorted(&c, vec![want]));
}

#[test]
fn expired_rows_are_not_loaded_and_are_purged_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteLocationStore::open(&dir.path().join("l.db")).unwrap();
    let c = clock();
    let changes: Vec<BindingChange> = (1..=5)
        .map(|id| BindingChange::Put(Box::new(record(id, "alice", &c, id * 10))))
        .collect();
    store.commit(&changes, &c).unwrap();
    let later = WallClock::at(c.instant() + Duration::from_secs(25), c.now_ms() + 25_000);
    let live: Vec<u64> = store.load(&later).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(live.len(), 3, "ids 3, 4, 5 are live at +25 s: {live:?}");
    assert_eq!(store.purge_expired(later.now_ms(), 1).unwrap(), 1);
    assert_eq!(store.purge_expired(later.now_ms(), 10).unwrap(), 1);
    assert_eq!(store.purge_expired(later.now_ms(), 10).unwrap(), 0);
    let check = SqliteLocationStore::check(&dir.path().join("l.db"), later.now_ms()).unwrap();
    assert_eq!(
        (check.integrity.as_str(), check.rows, check.live),
        ("ok", 3, 3)
    );
}

#[test]
fn an_unknown_schema_version_or_a_foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.db");
    drop(SqliteLocationStore::open(&newer).unwrap());
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    drop(conn);
    let e = SqliteLocationStore::open(&newer).err().expect("refused");
    assert!(
        e.to_string().contains("schema version 99 is not supported"),
        "{e}"
    );
    assert!(!e.to_string().contains('\n'), "one line: {e}");

    let foreign = dir.path().join("foreign.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute("CREATE TABLE t (x)", []).unwrap();
    drop(conn);
    let e = SqliteLocationStore::open(&foreign).err().expect("refused");
    assert!(
        e.to_string().contains("not a sipward location store"),
        "{e}"
    );
}

#[test]
fn backup_is_a_consistent_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let c = clock();
    let mut store = SqliteLocationStore::open(&path).unwrap();
    store
        .commit(
            &[BindingChange::Put(Box::new(record(1, "alice", &c, 600)))],
            &c,
        )
        .unwrap();
    let copy = dir.path().join("copy.db");
    SqliteLocationStore::backup(&path, &copy).unwrap();
    assert!(
        SqliteLocationStore::backup(&path, &copy).is_err(),
        "never overwrites"
    );
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut restored = SqliteLocationStore::open(&copy).unwrap();
    assert_eq!(restored.load(&c).unwrap().len(), 1);
}

/// A memory store whose commits wait for the test to open a gate, recording batch sizes.
#[derive(Clone, Default)]
struct Gated {
    gate: Arc<(Mutex<bool>, Condvar)>,
    batches: Arc<Mutex<Vec<usize>>>,
    store: Arc<Mutex<MemoryLocationStore>>,
}

impl Gated {
    fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl LocationStore for Gated {
    fn load(&mut self, clock: &WallClock) -> Result<Vec<BindingRecord>, LocationStoreError> {
        self.store.lock().unwrap().load(clock)
    }
    fn commit(
        &mut self,
        changes: &[BindingChange],
        clock: &WallClock,
    ) -> Result<(), LocationStoreError> {
        let mut open = self.gate.0.lock().unwrap();
        while !*open {
            open = self.gate.1.wait(open).unwrap();
        }
        drop(open);
        self.batches.lock().unwrap().push(changes.len());
        self.store.lock().unwrap().commit(changes, clock)
    }
    fn purge_expired(&mut self, before_ms: u64, max: usize) -> Result<usize, LocationStoreError> {
        self.store.lock().unwrap().purge_expired(before_ms, max)
    }
    fn size_bytes(&self) -> u64 {
        0
    }
}

fn metrics() -> StoreMetrics {
    StoreMetrics::new(&prometheus::Registry::new())
}

fn put(id: u64) -> Vec<BindingChange> {
    vec![BindingChange::Put(Box::new(record(
        id,
        "alice",
        &clock(),
        600,
    )))]
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn changes_queued_during_a_commit_go_into_the_next_one() {
    let gated = Gated::default();
    let writer = Writer::start(
        Box::new(gated.clone()),
        WriterConfig {
            queue: 100,
            commit_interval: Duration::ZERO,
        },
        metrics(),
    )
    .unwrap();
    let first = Ack::default();
    assert!(writer.reserve());
    writer.append_reserved(put(1), first.clone());
    // The writer took the first change and waits in its commit; 20 more gather meanwhile.
    wait_until("the first batch taken", || {
        writer.shared_depth_for_tests() == 0
    });
    let acks: Vec<Ack> = (2..=21)
        .map(|id| {
            assert!(writer.reserve());
            let ack = Ack::default();
            writer.append_reserved(put(id), ack.clone());
            ack
        })
        .collect();
    let done = Arc::new(Mutex::new(0));
    for ack in &acks {
        let done = done.clone();
        ack.on_complete(move |durable| {
            assert!(durable);
            *done.lock().unwrap() += 1;
        });
    }
    assert_eq!(
        *done.lock().unwrap(),
        0,
        "nothing acknowledged before its commit"
    );
    gated.open();
    assert!(first.wait());
    wait_until("every ack", || *done.lock().unwrap() == 20);
    assert_eq!(
        *gated.batches.lock().unwrap(),
        [1, 20],
        "one commit for the 20"
    );
    writer.stop().expect("the writer's store");
}

#[test]
fn the_commit_interval_gathers_a_batch_until_half_the_queue_or_stop() {
    let gated = Gated::default();
    gated.open();
    // An interval far longer than the test: only the first commit after idle, half the
    // queue taken, or stop may start a transaction.
    let writer = Writer::start(
        Box::new(gated.clone()),
        WriterConfig {
            queue: 40,
            commit_interval: Duration::from_secs(600),
        },
        metrics(),
    )
    .unwrap();
    let register = |id: u64| {
        assert!(writer.reserve());
        let ack = Ack::default();
        writer.append_reserved(put(id), ack.clone());
        ack
    };
    assert!(
        register(1).wait(),
        "the first after idle is written at once"
    );
    let gathered: Vec<Ack> = (2..=20).map(register).collect();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        *gated.batches.lock().unwrap(),
        [1],
        "19 REGISTERs (under half the queue) wait for the interval"
    );
    let twentieth = register(21);
    assert!(twentieth.wait(), "half the queue taken starts the commit");
    assert!(gathered.iter().all(Ack::wait));
    assert_eq!(*gated.batches.lock().unwrap(), [1, 20]);
    let at_stop: Vec<Ack> = (22..=24).map(register).collect();
    writer.stop().expect("the writer's store");
    assert!(at_stop.iter().all(Ack::wait), "stop writes what gathered");
    assert_eq!(*gated.batches.lock().unwrap(), [1, 20, 3]);
}

#[test]
fn a_full_queue_refuses_a_register_but_never_a_removal() {
    let gated = Gated::default();
    let writer = Writer::start(
        Box::new(gated.clone()),
        WriterConfig {
            queue: 2,
            commit_interval: Duration::ZERO,
        },
        metrics(),
    )
    .unwrap();
    assert!(writer.reserve());
    writer.append_reserved(put(1), Ack::default());
    wait_until("the first batch taken", || {
        writer.shared_depth_for_tests() == 0
    });
    assert!(writer.reserve());
    assert!(writer.reserve());
    assert!(
        !writer.reserve(),
        "two REGISTERs wait: the third is refused"
    );
    writer.append(vec![BindingChange::Remove { id: 1 }]);
    assert_eq!(
        writer.shared_depth_for_tests(),
        1,
        "a removal is queued regardless"
    );
    writer.append_reserved(put(2), Ack::default());
    writer.append_reserved(put(3), Ack::default());
    gated.open();
    let store = writer.stop().expect("drained");
    drop(store);
    let mut memory = gated.store.lock().unwrap();
    let ids: Vec<u64> = memory
        .load(&clock())
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let mut ids = ids;
    ids.sort_unstable();
    assert_eq!(
        ids,
        [2, 3],
        "everything queued before stop was written, in order"
    );
}

fn contact<'a>(uri: &'a str) -> ContactInput<'a> {
    ContactInput {
        uri,
        uri_key: uri,
        params: "",
        expires: None,
        q: None,
        instance: None,
        reg_id: None,
    }
}

fn input<'a>(
    aor: &'a Aor,
    contacts: &'a [ContactInput<'a>],
    cseq: u32,
    expires: Option<u64>,
) -> RegisterInput<'a> {
    RegisterInput {
        aor,
        call_id: "call-1",
        cseq,
        star: false,
        contacts,
        expires_header: expires,
        path: &[],
        path_supported: false,
        source: SocketAddr::from(([192, 0, 2, 7], 5060)),
        transport: Transport::Udp,
        flow: None,
        user_agent: Some("phone/2"),
        max_expires_cap: None,
        credential: None,
    }
}

#[test]
fn the_location_service_survives_a_reopen_with_its_acknowledged_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("location.db");
    let now = Instant::now();
    let location = Location::new(RegistrarPolicy::default());
    let writer = Writer::start(
        Box::new(SqliteLocationStore::open(&path).unwrap()),
        WriterConfig {
            queue: 16,
            commit_interval: Duration::ZERO,
        },
        metrics(),
    )
    .unwrap();
    assert!(location.attach_journal(writer.clone()));
    let (alice, bob) = (aor("alice"), aor("bob"));
    let two = [
        contact("sip:alice@192.0.2.7"),
        contact("sip:alice@192.0.2.8"),
    ];
    let one = [contact("sip:bob@192.0.2.9")];
    let acks = [
        location.register(&input(&alice, &two, 1, Some(600)), now),
        location.register(&input(&bob, &one, 1, Some(600)), now),
        // A refresh (compact update) of one of alice's, the other unregistered.
        location.register(&input(&alice, &two[..1], 2, Some(1200)), now),
        location.register(&input(&alice, &two[1..], 3, Some(0)), now),
    ];
    for outcome in acks {
        let ack = outcome
            .unwrap()
            .durable
            .expect("an ack with a store attached");
        assert!(ack.wait(), "acknowledged means durable");
    }
    // A removal outside REGISTER (a revoke, an admin removal) reaches the store too.
    assert_eq!(location.remove_aor(&bob), 1);
    writer.stop().expect("drained");

    let mut store = SqliteLocationStore::open(&path).unwrap();
    let records = store.load(&WallClock::now()).unwrap();
    let restored = Location::new(RegistrarPolicy::default());
    assert_eq!(restored.restore(&records, now), 1);
    let before = location.lookup(&alice, now);
    let after = restored.lookup(&alice, now);
    assert_eq!(after.len(), 1);
    assert_eq!(
        (
            after[0].uri(),
            after[0].expires,
            after[0].cseq,
            after[0].source
        ),
        (
            before[0].uri(),
            before[0].expires,
            before[0].cseq,
            before[0].source
        )
    );
    assert_eq!(after[0].expires, 1200);
    assert!(
        restored.lookup(&bob, now).is_empty(),
        "bob's removal was written"
    );
    // The restored service takes new REGISTERs.
    let next = restored
        .register(&input(&bob, &one, 1, Some(600)), now)
        .unwrap();
    assert_eq!(next.added, 1);
}

/// A journal whose queue is always full.
struct Full;

impl Journal for Full {
    fn reserve(&self) -> bool {
        false
    }
    fn append_reserved(&self, _: Vec<BindingChange>, _: Ack) {
        unreachable!("nothing is appended without a place")
    }
    fn append(&self, _: Vec<BindingChange>) {}
}

#[test]
fn a_register_refused_for_a_full_queue_changes_nothing() {
    let location = Location::new(RegistrarPolicy::default());
    assert!(location.attach_journal(Arc::new(Full)));
    let alice = aor("alice");
    let one = [contact("sip:alice@192.0.2.7")];
    let now = Instant::now();
    assert_eq!(
        location
            .register(&input(&alice, &one, 1, Some(600)), now)
            .err(),
        Some(crate::registrar::RegisterError::StoreBusy)
    );
    assert!(location.lookup(&alice, now).is_empty());
    assert_eq!((location.binding_count(), location.aor_count()), (0, 0));
}

#[test]
fn a_binding_of_a_credential_no_longer_active_is_not_restored_and_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("location.db");
    let c = clock();
    let mut kept = record(2, "bob", &c, 600);
    kept.credential = None;
    {
        let mut store = SqliteLocationStore::open(&path).unwrap();
        // alice's binding was made by device d-abc, revoked before the crash; the removal of
        // its bindings never reached this store.
        let changes = [
            BindingChange::Put(Box::new(record(1, "alice", &c, 600))),
            BindingChange::Put(Box::new(kept)),
        ];
        store.commit(&changes, &c).unwrap();
    }
    let loaded = open(&path).unwrap();
    assert_eq!(loaded.len(), 2);
    let location = Location::new(RegistrarPolicy::default());
    let (writer, restored) = loaded
        .serve(
            &location,
            |name| name != "d-abc",
            WriterConfig {
                queue: 4,
                commit_interval: Duration::ZERO,
            },
            metrics(),
        )
        .unwrap();
    assert_eq!((restored.bindings, restored.dropped), (1, 1));
    let now = Instant::now();
    assert!(location.lookup(&aor("alice"), now).is_empty());
    assert_eq!(location.lookup(&aor("bob"), now).len(), 1);
    writer.stop().expect("drained");
    let ids: Vec<u64> = SqliteLocationStore::open(&path)
        .unwrap()
        .load(&clock())
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ids,
        [2],
        "the revoked device's binding is gone from the store too"
    );
}

#[test]
fn a_record_survives_the_redis_encoding_and_a_refresh_overrides_cseq_and_granted() {
    use super::redis::{decode, encode};
    use std::collections::HashMap;
    let clock = WallClock::at(Instant::now(), 1_000_000);
    let r = record(5, "alice", &clock, 600);
    let expires = clock.unix_ms(r.deadline);
    let mut fields = HashMap::from([
        ("r".to_owned(), encode(&r)),
        ("x".to_owned(), expires.to_string()),
    ]);
    assert_eq!(decode(5, &fields, &clock), Some(r.clone()));
    fields.insert("c".into(), "9:300".into());
    let refreshed = decode(5, &fields, &clock).unwrap();
    assert_eq!((refreshed.cseq, refreshed.granted), (9, 300));
    // What does not parse is skipped, never a panic.
    fields.insert("r".into(), "{\"aor\": 1}".into());
    assert_eq!(decode(5, &fields, &clock), None);
    fields.insert("r".into(), encode(&r));
    fields.insert("c".into(), "nine:300".into());
    assert_eq!(decode(5, &fields, &clock), None);
    fields.remove("x");
    assert_eq!(decode(5, &fields, &clock), None);
}

/// A journal that keeps what it is given, acknowledging at once.
#[derive(Default)]
struct Recording(Mutex<Vec<BindingChange>>);

impl Journal for Recording {
    fn reserve(&self) -> bool {
        true
    }

    fn append_reserved(&self, changes: Vec<BindingChange>, ack: Ack) {
        self.0.lock().unwrap().extend(changes);
        ack.complete(true);
    }

    fn append(&self, changes: Vec<BindingChange>) {
        self.0.lock().unwrap().extend(changes);
    }
}

#[test]
fn a_re_register_with_a_new_call_id_or_source_is_a_renew_and_a_new_contact_a_put() {
    let journal = Arc::new(Recording::default());
    let location = Location::new(RegistrarPolicy::default());
    assert!(location.attach_journal(journal.clone()));
    let alice = aor("alice");
    let one = [contact("sip:alice@192.0.2.7")];
    let moved = SocketAddr::from(([192, 0, 2, 7], 5070));
    let now = Instant::now();
    let steps = [
        input(&alice, &one, 1, Some(600)),
        // Same Call-ID and source: a refresh.
        input(&alice, &one, 2, Some(600)),
        // A new Call-ID (the load generator's, a rebooted phone's).
        RegisterInput {
            call_id: "call-2",
            ..input(&alice, &one, 1, Some(600))
        },
        // The NAT moved the phone to another port.
        RegisterInput {
            call_id: "call-2",
            source: moved,
            ..input(&alice, &one, 2, Some(600))
        },
        // Another User-Agent: the whole binding.
        RegisterInput {
            call_id: "call-2",
            source: moved,
            user_agent: Some("phone/3"),
            ..input(&alice, &one, 3, Some(600))
        },
    ];
    for step in &steps {
        location.register(step, now).unwrap();
    }
    let kinds: Vec<&str> = journal
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|c| match c {
            BindingChange::Put(_) => "put",
            BindingChange::Renew(_) => "renew",
            BindingChange::Refresh { .. } => "refresh",
            BindingChange::Remove { .. } => "remove",
        })
        .collect();
    assert_eq!(kinds, ["put", "refresh", "renew", "renew", "put"]);
    let Some(BindingChange::Renew(r)) = journal.0.lock().unwrap().get(3).cloned() else {
        panic!("the fourth change is a renew");
    };
    assert_eq!((r.call_id.as_str(), r.source, r.cseq), ("call-2", moved, 2));
}

#[test]
fn sqlite_renews_call_id_cseq_source_and_expiry_and_writes_a_missing_row_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("location.db");
    let c = clock();
    let a = record(1, "alice", &c, 600);
    let mut renewed = a.clone();
    renewed.call_id = "call-renewed".into();
    renewed.cseq = 9;
    renewed.source = "192.0.2.1:5999".parse().unwrap();
    renewed.granted = 1200;
    renewed.deadline = c.instant() + Duration::from_secs(1200);
    // Its put never reached the store (a failed transaction): the renew writes it all.
    let orphan = record(2, "bob", &c, 300);
    {
        let mut store = SqliteLocationStore::open(&path).unwrap();
        store
            .commit(&[BindingChange::Put(Box::new(a.clone()))], &c)
            .unwrap();
        // What a renew does not write stays as it was: make the record it carries differ
        // there, so the test sees that only the renewed columns were written.
        let mut carried = renewed.clone();
        carried.user_agent = Some("not written".into());
        store
            .commit(
                &[
                    BindingChange::Renew(Box::new(carried)),
                    BindingChange::Renew(Box::new(orphan.clone())),
                ],
                &c,
            )
            .unwrap();
    }
    let loaded = SqliteLocationStore::open(&path).unwrap().load(&c).unwrap();
    assert_eq!(sorted(&c, loaded), sorted(&c, vec![renewed, orphan]));
}

#[test]
fn the_purge_walks_the_table_in_slices_and_wraps_around() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let mut store = SqliteLocationStore::open(&path).unwrap();
    let c = clock();
    // Ids 1, 3, 5 expire after 10 s, 2 and 4 live for an hour.
    let changes: Vec<BindingChange> = (1..=5)
        .map(|id| {
            let secs = if id % 2 == 1 { 10 } else { 3600 };
            BindingChange::Put(Box::new(record(id, "alice", &c, secs)))
        })
        .collect();
    store.commit(&changes, &c).unwrap();
    let later = c.now_ms() + 60_000;
    let ids = |store: &mut SqliteLocationStore| -> Vec<u64> {
        let mut v: Vec<u64> = store.load(&c).unwrap().iter().map(|r| r.id).collect();
        v.sort_unstable();
        v
    };
    // Two rows per slice: ids 1-2 (1 goes), 3-4 (3 goes), then 5 and the end of the table.
    assert_eq!(store.purge_slice(later, 10, 2).unwrap(), (1, false));
    assert_eq!(ids(&mut store), [2, 3, 4, 5]);
    assert_eq!(store.purge_slice(later, 10, 2).unwrap(), (1, false));
    assert_eq!(store.purge_slice(later, 10, 2).unwrap(), (1, true));
    assert_eq!(ids(&mut store), [2, 4]);
    // Wrapped: the next slice starts at the beginning again and finds nothing more.
    assert_eq!(store.purge_slice(later, 10, 2).unwrap(), (0, false));
    assert_eq!(store.purge_slice(later, 10, 2).unwrap(), (0, true));
    // `max` stops a slice early, and the next one goes on from there.
    let more: Vec<BindingChange> = (6..=8)
        .map(|id| BindingChange::Put(Box::new(record(id, "bob", &c, 10))))
        .collect();
    store.commit(&more, &c).unwrap();
    assert_eq!(store.purge_all_expired(later, 1).unwrap(), 3);
    assert_eq!(ids(&mut store), [2, 4]);
}

#[test]
fn the_expiry_index_of_an_older_store_is_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    drop(SqliteLocationStore::open(&path).unwrap());
    let indexes = || -> i64 {
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(indexes(), 0);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE INDEX bindings_expires_at ON bindings (expires_at)")
        .unwrap();
    assert_eq!(indexes(), 1);
    drop(SqliteLocationStore::open(&path).unwrap());
    assert_eq!(indexes(), 0);
}
