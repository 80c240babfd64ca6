//! The flash-sale gateway, on may coroutines and may_minihttp.
//!
//! - [`http`]: the may glue — connections, the edge's bounds and refusals, body reading,
//!   and which listener serves which route (the public `listen`: buyers; the internal
//!   `internal_listen`: `/admin/*`, `/metrics`, the payment provider's callback).
//! - [`request`]: what a handler sees ([`request::Incoming`]) and answers ([`request::Reply`]).
//! - [`app`]: state, routing, admission, readiness; handlers by concern in [`buyer`]
//!   (token, order, sale state, status), [`payments`] (a payment started by the buyer,
//!   paid only by the provider's signed callback), [`admin`] (sales, switches) and [`audit`];
//!   [`caches`] holds what is remembered between requests.
//! - [`error`]: the one error type and its HTTP mapping (status, code, Retry-After).
//! - [`redis_pipe`]: shared pipelined Redis connections that never block a worker.
//! - [`breaker`]: fail fast while Redis is sick.
//! - [`limits`]: governor rate limits (global, per user, per IP, scrapes).
//! - [`order_sink`]: the Kafka producer and the durable spool; [`releases`]: failed
//!   releases of unacknowledged orders, retried until Redis answers.
//! - [`switches`]: degradation switches; [`metrics`]: Prometheus text; [`trace`]: a
//!   buyer request's spans (OpenTelemetry), built when it ends.
//! - [`server`]: start-up (both listeners), health loop and graceful shutdown;
//!   [`config`]: the settings and their defaults; [`admin_cli`]: the `gateway switch …` /
//!   `gateway sale …` CLI.

pub mod admin;
pub mod admin_cli;
pub mod app;
pub mod audit;
pub mod breaker;
pub mod buyer;
pub mod caches;
pub mod config;
pub mod error;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod order_sink;
pub mod payments;
pub mod redis_pipe;
pub mod releases;
pub mod request;
pub mod server;
pub mod switches;
pub mod trace;
