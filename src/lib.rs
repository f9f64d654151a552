//! sipward: a SIP registrar and proxy with a side HTTP API.
//!
//! The module map, lowest layer first. Dependency rule ("A → B": A names B): `sip`,
//! `transaction` and `store` name no other module; `auth` and `registrar` name only `sip`, and
//! `metrics` names `sip` and `auth` (label enums); `location_store` names `registrar`, `fsutil` and `config` (`RedisConfig`); `config` builds the config types of `sip`, `transaction`, `auth` and `registrar`;
//! `transport` → `sip`, `config`, `metrics`; `proxy` → `transport`, `transaction`; `credentials`
//! → `auth`, `store`; the two tops are `dispatch` (→ `proxy`, `auth`, `registrar`,
//! `credentials`) and `api` (→ `oidc`, `store`, `credentials`, `registrar`, `scim`); `oidc` is used by
//! `api` only; `ctl` (the admin API's client) names only `api`; `scim` names no other module and `audit` names only `fsutil` (both used by `api`); `cluster` names `auth`, `store` and `location_store`. Lower layers never name upper ones; only `app` wires them together. Details:
//! docs/architecture.md; no import cycle: tests/architecture.rs.
//!
//! | module | owns |
//! | --- | --- |
//! | `sip` | the message layer: zero-copy parse, typed views, URIs, Digest params, stream framing, building; the types every layer names (`Aor`, `Transport`, `FlowId`, `Status`, `HostPort`) |
//! | `transport` | binding and serving every SIP socket (all bound before any is served), RFC 5626 keep-alives (CRLF, STUN Binding), UDP receive threads (blocking, several per socket), TCP and TLS accept and connections with deadlines, SIP over WebSocket (WS and WSS, RFC 7118), TLS material and reload, mTLS identity, the flow table, the `Handler` seam (an answer now, or later through a `Responder`); on a wildcard socket the address each datagram arrived on (packet information), and each listener's advertised name |
//! | `transaction` | RFC 3261 §17 server and client transactions as state machines with no I/O |
//! | `auth` | the `Authenticator` (one request's Digest step → a decision), Digest verification, stateless nonces, nonce-count replay table, failure limiters |
//! | `cluster` | what the nodes of a Redis deployment share with the authenticator: nonce uses (a nonce minted at one node verified, its `nc` checked, at another) and failure counts with the blocks they publish |
//! | `credentials` | accounts the registrar verifies against: static accounts, and token API devices (derived passwords, the active-device index) |
//! | `store` | the durable device store behind a trait: SQLite (WAL) for one node, Redis shared by several (`persistence = "redis"`), and the subscription to other nodes' device changes |
//! | `oidc` | issuer registry, OIDC discovery, JWKS cache (refreshed with backoff and jitter), access-token validation and claim mapping, opaque tokens (introspection, userinfo) |
//! | `scim` | the SCIM 2.0 directory of one IdP (Users, Groups, filters, PATCH) and the deprovision/reactivate transitions it decides; names no other module |
//! | `registrar` | RFC 3261 §10.3 binding rules, the location service and its expiry, the journal of applied changes a durable store receives |
//! | `location_store` | the durable location store behind the `LocationStore` trait (SQLite, WAL; or Redis / Redis Cluster, shared by several nodes): the writer thread with its bounded queue and group commit, restart loading, backup and check, other nodes' bindings for lookups |
//! | `proxy` | RFC 3261 §16 response contexts as a core with no I/O and its driver (forking, best response, CANCEL, ACK, Record-Route flow tokens), and the routing decisions as a typed `NextHop`; the names that mean us |
//! | `dispatch` | the `Handler`: parse → transaction → REGISTER / OPTIONS / authenticated requests |
//! | `api` | HTTP: the accept loop with its limits, health, readiness, metrics, admin, the token API, CORS for browsers and the web phone's files |
//! | `config` | TOML → validated sections and the domain types they build (limits, transaction, registrar, nonce and limiter configs); the embedded development profile |
//! | `metrics` | one Prometheus registry, label values from fixed enums |
//! | `app` | wiring: config → parts, bind, serve; spawns the proxy's driver and the purge task; the drain's two tokens |
//! | `devcerts` | `sipward certs dev`: the TEST-ONLY certificate set (rcgen) |
//! | `ctl` | `sipward ctl`: the admin API's client (tables or JSON); names only `api`'s header constant |
//! | `fdlimit` | the open-files limit: raised to the hard limit at start, the stream connection caps fitted under it with a reserve; names no other module |
//! | `audit` | the audit trail: one JSON line per identity event in a 0600 file reopened on SIGHUP, and its bounded, filtered, cursor-paged reader; names `fsutil` only |
//! | `fsutil` | owner-only (0600) file creation for keys and stores, and the start-up warning for group/world-readable secret files; names no other module |

/// The crate version (Cargo.toml) and the git commit the binary was built from (`git
/// rev-parse --short HEAD` at build time, see build.rs; "unknown" outside a repository).
pub use metrics::{GIT_COMMIT, VERSION};

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod ctl;
pub mod devcerts;
pub mod dispatch;
pub mod fdlimit;
pub mod fsutil;
pub mod location_store;
pub mod metrics;
pub mod oidc;
pub mod proxy;
pub mod registrar;
pub mod scim;
pub mod sip;
pub mod store;
pub mod transaction;
pub mod transport;
