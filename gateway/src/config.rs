//! Gateway configuration: these defaults, then `--config FILE` (TOML, same keys), then
//! `SECKILL_<KEY>` environment variables. The README lists every key.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// HTTP listen address.
    pub listen: String,
    /// may worker threads (0 = one per core).
    pub workers: i64,
    /// Coroutine stack size in KiB (may's 4 KiB default overflows into a segfault).
    pub stack_kib: i64,
    pub redis_url: String,
    /// Pipelined Redis connections shared by all requests.
    pub redis_connections: i64,
    pub redis_timeout_ms: i64,
    /// Commands queued or in flight per Redis connection before calls fail fast.
    pub redis_max_in_flight: i64,
    /// Consecutive Redis faults that open the breaker, and how long it stays open.
    pub breaker_threshold: i64,
    pub breaker_cool_off_ms: i64,
    pub kafka_brokers: String,
    pub orders_topic: String,
    /// librdkafka message.timeout.ms: the delivery report always arrives within it.
    pub kafka_timeout_ms: i64,
    /// Extra librdkafka producer settings, `key=value,key=value` (e.g. security for a real cluster).
    pub kafka_extra: String,
    /// Shared secret of the HMAC tickets (the login layer signs with it).
    pub ticket_secret: String,
    /// Bearer token of the admin endpoints.
    pub admin_token: String,
    /// JSON-lines audit log of every admin change.
    pub audit_log: String,
    /// Purchase token lifetime.
    pub token_ttl_secs: i64,
    /// Largest accepted request body; larger gets 413 without being read.
    pub max_body_bytes: i64,
    /// Requests per second (token and order endpoints) with their bursts.
    pub global_rps: i64,
    pub global_burst: i64,
    pub user_rps: i64,
    pub user_burst: i64,
    pub ip_rps: i64,
    pub ip_burst: i64,
    /// How long a sold-out sale is answered from memory before Redis is asked again
    /// (cancelled stock comes back within this).
    pub sold_out_recheck_ms: i64,
    /// How long the sale-state endpoint may serve a cached snapshot.
    pub sale_cache_ms: i64,
    /// How long shutdown waits for in-flight requests.
    pub drain_secs: i64,
    /// Durable local spool of accepted orders while Kafka is unavailable (one directory
    /// per instance; "" = `.run/spool/<listen address>`).
    pub spool_dir: String,
    /// Order sink when no switch says otherwise: auto (Kafka, spool on failure), kafka, spool.
    pub order_sink: String,
    /// Gateway cluster name: instances with the same name share their switches.
    pub cluster: String,
    /// How often the central switches (and the store epoch) are read from Redis.
    pub switch_poll_ms: i64,
    /// Order statuses kept for the `cache` status-reads mode.
    pub status_cache_max: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            workers: 0,
            stack_kib: 128,
            redis_url: seckill_common::stack::DEFAULT_REDIS_URL.into(),
            redis_connections: 4,
            redis_timeout_ms: 200,
            redis_max_in_flight: 4096,
            breaker_threshold: 20,
            breaker_cool_off_ms: 500,
            kafka_brokers: seckill_common::stack::DEFAULT_KAFKA_BROKERS.into(),
            orders_topic: "orders".into(),
            kafka_timeout_ms: 5000,
            kafka_extra: String::new(),
            ticket_secret: "dev-ticket-secret-change-me".into(),
            admin_token: "dev-admin-token-change-me".into(),
            audit_log: ".run/gateway-audit.jsonl".into(),
            token_ttl_secs: 1800,
            max_body_bytes: 4096,
            global_rps: 200_000,
            global_burst: 20_000,
            user_rps: 5,
            user_burst: 10,
            ip_rps: 2_000,
            ip_burst: 4_000,
            sold_out_recheck_ms: 1000,
            sale_cache_ms: 200,
            drain_secs: 10,
            spool_dir: String::new(),
            order_sink: "auto".into(),
            cluster: "main".into(),
            switch_poll_ms: 250,
            status_cache_max: 200_000,
        }
    }
}

impl Config {
    pub fn spool_path(&self) -> std::path::PathBuf {
        if self.spool_dir.is_empty() {
            std::path::PathBuf::from(".run/spool").join(self.listen.replace([':', '/'], "_"))
        } else {
            std::path::PathBuf::from(&self.spool_dir)
        }
    }
}
