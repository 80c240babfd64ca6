//! What one client may hold on this server, and the answers it gets when it asks for more.
//! (Patch 6 in PATCHES.md: none of this is upstream.)

use std::time::Duration;

use crate::response::Response;

/// Bounds applied to every connection. `Default` is the documented default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bind with `SO_REUSEPORT`, so that several processes share the address (the kernel
    /// spreads connections over them). Off by default: a second server started on an
    /// address in use fails instead of silently taking part of the traffic.
    pub share_port: bool,
    /// Connections served at once; one more is answered 503 and closed at once.
    pub max_connections: usize,
    /// Connections served at once from one client address: the socket's peer, or the
    /// client a trusted balancer names in its PROXY header (the balancer's own
    /// connections are not counted under its address). One more is answered 429
    /// (`Retry-After: 1`) and closed at once. 0: no cap.
    pub max_connections_per_ip: usize,
    /// Header fields in one request; more is 431.
    pub max_headers: usize,
    /// Bytes of one request head (request line and headers); more is 431.
    pub max_head_bytes: usize,
    /// Responses buffered for a connection: no further request of it is read or served
    /// while more than this waits to be written.
    pub max_pending_output: usize,
    /// From a request's first byte (from accept for the first request) to the end of its
    /// head; then 408 (a new connection that sent no byte at all is closed quietly).
    pub head_timeout: Duration,
    /// From the end of the head to the end of the body, read by the service; then 408.
    pub body_timeout: Duration,
    /// Between a response written and the next request's first byte; then a quiet close
    /// (the normal end of a keep-alive connection, not a refusal).
    pub idle_timeout: Duration,
    /// A write that makes no progress this long ends the connection (the client stopped
    /// reading; there is no one to answer).
    pub write_timeout: Duration,
    /// Bytes per second a client must take of its pending output: every `send_window`
    /// the server spends waiting to write to a connection (its writes blocked, summed
    /// over the connection's life) must move at least `min_send_rate` × `send_window`
    /// bytes, else the connection is dropped without an answer (`Hangup::MinSendRate`).
    /// A client reading slower than this is dropped after at most two windows of
    /// waiting (the first may be paid for by what its socket buffers took). A client
    /// that reads as fast as it is sent to never waits, whatever it downloads. 0: off
    /// (then only `write_timeout` applies).
    pub min_send_rate: usize,
    pub send_window: Duration,
    /// Socket peers whose connections must start with a PROXY protocol header (v1 or
    /// v2; see `proxy`): the service is told the client's address from it. A connection
    /// from such a peer without a valid header, or one from any other peer that starts
    /// with a header, is refused (`Malformed`, 400) and closed. Empty (the default):
    /// every PROXY header is refused.
    pub trusted_proxies: Vec<crate::proxy::TrustedNet>,
}

impl Limits {
    /// Whether connections from `ip` are a trusted balancer's.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(ip))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            share_port: false,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_headers: 64,
            max_head_bytes: 16 * 1024,
            max_pending_output: 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            min_send_rate: 1024,
            send_window: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Why the server answers a request (or a connection) itself and hangs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request head was not complete within `head_timeout`.
    HeadTimeout,
    /// The body was not complete within `body_timeout` (the service's body read failed
    /// with `TimedOut`).
    BodyTimeout,
    /// The head is longer than `max_head_bytes`.
    HeadTooLarge,
    /// More header fields than `max_headers`.
    TooManyHeaders,
    /// Not an HTTP/1.x request head.
    Malformed,
    /// The request target has bytes outside visible ASCII (controls, spaces, non-ASCII).
    BadTarget,
    /// Several `Content-Length` fields with different values (RFC 9112 §6.3).
    ConflictingLength,
    /// `Transfer-Encoding` of any kind: this server reads `Content-Length` bodies only.
    TransferEncoding,
    /// `max_connections` are open.
    TooManyConnections,
    /// `max_connections_per_ip` are open from this client's address.
    TooManyConnectionsPerIp,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::HeadTimeout,
        Refusal::BodyTimeout,
        Refusal::HeadTooLarge,
        Refusal::TooManyHeaders,
        Refusal::Malformed,
        Refusal::BadTarget,
        Refusal::ConflictingLength,
        Refusal::TransferEncoding,
        Refusal::TooManyConnections,
        Refusal::TooManyConnectionsPerIp,
    ];

    /// This library's answer (status, reason, stable code, message); a service may
    /// choose its own in `HttpService::refused`.
    pub fn default_answer(self) -> (u16, &'static str, &'static str, &'static str) {
        match self {
            Refusal::HeadTimeout => (408, "Request Timeout", "head_timeout", "the request head did not arrive in time"),
            Refusal::BodyTimeout => (408, "Request Timeout", "body_timeout", "the request body did not arrive in time"),
            Refusal::HeadTooLarge => (431, "Request Header Fields Too Large", "head_too_large", "the request head is too large"),
            Refusal::TooManyHeaders => (431, "Request Header Fields Too Large", "too_many_headers", "the request has too many header fields"),
            Refusal::Malformed => (400, "Bad Request", "malformed_request", "the request is not valid HTTP/1.1"),
            Refusal::BadTarget => (400, "Bad Request", "bad_request_target", "the request target has bytes outside visible ASCII"),
            Refusal::ConflictingLength => (400, "Bad Request", "conflicting_content_length", "Content-Length fields with different values"),
            Refusal::TransferEncoding => (501, "Not Implemented", "transfer_encoding_unsupported", "Transfer-Encoding is not supported; send Content-Length"),
            Refusal::TooManyConnections => (503, "Service Unavailable", "too_many_connections", "too many open connections; retry later"),
            Refusal::TooManyConnectionsPerIp => (429, "Too Many Requests", "too_many_connections_per_ip", "too many open connections from this address; retry later"),
        }
    }

    /// Write the default answer: status, JSON `{"error", "message"}`, `Retry-After` on
    /// 503 and 429.
    pub fn write_default(self, rsp: &mut Response) {
        let (status, reason, code, message) = self.default_answer();
        rsp.status_code(status as usize, reason);
        rsp.header("Content-Type: application/json");
        if status == 503 || status == 429 {
            rsp.header("Retry-After: 1");
        }
        rsp.body_vec(format!(r#"{{"error":"{code}","message":"{message}"}}"#).into_bytes());
    }
}

/// Why the server dropped a connection without a word: its client does not take its
/// output (there is no one to answer). Told to `HttpService::hung_up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// A write made no progress for `write_timeout`.
    WriteTimeout,
    /// The client took its output slower than `min_send_rate` over a `send_window`.
    MinSendRate,
}

impl Hangup {
    pub const ALL: [Hangup; 2] = [Hangup::WriteTimeout, Hangup::MinSendRate];

    /// A stable name (a metric label).
    pub fn label(self) -> &'static str {
        match self {
            Hangup::WriteTimeout => "write_timeout",
            Hangup::MinSendRate => "min_send_rate",
        }
    }
}
