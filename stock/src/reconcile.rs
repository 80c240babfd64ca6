//! Reconciliation after Redis lost its data: merge what PostgreSQL holds with the
//! events still in flight on the order topic into the orders a sale is restored from.
//! Pure logic; the rebuild command (`order-writer rebuild-stock`) brings the inputs.

use crate::keys::{self, SaleKeys};
use crate::{int_at, outcome, scripts, Exec, RestoredOrder, RestoredStatus, Stock, StockError};
use std::collections::BTreeMap;

/// One fact about an order from either source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// A row in PostgreSQL with its status.
    Row {
        order_id: String,
        user: u64,
        status: RestoredStatus,
    },
    /// A `reserved` event on the topic (maybe not written yet).
    Reserved { order_id: String, user: u64 },
    /// A `paid` event on the topic.
    Paid { order_id: String, user: u64 },
}

/// Merge facts into one order per id. The database's final states win (paid and
/// cancelled were decided by Redis before they were written); a `paid` event upgrades
/// a reserved order; an order only the topic knows is reserved.
pub fn merge(facts: impl IntoIterator<Item = Fact>) -> Vec<RestoredOrder> {
    let mut by_id: BTreeMap<String, (u64, RestoredStatus)> = BTreeMap::new();
    let rank = |s: RestoredStatus| match s {
        RestoredStatus::Reserved => 0,
        RestoredStatus::Paid => 1,
        RestoredStatus::Cancelled => 2,
    };
    for f in facts {
        let (id, user, status) = match f {
            Fact::Row {
                order_id,
                user,
                status,
            } => (order_id, user, status),
            Fact::Reserved { order_id, user } => (order_id, user, RestoredStatus::Reserved),
            Fact::Paid { order_id, user } => (order_id, user, RestoredStatus::Paid),
        };
        let e = by_id.entry(id).or_insert((user, status));
        if rank(status) > rank(e.1) {
            e.1 = status;
        }
    }
    by_id
        .into_iter()
        .map(|(order_id, (user, status))| RestoredOrder {
            order_id,
            user,
            status,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestoredStatus::*;

    #[test]
    fn final_states_win_and_topic_only_orders_are_held() {
        let f = |id: &str, status| Fact::Row {
            order_id: id.into(),
            user: 1,
            status,
        };
        let merged = merge([
            f("s-1", Reserved),
            Fact::Paid {
                order_id: "s-1".into(),
                user: 1,
            },
            f("s-2", Cancelled),
            Fact::Reserved {
                order_id: "s-2".into(),
                user: 1,
            },
            Fact::Reserved {
                order_id: "s-3".into(),
                user: 4,
            },
            Fact::Reserved {
                order_id: "s-3".into(),
                user: 4,
            },
            f("s-4", Paid),
        ]);
        let got: Vec<(&str, RestoredStatus)> = merged
            .iter()
            .map(|o| (o.order_id.as_str(), o.status))
            .collect();
        assert_eq!(
            got,
            vec![
                ("s-1", Paid),
                ("s-2", Cancelled),
                ("s-3", Reserved),
                ("s-4", Paid)
            ]
        );
        assert_eq!(merged[2].user, 4);
    }
}

/// What [`Stock::reapply`] redid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reapplied {
    /// Orders (or their settlement) Redis had lost and now holds again.
    pub applied: u64,
    /// Lost orders whose unit had been sold again meanwhile: not applied, an oversell.
    pub conflicts: u64,
}

/// Orders per script call (four arguments each).
const REAPPLY_BATCH: usize = 1000;

impl<C: Exec> Stock<C> {
    /// The payments Redis itself records for `sale` (`settled` = `paid|user`), in each of
    /// its `buckets` (1: the plain layout): a whole restore keeps them with PostgreSQL's
    /// and the topic's facts, since a payment whose `paid` event was never delivered is
    /// known only here, and a payment is final. Reservations and releases are not taken:
    /// a bucket back from an old snapshot holds reservations released since, and a
    /// release must not hide a payment (`merge`).
    pub fn redis_payments(&mut self, sale: &str, buckets: u32) -> Result<Vec<Fact>, StockError> {
        keys::check_sale_id(sale)?;
        let parts: Vec<SaleKeys> = if buckets > 1 {
            (0..buckets).map(|b| SaleKeys::bucket(sale, b)).collect()
        } else {
            vec![SaleKeys::new(sale)]
        };
        let mut out = Vec::new();
        for k in parts {
            for (order_id, v) in self.hash_pairs(&k.settled)? {
                if let Some(user) = v.strip_prefix("paid|").and_then(|u| u.parse().ok()) {
                    out.push(Fact::Paid { order_id, user });
                }
            }
        }
        Ok(out)
    }

    /// Every field and value of the hash at `key`, a page at a time (`HSCAN`): a hash of
    /// every order ever settled never blocks Redis, nor outlasts one call's timeout.
    fn hash_pairs(&mut self, key: &str) -> Result<Vec<(String, String)>, StockError> {
        let mut out = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let v = self.conn.exec(
                redis::cmd("HSCAN")
                    .arg(key)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(1000),
            )?;
            let redis::Value::Array(parts) = v else {
                return Err(StockError::BadReply(format!("HSCAN: {v:?}")));
            };
            let (Some(next), Some(redis::Value::Array(items))) = (parts.first(), parts.get(1))
            else {
                return Err(StockError::BadReply("HSCAN: short reply".into()));
            };
            let items: Vec<String> = items
                .iter()
                .map(crate::string_of)
                .collect::<Result<_, _>>()?;
            out.extend(
                items
                    .chunks(2)
                    .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.clone()))),
            );
            cursor = crate::string_of(next)?;
            if cursor == "0" {
                return Ok(out);
            }
        }
    }

    /// Whether any bucket of `sale` (of `buckets`) records the sale paused: a whole
    /// restore cut short after it removed the sale's own meta keeps the pause.
    pub fn any_bucket_paused(&mut self, sale: &str, buckets: u32) -> Result<bool, StockError> {
        if buckets <= 1 {
            return Ok(false);
        }
        for b in 0..buckets {
            let meta = SaleKeys::bucket(sale, b).meta;
            if self
                .conn
                .exec(redis::cmd("HGET").arg(&meta).arg("paused"))?
                == redis::Value::BulkString(b"1".to_vec())
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Void every token of `sale` issued until now, in every bucket (see `lua/void.lua`):
    /// a reconcile after a loss does it before putting anything back, whatever it finds,
    /// since a token spent in the lost tail came back new. `NoSale` if the sale is gone.
    pub fn void_tokens(&mut self, sale: &str) -> Result<(), StockError> {
        keys::check_sale_id(sale)?;
        let buckets = self.buckets_of(sale)?;
        let mut metas = vec![SaleKeys::new(sale).meta];
        if buckets > 1 {
            metas.extend((0..buckets).map(|b| SaleKeys::bucket(sale, b).meta));
        }
        for (i, meta) in metas.iter().enumerate() {
            match self
                .run(&scripts::VOID, &[meta.as_str()], &[] as &[String])
                .and_then(outcome)
            {
                Ok(_) => {}
                // A bucket lost with its master: restored (and voided) by the reconcile.
                Err(StockError::NoSale) if i > 0 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Bring a sale that survived a partial loss in line with `orders` (every order known
    /// outside Redis, merged by [`merge`]): redo what Redis lost, leave what it kept (see
    /// `lua/reapply.lua`). Idempotent; on a bucketed sale each order goes to the bucket
    /// its id names. `NoSale` if the sale itself is gone (restore it instead).
    pub fn reapply(
        &mut self,
        sale: &str,
        orders: &[RestoredOrder],
    ) -> Result<Reapplied, StockError> {
        keys::check_sale_id(sale)?;
        let buckets = self.buckets_of(sale)?;
        let mut by_bucket: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for o in orders {
            let seq = keys::seq_in_sale(sale, &o.order_id)?;
            let b = if buckets > 1 {
                keys::order_bucket(seq, buckets)
            } else {
                0
            };
            by_bucket.entry(b).or_default().extend([
                o.order_id.clone(),
                o.user.to_string(),
                o.status.as_str().to_string(),
                seq.to_string(),
            ]);
        }
        let mut total = Reapplied::default();
        for (b, args) in by_bucket {
            let k = if buckets > 1 {
                SaleKeys::bucket(sale, b)
            } else {
                SaleKeys::new(sale)
            };
            for chunk in args.chunks(REAPPLY_BATCH * 4) {
                let mut argv = vec![buckets.to_string(), b.to_string()];
                argv.extend_from_slice(chunk);
                let rest = outcome(self.run(&scripts::REAPPLY, &k.all(), &argv)?)?;
                total.applied += int_at(&rest, 0)?.max(0) as u64;
                total.conflicts += int_at(&rest, 1)?.max(0) as u64;
            }
        }
        Ok(total)
    }
}
