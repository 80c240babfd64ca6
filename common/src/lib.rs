//! What the seckill crates truly share, and nothing else:
//!
//! - [`cli`]: the shared `main` wrapper (logging, exit status), run once clap has
//!   parsed a binary's command line.
//! - [`config`]: load a flat configuration struct from defaults, a TOML file and
//!   `SECKILL_*` environment variables, in that order.
//! - [`stack`]: the addresses of the project-local stack (`./dev up`), which are the
//!   defaults every component points at.
//! - [`kafka`]: the clients' settings (brokers, security), topic creation and a tiny
//!   `block_on` for rdkafka's admin API.
//! - [`tls`]: TLS client settings (rustls) from PEM files, and PostgreSQL connections
//!   plain or over TLS (feature `postgres`).
//! - [`order`]: the order message on the `orders` topic.
//! - [`ticket`]: HMAC-signed user tickets (mint and verify).
//! - [`payment`]: payment intents and the provider's signed callbacks.
//! - [`observability`]: the metric names the alerts and the dashboard use (for tests),
//!   and the writing of one unlabelled metric.
//! - [`telemetry`]: OpenTelemetry spans built when an operation ends, W3C `traceparent`,
//!   and their bounded export over OTLP/HTTP (feature `telemetry`).
//! - [`now_ms`]: wall-clock milliseconds since the Unix epoch.

pub mod cli;
pub mod config;
pub mod kafka;
pub mod observability;
pub mod order;
pub mod payment;
pub mod stack;
#[cfg(feature = "telemetry")]
pub mod telemetry;
pub mod ticket;
pub mod tls;

pub use config::{check_ranges, load_config, ConfigError, OutOfRange, Setting};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
