//! The crate's one error type: business outcomes and faults alike, named for what
//! happened, and the mapping from the `redis` client's errors.

/// Everything that can go wrong, business outcomes and faults alike, named for what
/// happened. [`StockError::is_fault`] tells the two apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    #[error("no such sale")]
    NoSale,
    #[error("the sale already exists")]
    SaleExists,
    #[error("the sale is paused")]
    Paused,
    #[error("the sale has not started (starts at {start_ms} ms)")]
    NotStarted { start_ms: i64 },
    #[error("the sale has ended")]
    Ended,
    #[error("sold out")]
    SoldOut,
    #[error("this user already bought the per-user limit")]
    AlreadyBought,
    #[error("no such token (never issued, or long expired)")]
    TokenInvalid,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token belongs to another user")]
    TokenNotYours,
    #[error("the token was already used")]
    TokenUsed,
    #[error("too many live purchase tokens for this buyer")]
    TooManyTokens,
    #[error("no such order")]
    NoOrder,
    #[error("the order was already released")]
    AlreadyReleased,
    #[error("the order was already paid")]
    AlreadyPaid,
    #[error("a retry of the order's token was answered with it; it may have been acknowledged")]
    Replayed,
    #[error("restoring would oversell: {held} held + {sold} sold exceed the initial stock")]
    WouldOversell { held: i64, sold: i64 },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis call timed out")]
    Timeout,
    #[error("unexpected reply from redis: {0}")]
    BadReply(String),
    /// The TLS material of `rediss://` connections is missing or unusable.
    #[error("redis TLS: {0}")]
    Tls(String),
}

impl StockError {
    /// True for infrastructure faults (Redis down, slow, or confused), false for the
    /// business answers a client must be told.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            StockError::Redis(_)
                | StockError::Timeout
                | StockError::BadReply(_)
                | StockError::Tls(_)
        )
    }
}

/// Map a client error to ours; NOSCRIPT keeps its code so the caller can reload.
pub fn map_redis_error(e: redis::RedisError) -> StockError {
    if e.is_timeout() {
        StockError::Timeout
    } else {
        StockError::Redis(match e.code() {
            Some(code) => format!("{code} {}", e.detail().unwrap_or_default()),
            None => e.to_string(),
        })
    }
}
