//! Wiring: config → parts (pure functions, no I/O), bind every socket, serve. Only this file
//! knows every module; the serving itself lives with its owners (`transport::serve`,
//! `api::server`), and so do the periodic jobs (`purge(now)` of each owner).
//!
//! Drain, with two tokens: `shutdown` (SIGTERM) stops the accept loops and the HTTP server,
//! and dispatch answers new requests outside a dialog with 503 and `Retry-After`; the UDP
//! receive threads, the open stream connections and the proxy's timers keep running for the
//! transactions in flight. Once the proxy holds no context, or `server.drain_grace_secs` has
//! passed, `halt` stops the rest, and every task is awaited briefly before the process exits.

mod devices;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod http;
use http::{serve_http, HttpParts};

use crate::config::{Config, Persistence};
use crate::credentials::device::DeviceIndex;
use crate::dispatch::{dispatch_parts, Dispatcher, Intake, Shared};
use crate::metrics::Metrics;
use crate::proxy::{NameSources, OurNames, Proxy};
use crate::registrar::{Location, LocationGauges};
use crate::transaction::TransactionTable;
use crate::transport::advertise::Advertised;
use crate::transport::serve::{Addresses, BindError, Bound, TlsServing};
use crate::transport::tcp::{StreamContext, StreamLimits};
use crate::transport::tls::{HandshakeLimits, TlsState};
use crate::transport::{Flows, Handler, Outbound};
use devices::{follow_device_changes, token_api, token_api_parts};

/// After `halt`, how long the tasks get to end on top of what is left of the grace period: a
/// UDP receive thread notices `halt` within its 200 ms read timeout.
const HALT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("invalid setting: {0}")]
    Setting(String),
    #[error("tls: {0}")]
    Tls(#[from] crate::transport::tls::TlsError),
    /// `path` names the store: the SQLite file, or `redis.urls` and the URLs.
    #[error("{path}: {source}")]
    LocationStore {
        path: String,
        source: crate::location_store::LocationStoreError,
    },
}

/// A started server: where it listens, and how to stop it.
pub struct Running {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// WS and WSS listeners, in the order of `ws.listeners`.
    pub ws: Vec<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// The TLS material, for reloads (SIGHUP); `None` without TLS listeners.
    pub tls_state: Option<TlsState>,
    pub dispatcher: Dispatcher,
    pub metrics: Metrics,
    proxy: Proxy,
    shutdown: CancellationToken,
    /// Cancelled when the drain ends: stops the receive threads, connections and timers.
    halt: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
    /// The location store's writer (`registrar.persistence = "sqlite"`): stopped last, once
    /// nothing can change a binding any more, after writing everything queued.
    store_writer: Option<Arc<crate::location_store::Writer>>,
}

impl Running {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for the shutdown token, then drains: the proxy's transactions in flight get
    /// until they end or the grace period passes; then everything stops.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        let deadline = tokio::time::Instant::now() + self.grace;
        let in_flight = self.proxy.len();
        if tokio::time::timeout_at(deadline, self.proxy.drained())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, contexts = self.proxy.len(), "drain grace period passed; abandoning proxy transactions");
        } else {
            tracing::info!(in_flight, "drained: no proxy transaction in flight");
        }
        self.halt.cancel();
        self.tracker.close();
        let stop = deadline.max(tokio::time::Instant::now()) + HALT_TIMEOUT;
        if tokio::time::timeout_at(stop, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("tasks still open after the drain; exiting anyway");
        }
        if let Some(writer) = self.store_writer {
            match tokio::task::spawn_blocking(move || writer.stop()).await {
                Ok(Some(_)) => tracing::info!("location store: every change written"),
                _ => tracing::error!("location store: the writer did not end cleanly"),
            }
        }
    }
}

/// Binds and starts everything; returns once every socket is listening.
pub async fn start(config: &Config, shutdown: CancellationToken) -> Result<Running, AppError> {
    let metrics = Metrics::new();
    let store_queue = match config.registrar.persistence {
        Persistence::Sqlite | Persistence::Redis => config.registrar.store_queue,
        Persistence::None => 0,
    };
    metrics.set_caps(config.sip.max_transactions, store_queue);
    let halt = CancellationToken::new();
    let tracker = TaskTracker::new();
    let gauges = LocationGauges {
        bindings: metrics.bindings.clone(),
        aors: metrics.aors.clone(),
    };
    let transactions = TransactionTable::new(config.sip.transactions());
    let token_parts = match config.issuers.is_empty() {
        true => None,
        false => Some(token_api_parts(config, &metrics).await?),
    };
    let (mut store_health, mut shared) = (None, None);
    let loaded = match config.registrar.persistence {
        Persistence::Sqlite => Some(open_location_store(config).await?),
        Persistence::Redis => {
            let (loaded, health, view) = open_redis_store(config, &metrics).await?;
            store_health = Some(health);
            shared = Some(view);
            Some(loaded)
        }
        Persistence::None => None,
    };
    let capacity = loaded.as_ref().map_or(0, |l| l.len());
    let location = Location::with_capacity(config.registrar.policy(), gauges, capacity);
    if let Some(view) = shared {
        location.attach_shared(view);
    }
    if let Some((settings, backend, devices)) = token_parts
        .as_ref()
        .and_then(|t| t.shared.clone().map(|(s, b)| (s, b, t.devices.clone())))
    {
        follow_device_changes(settings, backend, devices, location.clone(), &halt);
    }
    let devices = token_parts.as_ref().map(|t| t.devices.clone());
    let store_writer = loaded
        .map(|loaded| durable_location(config, loaded, &location, &metrics, devices))
        .transpose()?;
    // Every socket is bound before any receive thread or task starts: a failure returns
    // with nothing running, so the process can exit at once.
    let mut bound = Bound::bind(&config.sip, config.tls.as_ref()).await?;
    bound.bind_ws(config.ws.as_ref()).await?;
    let http_listener = match config.http.listen {
        Some(addr) => {
            // Unlike the SIP stream listeners, `[::]` here is dual-stack (one HTTP address).
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|error| {
                crate::transport::serve::BindError {
                    key: "http.listen",
                    addr,
                    error,
                }
            })?;
            let local = listener.local_addr().unwrap_or(addr);
            Some((listener, local))
        }
        None => None,
    };
    let addrs = bound.addresses();
    let tls_state = config
        .tls
        .as_ref()
        .map(|tls| TlsState::load(tls, metrics.clone()));
    let tls_state = tls_state.transpose()?;

    let flows = Flows::default();
    let advertised = Advertised::new(&config.sip, config.tls.as_ref(), &addrs);
    let names = Arc::new(our_names(config, &addrs, &advertised));
    let proxy = Proxy::new(
        Outbound::new(bound.udp.clone(), flows.clone()).with_advertised(advertised),
        crate::proxy::ProxyConfig {
            t1: config.sip.t1,
            max_contexts: config.sip.max_transactions,
            realms: config.domains.iter().map(|d| d.name.clone()).collect(),
            names: names.clone(),
        },
        transactions.clone(),
        metrics.clone(),
        config.server.server_header.clone(),
    );
    let shared = Shared {
        intake: Intake {
            limits: config.sip.limits(),
            draining: shutdown.clone(),
        },
        location: location.clone(),
        transactions,
        metrics: metrics.clone(),
        devices: token_parts.as_ref().map(|t| t.devices.clone()),
        proxy: proxy.clone(),
    };
    let parts = dispatch_parts(config, shared).map_err(|e| AppError::Setting(e.to_string()))?;
    if let (Some(redis), Some(health)) = (&config.redis, &store_health) {
        share_auth(&parts.auth, redis, &metrics, health.clone(), &halt);
    }
    let dispatcher = Dispatcher::new(parts, names);
    let audit = audit_log(config, &tracker, &shutdown)?;
    let token_api = token_parts.map(|parts| {
        let mut api = token_api(config, parts, &tracker, &shutdown, &halt);
        if let Some(api) = Arc::get_mut(&mut api) {
            api.audit = audit;
        }
        api
    });

    let handler: Arc<dyn Handler> = Arc::new(dispatcher.clone());
    let fds = open_files(config, &addrs);
    let mut stream_ctx = stream_context(config, handler, flows, &metrics, &shutdown, &halt);
    stream_ctx.limits.max_connections = fds.tcp_max_connections;
    let mut tls_serving = tls_serving(config, tls_state.clone());
    if let Some(t) = &mut tls_serving {
        t.max_connections = fds.tls_max_connections;
    }
    // Logged before anything is served: whoever sees a listener answer sees the warnings too.
    let http = http_listener.as_ref().map(|(_, local)| *local);
    log_listening(config, &addrs, http);
    bound.serve_ws(
        config.ws.as_ref(),
        &stream_ctx,
        tls_state.as_ref(),
        &tracker,
    );
    // The web phone's WebSocket URLs: each WS listener's bound port and whether it is WSS.
    let websockets: Vec<(u16, bool)> = addrs
        .ws
        .iter()
        .zip(config.ws.iter().flat_map(|w| &w.listeners))
        .map(|(a, l)| (a.port(), l.tls))
        .collect();
    bound.serve(udp_workers(config), stream_ctx, tls_serving, &tracker);
    if let Some((listener, _)) = http_listener {
        let tls_reload = tls_state.clone().map(|tls| -> crate::api::TlsReload {
            Arc::new(move || tls.reload().map_err(|e| e.to_string()))
        });
        let parts = HttpParts {
            metrics: metrics.clone(),
            location: location.clone(),
            token_api: token_api.clone(),
            tls_reload,
            websockets,
            store_health,
        };
        serve_http(listener, config, parts, &shutdown, &tracker);
    }

    // The proxy's timers: its driver sleeps until the next deadline, and runs through the drain.
    tracker.spawn(crate::proxy::drive(proxy.clone(), halt.clone()));
    let purge = purge(dispatcher.clone(), token_api.clone());
    tracker.spawn(every(config.registrar.purge_interval, halt.clone(), purge));
    Ok(Running {
        udp: addrs.udp,
        tcp: addrs.tcp,
        tls: addrs.tls,
        ws: addrs.ws,
        http,
        tls_state,
        dispatcher,
        metrics,
        proxy,
        shutdown,
        halt,
        tracker,
        grace: config.server.drain_grace,
        store_writer,
    })
}

/// Opens the location store and reads every live binding (blocking, on the blocking pool),
/// before anything listens.
async fn open_location_store(config: &Config) -> Result<crate::location_store::Loaded, AppError> {
    let path = config.registrar.store_path.clone();
    let opened = tokio::task::spawn_blocking(move || crate::location_store::open(&path))
        .await
        .map_err(|e| AppError::Setting(format!("registrar.store_path: {e}")))?;
    opened.map_err(|source| store_error(config, source))
}

/// Connects to Redis and reads this node's live bindings (blocking, on the blocking pool),
/// before anything listens. Unreachable Redis fails the start: a node that cannot store a
/// REGISTER would answer every one 503. Also returns the store's health (`/readyz`) and the
/// view of other nodes' bindings that routing lookups read.
async fn open_redis_store(
    config: &Config,
    metrics: &Metrics,
) -> Result<
    (
        crate::location_store::Loaded,
        Arc<crate::location_store::StoreHealth>,
        Arc<crate::location_store::RedisShared>,
    ),
    AppError,
> {
    let Some(redis) = config.redis.clone() else {
        return Err(AppError::Setting(
            "redis: [redis] is required with registrar.persistence = \"redis\"".into(),
        ));
    };
    let redis_metrics = crate::location_store::RedisMetrics::new(metrics.registry());
    let view = Arc::new(crate::location_store::RedisShared::new(
        &redis,
        redis_metrics.clone(),
        redis.pool_size,
    ));
    let opened = tokio::task::spawn_blocking(move || {
        let store = crate::location_store::RedisLocationStore::connect(redis, redis_metrics)?;
        let health = store.health();
        crate::location_store::open_redis(store).map(|loaded| (loaded, health, view))
    })
    .await
    .map_err(|e| AppError::Setting(format!("redis.urls: {e}")))?;
    opened.map_err(|source| store_error(config, source))
}

/// Several nodes: nonce uses are claimed in Redis and failures counted there (`cluster`), until
/// `halt`.
fn share_auth(
    auth: &crate::auth::Authenticator,
    redis: &crate::config::RedisConfig,
    metrics: &Metrics,
    health: Arc<crate::location_store::StoreHealth>,
    halt: &CancellationToken,
) {
    let (source, user) = auth.limiters();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shared = crate::cluster::RedisAuth::start(
        devices::device_store_settings(redis),
        redis.pool_size,
        crate::cluster::Limiters { source, user },
        metrics.registry(),
        health,
        stop.clone(),
    );
    auth.attach_shared(shared);
    let halt = halt.clone();
    tokio::spawn(async move {
        halt.cancelled().await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

fn store_error(config: &Config, source: crate::location_store::LocationStoreError) -> AppError {
    let path = match (&config.registrar.persistence, &config.redis) {
        (Persistence::Redis, Some(redis)) => format!("redis.urls {}", redis.urls.join(" ")),
        _ => format!(
            "registrar.store_path {}",
            config.registrar.store_path.display()
        ),
    };
    AppError::LocationStore { path, source }
}

/// Restores the loaded bindings into `location`, starts the store's writer and attaches it.
/// A binding made by a device credential that is no longer active in the device index
/// (revoked, expired) is not restored and is removed from the store: a revoke is durable in
/// the device store before it answers, so a revoked device has no binding after a restart
/// even if the removal of its bindings had not reached this store.
fn durable_location(
    config: &Config,
    loaded: crate::location_store::Loaded,
    location: &Location,
    metrics: &Metrics,
    devices: Option<DeviceIndex>,
) -> Result<Arc<crate::location_store::Writer>, AppError> {
    use crate::location_store::{StoreMetrics, WriterConfig};
    let read = loaded.took;
    let is_live = |name: &str| devices.as_ref().is_some_and(|d| d.is_active(name));
    let writer_config = WriterConfig {
        queue: config.registrar.store_queue,
        commit_interval: config.registrar.store_commit_interval,
    };
    let store_metrics = StoreMetrics::new(metrics.registry());
    let (writer, restored) = loaded
        .serve(location, is_live, writer_config, store_metrics)
        .map_err(|e| store_error(config, e))?;
    let store = match &config.redis {
        Some(redis) => redis.urls.join(" "),
        None => config.registrar.store_path.display().to_string(),
    };
    tracing::info!(
        path = %store,
        restored = restored.bindings,
        dropped_revoked = restored.dropped,
        read_ms = read.as_millis() as u64,
        restore_ms = restored.took.as_millis() as u64,
        "location store loaded"
    );
    Ok(writer)
}

/// The purge job: each owner drops what expired by `now` (bindings, transactions, limiter
/// entries, devices; the token API's rate windows).
fn purge(
    dispatcher: Dispatcher,
    token_api: Option<Arc<crate::api::token::TokenApi>>,
) -> impl Fn(Instant) {
    move |now| {
        dispatcher.purge(now);
        if let Some(api) = &token_api {
            api.purge(now);
        }
    }
}

/// Runs `job(now)` every `period` until `stop` (the one purge task: each owner purges its own
/// state in `purge(now)`).
async fn every(period: Duration, stop: CancellationToken, job: impl Fn(Instant)) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => job(Instant::now()),
        }
    }
}

/// `sip.udp_workers` on this machine (`Config::udp_workers`).
fn udp_workers(config: &Config) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    config.udp_workers(cores)
}

fn stream_context(
    config: &Config,
    handler: Arc<dyn Handler>,
    flows: Flows,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    halt: &CancellationToken,
) -> StreamContext {
    let sip = &config.sip;
    StreamContext {
        handler,
        flows,
        limits: StreamLimits {
            max_connections: sip.tcp_max_connections,
            idle_timeout: sip.tcp_idle_timeout,
            header_timeout: sip.tcp_header_timeout,
            write_timeout: crate::transport::tcp::WRITE_TIMEOUT,
            framing: sip.limits(),
        },
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        halt: halt.clone(),
    }
}

/// Raises the open-files limit and fits the stream connection caps under it
/// ([`crate::fdlimit`]): one INFO line with the limit, and a WARN naming the keys when the
/// caps had to be lowered.
fn open_files(config: &Config, addrs: &Addresses) -> crate::fdlimit::Plan {
    let tls_max = config.tls.as_ref().map_or(0, |t| t.max_connections);
    let limit = match crate::fdlimit::raise() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit (RLIMIT_NOFILE)");
            let unknown = u64::MAX;
            return crate::fdlimit::plan(unknown, 0, config.sip.tcp_max_connections, 0, tls_max, 0);
        }
    };
    let plan = crate::fdlimit::plan(
        limit.soft,
        addrs.tcp.len(),
        config.sip.tcp_max_connections,
        addrs.tls.len(),
        tls_max,
        crate::api::server::MAX_CONNECTIONS,
    );
    tracing::info!(
        soft = limit.soft,
        hard = limit.hard,
        raised_from = limit.was,
        needed = plan.needed,
        "open files limit"
    );
    if plan.capped {
        tracing::warn!(
            limit = limit.soft,
            needed = plan.needed,
            tcp_max_connections = plan.tcp_max_connections,
            tls_max_connections = plan.tls_max_connections,
            "the open-files limit is below what sip.tcp_max_connections and tls.max_connections need \
             (per listener, plus the HTTP listener and a reserve); stream connections are capped \
             lower so health and metrics keep answering; raise LimitNOFILE (ulimit -n)"
        );
    }
    plan
}

fn tls_serving(config: &Config, state: Option<TlsState>) -> Option<TlsServing> {
    let (state, tls) = (state?, config.tls.as_ref()?);
    Some(TlsServing {
        state,
        handshakes: HandshakeLimits {
            timeout: tls.handshake_timeout,
            slots: Arc::new(tokio::sync::Semaphore::new(tls.max_handshakes)),
        },
        max_connections: tls.max_connections,
    })
}

/// The names that mean us: the domains, `sip.aliases`, every bound listener (a wildcard one
/// stands for the host's interface addresses, listed once now) and every advertised name.
fn our_names(config: &Config, addrs: &Addresses, advertised: &Advertised) -> OurNames {
    let listeners = addrs.all();
    let interfaces = match listeners.iter().any(|a| a.ip().is_unspecified()) {
        true => crate::transport::local::interface_addresses(),
        false => Vec::new(),
    };
    let domains: Vec<String> = config.domains.iter().map(|d| d.name.clone()).collect();
    let advertised: Vec<_> = advertised.names().cloned().collect();
    OurNames::new(&NameSources {
        domains: &domains,
        aliases: &config.sip.aliases,
        listeners: &listeners,
        interfaces: &interfaces,
        advertised: &advertised,
    })
}

fn log_listening(config: &Config, addrs: &Addresses, http: Option<SocketAddr>) {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let workers = udp_workers(config);
    for a in &addrs.udp {
        tracing::info!(addr = %a, workers, "listening on udp");
    }
    for a in &addrs.tcp {
        tracing::info!(addr = %a, "listening on tcp");
    }
    for a in &addrs.tls {
        tracing::info!(addr = %a, "listening on tls");
    }
    for a in &addrs.ws {
        tracing::info!(addr = %a, "listening on websocket");
    }
    if let Some(a) = http {
        tracing::info!(addr = %a, token_api = !config.issuers.is_empty(), "http listening (health, metrics, admin, token API)");
    }
}

/// The audit trail (`[audit] file`), reopened on every SIGHUP until shutdown (logrotate).
fn audit_log(
    config: &Config,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<crate::audit::AuditLog, AppError> {
    let Some(path) = &config.audit.file else {
        return Ok(crate::audit::AuditLog::disabled());
    };
    let log = crate::audit::AuditLog::open(path)
        .map_err(|e| AppError::Setting(format!("audit.file {path:?}: {e}")))?;
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            let (log, stop) = (log.clone(), shutdown.clone());
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        got = hup.recv() => {
                            if got.is_none() {
                                return;
                            }
                            match log.reopen() {
                                Ok(()) => tracing::info!("SIGHUP: audit file reopened"),
                                Err(e) => tracing::error!(error = %e, "SIGHUP: audit file not reopened"),
                            }
                        }
                    }
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the audit file is not reopened by signal")
        }
    }
    Ok(log)
}
