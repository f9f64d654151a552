//! The token API's start-up: its device store (SQLite, or Redis shared by the nodes), the
//! device index loaded from it, the writer of device REGISTERs, and with Redis the follower of
//! other nodes' device changes.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::AppError;
use crate::config::{Config, Persistence};
use crate::credentials::device::{CredentialKeys, DeviceIndex, RegisterEvent};
use crate::metrics::Metrics;
use crate::registrar::Location;

/// The token API over its parts, with its tasks: the issuers' refreshers (until shutdown)
/// and the writer of device REGISTERs to the store (until halt).
pub(super) fn token_api(
    config: &Config,
    parts: TokenParts,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    halt: &CancellationToken,
) -> Arc<crate::api::token::TokenApi> {
    parts.registry.spawn_refreshers(tracker, shutdown);
    tracker.spawn(record_registers(
        parts.events,
        parts.store.clone(),
        halt.clone(),
    ));
    Arc::new(crate::api::token::TokenApi::new(
        config,
        parts.registry,
        parts.store,
        parts.devices,
        parts.metrics,
    ))
}

/// The token API's parts that exist before the dispatcher: the store (with active records
/// loaded into the device index), the issuer registry and the metrics.
pub(super) struct TokenParts {
    pub(super) store: crate::store::Store,
    /// With `registrar.persistence = "redis"`: the shared store and where it is, for
    /// [`follow_device_changes`].
    pub(super) shared: Option<(
        crate::store::RedisSettings,
        Arc<dyn crate::store::DeviceStore>,
    )>,
    pub(super) devices: DeviceIndex,
    pub(super) events: tokio::sync::mpsc::Receiver<RegisterEvent>,
    pub(super) registry: crate::oidc::IssuerRegistry,
    pub(super) metrics: crate::api::token::TokenMetrics,
}

/// Opens the store and loads its active records, both on the blocking pool (SQLite blocks).
pub(super) async fn token_api_parts(
    config: &Config,
    metrics: &Metrics,
) -> Result<TokenParts, AppError> {
    let t = &config.token_api;
    let (backend, shared) = match &config.redis {
        Some(redis) if config.registrar.persistence == Persistence::Redis => {
            let settings = device_store_settings(redis);
            let s = settings.clone();
            let opened = tokio::task::spawn_blocking(move || crate::store::RedisStore::connect(s))
                .await
                .map_err(|e| AppError::Setting(format!("redis.urls: {e}")))?;
            let backend: Arc<dyn crate::store::DeviceStore> = Arc::new(opened.map_err(|e| {
                AppError::Setting(format!("redis.urls (the token API's device store): {e}"))
            })?);
            (backend.clone(), Some((settings, backend)))
        }
        _ => {
            let path = t.store_path.clone();
            let opened = tokio::task::spawn_blocking(move || {
                crate::store::SqliteStore::open(path.as_deref())
            })
            .await
            .map_err(|e| AppError::Setting(format!("token_api.store_path: {e}")))?;
            let backend = opened.map_err(|e| {
                AppError::Setting(format!(
                    "token_api.store_path {:?}: {e}",
                    t.store_path
                        .as_deref()
                        .map_or(crate::config::MEMORY_STORE.into(), |p| p
                            .display()
                            .to_string())
                ))
            })?;
            let backend: Arc<dyn crate::store::DeviceStore> = Arc::new(backend);
            (backend, None)
        }
    };
    let store = crate::store::Store::new(backend);
    let (devices, events) = DeviceIndex::new(CredentialKeys::new(t.credential_keys.clone()));
    if let Some((_, shared)) = &shared {
        devices.set_authority(shared.clone());
    }
    let now = crate::dispatch::unix_now();
    let active = store
        .run(move |s| s.load_active(now))
        .await
        .map_err(|e| AppError::Setting(format!("token_api.store_path: {e}")))?;
    for record in &active {
        devices.upsert(record, now);
    }
    tracing::info!(devices = active.len(), "device credentials loaded");
    let oidc_metrics = crate::oidc::OidcMetrics::new(metrics);
    let registry = crate::oidc::IssuerRegistry::new(config, oidc_metrics)
        .map_err(|e| AppError::Setting(format!("token API HTTP client: {e}")))?;
    let token_metrics = crate::api::token::TokenMetrics::new(metrics);
    token_metrics.active.set(devices.len() as i64);
    Ok(TokenParts {
        store,
        shared,
        devices,
        events,
        registry,
        metrics: token_metrics,
    })
}

/// `[redis]` as the device store needs it.
pub(super) fn device_store_settings(
    redis: &crate::config::RedisConfig,
) -> crate::store::RedisSettings {
    crate::store::RedisSettings {
        urls: redis.urls.clone(),
        cluster: redis.cluster,
        username: redis.username.clone(),
        password: redis
            .password
            .as_ref()
            .map(|p| String::from_utf8_lossy(p.expose()).into_owned()),
        connect_timeout: redis.connect_timeout,
        response_timeout: redis.response_timeout,
    }
}

/// With the device store on Redis: follows the changes other nodes make (`store::subscribe`)
/// until `halt`. A revoke drops the credential from this node's index and then the bindings
/// this node made with it (the order `registrar::Credential` needs); after every
/// (re)subscription every device in the index is read again, since a revoke announced while
/// this node was not listening was missed. The credential itself is refused on every node
/// without this (each lookup reads the store: `DeviceIndex::set_authority`); this removes the
/// bindings made at the other nodes.
pub(super) fn follow_device_changes(
    settings: crate::store::RedisSettings,
    backend: Arc<dyn crate::store::DeviceStore>,
    devices: DeviceIndex,
    location: Location,
    halt: &CancellationToken,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let index = devices.clone();
    let check = Arc::new(move |username: &str| {
        let now = crate::dispatch::unix_now();
        match backend.device(username) {
            Ok(Some(record)) if record.revoked.is_some() => {
                devices.revoke_record(&record);
                if let Some(aor) = crate::sip::Aor::parse(&record.aor) {
                    let removed = location.remove_own_credential(&aor, &record.username);
                    tracing::info!(
                        device = %record.username,
                        bindings_removed = removed,
                        "device revoked at another node: its bindings here removed"
                    );
                }
            }
            Ok(record) => {
                devices.refresh(username, record.as_ref(), now);
            }
            Err(e) => tracing::warn!(error = %e, "device store: reading a changed device failed"),
        }
    });
    let on_resync = check.clone();
    crate::store::subscribe(
        settings,
        stop.clone(),
        move |username| check(&username),
        move || {
            for username in index.usernames() {
                on_resync(&username);
            }
        },
    );
    let halt = halt.clone();
    tokio::spawn(async move {
        halt.cancelled().await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// Writes REGISTER successes of device credentials to the store (last REGISTER time, the end
/// of the previous generation), one at a time, until `halt`.
async fn record_registers(
    mut events: tokio::sync::mpsc::Receiver<RegisterEvent>,
    store: crate::store::Store,
    halt: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = halt.cancelled() => return,
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        let result = store
            .run(move |s| s.record_register(&event.username, event.gen, event.at))
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record a device REGISTER");
        }
    }
}
