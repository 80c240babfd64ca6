//! The may_minihttp glue: one service per connection (it knows the peer's IP), body
//! reading within the configured limit, and the reply type every handler returns.

use crate::app::App;
use crate::error::ApiError;
use crate::metrics::Route;
use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};
use serde::de::DeserializeOwned;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// What a handler answers.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub retry_after: Option<u64>,
    /// Hang up after answering (the request's body was not read).
    pub close: bool,
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
            content_type: "Content-Type: application/json",
            retry_after: None,
            close: false,
        }
    }

    pub fn text(status: u16, body: String) -> Reply {
        Reply {
            status,
            body: body.into_bytes(),
            content_type: "Content-Type: text/plain; version=0.0.4",
            retry_after: None,
            close: false,
        }
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        let mut r = Reply::json(
            e.status(),
            &serde_json::json!({ "error": e.code(), "message": e.to_string() }),
        );
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
    /// Who an admin change is by (`X-Actor` header), for the audit log.
    pub actor: Option<&'a str>,
    pub peer: Option<IpAddr>,
    pub body: Vec<u8>,
}

impl Incoming<'_> {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::BadRequest(format!("body is not the expected JSON: {e}")))
    }
}

pub struct Factory(pub Arc<App>);

impl HttpServiceFactory for Factory {
    type Service = Conn;
    fn new_service(&self, _id: usize) -> Conn {
        Conn {
            app: self.0.clone(),
            peer: None,
        }
    }
    fn new_service_for_peer(&self, _id: usize, peer: Option<SocketAddr>) -> Conn {
        Conn {
            app: self.0.clone(),
            peer: peer.map(|p| p.ip()),
        }
    }
}

pub struct Conn {
    app: Arc<App>,
    peer: Option<IpAddr>,
}

impl HttpService for Conn {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        let started = Instant::now();
        let _in_flight = self.app.enter();
        let (route, reply) = self.dispatch(req);
        let status = reply.status;
        write(rsp, reply);
        self.app.metrics.request(route, status, started.elapsed());
        Ok(())
    }
}

impl Conn {
    fn dispatch(&self, req: Request) -> (Route, Reply) {
        let method = req.method().to_string();
        let full_path = req.path().to_string();
        let path = full_path.split('?').next().unwrap_or("").to_string();
        let route = App::route_of(&path);
        let header = |name: &str| {
            req.headers()
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let authorization = header("authorization").map(str::to_string);
        let actor = header("x-actor").map(|s| s.chars().take(64).collect::<String>());
        let limit = self.app.cfg.max_body_bytes.max(0) as usize;
        let body = match req.content_length() {
            None => {
                return (
                    route,
                    ApiError::BadRequest("malformed Content-Length".into()).into(),
                )
            }
            Some(n) if n > limit => return (route, ApiError::TooLarge(limit).into()),
            Some(0) => Vec::new(),
            Some(n) => {
                let mut body = Vec::with_capacity(n);
                match req.body().take(n as u64).read_to_end(&mut body) {
                    Ok(_) if body.len() == n => body,
                    _ => {
                        return (
                            route,
                            ApiError::BadRequest("body shorter than Content-Length".into()).into(),
                        )
                    }
                }
            }
        };
        let incoming = Incoming {
            method: &method,
            path: &path,
            authorization: authorization.as_deref(),
            actor: actor.as_deref(),
            peer: self.peer,
            body,
        };
        let reply = match self.app.handle(route, &incoming) {
            Ok(r) => r,
            Err(e) => e.into(),
        };
        (route, reply)
    }
}

fn write(rsp: &mut Response, reply: Reply) {
    rsp.status_code(reply.status as usize, reason(reply.status));
    rsp.header(reply.content_type);
    if let Some(s) = reply.retry_after {
        rsp.header(retry_after(s));
    }
    if reply.close {
        rsp.close();
    }
    rsp.body_vec(reply.body);
}

/// Response headers are `&'static str` in may_minihttp: a fixed set of values.
fn retry_after(secs: u64) -> &'static str {
    const H: [&str; 10] = [
        "Retry-After: 1",
        "Retry-After: 2",
        "Retry-After: 3",
        "Retry-After: 4",
        "Retry-After: 5",
        "Retry-After: 6",
        "Retry-After: 7",
        "Retry-After: 8",
        "Retry-After: 9",
        "Retry-After: 10",
    ];
    H[(secs.clamp(1, 10) - 1) as usize]
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        425 => "Too Early",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}
