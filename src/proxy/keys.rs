//! The proxy's per-process secrets and what is derived from them: the loop-detection hash in
//! our Via branches (RFC 3261 §16.3 step 4) and the signed flow token in our Record-Route
//! URIs. Pure functions of a message or two flow ids; no state beyond the keys.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::sip::Message;
use crate::transport::FlowId;

/// Branch prefix of every Via we add: the RFC 3261 cookie plus ours.
pub const BRANCH_PREFIX: &str = "z9hG4bKsw";

/// Keys made once per process; cheap to clone (clones share the keys).
#[derive(Clone)]
pub(crate) struct Keys {
    /// Keys the loop-detection hash and the stateless ACK branches.
    hasher: RandomState,
    /// Keys the Record-Route flow tokens' MAC.
    token_key: [u8; 32],
}

impl Keys {
    pub(crate) fn random() -> Keys {
        let mut token_key = [0u8; 32];
        rand::fill(&mut token_key);
        Keys {
            hasher: RandomState::new(),
            token_key,
        }
    }

    /// RFC 3261 §16.3 step 4: the request already passed here with the same Request-URI,
    /// From tag, Call-ID and CSeq (a loop, not a spiral).
    pub(crate) fn is_loop(&self, msg: &Message) -> bool {
        let mine = self.loop_hash(msg);
        msg.vias().filter_map(Result::ok).any(|v| {
            v.branch()
                .and_then(|b| b.strip_prefix(BRANCH_PREFIX))
                .and_then(|rest| rest.split('.').next())
                .is_some_and(|h| h == mine)
        })
    }

    /// The hash of what §16.3 step 4 compares, as the first part of our branch ids.
    pub(crate) fn loop_hash(&self, msg: &Message) -> String {
        let mut h = self.hasher.build_hasher();
        h.write(msg.request_uri().unwrap_or("").as_bytes());
        h.write_u8(0);
        h.write(msg.from_tag().unwrap_or("").as_bytes());
        h.write_u8(0);
        h.write(msg.call_id().unwrap_or("").as_bytes());
        h.write_u32(msg.cseq().map(|c| c.seq).unwrap_or(0));
        format!("{:016x}", h.finish())
    }

    /// A branch for a stateless forward that is the same for every retransmission: derived
    /// from the incoming top Via's branch.
    pub(crate) fn stateless_branch(&self, msg: &Message) -> String {
        let mut h = self.hasher.build_hasher();
        h.write(
            msg.top_via()
                .ok()
                .and_then(|v| v.branch())
                .unwrap_or("")
                .as_bytes(),
        );
        format!("{BRANCH_PREFIX}{:016x}.a", h.finish())
    }

    /// The Record-Route URI user part for a request that came in on `inbound` and leaves on
    /// `outbound`: both flows and a MAC, so nobody can steer requests into other flows.
    pub(crate) fn flow_token(&self, inbound: Option<FlowId>, outbound: Option<FlowId>) -> String {
        let (a, b) = (inbound.map_or(0, |f| f.0), outbound.map_or(0, |f| f.0));
        format!("f{a:x}x{b:x}x{}", self.token_mac(a, b))
    }

    fn token_mac(&self, a: u64, b: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.token_key).expect("HMAC takes any key");
        mac.update(&a.to_be_bytes());
        mac.update(&b.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// The two flows of a token from one of our Record-Route URIs, if its MAC is ours
    /// (compared in constant time).
    pub(crate) fn flows_of_token(&self, user: &str) -> Option<(Option<FlowId>, Option<FlowId>)> {
        let rest = user.strip_prefix('f')?;
        let mut parts = rest.split('x');
        let a = u64::from_str_radix(parts.next()?, 16).ok()?;
        let b = u64::from_str_radix(parts.next()?, 16).ok()?;
        let mac = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let want = self.token_mac(a, b);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            want.as_bytes(),
            mac.as_bytes(),
        )) {
            return None;
        }
        let flow = |n: u64| (n != 0).then_some(FlowId(n));
        Some((flow(a), flow(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_tokens_round_trip_and_refuse_forgeries() {
        let k = Keys::random();
        let token = k.flow_token(Some(FlowId(7)), None);
        assert_eq!(k.flows_of_token(&token), Some((Some(FlowId(7)), None)));
        // Another flow with the same MAC, a truncated MAC, extra parts: refused.
        let mac = token.rsplit('x').next().unwrap();
        assert_eq!(k.flows_of_token(&format!("f8x0x{mac}")), None);
        assert_eq!(k.flows_of_token(&token[..token.len() - 2]), None);
        assert_eq!(k.flows_of_token(&format!("{token}x1")), None);
        assert_eq!(k.flows_of_token("alice"), None);
        // Another process (another key) cannot read ours.
        assert_eq!(Keys::random().flows_of_token(&token), None);
    }
}
