//! Messages on the `orders` topic, produced by the gateway and consumed by the
//! order-writer. Key = the buyer's user id, so one user's events stay ordered (an
//! order's `paid` event always follows its `reserved` event). Value = JSON.

use serde::{Deserialize, Serialize};

/// What happened to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEvent {
    /// Accepted by the gateway: stock is reserved for it.
    Reserved,
    /// Paid by the buyer (the Redis settle script decided it before this was sent).
    Paid,
    /// A sale was created: its definition, kept in PostgreSQL so that the sale's stock
    /// can be rebuilt if Redis loses its data. `order_id` is empty, `user` 0.
    Opened,
}

/// Most stock buckets a sale may have (`stock::keys::MAX_BUCKETS`).
pub const MAX_BUCKETS: u32 = 64;

/// A sale's definition, carried by `opened` events.
///
/// `buckets` (the stock buckets it was created with) is left out of the JSON when it is 1,
/// so a single-bucket sale's event is what it always was and an older writer (which, like
/// this one, refuses unknown fields) still takes it; an event without it reads as 1.
/// `price_cents` (what a payment for one unit must carry) is left out when unset, for the
/// same reason: upgrade the writers before the gateways that send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleDefinition {
    pub stock: i64,
    pub per_user_limit: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(default = "one_bucket", skip_serializing_if = "is_one_bucket")]
    pub buckets: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_cents: Option<i64>,
}

fn one_bucket() -> u32 {
    1
}

fn is_one_bucket(n: &u32) -> bool {
    *n == 1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderMessage {
    pub event: OrderEvent,
    /// `<sale>-<sequence>`, assigned by the purchase script; unique across gateways.
    pub order_id: String,
    pub sale: String,
    pub user: u64,
    pub units: u32,
    /// The sale's per-user limit when the order was accepted (0 on `paid` events).
    pub per_user_limit: u32,
    /// Gateway clock when the event happened (ms since the Unix epoch).
    pub at_ms: i64,
    /// Only on `opened` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<SaleDefinition>,
}

impl OrderMessage {
    /// Partition key: the buyer, so one user's events stay ordered; the sale for
    /// `opened` events.
    pub fn key(&self) -> String {
        match self.event {
            OrderEvent::Opened => self.sale.clone(),
            _ => self.user.to_string(),
        }
    }

    /// The `opened` event of a sale.
    pub fn opened(sale: &str, definition: SaleDefinition, at_ms: i64) -> OrderMessage {
        OrderMessage {
            event: OrderEvent::Opened,
            order_id: String::new(),
            sale: sale.to_string(),
            user: 0,
            units: 0,
            per_user_limit: 0,
            at_ms,
            definition: Some(definition),
        }
    }

    /// Well-formed for its event? (What the writer dead-letters otherwise.)
    pub fn validate(&self) -> Result<(), &'static str> {
        match self.event {
            OrderEvent::Opened => match &self.definition {
                Some(d)
                    if d.stock >= 0
                        && d.per_user_limit > 0
                        && (1..=MAX_BUCKETS).contains(&d.buckets)
                        && d.price_cents.is_none_or(|p| p > 0)
                        && !self.sale.is_empty() =>
                {
                    Ok(())
                }
                _ => Err("invalid opened event: missing or bad sale definition"),
            },
            _ if self.units == 0 || self.order_id.is_empty() => {
                Err("invalid order: empty id or zero units")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(buckets: u32) -> SaleDefinition {
        SaleDefinition {
            stock: 10,
            per_user_limit: 1,
            start_ms: 5,
            end_ms: 9,
            buckets,
            price_cents: None,
        }
    }

    #[test]
    fn buckets_travel_only_when_not_one_and_default_to_one() {
        let one = OrderMessage::opened("s", def(1), 7);
        let json = serde_json::to_string(&one).unwrap();
        assert!(!json.contains("buckets"), "{json}");
        assert_eq!(
            json,
            r#"{"event":"opened","order_id":"","sale":"s","user":0,"units":0,"per_user_limit":0,"at_ms":7,"definition":{"stock":10,"per_user_limit":1,"start_ms":5,"end_ms":9}}"#,
            "a single-bucket sale's event is unchanged"
        );
        // An event from before buckets: one bucket.
        let back: OrderMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back.definition, Some(def(1)));
        let four = OrderMessage::opened("s", def(4), 7);
        let json = serde_json::to_string(&four).unwrap();
        assert!(json.contains(r#""buckets":4"#), "{json}");
        assert_eq!(serde_json::from_str::<OrderMessage>(&json).unwrap(), four);
        // Unknown fields are still refused.
        let odd = json.replace(r#""buckets":4"#, r#""buckets":4,"shards":2"#);
        assert!(serde_json::from_str::<OrderMessage>(&odd).is_err());
    }

    #[test]
    fn an_opened_event_needs_a_bucket_count_in_range() {
        assert!(OrderMessage::opened("s", def(1), 0).validate().is_ok());
        assert!(OrderMessage::opened("s", def(64), 0).validate().is_ok());
        assert!(OrderMessage::opened("s", def(0), 0).validate().is_err());
        assert!(OrderMessage::opened("s", def(65), 0).validate().is_err());
        let priced = |p| SaleDefinition {
            price_cents: Some(p),
            ..def(1)
        };
        assert!(OrderMessage::opened("s", priced(1), 0).validate().is_ok());
        assert!(OrderMessage::opened("s", priced(0), 0).validate().is_err());
        let json = serde_json::to_string(&OrderMessage::opened("s", priced(1999), 0)).unwrap();
        assert!(json.contains(r#""price_cents":1999"#), "{json}");
    }
}
