//! The latency histograms, the HTTP API request counter, the configured caps alerts compare
//! against, and the process collector, added to the one registry by [`super::Metrics::new`]. Buckets are fixed here (bounded cardinality:
//! each histogram is one series set, no labels); route labels come from [`HttpRoute`].

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

pub const REGISTER_SECONDS: &str = "sipward_register_duration_seconds";
pub const PROXY_TRANSACTION_SECONDS: &str = "sipward_proxy_transaction_duration_seconds";
pub const TOKEN_EXCHANGE_SECONDS: &str = "sipward_token_exchange_duration_seconds";
pub const TLS_HANDSHAKE_SECONDS: &str = "sipward_tls_handshake_duration_seconds";
pub const HTTP_REQUESTS: &str = "sipward_http_requests_total";
pub const TRANSACTIONS_MAX: &str = "sipward_transactions_max";
pub const SIP_ACCEPT_FAILURES: &str = "sipward_sip_accept_failures_total";
pub const STORE_QUEUE_MAX: &str = "sipward_location_store_queue_max";

/// A REGISTER is decided in memory: sub-millisecond normally; the top buckets catch a
/// stalled lock or a slow durable-store reservation.
const REGISTER_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// From the request forwarded to the final sent back: network round trips, up to a callee
/// ringing until Timer C (3 minutes).
const PROXY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 32.0, 64.0, 180.0,
];
/// An exchange validates a JWT (keys cached) and writes one store row; an IdP key fetch on a
/// cache miss lands in the upper buckets.
const EXCHANGE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// A TLS handshake: a few milliseconds of CPU, more with a slow client or a queue for a slot.
const TLS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The HTTP routes, for [`HTTP_REQUESTS`]'s `route` label (a path that names no route is
/// `other`, so a scanner cannot add series).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRoute {
    Healthz,
    Readyz,
    Metrics,
    AdminBindings,
    AdminDevices,
    AdminUsers,
    AdminStatus,
    AdminTls,
    LoginOptions,
    Credentials,
    Devices,
    Other,
}

impl HttpRoute {
    const ALL: [HttpRoute; 12] = [
        HttpRoute::Healthz,
        HttpRoute::Readyz,
        HttpRoute::Metrics,
        HttpRoute::AdminBindings,
        HttpRoute::AdminDevices,
        HttpRoute::AdminUsers,
        HttpRoute::AdminStatus,
        HttpRoute::AdminTls,
        HttpRoute::LoginOptions,
        HttpRoute::Credentials,
        HttpRoute::Devices,
        HttpRoute::Other,
    ];

    /// The route a request path belongs to.
    pub fn of(path: &str) -> HttpRoute {
        match path {
            "/healthz" => HttpRoute::Healthz,
            "/readyz" => HttpRoute::Readyz,
            "/metrics" => HttpRoute::Metrics,
            "/admin/v1/bindings" => HttpRoute::AdminBindings,
            "/admin/v1/status" => HttpRoute::AdminStatus,
            "/admin/v1/tls/reload" => HttpRoute::AdminTls,
            "/v1/login-options" => HttpRoute::LoginOptions,
            "/v1/sip/credentials" => HttpRoute::Credentials,
            "/v1/sip/devices" => HttpRoute::Devices,
            p if p.starts_with("/admin/v1/devices") => HttpRoute::AdminDevices,
            p if p.starts_with("/admin/v1/users/") => HttpRoute::AdminUsers,
            p if p.starts_with("/v1/sip/devices/") => HttpRoute::Devices,
            _ => HttpRoute::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            HttpRoute::Healthz => "healthz",
            HttpRoute::Readyz => "readyz",
            HttpRoute::Metrics => "metrics",
            HttpRoute::AdminBindings => "admin_bindings",
            HttpRoute::AdminDevices => "admin_devices",
            HttpRoute::AdminUsers => "admin_users",
            HttpRoute::AdminStatus => "admin_status",
            HttpRoute::AdminTls => "admin_tls",
            HttpRoute::LoginOptions => "login_options",
            HttpRoute::Credentials => "credentials",
            HttpRoute::Devices => "devices",
            HttpRoute::Other => "other",
        }
    }
}

const HTTP_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// The families of this file.
#[derive(Clone)]
pub(super) struct Timing {
    pub(super) register: Histogram,
    pub(super) proxy_transaction: Histogram,
    pub(super) token_exchange: Histogram,
    pub(super) tls_handshake: Histogram,
    pub(super) http_requests: IntCounterVec,
    /// `sip.max_transactions`: the cap of `sipward_transactions` and `sipward_proxy_contexts`.
    pub(super) transactions_max: IntGauge,
    /// `registrar.store_queue` (0 without a durable store): the cap of the writer's queue.
    pub(super) store_queue_max: IntGauge,
    /// Failed `accept` calls on SIP stream listeners (EMFILE: out of descriptors).
    pub(super) sip_accept_failures: prometheus::IntCounter,
}

impl Timing {
    /// Registers every family (each HTTP route and class at 0) and, on Linux, the
    /// `process_*` collector (CPU, resident memory, open and maximum file descriptors,
    /// start time).
    pub(super) fn register(registry: &Registry) -> Timing {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("static metric definition");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric name");
            h
        };
        let http_requests = IntCounterVec::new(
            Opts::new(
                HTTP_REQUESTS,
                "HTTP API requests answered, by route and status class",
            ),
            &["route", "class"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(http_requests.clone()))
            .expect("unique metric name");
        for route in HttpRoute::ALL {
            for class in HTTP_CLASSES {
                http_requests.with_label_values(&[route.as_str(), class]);
            }
        }
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric name");
            g
        };
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric name");
        Timing {
            register: histogram(
                REGISTER_SECONDS,
                "Time to decide and answer a REGISTER (the durable store's write not included)",
                REGISTER_BUCKETS,
            ),
            proxy_transaction: histogram(
                PROXY_TRANSACTION_SECONDS,
                "Proxied requests: from forwarding to the final response sent back",
                PROXY_BUCKETS,
            ),
            token_exchange: histogram(
                TOKEN_EXCHANGE_SECONDS,
                "Token API credential exchanges, from request to answer",
                EXCHANGE_BUCKETS,
            ),
            tls_handshake: histogram(
                TLS_HANDSHAKE_SECONDS,
                "Completed TLS handshakes, from accept to established (slot wait included)",
                TLS_BUCKETS,
            ),
            http_requests,
            transactions_max: gauge(
                TRANSACTIONS_MAX,
                "Configured cap on server transactions and on proxy contexts (sip.max_transactions)",
            ),
            sip_accept_failures: {
                let c = prometheus::IntCounter::new(
                    SIP_ACCEPT_FAILURES,
                    "Failed accept calls on the SIP TCP and TLS listeners (EMFILE: out of file descriptors)",
                )
                .expect("static metric definition");
                registry
                    .register(Box::new(c.clone()))
                    .expect("unique metric name");
                c
            },
            store_queue_max: gauge(
                STORE_QUEUE_MAX,
                "Configured cap of the location store's write queue (registrar.store_queue; 0 without a store)",
            ),
        }
    }

    pub(super) fn http_request(&self, route: HttpRoute, status: u16) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests
            .with_label_values(&[route.as_str(), class])
            .inc();
    }
}

pub(super) fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_path_maps_to_its_label_and_unknown_paths_to_other() {
        assert_eq!(
            HttpRoute::of("/admin/v1/devices/d-abc"),
            HttpRoute::AdminDevices
        );
        assert_eq!(
            HttpRoute::of("/admin/v1/users/a@b/revoke"),
            HttpRoute::AdminUsers
        );
        assert_eq!(HttpRoute::of("/v1/sip/devices/x"), HttpRoute::Devices);
        assert_eq!(HttpRoute::of("/wp-login.php"), HttpRoute::Other);
        for buckets in [
            REGISTER_BUCKETS,
            PROXY_BUCKETS,
            EXCHANGE_BUCKETS,
            TLS_BUCKETS,
        ] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]) && buckets.len() <= 14);
        }
    }
}
