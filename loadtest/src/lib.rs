//! Load runs against the gateway and the checks that follow every run.
//!
//! - [`buyer`]: one simulated buyer's HTTP calls (ticket → token → order), keep-alive.
//! - [`rush`]: many buyers at once, every answer tallied, every 202 recorded.
//! - [`scenarios`]: the Goose scenarios (rush, click-storm, bots, browse, mix), with
//!   HdrHistogram latency per request type and the record of every 202.
//! - [`latency`]: a request type's whole percentile distribution (`latency.json`).
//! - [`plot`]: the bench's charts (SVG) and its comparison with the previous run, for
//!   `seckill-plot`: the inputs read apart (`plot/inputs.rs`), drawing (`plot/svg.rs`),
//!   the run history (`plot/history.rs`).
//! - [`traces`]: an order's journey read back from Jaeger (the demo shows and checks it).
//! - [`verify`]: the invariants, from the client's record, Redis, the order topic and
//!   PostgreSQL: gathering the sources (`verify/sources.rs`) apart from the checks
//!   (`verify/checks.rs`).
//! - [`soak`]: the hostile soak — hostile connections held through a rush, what they
//!   cost in RSS and latency (`hostile`, `process`, `timed_rush`, the run in `mod.rs`).

pub mod buyer;
pub mod latency;
pub mod plot;
pub mod rush;
#[cfg(feature = "load")]
pub mod scenarios;
pub mod soak;
pub mod traces;
pub mod verify;
