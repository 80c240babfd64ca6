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
}

impl OrderMessage {
    pub fn key(&self) -> String {
        self.user.to_string()
    }
}
