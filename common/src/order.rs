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

/// A sale's definition, carried by `opened` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleDefinition {
    pub stock: i64,
    pub per_user_limit: i64,
    pub start_ms: i64,
    pub end_ms: i64,
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
                Some(d) if d.stock >= 0 && d.per_user_limit > 0 && !self.sale.is_empty() => Ok(()),
                _ => Err("invalid opened event: missing or bad sale definition"),
            },
            _ if self.units == 0 || self.order_id.is_empty() => {
                Err("invalid order: empty id or zero units")
            }
            _ => Ok(()),
        }
    }
}
