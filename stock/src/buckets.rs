//! Stock buckets: a sale created with `buckets` = B > 1 splits its stock over B
//! buckets, each under its own hash tag `{<sale>#<b>}` ([`keys::SaleKeys::bucket`]), so
//! on Redis Cluster a hot sale spreads over the masters. B = 1 (the default) is the
//! plain layout and scripts, untouched.
//!
//! - The sale's `sk:{S}:meta` keeps the definition and `buckets`; each bucket has a copy
//!   of the definition in its own meta, its stock share, `sold`, `buyers`, `res`,
//!   `res_at`, `settled`, `seq`, tokens, and the transfer journal (`xout`, `xin`).
//! - A buyer's home bucket ([`keys::home_bucket`], by user id) holds the buyer's record,
//!   tokens and reservations: token and purchase stay one script in one slot, so the
//!   per-user limit is as atomic as with one bucket.
//! - Order ids stay `<sale>-<seq>`: bucket b's sequence is `base + b + k·B` with `base`
//!   a multiple of B, so `seq mod B` is the order's bucket ([`keys::order_bucket`]);
//!   settling (paid, or released: the unit goes back to that bucket) and order lookups
//!   run the single-bucket scripts on that bucket's keys.
//! - An empty home bucket never means "sold out" by itself: the purchase script answers
//!   `EMPTY`, and the caller moves units in from the fullest other bucket, a batch of
//!   up to max(1, remaining / B), then retries. A move is a *withdraw* script on the
//!   source (takes the units and journals `id → dest|count` in the source's slot, one
//!   step) and a *deposit* script on the destination (records `id → source|count` in the
//!   destination's slot and adds the units, once: a replay is a no-op), then the journal
//!   entry moves to the source's `xdone` (both halves stay, for [`crate::ledger`]). A crash between the two leaves the units journaled (counted in flight);
//!   [`Stock::recover_transfers`] — run by every mover, by the order-writer's sweep
//!   and by `rebuild-stock` — deposits them, exactly once.
//! - "Sold out" only when every bucket is empty and no transfer is in flight, seen by
//!   two scans in a row.
//! - Conservation: Σ bucket stock + units in flight + held + sold = initial.
//!
//! The bucket count of a sale is read from its meta once and remembered (bounded,
//! for [`LAYOUT_TTL`]), so single-bucket sales cost one `HMGET` per sale per process
//! every few seconds, and nothing else.

use crate::keys::{self, SaleKeys};
use crate::{
    int_at, int_of, outcome, scripts, string_of, Exec, Purchase, SaleSpec, SaleState, Stock,
    StockError, Token,
};
use redis::Value;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

mod restore;

/// How long a sale's bucket count is remembered (it changes only if the sale is lost
/// and rebuilt).
pub const LAYOUT_TTL: Duration = Duration::from_secs(5);
const LAYOUT_MAX: usize = 10_000;
/// Purchase attempts against an empty home bucket, each after a move, before giving up.
const MAX_REFILLS: usize = 32;

static LAYOUT: LazyLock<Mutex<HashMap<String, (u32, Instant)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn cached(sale: &str) -> Option<u32> {
    let map = LAYOUT.lock().unwrap_or_else(|e| e.into_inner());
    map.get(sale)
        .filter(|(_, at)| at.elapsed() < LAYOUT_TTL)
        .map(|(n, _)| *n)
}

fn remember(sale: &str, n: u32) {
    let mut map = LAYOUT.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= LAYOUT_MAX {
        map.retain(|_, (_, at)| at.elapsed() < LAYOUT_TTL);
        if map.len() >= LAYOUT_MAX {
            map.clear();
        }
    }
    map.insert(sale.to_string(), (n, Instant::now()));
}

/// A transfer journaled in its source bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: String,
    pub from: u32,
    pub to: u32,
    pub units: i64,
}

/// One bucket, read in one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketView {
    pub stock: i64,
    pub sold: i64,
    pub held: i64,
    pub now_ms: i64,
    /// Transfers out of this bucket not yet acknowledged.
    pub journal: Vec<Transfer>,
}

/// A bucketed sale read bucket by bucket: each bucket is consistent in itself; the sum
/// is exact when nothing moves (and a close estimate under load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spread {
    pub buckets: Vec<BucketView>,
    /// Units withdrawn whose deposit is not recorded.
    pub in_flight: i64,
}

impl Spread {
    pub fn stock(&self) -> i64 {
        self.buckets.iter().map(|b| b.stock).sum()
    }
    /// Units still for sale: in the buckets and in flight between them.
    pub fn remaining(&self) -> i64 {
        self.stock() + self.in_flight
    }
    pub fn held(&self) -> i64 {
        self.buckets.iter().map(|b| b.held).sum()
    }
    pub fn sold(&self) -> i64 {
        self.buckets.iter().map(|b| b.sold).sum()
    }
    fn journaled(&self) -> usize {
        self.buckets.iter().map(|b| b.journal.len()).sum()
    }
}

/// A bucket script's `{'EMPTY'}`: this bucket has no stock (the sale may).
fn empty(v: &Value) -> bool {
    matches!(v, Value::Array(items) if items.len() == 1 && string_of(&items[0]).is_ok_and(|c| c == "EMPTY"))
}

/// A bucket's keys as bucket create and restore take them: its sale keys
/// ([`SaleKeys::all`]'s order), then its transfer journals (out, in, done).
pub(crate) fn journaled_keys(bk: &SaleKeys) -> [String; 11] {
    let [meta, stock, sold, buyers, res, settled, seq, res_at] = bk.all().map(str::to_string);
    [
        meta,
        stock,
        sold,
        buyers,
        res,
        settled,
        seq,
        res_at,
        bk.transfers_out(),
        bk.transfers_in(),
        bk.transfers_done(),
    ]
}

impl<C: Exec> Stock<C> {
    /// The sale's bucket count: 1 for a sale without buckets (and for one that does not
    /// exist, whose scripts then answer `NoSale`).
    pub fn buckets_of(&mut self, sale: &str) -> Result<u32, StockError> {
        if let Some(n) = cached(sale) {
            return Ok(n);
        }
        let k = SaleKeys::new(sale);
        let v = self.conn.exec(
            redis::cmd("HMGET")
                .arg(&k.meta)
                .arg("initial")
                .arg("buckets"),
        )?;
        let Value::Array(items) = v else {
            return Err(StockError::BadReply(format!("HMGET: {v:?}")));
        };
        match items.as_slice() {
            [Value::Nil, ..] => Ok(1),
            [_, Value::Nil] => {
                remember(sale, 1);
                Ok(1)
            }
            [_, b] => {
                let n = int_of(b)?.clamp(1, keys::MAX_BUCKETS as i64) as u32;
                remember(sale, n);
                Ok(n)
            }
            _ => Err(StockError::BadReply("HMGET: short reply".into())),
        }
    }

    /// Create a sale whose stock is split over `buckets` buckets (1: the plain layout).
    pub fn create_sale_with_buckets(
        &mut self,
        sale: &str,
        spec: &SaleSpec,
        buckets: u32,
    ) -> Result<(), StockError> {
        self.create_priced_sale(sale, spec, buckets, None)
    }

    /// [`Stock::create_sale_with_buckets`], with the price its payments must carry
    /// (cents, in the sale's meta: [`Stock::price`]), written with the sale.
    pub fn create_priced_sale(
        &mut self,
        sale: &str,
        spec: &SaleSpec,
        buckets: u32,
        price_cents: Option<i64>,
    ) -> Result<(), StockError> {
        if let Some(p) = price_cents {
            crate::check_price(p)?;
        }
        if !(1..=keys::MAX_BUCKETS).contains(&buckets) {
            return Err(StockError::Invalid(format!(
                "buckets must be 1..={}",
                keys::MAX_BUCKETS
            )));
        }
        keys::check_sale_id(sale)?;
        // A bucket that survived its sale's meta (that master lost its data) must not be
        // wiped or sold over by a create, whatever bucket count it asks for: its sold
        // units would sell again. The reconcile restores it.
        for b in 0..keys::MAX_BUCKETS {
            let meta = SaleKeys::bucket(sale, b).meta;
            if self.conn.exec(redis::cmd("EXISTS").arg(&meta))? == Value::Int(1) {
                return Err(StockError::SaleExists);
            }
        }
        if buckets == 1 {
            return self.create_plain_sale(sale, spec, price_cents);
        }
        spec.validate()?;
        let k = SaleKeys::new(sale);
        let def =
            [spec.stock, spec.per_user_limit, spec.start_ms, spec.end_ms].map(|v| v.to_string());
        let mut args = def.to_vec();
        args.push(buckets.to_string());
        args.extend(price_cents.map(|p| p.to_string()));
        let rest = outcome(self.run(&scripts::BCREATE, &[&k.meta], &args)?)?;
        let base: u64 = string_of(
            rest.first()
                .ok_or_else(|| StockError::BadReply("short reply".into()))?,
        )?
        .parse()
        .map_err(|_| StockError::BadReply("sequence base".into()))?;
        let n = buckets as i64;
        for b in 0..buckets {
            let share = spec.stock / n + i64::from((b as i64) < spec.stock % n);
            let keys = journaled_keys(&SaleKeys::bucket(sale, b));
            let keys = keys.each_ref().map(String::as_str);
            let args = [
                share.to_string(),
                def[1].clone(),
                def[2].clone(),
                def[3].clone(),
                "0".to_string(),
                (base + b as u64).to_string(),
                b.to_string(),
                buckets.to_string(),
            ];
            outcome(self.run(&scripts::BUCKET, &keys, &args)?)?;
        }
        remember(sale, buckets);
        self.mark_store()
    }

    pub(crate) fn token_bucketed(
        &mut self,
        sale: &str,
        buckets: u32,
        user: u64,
        ttl: Duration,
        max_live: u32,
    ) -> Result<Token, StockError> {
        let k = SaleKeys::bucket(sale, keys::home_bucket(user, buckets));
        let token = keys::new_token();
        let tk = k.token(&token);
        let ut = k.user_tokens(user);
        let mut args = vec![
            user.to_string(),
            ttl.as_millis().max(1).to_string(),
            max_live.to_string(),
            "0".to_string(),
            "EMPTY".to_string(),
        ];
        let keys = [k.meta.as_str(), &k.stock, &k.buyers, &tk, &ut];
        let reply = self.run(&scripts::TOKEN, &keys, &args)?;
        let rest = match empty(&reply) {
            true => {
                // The home bucket is empty: the purchase will move units in, as long as
                // the sale has any left.
                if self.sale_empty(sale, buckets)? {
                    return Err(StockError::SoldOut);
                }
                args[3] = "1".to_string();
                outcome(self.run(&scripts::TOKEN, &keys, &args)?)?
            }
            false => outcome(reply)?,
        };
        Ok(Token {
            token,
            expires_ms: int_at(&rest, 0)?,
        })
    }

    pub(crate) fn purchase_bucketed(
        &mut self,
        sale: &str,
        buckets: u32,
        user: u64,
        token: &str,
    ) -> Result<Purchase, StockError> {
        let home = keys::home_bucket(user, buckets);
        let k = SaleKeys::bucket(sale, home);
        let (tk, ut) = (k.token(token), k.user_tokens(user));
        let keys = [
            k.meta.as_str(),
            &k.stock,
            &k.buyers,
            &k.reservations,
            &tk,
            &k.seq,
            &k.reserved_at,
            &k.settled,
            &ut,
        ];
        let args = [
            user.to_string(),
            sale.to_string(),
            buckets.to_string(),
            "EMPTY".to_string(),
        ];
        for _ in 0..MAX_REFILLS {
            let reply = self.run(&scripts::PURCHASE, &keys, &args)?;
            if empty(&reply) {
                if !self.refill(sale, buckets, home)? {
                    return Err(StockError::SoldOut);
                }
                continue;
            }
            match outcome(reply) {
                Ok(rest) => {
                    let mut remaining = int_at(&rest, 1)?;
                    if remaining <= 0 {
                        // The home bucket's last unit: report the sale's remaining, so
                        // "0" still means sold out.
                        remaining = self.spread(sale, buckets)?.remaining();
                    }
                    return Ok(Purchase {
                        order_id: string_of(&rest[0])?,
                        remaining,
                        per_user_limit: int_at(&rest, 2)?,
                        replayed: int_at(&rest, 3)? == 1,
                        reserved_at_ms: int_at(&rest, 4)?,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if self.sale_empty(sale, buckets)? {
            return Err(StockError::SoldOut);
        }
        Err(StockError::BadReply(
            "units kept leaving the home bucket before the purchase; retry".into(),
        ))
    }

    /// The keys of the bucket that holds order `seq` of `sale`.
    pub(crate) fn order_keys(&mut self, sale: &str, seq: u64) -> Result<SaleKeys, StockError> {
        let n = self.buckets_of(sale)?;
        Ok(if n > 1 {
            SaleKeys::bucket(sale, keys::order_bucket(seq, n))
        } else {
            SaleKeys::new(sale)
        })
    }

    pub(crate) fn state_bucketed(
        &mut self,
        sale: &str,
        buckets: u32,
    ) -> Result<SaleState, StockError> {
        let k = SaleKeys::new(sale);
        let v = self.conn.exec(
            redis::cmd("HMGET")
                .arg(&k.meta)
                .arg("initial")
                .arg("limit")
                .arg("start_ms")
                .arg("end_ms")
                .arg("paused"),
        )?;
        let Value::Array(m) = v else {
            return Err(StockError::BadReply(format!("HMGET: {v:?}")));
        };
        if m.first().is_none_or(|v| matches!(v, Value::Nil)) {
            return Err(StockError::NoSale);
        }
        let s = self.spread(sale, buckets)?;
        Ok(SaleState {
            initial: int_at(&m, 0)?,
            per_user_limit: int_at(&m, 1)?,
            start_ms: int_at(&m, 2)?,
            end_ms: int_at(&m, 3)?,
            paused: int_at(&m, 4)? == 1,
            remaining: s.remaining(),
            sold: s.sold(),
            held: s.held(),
            now_ms: s.buckets.iter().map(|b| b.now_ms).max().unwrap_or(0),
        })
    }

    pub(crate) fn pause_bucketed(
        &mut self,
        sale: &str,
        buckets: u32,
        paused: bool,
    ) -> Result<(), StockError> {
        let arg = [if paused { "1" } else { "0" }.to_string()];
        // The buckets first (each script checks only its own meta), skipping one that is
        // gone (lost with its master): pausing the rest must not stop at it.
        for b in 0..buckets {
            match outcome(self.run(&scripts::PAUSE, &[&SaleKeys::bucket(sale, b).meta], &arg)?) {
                Ok(_) | Err(StockError::NoSale) => {}
                Err(e) => return Err(e),
            }
        }
        outcome(self.run(&scripts::PAUSE, &[&SaleKeys::new(sale).meta], &arg)?)?;
        Ok(())
    }

    /// `expired_reservations` over the buckets: the cursor's low 8 bits name the
    /// bucket, the rest is that bucket's HSCAN cursor.
    pub(crate) fn expired_bucketed(
        &mut self,
        sale: &str,
        buckets: u32,
        age: Duration,
        cursor: u64,
        count: u32,
    ) -> Result<(u64, Vec<String>), StockError> {
        let b = (cursor & 0xff) as u32;
        if b >= buckets {
            return Ok((0, vec![]));
        }
        let k = SaleKeys::bucket(sale, b);
        let args = [
            age.as_millis().to_string(),
            (cursor >> 8).to_string(),
            count.max(1).to_string(),
        ];
        let rest = outcome(self.run(&scripts::EXPIRED, &[&k.reserved_at], &args)?)?;
        let next: u64 = string_of(&rest[0])?
            .parse()
            .map_err(|_| StockError::BadReply("cursor is not a number".into()))?;
        let ids = rest[1..]
            .iter()
            .map(string_of)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if next != 0 {
            (next << 8) | b as u64
        } else if b + 1 < buckets {
            (b + 1) as u64
        } else {
            0
        };
        Ok((next, ids))
    }

    /// One bucket, in one step.
    pub fn bucket_view(&mut self, sale: &str, b: u32) -> Result<BucketView, StockError> {
        let k = SaleKeys::bucket(sale, b);
        let xout = k.transfers_out();
        let rest = outcome(self.run(
            &scripts::BSTATE,
            &[&k.meta, &k.stock, &k.sold, &k.reservations, &xout],
            &[],
        )?)?;
        let mut journal = Vec::new();
        for pair in rest.get(4..).unwrap_or_default().chunks(2) {
            let id = string_of(&pair[0])?;
            let v = string_of(pair.get(1).unwrap_or(&Value::Nil))?;
            let (to, units) = v
                .split_once('|')
                .and_then(|(d, n)| Some((d.parse().ok()?, n.parse().ok()?)))
                .ok_or_else(|| StockError::BadReply(format!("journal entry {v:?}")))?;
            journal.push(Transfer {
                id,
                from: b,
                to,
                units,
            });
        }
        Ok(BucketView {
            stock: int_at(&rest, 0)?,
            sold: int_at(&rest, 1)?,
            held: int_at(&rest, 2)?,
            now_ms: int_at(&rest, 3)?,
            journal,
        })
    }

    /// Every bucket, and the units in flight (journaled, deposit not recorded).
    pub fn spread(&mut self, sale: &str, buckets: u32) -> Result<Spread, StockError> {
        let mut s = Spread::default();
        for b in 0..buckets {
            s.buckets.push(self.bucket_view(sale, b)?);
        }
        let journal: Vec<Transfer> = s.buckets.iter().flat_map(|b| b.journal.clone()).collect();
        for t in journal {
            if !self.deposited(sale, &t)? {
                s.in_flight += t.units;
            }
        }
        Ok(s)
    }

    fn deposited(&mut self, sale: &str, t: &Transfer) -> Result<bool, StockError> {
        let xin = SaleKeys::bucket(sale, t.to).transfers_in();
        Ok(int_of(&self.conn.exec(redis::cmd("HEXISTS").arg(&xin).arg(&t.id))?)? == 1)
    }

    /// Withdraw up to `want` units from bucket `from` for bucket `to`, journaled as
    /// transfer `id` in `from`'s slot; returns the units taken. The first half of a
    /// move ([`Stock::deposit`] is the second); public for recovery tests.
    pub fn withdraw(
        &mut self,
        sale: &str,
        from: u32,
        to: u32,
        id: &str,
        want: i64,
    ) -> Result<i64, StockError> {
        let k = SaleKeys::bucket(sale, from);
        let xout = k.transfers_out();
        let args = [id.to_string(), to.to_string(), want.to_string()];
        let rest = outcome(self.run(&scripts::WITHDRAW, &[&k.stock, &xout], &args)?)?;
        int_at(&rest, 0)
    }

    /// Deposit transfer `id`'s `units` (withdrawn from bucket `from`) into bucket `to`,
    /// once: true when applied now, false when it already was.
    pub fn deposit(
        &mut self,
        sale: &str,
        from: u32,
        to: u32,
        id: &str,
        units: i64,
    ) -> Result<bool, StockError> {
        let k = SaleKeys::bucket(sale, to);
        let xin = k.transfers_in();
        let args = [id.to_string(), units.to_string(), from.to_string()];
        let rest = outcome(self.run(&scripts::DEPOSIT, &[&k.stock, &xin], &args)?)?;
        Ok(int_at(&rest, 0)? == 1)
    }

    /// Move transfer `id` in bucket `from`'s journal from in flight to done (after its
    /// deposit is recorded).
    pub(crate) fn acknowledge(
        &mut self,
        sale: &str,
        from: u32,
        id: &str,
    ) -> Result<(), StockError> {
        let k = SaleKeys::bucket(sale, from);
        let (xout, xdone) = (k.transfers_out(), k.transfers_done());
        outcome(self.run(&scripts::MOVED, &[&xout, &xdone], &[id.to_string()])?)?;
        Ok(())
    }

    /// Complete every journaled transfer of the sale: deposit it (a no-op when its
    /// deposit is recorded), then drop the journal entry. Returns the transfers whose
    /// units were deposited by this pass. Safe to run at any time, from anywhere, twice.
    /// A sale without buckets has nothing to recover (one `HMGET`, remembered).
    pub fn recover_transfers(&mut self, sale: &str) -> Result<u64, StockError> {
        let n = self.buckets_of(sale)?;
        if n <= 1 {
            return Ok(0);
        }
        let mut views = Vec::with_capacity(n as usize);
        for b in 0..n {
            views.push(self.bucket_view(sale, b)?);
        }
        self.complete(sale, views.iter().flat_map(|v| v.journal.iter()))
    }

    fn complete<'a>(
        &mut self,
        sale: &str,
        journal: impl Iterator<Item = &'a Transfer>,
    ) -> Result<u64, StockError> {
        let mut done = 0;
        for t in journal {
            if self.deposit(sale, t.from, t.to, &t.id, t.units)? {
                done += 1;
            }
            self.acknowledge(sale, t.from, &t.id)?;
        }
        Ok(done)
    }

    /// True when every bucket is empty and nothing is in flight, in two scans in a row
    /// (a unit moving between buckets during one scan can be missed by it).
    fn sale_empty(&mut self, sale: &str, buckets: u32) -> Result<bool, StockError> {
        for _ in 0..2 {
            let s = self.spread(sale, buckets)?;
            if s.stock() > 0 || s.journaled() > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Bring units into `home` from the fullest other bucket, after completing any
    /// journaled transfer. False when the whole sale is empty (sold out).
    fn refill(&mut self, sale: &str, buckets: u32, home: u32) -> Result<bool, StockError> {
        let s = self.spread(sale, buckets)?;
        if s.journaled() > 0 {
            self.complete(sale, s.buckets.iter().flat_map(|v| v.journal.iter()))?;
            return Ok(true);
        }
        let total = s.stock();
        if total <= 0 {
            return Ok(!self.sale_empty(sale, buckets)?);
        }
        if s.buckets[home as usize].stock > 0 {
            return Ok(true);
        }
        let (from, donor) = s
            .buckets
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| v.stock)
            .map(|(b, v)| (b as u32, v.stock))
            .unwrap_or((home, 0));
        if donor <= 0 {
            return Ok(true);
        }
        let want = (total / buckets as i64).max(1).min(donor);
        let id = keys::new_token();
        let taken = self.withdraw(sale, from, home, &id, want)?;
        if taken > 0 {
            self.deposit(sale, from, home, &id, taken)?;
            self.acknowledge(sale, from, &id)?;
        }
        Ok(true)
    }

    pub(crate) fn buyers_bucketed(
        &mut self,
        sale: &str,
        buckets: u32,
    ) -> Result<Vec<(u64, i64)>, StockError> {
        let mut out = Vec::new();
        for b in 0..buckets {
            out.extend(self.buyers_at(&SaleKeys::bucket(sale, b))?);
        }
        Ok(out)
    }
}
