//! Restoring a bucketed sale lost with Redis's data, against the real Redis: a sale over
//! four buckets with paid, released and held orders of several buyers loses every key,
//! is restored from its orders, and then reads as before (state per sale and per bucket,
//! buyers), keeps every buyer's limit, hands out ids that never repeat and still name
//! their bucket, sells out across the buckets; a restore cut short is run again; an
//! oversold restore and a restore over a live sale are refused; one bucket is
//! `restore_sale` itself.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use stock::keys::{self, SaleKeys};
use stock::{
    Conn, Exec, OrderState, RestoredOrder, RestoredStatus, SaleSpec, SaleState, Settlement, Stock,
    StockError,
};

const B: u32 = 4;

use testkit::{open_spec, stack_stock as connect};

fn sale_id(tag: &str) -> String {
    testkit::unique(&format!("rb_{tag}"))
}

/// Every key of the sale and its buckets (tokens included).
fn sale_keys(s: &mut Stock<Conn>, sale: &str) -> Vec<String> {
    let mut out = vec![];
    for pattern in [format!("sk:{{{sale}}}:*"), format!("sk:{{{sale}#*")] {
        let mut cursor = "0".to_string();
        loop {
            let v = s
                .conn_mut()
                .exec(
                    redis::cmd("SCAN")
                        .arg(&cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .unwrap();
            let redis::Value::Array(mut page) = v else {
                panic!("SCAN: {v:?}")
            };
            cursor = redis::from_redis_value(page[0].clone()).unwrap();
            let keys: Vec<String> = redis::from_redis_value(page.swap_remove(1)).unwrap();
            out.extend(keys);
            if cursor == "0" {
                break;
            }
        }
    }
    out
}

/// Redis lost the sale (FLUSHALL, for this sale only: other tests share the Redis).
fn lose(s: &mut Stock<Conn>, sale: &str) {
    for k in sale_keys(s, sale) {
        s.conn_mut().exec(redis::cmd("DEL").arg(&k)).unwrap();
    }
    assert!(sale_keys(s, sale).is_empty());
}

fn buy(s: &mut Stock<Conn>, sale: &str, user: u64) -> Result<String, StockError> {
    let t = s.issue_token(sale, user, Duration::from_secs(60))?;
    s.purchase(sale, user, &t.token).map(|p| p.order_id)
}

fn sorted_buyers(s: &mut Stock<Conn>, sale: &str) -> Vec<(u64, i64)> {
    let mut b = s.buyers(sale).unwrap();
    b.sort();
    b
}

fn per_bucket(s: &mut Stock<Conn>, sale: &str) -> Vec<(i64, i64)> {
    (0..B)
        .map(|b| {
            let v = s.bucket_view(sale, b).unwrap();
            (v.held, v.sold)
        })
        .collect()
}

fn seq_of(order_id: &str) -> u64 {
    keys::split_order_id(order_id).unwrap().1
}

/// The sale's orders, by id: 24 buyers, of whom a third pay, a third are released and
/// a third hold; four of the released buy again (one order paid, three live).
type Orders = BTreeMap<String, (u64, RestoredStatus)>;

fn sell_paid_released_and_held(s: &mut Stock<Conn>, sale: &str) -> Orders {
    let mut orders: Orders = BTreeMap::new();
    for user in 1..=24u64 {
        let o = buy(s, sale, user).unwrap();
        let status = match user % 3 {
            0 => {
                s.settle(&o, Settlement::Paid).unwrap();
                RestoredStatus::Paid
            }
            1 => {
                s.settle(&o, Settlement::Released).unwrap();
                RestoredStatus::Cancelled
            }
            _ => RestoredStatus::Reserved,
        };
        orders.insert(o, (user, status));
    }
    for user in [1u64, 4, 7, 10] {
        let o = buy(s, sale, user).unwrap();
        let status = if user == 1 {
            s.settle(&o, Settlement::Paid).unwrap();
            RestoredStatus::Paid
        } else {
            RestoredStatus::Reserved
        };
        orders.insert(o, (user, status));
    }
    orders
}

/// The restored sale reads as `before`: the sale, each bucket's held and sold, the
/// buyers, the remaining spread evenly, every order's state.
fn assert_as_before(
    s: &mut Stock<Conn>,
    sale: &str,
    before: &stock::SaleState,
    buyers_before: &[(u64, i64)],
    buckets_before: &[(i64, i64)],
    orders: &Orders,
) {
    let after = s.state(sale).unwrap();
    assert_eq!(
        (
            after.remaining,
            after.held,
            after.sold,
            after.initial,
            after.per_user_limit,
            after.start_ms,
            after.end_ms,
            after.paused
        ),
        (
            before.remaining,
            before.held,
            before.sold,
            before.initial,
            before.per_user_limit,
            before.start_ms,
            before.end_ms,
            before.paused
        )
    );
    assert!(after.conserved());
    assert_eq!(s.buckets_of(sale).unwrap(), B);
    assert_eq!(per_bucket(s, sale), buckets_before);
    assert_eq!(sorted_buyers(s, sale), buyers_before);
    let shares: Vec<i64> = (0..B)
        .map(|b| s.bucket_view(sale, b).unwrap().stock)
        .collect();
    assert_eq!(shares, vec![5, 5, 5, 5], "the remaining spread evenly");
    for (o, (user, status)) in orders {
        let want = match status {
            RestoredStatus::Reserved => OrderState::Reserved,
            RestoredStatus::Paid => OrderState::Paid,
            RestoredStatus::Cancelled => OrderState::Released,
        };
        assert_eq!(s.order(o).unwrap(), (want, *user), "{o}");
    }
}

/// After the restore: every buyer with a live order is at the limit, the others may buy;
/// a restored reservation settles in its bucket; new buyers sell every remaining unit,
/// with ids past `max_seq` that name their buyer's home bucket.
fn limits_hold_and_it_sells_out(s: &mut Stock<Conn>, sale: &str, orders: &Orders, max_seq: u64) {
    // Every buyer with a live order is at the limit; the one whose only order was
    // released may buy again.
    let live: HashSet<u64> = orders
        .values()
        .filter(|(_, st)| *st != RestoredStatus::Cancelled)
        .map(|(u, _)| *u)
        .collect();
    for &user in &live {
        let t = s.issue_token(sale, user, Duration::from_secs(60));
        assert!(matches!(t, Err(StockError::AlreadyBought)), "{user}: {t:?}");
    }
    let mut known: HashSet<String> = orders.keys().cloned().collect();
    let again = buy(s, sale, 13).unwrap();
    assert!(!live.contains(&13));
    let mut fresh = vec![(again, 13u64)];
    // A restored reservation settles in its bucket: released, its buyer buys again.
    let held_by_2 = orders
        .iter()
        .find(|(_, (u, st))| *u == 2 && *st == RestoredStatus::Reserved)
        .map(|(o, _)| o.clone())
        .unwrap();
    assert_eq!(s.settle(&held_by_2, Settlement::Released).unwrap(), 2);
    fresh.push((buy(s, sale, 2).unwrap(), 2));

    // Sell out with new buyers: every remaining unit sells, across the buckets.
    let left = s.state(sale).unwrap().remaining;
    assert_eq!(left, 19);
    let mut sold_out = false;
    for user in 1000..1100u64 {
        match buy(s, sale, user) {
            Ok(o) => fresh.push((o, user)),
            Err(StockError::SoldOut) => {
                sold_out = true;
                assert_eq!(s.state(sale).unwrap().remaining, 0, "phantom sold out");
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sold_out);
    assert_eq!(fresh.len() as i64, 2 + left, "no stranded units");
    for (o, user) in &fresh {
        assert!(known.insert(o.clone()), "order id {o} repeated");
        let seq = seq_of(o);
        assert!(seq > max_seq, "{o} not past {max_seq}");
        assert_eq!(keys::order_bucket(seq, B), keys::home_bucket(*user, B));
        assert_eq!(s.order(o).unwrap(), (OrderState::Reserved, *user));
    }
    let end = s.state(sale).unwrap();
    assert!(end.conserved() && end.remaining == 0, "{end:?}");
    assert_eq!(end.held + end.sold, 40);
}

#[test]
fn a_lost_bucketed_sale_is_restored_from_its_orders() {
    let sale = sale_id("full");
    let mut s = connect();
    s.create_sale_with_buckets(&sale, &open_spec(40, 1), B)
        .unwrap();
    let orders = sell_paid_released_and_held(&mut s, &sale);
    let before = s.state(&sale).unwrap();
    assert_eq!(
        (before.remaining, before.held, before.sold, before.initial),
        (20, 11, 9, 40)
    );
    let buyers_before = sorted_buyers(&mut s, &sale);
    let buckets_before = per_bucket(&mut s, &sale);
    // Purchases happen in the buyer's home bucket: an order's bucket is its buyer's home.
    for (o, (user, _)) in &orders {
        assert_eq!(
            keys::order_bucket(seq_of(o), B),
            keys::home_bucket(*user, B)
        );
    }
    let max_seq = orders.keys().map(|o| seq_of(o)).max().unwrap();

    lose(&mut s, &sale);
    assert!(matches!(s.state(&sale), Err(StockError::NoSale)));

    let restored_orders: Vec<RestoredOrder> = orders
        .iter()
        .map(|(o, (user, status))| RestoredOrder {
            order_id: o.clone(),
            user: *user,
            status: *status,
        })
        .collect();
    let spec = open_spec(40, 1);
    let spec = SaleSpec {
        start_ms: before.start_ms,
        end_ms: before.end_ms,
        ..spec
    };
    let r = s
        .restore_sale_with_buckets(&sale, &spec, B, false, &restored_orders)
        .unwrap();
    assert_eq!((r.remaining, r.held, r.sold), (20, 11, 9));
    assert!(r.next_seq > max_seq);

    assert_as_before(
        &mut s,
        &sale,
        &before,
        &buyers_before,
        &buckets_before,
        &orders,
    );
    // A second restore is refused: the sale exists.
    assert!(matches!(
        s.restore_sale_with_buckets(&sale, &spec, B, false, &restored_orders),
        Err(StockError::SaleExists)
    ));

    limits_hold_and_it_sells_out(&mut s, &sale, &orders, max_seq);
}

#[test]
fn a_restore_cut_short_is_completed_by_running_it_again() {
    let sale = sale_id("rerun");
    let mut s = connect();
    let spec = open_spec(10, 1);
    s.create_sale_with_buckets(&sale, &spec, B).unwrap();
    let mut orders = vec![];
    for user in 1..=6u64 {
        let o = buy(&mut s, &sale, user).unwrap();
        let status = if user % 2 == 0 {
            s.settle(&o, Settlement::Paid).unwrap();
            RestoredStatus::Paid
        } else {
            RestoredStatus::Reserved
        };
        orders.push(RestoredOrder {
            order_id: o,
            user,
            status,
        });
    }
    let before = s.state(&sale).unwrap();
    let buyers_before = sorted_buyers(&mut s, &sale);
    lose(&mut s, &sale);
    s.restore_sale_with_buckets(&sale, &spec, B, false, &orders)
        .unwrap();

    // A crash after buckets 0 and 1, before 2, 3 and the sale's meta (bucket 0 even
    // took a few units since): no sale; the rebuild runs again and overwrites.
    s.conn_mut()
        .exec(redis::cmd("DEL").arg(SaleKeys::new(&sale).meta))
        .unwrap();
    for b in 2..B {
        for k in SaleKeys::bucket(&sale, b).all() {
            s.conn_mut().exec(redis::cmd("DEL").arg(k)).unwrap();
        }
    }
    s.conn_mut()
        .exec(
            redis::cmd("SET")
                .arg(SaleKeys::bucket(&sale, 0).stock)
                .arg(999),
        )
        .unwrap();
    assert!(
        matches!(s.state(&sale), Err(StockError::NoSale)),
        "a half-restored sale does not exist"
    );
    assert!(matches!(buy(&mut s, &sale, 99), Err(StockError::NoSale)));

    let r = s
        .restore_sale_with_buckets(&sale, &spec, B, false, &orders)
        .unwrap();
    assert_eq!((r.remaining, r.held, r.sold), (4, 3, 3));
    let after = s.state(&sale).unwrap();
    assert_eq!(
        (after.remaining, after.held, after.sold, after.initial),
        (before.remaining, before.held, before.sold, before.initial)
    );
    assert_eq!(sorted_buyers(&mut s, &sale), buyers_before);
    assert_eq!(
        (0..B)
            .map(|b| s.bucket_view(&sale, b).unwrap().stock)
            .sum::<i64>(),
        4
    );
}

#[test]
fn a_restore_that_would_oversell_writes_nothing_and_one_bucket_is_the_plain_restore() {
    let mut s = connect();
    let sale = sale_id("over");
    let orders: Vec<RestoredOrder> = (0..6u64)
        .map(|i| RestoredOrder {
            order_id: format!("{sale}-{}", 1000 + i),
            user: 100 + i,
            status: if i % 2 == 0 {
                RestoredStatus::Paid
            } else {
                RestoredStatus::Reserved
            },
        })
        .collect();
    let r = s.restore_sale_with_buckets(&sale, &open_spec(5, 1), B, false, &orders);
    assert_eq!(r, Err(StockError::WouldOversell { held: 3, sold: 3 }));
    assert!(sale_keys(&mut s, &sale).is_empty(), "nothing written");
    assert!(matches!(s.state(&sale), Err(StockError::NoSale)));
    // Exactly the stock: restored, and sold out.
    s.restore_sale_with_buckets(&sale, &open_spec(6, 1), B, false, &orders)
        .unwrap();
    let st = s.state(&sale).unwrap();
    assert_eq!((st.remaining, st.held, st.sold), (0, 3, 3));
    assert!(matches!(buy(&mut s, &sale, 1), Err(StockError::SoldOut)));

    // An order whose sequence names another bucket than its buyer's home (bought while
    // the sale had another layout): found where settle looks for it, counted against
    // the limit where purchase checks it.
    let odd = sale_id("odd");
    let user = (1..).find(|&u| keys::home_bucket(u, B) == 1).unwrap();
    let o = format!("{odd}-4000"); // names bucket 0
    let orders = [RestoredOrder {
        order_id: o.clone(),
        user,
        status: RestoredStatus::Reserved,
    }];
    s.restore_sale_with_buckets(&odd, &open_spec(3, 1), B, true, &orders)
        .unwrap();
    assert!(s.state(&odd).unwrap().paused);
    s.set_paused(&odd, false).unwrap();
    assert_eq!(s.order(&o).unwrap(), (OrderState::Reserved, user));
    assert!(matches!(
        s.issue_token(&odd, user, Duration::from_secs(60)),
        Err(StockError::AlreadyBought)
    ));
    assert_eq!(s.settle(&o, Settlement::Paid).unwrap(), user);
    let st = s.state(&odd).unwrap();
    assert!(
        st.conserved() && st.sold == 1 && st.remaining == 2,
        "{st:?}"
    );

    // B = 1: restore_sale itself, the plain keys and no bucket.
    let plain = sale_id("plain");
    let orders = [RestoredOrder {
        order_id: format!("{plain}-7"),
        user: 5,
        status: RestoredStatus::Paid,
    }];
    let r = s
        .restore_sale_with_buckets(&plain, &open_spec(3, 1), 1, false, &orders)
        .unwrap();
    assert_eq!((r.remaining, r.sold), (2, 1));
    // Past the highest id and Redis's clock x 1000 (an order the restore could not see
    // must never share an id with a new one).
    assert!(r.next_seq > 1_700_000_000_000_000, "{}", r.next_seq);
    assert_eq!(s.buckets_of(&plain).unwrap(), 1);
    let keys = sale_keys(&mut s, &plain);
    assert!(keys
        .iter()
        .all(|k| k.starts_with(&format!("sk:{{{plain}}}:"))));
    let o = buy(&mut s, &plain, 6).unwrap();
    assert_eq!(o, format!("{plain}-{}", r.next_seq));
    assert!(matches!(
        s.restore_sale_with_buckets(&plain, &open_spec(3, 1), 0, false, &[]),
        Err(StockError::Invalid(_))
    ));
}

#[test]
fn restoring_a_kept_sale_whole_with_more_orders_than_stock_leaves_it_as_it_was() {
    let mut s = connect();
    let sale = sale_id("wholeover");
    let spec = open_spec(2, 1);
    s.create_sale_with_buckets(&sale, &spec, B).unwrap();
    let orders: Vec<RestoredOrder> = (0..3u64)
        .map(|i| RestoredOrder {
            order_id: format!("{sale}-{}", 1_000_000 + i),
            user: i + 1,
            status: RestoredStatus::Reserved,
        })
        .collect();
    let before = s.state(&sale).unwrap();
    assert!(matches!(
        s.restore_whole(&sale, &spec, B, &orders),
        Err(StockError::WouldOversell { held: 3, sold: 0 })
    ));
    // Nothing was removed: the sale is there, unchanged, and can be paused.
    // (Redis's clock, `now_ms`, moves on between the two reads.)
    let after = s.state(&sale).unwrap();
    assert_eq!(
        SaleState {
            now_ms: before.now_ms,
            ..after
        },
        before
    );
    s.set_paused(&sale, true).unwrap();
}
