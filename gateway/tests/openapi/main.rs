//! `openapi.json` stays true, both ways:
//! - every documented operation exists on a running gateway and answers, with valid
//!   input, its documented success in the documented shape; every route the gateway
//!   serves is documented;
//! - every refusal the server can choose (`error.rs`) is documented with its status,
//!   code and `Retry-After`; every operation documents the edge's refusals; other
//!   methods on a documented path answer 405 with `Allow` listing the documented ones;
//! - the server enforces what the request schemas declare (a body breaking a declared
//!   constraint is 400) and nothing more (bodies the schemas allow, at their bounds,
//!   are not refused with 400).
//!
//! `gateway/fuzz/run.sh` (schemathesis, in `./dev test`) explores the same contract
//! with generated requests; these are its cheap, deterministic core.
//!
//! Files: `schema.rs` (reading the document and checking an answer against it),
//! `routes.rs` (every operation answers as documented, other methods 405, degraded
//! answers), `refusals.rs` (every refusal of `error.rs` documented), `bodies.rs` (what
//! the request schemas declare is what the server enforces).

#[path = "../harness/mod.rs"]
mod harness;

mod bodies;
mod refusals;
mod routes;
mod schema;
