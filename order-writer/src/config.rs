//! order-writer configuration: these defaults, then `--config FILE` (TOML), then
//! `SECKILL_<KEY>` environment variables.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub database_url: String,
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
    pub redis_url: String,
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
    /// Extra librdkafka settings for both consumer and producer, `k=v,k=v`.
    pub kafka_extra: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: seckill_common::stack::DEFAULT_DATABASE_URL.into(),
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
        }
    }
}

impl Config {
    /// Every integer setting with the values it may take: one out of range stops the
    /// start, named with its value and range, instead of being clamped.
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
