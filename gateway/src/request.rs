//! What a handler sees and answers: the request's parts with its body already read
//! ([`Incoming`]), and the [`Reply`]. Errors become replies here, with the status and
//! code `error.rs` chose. Shared by `app` (the handlers) and `http` (the may glue), so
//! neither imports the other's internals.

use crate::error::ApiError;
use serde::de::DeserializeOwned;
use std::net::IpAddr;

const JSON: &str = "Content-Type: application/json";

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
            content_type: JSON,
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
        let mut r = match e {
            // The common shape, written straight out (no JSON tree): the sold-out path
            // answers many of these.
            ApiError::NotReady(_) | ApiError::OutcomeUnknown { .. } => {
                Reply::json(e.status(), &e.body())
            }
            _ => Reply {
                status: e.status(),
                body: match e {
                    // The sold-out path's answer, the most frequent of all in a rush.
                    ApiError::SoldOutShed => SOLD_OUT.to_vec(),
                    _ => error_body(e.code(), &e.to_string()),
                },
                content_type: JSON,
                retry_after: None,
                close: false,
                allow: None,
            },
        };
        r.retry_after = e.retry_after();
        r.close = e.closes_connection();
        r
    }
}

/// `ApiError::SoldOutShed`'s body, written once (a test holds it to `ApiError::body`).
const SOLD_OUT: &[u8] = br#"{"error":"sold_out","message":"sale is sold out"}"#;

/// `{"error":code,"message":message}`, as `ApiError::body` has it.
fn error_body(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + code.len() + message.len());
    body.extend_from_slice(b"{\"error\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, code);
    body.extend_from_slice(b",\"message\":");
    let _ = serde_json::to_writer(&mut body, message);
    body.push(b'}');
    body
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_is_what_the_json_tree_gives() {
        for e in [
            ApiError::SoldOutShed,
            ApiError::NoTicket,
            ApiError::BadRequest("a \"quoted\" \\ line\nbreak é".into()),
            ApiError::TooLarge(10),
        ] {
            let want = serde_json::to_vec(&e.body()).expect("json");
            let r: Reply = e.into();
            assert_eq!(
                String::from_utf8_lossy(&r.body),
                String::from_utf8_lossy(&want)
            );
        }
    }
}
