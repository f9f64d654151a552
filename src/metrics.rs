//! The one Prometheus registry, owned by the app (no globals, so tests run in parallel),
//! with typed families whose label values come from fixed enums: cardinality is bounded.
//! Never label by user, AoR or IP.
//!
//! Metric names are `pub const` so tests scrape by the same names.

mod timing;

use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub use timing::{
    HttpRoute, HTTP_REQUESTS, PROXY_TRANSACTION_SECONDS, REGISTER_SECONDS, SIP_ACCEPT_FAILURES,
    STORE_QUEUE_MAX, TLS_HANDSHAKE_SECONDS, TOKEN_EXCHANGE_SECONDS, TRANSACTIONS_MAX,
};

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
/// Open SIP-over-WebSocket connections (WS and WSS, upgrade done).
pub const WS_CONNECTIONS: &str = "sipward_ws_connections";
pub const TLS_RELOADS: &str = "sipward_tls_cert_reloads_total";
pub const TLS_CERT_EXPIRY: &str = "sipward_tls_cert_expiry_timestamp_seconds";
pub const PROXIED: &str = "sipward_proxy_requests_total";
pub const PROXY_BRANCHES: &str = "sipward_proxy_branches_total";
pub const PROXY_TIMEOUTS: &str = "sipward_proxy_branch_timeouts_total";
pub const PROXY_CONTEXTS: &str = "sipward_proxy_contexts";
pub const KEEPALIVES: &str = "sipward_keepalives_total";
pub const BUILD_INFO: &str = "sipward_build_info";

/// The package version, in `sipward_build_info` (the crate root re-exports it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The short git commit the binary was built from (`unknown` outside git), set by build.rs
/// (the crate root re-exports it).
pub const GIT_COMMIT: &str = env!("SIPWARD_GIT_COMMIT");

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
    const ALL: [HandshakeOutcome; 4] = [
        HandshakeOutcome::Ok,
        HandshakeOutcome::FailedVerification,
        HandshakeOutcome::Timeout,
        HandshakeOutcome::ProtocolError,
    ];

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
    const ALL: [RegisterOutcome; 9] = [
        RegisterOutcome::Ok,
        RegisterOutcome::Challenged,
        RegisterOutcome::AuthFailed,
        RegisterOutcome::Forbidden,
        RegisterOutcome::BadRequest,
        RegisterOutcome::IntervalTooBrief,
        RegisterOutcome::TooManyBindings,
        RegisterOutcome::Throttled,
        RegisterOutcome::BadExtension,
    ];

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

/// Every reason of [`AUTH_FAILURES`], for the zero series at start.
const AUTH_FAILURE_ALL: [Failure; 6] = [
    Failure::WrongResponse,
    Failure::StaleNonce,
    Failure::InvalidNonce,
    Failure::Replay,
    Failure::Algorithm,
    Failure::Malformed,
];

/// Reason label of [`AUTH_FAILURES`]: why the authenticator refused credentials.
pub fn auth_failure_label(f: Failure) -> &'static str {
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
    /// STUN on a SIP UDP port that is not answered: malformed, not a Binding request or
    /// indication, or with a comprehension-required attribute.
    Stun,
}

impl DropReason {
    const ALL: [DropReason; 6] = [
        DropReason::Unparseable,
        DropReason::Response,
        DropReason::Throttled,
        DropReason::Overloaded,
        DropReason::Ack,
        DropReason::Stun,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DropReason::Unparseable => "unparseable",
            DropReason::Response => "response",
            DropReason::Throttled => "throttled",
            DropReason::Overloaded => "overloaded",
            DropReason::Ack => "ack",
            DropReason::Stun => "stun",
        }
    }
}

/// An RFC 5626 keep-alive received on a SIP UDP port (label of [`KEEPALIVES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveKind {
    /// A datagram of CRLFs only.
    Crlf,
    /// A STUN Binding request, answered.
    StunBinding,
    /// A STUN Binding indication (no answer).
    StunIndication,
}

impl KeepAliveKind {
    const ALL: [KeepAliveKind; 3] = [
        KeepAliveKind::Crlf,
        KeepAliveKind::StunBinding,
        KeepAliveKind::StunIndication,
    ];

    fn as_str(self) -> &'static str {
        match self {
            KeepAliveKind::Crlf => "crlf",
            KeepAliveKind::StunBinding => "stun_binding",
            KeepAliveKind::StunIndication => "stun_indication",
        }
    }
}

/// Every method label ([`method_label`]), for the zero series at start.
const METHODS: [Option<crate::sip::Method>; 15] = {
    use crate::sip::Method::*;
    [
        Some(Register),
        Some(Invite),
        Some(Ack),
        Some(Options),
        Some(Bye),
        Some(Cancel),
        Some(Subscribe),
        Some(Notify),
        Some(Message),
        Some(Refer),
        Some(Info),
        Some(Update),
        Some(Prack),
        Some(Publish),
        None,
    ]
};

/// The outcome labels of [`PROXIED`]: the class of the final sent back, or why none was.
const PROXY_OUTCOMES: [&str; 7] = ["2xx", "3xx", "4xx", "5xx", "6xx", "no_route", "overloaded"];

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
    keepalives: IntCounterVec,
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
    pub ws_connections: IntGauge,
    pub transactions: IntGauge,
    /// Completed transactions dropped before Timer J to make room, since the start.
    pub transactions_evicted: IntGauge,
    /// Latency histograms, HTTP requests, the process collector (`metrics/timing.rs`).
    timing: timing::Timing,
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
        let keepalives = counter(
            KEEPALIVES,
            "RFC 5626 keep-alives received on SIP UDP ports (CRLF, STUN)",
            &["kind"],
        );
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
        let build_info = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Always 1; the labels say which sipward this is"),
            &["version", "commit"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric name");
        build_info.with_label_values(&[VERSION, GIT_COMMIT]).set(1);
        init_label_values(&Families {
            requests: &requests,
            responses: &responses,
            register: &register,
            auth_failures: &auth_failures,
            parse_errors: &parse_errors,
            dropped: &dropped,
            keepalives: &keepalives,
            tls_handshakes: &tls_handshakes,
            tls_reloads: &tls_reloads,
            proxied: &proxied,
        });
        let timing = timing::Timing::register(&registry);
        Metrics {
            timing,
            bindings: gauge(BINDINGS, "Current bindings in the location service"),
            aors: gauge(AORS, "Current AoRs with at least one binding"),
            tcp_connections: gauge(TCP_CONNECTIONS, "Open TCP connections"),
            tls_connections: gauge(TLS_CONNECTIONS, "Open TLS connections (handshake done)"),
            ws_connections: gauge(WS_CONNECTIONS, "Open WebSocket connections (WS and WSS, upgrade done)"),
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
            keepalives,
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

    /// A REGISTER decided and answered (see [`REGISTER_SECONDS`]).
    pub fn register_took(&self, d: Duration) {
        self.timing.register.observe(timing::seconds(d));
    }

    /// A proxied request's final sent back, `d` after it was forwarded.
    pub fn proxy_transaction_took(&self, d: Duration) {
        self.timing.proxy_transaction.observe(timing::seconds(d));
    }

    /// A token API credential exchange answered.
    pub fn token_exchange_took(&self, d: Duration) {
        self.timing.token_exchange.observe(timing::seconds(d));
    }

    /// A TLS handshake completed.
    pub fn tls_handshake_took(&self, d: Duration) {
        self.timing.tls_handshake.observe(timing::seconds(d));
    }

    /// The configured caps the alert rules compare the gauges with (set once at start).
    pub fn set_caps(&self, max_transactions: usize, store_queue: usize) {
        self.timing.transactions_max.set(max_transactions as i64);
        self.timing.store_queue_max.set(store_queue as i64);
    }

    /// A failed `accept` on a SIP stream listener.
    pub fn sip_accept_failure(&self) {
        self.timing.sip_accept_failures.inc();
    }

    /// An HTTP request answered with `status`.
    pub fn http_request(&self, route: HttpRoute, status: u16) {
        self.timing.http_request(route, status);
    }

    pub fn tls_reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.tls_reloads.with_label_values(&[outcome]).inc();
    }

    /// The open-connections gauge for a stream transport.
    pub fn stream_connections(&self, t: Transport) -> &IntGauge {
        match t {
            Transport::Tls => &self.tls_connections,
            Transport::Ws | Transport::Wss => &self.ws_connections,
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

    pub fn keepalive(&self, k: KeepAliveKind) {
        self.keepalives.with_label_values(&[k.as_str()]).inc();
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

/// The labelled counter families, for [`init_label_values`].
struct Families<'a> {
    requests: &'a IntCounterVec,
    responses: &'a IntCounterVec,
    register: &'a IntCounterVec,
    auth_failures: &'a IntCounterVec,
    parse_errors: &'a IntCounterVec,
    dropped: &'a IntCounterVec,
    keepalives: &'a IntCounterVec,
    tls_handshakes: &'a IntCounterVec,
    tls_reloads: &'a IntCounterVec,
    proxied: &'a IntCounterVec,
}

/// Creates every known series of the labelled families at 0, so a scrape right after start
/// shows them and `increase()` sees the first event. Label sets are the fixed enums above:
/// about 200 series in all. Proxy outcomes are not made for REGISTER and ACK, which the
/// proxy never counts.
fn init_label_values(f: &Families<'_>) {
    use crate::sip::Method;
    for t in Transport::ALL {
        for m in METHODS {
            f.requests.with_label_values(&[method_label(m), t.as_str()]);
        }
        for c in StatusClass::ALL {
            f.responses.with_label_values(&[c.as_str(), t.as_str()]);
        }
        f.parse_errors.with_label_values(&[t.as_str()]);
    }
    for o in RegisterOutcome::ALL {
        f.register.with_label_values(&[o.as_str()]);
    }
    for r in AUTH_FAILURE_ALL {
        f.auth_failures.with_label_values(&[auth_failure_label(r)]);
    }
    for r in DropReason::ALL {
        f.dropped.with_label_values(&[r.as_str()]);
    }
    for k in KeepAliveKind::ALL {
        f.keepalives.with_label_values(&[k.as_str()]);
    }
    for o in HandshakeOutcome::ALL {
        f.tls_handshakes.with_label_values(&[o.as_str()]);
    }
    for o in ["ok", "failed"] {
        f.tls_reloads.with_label_values(&[o]);
    }
    for m in METHODS {
        if matches!(m, Some(Method::Register | Method::Ack)) {
            continue;
        }
        for o in PROXY_OUTCOMES {
            f.proxied.with_label_values(&[method_label(m), o]);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_families_start_at_zero_and_build_info_is_one() {
        let text = Metrics::new().render();
        for series in [
            "sipward_sip_requests_total{method=\"REGISTER\",transport=\"udp\"} 0",
            "sipward_sip_requests_total{method=\"other\",transport=\"tls\"} 0",
            "sipward_sip_responses_sent_total{class=\"6xx\",transport=\"tcp\"} 0",
            "sipward_register_outcomes_total{outcome=\"bad_extension\"} 0",
            "sipward_auth_failures_total{reason=\"wrong_response\"} 0",
            "sipward_sip_dropped_total{reason=\"stun\"} 0",
            "sipward_keepalives_total{kind=\"crlf\"} 0",
            "sipward_tls_handshakes_total{outcome=\"timeout\"} 0",
            "sipward_tls_cert_reloads_total{outcome=\"failed\"} 0",
            "sipward_proxy_requests_total{method=\"INVITE\",outcome=\"no_route\"} 0",
            "sipward_parse_errors_total{transport=\"udp\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == series),
                "{series} missing:\n{text}"
            );
        }
        assert!(!text.contains("sipward_proxy_requests_total{method=\"REGISTER\""));
        let info = format!("{BUILD_INFO}{{commit=\"{GIT_COMMIT}\",version=\"{VERSION}\"}} 1");
        assert!(text.lines().any(|l| l == info), "{info} missing:\n{text}");
        assert!(!GIT_COMMIT.is_empty());
    }
}
