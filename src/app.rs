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
};
use crate::config::Config;
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
    let replay = ReplayTable::new(ReplayConfig {
        capacity: config.auth.replay_table_size,
        ..ReplayConfig::for_nonces(&nonce_config)
    });
    let nonces = NonceIssuer::new(keys, nonce_config);
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
    let domains = config
        .domains
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                DomainPolicy {
                    algorithms: d.algorithms.iter().map(|a| algorithm(*a)).collect(),
                    client_cert: d.client_cert,
                },
            )
        })
        .collect();

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
    let udp_addrs: Vec<SocketAddr> = udp_sockets
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .collect();
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
            location: location.clone(),
            transactions,
            metrics: metrics.clone(),
            server_header: config.server.server_header.clone(),
            remove_bindings_on_close: r.remove_bindings_on_close,
        },
        &locals,
    );
    let handler: Arc<dyn Handler> = Arc::new(dispatcher.clone());
    let tracker = TaskTracker::new();

    let workers = config.sip.udp_workers.map(|n| n.get()).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    for socket in &udp_sockets {
        for _ in 0..workers {
            tracker.spawn(udp::receive_loop(
                socket.clone(),
                handler.clone(),
                shutdown.clone(),
            ));
        }
    }
    let stream_ctx = StreamContext {
        handler: handler.clone(),
        flows: Flows::default(),
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
            let app = crate::api::router(crate::api::ApiState {
                metrics: metrics.clone(),
                location: location.clone(),
                admin_token: config.http.admin_token.clone(),
            });
            let stop = shutdown.clone();
            tracker.spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "http server failed");
                }
            });
            bound
        }
        None => None,
    };

    let purge_every = config.registrar.purge_interval;
    let purge_dispatcher = dispatcher.clone();
    let stop = shutdown.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(purge_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => purge_dispatcher.purge(Instant::now()),
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
        tracing::info!(addr = %a, "http listening (health, metrics, admin)");
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
