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
//! - [`ledger`]: a sale's stock ledger (conserved, bucket by bucket), and moves between
//!   buckets whose half a master lost, redone.
//! - [`reconcile`]: orders from PostgreSQL and the topic merged, put back into a Redis
//!   that lost them.
//! - [`tls`]: `rediss://` (the TLS material of the process's connections) and the
//!   password setting put into a URL.
//! - [`trust`]: which Redis masters are known to hold every acknowledged order.
//! - [`error`]: [`StockError`]; [`conn`]: the transport and connecting; [`types`]: the
//!   domain types; [`replies`]: reading script replies.

pub mod buckets;
pub mod cluster;
mod conn;
pub mod control;
mod error;
pub mod keys;
pub mod ledger;
pub mod reconcile;
mod replies;
pub mod scripts;
pub mod tls;
pub mod trust;
mod types;

pub(crate) use conn::with_timeouts;
pub use conn::{connect, connect_single, Conn, Exec};
pub use error::{map_redis_error, StockError};
pub(crate) use replies::{int_at, int_of, outcome, server_error, string_at, string_of};
pub use types::*;

use redis::Value;
use scripts::Script;
use seckill_common::now_ms;
use std::time::Duration;
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
        self.create_plain_sale(sale, spec, None)
    }

    pub(crate) fn create_plain_sale(
        &mut self,
        sale: &str,
        spec: &SaleSpec,
        price_cents: Option<i64>,
    ) -> Result<(), StockError> {
        keys::check_sale_id(sale)?;
        spec.validate()?;
        let k = keys::SaleKeys::new(sale);
        let mut args: Vec<String> = [spec.stock, spec.per_user_limit, spec.start_ms, spec.end_ms]
            .map(|v| v.to_string())
            .to_vec();
        args.extend(price_cents.map(|p| p.to_string()));
        let reply = self.run(&scripts::CREATE, &k.all(), &args)?;
        outcome(reply)?;
        self.mark_store()
    }

    /// The price a payment for one unit of `sale` must carry (cents), if one was set
    /// (`create_priced_sale`, or [`Stock::set_price`] after a restore). `NoSale` if the
    /// sale is not in Redis.
    pub fn price(&mut self, sale: &str) -> Result<Option<i64>, StockError> {
        keys::check_sale_id(sale)?;
        let meta = keys::SaleKeys::new(sale).meta;
        match self
            .conn
            .exec(redis::cmd("HMGET").arg(&meta).arg("initial").arg("price"))?
        {
            Value::Array(v) if v.len() == 2 => match (&v[0], &v[1]) {
                (Value::Nil, _) => Err(StockError::NoSale),
                (_, Value::Nil) => Ok(None),
                (_, p) => Ok(Some(int_of(p)?)),
            },
            v => Err(StockError::BadReply(format!("HMGET price: {v:?}"))),
        }
    }

    /// Set `sale`'s price (cents): a restore writes it again from the sale's definition.
    pub fn set_price(&mut self, sale: &str, price_cents: i64) -> Result<(), StockError> {
        keys::check_sale_id(sale)?;
        check_price(price_cents)?;
        let meta = keys::SaleKeys::new(sale).meta;
        outcome(self.run(
            &scripts::PRICE,
            &[meta.as_str()],
            &[price_cents.to_string()],
        )?)?;
        Ok(())
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

    /// Release an order that was never acknowledged (its message certainly was not
    /// stored), bought with `token` at `reserved_at_ms` (the purchase's reply); returns
    /// the buyer. Refused with [`StockError::Replayed`] when the order may stand: a retry
    /// of that token was answered with it (on any gateway; it may have acknowledged it),
    /// the token is gone (expired: a retry cannot be ruled out), or the reservation is
    /// not the purchase's own (a reconcile put it back, which it does only for
    /// acknowledged orders).
    pub fn release_unacknowledged(
        &mut self,
        order_id: &str,
        token: &str,
        reserved_at_ms: i64,
    ) -> Result<u64, StockError> {
        let (sale, seq) = keys::split_order_id(order_id).ok_or(StockError::NoOrder)?;
        // The order was made in the buyer's home bucket, where its token lives.
        let k = self.order_keys(sale, seq)?;
        let tk = k.token(token);
        let mut keys = k.settle_keys().to_vec();
        keys.push(&tk);
        let reply = self.run(
            &scripts::SETTLE,
            &keys,
            &[
                "unacknowledged".to_string(),
                order_id.to_string(),
                reserved_at_ms.to_string(),
            ],
        )?;
        let Value::Array(mut items) = reply else {
            return Err(StockError::BadReply("settle: expected an array".into()));
        };
        let item = items
            .pop()
            .ok_or_else(|| StockError::BadReply("settle: no outcome".into()))?;
        let rest = outcome(item)?;
        string_at(&rest, 0)?
            .parse()
            .map_err(|_| StockError::BadReply("buyer is not a number".into()))
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
                let reply = self.run(&scripts::SETTLE, &k.settle_keys(), &args)?;
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

    /// Record that payment `payment_id` paid `order_id` (after `settle` said paid, or
    /// already paid): true when it is that order's payment — the first recorded, or the
    /// same again (a provider's retry) — false when another payment paid it first (this
    /// one is owed back).
    pub fn record_payment(&mut self, order_id: &str, payment_id: &str) -> Result<bool, StockError> {
        let (sale, seq) = keys::split_order_id(order_id).ok_or(StockError::NoOrder)?;
        let key = self.order_keys(sale, seq)?.payments();
        if int_of(
            &self
                .conn
                .exec(redis::cmd("HSETNX").arg(&key).arg(order_id).arg(payment_id))?,
        )? == 1
        {
            return Ok(true);
        }
        let first = self.conn.exec(redis::cmd("HGET").arg(&key).arg(order_id))?;
        Ok(first == Value::BulkString(payment_id.as_bytes().to_vec()))
    }

    /// Record payment `payment_id` for `order_id` as a refund due: true the first time
    /// (the caller audits it), false when it was recorded already (a retried callback).
    pub fn record_refund(&mut self, order_id: &str, payment_id: &str) -> Result<bool, StockError> {
        let (sale, seq) = keys::split_order_id(order_id).ok_or(StockError::NoOrder)?;
        let key = self.order_keys(sale, seq)?.refunds();
        Ok(int_of(
            &self
                .conn
                .exec(redis::cmd("HSETNX").arg(&key).arg(payment_id).arg(order_id))?,
        )? == 1)
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

/// Orders settled by one script call (`Stock::settle_many`).
const SETTLE_PAGE: usize = 1000;
