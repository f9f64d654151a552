//! [`DispatchParts`] from `&Config`: the authenticator (nonce keys derived from the configured
//! secret, replay table, both failure limiters, trusted pairs, each realm's Digest policy),
//! the credential directory, the registrar side, our domains and the responder. `app` hands in
//! what other parts share ([`Shared`]) and only calls [`dispatch_parts`].
//!
//! It must not bind sockets or spawn tasks.

use crate::auth::{
    AuthError, Authenticator, AuthenticatorParts, FailureLimiter, LimiterConfig, NonceConfig,
    NonceIssuer, NonceKeys, RealmPolicy, ReplayConfig, ReplayTable, TrustedPairs,
    DEFAULT_MAX_TRUSTED_PAIRS,
};
use crate::config::{Config, Sso};
use crate::credentials::device::DeviceIndex;
use crate::credentials::{algorithm, Directory, StaticAccounts};
use crate::metrics::Metrics;
use crate::registrar::Location;
use crate::sip::Limits;
use crate::transaction::TransactionTable;

use super::{DispatchParts, DomainPolicy, RegistrarSide, Responder};

/// What dispatch shares with the rest of the app, built there.
pub struct Shared {
    pub limits: Limits,
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
        limits: shared.limits,
        domains,
        auth: authenticator(config)?,
        credentials: Directory::new(StaticAccounts::from_config(config), shared.devices),
        registrar: RegistrarSide {
            location: shared.location,
            remove_bindings_on_close: config.registrar.remove_bindings_on_close,
        },
        responder: Responder::new(shared.metrics, config.server.server_header.clone()),
        transactions: shared.transactions,
        proxy: shared.proxy,
    })
}

fn authenticator(config: &Config) -> Result<Authenticator, PartsError> {
    let auth = &config.auth;
    let keys = match &auth.nonce_secret {
        Some(secret) => {
            let mut k = [0u8; 32];
            use sha2::Digest;
            k.copy_from_slice(&sha2::Sha256::digest(secret.expose()));
            NonceKeys::from_bytes(&[(1, k)]).map_err(PartsError::NonceSecret)?
        }
        None => NonceKeys::random(),
    };
    let nonce_config = NonceConfig {
        lifetime: auth.nonce_lifetime,
        max_drift: auth.nonce_max_drift,
    };
    let nonces = NonceIssuer::new(keys, nonce_config);
    let replay = ReplayTable::new(
        ReplayConfig {
            capacity: auth.replay_table_size,
        },
        &nonces,
    );
    let source_limiter = FailureLimiter::new(LimiterConfig {
        window: auth.failure_window,
        max_failures: auth.max_failures_per_source,
        ..LimiterConfig::per_source()
    });
    let user_limiter = FailureLimiter::new(LimiterConfig {
        window: auth.failure_window,
        max_failures: auth.max_failures_per_user,
        ..LimiterConfig::per_username()
    });
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
        source_limiter,
        user_limiter,
        trusted,
        realms,
    }))
}
