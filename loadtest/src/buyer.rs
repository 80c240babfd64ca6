//! A buyer's HTTP calls against the gateway, on a keep-alive agent.

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
    #[error("database: {0}")]
    Db(#[from] postgres::Error),
    #[error("goose: {0}")]
    Goose(#[source] goose::GooseError),
    /// A file, a thread or a runtime that could not be had (`what` says which).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
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
    base: String,
    secret: Vec<u8>,
}

impl Client {
    pub fn new(base: &str, secret: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .max_idle_connections_per_host(4)
            .build()
            .new_agent();
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
            secret: secret.as_bytes().to_vec(),
        }
    }

    pub fn ticket(&self, user: u64) -> String {
        ticket_header(&self.secret, user)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, LoadError> {
        let url = format!("{}{path}", self.base);
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

    pub fn pay(&self, order_id: &str, user: u64) -> Result<Answer, LoadError> {
        self.send(
            "POST",
            &format!("/v1/orders/{order_id}/pay"),
            &self.ticket(user),
            None,
        )
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

    /// A sale whose stock is split over `buckets` stock buckets (1: unbucketed).
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
        let a = self.send(
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
