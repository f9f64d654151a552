//! The one Prometheus registry, owned by the app (no globals, so tests run in parallel),
//! with typed families whose label values come from fixed enums: cardinality is bounded.
//! Never label by user, AoR or IP.
//!
//! Metric names are `pub const` so tests scrape by the same names.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::auth::Failure;
use crate::sip::{StatusClass, Transport};

pub const SIP_REQUESTS: &str = "sipward_sip_requests_total";
pub const SIP_RESPONSES: &str = "sipward_sip_responses_sent_total";
pub const REGISTER_OUTCOMES: &str = "sipward_register_outcomes_total";
pub const AUTH_FAILURES: &str = "sipward_auth_failures_total";
pub const PARSE_ERRORS: &str = "sipward_parse_errors_total";
pub const BINDINGS: &str = "sipward_bindings";
pub const AORS: &str = "sipward_aors";
pub const TCP_CONNECTIONS: &str = "sipward_tcp_connections";
pub const TRANSACTIONS: &str = "sipward_transactions";
pub const TRANSACTIONS_EVICTED: &str = "sipward_transactions_evicted";
pub const DROPPED: &str = "sipward_sip_dropped_total";
pub const TLS_HANDSHAKES: &str = "sipward_tls_handshakes_total";
pub const TLS_CONNECTIONS: &str = "sipward_tls_connections";
pub const TLS_RELOADS: &str = "sipward_tls_cert_reloads_total";
pub const TLS_CERT_EXPIRY: &str = "sipward_tls_cert_expiry_timestamp_seconds";
pub const PROXIED: &str = "sipward_proxy_requests_total";
pub const PROXY_BRANCHES: &str = "sipward_proxy_branches_total";
pub const PROXY_TIMEOUTS: &str = "sipward_proxy_branch_timeouts_total";
pub const PROXY_CONTEXTS: &str = "sipward_proxy_contexts";

/// How a TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeOutcome {
    Ok,
    /// The client certificate was missing (where required), untrusted, expired, revoked or
    /// not for client authentication.
    FailedVerification,
    /// The handshake deadline passed (including the wait for a handshake slot).
    Timeout,
    /// Anything else: not TLS at all, an unsupported version or cipher, a closed socket.
    ProtocolError,
}

impl HandshakeOutcome {
    fn as_str(self) -> &'static str {
        match self {
            HandshakeOutcome::Ok => "ok",
            HandshakeOutcome::FailedVerification => "failed_verification",
            HandshakeOutcome::Timeout => "timeout",
            HandshakeOutcome::ProtocolError => "protocol_error",
        }
    }
}

/// What happened to one REGISTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// 200: bindings changed or fetched.
    Ok,
    /// 401 with a challenge (no or stale credentials).
    Challenged,
    /// 401 after credentials that did not verify.
    AuthFailed,
    /// 403: the identity may not bind this AoR, or the domain is not ours.
    Forbidden,
    /// 400 of any kind.
    BadRequest,
    /// 423.
    IntervalTooBrief,
    /// 503: binding or AoR limits.
    TooManyBindings,
    /// Dropped by the failure limiter.
    Throttled,
    /// 420.
    BadExtension,
    /// 503 with Retry-After: the location store's write queue was full.
    StoreBusy,
}

impl RegisterOutcome {
    fn as_str(self) -> &'static str {
        match self {
            RegisterOutcome::Ok => "ok",
            RegisterOutcome::Challenged => "challenged",
            RegisterOutcome::AuthFailed => "auth_failed",
            RegisterOutcome::Forbidden => "forbidden",
            RegisterOutcome::BadRequest => "bad_request",
            RegisterOutcome::IntervalTooBrief => "interval_too_brief",
            RegisterOutcome::TooManyBindings => "too_many_bindings",
            RegisterOutcome::Throttled => "throttled",
            RegisterOutcome::BadExtension => "bad_extension",
            RegisterOutcome::StoreBusy => "store_busy",
        }
    }
}

/// Reason label of [`AUTH_FAILURES`]: why the authenticator refused credentials.
fn auth_failure_label(f: Failure) -> &'static str {
    match f {
        Failure::WrongResponse => "wrong_response",
        Failure::StaleNonce => "stale_nonce",
        Failure::InvalidNonce => "invalid_nonce",
        Failure::Replay => "replay",
        Failure::Algorithm => "algorithm",
        Failure::Malformed => "malformed",
    }
}

/// Why a message was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Unparseable,
    Response,
    Throttled,
    Overloaded,
    Ack,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::Unparseable => "unparseable",
            DropReason::Response => "response",
            DropReason::Throttled => "throttled",
            DropReason::Overloaded => "overloaded",
            DropReason::Ack => "ack",
        }
    }
}

/// Method label: the RFC methods, everything else is `other`.
pub fn method_label(m: Option<crate::sip::Method>) -> &'static str {
    use crate::sip::Method::*;
    match m {
        Some(Register) => "REGISTER",
        Some(Invite) => "INVITE",
        Some(Ack) => "ACK",
        Some(Options) => "OPTIONS",
        Some(Bye) => "BYE",
        Some(Cancel) => "CANCEL",
        Some(Subscribe) => "SUBSCRIBE",
        Some(Notify) => "NOTIFY",
        Some(Message) => "MESSAGE",
        Some(Refer) => "REFER",
        Some(Info) => "INFO",
        Some(Update) => "UPDATE",
        Some(Prack) => "PRACK",
        Some(Publish) => "PUBLISH",
        Some(Extension) | None => "other",
    }
}

/// Cheap to clone; every field is an `Arc` inside prometheus.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    responses: IntCounterVec,
    register: IntCounterVec,
    auth_failures: IntCounterVec,
    parse_errors: IntCounterVec,
    dropped: IntCounterVec,
    tls_handshakes: IntCounterVec,
    tls_reloads: IntCounterVec,
    proxied: IntCounterVec,
    proxy_branches: prometheus::IntCounter,
    proxy_timeouts: prometheus::IntCounter,
    /// Proxy response contexts (forwarded requests awaiting or lingering after a final).
    pub proxy_contexts: IntGauge,
    /// Leaf `notAfter` as a Unix time, by certificate (`default` or the SNI domain).
    pub tls_cert_expiry: IntGaugeVec,
    pub tls_connections: IntGauge,
    pub bindings: IntGauge,
    pub aors: IntGauge,
    pub tcp_connections: IntGauge,
    pub transactions: IntGauge,
    /// Completed transactions dropped before Timer J to make room, since the start.
    pub transactions_evicted: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let requests = counter(
            SIP_REQUESTS,
            "SIP requests received",
            &["method", "transport"],
        );
        let responses = counter(SIP_RESPONSES, "SIP responses sent", &["class", "transport"]);
        let register = counter(
            REGISTER_OUTCOMES,
            "REGISTER requests by outcome",
            &["outcome"],
        );
        let auth_failures = counter(AUTH_FAILURES, "Refused credentials by reason", &["reason"]);
        let parse_errors = counter(
            PARSE_ERRORS,
            "Messages that failed to parse",
            &["transport"],
        );
        let dropped = counter(DROPPED, "Messages dropped without an answer", &["reason"]);
        let tls_handshakes = counter(TLS_HANDSHAKES, "TLS handshakes by outcome", &["outcome"]);
        let tls_reloads = counter(
            TLS_RELOADS,
            "TLS certificate reloads by outcome",
            &["outcome"],
        );
        let tls_cert_expiry = IntGaugeVec::new(
            Opts::new(
                TLS_CERT_EXPIRY,
                "Expiry (notAfter, Unix seconds) of each served TLS certificate",
            ),
            &["cert"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(tls_cert_expiry.clone()))
            .expect("unique metric name");
        let proxied = counter(
            PROXIED,
            "Requests forwarded by the proxy, by method and the class of the final sent back (or no_route, overloaded)",
            &["method", "outcome"],
        );
        let plain = |name: &str, help: &str| {
            let c = prometheus::IntCounter::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let proxy_branches = plain(PROXY_BRANCHES, "Branches forked by the proxy");
        let proxy_timeouts = plain(
            PROXY_TIMEOUTS,
            "Proxy branches that timed out (Timers B, C, F)",
        );
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric name");
            g
        };
        Metrics {
            bindings: gauge(BINDINGS, "Current bindings in the location service"),
            aors: gauge(AORS, "Current AoRs with at least one binding"),
            tcp_connections: gauge(TCP_CONNECTIONS, "Open TCP connections"),
            tls_connections: gauge(TLS_CONNECTIONS, "Open TLS connections (handshake done)"),
            proxy_contexts: gauge(PROXY_CONTEXTS, "Proxy response contexts held"),
            transactions: gauge(TRANSACTIONS, "Server transactions held"),
            transactions_evicted: gauge(
                TRANSACTIONS_EVICTED,
                "Completed server transactions dropped before Timer J to make room, since the start",
            ),
            registry,
            requests,
            responses,
            register,
            auth_failures,
            parse_errors,
            dropped,
            tls_handshakes,
            tls_reloads,
            tls_cert_expiry,
            proxied,
            proxy_branches,
            proxy_timeouts,
        }
    }

    /// One forwarded request's outcome: the class of the final sent back, `no_route` or
    /// `overloaded`.
    pub fn proxied(&self, method: &'static str, outcome: &'static str) {
        self.proxied.with_label_values(&[method, outcome]).inc();
    }

    pub fn proxy_branches(&self, n: usize) {
        self.proxy_branches.inc_by(n as u64);
    }

    pub fn proxy_timeout(&self) {
        self.proxy_timeouts.inc();
    }

    pub fn tls_handshake(&self, o: HandshakeOutcome) {
        self.tls_handshakes.with_label_values(&[o.as_str()]).inc();
    }

    pub fn tls_reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.tls_reloads.with_label_values(&[outcome]).inc();
    }

    /// The open-connections gauge for a stream transport.
    pub fn stream_connections(&self, t: Transport) -> &IntGauge {
        match t {
            Transport::Tls => &self.tls_connections,
            Transport::Tcp | Transport::Udp => &self.tcp_connections,
        }
    }

    pub fn request(&self, method: Option<crate::sip::Method>, t: Transport) {
        self.requests
            .with_label_values(&[method_label(method), t.as_str()])
            .inc();
    }

    /// One response sent, counted by its class (`sip::StatusClass`).
    pub fn response(&self, status: u16, t: Transport) {
        let class = StatusClass::of(status).as_str();
        self.responses.with_label_values(&[class, t.as_str()]).inc();
    }

    pub fn register(&self, o: RegisterOutcome) {
        self.register.with_label_values(&[o.as_str()]).inc();
    }

    pub fn auth_failure(&self, f: Failure) {
        self.auth_failures
            .with_label_values(&[auth_failure_label(f)])
            .inc();
    }

    pub fn parse_error(&self, t: Transport) {
        self.parse_errors.with_label_values(&[t.as_str()]).inc();
    }

    pub fn dropped(&self, r: DropReason) {
        self.dropped.with_label_values(&[r.as_str()]).inc();
    }

    /// The registry, for families defined by other modules (token API, OIDC).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let enc = prometheus::TextEncoder::new();
        if enc.encode(&self.registry.gather(), &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
