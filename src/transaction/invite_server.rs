//! RFC 3261 §17.2.1 INVITE server transaction with the RFC 6026 Accepted state, as a state
//! machine with no I/O: the proxy keeps one per forwarded INVITE and sends what
//! [`InviteServer::poll`] asks for.
//!
//! | timer | meaning |
//! | --- | --- |
//! | G | unreliable transport: retransmit the non-2xx final, T1 doubling up to T2, until the ACK |
//! | H | no ACK within 64·T1 after a non-2xx final: give up |
//! | I | after the ACK, absorb ACK retransmissions for T4 (0 on reliable transports) |
//! | L | after a 2xx (RFC 6026 Accepted), absorb INVITE retransmissions for 64·T1 |

use std::time::{Duration, Instant};

use super::client::{T2, T4};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// What the caller does after [`InviteServer::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerTimer {
    /// Send the non-2xx final again (Timer G).
    RetransmitFinal,
    /// No ACK came (Timer H).
    AckTimeout,
}

#[derive(Debug, Clone)]
pub struct InviteServer {
    state: InviteServerState,
    reliable: bool,
    t1: Duration,
    retransmit_at: Option<Instant>,
    interval: Duration,
    deadline: Option<Instant>,
}

impl InviteServer {
    pub fn new(reliable: bool, t1: Duration) -> InviteServer {
        InviteServer {
            state: InviteServerState::Proceeding,
            reliable,
            t1,
            retransmit_at: None,
            interval: t1,
            deadline: None,
        }
    }

    pub fn state(&self) -> InviteServerState {
        self.state
    }

    /// A final response with `status` was sent upstream at `now`.
    pub fn on_final(&mut self, status: u16, now: Instant) {
        if self.state != InviteServerState::Proceeding {
            return;
        }
        if (200..300).contains(&status) {
            self.state = InviteServerState::Accepted;
            self.deadline = Some(now + self.t1 * 64);
        } else {
            self.state = InviteServerState::Completed;
            self.retransmit_at = (!self.reliable).then(|| now + self.t1);
            self.deadline = Some(now + self.t1 * 64);
        }
    }

    /// The ACK for a non-2xx final arrived. True if it was the first (it stops Timer G).
    pub fn on_ack(&mut self, now: Instant) -> bool {
        if self.state != InviteServerState::Completed {
            return false;
        }
        self.state = InviteServerState::Confirmed;
        self.retransmit_at = None;
        self.deadline = Some(now + if self.reliable { Duration::ZERO } else { T4 });
        true
    }

    /// When [`Self::poll`] next has work; `None` while Proceeding (the TU decides) or once
    /// terminated.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.retransmit_at, self.deadline) {
            (Some(r), Some(d)) => Some(r.min(d)),
            (r, d) => r.or(d),
        }
    }

    /// Advances the timers to `now`; at most one event per call.
    pub fn poll(&mut self, now: Instant) -> Option<InviteServerTimer> {
        if self.deadline.is_some_and(|d| now >= d) {
            let timed_out = self.state == InviteServerState::Completed;
            self.state = InviteServerState::Terminated;
            self.retransmit_at = None;
            self.deadline = None;
            return timed_out.then_some(InviteServerTimer::AckTimeout);
        }
        match self.retransmit_at {
            Some(at) if now >= at && self.state == InviteServerState::Completed => {
                self.interval = (self.interval * 2).min(T2);
                self.retransmit_at = Some(now + self.interval);
                Some(InviteServerTimer::RetransmitFinal)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: Duration = Duration::from_millis(500);

    #[test]
    fn timer_g_retransmits_until_ack_then_timer_i() {
        let start = Instant::now();
        let mut s = InviteServer::new(false, T1);
        s.on_final(486, start);
        let mut at = Vec::new();
        let mut now = start;
        while now < start + Duration::from_secs(10) {
            if s.poll(now) == Some(InviteServerTimer::RetransmitFinal) {
                at.push((now - start).as_millis());
            }
            now += Duration::from_millis(10);
        }
        // T1, 2T1, 4T1, then every T2.
        assert_eq!(at, [500, 1500, 3500, 7500]);
        assert!(s.on_ack(now));
        assert!(!s.on_ack(now), "an ACK retransmission is absorbed");
        assert_eq!(s.poll(now + T4 - Duration::from_millis(1)), None);
        assert_eq!(s.state(), InviteServerState::Confirmed);
        s.poll(now + T4);
        assert_eq!(s.state(), InviteServerState::Terminated);
    }

    #[test]
    fn timer_h_gives_up_without_ack() {
        let start = Instant::now();
        let mut s = InviteServer::new(true, T1);
        s.on_final(404, start);
        assert_eq!(
            s.poll(start + T1),
            None,
            "no Timer G on a reliable transport"
        );
        assert_eq!(s.poll(start + T1 * 64), Some(InviteServerTimer::AckTimeout));
        assert_eq!(s.state(), InviteServerState::Terminated);
    }

    #[test]
    fn timer_l_after_2xx() {
        let start = Instant::now();
        let mut s = InviteServer::new(false, T1);
        s.on_final(200, start);
        assert_eq!(s.state(), InviteServerState::Accepted);
        assert!(
            !s.on_ack(start),
            "the ACK for a 2xx is end to end, not ours"
        );
        assert_eq!(s.poll(start + T1 * 63), None);
        s.poll(start + T1 * 64);
        assert_eq!(s.state(), InviteServerState::Terminated);
    }
}
