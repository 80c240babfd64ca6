//! The flash-sale gateway, on may coroutines and may_minihttp.
//!
//! - [`http`]: connection glue, bounded body reading, replies.
//! - [`app`]: state and handlers — tickets, limits, tokens, purchase, order hand-off.
//! - [`error`]: the one error type and its HTTP mapping (status, code, Retry-After).
//! - [`redis_pipe`]: shared pipelined Redis connections that never block a worker.
//! - [`breaker`]: fail fast while Redis is sick.
//! - [`limits`]: governor rate limits (global, per user, per IP).
//! - [`order_sink`]: the Kafka producer; a 202 waits for the broker's acknowledgement.
//! - [`switches`]: degradation switches; [`metrics`]: Prometheus text.
//! - [`server`]: start-up, health loop and graceful shutdown.

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
pub mod redis_pipe;
pub mod request;
pub mod server;
pub mod switches;
