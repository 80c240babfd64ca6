//! Every refusal `error.rs` can choose is documented, with its status, code and
//! Retry-After.

use crate::schema::{deref, doc, operations};
use gateway::error::{ApiError, ControlError, Unknown};
use gateway::metrics::Limit;
use gateway::order_sink::SinkError;
use gateway::switches::InvalidSwitch;
use may_minihttp::Refusal;
use seckill_common::payment::SignatureError;
use seckill_common::ticket::TicketError;
use serde_json::Value;
use std::collections::BTreeSet;
use stock::StockError;

/// One of every refusal `error.rs` can choose (each variant, each stock error, each
/// refusal of the edge).
fn every_refusal() -> Vec<ApiError> {
    let stock = [
        StockError::NoSale,
        StockError::SaleExists,
        StockError::Paused,
        StockError::NotStarted { start_ms: 1 },
        StockError::Ended,
        StockError::SoldOut,
        StockError::AlreadyBought,
        StockError::TooManyTokens,
        StockError::TokenInvalid,
        StockError::TokenExpired,
        StockError::TokenNotYours,
        StockError::TokenUsed,
        StockError::NoOrder,
        StockError::AlreadyReleased,
        StockError::AlreadyPaid,
        StockError::Replayed,
        StockError::WouldOversell { held: 1, sold: 1 },
        StockError::Invalid("x".into()),
        StockError::Redis("x".into()),
        StockError::Timeout,
        StockError::BadReply("x".into()),
    ];
    let mut errors: Vec<ApiError> = vec![
        ApiError::NotFound,
        ApiError::MethodNotAllowed,
        ApiError::BadRequest("x".into()),
        ApiError::BadJson(serde_json::from_str::<Value>("{").unwrap_err()),
        ApiError::InvalidSwitch(InvalidSwitch::ZeroRate),
        ApiError::TooLarge(1),
        ApiError::NoTicket,
        ApiError::Ticket(TicketError::Malformed),
        ApiError::Ticket(TicketError::Forged),
        ApiError::Ticket(TicketError::Expired),
        ApiError::Unauthorized,
        ApiError::Signature(SignatureError::Malformed),
        ApiError::Signature(SignatureError::Mismatch),
        ApiError::Signature(SignatureError::Stale),
        ApiError::PaymentMismatch("amount_cents", "x".into()),
        ApiError::PaymentMismatch("currency", "x".into()),
        ApiError::PaymentMismatch("intent_id", "x".into()),
        ApiError::Limited(Limit::User, 3),
        ApiError::SoldOutShed,
        ApiError::PausedAll,
        ApiError::AdmissionShed,
        ApiError::StatusReadsOff,
        ApiError::SinkUnavailable(SinkError::Unavailable),
        ApiError::OutcomeUnknown {
            order_id: "s-1".into(),
            reason: Unknown::TopologyChanged,
        },
        ApiError::Draining,
        ApiError::StoreLost,
        ApiError::StoreUnconfirmed,
        ApiError::StatusCacheMiss,
        ApiError::SwitchStore(ControlError::NoAnswer),
    ];
    errors.extend(stock.into_iter().map(ApiError::Stock));
    errors.extend(Refusal::ALL.into_iter().map(ApiError::Refused));
    errors
}

/// Every refusal `error.rs` can choose, with its status, code and Retry-After, is in
/// the document; every operation documents the refusals of the HTTP edge.
#[test]
fn every_refusal_is_documented() {
    let doc = doc();
    let errors = every_refusal();
    let mut codes_in_error_rs = BTreeSet::new();
    for e in &errors {
        let status = e.status();
        let code = e.code();
        codes_in_error_rs.insert(code.to_string());
        let resp = status_response(&doc, status)
            .unwrap_or_else(|| panic!("{status} ({code}) is documented by no operation"));
        let enum_codes = error_codes(&doc, resp);
        assert!(
            enum_codes.iter().any(|c| c == code),
            "{status} documents codes {enum_codes:?} but not {code:?} ({e})"
        );
        let has_retry = resp["headers"]["Retry-After"].is_object();
        assert_eq!(
            has_retry,
            e.retry_after().is_some(),
            "{status} {code}: Retry-After documented {has_retry}, sent {:?}",
            e.retry_after()
        );
        if status == 405 {
            assert_eq!(resp["headers"]["Allow"]["required"], true);
        }
    }
    // Codes in the Error schema that the server never sends are stale.
    let schema_codes: BTreeSet<String> = doc["components"]["schemas"]["Error"]["properties"]
        ["error"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        schema_codes, codes_in_error_rs,
        "Error.error enum vs error.rs"
    );
    // A code added to error.rs without a case above (and without documentation) fails
    // here: every `=> "code"` literal of `ApiError::code` is in the Error schema.
    let src = include_str!("../../src/error.rs");
    let code_fn = &src[src.find("pub fn code(").unwrap()..src.find("pub fn retry_after(").unwrap()];
    for literal in code_fn.split("=> \"").skip(1) {
        let code = &literal[..literal.find('"').unwrap()];
        // `/readyz` answers "not ready" with its readiness object (documented there),
        // not with an Error body: `ApiError::body` says so.
        if code == "not_ready" {
            continue;
        }
        assert!(
            schema_codes.contains(code),
            "error.rs sends {code:?}: add the variant to this test and the code to openapi.json"
        );
    }

    // The edge answers these on any route, before the handler.
    for (template, method, op) in operations(&doc) {
        for status in [400, 408, 413, 429, 431, 501, 503] {
            assert!(
                op["responses"].get(status.to_string()).is_some(),
                "{method} {template} does not document the edge's {status}"
            );
        }
    }
}

/// The shared refusal response documented for `status` (405, which no operation can
/// answer, is documented in components only).
fn status_response(doc: &Value, status: u16) -> Option<&Value> {
    let from_ops = doc["paths"]
        .as_object()?
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
        .filter_map(|op| op["responses"].get(status.to_string()))
        .map(|r| deref(doc, r))
        .find(|r| r["content"]["application/json"]["schema"]["allOf"].is_array());
    from_ops
        .or_else(|| (status == 405).then(|| &doc["components"]["responses"]["MethodNotAllowed"]))
}

/// The error codes a refusal response's schema allows.
fn error_codes(doc: &Value, resp: &Value) -> Vec<String> {
    let schema = &resp["content"]["application/json"]["schema"];
    let mut out = vec![];
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let part = deref(doc, part);
        if let Some(e) = part["properties"]["error"]["enum"].as_array() {
            out = e.iter().map(|c| c.as_str().unwrap().to_string()).collect();
        }
    }
    out
}
