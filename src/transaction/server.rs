//! The state machine of one non-INVITE server transaction (RFC 3261 §17.2.2, figure 8).
//!
//! This file owns the states, the stored response and the one deadline a transaction has. It
//! must not do I/O, read the clock or know about other transactions: events arrive with `now`
//! (a [`Tick`] of the table's clock), and the caller (the table) decides what to send and when
//! to remove the transaction.
//!
//! Deadlines: in Trying and Proceeding the deadline is creation + 64*T1. RFC 3261 has no timer
//! there (the TU is expected to answer), but the client's Timer F gives up after 64*T1, so a
//! transaction still without a final response by then means the TU died or the store hung; it is
//! terminated so the table cannot fill with orphans. A provisional response does not extend it.
//! In Completed the deadline is Timer J after the final response: 64*T1 on unreliable
//! transports, zero (terminate at once) on reliable ones. A deadline is reached when
//! `now >= deadline`.
//!
//! The record is compact (issue 22): a UDP transaction stays Completed for 32 s, so at
//! 30 000 requests/s a million of them are held. State, transport and deadline share one
//! word, and the response is one exact-size [`StoredResponse`]: 24 bytes plus that.

use super::compact::StoredResponse;
use super::{Tick, TransactionConfig, TransactionError};

/// The states of figure 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The request was handed to the TU; no response yet.
    Trying,
    /// The TU sent a provisional (1xx) response.
    Proceeding,
    /// The TU sent a final (200–699) response; waiting for Timer J to absorb retransmissions.
    Completed,
    /// Done; the table frees the entry.
    Terminated,
}

/// What to do with a retransmitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retransmission<'a> {
    /// Trying: drop it silently.
    Absorb,
    /// Proceeding or Completed: send the last response again.
    Send(&'a StoredResponse),
    /// The transaction has ended; the request starts a new one.
    Terminated,
}

/// Bits of [`ServerTransaction::meta`] above the deadline.
const STATE_SHIFT: u32 = 61;
const RELIABLE_BIT: u64 = 1 << 63;
const DEADLINE_MASK: u64 = (1 << STATE_SHIFT) - 1;

/// One non-INVITE server transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTransaction {
    /// Bits 0..61: the deadline (see the module docs; meaningless once Terminated), in
    /// nanoseconds of the table's clock (73 years); bits 61..63: the [`State`]; bit 63: the
    /// transport is reliable (Timer J is then zero).
    meta: u64,
    /// The last response the TU sent, replayed on retransmissions in Proceeding/Completed.
    response: Option<StoredResponse>,
}

impl ServerTransaction {
    /// A transaction created by a new request at `now`, in Trying.
    pub fn new(reliable: bool, now: Tick, config: &TransactionConfig) -> Self {
        let mut tx = Self {
            meta: if reliable { RELIABLE_BIT } else { 0 },
            response: None,
        };
        tx.set(State::Trying, now.after(config.timeout()));
        tx
    }

    /// The current state (as of the last event; call [`Self::handle_timeout`] to advance it).
    pub fn state(&self) -> State {
        match (self.meta >> STATE_SHIFT) & 0b11 {
            0 => State::Trying,
            1 => State::Proceeding,
            2 => State::Completed,
            _ => State::Terminated,
        }
    }

    /// Whether the request came over a reliable transport.
    pub fn is_reliable(&self) -> bool {
        self.meta & RELIABLE_BIT != 0
    }

    /// When this transaction next needs [`Self::handle_timeout`]; `None` once Terminated.
    pub fn deadline(&self) -> Option<Tick> {
        (self.state() != State::Terminated).then_some(Tick::from_nanos(self.meta & DEADLINE_MASK))
    }

    /// Terminates the transaction if its deadline has been reached.
    pub fn handle_timeout(&mut self, now: Tick) {
        if self.deadline().is_some_and(|deadline| now >= deadline) {
            self.terminate();
        }
    }

    /// A retransmission of the request that created this transaction arrived at `now`.
    pub fn on_retransmission(&mut self, now: Tick) -> Retransmission<'_> {
        self.handle_timeout(now);
        match (self.state(), &self.response) {
            (State::Terminated, _) => Retransmission::Terminated,
            (State::Proceeding | State::Completed, Some(response)) => {
                Retransmission::Send(response)
            }
            (State::Trying | State::Proceeding | State::Completed, _) => Retransmission::Absorb,
        }
    }

    /// The TU sends a response with `status` at `now`; `store` makes its stored form, and is
    /// called only if the response is kept. `Ok` means the caller sends it; an error means it
    /// must not (the transaction ended or already has a final response).
    pub fn on_response(
        &mut self,
        status: u16,
        now: Tick,
        config: &TransactionConfig,
        store: impl FnOnce() -> StoredResponse,
    ) -> Result<(), TransactionError> {
        if !(100..=699).contains(&status) {
            return Err(TransactionError::InvalidStatus(status));
        }
        self.handle_timeout(now);
        match self.state() {
            State::Terminated => Err(TransactionError::UnknownTransaction),
            State::Completed => Err(TransactionError::AlreadyCompleted),
            State::Trying | State::Proceeding if status < 200 => {
                let deadline = self.meta & DEADLINE_MASK;
                self.set(State::Proceeding, Tick::from_nanos(deadline));
                self.response = Some(store());
                Ok(())
            }
            State::Trying | State::Proceeding => {
                let timer_j = config.timer_j(self.is_reliable());
                if timer_j.is_zero() {
                    self.terminate();
                } else {
                    self.set(State::Completed, now.after(timer_j));
                    self.response = Some(store());
                }
                Ok(())
            }
        }
    }

    fn set(&mut self, state: State, deadline: Tick) {
        let state = match state {
            State::Trying => 0,
            State::Proceeding => 1,
            State::Completed => 2,
            State::Terminated => 3,
        };
        self.meta = (self.meta & RELIABLE_BIT)
            | (state << STATE_SHIFT)
            | deadline.nanos().min(DEADLINE_MASK);
    }

    fn terminate(&mut self) {
        self.set(State::Terminated, Tick::from_nanos(0));
        self.response = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn at(after: Duration) -> Tick {
        Tick::from_nanos(1_000).after(after)
    }

    fn udp(now: Tick) -> ServerTransaction {
        ServerTransaction::new(false, now, &TransactionConfig::default())
    }

    fn respond(
        tx: &mut ServerTransaction,
        bytes: &[u8],
        status: u16,
        now: Tick,
    ) -> Result<(), TransactionError> {
        tx.on_response(status, now, &TransactionConfig::default(), || {
            StoredResponse::verbatim(bytes)
        })
    }

    #[test]
    fn the_record_is_one_word_and_a_pointer() {
        assert_eq!(std::mem::size_of::<ServerTransaction>(), 24);
    }

    #[test]
    fn trying_absorbs_then_proceeding_and_completed_replay() {
        let t0 = at(Duration::ZERO);
        let mut tx = udp(t0);
        assert_eq!(tx.on_retransmission(t0), Retransmission::Absorb);

        let trying = b"SIP/2.0 100 Trying\r\n\r\n";
        assert_eq!(respond(&mut tx, trying, 100, at(SECOND)), Ok(()));
        assert_eq!(tx.state(), State::Proceeding);
        assert_eq!(
            tx.on_retransmission(at(SECOND)),
            Retransmission::Send(&StoredResponse::verbatim(trying))
        );

        let ok = b"SIP/2.0 200 OK\r\n\r\n";
        assert_eq!(respond(&mut tx, ok, 200, at(2 * SECOND)), Ok(()));
        assert_eq!(tx.state(), State::Completed);
        assert_eq!(tx.deadline(), Some(at(34 * SECOND)));
        assert_eq!(
            tx.on_retransmission(at(3 * SECOND)),
            Retransmission::Send(&StoredResponse::verbatim(ok))
        );
        assert_eq!(
            respond(&mut tx, b"late", 500, at(3 * SECOND)),
            Err(TransactionError::AlreadyCompleted)
        );
    }

    #[test]
    fn reliable_final_response_terminates_at_once_without_storing() {
        let t0 = at(Duration::ZERO);
        let mut tx = ServerTransaction::new(true, t0, &TransactionConfig::default());
        assert!(tx.is_reliable());
        let stored = tx.on_response(404, t0, &TransactionConfig::default(), || {
            unreachable!("a reliable final is not kept")
        });
        assert_eq!(stored, Ok(()));
        assert_eq!(tx.state(), State::Terminated);
        assert_eq!(tx.deadline(), None);
        assert_eq!(tx.on_retransmission(t0), Retransmission::Terminated);
    }

    #[test]
    fn invalid_status_is_rejected_without_state_change() {
        let t0 = at(Duration::ZERO);
        let mut tx = udp(t0);
        for status in [0, 99, 700, u16::MAX] {
            assert_eq!(
                respond(&mut tx, b"", status, t0),
                Err(TransactionError::InvalidStatus(status))
            );
        }
        assert_eq!(tx.state(), State::Trying);
    }

    #[test]
    fn proceeding_times_out_from_creation() {
        let t0 = at(Duration::ZERO);
        let mut tx = udp(t0);
        assert_eq!(respond(&mut tx, b"", 180, at(31 * SECOND)), Ok(()));
        assert_eq!(tx.deadline(), Some(at(32 * SECOND)));
        tx.handle_timeout(at(32 * SECOND));
        assert_eq!(tx.state(), State::Terminated);
        assert_eq!(
            respond(&mut tx, b"", 200, at(32 * SECOND)),
            Err(TransactionError::UnknownTransaction)
        );
    }
}
