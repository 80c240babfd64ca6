//! The domain types the API takes and returns: a sale's definition and state, tokens,
//! purchases, settlements, order states, restored orders.

use crate::StockError;

/// A sale's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleSpec {
    pub stock: i64,
    pub per_user_limit: i64,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// Most units of a sale, and most per buyer: the scripts count in Lua numbers
/// (doubles), so every count and sum stays an exact integer far below 2^53.
pub const MAX_UNITS: i64 = 1_000_000_000;
/// Latest start or end accepted (ms since the epoch; the year 5138).
pub const MAX_TIME_MS: i64 = 100_000_000_000_000;

/// Highest price accepted, in cents (ten million in the currency's units).
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000;

/// A price must be 1..=MAX_PRICE_CENTS cents: a sale is never given away by a payment of 0.
pub fn check_price(cents: i64) -> Result<(), StockError> {
    if (1..=MAX_PRICE_CENTS).contains(&cents) {
        Ok(())
    } else {
        Err(StockError::Invalid(format!(
            "price_cents must be 1..={MAX_PRICE_CENTS}"
        )))
    }
}

impl SaleSpec {
    /// Stock 0..=MAX_UNITS, per-user limit 1..=MAX_UNITS, 0 <= start < end <= MAX_TIME_MS.
    pub fn validate(&self) -> Result<(), StockError> {
        if !(0..=MAX_UNITS).contains(&self.stock)
            || !(1..=MAX_UNITS).contains(&self.per_user_limit)
            || self.start_ms < 0
            || self.end_ms <= self.start_ms
            || self.end_ms > MAX_TIME_MS
        {
            return Err(StockError::Invalid(format!(
                "stock must be 0..={MAX_UNITS}, per_user_limit 1..={MAX_UNITS}, and 0 <= start_ms < end_ms <= {MAX_TIME_MS}"
            )));
        }
        Ok(())
    }
}

/// A consistent snapshot of a sale, read in one script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleState {
    pub initial: i64,
    pub per_user_limit: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub paused: bool,
    /// Units still for sale.
    pub remaining: i64,
    /// Units paid for.
    pub sold: i64,
    /// Units reserved by orders that are neither paid nor released.
    pub held: i64,
    /// Redis's clock when the snapshot was taken.
    pub now_ms: i64,
}

impl SaleState {
    /// remaining + held + sold = initial.
    pub fn conserved(&self) -> bool {
        self.remaining + self.held + self.sold == self.initial && self.remaining >= 0
    }

    pub fn phase(&self) -> Phase {
        if self.now_ms < self.start_ms {
            Phase::NotStarted
        } else if self.now_ms >= self.end_ms {
            Phase::Ended
        } else if self.paused {
            Phase::Paused
        } else if self.remaining <= 0 {
            Phase::SoldOut
        } else {
            Phase::Open
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    NotStarted,
    Open,
    Paused,
    SoldOut,
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::NotStarted => "not_started",
            Phase::Open => "open",
            Phase::Paused => "paused",
            Phase::SoldOut => "sold_out",
            Phase::Ended => "ended",
        }
    }
}

/// An issued token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub expires_ms: i64,
}

/// An accepted purchase: the reservation is recorded in Redis under `order_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub order_id: String,
    pub remaining: i64,
    /// The sale's per-user limit (the database enforces one order per buyer when it is 1).
    pub per_user_limit: i64,
    /// A retry with a token that had already bought: the same order, nothing changed.
    pub replayed: bool,
    /// When Redis reserved the unit (its clock, ms): the order's one expiry clock, the
    /// same on every delivery of its message. 0 for a replayed order already paid.
    pub reserved_at_ms: i64,
}

/// How a reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Cancelled: the unit goes back to the sale and the buyer may buy again.
    Released,
    /// Paid: the unit counts as sold.
    Paid,
}

/// Where an order stands in Redis, and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Stock is held for it; neither paid nor released yet.
    Reserved,
    Paid,
    /// Cancelled; its unit went back to the sale.
    Released,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Reserved => "reserved",
            OrderState::Paid => "paid",
            OrderState::Released => "cancelled",
        }
    }
}

/// The typed API over the scripts, on any transport.
/// An order as known outside Redis, for [`Stock::restore_sale`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredOrder {
    pub order_id: String,
    pub user: u64,
    pub status: RestoredStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoredStatus {
    Reserved,
    Paid,
    Cancelled,
}

impl RestoredStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoredStatus::Reserved => "reserved",
            RestoredStatus::Paid => "paid",
            RestoredStatus::Cancelled => "cancelled",
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub remaining: i64,
    pub held: i64,
    pub sold: i64,
    pub next_seq: u64,
}
