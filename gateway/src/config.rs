//! Gateway configuration: these defaults, then `--config FILE` (TOML, same keys), then
//! `SECKILL_<KEY>` environment variables. The README lists every key.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The buyers' HTTP address: `/v1/...`, `/healthz`, `/readyz`.
    pub listen: String,
    /// The operators' HTTP address: `/admin/*`, `/metrics`, the payment provider's
    /// `POST /payments/webhook`, and the probes again. Its own address, so that the
    /// public balancer can never reach the admin API, and it must not overlap `listen`
    /// (empty is refused too: these routes cannot be switched off).
    pub internal_listen: String,
    /// may worker threads (0 = one per core).
    pub workers: i64,
    /// Coroutine stack size in KiB (may's 4 KiB default overflows into a segfault).
    pub stack_kib: i64,
    /// Redis: `redis://[user@]host:port[/db]`, `rediss://…` for TLS, or
    /// `redis+cluster://host:port,…`.
    pub redis_url: String,
    /// Redis password (of the URL's ACL user), in place of the URL's; or
    /// `redis_password_file`.
    pub redis_password: String,
    /// PEM CA of Redis's TLS ("" = the system's roots); client certificate and key for
    /// mutual TLS.
    pub redis_ca_file: String,
    pub redis_cert_file: String,
    pub redis_key_file: String,
    /// Pipelined Redis connections shared by all requests.
    pub redis_connections: i64,
    pub redis_timeout_ms: i64,
    /// Commands queued or in flight per Redis connection before calls fail fast.
    pub redis_max_in_flight: i64,
    /// Replicas that must acknowledge a purchase's write (`WAIT`, one per batch of
    /// purchases, at most one outstanding per connection) before it is answered; -1 (the default): 1 on a Redis Cluster URL
    /// (`redis+cluster://…`), 0 on one Redis. A WAIT that times out short of it still
    /// answers (the order goes to Kafka) and counts `seckill_redis_unreplicated_total`.
    pub redis_wait_replicas: i64,
    /// How long that `WAIT` may take (at most a third of `redis_timeout_ms`: a purchase
    /// may queue behind one WAIT and then wait for its own).
    pub redis_wait_timeout_ms: i64,
    /// Consecutive Redis faults that open the breaker, and how long it stays open.
    pub breaker_threshold: i64,
    pub breaker_cool_off_ms: i64,
    pub kafka_brokers: String,
    pub orders_topic: String,
    /// librdkafka message.timeout.ms: the delivery report always arrives within it.
    pub kafka_timeout_ms: i64,
    /// Extra librdkafka producer settings, `key=value,key=value` (security for a real
    /// cluster: `security.protocol=SASL_SSL,sasl.mechanisms=SCRAM-SHA-512,sasl.username=…,ssl.ca.location=…`).
    pub kafka_extra: String,
    /// The SASL password (librdkafka's `sasl.password`), kept out of `kafka_extra`; or
    /// `kafka_password_file`.
    pub kafka_password: String,
    /// Shared secret of the HMAC tickets (the login layer signs with it).
    pub ticket_secret: String,
    /// The id of `ticket_secret` ("" = tickets without a key id): tickets carry it, so
    /// that a new secret can be rolled out while tickets of the old one still verify.
    pub ticket_key_id: String,
    /// Other ticket keys still accepted (a rotation's window), one per line:
    /// `<key id> <secret>`, `-` as the id of tickets without one ("" = none).
    pub ticket_keys_file: String,
    /// Bearer token of the admin endpoints: the operator named `admin` (may be empty when
    /// `admin_tokens_file` names the operators).
    pub admin_token: String,
    /// Named operators, one per line: `<name> <token>` (`#` starts a comment). The audit
    /// log records the operator whose token a change came with ("" = only `admin_token`).
    pub admin_tokens_file: String,
    /// Shared secret the payment provider signs its callbacks with (`Seckill-Signature`,
    /// HMAC-SHA256 over timestamp and body, as Stripe's webhooks), and the payment intent
    /// ids are derived from.
    pub payment_webhook_secret: String,
    /// How far a callback's signed timestamp may be from now, either way: an older
    /// callback (captured and sent again) is refused.
    pub payment_tolerance_secs: i64,
    /// The currency every payment must be in (ISO 4217 code).
    pub payment_currency: String,
    /// Price of a unit of a sale created without `price_cents` (and of sales created
    /// before prices), in cents.
    pub default_price_cents: i64,
    /// JSON-lines audit log of every admin change.
    pub audit_log: String,
    /// Purchase token lifetime.
    pub token_ttl_secs: i64,
    /// Unexpired, unspent purchase tokens one buyer may hold per sale (0: no cap).
    pub max_live_tokens: i64,
    /// `/metrics` pages per second (and burst) per client IP.
    pub metrics_ip_rps: i64,
    pub metrics_ip_burst: i64,
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
    /// Orders the spool may hold (not yet replayed) before an order is refused (503
    /// `order_sink_unavailable`, unit returned): the disk is bounded too.
    pub spool_max_orders: i64,
    /// Order sink when no switch says otherwise: auto (Kafka, spool on failure), kafka, spool.
    pub order_sink: String,
    /// Gateway cluster name: instances with the same name share their switches.
    pub cluster: String,
    /// How often the central switches (and the store epoch) are read from Redis.
    pub switch_poll_ms: i64,
    /// Order statuses kept for the `cache` status-reads mode.
    pub status_cache_max: i64,
    /// Order ids this gateway delivered (broker or spool) remembered, per generation (two
    /// kept): a replayed purchase of one is answered without producing it again.
    pub delivered_orders_max: i64,
    /// Connections served at once; one more is answered 503 and closed at once.
    pub max_connections: i64,
    /// Connections served at once from one client address (the socket's, or the one a
    /// trusted balancer's PROXY header names); one more is answered 429 and closed at
    /// once. 0: no cap.
    pub max_connections_per_ip: i64,
    /// Responses buffered per connection: its further requests are not read or served
    /// while more than this waits to be written (a client that does not read).
    pub max_pending_output_bytes: i64,
    /// Header fields per request (over: 431) and bytes per request head (over: 431).
    pub max_headers: i64,
    pub max_head_bytes: i64,
    /// A request head must be complete this long after its first byte (408); a body
    /// this long after its head (408); a keep-alive connection with no next request is
    /// closed after `idle_timeout_ms`; a client taking none of its output for
    /// `write_timeout_ms` is disconnected.
    pub head_timeout_ms: i64,
    pub body_timeout_ms: i64,
    pub idle_timeout_ms: i64,
    pub write_timeout_ms: i64,
    /// Bytes per second a client must take of its pending output: every
    /// `send_window_ms` spent waiting to write to it must move `min_send_rate` ×
    /// window bytes, else it is disconnected (within two windows of waiting). 0: off.
    pub min_send_rate: i64,
    pub send_window_ms: i64,
    /// Development only: start even with empty, default or short secrets (with a warning).
    pub dev_insecure: bool,
    /// Several gateway processes on one address (`SO_REUSEPORT`). Off: a gateway started
    /// on an address in use refuses to start.
    pub share_port: bool,
    /// Load balancers allowed to say who the client is, comma-separated addresses or
    /// CIDR ranges (`127.0.0.1`, `10.0.0.0/8`). A connection from one of them must
    /// start with a PROXY protocol header (v1 or v2, HAProxy's `send-proxy-v2`) and the
    /// per-IP limits see the address in it; from any other address a PROXY header is
    /// refused (400, closed) and `X-Forwarded-For` is never read. Empty (the default):
    /// every client is its socket's address.
    pub trusted_proxies: String,
    /// OTLP/HTTP base URL of the trace collector (`http://host:4318`; "" = no traces).
    pub tracing_endpoint: String,
    /// Share of buyer requests traced (0.0..=1.0); requests that fail with a 5xx are
    /// always traced.
    pub tracing_sample_ratio: f64,
    /// Finished spans waiting for export at most; more are dropped and counted
    /// (`seckill_trace_spans_dropped_total`), never waited for.
    pub tracing_queue: i64,
    /// Timeout of one span export request.
    pub tracing_timeout_ms: i64,
}

/// The secrets the README shows; a gateway must not run with them.
pub const DEFAULT_TICKET_SECRET: &str = "dev-ticket-secret-change-me";
pub const DEFAULT_ADMIN_TOKEN: &str = "dev-admin-token-change-me";
pub const DEFAULT_WEBHOOK_SECRET: &str = "dev-webhook-secret-change-me";
/// Shortest secret accepted (an HMAC-SHA256 key should carry 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            internal_listen: "127.0.0.1:9100".into(),
            workers: 0,
            stack_kib: 128,
            redis_url: seckill_common::stack::DEFAULT_REDIS_URL.into(),
            redis_password: String::new(),
            redis_ca_file: String::new(),
            redis_cert_file: String::new(),
            redis_key_file: String::new(),
            redis_connections: 4,
            redis_timeout_ms: 200,
            redis_max_in_flight: 4096,
            redis_wait_replicas: -1,
            redis_wait_timeout_ms: 50,
            breaker_threshold: 20,
            breaker_cool_off_ms: 500,
            kafka_brokers: seckill_common::stack::DEFAULT_KAFKA_BROKERS.into(),
            orders_topic: "orders".into(),
            kafka_timeout_ms: 5000,
            kafka_extra: String::new(),
            kafka_password: String::new(),
            ticket_secret: DEFAULT_TICKET_SECRET.into(),
            ticket_key_id: String::new(),
            ticket_keys_file: String::new(),
            admin_token: DEFAULT_ADMIN_TOKEN.into(),
            admin_tokens_file: String::new(),
            payment_webhook_secret: DEFAULT_WEBHOOK_SECRET.into(),
            payment_tolerance_secs: 300,
            payment_currency: "EUR".into(),
            default_price_cents: 100,
            audit_log: ".run/gateway-audit.jsonl".into(),
            token_ttl_secs: 1800,
            max_live_tokens: 10,
            metrics_ip_rps: 20,
            metrics_ip_burst: 100,
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
            spool_max_orders: 2_000_000,
            order_sink: "auto".into(),
            cluster: "main".into(),
            switch_poll_ms: 250,
            status_cache_max: 200_000,
            delivered_orders_max: 500_000,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_pending_output_bytes: 1024 * 1024,
            max_headers: 64,
            max_head_bytes: 16 * 1024,
            head_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 10_000,
            min_send_rate: 1024,
            send_window_ms: 10_000,
            dev_insecure: false,
            share_port: false,
            trusted_proxies: String::new(),
            tracing_endpoint: String::new(),
            tracing_sample_ratio: 0.01,
            tracing_queue: 4096,
            tracing_timeout_ms: 2000,
        }
    }
}

/// The audit log's names for callers who are not operators.
pub const RESERVED_ACTORS: [&str; 2] = ["payment-provider", "unknown"];

/// An operator of the admin endpoints: a name, and the bearer token that proves it.
#[derive(Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub token: Vec<u8>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Operator({})", self.name)
    }
}

/// A configuration the gateway does not start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadConfig {
    /// Secrets too weak to serve with (each named with why), `dev_insecure` not set.
    #[error(
        "{}: set it (SECKILL_<KEY> or the config file) to at least {} random bytes, \
         or set dev_insecure (SECKILL_DEV_INSECURE=1) for development only",
        .0.join("; "),
        MIN_SECRET_BYTES
    )]
    WeakSecrets(Vec<String>),
    /// An entry of `trusted_proxies` that is not an address or CIDR range (in the
    /// parser's words: it gives no error type of its own).
    #[error("trusted_proxies: {0}")]
    TrustedProxy(String),
    #[error("order_sink {0:?}: expected auto, kafka or spool")]
    OrderSink(String),
    #[error(transparent)]
    Tracing(#[from] seckill_common::telemetry::TelemetryError),
    #[error(transparent)]
    OutOfRange(#[from] seckill_common::OutOfRange),
    #[error("payment_currency = {0:?}: expected an ISO 4217 code, three capital letters")]
    Currency(String),
    /// `admin_tokens_file` unreadable, or a line that is not `<name> <token>` (the
    /// file, and what is wrong where).
    #[error("admin_tokens_file {0}: {1}")]
    AdminTokens(String, String),
    /// `ticket_key_id` not a key id, or `ticket_keys_file` unreadable or with a line
    /// that is not `<key id> <secret>` (or a secret too short).
    #[error("{0}")]
    TicketKeys(String),
    /// `internal_listen` empty, or an address `listen` covers too (why, in words).
    #[error("internal_listen = {value:?} {why}")]
    InternalListen { value: String, why: String },
    /// TLS material missing, unreadable or not PEM (the setting named), or a Kafka
    /// setting that does not parse.
    #[error("{0}")]
    Tls(String),
}

/// The settings `gateway config` redacts.
pub const SECRETS: &[&str] = &[
    "ticket_secret",
    "admin_token",
    "payment_webhook_secret",
    "redis_password",
    "kafka_password",
];

impl Config {
    /// Why each secret is unfit for production (empty, the shipped default, or short).
    pub fn weak_secrets(&self) -> Vec<String> {
        [
            ("ticket_secret", &self.ticket_secret, DEFAULT_TICKET_SECRET),
            ("admin_token", &self.admin_token, DEFAULT_ADMIN_TOKEN),
            (
                "payment_webhook_secret",
                &self.payment_webhook_secret,
                DEFAULT_WEBHOOK_SECRET,
            ),
        ]
        .into_iter()
        .filter_map(|(key, value, shipped)| {
            // Named operators instead of the shared token.
            if key == "admin_token" && value.is_empty() && !self.admin_tokens_file.is_empty() {
                return None;
            }
            let why = if value.is_empty() {
                "is empty"
            } else if value == shipped {
                "is the default printed in the README"
            } else if value.len() < MIN_SECRET_BYTES {
                "is shorter than 32 bytes"
            } else {
                return None;
            };
            Some(format!("{key} {why}"))
        })
        .collect()
    }

    /// Refuse weak secrets, unless `dev_insecure`: then they are returned, to be warned
    /// about.
    pub fn check_secrets(&self) -> Result<Vec<String>, BadConfig> {
        let weak = self.weak_secrets();
        if weak.is_empty() || self.dev_insecure {
            return Ok(weak);
        }
        Err(BadConfig::WeakSecrets(weak))
    }

    /// Every integer setting with the values it may take: one out of range stops the
    /// start, named with its value and range (`validate`), instead of being clamped.
    pub fn ranges(&self) -> Vec<seckill_common::Setting> {
        const DAY_MS: i64 = 86_400_000;
        const U32: i64 = u32::MAX as i64;
        vec![
            ("workers", self.workers, 0..=1024),
            ("stack_kib", self.stack_kib, 64..=65_536),
            ("redis_connections", self.redis_connections, 1..=256),
            ("redis_timeout_ms", self.redis_timeout_ms, 1..=60_000),
            (
                "redis_max_in_flight",
                self.redis_max_in_flight,
                1..=1_000_000,
            ),
            ("redis_wait_replicas", self.redis_wait_replicas, -1..=16),
            (
                "redis_wait_timeout_ms",
                self.redis_wait_timeout_ms,
                1..=60_000,
            ),
            ("breaker_threshold", self.breaker_threshold, 1..=1_000_000),
            ("breaker_cool_off_ms", self.breaker_cool_off_ms, 1..=DAY_MS),
            ("kafka_timeout_ms", self.kafka_timeout_ms, 1..=DAY_MS),
            ("token_ttl_secs", self.token_ttl_secs, 1..=30 * 86_400),
            ("max_live_tokens", self.max_live_tokens, 0..=1_000_000),
            ("metrics_ip_rps", self.metrics_ip_rps, 1..=U32),
            ("metrics_ip_burst", self.metrics_ip_burst, 1..=U32),
            ("max_body_bytes", self.max_body_bytes, 1..=16 << 20),
            ("global_rps", self.global_rps, 1..=U32),
            ("global_burst", self.global_burst, 1..=U32),
            ("user_rps", self.user_rps, 1..=U32),
            ("user_burst", self.user_burst, 1..=U32),
            ("ip_rps", self.ip_rps, 1..=U32),
            ("ip_burst", self.ip_burst, 1..=U32),
            ("sold_out_recheck_ms", self.sold_out_recheck_ms, 0..=DAY_MS),
            ("sale_cache_ms", self.sale_cache_ms, 0..=DAY_MS),
            ("drain_secs", self.drain_secs, 0..=3600),
            ("spool_max_orders", self.spool_max_orders, 1..=1_000_000_000),
            ("switch_poll_ms", self.switch_poll_ms, 1..=DAY_MS),
            ("status_cache_max", self.status_cache_max, 0..=100_000_000),
            (
                "delivered_orders_max",
                self.delivered_orders_max,
                0..=100_000_000,
            ),
            ("max_connections", self.max_connections, 1..=10_000_000),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip,
                0..=10_000_000,
            ),
            (
                "max_pending_output_bytes",
                self.max_pending_output_bytes,
                1..=1 << 30,
            ),
            ("max_headers", self.max_headers, 1..=1024),
            ("tracing_queue", self.tracing_queue, 1..=1_000_000),
            ("tracing_timeout_ms", self.tracing_timeout_ms, 1..=60_000),
            ("max_head_bytes", self.max_head_bytes, 1..=1 << 20),
            ("head_timeout_ms", self.head_timeout_ms, 1..=DAY_MS),
            ("body_timeout_ms", self.body_timeout_ms, 1..=DAY_MS),
            ("idle_timeout_ms", self.idle_timeout_ms, 1..=DAY_MS),
            ("write_timeout_ms", self.write_timeout_ms, 1..=DAY_MS),
            ("min_send_rate", self.min_send_rate, 0..=1 << 30),
            ("send_window_ms", self.send_window_ms, 100..=DAY_MS),
            (
                "payment_tolerance_secs",
                self.payment_tolerance_secs,
                1..=3600,
            ),
            (
                "default_price_cents",
                self.default_price_cents,
                1..=stock::MAX_PRICE_CENTS,
            ),
        ]
    }

    /// The settings a gateway starts with: every integer in its range, a currency code,
    /// `trusted_proxies` that parse. Each refusal names the key.
    pub fn validate(&self) -> Result<(), BadConfig> {
        seckill_common::check_ranges(&self.ranges())?;
        let c = &self.payment_currency;
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(BadConfig::Currency(c.clone()));
        }
        self.trusted_proxy_nets()?;
        self.ticket_keys()?;
        self.check_listeners()?;
        let tls = self.redis_tls();
        tls.check().map_err(|e| BadConfig::Tls(e.to_string()))?;
        if !stock::tls::is_tls_url(&self.redis_url) && tls.any() {
            return Err(BadConfig::Tls(format!(
                "redis TLS files are set but redis_url is not rediss:// ({}): the password would go in clear",
                seckill_common::config::redact_url(&self.redis_url)
            )));
        }
        seckill_common::kafka::client_config(&self.kafka_brokers, &self.kafka_extra, "")
            .map_err(|e| BadConfig::Tls(e.to_string()))?;
        Ok(())
    }

    /// The ticket keys: `ticket_secret` (id `ticket_key_id`) signs and verifies, each of
    /// `ticket_keys_file` verifies too. Secrets shorter than 32 bytes are refused unless
    /// `dev_insecure`.
    pub fn ticket_keys(&self) -> Result<seckill_common::ticket::Keyring, BadConfig> {
        use seckill_common::ticket::{valid_key_id, Keyring};
        let bad = |why: String| BadConfig::TicketKeys(why);
        if !self.ticket_key_id.is_empty() && !valid_key_id(&self.ticket_key_id) {
            return Err(bad(format!(
                "ticket_key_id = {:?}: expected 1 to 32 of A-Z a-z 0-9 _ -",
                self.ticket_key_id
            )));
        }
        let mut others = Vec::new();
        if !self.ticket_keys_file.is_empty() {
            let path = &self.ticket_keys_file;
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("ticket_keys_file {path}: {e}")))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let at = |why: &str| bad(format!("ticket_keys_file {path}: line {}: {why}", n + 1));
                let mut parts = line.split_whitespace();
                let (Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(at(
                        "expected `<key id> <secret>` (`-` for tickets without an id)",
                    ));
                };
                let id = if id == "-" { "" } else { id };
                if !id.is_empty() && !valid_key_id(id) {
                    return Err(at("a key id is 1 to 32 of A-Z a-z 0-9 _ -"));
                }
                if secret.len() < MIN_SECRET_BYTES && !self.dev_insecure {
                    return Err(at("the secret is shorter than 32 bytes"));
                }
                if others.iter().any(|(o, _): &(String, Vec<u8>)| o == id) {
                    return Err(at("this key id is listed twice"));
                }
                if id == self.ticket_key_id {
                    return Err(at(
                        "this is ticket_key_id's own id (the signing key): list only the others",
                    ));
                }
                others.push((id.to_string(), secret.as_bytes().to_vec()));
            }
        }
        Ok(Keyring::new(
            &self.ticket_key_id,
            self.ticket_secret.as_bytes(),
            others,
        ))
    }

    /// `internal_listen` names an address of its own. Empty is refused rather than read
    /// as "off": the switches, the metrics and the payment provider's callback would have
    /// nowhere to go. An address `listen` covers too (the same one, or the same port with
    /// a wildcard address on either side) is refused: it would put the operators' routes
    /// on the buyers' address, or, with `share_port`, bind twice and split the
    /// connections between the two listeners.
    pub fn check_listeners(&self) -> Result<(), BadConfig> {
        let bad = |why: String| BadConfig::InternalListen {
            value: self.internal_listen.clone(),
            why,
        };
        let internal = self.internal_listen.trim();
        if internal.is_empty() {
            return Err(bad(format!(
                "is empty: /admin/*, /metrics and /payments/webhook need an address of their \
                 own, apart from listen (default {})",
                Config::default().internal_listen
            )));
        }
        if overlaps(self.listen.trim(), internal) {
            return Err(bad(format!(
                "overlaps listen = {:?}: the operators' routes would share the buyers' \
                 address; give internal_listen an address of its own",
                self.listen
            )));
        }
        Ok(())
    }

    /// Redis's TLS files.
    pub fn redis_tls(&self) -> seckill_common::tls::TlsFiles {
        seckill_common::tls::TlsFiles {
            name: "redis".into(),
            ca: self.redis_ca_file.clone(),
            cert: self.redis_cert_file.clone(),
            key: self.redis_key_file.clone(),
        }
    }

    /// The Redis URL with the password setting in it.
    pub fn redis_url(&self) -> String {
        stock::tls::url_with_password(&self.redis_url, &self.redis_password)
    }

    /// The operators allowed on `/admin/*`: `admin` with `admin_token` (unless empty),
    /// and every one `admin_tokens_file` names. Names are 1..=64 of `[A-Za-z0-9_.@-]`,
    /// each once; tokens at least 32 bytes unless `dev_insecure`.
    /// How the gateway traces (`tracing_*`).
    pub fn trace_settings(&self) -> seckill_common::telemetry::TraceSettings {
        seckill_common::telemetry::TraceSettings::from_config(
            &self.tracing_endpoint,
            self.tracing_sample_ratio,
            self.tracing_queue,
            self.tracing_timeout_ms,
        )
    }

    pub fn operators(&self) -> Result<Vec<Operator>, BadConfig> {
        let mut out = Vec::new();
        if !self.admin_token.is_empty() {
            out.push(Operator {
                name: "admin".into(),
                token: self.admin_token.clone().into_bytes(),
            });
        }
        if self.admin_tokens_file.is_empty() {
            return Ok(out);
        }
        let path = &self.admin_tokens_file;
        let bad = |why: String| BadConfig::AdminTokens(path.clone(), why);
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        for (n, line) in text.lines().enumerate() {
            // A comment starts a line or follows a space: a `#` inside a token is the token's.
            let line = line.trim();
            let line = match line.find(" #").or(line.find("\t#")) {
                _ if line.starts_with('#') => "",
                Some(i) => line[..i].trim(),
                None => line,
            };
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(name), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad(format!("line {}: expected `<name> <token>`", n + 1)));
            };
            let name_ok = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b));
            if !name_ok {
                return Err(bad(format!(
                    "line {}: an operator name is 1..=64 of A-Z a-z 0-9 _ . @ -",
                    n + 1
                )));
            }
            if RESERVED_ACTORS.contains(&name) {
                return Err(bad(format!(
                    "line {}: {name} is what the audit log calls others",
                    n + 1
                )));
            }
            if token.len() < MIN_SECRET_BYTES && !self.dev_insecure {
                return Err(bad(format!(
                    "line {}: {name}'s token is shorter than {MIN_SECRET_BYTES} bytes",
                    n + 1
                )));
            }
            if out
                .iter()
                .any(|o| o.name == name || o.token == token.as_bytes())
            {
                return Err(bad(format!(
                    "line {}: {name}, or its token, appears twice",
                    n + 1
                )));
            }
            out.push(Operator {
                name: name.into(),
                token: token.as_bytes().to_vec(),
            });
        }
        if out.is_empty() {
            return Err(bad("names no operator, and admin_token is empty".into()));
        }
        Ok(out)
    }

    /// The HTTP edge's bounds, for may_minihttp.
    pub fn http_limits(&self) -> may_minihttp::Limits {
        let n = |v: i64| v.max(1) as usize;
        let ms = |v: i64| std::time::Duration::from_millis(v.max(1) as u64);
        may_minihttp::Limits {
            share_port: self.share_port,
            max_connections: n(self.max_connections),
            max_connections_per_ip: self.max_connections_per_ip.max(0) as usize,
            max_headers: n(self.max_headers),
            max_head_bytes: n(self.max_head_bytes),
            max_pending_output: n(self.max_pending_output_bytes),
            head_timeout: ms(self.head_timeout_ms),
            body_timeout: ms(self.body_timeout_ms),
            idle_timeout: ms(self.idle_timeout_ms),
            write_timeout: ms(self.write_timeout_ms),
            min_send_rate: self.min_send_rate.max(0) as usize,
            // A window shorter than 100 ms would end any connection whose write waits once.
            send_window: ms(self.send_window_ms.max(100)),
            trusted_proxies: self.trusted_proxy_nets().unwrap_or_else(|e| {
                // Trusting nobody is the safe reading: a balancer's connections are then
                // refused (its health checks fail), no client can claim an address.
                tracing::error!(error = %e, "trusted_proxies ignored: every PROXY header is refused");
                Vec::new()
            }),
        }
    }

    /// `trusted_proxies` parsed; an entry that is not an address or CIDR range is an error.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<may_minihttp::TrustedNet>, BadConfig> {
        self.trusted_proxies
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(BadConfig::TrustedProxy))
            .collect()
    }

    pub fn spool_path(&self) -> std::path::PathBuf {
        if self.spool_dir.is_empty() {
            std::path::PathBuf::from(".run/spool").join(self.listen.replace([':', '/'], "_"))
        } else {
            std::path::PathBuf::from(&self.spool_dir)
        }
    }
}

/// Whether two listen addresses would take the same connections: the same port (not
/// 0, which the system picks) on the same address, or on a wildcard address on either
/// side (IPv4 or IPv6: `[::]` takes IPv4 connections too). Host names are compared as
/// written (nothing is resolved at start-up).
fn overlaps(a: &str, b: &str) -> bool {
    use std::net::SocketAddr;
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(a), Ok(b)) => {
            a.port() == b.port()
                && a.port() != 0
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        }
        _ => a.eq_ignore_ascii_case(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strong() -> Config {
        Config {
            ticket_secret: "t".repeat(MIN_SECRET_BYTES),
            admin_token: "a".repeat(MIN_SECRET_BYTES),
            payment_webhook_secret: "w".repeat(MIN_SECRET_BYTES),
            ..Config::default()
        }
    }

    #[test]
    fn weak_secrets_stop_the_start_naming_the_key() {
        assert_eq!(strong().check_secrets(), Ok(vec![]));
        let cases = [
            (Config::default(), "ticket_secret is the default"),
            (
                Config {
                    admin_token: String::new(),
                    ..strong()
                },
                "admin_token is empty",
            ),
            (
                Config {
                    ticket_secret: "x".repeat(31),
                    ..strong()
                },
                "ticket_secret is shorter than 32 bytes",
            ),
            (
                Config {
                    admin_token: DEFAULT_ADMIN_TOKEN.into(),
                    ..strong()
                },
                "admin_token is the default",
            ),
        ];
        for (cfg, why) in cases {
            let err = cfg.check_secrets().unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
            assert!(err.contains("SECKILL_DEV_INSECURE=1"), "{err}");
        }
        // Both defaults: both named.
        let err = Config::default().check_secrets().unwrap_err().to_string();
        assert!(
            err.contains("ticket_secret") && err.contains("admin_token"),
            "{err}"
        );
    }

    #[test]
    fn settings_out_of_range_are_refused_by_name_never_clamped() {
        assert_eq!(Config::default().validate(), Ok(()));
        let cases = [
            (
                Config {
                    payment_tolerance_secs: 0,
                    ..Config::default()
                },
                "payment_tolerance_secs = 0 is out of range: expected 1..=3600",
            ),
            (
                Config {
                    redis_timeout_ms: -5,
                    ..Config::default()
                },
                "redis_timeout_ms = -5",
            ),
            (
                Config {
                    send_window_ms: 50,
                    ..Config::default()
                },
                "send_window_ms = 50",
            ),
            (
                Config {
                    payment_currency: "eur".into(),
                    ..Config::default()
                },
                "payment_currency",
            ),
            (
                Config {
                    trusted_proxies: "10.0.0.0/33".into(),
                    ..Config::default()
                },
                "trusted_proxies",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn internal_listen_must_be_an_address_of_its_own() {
        let with = |listen: &str, internal: &str| Config {
            listen: listen.into(),
            internal_listen: internal.into(),
            ..Config::default()
        };
        assert_eq!(with("127.0.0.1:8080", "127.0.0.1:9100").validate(), Ok(()));
        assert_eq!(with("0.0.0.0:8080", "127.0.0.1:9100").validate(), Ok(()));
        assert_eq!(with("127.0.0.1:8080", "127.0.0.2:8080").validate(), Ok(()));
        assert_eq!(with("127.0.0.1:0", "127.0.0.1:0").validate(), Ok(()));
        for (listen, internal, why) in [
            ("127.0.0.1:8080", "", "is empty"),
            ("127.0.0.1:8080", "  ", "is empty"),
            ("127.0.0.1:8080", "127.0.0.1:8080", "overlaps listen"),
            ("0.0.0.0:8080", "127.0.0.1:8080", "overlaps listen"),
            ("127.0.0.1:8080", "[::]:8080", "overlaps listen"),
            ("localhost:8080", "LOCALHOST:8080", "overlaps listen"),
        ] {
            let err = with(listen, internal).validate().unwrap_err().to_string();
            assert!(err.starts_with("internal_listen = "), "{err}");
            assert!(err.contains(why), "{listen} / {internal:?}: {err}");
        }
    }

    #[test]
    fn operators_come_from_the_tokens_file_each_once() {
        let dir = std::env::temp_dir().join(format!("seckill-ops-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ops");
        let t = |c: char| c.to_string().repeat(MIN_SECRET_BYTES);
        let with = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config {
                admin_token: String::new(),
                admin_tokens_file: file.display().to_string(),
                ..strong()
            }
            .operators()
        };
        let ops = with(&format!(
            "# who\nalice {}\n\n bob  {} # on call\n",
            t('a'),
            t('b')
        ))
        .unwrap();
        let names: Vec<&str> = ops.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        for (text, why) in [
            (format!("alice {}\nalice {}\n", t('a'), t('b')), "twice"),
            (format!("alice {}\nbob {}\n", t('a'), t('a')), "twice"),
            ("alice short\n".to_string(), "shorter than 32 bytes"),
            (
                format!("alice {} extra\n", t('a')),
                "expected `<name> <token>`",
            ),
            (format!("al/ice {}\n", t('a')), "operator name"),
            (
                format!("unknown {}\n", t('a')),
                "what the audit log calls others",
            ),
            ("# nobody\n".to_string(), "names no operator"),
        ] {
            let err = with(&text).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        let missing = Config {
            admin_tokens_file: dir.join("nope").display().to_string(),
            ..strong()
        };
        assert!(missing
            .operators()
            .unwrap_err()
            .to_string()
            .contains("nope"));
        // The shared token is the operator `admin`; with a file it may be left empty.
        assert_eq!(strong().operators().unwrap()[0].name, "admin");
        let no_shared = Config {
            admin_token: String::new(),
            admin_tokens_file: "ops".into(),
            ..strong()
        };
        assert_eq!(no_shared.check_secrets(), Ok(vec![]));
    }

    #[test]
    fn every_integer_setting_has_a_range() {
        let covered: Vec<&str> = Config::default().ranges().iter().map(|r| r.0).collect();
        for key in seckill_common::config::integer_keys::<Config>().unwrap() {
            assert!(covered.contains(&key.as_str()), "{key} has no range");
        }
    }

    #[test]
    fn the_edge_defaults_are_the_servers_documented_ones() {
        let ours = Config::default().http_limits();
        let theirs = may_minihttp::Limits::default();
        assert_eq!(
            (ours.max_connections, ours.max_connections_per_ip),
            (theirs.max_connections, theirs.max_connections_per_ip)
        );
        assert_eq!(
            (ours.min_send_rate, ours.send_window, ours.write_timeout),
            (
                theirs.min_send_rate,
                theirs.send_window,
                theirs.write_timeout
            )
        );
        assert_eq!(
            (ours.max_connections_per_ip, ours.min_send_rate),
            (256, 1024)
        );
        let off = Config {
            max_connections_per_ip: 0,
            min_send_rate: 0,
            ..Config::default()
        }
        .http_limits();
        assert_eq!((off.max_connections_per_ip, off.min_send_rate), (0, 0));
    }

    #[test]
    fn the_development_flag_starts_with_weak_secrets_and_says_which() {
        let cfg = Config {
            dev_insecure: true,
            ..Config::default()
        };
        let weak = cfg.check_secrets().unwrap();
        assert_eq!(weak.len(), 3, "{weak:?}");
    }

    #[test]
    fn the_flag_comes_from_the_environment_over_the_file_and_defaults() {
        let env = |v: &str| vec![("SECKILL_DEV_INSECURE".to_string(), v.to_string())];
        let cfg: Config = seckill_common::config::load_config_from(None, &env("1")).unwrap();
        assert!(cfg.dev_insecure);
        let cfg: Config = seckill_common::config::load_config_from(None, &[]).unwrap();
        assert!(!cfg.dev_insecure);
    }

    #[test]
    fn ticket_keys_come_from_the_file_with_their_ids() {
        let dir = std::env::temp_dir().join(format!("seckill-ticket-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        let old = "o".repeat(MIN_SECRET_BYTES);
        std::fs::write(&file, format!("# the old key, no id\n- {old}\n")).unwrap();
        let cfg = Config {
            ticket_secret: "n".repeat(MIN_SECRET_BYTES),
            ticket_key_id: "k2".into(),
            ticket_keys_file: file.display().to_string(),
            ..Config::default()
        };
        let keys = cfg.ticket_keys().unwrap();
        let legacy = seckill_common::ticket::mint(old.as_bytes(), 9, 100);
        assert_eq!(keys.verify(&legacy, 1), Ok(9));
        assert!(keys.mint(9, 100).contains(".k2."));
        for (text, why) in [
            ("k2\n", "expected `<key id> <secret>`"),
            (
                "a.b secret-secret-secret-secret-secret\n",
                "a key id is 1 to 32",
            ),
            ("k3 short\n", "shorter than 32 bytes"),
            (&format!("k3 {old}\nk3 {old}\n")[..], "listed twice"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = cfg.ticket_keys().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("line"), "{text:?}: {err}");
        }
        let bad_id = Config {
            ticket_key_id: "k.2".into(),
            ..cfg
        };
        assert!(bad_id
            .ticket_keys()
            .unwrap_err()
            .to_string()
            .starts_with("ticket_key_id"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
