//! A buyer's HTTP calls against the gateway, on a keep-alive agent: the buyers' routes on
//! its public listener; the admin calls and the payment provider's callback (the tools
//! play the provider) on its internal one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A request that got no answer (connect, timeout, a body cut short).
    #[error("http: {0}")]
    Http(#[from] ureq::Error),
    #[error("unexpected answer {status}: {body}")]
    Unexpected { status: u16, body: String },
    #[error("redis: {0}")]
    Redis(#[from] stock::StockError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A topic not read up to its high watermarks in time.
    #[error(
        "kafka: {topic}: {left} messages below the high watermarks not read within {within:?}"
    )]
    TopicUnread {
        topic: String,
        left: i64,
        within: Duration,
    },
    #[error("database: {}", seckill_common::tls::with_sources(.0))]
    Db(#[from] postgres::Error),
    /// Connecting to the database (its URL or TLS).
    #[error("database: {0}")]
    DbConnect(#[from] seckill_common::tls::PostgresConnectError),
    /// The stack's `kafka_extra` does not parse.
    #[error("kafka: {0}")]
    KafkaSettings(#[from] seckill_common::kafka::BadExtra),
    #[cfg(feature = "load")]
    #[error("goose: {0}")]
    Goose(#[source] goose::GooseError),
    /// A file, a thread or a runtime that could not be had (`what` says which).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A chart that could not be drawn.
    #[error("chart {chart}: {source}")]
    Chart {
        chart: &'static str,
        #[source]
        source: plotters::drawing::DrawingAreaErrorKind<std::io::Error>,
    },
    /// An input file that does not read as what it should be (`what` says which).
    #[error("{what}: {why}")]
    BadInput { what: String, why: String },
    /// The run cannot go ahead as asked (nothing caused it but what it says).
    #[error("{0}")]
    Setup(String),
}

impl LoadError {
    /// `LoadError::Io` for `what` (a path, a thread's name).
    pub fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> LoadError {
        let what = what.to_string();
        move |source| LoadError::Io { what, source }
    }
}

/// An answer: status and JSON body (Null when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn str(&self, field: &str) -> Option<&str> {
        self.body[field].as_str()
    }
    pub fn code(&self) -> &str {
        self.str("error").unwrap_or("")
    }
}

pub struct Client {
    agent: ureq::Agent,
    /// The gateway's public listener: the buyers' routes.
    base: String,
    /// Its internal listener (`with_internal`): the admin API and the provider's
    /// callback. None for a client that only buys.
    internal: Option<String>,
    secret: Vec<u8>,
    /// The payment provider's webhook secret (`SECKILL_PAYMENT_WEBHOOK_SECRET`, or the
    /// development default the local gateways run with): [`Client::pay`] plays the
    /// provider too.
    webhook_secret: Vec<u8>,
}

/// The gateway's default `internal_listen`, as a URL: where the tools look for the admin
/// API and the payment callback when told nothing else.
pub const DEFAULT_INTERNAL_URL: &str = "http://127.0.0.1:9100";

/// The development webhook secret (the gateway's default).
pub const DEV_WEBHOOK_SECRET: &str = "dev-webhook-secret-change-me";

impl Client {
    pub fn new(base: &str, secret: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .max_idle_connections_per_host(4)
            .build()
            .new_agent();
        let webhook_secret = std::env::var("SECKILL_PAYMENT_WEBHOOK_SECRET")
            .unwrap_or_else(|_| DEV_WEBHOOK_SECRET.to_string());
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
            internal: None,
            secret: secret.as_bytes().to_vec(),
            webhook_secret: webhook_secret.into_bytes(),
        }
    }

    /// The same client, reaching the gateway's internal listener at `url` (GATEWAY_ADMIN_URL
    /// under `stackctl with-services`) for the admin calls and the provider's callback.
    pub fn with_internal(mut self, url: &str) -> Client {
        self.internal = Some(url.trim_end_matches('/').to_string());
        self
    }

    /// The internal listener's base URL, or why there is none.
    fn internal(&self) -> Result<&str, LoadError> {
        self.internal.as_deref().ok_or_else(|| {
            LoadError::Setup(format!(
                "no internal URL for the gateway {} (the admin API and the payment callback \
                 are served on its internal_listen: Client::with_internal)",
                self.base
            ))
        })
    }

    /// The same client with the provider's webhook secret `secret`.
    pub fn with_webhook_secret(mut self, secret: &str) -> Client {
        self.webhook_secret = secret.as_bytes().to_vec();
        self
    }

    pub fn ticket(&self, user: u64) -> String {
        ticket_header(&self.secret, user)
    }

    /// A buyer's request, to the public listener.
    fn send(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, LoadError> {
        self.send_to(&self.base, method, path, auth, body)
    }

    fn send_to(
        &self,
        base: &str,
        method: &str,
        path: &str,
        auth: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, LoadError> {
        let url = format!("{base}{path}");
        let r = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", auth).call(),
            (_, Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", auth)
                .send_json(b),
            (_, None) => self
                .agent
                .post(&url)
                .header("Authorization", auth)
                .send_empty(),
        };
        let mut r = r?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string()?;
        Ok(Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        })
    }

    pub fn token(&self, sale: &str, user: u64) -> Result<Answer, LoadError> {
        self.send(
            "POST",
            &format!("/v1/sales/{sale}/tokens"),
            &self.ticket(user),
            None,
        )
    }

    pub fn order(&self, sale: &str, user: u64, token: &str) -> Result<Answer, LoadError> {
        self.send(
            "POST",
            &format!("/v1/sales/{sale}/orders"),
            &self.ticket(user),
            Some(&serde_json::json!({ "token": token })),
        )
    }

    pub fn order_status(&self, order_id: &str, user: u64) -> Result<Answer, LoadError> {
        self.send(
            "GET",
            &format!("/v1/orders/{order_id}"),
            &self.ticket(user),
            None,
        )
    }

    /// The buyer starts the payment (`POST /v1/orders/{id}/pay`: the intent), and the
    /// provider — simulated here — pays it at once with its signed callback. The
    /// callback's answer (200 `paid` or `refund_due`, or a refusal), or the start's when
    /// there is nothing to pay (already paid, cancelled, not the buyer's).
    pub fn pay(&self, order_id: &str, user: u64) -> Result<Answer, LoadError> {
        let started = self.send(
            "POST",
            &format!("/v1/orders/{order_id}/pay"),
            &self.ticket(user),
            None,
        )?;
        let intent = &started.body["payment"];
        if started.status != 200 || started.str("status") != Some("awaiting_payment") {
            return Ok(started);
        }
        let payment = seckill_common::payment::Payment {
            // One payment per order: a retried callback is the same payment.
            payment_id: format!("pay_{order_id}"),
            intent_id: intent["intent_id"].as_str().unwrap_or_default().to_string(),
            order_id: order_id.to_string(),
            amount_cents: intent["amount_cents"].as_i64().unwrap_or_default(),
            currency: intent["currency"].as_str().unwrap_or_default().to_string(),
        };
        self.provider_callback(&seckill_common::payment::Callback {
            id: format!("evt_{order_id}"),
            kind: seckill_common::payment::SUCCEEDED.to_string(),
            data: payment,
        })
    }

    /// The payment provider's callback `cb`, signed now with the webhook secret, to the
    /// internal listener.
    pub fn provider_callback(
        &self,
        cb: &seckill_common::payment::Callback,
    ) -> Result<Answer, LoadError> {
        let body = serde_json::to_vec(cb).unwrap_or_default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sig = seckill_common::payment::signature(&self.webhook_secret, now, &body);
        self.send_signed("/payments/webhook", &sig, &body)
    }

    /// POST `body` (JSON) to `path` on the internal listener with the provider's
    /// signature header `sig`.
    pub fn send_signed(&self, path: &str, sig: &str, body: &[u8]) -> Result<Answer, LoadError> {
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.internal()?))
            .header(seckill_common::payment::SIGNATURE_HEADER, sig)
            .header("Content-Type", "application/json")
            .send(body)?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string()?;
        Ok(Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        })
    }

    pub fn sale(&self, sale: &str) -> Result<Answer, LoadError> {
        self.send("GET", &format!("/v1/sales/{sale}"), "", None)
    }

    pub fn create_sale(
        &self,
        admin_token: &str,
        sale: &str,
        units: i64,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(), LoadError> {
        self.create_bucketed_sale(admin_token, sale, units, start_ms, end_ms, 1)
    }

    /// A sale whose stock is split over `buckets` stock buckets (1: unbucketed), created
    /// through the admin API (the internal listener).
    pub fn create_bucketed_sale(
        &self,
        admin_token: &str,
        sale: &str,
        units: i64,
        start_ms: i64,
        end_ms: i64,
        buckets: u32,
    ) -> Result<(), LoadError> {
        let mut body = serde_json::json!({"sale": sale, "stock": units, "start_ms": start_ms, "end_ms": end_ms});
        if buckets > 1 {
            body["buckets"] = buckets.into();
        }
        let a = self.send_to(
            self.internal()?,
            "POST",
            "/admin/sales",
            &format!("Bearer {admin_token}"),
            Some(&body),
        )?;
        if a.status != 201 {
            return Err(LoadError::Unexpected {
                status: a.status,
                body: a.body.to_string(),
            });
        }
        Ok(())
    }
}

/// An `Authorization` value for `user`: a ticket signed with `secret`, valid an hour.
pub fn ticket_header(secret: &[u8], user: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "Ticket {}",
        seckill_common::ticket::mint(secret, user, now + 3600)
    )
}
