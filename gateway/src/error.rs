//! The gateway's one error type, and its mapping to HTTP — status, stable JSON code,
//! Retry-After — in one place.

use crate::metrics::Limit;
use crate::order_sink::SinkError;
use crate::switches::InvalidSwitch;
use may_minihttp::Refusal;
use seckill_common::payment::SignatureError;
use seckill_common::ticket::TicketError;
use stock::StockError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("bad request: body is not the expected JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    #[error("bad request: {0}")]
    InvalidSwitch(#[from] InvalidSwitch),
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("missing ticket (send `Authorization: Ticket <ticket>`)")]
    NoTicket,
    #[error("ticket rejected: {0}")]
    Ticket(#[source] TicketError),
    #[error("admin endpoints need `Authorization: Bearer <admin token>`")]
    Unauthorized,
    /// A payment callback whose `Seckill-Signature` is missing, forged or stale.
    #[error("payment callback refused: {0}")]
    Signature(#[source] SignatureError),
    /// A signed payment callback that does not fit its order (the field, and how).
    #[error("payment callback refused: {0} does not match: {1}")]
    PaymentMismatch(&'static str, String),
    #[error("{0}")]
    Stock(#[from] StockError),
    #[error("rate limited ({0:?})")]
    Limited(Limit, u64),
    #[error("sale is sold out")]
    SoldOutShed,
    #[error("sales are paused by the operator")]
    PausedAll,
    #[error("too many requests; admitted a fraction only")]
    AdmissionShed,
    #[error("order status reads are switched off")]
    StatusReadsOff,
    #[error("the order could not be handed to the broker; the unit was returned to the sale: {0}")]
    SinkUnavailable(#[source] SinkError),
    /// The order was reserved but whether its message reached the broker or the spool is
    /// not known (a spool write that hung, a replay whose resend failed). The order may
    /// stand: the buyer queries it, or retries with the same token (which resends it).
    #[error("order {order_id} was reserved, but whether it was stored is not known ({reason}); query GET /v1/orders/{order_id}, or retry with the same token")]
    OutcomeUnknown {
        order_id: String,
        #[source]
        reason: Unknown,
    },
    #[error("the gateway is shutting down")]
    Draining,
    #[error("Redis lost its data; selling is stopped until the stock is rebuilt")]
    StoreLost,
    #[error("a Redis process restarted or took over and may lack recent orders; purchases resume once the order-writer has put them back")]
    StoreUnconfirmed,
    #[error("order status reads are served from cache only, and this order is not cached")]
    StatusCacheMiss,
    #[error("the central switch store is unreachable: {0} (a local override still works: /admin/switches/local)")]
    SwitchStore(#[source] ControlError),
    /// Refused at the HTTP edge (framing, bounds, timeouts); the connection is closed.
    #[error("{}", refusal_message(*.0))]
    Refused(Refusal),
    /// `/readyz` while a dependency it needs is down: the body is the readiness object.
    #[error("not ready")]
    NotReady(serde_json::Value),
}

/// Why an order's outcome is not known (`ApiError::OutcomeUnknown`).
#[derive(Debug, thiserror::Error)]
pub enum Unknown {
    #[error("the Redis topology changed during the purchase and its release did not happen")]
    TopologyChanged,
    /// The hand-off's own outcome is not known, or the resend of an order that stands
    /// from an earlier attempt failed.
    #[error("{0}")]
    Sink(#[source] SinkError),
    /// The hand-off failed and the unit could not be given back.
    #[error("{0}; the unit was not returned")]
    NotReleased(#[source] SinkError),
}

/// Why the control store (switches, sale pauses, audit) did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Store(#[from] StockError),
    /// Its thread could not be started.
    #[error("{0}")]
    Thread(#[source] std::io::Error),
    #[error("no answer within 3 s")]
    NoAnswer,
}

fn refusal_message(r: Refusal) -> &'static str {
    match r {
        Refusal::HeadTimeout => "the request head did not arrive in time",
        Refusal::BodyTimeout => "the request body did not arrive in time",
        Refusal::HeadTooLarge => "the request head is too large",
        Refusal::TooManyHeaders => "the request has too many header fields",
        Refusal::Malformed => "the request is not valid HTTP/1.1",
        Refusal::BadTarget => "the request target has bytes outside visible ASCII",
        Refusal::ConflictingLength => "Content-Length fields with different values",
        Refusal::TransferEncoding => "Transfer-Encoding is not supported; send Content-Length",
        Refusal::TooManyConnections => "too many open connections; retry later",
        Refusal::TooManyConnectionsPerIp => {
            "too many open connections from this address; retry later"
        }
    }
}

impl ApiError {
    pub fn status(&self) -> u16 {
        use StockError as S;
        match self {
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::BadRequest(_) | ApiError::BadJson(_) | ApiError::InvalidSwitch(_) => 400,
            ApiError::TooLarge(_) => 413,
            ApiError::NoTicket
            | ApiError::Ticket(_)
            | ApiError::Unauthorized
            | ApiError::Signature(_) => 401,
            ApiError::PaymentMismatch(..) => 422,
            ApiError::Limited(..) => 429,
            ApiError::SoldOutShed => 410,
            ApiError::PausedAll
            | ApiError::AdmissionShed
            | ApiError::StatusReadsOff
            | ApiError::SinkUnavailable(_)
            | ApiError::OutcomeUnknown { .. }
            | ApiError::Draining => 503,
            ApiError::StoreLost
            | ApiError::StoreUnconfirmed
            | ApiError::StatusCacheMiss
            | ApiError::SwitchStore(_) => 503,
            ApiError::NotReady(_) => 503,
            ApiError::Refused(r) => match r {
                Refusal::HeadTimeout | Refusal::BodyTimeout => 408,
                Refusal::HeadTooLarge | Refusal::TooManyHeaders => 431,
                Refusal::Malformed | Refusal::BadTarget | Refusal::ConflictingLength => 400,
                Refusal::TransferEncoding => 501,
                Refusal::TooManyConnections => 503,
                Refusal::TooManyConnectionsPerIp => 429,
            },
            ApiError::Stock(e) => match e {
                S::NoSale | S::NoOrder => 404,
                S::SaleExists
                | S::AlreadyBought
                | S::TokenInvalid
                | S::TokenExpired
                | S::TokenNotYours
                | S::TokenUsed
                | S::AlreadyReleased
                | S::AlreadyPaid => 409,
                S::Replayed => 503,
                S::SoldOut | S::Ended => 410,
                S::NotStarted { .. } => 425,
                S::TooManyTokens => 429,
                S::Invalid(_) | S::WouldOversell { .. } => 400,
                S::Paused | S::Redis(_) | S::Timeout | S::BadReply(_) | S::Tls(_) => 503,
            },
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        use StockError as S;
        match self {
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BadJson(_) | ApiError::InvalidSwitch(_) => "bad_request",
            ApiError::TooLarge(_) => "body_too_large",
            ApiError::NoTicket => "ticket_missing",
            ApiError::Ticket(TicketError::Expired) => "ticket_expired",
            ApiError::Ticket(_) => "ticket_invalid",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Signature(e) => crate::payments::signature_code(*e),
            ApiError::PaymentMismatch("amount_cents", _) => "amount_mismatch",
            ApiError::PaymentMismatch("currency", _) => "currency_mismatch",
            ApiError::PaymentMismatch(..) => "intent_mismatch",
            ApiError::Limited(..) => "rate_limited",
            ApiError::SoldOutShed => "sold_out",
            ApiError::PausedAll => "sale_paused",
            ApiError::AdmissionShed => "admission_shed",
            ApiError::StatusReadsOff => "status_reads_off",
            ApiError::SinkUnavailable(_) => "order_sink_unavailable",
            ApiError::OutcomeUnknown { .. } => "order_outcome_unknown",
            ApiError::Draining => "shutting_down",
            ApiError::StoreLost => "redis_data_lost",
            ApiError::StoreUnconfirmed => "store_recovering",
            ApiError::NotReady(_) => "not_ready",
            ApiError::StatusCacheMiss => "status_not_cached",
            ApiError::SwitchStore(_) => "switch_store_unreachable",
            ApiError::Refused(r) => match r {
                Refusal::HeadTimeout => "head_timeout",
                Refusal::BodyTimeout => "body_timeout",
                Refusal::HeadTooLarge => "head_too_large",
                Refusal::TooManyHeaders => "too_many_headers",
                Refusal::Malformed => "malformed_request",
                Refusal::BadTarget => "bad_request_target",
                Refusal::ConflictingLength => "conflicting_content_length",
                Refusal::TransferEncoding => "transfer_encoding_unsupported",
                Refusal::TooManyConnections => "too_many_connections",
                Refusal::TooManyConnectionsPerIp => "too_many_connections_per_ip",
            },
            ApiError::Stock(e) => match e {
                S::NoSale => "no_such_sale",
                S::NoOrder => "no_such_order",
                S::SaleExists => "sale_exists",
                S::Paused => "sale_paused",
                S::NotStarted { .. } => "not_started",
                S::Ended => "sale_ended",
                S::SoldOut => "sold_out",
                S::AlreadyBought => "already_bought",
                S::TokenInvalid => "token_invalid",
                S::TokenExpired => "token_expired",
                S::TokenNotYours => "token_not_yours",
                S::TokenUsed => "token_used",
                S::TooManyTokens => "too_many_tokens",
                S::AlreadyReleased => "order_cancelled",
                S::AlreadyPaid => "order_paid",
                S::Replayed => "order_outcome_unknown",
                S::Invalid(_) | S::WouldOversell { .. } => "bad_request",
                S::Redis(_) | S::Timeout | S::BadReply(_) | S::Tls(_) => "redis_unavailable",
            },
        }
    }

    /// The JSON body: `{"error": code, "message": text}`, or the readiness object.
    pub fn body(&self) -> serde_json::Value {
        match self {
            ApiError::NotReady(view) => view.clone(),
            ApiError::OutcomeUnknown { order_id, .. } => serde_json::json!({
                "error": self.code(), "message": self.to_string(), "order_id": order_id,
            }),
            e => serde_json::json!({ "error": e.code(), "message": e.to_string() }),
        }
    }

    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Limited(_, s) => Some(*s),
            ApiError::Refused(Refusal::TooManyConnectionsPerIp) => Some(1),
            ApiError::StoreLost => Some(10),
            // The buyer's oldest token may be minutes from expiring: the longest wait the
            // gateway states (its Retry-After values go up to 10 s).
            ApiError::Stock(StockError::TooManyTokens) => Some(10),
            e if e.status() == 503 => Some(1),
            _ => None,
        }
    }

    /// Refusals that leave an unread body on the connection, and those of the HTTP
    /// edge, end it.
    pub fn closes_connection(&self) -> bool {
        matches!(self, ApiError::TooLarge(_) | ApiError::Refused(_))
            || matches!(self, ApiError::BadRequest(m) if m.contains("Content-Length"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_and_code() {
        let mut cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::Ticket(TicketError::Forged), 401, "ticket_invalid"),
            (
                ApiError::Ticket(TicketError::Expired),
                401,
                "ticket_expired",
            ),
            (StockError::NoSale.into(), 404, "no_such_sale"),
            (StockError::AlreadyBought.into(), 409, "already_bought"),
            (StockError::SoldOut.into(), 410, "sold_out"),
            (StockError::Ended.into(), 410, "sale_ended"),
            (
                StockError::NotStarted { start_ms: 1 }.into(),
                425,
                "not_started",
            ),
            (ApiError::Limited(Limit::User, 1), 429, "rate_limited"),
            (StockError::Timeout.into(), 503, "redis_unavailable"),
            (StockError::TokenUsed.into(), 409, "token_used"),
            (StockError::TokenNotYours.into(), 409, "token_not_yours"),
            (StockError::AlreadyReleased.into(), 409, "order_cancelled"),
            (ApiError::TooLarge(10), 413, "body_too_large"),
            (ApiError::StoreLost, 503, "redis_data_lost"),
            (
                ApiError::OutcomeUnknown {
                    order_id: "s-1".into(),
                    reason: Unknown::Sink(SinkError::Timeout),
                },
                503,
                "order_outcome_unknown",
            ),
            (ApiError::StoreUnconfirmed, 503, "store_recovering"),
            (ApiError::StatusCacheMiss, 503, "status_not_cached"),
            (
                ApiError::Signature(SignatureError::Stale),
                401,
                "signature_expired",
            ),
            (
                ApiError::Signature(SignatureError::Mismatch),
                401,
                "signature_invalid",
            ),
            (
                ApiError::PaymentMismatch("amount_cents", "1 paid, 2 due".into()),
                422,
                "amount_mismatch",
            ),
            (
                ApiError::PaymentMismatch("intent_id", String::new()),
                422,
                "intent_mismatch",
            ),
        ];
        use Refusal as R;
        let edge = [
            (R::HeadTimeout, 408, "head_timeout"),
            (R::BodyTimeout, 408, "body_timeout"),
            (R::TooManyHeaders, 431, "too_many_headers"),
            (R::HeadTooLarge, 431, "head_too_large"),
            (R::BadTarget, 400, "bad_request_target"),
            (R::ConflictingLength, 400, "conflicting_content_length"),
            (R::TransferEncoding, 501, "transfer_encoding_unsupported"),
            (R::TooManyConnections, 503, "too_many_connections"),
            (
                R::TooManyConnectionsPerIp,
                429,
                "too_many_connections_per_ip",
            ),
        ];
        cases.extend(edge.map(|(r, status, code)| (ApiError::Refused(r), status, code)));
        for (e, status, code) in cases {
            assert_eq!((e.status(), e.code()), (status, code), "{e}");
            assert_eq!(
                e.retry_after().is_some(),
                status == 429 || status == 503,
                "{e}"
            );
        }
    }

    #[test]
    fn every_edge_refusal_closes_the_connection() {
        for r in Refusal::ALL {
            let e = ApiError::Refused(r);
            assert!(e.closes_connection(), "{r:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}
