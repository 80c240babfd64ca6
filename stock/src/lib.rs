//! The Redis side of a flash sale. Only this crate knows Redis keys.
//!
//! - [`keys`]: the key schema; every key of one sale shares the hash tag `{<sale>}`, so
//!   the scripts run unchanged on Redis Cluster.
//! - [`scripts`]: the Lua scripts, loaded once and called by SHA (reloaded on NOSCRIPT).
//! - [`Stock`]: the typed API over the scripts — create a sale, issue a token, purchase,
//!   settle (release or pay) a reservation, read the sale's state.
//! - [`control`]: the control plane — store epoch, central switches, audit stream.
//! - [`Exec`]: the one-command transport the API runs on. A blocking [`Conn`] (one
//!   Redis, or a Redis Cluster through the `redis` crate's cluster client: [`connect`]
//!   picks by URL) implements it for tools and tests; the gateway brings its own
//!   pipelined, coroutine-friendly connection.
//! - [`cluster`]: key slots (CRC16 with hash tags) and the `redis+cluster://` URL.
//! - [`buckets`]: a hot sale's stock split over buckets on several masters, and the
//!   journaled moves between them.
//! - [`reconcile`]: orders from PostgreSQL and the topic merged, put back into a Redis
//!   that lost them.
//! - [`trust`]: which Redis masters are known to hold every acknowledged order.

pub mod buckets;
pub mod cluster;
pub mod control;
pub mod keys;
pub mod reconcile;
pub mod scripts;
pub mod trust;

use redis::Value;
use scripts::Script;
use seckill_common::now_ms;
use std::time::Duration;

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
}

impl StockError {
    /// True for infrastructure faults (Redis down, slow, or confused), false for the
    /// business answers a client must be told.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            StockError::Redis(_) | StockError::Timeout | StockError::BadReply(_)
        )
    }
}

/// One command, one reply. Error replies may come back either as `Err` or as
/// `Ok(Value::ServerError)`; both are handled.
pub trait Exec {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<Value, StockError>;

    /// `SCRIPT LOAD body` where a script on `key` runs (after NOSCRIPT). On one Redis
    /// that is the one server; a cluster transport loads it on the master of `key`'s
    /// slot, the node that answered NOSCRIPT.
    fn load_script(&mut self, body: &str, key: Option<&str>) -> Result<Value, StockError> {
        let _ = key;
        self.exec(redis::cmd("SCRIPT").arg("LOAD").arg(body))
    }
}

impl Exec for redis::Connection {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<Value, StockError> {
        redis::ConnectionLike::req_command(self, cmd).map_err(map_redis_error)
    }
}

impl Exec for redis::cluster::ClusterConnection {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<Value, StockError> {
        redis::ConnectionLike::req_command(self, cmd).map_err(map_redis_error)
    }

    fn load_script(&mut self, body: &str, key: Option<&str>) -> Result<Value, StockError> {
        match key {
            Some(key) => cluster::load_script_for_key(self, body, key),
            None => self.exec(redis::cmd("SCRIPT").arg("LOAD").arg(body)),
        }
    }
}

/// A blocking connection for tools and tests: one Redis, or a Redis Cluster.
pub enum Conn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl Exec for Conn {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<Value, StockError> {
        match self {
            Conn::Single(c) => c.exec(cmd),
            Conn::Cluster(c) => c.exec(cmd),
        }
    }

    fn load_script(&mut self, body: &str, key: Option<&str>) -> Result<Value, StockError> {
        match self {
            Conn::Single(c) => c.load_script(body, key),
            Conn::Cluster(c) => c.load_script(body, key),
        }
    }
}

/// Pipelines and transactions run on either: a cluster connection sends a pipeline to
/// the node of its first command's key (MULTI included), so a pipeline must stay in
/// one slot there.
impl redis::ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        match self {
            Conn::Single(c) => c.req_command(cmd),
            Conn::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Conn::Single(c) => c.check_connection(),
            Conn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Conn::Single(c) => c.is_open(),
            Conn::Cluster(c) => c.is_open(),
        }
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

/// A blocking connection with read/write timeouts, for tools and tests: to a Redis
/// Cluster when `url` is `redis+cluster://host:port,…`, else to one Redis.
pub fn connect(url: &str, timeout: Duration) -> Result<Conn, StockError> {
    if cluster::is_cluster_url(url) {
        return cluster::connect(url, timeout).map(|c| Conn::Cluster(Box::new(c)));
    }
    connect_single(url, timeout).map(Conn::Single)
}

/// A blocking connection to one Redis (`redis://…`).
pub fn connect_single(url: &str, timeout: Duration) -> Result<redis::Connection, StockError> {
    let client = redis::Client::open(url).map_err(map_redis_error)?;
    let conn = client
        .get_connection_with_timeout(timeout)
        .map_err(map_redis_error)?;
    with_timeouts(conn, timeout)
}

/// A blocking connection whose reads and writes can be bounded.
pub(crate) trait Bounded: Sized {
    fn bound(&self, timeout: Duration) -> redis::RedisResult<()>;
}

impl Bounded for redis::Connection {
    fn bound(&self, timeout: Duration) -> redis::RedisResult<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl Bounded for redis::cluster::ClusterConnection {
    fn bound(&self, timeout: Duration) -> redis::RedisResult<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

/// Every read and write on `conn` bounded by `timeout`.
pub(crate) fn with_timeouts<C: Bounded>(conn: C, timeout: Duration) -> Result<C, StockError> {
    conn.bound(timeout).map_err(map_redis_error)?;
    Ok(conn)
}

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

pub struct Stock<C: Exec> {
    conn: C,
}

impl<C: Exec> Stock<C> {
    pub fn new(conn: C) -> Self {
        Stock { conn }
    }

    pub fn conn_mut(&mut self) -> &mut C {
        &mut self.conn
    }

    pub fn create_sale(&mut self, sale: &str, spec: &SaleSpec) -> Result<(), StockError> {
        keys::check_sale_id(sale)?;
        spec.validate()?;
        let k = keys::SaleKeys::new(sale);
        let args =
            [spec.stock, spec.per_user_limit, spec.start_ms, spec.end_ms].map(|v| v.to_string());
        let reply = self.run(&scripts::CREATE, &k.all(), &args)?;
        outcome(reply)?;
        self.mark_store()
    }

    /// One round trip (the gateway's health probe).
    pub fn ping(&mut self) -> Result<(), StockError> {
        match self.conn.exec(&redis::cmd("PING"))? {
            Value::ServerError(e) => Err(StockError::Redis(format!("{e:?}"))),
            _ => Ok(()),
        }
    }

    /// The store's epoch: set when the first sale is created (or a lost store rebuilt)
    /// and gone only when Redis lost its data. Gateways that saw an epoch and then see
    /// none stop selling until the store is rebuilt.
    pub fn store_epoch(&mut self) -> Result<Option<String>, StockError> {
        match self.conn.exec(redis::cmd("GET").arg(keys::EPOCH))? {
            Value::Nil => Ok(None),
            v => string_of(&v).map(Some),
        }
    }

    /// Set the epoch unless one is set (so creating a sale never hides a data loss
    /// from gateways that already saw the old epoch: theirs differs).
    pub fn mark_store(&mut self) -> Result<(), StockError> {
        let epoch = format!("{}-{:08x}", now_ms(), rand::random::<u32>());
        self.conn
            .exec(redis::cmd("SET").arg(keys::EPOCH).arg(epoch).arg("NX"))
            .map(|_| ())
    }

    /// Rebuild a sale lost with Redis's data from its definition and every order known
    /// elsewhere. Refuses if the sale exists, or if the orders exceed the stock.
    pub fn restore_sale(
        &mut self,
        sale: &str,
        spec: &SaleSpec,
        paused: bool,
        orders: &[RestoredOrder],
    ) -> Result<Restored, StockError> {
        keys::check_sale_id(sale)?;
        let mut max_seq = 0u64;
        let mut args = vec![
            spec.stock.to_string(),
            spec.per_user_limit.to_string(),
            spec.start_ms.to_string(),
            spec.end_ms.to_string(),
            (paused as u8).to_string(),
        ];
        let mut triples = Vec::with_capacity(orders.len() * 3);
        for o in orders {
            let seq = keys::seq_in_sale(sale, &o.order_id)?;
            max_seq = max_seq.max(seq);
            triples.extend([
                o.order_id.clone(),
                o.user.to_string(),
                o.status.as_str().to_string(),
            ]);
        }
        args.push(max_seq.to_string());
        args.extend(triples);
        let k = keys::SaleKeys::new(sale);
        let rest = outcome(self.run(&scripts::RESTORE, &k.all(), &args)?)?;
        Ok(Restored {
            remaining: int_at(&rest, 0)?,
            held: int_at(&rest, 1)?,
            sold: int_at(&rest, 2)?,
            next_seq: int_at(&rest, 3)?.max(0) as u64,
        })
    }

    /// Issue a single-use token bound to (sale, user), valid for `ttl`.
    pub fn issue_token(
        &mut self,
        sale: &str,
        user: u64,
        ttl: Duration,
    ) -> Result<Token, StockError> {
        self.issue_token_capped(sale, user, ttl, 0)
    }

    /// `issue_token`, refused with `TooManyTokens` while the buyer holds `max_live`
    /// unexpired, unspent tokens of this sale (0: no cap).
    pub fn issue_token_capped(
        &mut self,
        sale: &str,
        user: u64,
        ttl: Duration,
        max_live: u32,
    ) -> Result<Token, StockError> {
        keys::check_sale_id(sale)?;
        let buckets = self.buckets_of(sale)?;
        if buckets > 1 {
            return self.token_bucketed(sale, buckets, user, ttl, max_live);
        }
        let token = keys::new_token();
        let k = keys::SaleKeys::new(sale);
        let ttl_ms = ttl.as_millis().max(1).to_string();
        let reply = self.run(
            &scripts::TOKEN,
            &[
                &k.meta,
                &k.stock,
                &k.buyers,
                &k.token(&token),
                &k.user_tokens(user),
            ],
            &[
                user.to_string(),
                ttl_ms,
                max_live.to_string(),
                "0".to_string(),
                "SOLD_OUT".to_string(),
            ],
        )?;
        let rest = outcome(reply)?;
        Ok(Token {
            token,
            expires_ms: int_at(&rest, 0)?,
        })
    }

    /// Buy one unit with a token: atomically check the token, the per-user limit and
    /// the stock, then deduct, record buyer and reservation, and consume the token. A
    /// retry with a token that already bought returns that same order while it stands
    /// (`replayed`), so a client whose reply was lost can learn its order id.
    pub fn purchase(&mut self, sale: &str, user: u64, token: &str) -> Result<Purchase, StockError> {
        keys::check_sale_id(sale)?;
        if !keys::token_well_formed(token) {
            return Err(StockError::TokenInvalid);
        }
        let buckets = self.buckets_of(sale)?;
        if buckets > 1 {
            return self.purchase_bucketed(sale, buckets, user, token);
        }
        let k = keys::SaleKeys::new(sale);
        let reply = self.run(
            &scripts::PURCHASE,
            &[
                &k.meta,
                &k.stock,
                &k.buyers,
                &k.reservations,
                &k.token(token),
                &k.seq,
                &k.reserved_at,
                &k.settled,
                &k.user_tokens(user),
            ],
            &[
                user.to_string(),
                sale.to_string(),
                "1".to_string(),
                "SOLD_OUT".to_string(),
            ],
        )?;
        let rest = outcome(reply)?;
        Ok(Purchase {
            order_id: string_at(&rest, 0)?,
            remaining: int_at(&rest, 1)?,
            per_user_limit: int_at(&rest, 2)?,
            replayed: int_at(&rest, 3)? == 1,
            reserved_at_ms: int_at(&rest, 4)?,
        })
    }

    /// End a reservation exactly once; returns the buyer. A second settlement of the
    /// same order answers `AlreadyReleased` or `AlreadyPaid` and changes nothing.
    pub fn settle(&mut self, order_id: &str, how: Settlement) -> Result<u64, StockError> {
        let ids = [order_id.to_string()];
        self.settle_many(&ids, how)?
            .pop()
            .unwrap_or_else(|| Err(StockError::BadReply("no settle outcome".into())))
    }

    /// Settle many reservations, one outcome (the buyer, or why not) per id in order.
    /// Orders of one sale (one bucket) are settled by one script call per
    /// `SETTLE_PAGE` ids: the payment-window scan settles thousands per round trip.
    /// The outer error is a fault (Redis unreachable, a bad reply): ids of calls made
    /// before it may have been settled, which a retry then finds "already" settled.
    pub fn settle_many(
        &mut self,
        order_ids: &[String],
        how: Settlement,
    ) -> Result<Vec<Result<u64, StockError>>, StockError> {
        let how = match how {
            Settlement::Released => "released",
            Settlement::Paid => "paid",
        };
        let mut out: Vec<Result<u64, StockError>> = Vec::with_capacity(order_ids.len());
        // (sale, bucket keys' stock key) -> (keys, indexes into order_ids)
        let mut groups: std::collections::BTreeMap<String, (keys::SaleKeys, Vec<usize>)> =
            std::collections::BTreeMap::new();
        for (i, id) in order_ids.iter().enumerate() {
            out.push(Err(StockError::NoOrder));
            let Some((sale, seq)) = keys::split_order_id(id) else {
                continue;
            };
            let k = match self.order_keys(sale, seq) {
                Ok(k) => k,
                Err(e) if !e.is_fault() => {
                    out[i] = Err(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            groups
                .entry(k.stock.clone())
                .or_insert_with(|| (k, Vec::new()))
                .1
                .push(i);
        }
        for (k, idx) in groups.values() {
            for page in idx.chunks(SETTLE_PAGE) {
                let mut args = Vec::with_capacity(page.len() + 1);
                args.push(how.to_string());
                args.extend(page.iter().map(|&i| order_ids[i].clone()));
                let reply = self.run(
                    &scripts::SETTLE,
                    &[
                        &k.stock,
                        &k.sold,
                        &k.buyers,
                        &k.reservations,
                        &k.settled,
                        &k.reserved_at,
                    ],
                    &args,
                )?;
                let Value::Array(items) = reply else {
                    return Err(StockError::BadReply("settle: expected an array".into()));
                };
                if items.len() != page.len() {
                    return Err(StockError::BadReply("settle: one outcome per order".into()));
                }
                for (&i, item) in page.iter().zip(items) {
                    out[i] = outcome(item).and_then(|rest| {
                        string_at(&rest, 0)?
                            .parse()
                            .map_err(|_| StockError::BadReply("buyer is not a number".into()))
                    });
                }
            }
        }
        Ok(out)
    }

    /// One page of the sale's reservations older than `age` (by Redis's clock), from
    /// `cursor` (start with 0); returns the next cursor (0 when done) and the order ids.
    /// Pages are bounded by `count` hash entries looked at.
    pub fn expired_reservations(
        &mut self,
        sale: &str,
        age: Duration,
        cursor: u64,
        count: u32,
    ) -> Result<(u64, Vec<String>), StockError> {
        keys::check_sale_id(sale)?;
        let buckets = self.buckets_of(sale)?;
        if buckets > 1 {
            return self.expired_bucketed(sale, buckets, age, cursor, count);
        }
        let k = keys::SaleKeys::new(sale);
        let args = [
            age.as_millis().to_string(),
            cursor.to_string(),
            count.max(1).to_string(),
        ];
        let rest = outcome(self.run(&scripts::EXPIRED, &[&k.reserved_at], &args)?)?;
        let next = string_at(&rest, 0)?
            .parse()
            .map_err(|_| StockError::BadReply("cursor is not a number".into()))?;
        let ids = rest[1..]
            .iter()
            .map(string_of)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((next, ids))
    }

    /// Where an order stands, and its buyer.
    pub fn order(&mut self, order_id: &str) -> Result<(OrderState, u64), StockError> {
        let (sale, seq) = keys::split_order_id(order_id).ok_or(StockError::NoOrder)?;
        let k = self.order_keys(sale, seq)?;
        let rest = outcome(self.run(
            &scripts::ORDER,
            &[&k.reservations, &k.settled],
            &[order_id.to_string()],
        )?)?;
        let state = match string_at(&rest, 0)?.as_str() {
            "reserved" => OrderState::Reserved,
            "paid" => OrderState::Paid,
            "released" => OrderState::Released,
            other => return Err(StockError::BadReply(format!("order state {other}"))),
        };
        let user = string_at(&rest, 1)?
            .parse()
            .map_err(|_| StockError::BadReply("buyer is not a number".into()))?;
        Ok((state, user))
    }

    /// For a bucketed sale: the buckets summed (remaining includes units in flight
    /// between buckets), read bucket by bucket.
    pub fn state(&mut self, sale: &str) -> Result<SaleState, StockError> {
        keys::check_sale_id(sale)?;
        let buckets = self.buckets_of(sale)?;
        if buckets > 1 {
            return self.state_bucketed(sale, buckets);
        }
        let k = keys::SaleKeys::new(sale);
        let rest = outcome(self.run(
            &scripts::STATE,
            &[&k.meta, &k.stock, &k.sold, &k.reservations],
            &[],
        )?)?;
        Ok(SaleState {
            initial: int_at(&rest, 0)?,
            per_user_limit: int_at(&rest, 1)?,
            start_ms: int_at(&rest, 2)?,
            end_ms: int_at(&rest, 3)?,
            paused: int_at(&rest, 4)? == 1,
            remaining: int_at(&rest, 5)?,
            sold: int_at(&rest, 6)?,
            held: int_at(&rest, 7)?,
            now_ms: int_at(&rest, 8)?,
        })
    }

    pub fn set_paused(&mut self, sale: &str, paused: bool) -> Result<(), StockError> {
        keys::check_sale_id(sale)?;
        let buckets = self.buckets_of(sale)?;
        if buckets > 1 {
            return self.pause_bucketed(sale, buckets, paused);
        }
        let k = keys::SaleKeys::new(sale);
        outcome(self.run(
            &scripts::PAUSE,
            &[&k.meta],
            &[if paused { "1" } else { "0" }.to_string()],
        )?)
        .map(|_| ())
    }

    /// The buyers of a sale and how many units each holds or bought.
    pub fn buyers(&mut self, sale: &str) -> Result<Vec<(u64, i64)>, StockError> {
        keys::check_sale_id(sale)?;
        let buckets = self.buckets_of(sale)?;
        if buckets > 1 {
            return self.buyers_bucketed(sale, buckets);
        }
        self.buyers_at(&keys::SaleKeys::new(sale))
    }

    fn buyers_at(&mut self, k: &keys::SaleKeys) -> Result<Vec<(u64, i64)>, StockError> {
        let v = self.conn.exec(redis::cmd("HGETALL").arg(&k.buyers))?;
        let items = match v {
            Value::Array(items) => items,
            Value::Map(pairs) => pairs.into_iter().flat_map(|(a, b)| [a, b]).collect(),
            other => return Err(StockError::BadReply(format!("HGETALL: {other:?}"))),
        };
        items
            .chunks(2)
            .map(|p| {
                let user = string_of(&p[0])?
                    .parse()
                    .map_err(|_| StockError::BadReply("buyer id".into()))?;
                Ok((user, int_of(p.get(1).unwrap_or(&Value::Nil))?))
            })
            .collect()
    }

    /// EVALSHA, loading the script on NOSCRIPT (a restarted or flushed Redis).
    fn run(
        &mut self,
        script: &Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<Value, StockError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.sha()).arg(keys.len()).arg(keys).arg(args);
        match self.conn.exec(&cmd) {
            Ok(Value::ServerError(e)) if e.code() == "NOSCRIPT" => {}
            Err(StockError::Redis(msg)) if msg.starts_with("NOSCRIPT") => {}
            other => return server_error(other?),
        }
        let loaded = self
            .conn
            .load_script(script.body(), keys.first().copied())?;
        server_error(loaded)?;
        server_error(self.conn.exec(&cmd)?)
    }
}

fn server_error(v: Value) -> Result<Value, StockError> {
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
/// Orders settled by one script call (`Stock::settle_many`).
const SETTLE_PAGE: usize = 1000;

fn outcome(v: Value) -> Result<Vec<Value>, StockError> {
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

fn string_of(v: &Value) -> Result<String, StockError> {
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

fn int_of(v: &Value) -> Result<i64, StockError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => string_of(other)?
            .parse()
            .map_err(|_| StockError::BadReply(format!("expected an integer, got {other:?}"))),
    }
}

fn string_at(rest: &[Value], i: usize) -> Result<String, StockError> {
    string_of(
        rest.get(i)
            .ok_or_else(|| StockError::BadReply("short reply".into()))?,
    )
}

fn int_at(rest: &[Value], i: usize) -> Result<i64, StockError> {
    int_of(
        rest.get(i)
            .ok_or_else(|| StockError::BadReply("short reply".into()))?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
