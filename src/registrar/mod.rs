//! The registrar: RFC 3261 §10.3 binding rules (steps 6–8), RFC 5626/5627 instance and
//! reg-id matching, and the in-memory location service with its expiry index.
//!
//! It owns the bindings of every address-of-record and decides, for one already
//! authenticated and authorised REGISTER given as plain data ([`RegisterInput`]), whether the
//! change is allowed and what the AoR's bindings are afterwards. It must not parse SIP,
//! authenticate, build responses, touch sockets, spawn tasks or read the clock: the caller passes
//! `now` and runs the single purge task that calls [`Location::purge`]. It is the only
//! writer of the bindings and AoRs gauges, through the handles given to
//! [`Location::with_gauges`] (plain `prometheus` gauges, so it names no upper module).
//!
//! Layout: `binding` holds the data kept per binding and the snapshots handed out,
//! `rules` the pure §10.3 decision (validate everything, then a plan that cannot fail),
//! `location` the shared map that applies plans atomically per AoR, and `expiry` the
//! ordered `(deadline, id)` index used by purge, `count` the counts mirrored into gauges;
//! `page` the admin listing a page at a time
//! in AoR order. `journal` is what a durable store receives:
//! every applied change, in order, and the [`Ack`] a REGISTER's answer waits for.

mod binding;
mod count;
mod expiry;
mod journal;
mod location;
mod page;
mod rules;

pub use binding::{Aor, BindingSnapshot, FlowId, Transport};
/// The Route parameter with which a node routes a request to the node that owns a
/// connection-bound binding: the binding's id there (`location_store::RedisShared` writes it,
/// dispatch reads it on the owning node).
pub const PEER_BINDING_PARAM: &str = "sipward-binding";

pub use journal::{Ack, BindingChange, BindingRecord, Journal, SharedBindings};
pub use location::{Location, LocationGauges, Rebound, RegisterOutcome};
pub use rules::{
    ContactInput, Credential, PolicyError, RegisterError, RegisterInput, RegistrarPolicy,
    MAX_BINDING_TEXT, MAX_PATH_TEXT, MAX_USER_AGENT,
};

#[cfg(test)]
mod tests;
