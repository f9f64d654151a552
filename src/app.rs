//! Wiring: bind every socket, build the shared state from config, spawn the receive loops,
//! the accept loops, the HTTP server and the one purge task, and drain on shutdown.
//! Only this file knows every module.
//!
//! Shutdown: the token is cancelled → listeners and receive loops stop reading → open
//! connections finish the message in hand and close → the purge task stops → everything is
//! awaited for at most the configured grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{
    FailureLimiter, LimiterConfig, NonceConfig, NonceIssuer, NonceKeys, ReplayConfig, ReplayTable,
    TrustedPairs, DEFAULT_MAX_TRUSTED_PAIRS,
};
use crate::config::{Config, Sso};
use crate::credentials::device::{CredentialKeys, DeviceIndex, RegisterEvent};
use crate::credentials::{algorithm, StaticAccounts};
use crate::dispatch::{DispatchParts, Dispatcher, DomainPolicy};
use crate::metrics::Metrics;
use crate::registrar::{Location, RegistrarPolicy};
use crate::sip::Limits;
use crate::transaction::{TransactionConfig, TransactionTable};
use crate::transport::tcp::{StreamContext, StreamLimits};
use crate::transport::tls::{HandshakeLimits, TlsState};
use crate::transport::{udp, Flows, Handler};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid setting: {0}")]
    Setting(String),
    #[error("tls: {0}")]
    Tls(#[from] crate::transport::tls::TlsError),
}

/// A started server: where it listens, and how to stop it.
pub struct Running {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// The TLS material, for reloads (SIGHUP); `None` without TLS listeners.
    pub tls_state: Option<TlsState>,
    pub dispatcher: Dispatcher,
    pub metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    grace: std::time::Duration,
}

impl Running {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for the shutdown token, then drains within the grace period.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "drain grace period passed; exiting with tasks still open");
        }
    }
}

/// Binds and starts everything; returns once every socket is listening.
pub async fn start(config: &Config, shutdown: CancellationToken) -> Result<Running, AppError> {
    let metrics = Metrics::new();
    let limits = Limits {
        max_header_bytes: config.sip.max_header_bytes,
        max_body_bytes: config
            .sip
            .max_message_bytes
            .saturating_sub(config.sip.max_header_bytes)
            .max(1),
        max_headers: config.sip.max_headers,
    };
    let r = &config.registrar;
    let policy = RegistrarPolicy {
        min_expires: r.min_expires.as_secs(),
        max_expires: r.max_expires.as_secs(),
        default_expires: r.default_expires.as_secs(),
        max_bindings_per_aor: r.max_bindings_per_aor,
        expiry_jitter_percent: r.expiry_jitter_percent,
        max_aors: r.max_aors,
    };
    policy
        .validate()
        .map_err(|e| AppError::Setting(format!("registrar: {e:?}")))?;
    let location = Location::new(policy);
    let txn_config = TransactionConfig::new(config.sip.t1, config.sip.max_transactions)
        .map_err(|e| AppError::Setting(format!("sip.t1_ms: {e}")))?;
    let transactions = TransactionTable::new(txn_config);
    let keys = match &config.auth.nonce_secret {
        Some(secret) => {
            let mut k = [0u8; 32];
            use sha2::Digest;
            k.copy_from_slice(&sha2::Sha256::digest(secret.expose()));
            NonceKeys::from_bytes(&[(1, k)])
                .map_err(|e| AppError::Setting(format!("auth.nonce_secret_file: {e}")))?
        }
        None => NonceKeys::random(),
    };
    let nonce_config = NonceConfig {
        lifetime: config.auth.nonce_lifetime,
        max_drift: config.auth.nonce_max_drift,
    };
    let nonces = NonceIssuer::new(keys, nonce_config);
    let replay = ReplayTable::new(
        ReplayConfig {
            capacity: config.auth.replay_table_size,
        },
        &nonces,
    );
    let source_limiter = FailureLimiter::new(LimiterConfig {
        window: config.auth.failure_window,
        max_failures: config.auth.max_failures_per_source,
        ..LimiterConfig::per_source()
    });
    let user_limiter = FailureLimiter::new(LimiterConfig {
        window: config.auth.failure_window,
        max_failures: config.auth.max_failures_per_user,
        ..LimiterConfig::per_username()
    });
    // Trusted long enough to outlive a re-registration interval, so a working phone's next
    // refresh still finds its pair during an attack.
    let trusted = TrustedPairs::new(
        config.registrar.max_expires.saturating_mul(2),
        DEFAULT_MAX_TRUSTED_PAIRS,
    );
    let domains = config
        .domains
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                DomainPolicy {
                    algorithms: d.algorithms.iter().map(|a| algorithm(*a)).collect(),
                    sso_enforced: d.sso == Sso::Enforce,
                    client_cert: d.client_cert,
                },
            )
        })
        .collect();

    let tracker = TaskTracker::new();
    let token_parts = if config.issuers.is_empty() {
        None
    } else {
        Some(token_api_parts(config, &metrics)?)
    };

    // Bind before building the dispatcher: it needs the local addresses.
    let mut udp_sockets = Vec::new();
    for addr in &config.sip.udp {
        let s = udp::bind(*addr, config.sip.udp_recv_buffer_bytes).map_err(|source| {
            AppError::Bind {
                what: "udp",
                addr: *addr,
                source,
            }
        })?;
        udp_sockets.push(Arc::new(s));
    }
    let mut tcp_listeners = Vec::new();
    for addr in &config.sip.tcp {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind {
                what: "tcp",
                addr: *addr,
                source,
            })?;
        tcp_listeners.push(l);
    }
    let tls_state = match &config.tls {
        Some(tls) => Some(TlsState::load(tls, metrics.clone())?),
        None => None,
    };
    let mut tls_listeners = Vec::new();
    for l in config.tls.iter().flat_map(|t| t.listeners.iter()) {
        let listener = tokio::net::TcpListener::bind(l.addr)
            .await
            .map_err(|source| AppError::Bind {
                what: "tls",
                addr: l.addr,
                source,
            })?;
        tls_listeners.push((listener, l.client_auth));
    }
    let tls_addrs: Vec<SocketAddr> = tls_listeners
        .iter()
        .filter_map(|(l, _)| l.local_addr().ok())
        .collect();
    let udp_addrs: Vec<SocketAddr> = udp_sockets.iter().map(|s| s.local_addr()).collect();
    let tcp_addrs: Vec<SocketAddr> = tcp_listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let locals: Vec<SocketAddr> = udp_addrs
        .iter()
        .chain(&tcp_addrs)
        .chain(&tls_addrs)
        .copied()
        .collect();

    let flows = Flows::default();
    let proxy = crate::proxy::Proxy::new(
        crate::transport::Outbound::new(udp_sockets.clone(), flows.clone()),
        crate::proxy::ProxyConfig {
            t1: config.sip.t1,
            max_contexts: config.sip.max_transactions,
            realms: config.domains.iter().map(|d| d.name.clone()).collect(),
            locals: locals.clone(),
        },
        transactions.clone(),
        metrics.clone(),
        config.server.server_header.clone(),
    );
    let dispatcher = Dispatcher::new(
        DispatchParts {
            limits,
            domains,
            accounts: StaticAccounts::from_config(config),
            nonces,
            bind_nonce_to_source: config.auth.bind_nonce_to_source,
            replay,
            source_limiter,
            user_limiter,
            trusted,
            location: location.clone(),
            transactions,
            metrics: metrics.clone(),
            server_header: config.server.server_header.clone(),
            remove_bindings_on_close: r.remove_bindings_on_close,
            devices: token_parts.as_ref().map(|t| t.devices.clone()),
            proxy: proxy.clone(),
        },
        &locals,
    );
    let handler: Arc<dyn Handler> = Arc::new(dispatcher.clone());
    let token_api = token_parts.map(|parts| {
        parts.registry.spawn_refreshers(&tracker, &shutdown);
        tracker.spawn(record_registers(
            parts.events,
            parts.store.clone(),
            shutdown.clone(),
        ));
        Arc::new(crate::api::token::TokenApi::new(
            config,
            parts.registry,
            parts.store,
            parts.devices,
            parts.metrics,
        ))
    });

    let workers = config.sip.udp_workers.map(|n| n.get()).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    for socket in &udp_sockets {
        for _ in 0..workers {
            let (socket, handler, shutdown) = (socket.clone(), handler.clone(), shutdown.clone());
            // A blocking thread per loop (see transport/udp.rs), inside the runtime's context
            // so that the handler may use it.
            tracker.spawn_blocking(move || udp::receive_loop(socket, handler, shutdown));
        }
    }
    let stream_ctx = StreamContext {
        handler: handler.clone(),
        flows,
        limits: StreamLimits {
            max_connections: config.sip.tcp_max_connections,
            idle_timeout: config.sip.tcp_idle_timeout,
            header_timeout: config.sip.tcp_header_timeout,
            write_timeout: std::time::Duration::from_secs(10),
            framing: limits,
        },
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    for listener in tcp_listeners {
        tracker.spawn(crate::transport::tcp::accept_loop(
            listener,
            stream_ctx.clone(),
            tracker.clone(),
        ));
    }
    if let (Some(state), Some(tls)) = (&tls_state, &config.tls) {
        let handshakes = HandshakeLimits {
            timeout: tls.handshake_timeout,
            slots: Arc::new(tokio::sync::Semaphore::new(tls.max_handshakes)),
        };
        let mut tls_ctx = stream_ctx.clone();
        tls_ctx.limits.max_connections = tls.max_connections;
        for (listener, mode) in tls_listeners {
            tracker.spawn(crate::transport::tls::accept_loop(
                listener,
                mode,
                state.clone(),
                handshakes.clone(),
                tls_ctx.clone(),
                tracker.clone(),
            ));
        }
    }

    let http = match config.http.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind {
                    what: "http",
                    addr,
                    source,
                })?;
            let bound = listener.local_addr().ok();
            let (max_body_bytes, request_timeout, max_header_bytes) = match &token_api {
                Some(_) => (
                    config.token_api.max_body_bytes,
                    config.token_api.request_timeout,
                    config.token_api.max_header_bytes,
                ),
                None => (
                    crate::api::DEFAULT_MAX_BODY_BYTES,
                    crate::api::DEFAULT_REQUEST_TIMEOUT,
                    16 * 1024,
                ),
            };
            let app = crate::api::router(crate::api::ApiState {
                metrics: metrics.clone(),
                location: location.clone(),
                admin_token: config.http.admin_token.clone(),
                token: token_api.clone(),
                max_body_bytes,
                request_timeout,
            });
            tracker.spawn(crate::api::server::serve(
                listener,
                app,
                crate::api::server::HttpLimits { max_header_bytes },
                shutdown.clone(),
                tracker.clone(),
            ));
            bound
        }
        None => None,
    };

    // The proxy's timers: its driver sleeps until the next deadline.
    tracker.spawn(crate::proxy::drive(proxy, shutdown.clone()));

    let purge_every = config.registrar.purge_interval;
    let purge_dispatcher = dispatcher.clone();
    let stop = shutdown.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(purge_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    let now = Instant::now();
                    purge_dispatcher.purge(now);
                    if let Some(api) = &token_api {
                        api.purge(now);
                    }
                }
            }
        }
    });

    for a in &udp_addrs {
        tracing::info!(addr = %a, workers, "listening on udp");
    }
    for a in &tcp_addrs {
        tracing::info!(addr = %a, "listening on tcp");
    }
    for a in &tls_addrs {
        tracing::info!(addr = %a, "listening on tls");
    }
    if let Some(a) = http {
        tracing::info!(addr = %a, token_api = !config.issuers.is_empty(), "http listening (health, metrics, admin, token API)");
    }
    Ok(Running {
        udp: udp_addrs,
        tcp: tcp_addrs,
        tls: tls_addrs,
        http,
        tls_state,
        dispatcher,
        metrics,
        shutdown,
        tracker,
        grace: config.server.drain_grace,
    })
}

/// The token API's parts that exist before the dispatcher: the store (with active records
/// loaded into the device index), the issuer registry and the metrics.
struct TokenParts {
    store: crate::store::Store,
    devices: DeviceIndex,
    events: tokio::sync::mpsc::Receiver<RegisterEvent>,
    registry: crate::oidc::IssuerRegistry,
    metrics: crate::api::token::TokenMetrics,
}

fn token_api_parts(config: &Config, metrics: &Metrics) -> Result<TokenParts, AppError> {
    let t = &config.token_api;
    let backend = crate::store::SqliteStore::open(t.store_path.as_deref()).map_err(|e| {
        AppError::Setting(format!(
            "token_api.store_path {:?}: {e}",
            t.store_path
                .as_deref()
                .map_or(crate::config::MEMORY_STORE.into(), |p| p
                    .display()
                    .to_string())
        ))
    })?;
    let store = crate::store::Store::new(Arc::new(backend));
    let (devices, events) = DeviceIndex::new(CredentialKeys::new(t.credential_keys.clone()));
    let now = crate::dispatch::unix_now();
    let active = store
        .blocking()
        .load_active(now)
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
        devices,
        events,
        registry,
        metrics: token_metrics,
    })
}

/// Writes REGISTER successes of device credentials to the store (last REGISTER time, the end
/// of the previous generation), one at a time, until shutdown.
async fn record_registers(
    mut events: tokio::sync::mpsc::Receiver<RegisterEvent>,
    store: crate::store::Store,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
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
