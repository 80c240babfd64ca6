//! The order message the gateway produces and the order-writer consumes.
//! Topic `orders`, key = the buyer's user id (one user's events stay ordered),
//! value = this struct as JSON.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderMessage {
    /// `<sale>-<sequence>`, assigned by the purchase script; unique across gateways.
    pub order_id: String,
    pub sale: String,
    pub user: u64,
    pub units: u32,
    /// Gateway clock when the purchase was accepted (ms since the Unix epoch).
    pub accepted_ms: i64,
}

impl OrderMessage {
    pub fn key(&self) -> String {
        self.user.to_string()
    }
}
