//! What a handler sees and answers: the request's parts with its body already read
//! ([`Incoming`]), and the [`Reply`]. Errors become replies here, with the status and
//! code `error.rs` chose. Shared by `app` (the handlers) and `http` (the may glue), so
//! neither imports the other's internals.

use crate::error::ApiError;
use serde::de::DeserializeOwned;
use std::net::IpAddr;

/// What a handler answers.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub retry_after: Option<u64>,
    /// Hang up after answering (the request's body was not read).
    pub close: bool,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
            content_type: "Content-Type: application/json",
            retry_after: None,
            close: false,
            allow: None,
        }
    }

    pub fn text(status: u16, body: String) -> Reply {
        Reply {
            status,
            body: body.into_bytes(),
            content_type: "Content-Type: text/plain; version=0.0.4",
            retry_after: None,
            close: false,
            allow: None,
        }
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        let mut r = Reply::json(e.status(), &e.body());
        r.retry_after = e.retry_after();
        r.close = e.closes_connection();
        r
    }
}

/// The parts of a request a handler needs, with the body already read (bounded).
pub struct Incoming<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    /// Who the client says it is (`X-Actor` header: the CLI sends `user@host`), kept in
    /// the audit detail as `claimed_actor` only: the actor is the operator the bearer
    /// token proves.
    pub actor: Option<&'a str>,
    /// The payment provider's `Seckill-Signature` header.
    pub signature: Option<&'a str>,
    pub peer: Option<IpAddr>,
    pub body: Vec<u8>,
}

impl Incoming<'_> {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(ApiError::BadJson)
    }
}
