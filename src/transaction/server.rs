//! The state machine of one non-INVITE server transaction (RFC 3261 §17.2.2, figure 8).
//!
//! This file owns the states, the stored response and the one deadline a transaction has. It
//! must not do I/O, read the clock or know about other transactions: events arrive with `now`,
//! and the caller (the table) decides what to send and when to remove the transaction.
//!
//! Deadlines: in Trying and Proceeding the deadline is creation + 64*T1. RFC 3261 has no timer
//! there (the TU is expected to answer), but the client's Timer F gives up after 64*T1, so a
//! transaction still without a final response by then means the TU died or the store hung; it is
//! terminated so the table cannot fill with orphans. A provisional response does not extend it.
//! In Completed the deadline is Timer J after the final response: 64*T1 on unreliable
//! transports, zero (terminate at once) on reliable ones. A deadline is reached when
//! `now >= deadline`.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{deadline_after, TransactionConfig, TransactionError};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retransmission {
    /// Trying: drop it silently.
    Absorb,
    /// Proceeding or Completed: send the last response again.
    Send(Bytes),
    /// The transaction has ended; the request starts a new one.
    Terminated,
}

/// One non-INVITE server transaction.
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    state: State,
    /// Timer J for this transaction's transport, fixed at creation (zero when reliable).
    timer_j: Duration,
    /// The last response the TU sent, replayed on retransmissions in Proceeding/Completed.
    last_response: Option<Bytes>,
    /// When the current state ends (see the module docs); meaningless once Terminated.
    deadline: Instant,
}

impl ServerTransaction {
    /// A transaction created by a new request at `now`, in Trying.
    pub fn new(reliable: bool, now: Instant, config: &TransactionConfig) -> Self {
        Self {
            state: State::Trying,
            timer_j: config.timer_j(reliable),
            last_response: None,
            deadline: deadline_after(now, config.timeout()),
        }
    }

    /// The current state (as of the last event; call [`Self::handle_timeout`] to advance it).
    pub fn state(&self) -> State {
        self.state
    }

    /// When this transaction next needs [`Self::handle_timeout`]; `None` once Terminated.
    pub fn deadline(&self) -> Option<Instant> {
        (self.state != State::Terminated).then_some(self.deadline)
    }

    /// Terminates the transaction if its deadline has been reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Terminated && now >= self.deadline {
            self.terminate();
        }
    }

    /// A retransmission of the request that created this transaction arrived at `now`.
    pub fn on_retransmission(&mut self, now: Instant) -> Retransmission {
        self.handle_timeout(now);
        match (self.state, &self.last_response) {
            (State::Terminated, _) => Retransmission::Terminated,
            (State::Proceeding | State::Completed, Some(response)) => {
                Retransmission::Send(response.clone())
            }
            (State::Trying | State::Proceeding | State::Completed, _) => Retransmission::Absorb,
        }
    }

    /// The TU sends `response` with `status` at `now`. `Ok` means the caller sends it; an error
    /// means it must not (the transaction ended or already has a final response).
    pub fn on_response(
        &mut self,
        response: Bytes,
        status: u16,
        now: Instant,
    ) -> Result<(), TransactionError> {
        if !(100..=699).contains(&status) {
            return Err(TransactionError::InvalidStatus(status));
        }
        self.handle_timeout(now);
        match self.state {
            State::Terminated => Err(TransactionError::UnknownTransaction),
            State::Completed => Err(TransactionError::AlreadyCompleted),
            State::Trying | State::Proceeding if status < 200 => {
                self.state = State::Proceeding;
                self.last_response = Some(response);
                Ok(())
            }
            State::Trying | State::Proceeding => {
                if self.timer_j.is_zero() {
                    self.terminate();
                } else {
                    self.state = State::Completed;
                    self.last_response = Some(response);
                    self.deadline = deadline_after(now, self.timer_j);
                }
                Ok(())
            }
        }
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.last_response = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn udp(now: Instant) -> ServerTransaction {
        ServerTransaction::new(false, now, &TransactionConfig::default())
    }

    #[test]
    fn trying_absorbs_then_proceeding_and_completed_replay() {
        let t0 = Instant::now();
        let mut tx = udp(t0);
        assert_eq!(tx.on_retransmission(t0), Retransmission::Absorb);

        let trying = Bytes::from_static(b"SIP/2.0 100 Trying\r\n\r\n");
        assert_eq!(tx.on_response(trying.clone(), 100, t0 + SECOND), Ok(()));
        assert_eq!(tx.state(), State::Proceeding);
        assert_eq!(
            tx.on_retransmission(t0 + SECOND),
            Retransmission::Send(trying)
        );

        let ok = Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n");
        assert_eq!(tx.on_response(ok.clone(), 200, t0 + 2 * SECOND), Ok(()));
        assert_eq!(tx.state(), State::Completed);
        assert_eq!(tx.deadline(), Some(t0 + 34 * SECOND));
        assert_eq!(
            tx.on_retransmission(t0 + 3 * SECOND),
            Retransmission::Send(ok)
        );
        assert_eq!(
            tx.on_response(Bytes::from_static(b"late"), 500, t0 + 3 * SECOND),
            Err(TransactionError::AlreadyCompleted)
        );
    }

    #[test]
    fn reliable_final_response_terminates_at_once() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(true, t0, &TransactionConfig::default());
        assert_eq!(tx.on_response(Bytes::new(), 404, t0), Ok(()));
        assert_eq!(tx.state(), State::Terminated);
        assert_eq!(tx.deadline(), None);
        assert_eq!(tx.on_retransmission(t0), Retransmission::Terminated);
    }

    #[test]
    fn invalid_status_is_rejected_without_state_change() {
        let t0 = Instant::now();
        let mut tx = udp(t0);
        for status in [0, 99, 700, u16::MAX] {
            assert_eq!(
                tx.on_response(Bytes::new(), status, t0),
                Err(TransactionError::InvalidStatus(status))
            );
        }
        assert_eq!(tx.state(), State::Trying);
    }

    #[test]
    fn proceeding_times_out_from_creation() {
        let t0 = Instant::now();
        let mut tx = udp(t0);
        assert_eq!(tx.on_response(Bytes::new(), 180, t0 + 31 * SECOND), Ok(()));
        assert_eq!(tx.deadline(), Some(t0 + 32 * SECOND));
        tx.handle_timeout(t0 + 32 * SECOND);
        assert_eq!(tx.state(), State::Terminated);
        assert_eq!(
            tx.on_response(Bytes::new(), 200, t0 + 32 * SECOND),
            Err(TransactionError::UnknownTransaction)
        );
    }
}
