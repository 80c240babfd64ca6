//! Reconciliation after Redis lost its data: merge what PostgreSQL holds with the
//! events still in flight on the order topic into the orders a sale is restored from.
//! Pure logic; the rebuild command (`order-writer rebuild-stock`) brings the inputs.

use crate::{RestoredOrder, RestoredStatus};
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
