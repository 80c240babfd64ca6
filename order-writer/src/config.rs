//! order-writer configuration: these defaults, then `--config FILE` (TOML), then
//! `SECKILL_<KEY>` environment variables.

use crate::WriterError;
use seckill_common::tls::TlsFiles;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// PostgreSQL (`postgres://user@host:port/db`; `?sslmode=require` or `verify-full`
    /// for TLS, which always checks the certificate chain and the host name).
    pub database_url: String,
    /// The database password, in place of the URL's (or `database_password_file`).
    pub database_password: String,
    /// PEM CA of the database's TLS ("" = the system's roots); a client certificate and
    /// key for mutual TLS. Any of them given means TLS (`sslmode=disable` is then refused).
    pub database_ca_file: String,
    pub database_cert_file: String,
    pub database_key_file: String,
    /// Apply the schema migrations at start. Off for a role that may not change the
    /// schema: then `order-writer migrate` (as the schema's owner) does it first, and the
    /// writer refuses to start on a schema older than it needs.
    pub migrate: bool,
    pub kafka_brokers: String,
    pub orders_topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    /// Consumer group timing: a member that stops polling or heartbeating for this long
    /// loses its partitions to the others.
    pub max_poll_interval_ms: i64,
    pub session_timeout_ms: i64,
    /// Most messages written in one statement.
    pub batch_max: i64,
    /// Longest wait to fill a batch.
    pub batch_wait_ms: i64,
    /// Database retry backoff cap while PostgreSQL is down or slow.
    pub db_retry_max_ms: i64,
    /// PostgreSQL statement timeout.
    pub db_statement_timeout_ms: i64,
    /// Redis (`redis://`, `rediss://` for TLS, `redis+cluster://`).
    pub redis_url: String,
    /// Redis password (ACL user from the URL), in place of the URL's (or `redis_password_file`).
    pub redis_password: String,
    /// PEM CA of Redis's TLS ("" = the system's roots); client certificate and key.
    pub redis_ca_file: String,
    pub redis_cert_file: String,
    pub redis_key_file: String,
    pub redis_timeout_ms: i64,
    /// Unpaid orders older than this are cancelled and their stock returned.
    pub payment_window_secs: i64,
    /// How often the payment-window scan runs, and how many orders it takes at once.
    pub cancel_scan_ms: i64,
    pub cancel_batch: i64,
    /// How often Redis is swept for reservations older than the payment window plus
    /// `reservation_grace_secs` that have no live row in PostgreSQL (a purchase
    /// whose reply was lost) — which are released so their stock sells again.
    pub reservation_sweep_ms: i64,
    pub reservation_grace_secs: i64,
    /// How often the reconciler checks that every Redis master is a process the store
    /// trusts (`stock::trust`); 0 = never (then an operator runs `rebuild-stock`).
    pub reconcile_poll_ms: i64,
    /// How long after finding an untrusted master (restarted, or a promoted replica)
    /// the reconciler waits before reading PostgreSQL and the topic, so that orders
    /// whose delivery to the broker was still under way are on the topic by then.
    pub reconcile_grace_ms: i64,
    /// A second reconcile this long after one, for orders whose delivery took longer than
    /// the grace; keep it above the gateways' `kafka_timeout_ms`.
    pub reconcile_late_pass_ms: i64,
    /// Prometheus metrics listen address ("" = off).
    pub metrics_listen: String,
    /// Extra librdkafka settings for both consumer and producer, `k=v,k=v` (security:
    /// `security.protocol=SASL_SSL,sasl.mechanisms=SCRAM-SHA-512,sasl.username=…,ssl.ca.location=…`).
    pub kafka_extra: String,
    /// The SASL password (librdkafka's `sasl.password`), kept out of `kafka_extra` (or
    /// `kafka_password_file`).
    pub kafka_password: String,
    /// OTLP/HTTP base URL of the trace collector (`http://host:4318`; "" = no traces).
    /// The writer traces the orders whose gateway sampled them (their `traceparent`).
    pub tracing_endpoint: String,
    /// Share of the writer's own traces kept (none today: it follows the gateways'
    /// decisions, and always keeps a canceller scan or reconcile that did something).
    pub tracing_sample_ratio: f64,
    /// Finished spans waiting for export at most; more are dropped and counted.
    pub tracing_queue: i64,
    /// Timeout of one span export request.
    pub tracing_timeout_ms: i64,
}

/// The settings `order-writer config` redacts.
pub const SECRETS: &[&str] = &["database_password", "redis_password", "kafka_password"];

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: seckill_common::stack::DEFAULT_DATABASE_URL.into(),
            database_password: String::new(),
            database_ca_file: String::new(),
            database_cert_file: String::new(),
            database_key_file: String::new(),
            migrate: true,
            kafka_brokers: seckill_common::stack::DEFAULT_KAFKA_BROKERS.into(),
            orders_topic: "orders".into(),
            dlq_topic: "orders-dlq".into(),
            group_id: "order-writer".into(),
            max_poll_interval_ms: 20000,
            session_timeout_ms: 6000,
            batch_max: 10000,
            batch_wait_ms: 50,
            db_retry_max_ms: 2000,
            db_statement_timeout_ms: 5000,
            redis_url: seckill_common::stack::DEFAULT_REDIS_URL.into(),
            redis_password: String::new(),
            redis_ca_file: String::new(),
            redis_cert_file: String::new(),
            redis_key_file: String::new(),
            redis_timeout_ms: 1000,
            payment_window_secs: 900,
            cancel_scan_ms: 1000,
            cancel_batch: 5000,
            reservation_sweep_ms: 30_000,
            reservation_grace_secs: 60,
            reconcile_poll_ms: 1000,
            reconcile_grace_ms: 2000,
            reconcile_late_pass_ms: 10_000,
            metrics_listen: "127.0.0.1:9101".into(),
            kafka_extra: String::new(),
            kafka_password: String::new(),
            tracing_endpoint: String::new(),
            tracing_sample_ratio: 0.01,
            tracing_queue: 4096,
            tracing_timeout_ms: 2000,
        }
    }
}

impl Config {
    /// Every integer setting with the values it may take: one out of range stops the
    /// start, named with its value and range, instead of being clamped.
    /// How the writer traces (`tracing_*`).
    pub fn trace_settings(&self) -> seckill_common::telemetry::TraceSettings {
        seckill_common::telemetry::TraceSettings::from_config(
            &self.tracing_endpoint,
            self.tracing_sample_ratio,
            self.tracing_queue,
            self.tracing_timeout_ms,
        )
    }

    pub fn ranges(&self) -> Vec<seckill_common::Setting> {
        const DAY_MS: i64 = 86_400_000;
        vec![
            (
                "max_poll_interval_ms",
                self.max_poll_interval_ms,
                1..=DAY_MS,
            ),
            ("session_timeout_ms", self.session_timeout_ms, 1..=DAY_MS),
            ("batch_max", self.batch_max, 1..=1_000_000),
            ("tracing_queue", self.tracing_queue, 1..=1_000_000),
            ("tracing_timeout_ms", self.tracing_timeout_ms, 1..=60_000),
            ("batch_wait_ms", self.batch_wait_ms, 0..=DAY_MS),
            ("db_retry_max_ms", self.db_retry_max_ms, 1..=DAY_MS),
            (
                "db_statement_timeout_ms",
                self.db_statement_timeout_ms,
                1..=DAY_MS,
            ),
            ("redis_timeout_ms", self.redis_timeout_ms, 1..=60_000),
            (
                "payment_window_secs",
                self.payment_window_secs,
                1..=30 * 86_400,
            ),
            ("cancel_scan_ms", self.cancel_scan_ms, 1..=DAY_MS),
            ("cancel_batch", self.cancel_batch, 1..=1_000_000),
            (
                "reservation_sweep_ms",
                self.reservation_sweep_ms,
                1..=DAY_MS,
            ),
            (
                "reservation_grace_secs",
                self.reservation_grace_secs,
                0..=30 * 86_400,
            ),
            ("reconcile_poll_ms", self.reconcile_poll_ms, 0..=DAY_MS),
            ("reconcile_grace_ms", self.reconcile_grace_ms, 0..=DAY_MS),
            (
                "reconcile_late_pass_ms",
                self.reconcile_late_pass_ms,
                0..=DAY_MS,
            ),
        ]
    }

    /// Every integer setting in its range (the first that is not, named).
    pub fn validate(&self) -> Result<(), seckill_common::OutOfRange> {
        seckill_common::check_ranges(&self.ranges())
    }

    /// The database's TLS files.
    pub fn database_tls(&self) -> TlsFiles {
        TlsFiles {
            name: "database".into(),
            ca: self.database_ca_file.clone(),
            cert: self.database_cert_file.clone(),
            key: self.database_key_file.clone(),
        }
    }

    /// Redis's TLS files.
    pub fn redis_tls(&self) -> TlsFiles {
        TlsFiles {
            name: "redis".into(),
            ca: self.redis_ca_file.clone(),
            cert: self.redis_cert_file.clone(),
            key: self.redis_key_file.clone(),
        }
    }

    /// What every command checks before it starts: ranges, the TLS material (readable,
    /// PEM), Kafka's settings; then the Redis password put into `redis_url` and Redis's
    /// TLS material made the process's. An error names the setting to fix.
    pub fn prepare(&mut self) -> Result<(), WriterError> {
        let bad = |e: &dyn std::fmt::Display| WriterError::Config(e.to_string());
        self.validate().map_err(|e| bad(&e))?;
        self.database_tls().check().map_err(|e| bad(&e))?;
        self.redis_tls().check().map_err(|e| bad(&e))?;
        seckill_common::kafka::client_config(&self.kafka_brokers, &self.kafka_extra, "")
            .map_err(|e| bad(&e))?;
        self.redis_url = stock::tls::url_with_password(&self.redis_url, &self.redis_password);
        let tls = self.redis_tls();
        if !stock::tls::is_tls_url(&self.redis_url) && tls.any() {
            return Err(WriterError::Config(format!(
                "redis TLS files are set but redis_url is not rediss:// ({}): the password would go in clear",
                seckill_common::config::redact_url(&self.redis_url)
            )));
        }
        if stock::tls::is_tls_url(&self.redis_url) {
            stock::tls::use_tls(&tls).map_err(|e| bad(&e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_integer_setting_has_a_range_and_the_defaults_are_in_it() {
        let cfg = Config::default();
        assert_eq!(cfg.validate(), Ok(()));
        let covered: Vec<&str> = cfg.ranges().iter().map(|r| r.0).collect();
        for key in seckill_common::config::integer_keys::<Config>().unwrap() {
            assert!(covered.contains(&key.as_str()), "{key} has no range");
        }
        let bad = Config {
            cancel_batch: 0,
            ..Config::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "cancel_batch = 0 is out of range: expected 1..=1000000"
        );
    }
}
