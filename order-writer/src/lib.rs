//! order-writer: the order topic into PostgreSQL, exactly once, and the payment window.
//!
//! - [`consumer`]: batches from the consumer group, one statement per batch, database
//!   commit, then offset commit; poison messages to the dead-letter topic.
//! - [`db`]: migrations, the batch write, the payment-window queries.
//! - [`canceller`]: cancels unpaid orders and returns their stock, exactly once.
//! - [`rebuild`]: restores sales into Redis after it lost its data.
//! - [`late`]: puts back into Redis orders that reach the writer after a reconcile.
//! - [`reconciler`]: runs that by itself when a Redis master restarted or was promoted.
//! - [`config`]: the settings and their defaults.
//! - [`metrics`]: lag, batch sizes, write time, rows, dead letters, cancellations; the
//!   readiness its `/readyz` answers.
//! - [`trace`]: the spans of traced orders (consumption, database write) and of the
//!   canceller's and reconciler's passes.

pub mod canceller;
pub mod config;
pub mod consumer;
pub mod db;
pub mod late;
pub mod metrics;
pub mod rebuild;
pub mod reconciler;
pub mod trace;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("configuration: {0}")]
    Config(String),
    /// `database_url` does not parse.
    #[error("configuration: {0}")]
    DatabaseUrl(#[source] postgres::Error),
    #[error("database: {}", seckill_common::tls::with_sources(.0))]
    Db(#[from] postgres::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("redis: {0}")]
    Stock(#[from] stock::StockError),
    /// A sale that cannot be trusted as it is (its stock not conserved, or a lost part
    /// without a definition to restore it from): it is paused for an operator.
    #[error("not reconciled: {0}")]
    Unreconciled(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tracing(#[from] seckill_common::telemetry::TelemetryError),
}
