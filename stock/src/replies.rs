//! Reading script replies: the outcome code of a reply (`{'OK', …}` or a named
//! refusal) mapped to [`StockError`], and typed fields.

use crate::StockError;
use redis::Value;

pub(crate) fn server_error(v: Value) -> Result<Value, StockError> {
    match v {
        Value::ServerError(e) => Err(StockError::Redis(format!(
            "{} {}",
            e.code(),
            e.details().unwrap_or_default()
        ))),
        v => Ok(v),
    }
}

/// Turn a script's `{'CODE', ...}` reply into the values after `OK`, or the error.
pub(crate) fn outcome(v: Value) -> Result<Vec<Value>, StockError> {
    let Value::Array(mut items) = v else {
        return Err(StockError::BadReply(format!(
            "expected an array, got {v:?}"
        )));
    };
    if items.is_empty() {
        return Err(StockError::BadReply("empty reply".into()));
    }
    let code = string_of(&items[0])?;
    let rest = items.split_off(1);
    Err(match code.as_str() {
        "OK" => return Ok(rest),
        "NO_SALE" => StockError::NoSale,
        "SALE_EXISTS" => StockError::SaleExists,
        "PAUSED" => StockError::Paused,
        "NOT_STARTED" => StockError::NotStarted {
            start_ms: int_at(&rest, 0)?,
        },
        "ENDED" => StockError::Ended,
        "SOLD_OUT" => StockError::SoldOut,
        "ALREADY_BOUGHT" => StockError::AlreadyBought,
        "TOKEN_INVALID" => StockError::TokenInvalid,
        "TOKEN_EXPIRED" => StockError::TokenExpired,
        "TOKEN_NOT_YOURS" => StockError::TokenNotYours,
        "TOKEN_USED" => StockError::TokenUsed,
        "TOO_MANY_TOKENS" => StockError::TooManyTokens,
        "REPLAYED" => StockError::Replayed,
        "TOKEN_COLLISION" => StockError::BadReply("random token collided; retry".into()),
        "NO_ORDER" => StockError::NoOrder,
        "ALREADY_RELEASED" => StockError::AlreadyReleased,
        "ALREADY_PAID" => StockError::AlreadyPaid,
        "OVERSOLD" => StockError::WouldOversell {
            held: int_at(&rest, 0)?,
            sold: int_at(&rest, 1)?,
        },
        other => StockError::BadReply(format!("unknown outcome {other}")),
    })
}

pub(crate) fn string_of(v: &Value) -> Result<String, StockError> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b.clone()).map_err(|_| StockError::BadReply("not utf-8".into()))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(StockError::BadReply(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

pub(crate) fn int_of(v: &Value) -> Result<i64, StockError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => string_of(other)?
            .parse()
            .map_err(|_| StockError::BadReply(format!("expected an integer, got {other:?}"))),
    }
}

pub(crate) fn string_at(rest: &[Value], i: usize) -> Result<String, StockError> {
    string_of(
        rest.get(i)
            .ok_or_else(|| StockError::BadReply("short reply".into()))?,
    )
}

pub(crate) fn int_at(rest: &[Value], i: usize) -> Result<i64, StockError> {
    int_of(
        rest.get(i)
            .ok_or_else(|| StockError::BadReply("short reply".into()))?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Phase, SaleState};

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn script_replies_map_to_named_outcomes() {
        assert_eq!(
            outcome(Value::Array(vec![bulk("SOLD_OUT")])),
            Err(StockError::SoldOut)
        );
        assert_eq!(
            outcome(Value::Array(vec![bulk("NOT_STARTED"), bulk("42")])),
            Err(StockError::NotStarted { start_ms: 42 })
        );
        assert_eq!(
            outcome(Value::Array(vec![bulk("OK"), Value::Int(3)])),
            Ok(vec![Value::Int(3)])
        );
        assert!(matches!(
            outcome(Value::Int(1)),
            Err(StockError::BadReply(_))
        ));
        assert!(matches!(
            outcome(Value::Array(vec![bulk("WHAT")])),
            Err(StockError::BadReply(_))
        ));
    }

    #[test]
    fn conservation_and_phase_follow_the_counters() {
        let s = SaleState {
            initial: 10,
            per_user_limit: 1,
            start_ms: 0,
            end_ms: 100,
            paused: false,
            remaining: 0,
            sold: 4,
            held: 6,
            now_ms: 50,
        };
        assert!(s.conserved());
        assert_eq!(s.phase(), Phase::SoldOut);
        assert!(!SaleState {
            held: 5,
            ..s.clone()
        }
        .conserved());
        assert_eq!(
            SaleState {
                now_ms: 100,
                ..s.clone()
            }
            .phase(),
            Phase::Ended
        );
        assert_eq!(
            SaleState {
                remaining: 1,
                held: 5,
                ..s
            }
            .phase(),
            Phase::Open
        );
    }
}
