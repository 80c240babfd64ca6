//! Restoring a bucketed sale lost with Redis's data ([`Stock::restore_sale_with_buckets`]).
//!
//! The orders are planned in Rust (pure: [`plan`]) and written one bucket per script
//! (each bucket is its own slot), then the sale's own meta, last:
//!
//! - an order goes to the bucket its sequence names (`seq mod B`), where settle and the
//!   order lookup look for it; a buyer's live units (held + paid) go to the buyer's home
//!   bucket, where token and purchase check the limit. Purchases always happen in the home
//!   bucket, so the two agree; an order whose sequence names another bucket (bought while
//!   the sale had another layout, say restored as one bucket by an older `rebuild-stock`)
//!   still counts against its buyer's limit at home, and its release returns the unit to
//!   its own bucket without lowering that count (the limit errs on the strict side);
//! - every bucket's sequence stays `≡ b (mod B)` and lands past both the highest order id
//!   seen and Redis's clock × 1000 (as a created sale's base), so new ids never repeat
//!   one restored, nor one of an order the restore could not see;
//! - the remaining stock, initial − held − sold over the whole sale, is spread evenly
//!   (the buckets rebalance on demand, as always); more held + sold than the initial
//!   stock is refused before anything is written.
//!
//! Until the sale's meta is written the sale does not exist (its bucket count reads as 1
//! and the plain scripts answer `NoSale`), so a restore cut short is simply run again:
//! each bucket script overwrites what the last run left.

use super::remember;
use crate::keys::{self, SaleKeys};
use crate::{
    int_at, outcome, scripts, Exec, Restored, RestoredOrder, RestoredStatus, SaleSpec, Stock,
    StockError,
};
use redis::Value;
use std::collections::{BTreeMap, HashSet};

/// One bucket of a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BucketPlan {
    /// The orders whose sequence names this bucket.
    pub orders: Vec<(String, u64, RestoredStatus)>,
    /// Live units (held + paid) of the buyers whose home is this bucket.
    pub buyers: BTreeMap<u64, i64>,
    pub held: i64,
    pub sold: i64,
    /// Its share of the remaining stock.
    pub stock: i64,
    /// The value its sequence is set to: `≡ b (mod B)`, and the next id (`+ B`) is past
    /// the floor.
    pub seq: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub buckets: Vec<BucketPlan>,
    pub held: i64,
    pub sold: i64,
    pub remaining: i64,
    /// The lowest id any bucket hands out next.
    pub next_seq: u64,
}

/// Spread `orders` over `buckets` buckets (> 1) of a sale with `initial` units; every new
/// id lands past `floor` (the highest id seen, or more).
pub(crate) fn plan(
    sale: &str,
    initial: i64,
    buckets: u32,
    orders: &[RestoredOrder],
    floor: u64,
) -> Result<Plan, StockError> {
    let n = buckets.max(1);
    let mut out: Vec<BucketPlan> = vec![BucketPlan::default(); n as usize];
    let mut seen = HashSet::with_capacity(orders.len());
    let mut floor = floor;
    for o in orders {
        let seq = keys::seq_in_sale(sale, &o.order_id)?;
        if !seen.insert(o.order_id.as_str()) {
            return Err(StockError::Invalid(format!("order {} twice", o.order_id)));
        }
        floor = floor.max(seq);
        let b = &mut out[keys::order_bucket(seq, n) as usize];
        b.orders.push((o.order_id.clone(), o.user, o.status));
        match o.status {
            RestoredStatus::Reserved => b.held += 1,
            RestoredStatus::Paid => b.sold += 1,
            RestoredStatus::Cancelled => continue,
        }
        *out[keys::home_bucket(o.user, n) as usize]
            .buyers
            .entry(o.user)
            .or_insert(0) += 1;
    }
    let held: i64 = out.iter().map(|b| b.held).sum();
    let sold: i64 = out.iter().map(|b| b.sold).sum();
    if held + sold > initial {
        return Err(StockError::WouldOversell { held, sold });
    }
    let remaining = initial - held - sold;
    let (nn, floor) = (n as i64, floor as i64);
    for (b, p) in out.iter_mut().enumerate() {
        let b = b as i64;
        p.stock = remaining / nn + i64::from(b < remaining % nn);
        // The smallest id past the floor that names bucket b, less one step.
        let next = floor + 1 + (b - (floor + 1)).rem_euclid(nn);
        p.seq = next - nn;
    }
    Ok(Plan {
        buckets: out,
        held,
        sold,
        remaining,
        next_seq: floor as u64 + 1,
    })
}

impl<C: Exec> Stock<C> {
    /// Rebuild a sale lost with Redis's data, in `buckets` buckets as it was created
    /// ([`Stock::create_sale_with_buckets`]); `buckets` = 1 is [`Stock::restore_sale`],
    /// byte for byte. Refuses if the sale exists, or if the orders exceed the stock
    /// (nothing written). One script per bucket, then the sale's meta: a restore cut short
    /// leaves no sale, and running it again completes it.
    pub fn restore_sale_with_buckets(
        &mut self,
        sale: &str,
        spec: &SaleSpec,
        buckets: u32,
        paused: bool,
        orders: &[RestoredOrder],
    ) -> Result<Restored, StockError> {
        if !(1..=keys::MAX_BUCKETS).contains(&buckets) {
            return Err(StockError::Invalid(format!(
                "buckets must be 1..={}",
                keys::MAX_BUCKETS
            )));
        }
        if buckets == 1 {
            return self.restore_sale(sale, spec, paused, orders);
        }
        keys::check_sale_id(sale)?;
        let top = SaleKeys::new(sale);
        if self.conn.exec(redis::cmd("EXISTS").arg(&top.meta))? == Value::Int(1) {
            return Err(StockError::SaleExists);
        }
        // Past Redis's clock × 1000 too, as a created sale's base: an order the restore
        // could not see (still in a gateway's spool, say) never shares an id with a new one.
        let floor = self.redis_ms()?.max(0) as u64 * 1000;
        let p = plan(sale, spec.stock, buckets, orders, floor)?;
        let paused = (paused as u8).to_string();
        let def = [spec.per_user_limit, spec.start_ms, spec.end_ms].map(|v| v.to_string());
        for (b, bp) in p.buckets.iter().enumerate() {
            let keys = super::journaled_keys(&SaleKeys::bucket(sale, b as u32));
            let keys = keys.each_ref().map(String::as_str);
            let mut args = vec![
                bp.stock.to_string(),
                def[0].clone(),
                def[1].clone(),
                def[2].clone(),
                paused.clone(),
                b.to_string(),
                buckets.to_string(),
                bp.seq.to_string(),
                bp.orders.len().to_string(),
            ];
            args.reserve(bp.orders.len() * 3 + bp.buyers.len() * 2);
            for (id, user, status) in &bp.orders {
                args.extend([id.clone(), user.to_string(), status.as_str().to_string()]);
            }
            for (user, units) in &bp.buyers {
                args.extend([user.to_string(), units.to_string()]);
            }
            let rest = outcome(self.run(&scripts::BRESTORE, &keys, &args)?)?;
            if (int_at(&rest, 1)?, int_at(&rest, 2)?) != (bp.held, bp.sold) {
                return Err(StockError::BadReply(format!(
                    "bucket {b} restored {rest:?}, planned {} held {} sold",
                    bp.held, bp.sold
                )));
            }
        }
        let args = [
            spec.stock.to_string(),
            def[0].clone(),
            def[1].clone(),
            def[2].clone(),
            paused,
            buckets.to_string(),
        ];
        outcome(self.run(&scripts::BRESTORE_META, &[&top.meta], &args)?)?;
        remember(sale, buckets);
        Ok(Restored {
            remaining: p.remaining,
            held: p.held,
            sold: p.sold,
            next_seq: p.next_seq,
        })
    }

    /// Restore a bucketed sale some of whose buckets were lost (their master restarted
    /// empty) while its meta survived: [`Stock::restore_whole`]. Refused when no bucket
    /// is lost.
    pub fn restore_lost_buckets(
        &mut self,
        sale: &str,
        spec: &SaleSpec,
        buckets: u32,
        orders: &[RestoredOrder],
    ) -> Result<Restored, StockError> {
        if self.lost_buckets(sale)?.is_empty() {
            return Err(StockError::SaleExists);
        }
        self.restore_whole(sale, spec, buckets, orders)
    }

    /// Rebuild a sale that Redis still holds, every bucket from `orders`, as for a sale
    /// lost whole, keeping its paused flag: for buckets lost with a master, or buckets
    /// from different moments (a master restarted from an old snapshot kept buckets that
    /// a later restore had rewritten on the others), whose ledger cannot balance. The
    /// meta goes first, so the sale is absent (sells nothing) until the restore writes it
    /// again, last; a restore cut short is completed by running it again. Only while
    /// nothing buys, pays or settles in the sale (the masters untrusted: the gateways and
    /// the canceller hold): a purchase or payment between the caller's read of the orders
    /// and a bucket's rewrite would be lost. An oversold restore, or an order that is not
    /// the sale's, is refused before anything is removed.
    pub fn restore_whole(
        &mut self,
        sale: &str,
        spec: &SaleSpec,
        buckets: u32,
        orders: &[RestoredOrder],
    ) -> Result<Restored, StockError> {
        keys::check_sale_id(sale)?;
        // An oversold restore is refused before anything is removed: the sale stays as it
        // is (to be paused), never absent.
        let live = |s: RestoredStatus| orders.iter().filter(|o| o.status == s).count() as i64;
        let (held, sold) = (live(RestoredStatus::Reserved), live(RestoredStatus::Paid));
        if held + sold > spec.stock {
            return Err(StockError::WouldOversell { held, sold });
        }
        if buckets > 1 {
            // Every order must fit the plan (ids of this sale, each once) before anything
            // is removed.
            plan(sale, spec.stock, buckets, orders, 0)?;
        }
        let top = SaleKeys::new(sale);
        let paused = self
            .conn
            .exec(redis::cmd("HGET").arg(&top.meta).arg("paused"))?
            == Value::BulkString(b"1".to_vec());
        self.conn.exec(redis::cmd("DEL").arg(&top.meta))?;
        self.restore_sale_with_buckets(sale, spec, buckets, paused, orders)
    }

    /// Redis's clock, in ms.
    fn redis_ms(&mut self) -> Result<i64, StockError> {
        match self.conn.exec(&redis::cmd("TIME"))? {
            Value::Array(t) if t.len() == 2 => {
                Ok(crate::int_of(&t[0])? * 1000 + crate::int_of(&t[1])? / 1000)
            }
            v => Err(StockError::BadReply(format!("TIME: {v:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestoredStatus::*;

    fn order(seq: u64, user: u64, status: RestoredStatus) -> RestoredOrder {
        RestoredOrder {
            order_id: format!("s-{seq}"),
            user,
            status,
        }
    }

    /// A user whose home among `n` buckets is `b`.
    fn user_at(b: u32, n: u32, skip: usize) -> u64 {
        (1..)
            .filter(|&u| keys::home_bucket(u, n) == b)
            .nth(skip)
            .unwrap()
    }

    #[test]
    fn orders_go_to_their_bucket_buyers_home_and_the_rest_spreads_evenly() {
        let base = 1_000_000;
        let (u0, u2) = (user_at(0, 4, 0), user_at(2, 4, 0));
        let orders = [
            order(base, u0, Paid),
            order(base + 4, u0, Cancelled),
            order(base + 8, u0, Reserved),
            order(base + 2, u2, Reserved),
        ];
        let p = plan("s", 10, 4, &orders, 0).unwrap();
        assert_eq!((p.held, p.sold, p.remaining), (2, 1, 7));
        let shares: Vec<i64> = p.buckets.iter().map(|b| b.stock).collect();
        assert_eq!(shares, vec![2, 2, 2, 1]);
        assert_eq!(p.buckets[0].orders.len(), 3);
        assert_eq!((p.buckets[0].held, p.buckets[0].sold), (1, 1));
        assert_eq!(p.buckets[0].buyers, BTreeMap::from([(u0, 2)]));
        assert_eq!(p.buckets[2].buyers, BTreeMap::from([(u2, 1)]));
        assert!(p.buckets[1].orders.is_empty() && p.buckets[1].buyers.is_empty());
        // A released order frees its buyer: only live units count.
        let p = plan("s", 10, 4, &[order(base, u0, Cancelled)], 0).unwrap();
        assert!(p.buckets.iter().all(|b| b.buyers.is_empty()));
    }

    #[test]
    fn every_sequence_names_its_bucket_and_continues_past_the_floor() {
        for n in [2u32, 3, 4, 7, 64] {
            for floor in [0u64, 1, 5, 1_000_000, 1_764_140_000_123_000] {
                for top in [None, Some(floor + 3), Some(floor + 1000)] {
                    let orders: Vec<_> = top.iter().map(|&s| order(s, 1, Paid)).collect();
                    let p = plan("s", 10, n, &orders, floor).unwrap();
                    let seen = top.unwrap_or(0).max(floor);
                    assert_eq!(p.next_seq, seen + 1);
                    for (b, bp) in p.buckets.iter().enumerate() {
                        let next = bp.seq + n as i64;
                        assert!(next as u64 > seen, "n={n} floor={floor} b={b}");
                        assert!(next as u64 <= seen + n as u64, "no gap wider than B");
                        assert_eq!(keys::order_bucket(next as u64, n), b as u32);
                        if bp.seq >= 0 {
                            assert_eq!(keys::order_bucket(bp.seq as u64, n), b as u32);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_order_outside_its_buyers_home_counts_at_home() {
        let u = user_at(1, 4, 0);
        // Sequence 1000 names bucket 0, the buyer's home is 1.
        let p = plan("s", 5, 4, &[order(1000, u, Reserved)], 0).unwrap();
        assert_eq!(p.buckets[0].orders.len(), 1);
        assert_eq!(p.buckets[0].held, 1);
        assert!(p.buckets[0].buyers.is_empty());
        assert_eq!(p.buckets[1].buyers, BTreeMap::from([(u, 1)]));
    }

    #[test]
    fn oversold_foreign_and_repeated_orders_are_refused() {
        let orders: Vec<_> = (0..4)
            .map(|i| order(i, i, if i % 2 == 0 { Paid } else { Reserved }))
            .collect();
        assert_eq!(
            plan("s", 3, 4, &orders, 0),
            Err(StockError::WouldOversell { held: 2, sold: 2 })
        );
        // Cancelled orders hold nothing.
        let mut with_cancelled = orders.clone();
        with_cancelled.push(order(9, 9, Cancelled));
        assert!(plan("s", 4, 4, &with_cancelled, 0).is_ok());
        let foreign = RestoredOrder {
            order_id: "t-1".into(),
            user: 1,
            status: Paid,
        };
        assert!(matches!(
            plan("s", 9, 4, &[foreign], 0),
            Err(StockError::Invalid(_))
        ));
        assert!(matches!(
            plan("s", 9, 4, &[order(1, 1, Paid), order(1, 1, Paid)], 0),
            Err(StockError::Invalid(_))
        ));
    }
}
