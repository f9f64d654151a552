//! Authentication of SIP requests by Digest: pure logic, no I/O, time passed in as a parameter.
//!
//! | file | owns |
//! | --- | --- |
//! | `authenticator.rs` | [`Authenticator`]: the whole Digest step of one request, in its documented order, returning a [`Decision`]; the [`CredentialLookup`] seam |
//! | `digest.rs` | algorithms, [`Ha1`], [`verify`], [`Challenge`] rendering |
//! | `nonce.rs` | stateless HMAC nonces bound to realm and source, key rotation |
//! | `replay.rs` | per-nonce `nc`, Call-ID and source of first use (a fixed array of slots indexed by the nonce's sequence number) |
//! | `limiter.rs` | failed-attempt counters per source and per username (bounded) |
//! | `trusted.rs` | (username, source) pairs that authenticated recently, spared by the limiters |
//! | `shared.rs` | [`SharedAuth`]: nonce uses and failures shared by the nodes of a deployment (implemented on Redis by `cluster`) |
//!
//! This module must not parse SIP (the `sip` layer hands it typed views), read the clock, do
//! I/O, build responses or count metrics. The order of the steps, which keeps known and
//! unknown users looking and timing the same (docs/testing.md §3), lives in
//! [`Authenticator::authenticate`] (see `authenticator.rs`); its caller only checks the
//! authenticated AoR against the To/From AoR and maps the decision to a status.

mod authenticator;
mod digest;
mod limiter;
mod nonce;
mod replay;
mod shared;
mod trusted;

pub use authenticator::{
    Authenticator, AuthenticatorParts, BadRequest, Candidate, ChallengeSet, CredentialLookup,
    Decision, DigestRequest, Failure, Found, Identity, Offered, Query, RealmPolicy,
};
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
pub use shared::{Claim, NonceUse, SharedAuth};
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
