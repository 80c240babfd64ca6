//! Load runs against the gateway and the checks that follow every run.
//!
//! - [`buyer`]: one simulated buyer's HTTP calls (ticket → token → order), keep-alive.
//! - [`rush`]: many buyers at once, every answer tallied, every 202 recorded.
//! - [`verify`]: the invariants, from the client's record, Redis and the order topic.

pub mod buyer;
pub mod rush;
pub mod verify;
