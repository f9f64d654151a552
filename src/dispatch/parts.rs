//! [`DispatchParts`] from `&Config`: the authenticator (nonce keys derived from the configured
//! secret, replay table, both failure limiters, trusted pairs, each realm's Digest policy),
//! the credential directory, the registrar side, our domains and the responder. `app` hands in
//! what other parts share ([`Shared`]) and only calls [`dispatch_parts`].
//!
//! It must not bind sockets or spawn tasks.

use crate::auth::{
    AuthError, Authenticator, AuthenticatorParts, FailureLimiter, NonceIssuer, NonceKeys,
    RealmPolicy, ReplayTable, TrustedPairs, DEFAULT_MAX_TRUSTED_PAIRS,
};
use crate::config::{Config, Sso};
use crate::credentials::device::DeviceIndex;
use crate::credentials::{algorithm, Directory, StaticAccounts};
use crate::metrics::Metrics;
use crate::registrar::Location;
use crate::sip::Limits;
use crate::transaction::TransactionTable;

use super::{DispatchParts, DomainPolicy, RegistrarSide, Responder};

/// What comes in, and whether it still may: the parse limits, and the drain token (cancelled
/// on SIGTERM: new requests outside a dialog get 503).
pub struct Intake {
    pub limits: Limits,
    pub draining: tokio_util::sync::CancellationToken,
}

/// What dispatch shares with the rest of the app, built there.
pub struct Shared {
    pub intake: Intake,
    pub location: Location,
    pub transactions: TransactionTable,
    pub metrics: Metrics,
    /// Device credentials from the token API; `None` when it is off.
    pub devices: Option<DeviceIndex>,
    pub proxy: crate::proxy::Proxy,
}

/// A setting dispatch cannot use.
#[derive(Debug, thiserror::Error)]
pub enum PartsError {
    #[error("auth.nonce_secret_file: {0}")]
    NonceSecret(AuthError),
}

/// Builds every part of dispatch from `config` and the shared parts.
pub fn dispatch_parts(config: &Config, shared: Shared) -> Result<DispatchParts, PartsError> {
    let domains = config
        .domains
        .iter()
        .map(|d| {
            let policy = DomainPolicy {
                client_cert: d.client_cert,
            };
            (d.name.clone(), policy)
        })
        .collect();
    Ok(DispatchParts {
        intake: shared.intake,
        domains,
        auth: authenticator(config)?,
        credentials: Directory::new(StaticAccounts::from_config(config), shared.devices),
        registrar: RegistrarSide {
            location: shared.location,
            remove_bindings_on_close: config.registrar.remove_bindings_on_close,
            path: config.registrar.path,
            peer_nodes: config
                .redis
                .iter()
                .flat_map(|r| r.peers.iter().map(|(_, a)| a.ip()))
                .collect(),
        },
        responder: Responder::new(shared.metrics, config.server.server_header.clone()),
        transactions: shared.transactions,
        proxy: shared.proxy,
    })
}

fn authenticator(config: &Config) -> Result<Authenticator, PartsError> {
    let auth = &config.auth;
    let nonces = NonceIssuer::new(nonce_keys(config)?, auth.nonce());
    let replay = ReplayTable::new(auth.replay(), &nonces);
    // Trusted long enough to outlive a re-registration interval, so a working phone's next
    // refresh still finds its pair during an attack.
    let trusted = TrustedPairs::new(
        config.registrar.max_expires.saturating_mul(2),
        DEFAULT_MAX_TRUSTED_PAIRS,
    );
    let realms = config
        .domains
        .iter()
        .map(|d| {
            let policy = RealmPolicy {
                algorithms: d.algorithms.iter().map(|a| algorithm(*a)).collect(),
                sso_enforced: d.sso == Sso::Enforce,
            };
            (d.name.clone(), policy)
        })
        .collect();
    Ok(Authenticator::new(AuthenticatorParts {
        nonces,
        bind_nonce_to_source: auth.bind_nonce_to_source,
        replay,
        source_limiter: FailureLimiter::new(auth.source_limiter()),
        user_limiter: FailureLimiter::new(auth.user_limiter()),
        trusted,
        realms,
    }))
}

/// The nonce key: derived from `auth.nonce_secret_file` (so the nodes of a cluster share
/// it), or random.
fn nonce_keys(config: &Config) -> Result<NonceKeys, PartsError> {
    let Some(secret) = &config.auth.nonce_secret else {
        return Ok(NonceKeys::random());
    };
    use sha2::Digest;
    let key: [u8; 32] = sha2::Sha256::digest(secret.expose()).into();
    NonceKeys::from_bytes(&[(1, key)]).map_err(PartsError::NonceSecret)
}
