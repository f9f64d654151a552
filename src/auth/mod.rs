//! Authentication of SIP requests by Digest: pure logic, no I/O, time passed in as a parameter.
//!
//! | file | owns |
//! | --- | --- |
//! | `digest.rs` | algorithms, [`Ha1`], [`verify`], [`Challenge`] rendering |
//! | `nonce.rs` | stateless HMAC nonces bound to realm and source, key rotation |
//! | `replay.rs` | per-nonce `nc`, Call-ID and source of first use (a fixed array of slots indexed by the nonce's sequence number) |
//! | `limiter.rs` | failed-attempt counters per source and per username (bounded) |
//!
//! This module must not parse SIP (the `sip` layer hands it typed views), read the clock, do
//! I/O, or decide status codes. The caller runs the steps in this order, so that known and
//! unknown users look and time the same (docs/testing.md §3):
//!
//! 1. limiters: [`FailureLimiter::is_blocked`] for the source and the username;
//! 2. [`NonceIssuer::check`]: `Invalid` → new challenge; `Stale` → challenge with `stale=true`;
//!    both happen before any user lookup;
//! 3. user lookup, falling back to [`DummyHa1s::get`] for an unknown user;
//! 4. [`verify`]: `Mismatch` → count a failure in both limiters, then challenge as in step 2;
//! 5. only on `Accepted`: [`ReplayTable::check_and_record`]; an error → new challenge with
//!    `stale=true` (the password was right; see [`ReplayError::is_stale`]).
//!
//! The caller also checks the Digest `uri` against the Request-URI and the authenticated user
//! against the To/From AoR.

mod digest;
mod limiter;
mod nonce;
mod replay;
mod trusted;

pub use digest::{
    verify, Algorithm, Challenge, DigestCredentials, DummyHa1s, Ha1, Refusal, Verdict,
};
pub use limiter::{
    source_key, FailureLimiter, FailureOutcome, LimiterConfig, DEFAULT_MAX_TRACKED_KEYS,
};
pub use nonce::{
    nonce_sequence, NonceConfig, NonceIssuer, NonceKeys, NonceSequence, NonceStatus,
    DEFAULT_NONCE_LIFETIME, DEFAULT_NONCE_MAX_DRIFT, MAX_NONCE_KEYS, NONCE_LEN,
};
pub use replay::{ReplayConfig, ReplayError, ReplayTable, DEFAULT_REPLAY_CAPACITY, SLOT_BYTES};
pub use trusted::{TrustedPairs, DEFAULT_MAX_TRUSTED_PAIRS};

/// Errors of the auth layer: configuration problems found at load, and replay refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("stored {algorithm} HA1 must be {expected} hex digits")]
    InvalidHa1 {
        algorithm: Algorithm,
        expected: usize,
    },
    #[error("nonce keys: got {got}, need between 1 and {max}")]
    NonceKeyCount { got: usize, max: usize },
    #[error("nonce key id {0} appears twice")]
    DuplicateNonceKeyId(u8),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}
