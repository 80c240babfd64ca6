//! The may_minihttp glue: one service per connection (it knows the peer's IP — the
//! socket's, or the client's from a trusted balancer's PROXY header — and the listener
//! it came in on), body reading within the configured limit, the edge's bounds and
//! refusals (see `Config::http_limits`), and the reply type every handler returns.
//!
//! Both listeners (`listen`, `internal_listen`) are this same service with the same
//! limits; [`Listener::serves`] says which routes each answers, and a route the other one
//! serves is an unknown path here (404 `not_found`).

use crate::app::App;
use crate::error::ApiError;
use crate::metrics::{Listener, Route};
pub use crate::request::{Incoming, Reply};
use may_minihttp::{Hangup, HttpService, HttpServiceFactory, Limits, Refusal, Request, Response};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// The service of one listener: the gateway's state, and which routes it serves.
pub struct Factory {
    pub app: Arc<App>,
    pub listener: Listener,
}

impl HttpServiceFactory for Factory {
    type Service = Conn;
    fn new_service(&self, id: usize) -> Conn {
        self.new_service_for_peer(id, None)
    }
    fn new_service_for_peer(&self, _id: usize, peer: Option<SocketAddr>) -> Conn {
        self.app.metrics.connection(self.listener, true);
        Conn {
            app: self.app.clone(),
            listener: self.listener,
            peer: peer.map(|p| p.ip()),
        }
    }
    /// The same bounds on both listeners (each counts its own connections), except two
    /// the public one alone has: the balancer in front of it (`trusted_proxies`: the
    /// public balancer never fronts the internal listener, and an operator or scraper on
    /// that host must not be asked for PROXY headers), and `share_port` (an internal
    /// address shared by several processes would send each scrape or local switch to a
    /// random one of them).
    fn limits(&self) -> Limits {
        let mut limits = self.app.cfg.http_limits();
        if self.listener == Listener::Internal {
            limits.trusted_proxies = Vec::new();
            limits.share_port = false;
        }
        limits
    }
}

/// One client connection (may_minihttp makes one per accepted socket).
pub struct Conn {
    app: Arc<App>,
    listener: Listener,
    peer: Option<IpAddr>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.app.metrics.connection(self.listener, false);
    }
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

    fn refused(&mut self, why: Refusal, rsp: &mut Response) {
        tracing::debug!(?why, peer = ?self.peer, "refused at the edge");
        self.app.metrics.refused(why);
        write(rsp, ApiError::Refused(why).into());
    }

    /// The client behind a trusted balancer (`trusted_proxies`), from its PROXY header:
    /// the per-IP limits count this address, not the balancer's.
    fn proxied_peer(&mut self, client: SocketAddr) {
        self.peer = Some(client.ip());
    }

    /// Dropped for not taking its output (`write_timeout_ms`, `min_send_rate`).
    fn hung_up(&mut self, why: Hangup) {
        tracing::debug!(?why, peer = ?self.peer, "slow reader dropped");
        self.app.metrics.dropped(why);
    }
}

impl Conn {
    fn dispatch(&self, req: Request) -> (Route, Reply) {
        let limit = self.app.cfg.max_body_bytes.max(0) as usize;
        let parts = Parts::of(&req);
        // A route of the other listener is an unknown path here (and counted as one).
        let route = match App::route_of(parts.path) {
            r if self.listener.serves(r) => r,
            _ => Route::Other,
        };
        match req.content_length() {
            // The body's end is unknown: answer and hang up (RFC 9112 §6.3), never read
            // what follows as the next request.
            None => (route, ApiError::Refused(Refusal::Malformed).into()),
            Some(n) if n > limit => (route, ApiError::TooLarge(limit).into()),
            // No body (a token, a status read): the request's own buffers, no copies.
            Some(0) => (route, self.serve(route, &parts, Vec::new())),
            Some(n) => {
                // Reading the body consumes the request: keep what the handler needs.
                let owned = parts.to_owned();
                let mut body = Vec::with_capacity(n);
                let reply = match req.body().take(n as u64).read_to_end(&mut body) {
                    Ok(_) if body.len() == n => self.serve(route, &owned.parts(), body),
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        self.app.metrics.refused(Refusal::BodyTimeout);
                        ApiError::Refused(Refusal::BodyTimeout).into()
                    }
                    _ => ApiError::BadRequest("body shorter than Content-Length".into()).into(),
                };
                (route, reply)
            }
        }
    }

    fn serve(&self, route: Route, parts: &Parts<'_>, body: Vec<u8>) -> Reply {
        let incoming = Incoming {
            method: parts.method,
            path: parts.path,
            authorization: parts.authorization,
            actor: parts.actor,
            signature: parts.signature,
            peer: self.peer,
            body,
        };
        let mut reply = match self.app.handle(route, &incoming) {
            Ok(r) => r,
            Err(e) => e.into(),
        };
        if reply.status == 405 {
            reply.allow = allow(route, parts.path);
        }
        reply
    }
}

/// What a handler reads of a request's head: its method, its path without the query,
/// and the headers it looks at (`X-Actor` cut to 64 characters).
struct Parts<'a> {
    method: &'a str,
    path: &'a str,
    authorization: Option<&'a str>,
    actor: Option<&'a str>,
    signature: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn of(req: &'a Request) -> Parts<'a> {
        let header = |name: &str| {
            req.headers()
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let path = req.path();
        Parts {
            method: req.method(),
            path: path.split('?').next().unwrap_or(""),
            authorization: header("authorization"),
            actor: header("x-actor")
                .map(|s| s.char_indices().nth(64).map_or(s, |(end, _)| &s[..end])),
            signature: header(seckill_common::payment::SIGNATURE_HEADER),
        }
    }

    fn to_owned(&self) -> OwnedParts {
        let own = |s: Option<&str>| s.map(str::to_string);
        OwnedParts {
            method: self.method.to_string(),
            path: self.path.to_string(),
            authorization: own(self.authorization),
            actor: own(self.actor),
            signature: own(self.signature),
        }
    }
}

/// [`Parts`] kept past the request (its body is read after).
struct OwnedParts {
    method: String,
    path: String,
    authorization: Option<String>,
    actor: Option<String>,
    signature: Option<String>,
}

impl OwnedParts {
    fn parts(&self) -> Parts<'_> {
        Parts {
            method: &self.method,
            path: &self.path,
            authorization: self.authorization.as_deref(),
            actor: self.actor.as_deref(),
            signature: self.signature.as_deref(),
        }
    }
}

/// The methods a route answers (RFC 9110 §15.5.6: a 405 lists them in `Allow`). Kept
/// beside `App::handle`'s method checks; `allow_matches_the_routes` pins both.
fn allow(route: Route, path: &str) -> Option<&'static str> {
    Some(match route {
        Route::Token | Route::Order | Route::Pay | Route::PaymentCallback | Route::AdminSales => {
            "Allow: POST"
        }
        Route::Sale | Route::OrderStatus | Route::Metrics | Route::Health | Route::Ready => {
            "Allow: GET"
        }
        Route::AdminSwitches => match path.trim_end_matches('/') {
            "/admin/switches" => "Allow: GET, POST",
            "/admin/switches/local" => "Allow: GET, POST, DELETE",
            _ => "Allow: GET",
        },
        Route::Other => return None,
    })
}

fn write(rsp: &mut Response, reply: Reply) {
    rsp.status_code(reply.status as usize, reason(reply.status));
    rsp.header(reply.content_type);
    if let Some(s) = reply.retry_after {
        rsp.header(retry_after(s));
    }
    if let Some(a) = reply.allow {
        rsp.header(a);
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
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        425 => "Too Early",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_matches_the_routes() {
        let cases = [
            ("/v1/sales/s/tokens", Some("Allow: POST")),
            ("/v1/sales/s/orders", Some("Allow: POST")),
            ("/v1/orders/s-1/pay", Some("Allow: POST")),
            ("/admin/sales", Some("Allow: POST")),
            ("/admin/sales/s/pause", Some("Allow: POST")),
            ("/v1/sales/s", Some("Allow: GET")),
            ("/v1/orders/s-1", Some("Allow: GET")),
            ("/metrics", Some("Allow: GET")),
            ("/healthz", Some("Allow: GET")),
            ("/readyz", Some("Allow: GET")),
            ("/admin/switches", Some("Allow: GET, POST")),
            ("/admin/switches/local", Some("Allow: GET, POST, DELETE")),
            ("/admin/audit", Some("Allow: GET")),
            ("/nowhere", None),
        ];
        for (path, want) in cases {
            assert_eq!(allow(App::route_of(path), path), want, "{path}");
        }
    }

    #[test]
    fn edge_refusals_are_json_with_a_stable_code_and_close() {
        let r: Reply = ApiError::Refused(Refusal::TooManyConnections).into();
        assert_eq!((r.status, r.close, r.retry_after), (503, true, Some(1)));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "too_many_connections");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        let r: Reply = ApiError::Refused(Refusal::TooManyConnectionsPerIp).into();
        assert_eq!((r.status, r.close, r.retry_after), (429, true, Some(1)));
    }
}
