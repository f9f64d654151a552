//! Unit tests of the server transaction table, on a virtual clock.

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

/// The request every test transaction is opened with (only the compaction tests read it).
const REQ: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\r\n";

fn ok() -> Bytes {
    Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n")
}

#[test]
fn new_then_retransmission_absorbed_in_trying() {
    let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
    assert_eq!(
        table.on_request(&k, REQ, UDP, AUTH, t0),
        RequestDisposition::New
    );
    assert_eq!(
        table.on_request(&k, REQ, UDP, AUTH, t0 + SECOND),
        RequestDisposition::Absorb
    );
    assert_eq!(table.state(&k), Some(State::Trying));
    assert_eq!(table.len(), 1);
}

#[test]
fn provisional_then_final_response_are_replayed() {
    let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
    table.on_request(&k, REQ, UDP, AUTH, t0);
    let trying = Bytes::from_static(b"SIP/2.0 100 Trying\r\n\r\n");
    assert_eq!(table.on_response(&k, trying.clone(), 100, t0), Ok(()));
    assert_eq!(
        table.on_request(&k, REQ, UDP, AUTH, t0 + SECOND),
        RequestDisposition::Retransmit(trying)
    );
    assert_eq!(table.on_response(&k, ok(), 200, t0 + SECOND), Ok(()));
    for _ in 0..2 {
        assert_eq!(
            table.on_request(&k, REQ, UDP, AUTH, t0 + 2 * SECOND),
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
    table.on_request(&k, REQ, UDP, AUTH, t0);
    let answered = t0 + 5 * SECOND;
    assert_eq!(table.on_response(&k, ok(), 200, answered), Ok(()));
    assert_eq!(table.next_deadline(), Some(answered + 32 * SECOND));

    assert_eq!(table.poll(answered + 32 * SECOND - NANO), 0);
    assert_eq!(table.len(), 1);
    assert_eq!(
        table.on_request(&k, REQ, UDP, AUTH, answered + 32 * SECOND - NANO),
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
        table.on_request(&k, REQ, TCP, AUTH, t0),
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
    table.on_request(&k, REQ, TCP, AUTH, t0);
    assert_eq!(table.on_response(&k, Bytes::new(), 100, t0), Ok(()));
    assert_eq!(table.state(&k), Some(State::Proceeding));
    assert_eq!(table.len(), 1);
}

#[test]
fn trying_without_answer_times_out_after_64_t1() {
    let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK1", "REGISTER"));
    table.on_request(&k, REQ, UDP, AUTH, t0);
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
    table.on_request(&k, REQ, UDP, AUTH, t0);
    // The hung TU answers after 64*T1, before the driver polled: not sent, entry freed.
    assert_eq!(
        table.on_response(&k, ok(), 200, t0 + 40 * SECOND),
        Err(TransactionError::UnknownTransaction)
    );
    assert!(table.is_empty());
    assert_eq!(table.next_deadline(), None);

    // A request arriving after Timer J but before the poll opens a fresh transaction.
    table.on_request(&k, REQ, UDP, AUTH, t0);
    table.on_response(&k, ok(), 200, t0).expect("answered");
    assert_eq!(
        table.on_request(&k, REQ, UDP, AUTH, t0 + 32 * SECOND),
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
        table.on_request(&key("z9hG4bK1", "REGISTER"), REQ, UDP, AUTH, t0),
        RequestDisposition::New
    );
    assert_eq!(
        table.on_request(&key("z9hG4bK2", "REGISTER"), REQ, TCP, AUTH, t0),
        RequestDisposition::New
    );
    assert_eq!(
        table.on_request(&key("z9hG4bK3", "REGISTER"), REQ, UDP, AUTH, t0),
        RequestDisposition::Overloaded
    );
    // Retransmissions of known transactions are still served when full.
    assert_eq!(
        table.on_request(&key("z9hG4bK1", "REGISTER"), REQ, UDP, AUTH, t0),
        RequestDisposition::Absorb
    );
    assert_eq!(table.len(), 2);
    table
        .on_response(&key("z9hG4bK2", "REGISTER"), ok(), 200, t0)
        .expect("answered");
    assert_eq!(
        table.on_request(&key("z9hG4bK3", "REGISTER"), REQ, UDP, AUTH, t0),
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
            table.on_request(k, REQ, UDP, AUTH, at),
            RequestDisposition::New
        );
        table.on_response(k, ok(), 200, at).expect("answered");
    }
    assert_eq!(
        table.on_request(&k3, REQ, UDP, AUTH, t0),
        RequestDisposition::New
    );
    assert_eq!((table.len(), table.in_progress()), (3, 1));
    // Full: a new request, even one without credentials, takes k1's room (the oldest
    // answer), not k2's, and the transaction in progress stays.
    let k4 = key("z9hG4bK4", "REGISTER");
    assert_eq!(
        table.on_request(&k4, REQ, UDP, FIRST, t0 + 2 * SECOND),
        RequestDisposition::New
    );
    assert_eq!(table.state(&k1), None);
    assert_eq!(table.state(&k2), Some(State::Completed));
    assert_eq!(table.state(&k3), Some(State::Trying));
    assert_eq!((table.len(), table.evicted()), (3, 1));
    // k1's retransmission is processed afresh, in k2's room.
    assert_eq!(
        table.on_request(&k1, REQ, UDP, AUTH, t0 + 3 * SECOND),
        RequestDisposition::New
    );
    assert_eq!(table.state(&k2), None);
    // Nothing completed is left: refused, until a final response or a poll frees room.
    let k5 = key("z9hG4bK5", "REGISTER");
    assert_eq!(
        table.on_request(&k5, REQ, UDP, AUTH, t0),
        RequestDisposition::Overloaded
    );
    table
        .on_response(&k3, ok(), 200, t0 + 3 * SECOND)
        .expect("answered");
    assert_eq!(
        table.on_request(&k5, REQ, UDP, AUTH, t0),
        RequestDisposition::New
    );
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
        assert_eq!(
            table.on_request(&k, REQ, UDP, FIRST, t0),
            RequestDisposition::New
        );
    }
    // 14 of 16 in progress: the last eighth is kept for requests that can complete.
    assert_eq!(
        table.on_request(&key("z9hG4bKx", "INVITE"), REQ, UDP, FIRST, t0),
        RequestDisposition::Overloaded
    );
    assert!(!table.admits(FIRST) && table.admits(AUTH));
    for i in 14..16 {
        let k = key(&format!("z9hG4bK{i}"), "REGISTER");
        assert_eq!(
            table.on_request(&k, REQ, UDP, AUTH, t0),
            RequestDisposition::New
        );
    }
    assert_eq!(
        table.on_request(&key("z9hG4bKy", "REGISTER"), REQ, UDP, AUTH, t0),
        RequestDisposition::Overloaded
    );
    // Completed transactions do not count: once two are answered, both kinds get in again.
    for i in 0..3 {
        let k = key(&format!("z9hG4bK{i}"), "INVITE");
        table.on_response(&k, ok(), 486, t0).expect("answered");
    }
    assert_eq!(table.in_progress(), 13);
    assert_eq!(
        table.on_request(&key("z9hG4bKx", "INVITE"), REQ, UDP, FIRST, t0),
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
        table.on_request(&register, REQ, UDP, AUTH, t0),
        RequestDisposition::New
    );
    assert_eq!(
        table.on_request(&cancel, REQ, UDP, AUTH, t0),
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
        assert_eq!(
            table.on_request(&k, REQ, UDP, AUTH, at),
            RequestDisposition::New
        );
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
                    .filter(|_| table.on_request(&k, REQ, UDP, AUTH, t0) == RequestDisposition::New)
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
        table.on_request(&k, REQ, UDP, AUTH, t0),
        RequestDisposition::New
    );
    assert!(table.forget(&k));
    assert!(!table.forget(&k));
    assert_eq!(table.len(), 0);
    assert_eq!(table.next_deadline(), None);
    // The one slot is free again, and a retransmission opens a new transaction.
    assert_eq!(
        table.on_request(&k, REQ, UDP, AUTH, t0 + SECOND),
        RequestDisposition::New
    );
}

const REGISTER: &[u8] = b"REGISTER sip:bench.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-3111-1-2\r\n\
From: <sip:u100000@bench.test>;tag=1\r\nTo: <sip:u100000@bench.test>\r\n\
Call-ID: 1-3111@127.0.0.1\r\nCSeq: 2 REGISTER\r\n\
Contact: <sip:u100000@127.0.0.1:5070;transport=UDP>\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n";

const REGISTER_OK: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-3111-1-2;received=127.0.0.1\r\n\
From: <sip:u100000@bench.test>;tag=1\r\nTo: <sip:u100000@bench.test>;tag=5e1f0c2d9a8b7c6d\r\n\
Call-ID: 1-3111@127.0.0.1\r\nCSeq: 2 REGISTER\r\n\
Contact: <sip:u100000@127.0.0.1:5070;transport=UDP>;expires=3600\r\n\
Date: Mon, 07 Dec 2026 22:40:00 GMT\r\nContent-Length: 0\r\n\r\n";

#[test]
fn a_response_kept_over_its_request_is_replayed_byte_for_byte() {
    let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK-3111-1-2", "REGISTER"));
    assert_eq!(
        table.on_request(&k, REGISTER, UDP, AUTH, t0),
        RequestDisposition::New
    );
    assert_eq!(
        table.on_response_to(&k, REGISTER, REGISTER_OK, 200, t0),
        Ok(())
    );
    for at in [t0, t0 + 31 * SECOND] {
        assert_eq!(
            table.on_request(&k, REGISTER, UDP, AUTH, at),
            RequestDisposition::Retransmit(Bytes::from_static(REGISTER_OK))
        );
    }
    assert_eq!((table.len(), table.in_progress()), (1, 0));
}

#[test]
fn a_retransmission_that_does_not_rebuild_the_response_is_processed_afresh() {
    let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK-3111-1-2", "REGISTER"));
    table.on_request(&k, REGISTER, UDP, AUTH, t0);
    table
        .on_response_to(&k, REGISTER, REGISTER_OK, 200, t0)
        .expect("answered");
    // Same key, but a Call-ID the stored 200 would copy differs: never another 200's bytes.
    let other = String::from_utf8_lossy(REGISTER).replace("1-3111@", "2-3111@");
    assert_eq!(
        table.on_request(&k, other.as_bytes(), UDP, AUTH, t0 + SECOND),
        RequestDisposition::New
    );
    assert_eq!(table.state(&k), Some(State::Trying));
    assert_eq!((table.len(), table.in_progress()), (1, 1));
    // The replaced transaction's Timer J entry is stale: only the new deadline counts.
    assert_eq!(table.next_deadline(), Some(t0 + 33 * SECOND));
    assert_eq!(table.poll(t0 + 32 * SECOND), 0);
    assert_eq!(table.poll(t0 + 33 * SECOND), 1);
    assert!(table.is_empty());
}

#[test]
fn a_different_request_does_not_disturb_a_transaction_in_progress() {
    let (table, t0, k) = (table(), Instant::now(), key("z9hG4bK-3111-1-2", "REGISTER"));
    table.on_request(&k, REGISTER, UDP, AUTH, t0);
    let trying = b"SIP/2.0 100 Trying\r\nCall-ID: 1-3111@127.0.0.1\r\n\r\n";
    table
        .on_response_to(&k, REGISTER, trying, 100, t0)
        .expect("provisional");
    assert_eq!(
        table.on_request(&k, b"OPTIONS sip:x SIP/2.0\r\n\r\n", UDP, AUTH, t0),
        RequestDisposition::Absorb
    );
    assert_eq!(table.state(&k), Some(State::Proceeding));
    assert_eq!(
        table.on_request(&k, REGISTER, UDP, AUTH, t0),
        RequestDisposition::Retransmit(Bytes::from_static(trying))
    );
}
