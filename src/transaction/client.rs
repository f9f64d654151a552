//! RFC 3261 §17.1 client transactions (INVITE and non-INVITE) with the RFC 6026 fix for 2xx,
//! as state machines with no I/O: every event takes `now`, and the caller sends what the
//! returned action says.
//!
//! | timer | transaction | meaning |
//! | --- | --- | --- |
//! | A | INVITE, unreliable | retransmit the request: T1, 2·T1, 4·T1 … |
//! | B | INVITE | no response at all within 64·T1: timeout |
//! | C | INVITE at a proxy | no final within 3 min of the last provisional: timeout (§16.8) |
//! | D | INVITE | linger after a non-2xx final to re-ACK its retransmissions (32 s, 0 reliable) |
//! | E | non-INVITE, unreliable | retransmit: T1 doubling up to T2; T2 once Proceeding |
//! | F | non-INVITE | no final within 64·T1: timeout |
//! | K | non-INVITE | linger after the final to absorb retransmissions (T4, 0 reliable) |
//! | M | INVITE (RFC 6026) | linger after a 2xx to pass up its retransmissions (64·T1) |

use std::time::{Duration, Instant};

/// RFC 3261 T2: the cap of non-INVITE retransmission intervals.
pub const T2: Duration = Duration::from_secs(4);
/// RFC 3261 T4: how long the network may hold a message.
pub const T4: Duration = Duration::from_secs(5);
/// RFC 3261 §16.8 Timer C: a proxy's wait for a final response after a provisional.
pub const TIMER_C: Duration = Duration::from_secs(180);
/// RFC 3261 Timer D on unreliable transports.
pub const TIMER_D: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Invite,
    NonInvite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE Calling, or non-INVITE Trying: request sent, no response yet.
    Calling,
    Proceeding,
    /// Final response received; lingering (Timers D, K).
    Completed,
    /// INVITE after a 2xx (RFC 6026): further 2xx are passed up (Timer M).
    Accepted,
    Terminated,
}

/// What the caller does after a timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTimer {
    /// Send the request again (Timers A, E).
    Retransmit,
    /// The transaction timed out (Timers B, C, F): tell the TU (a proxy synthesizes 408).
    Timeout,
}

/// What the caller does with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientResponse {
    /// Hand it to the TU.
    PassUp,
    /// A non-2xx final to an INVITE, first time: hand it to the TU and send the ACK.
    PassUpAndAck,
    /// A retransmitted non-2xx final to an INVITE: send the ACK again, nothing else.
    ReAck,
    /// A retransmission or a late response: ignore it.
    Absorb,
}

#[derive(Debug, Clone)]
pub struct ClientTransaction {
    kind: ClientKind,
    reliable: bool,
    state: ClientState,
    t1: Duration,
    /// Next retransmission (Timers A, E).
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timers B, C, F (timeout) or D, K, M (end of the linger).
    deadline: Instant,
}

impl ClientTransaction {
    /// A transaction whose request was just sent at `now`.
    pub fn new(kind: ClientKind, reliable: bool, t1: Duration, now: Instant) -> Self {
        ClientTransaction {
            kind,
            reliable,
            state: ClientState::Calling,
            t1,
            retransmit_at: (!reliable).then(|| now + t1),
            interval: t1,
            deadline: now + t1 * 64,
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn kind(&self) -> ClientKind {
        self.kind
    }

    /// Whether a final response has been received (or the transaction ended).
    pub fn is_final(&self) -> bool {
        !matches!(self.state, ClientState::Calling | ClientState::Proceeding)
    }

    /// When [`Self::poll`] next has something to do; `None` once terminated.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.state == ClientState::Terminated {
            return None;
        }
        Some(match self.retransmit_at {
            Some(r) => r.min(self.deadline),
            None => self.deadline,
        })
    }

    /// Advances the timers to `now`; at most one event per call (call again while it
    /// returns `Some`).
    pub fn poll(&mut self, now: Instant) -> Option<ClientTimer> {
        match self.state {
            ClientState::Terminated => None,
            ClientState::Completed | ClientState::Accepted => {
                if now >= self.deadline {
                    self.state = ClientState::Terminated;
                }
                None
            }
            ClientState::Calling | ClientState::Proceeding => {
                if now >= self.deadline {
                    self.state = ClientState::Terminated;
                    self.retransmit_at = None;
                    return Some(ClientTimer::Timeout);
                }
                match self.retransmit_at {
                    Some(at) if now >= at => {
                        self.interval = match (self.kind, self.state) {
                            (ClientKind::Invite, _) => self.interval * 2,
                            (ClientKind::NonInvite, ClientState::Proceeding) => T2,
                            (ClientKind::NonInvite, _) => (self.interval * 2).min(T2),
                        };
                        self.retransmit_at = Some(now + self.interval);
                        Some(ClientTimer::Retransmit)
                    }
                    _ => None,
                }
            }
        }
    }

    /// A response with `status` arrived at `now`.
    pub fn on_response(&mut self, status: u16, now: Instant) -> ClientResponse {
        match (self.kind, self.state) {
            (_, ClientState::Terminated) => ClientResponse::Absorb,
            (ClientKind::Invite, ClientState::Calling | ClientState::Proceeding) => match status {
                100..=199 => {
                    self.state = ClientState::Proceeding;
                    self.retransmit_at = None;
                    // Timer C replaces Timer B once the callee is alive.
                    self.deadline = now + TIMER_C;
                    ClientResponse::PassUp
                }
                200..=299 => {
                    self.state = ClientState::Accepted;
                    self.retransmit_at = None;
                    self.deadline = now + self.t1 * 64;
                    ClientResponse::PassUp
                }
                _ => {
                    self.state = ClientState::Completed;
                    self.retransmit_at = None;
                    self.deadline = now
                        + if self.reliable {
                            Duration::ZERO
                        } else {
                            TIMER_D
                        };
                    ClientResponse::PassUpAndAck
                }
            },
            (ClientKind::Invite, ClientState::Accepted) if (200..300).contains(&status) => {
                ClientResponse::PassUp
            }
            (ClientKind::Invite, ClientState::Completed) if status >= 300 => ClientResponse::ReAck,
            (ClientKind::Invite, _) => ClientResponse::Absorb,
            (ClientKind::NonInvite, ClientState::Calling | ClientState::Proceeding) => {
                if status < 200 {
                    self.state = ClientState::Proceeding;
                    if self.retransmit_at.is_some() {
                        self.retransmit_at = Some(now + T2);
                    }
                } else {
                    self.state = ClientState::Completed;
                    self.retransmit_at = None;
                    self.deadline = now + if self.reliable { Duration::ZERO } else { T4 };
                }
                ClientResponse::PassUp
            }
            (ClientKind::NonInvite, _) => ClientResponse::Absorb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: Duration = Duration::from_millis(500);

    /// Polls every 10 ms of virtual time from `from` to `to`; returns (offset, event) pairs.
    fn run(t: &mut ClientTransaction, from: Instant, to: Duration) -> Vec<(Duration, ClientTimer)> {
        let mut out = Vec::new();
        let mut now = from;
        while now <= from + to {
            while let Some(e) = t.poll(now) {
                out.push((now - from, e));
            }
            now += Duration::from_millis(10);
        }
        out
    }

    #[test]
    fn invite_over_udp_retransmits_on_timer_a_and_times_out_on_timer_b() {
        let start = Instant::now();
        let mut t = ClientTransaction::new(ClientKind::Invite, false, T1, start);
        let events = run(&mut t, start, Duration::from_secs(40));
        let retransmits: Vec<u64> = events
            .iter()
            .filter(|(_, e)| *e == ClientTimer::Retransmit)
            .map(|(at, _)| at.as_millis() as u64)
            .collect();
        // 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s: doubling intervals.
        assert_eq!(retransmits, [500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(
            events.last(),
            Some(&(Duration::from_secs(32), ClientTimer::Timeout))
        );
        assert_eq!(t.state(), ClientState::Terminated);
    }

    #[test]
    fn invite_over_tcp_never_retransmits() {
        let start = Instant::now();
        let mut t = ClientTransaction::new(ClientKind::Invite, true, T1, start);
        let events = run(&mut t, start, Duration::from_secs(33));
        assert_eq!(events, [(Duration::from_secs(32), ClientTimer::Timeout)]);
    }

    #[test]
    fn provisional_stops_timer_a_and_starts_timer_c() {
        let start = Instant::now();
        let mut t = ClientTransaction::new(ClientKind::Invite, false, T1, start);
        assert_eq!(t.on_response(180, start + T1 / 2), ClientResponse::PassUp);
        let events = run(&mut t, start, Duration::from_secs(60));
        assert!(
            events.is_empty(),
            "no retransmission, no Timer B: {events:?}"
        );
        let c = start + T1 / 2 + TIMER_C;
        assert_eq!(t.poll(c - Duration::from_millis(1)), None);
        assert_eq!(t.poll(c), Some(ClientTimer::Timeout));
    }

    #[test]
    fn non_2xx_final_is_acked_once_then_reacked_until_timer_d() {
        let start = Instant::now();
        let mut t = ClientTransaction::new(ClientKind::Invite, false, T1, start);
        assert_eq!(t.on_response(486, start), ClientResponse::PassUpAndAck);
        assert_eq!(t.on_response(486, start + T1), ClientResponse::ReAck);
        assert_eq!(t.on_response(180, start + T1), ClientResponse::Absorb);
        assert_eq!(t.poll(start + TIMER_D - T1), None);
        assert_eq!(t.state(), ClientState::Completed);
        t.poll(start + TIMER_D);
        assert_eq!(t.state(), ClientState::Terminated);
        assert_eq!(t.on_response(486, start + TIMER_D), ClientResponse::Absorb);
    }

    #[test]
    fn rfc6026_2xx_retransmissions_pass_up_until_timer_m() {
        let start = Instant::now();
        let mut t = ClientTransaction::new(ClientKind::Invite, false, T1, start);
        assert_eq!(t.on_response(200, start), ClientResponse::PassUp);
        assert_eq!(t.state(), ClientState::Accepted);
        assert_eq!(t.on_response(200, start + T1), ClientResponse::PassUp);
        assert_eq!(t.on_response(487, start + T1), ClientResponse::Absorb);
        t.poll(start + T1 * 64);
        assert_eq!(t.state(), ClientState::Terminated);
    }

    #[test]
    fn non_invite_timer_e_caps_at_t2_and_timer_f_times_out() {
        let start = Instant::now();
        let mut t = ClientTransaction::new(ClientKind::NonInvite, false, T1, start);
        let events = run(&mut t, start, Duration::from_secs(33));
        let retransmits: Vec<u64> = events
            .iter()
            .filter(|(_, e)| *e == ClientTimer::Retransmit)
            .map(|(at, _)| at.as_millis() as u64)
            .collect();
        assert_eq!(
            &retransmits[..6],
            [500, 1500, 3500, 7500, 11500, 15500],
            "T1, 2T1, 4T1, then T2"
        );
        assert_eq!(
            events.last(),
            Some(&(Duration::from_secs(32), ClientTimer::Timeout))
        );
    }

    #[test]
    fn non_invite_proceeding_retransmits_every_t2_and_final_lingers_t4() {
        let start = Instant::now();
        let mut t = ClientTransaction::new(ClientKind::NonInvite, false, T1, start);
        assert_eq!(t.on_response(100, start), ClientResponse::PassUp);
        assert_eq!(t.poll(start + T2 - Duration::from_millis(1)), None);
        assert_eq!(t.poll(start + T2), Some(ClientTimer::Retransmit));
        assert_eq!(t.on_response(200, start + T2), ClientResponse::PassUp);
        assert_eq!(t.on_response(200, start + T2), ClientResponse::Absorb);
        t.poll(start + T2 + T4);
        assert_eq!(t.state(), ClientState::Terminated);
    }

    #[test]
    fn reliable_finals_end_at_once() {
        let start = Instant::now();
        let mut t = ClientTransaction::new(ClientKind::NonInvite, true, T1, start);
        assert_eq!(t.on_response(200, start), ClientResponse::PassUp);
        t.poll(start);
        assert_eq!(t.state(), ClientState::Terminated);
        let mut i = ClientTransaction::new(ClientKind::Invite, true, T1, start);
        assert_eq!(i.on_response(603, start), ClientResponse::PassUpAndAck);
        i.poll(start);
        assert_eq!(i.state(), ClientState::Terminated);
    }
}
