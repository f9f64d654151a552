//! What the nodes of one deployment share with the authenticator ([`SharedAuth`]): the uses of
//! nonces, so a nonce minted by node A is verified and its `nc` checked at node B, and the
//! failures, so a guesser's attempts at every node count against one budget.
//!
//! This file owns the seam and the fingerprint of a use; the implementation on Redis is
//! `cluster`'s. The authenticator calls [`SharedAuth::claim`] only after the nonce's MAC and
//! the digest verified (so only holders of real credentials claim anything), and after its own
//! replay table, which still refuses a local replay without a round trip.

use std::net::IpAddr;

use sha2::{Digest as _, Sha256};

/// A verified use of a nonce, as the nodes record it.
#[derive(Debug, Clone, Copy)]
pub struct NonceUse<'a> {
    pub nonce: &'a str,
    pub nc: u32,
    pub call_id: &'a str,
    pub source: IpAddr,
    /// How long the record must outlive the use: the nonce lifetime plus the clock drift
    /// allowed, after which the nonce is refused as stale anyway.
    pub ttl_secs: u64,
}

impl NonceUse<'_> {
    /// What ties later uses to the first one: the Call-ID and the source address, hashed
    /// (32 hex digits). A collision can only refuse a use, never accept one.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        // Length first, so that no Call-ID and address can pass for another pair.
        h.update((self.call_id.len() as u64).to_be_bytes());
        h.update(self.call_id.as_bytes());
        match self.source.to_canonical() {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        let digest = h.finalize();
        hex::encode(&digest[..16])
    }
}

/// What the shared record said of a use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The first use of the nonce anywhere, or a count above every count accepted before, from
    /// the first use's Call-ID and source: recorded.
    Accepted,
    /// A count not above one accepted at some node, or another Call-ID or source: a replay.
    Replayed,
    /// The shared store did not answer: the request is answered 503 with `Retry-After` (never
    /// accepted unchecked, never challenged again, which a phone would retry at once).
    Unavailable,
}

/// State shared by the nodes. Implementations block for at most their configured timeout.
pub trait SharedAuth: Send + Sync {
    /// Checks `use_` against every node's uses of its nonce and records it if accepted, in
    /// one atomic step.
    fn claim(&self, use_: &NonceUse<'_>) -> Claim;
    /// Reports one failure of `username` from `source` (the limiter key) to the other nodes.
    /// Must not block: a report that finds its queue full is dropped (the local limiter still
    /// counts it).
    fn failure(&self, username: &str, source: IpAddr);
}
