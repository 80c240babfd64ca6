//! `order-writer rebuild-stock` for a bucketed sale, against the real stack: the
//! `opened` event carries `buckets`, the writer keeps it in `sales`, and after Redis lost
//! the sale the rebuild restores it in its four buckets, as it was; a bucket lost with
//! its master while the sale's meta survived is restored the same way; a move between
//! buckets whose withdrawal a master lost is taken again, and a sale whose stock ledger
//! still does not balance is paused, never trusted, until it can be restored whole
//! (paused: nothing buys in it meanwhile) — as a bucket back from a snapshot older than
//! a restore is.

mod harness;

use harness::*;
use seckill_common::order::{OrderEvent, OrderMessage, SaleDefinition};
use std::time::Duration;
use stock::keys::{self, SaleKeys};
use stock::{Conn, Exec, OrderState, SaleSpec, SaleState, Settlement, Stock, StockError};

const B: u32 = 4;

/// A bucketed sale with ten orders (three paid, two cancelled, five held), written to
/// PostgreSQL by a writer, and Redis's view of it.
struct Sold {
    sale: String,
    ids: Vec<String>,
    before: SaleState,
    buyers_before: Vec<(u64, i64)>,
}

fn sold_sale(lane: &Lane, stock: &mut Stock<Conn>, tag: &str) -> Sold {
    sold_sale_on(lane, stock, tag, &lane.stack.redis_url.clone())
}

/// [`sold_sale`] with the writer on the Redis at `redis_url` (the one `stock` talks to).
fn sold_sale_on(lane: &Lane, stock: &mut Stock<Conn>, tag: &str, redis_url: &str) -> Sold {
    let sale = unique(tag);
    let spec = SaleSpec {
        stock: 20,
        per_user_limit: 1,
        start_ms: now_ms() - 1000,
        end_ms: now_ms() + 3_600_000,
    };
    stock
        .create_priced_sale(&sale, &spec, B, Some(1999))
        .unwrap();
    let def = SaleDefinition {
        stock: spec.stock,
        per_user_limit: spec.per_user_limit,
        start_ms: spec.start_ms,
        end_ms: spec.end_ms,
        buckets: B,
        price_cents: Some(1999),
    };
    let mut msgs = vec![OrderMessage::opened(&sale, def, now_ms())];
    let mut ids = vec![];
    for user in 1..=10u64 {
        let t = stock
            .issue_token(&sale, user, Duration::from_secs(600))
            .unwrap();
        let id = stock.purchase(&sale, user, &t.token).unwrap().order_id;
        msgs.push(order(&id, &sale, user, OrderEvent::Reserved));
        ids.push(id);
    }
    // Users 1-3 pay (their `paid` events follow), 4-5 are cancelled (Redis, then the row,
    // as the payment-window scan does), the rest hold.
    for (i, id) in ids.iter().enumerate().take(3) {
        stock.settle(id, Settlement::Paid).unwrap();
        msgs.push(order(id, &sale, i as u64 + 1, OrderEvent::Paid));
    }
    for id in &ids[3..5] {
        stock.settle(id, Settlement::Released).unwrap();
    }
    let p = lane.producer();
    lane.produce(&p, &msgs);
    let w = lane.writer(&[("SECKILL_REDIS_URL", redis_url)]);
    let mut db = lane.db();
    assert_eq!(
        wait_rows(&mut db, &sale, ids.len(), Duration::from_secs(60)).len(),
        ids.len()
    );
    let cancelled: Vec<&str> = ids[3..5].iter().map(String::as_str).collect();
    db.execute(
        "UPDATE orders SET status = 'cancelled', cancelled_at = now() WHERE order_id = ANY($1)",
        &[&cancelled],
    )
    .unwrap();
    let paid: Vec<&str> = ids[..3].iter().map(String::as_str).collect();
    for _ in 0..600 {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM orders WHERE order_id = ANY($1) AND status = 'paid'",
                &[&paid],
            )
            .unwrap()
            .get(0);
        if n == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(w);
    let stored: i32 = db
        .query_one("SELECT buckets FROM sales WHERE sale = $1", &[&sale])
        .unwrap()
        .get(0);
    assert_eq!(stored, B as i32, "the writer keeps the bucket count");
    let before = stock.state(&sale).unwrap();
    assert_eq!((before.remaining, before.held, before.sold), (12, 5, 3));
    let mut buyers_before = stock.buyers(&sale).unwrap();
    buyers_before.sort();

    Sold {
        sale,
        ids,
        before,
        buyers_before,
    }
}

/// Run `cmd`, whatever it answers.
fn redis_do(stock: &mut Stock<Conn>, cmd: &mut redis::Cmd) -> redis::Value {
    stock.conn_mut().exec(cmd).unwrap()
}

/// Delete every key matching `pattern`.
fn delete_keys(stock: &mut Stock<Conn>, pattern: &str) {
    let v = redis_do(stock, redis::cmd("KEYS").arg(pattern));
    let keys: Vec<String> = redis::from_redis_value(v).unwrap();
    for k in keys {
        redis_do(stock, redis::cmd("DEL").arg(&k));
    }
}

/// The sale is back as it was, in its buckets; limits hold.
fn assert_restored(stock: &mut Stock<Conn>, sold: &Sold) {
    let Sold {
        sale,
        ids,
        before,
        buyers_before,
    } = sold;
    let top = stock
        .conn_mut()
        .exec(
            redis::cmd("HGET")
                .arg(SaleKeys::new(sale).meta)
                .arg("buckets"),
        )
        .unwrap();
    assert_eq!(
        redis::from_redis_value::<String>(top).unwrap(),
        B.to_string(),
        "restored in its buckets"
    );
    let after = stock.state(sale).unwrap();
    assert_eq!(
        (after.remaining, after.held, after.sold, after.initial),
        (before.remaining, before.held, before.sold, before.initial)
    );
    let mut buyers_after = stock.buyers(sale).unwrap();
    buyers_after.sort();
    assert_eq!(&buyers_after, buyers_before);
    for (i, id) in ids.iter().enumerate() {
        let want = match i {
            0..3 => OrderState::Paid,
            3..5 => OrderState::Released,
            _ => OrderState::Reserved,
        };
        assert_eq!(stock.order(id).unwrap(), (want, i as u64 + 1), "{id}");
    }
    // Limits hold, and a new buyer's order names its home bucket.
    assert!(matches!(
        stock.issue_token(sale, 7, Duration::from_secs(60)),
        Err(StockError::AlreadyBought)
    ));
    let t = stock
        .issue_token(sale, 99, Duration::from_secs(60))
        .unwrap();
    let o = stock.purchase(sale, 99, &t.token).unwrap().order_id;
    assert!(!ids.contains(&o));
    let seq = keys::split_order_id(&o).unwrap().1;
    assert_eq!(keys::order_bucket(seq, B), keys::home_bucket(99, B));
}

#[test]
fn a_lost_bucketed_sale_is_rebuilt_in_its_buckets() {
    let lane = Lane::new(2);
    let mut stock = lane.stock();
    let sold = sold_sale(&lane, &mut stock, "rbk");
    let sale = &sold.sale;
    // Redis loses the sale.
    for pattern in [format!("sk:{{{sale}}}:*"), format!("sk:{{{sale}#*")] {
        delete_keys(&mut stock, &pattern);
    }
    assert!(matches!(stock.state(sale), Err(StockError::NoSale)));
    assert_rebuilt(&rebuild_stock(&lane, sale));
    assert_restored(&mut stock, &sold);
    assert_eq!(
        stock.price(sale).unwrap(),
        Some(1999),
        "its price comes back too"
    );
}

#[test]
fn a_bucket_lost_with_its_master_while_the_sale_kept_its_meta_is_restored_whole() {
    let lane = Lane::new(2);
    let mut stock = lane.stock();
    let sold = sold_sale(&lane, &mut stock, "rbkpart");
    let sale = &sold.sale;
    // The master of the first order's bucket restarted empty; the others kept theirs.
    let seq = keys::split_order_id(&sold.ids[0]).unwrap().1;
    let b = keys::order_bucket(seq, B);
    delete_keys(&mut stock, &format!("sk:{{{sale}#{b}}}:*"));
    assert_eq!(stock.lost_buckets(sale).unwrap(), vec![b]);
    assert_rebuilt(&rebuild_stock(&lane, sale));
    assert!(stock.lost_buckets(sale).unwrap().is_empty());
    assert_restored(&mut stock, &sold);
    assert_eq!(stock.ledger(sale).unwrap().excess, 0);
}

#[test]
fn a_move_whose_withdrawal_a_master_lost_is_taken_again_and_an_unbalanced_sale_is_paused() {
    let lane = Lane::new(2);
    let mut stock = lane.stock();
    let sold = sold_sale(&lane, &mut stock, "rbkmove");
    let sale = &sold.sale;
    // A move 0 -> 1 completes; then bucket 0's master loses it (withdrawal and journal).
    let src = SaleKeys::bucket(sale, 0);
    let left = stock.bucket_view(sale, 0).unwrap().stock;
    assert!(left > 0, "bucket 0 has stock to move");
    let id = keys::new_token();
    let moved = stock.withdraw(sale, 0, 1, &id, left).unwrap();
    assert!(stock.deposit(sale, 0, 1, &id, moved).unwrap());
    stock.recover_transfers(sale).unwrap();
    redis_do(
        &mut stock,
        redis::cmd("HDEL").arg(src.transfers_done()).arg(&id),
    );
    redis_do(&mut stock, redis::cmd("INCRBY").arg(&src.stock).arg(moved));
    let l = stock.ledger(sale).unwrap();
    assert_eq!(l.excess, moved, "the units exist twice: {l:?}");
    assert_rebuilt(&rebuild_stock(&lane, sale));
    assert_eq!(stock.ledger(sale).unwrap().excess, 0);
    let st = stock.state(sale).unwrap();
    assert_eq!((st.remaining, st.paused), (sold.before.remaining, false));

    // Units from nowhere (a bug, or a loss nothing explains): the rebuild pauses the
    // sale and says so, instead of trusting it.
    let b2 = SaleKeys::bucket(sale, 2);
    redis_do(&mut stock, redis::cmd("INCRBY").arg(&b2.stock).arg(2));
    let out = rebuild_stock(&lane, sale);
    assert!(!out.status.success(), "an unbalanced sale is an error");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not conserved"), "{text}");
    assert!(stock.state(sale).unwrap().paused, "paused, not trusted");

    // Outside the fence (gateways may be selling, the canceller settling) the operator's
    // rebuild-stock does not rewrite it: it stays paused and says so again.
    let out = rebuild_stock(&lane, sale);
    assert!(!out.status.success(), "still unbalanced");
    assert!(stock.state(sale).unwrap().paused);
    assert_ne!(stock.ledger(sale).unwrap().excess, 0);
}

/// Every key of bucket `b`, dumped (`DUMP`), to be put back later as an old snapshot.
fn dump_bucket(stock: &mut Stock<Conn>, sale: &str, b: u32) -> Vec<(String, Vec<u8>)> {
    let v = redis_do(
        stock,
        redis::cmd("KEYS").arg(format!("sk:{{{sale}#{b}}}:*")),
    );
    let keys: Vec<String> = redis::from_redis_value(v).unwrap();
    keys.into_iter()
        .map(|k| {
            let d = redis_do(stock, redis::cmd("DUMP").arg(&k));
            (k, redis::from_redis_value(d).unwrap())
        })
        .collect()
}

#[test]
fn a_bucket_back_from_a_snapshot_older_than_a_restore_is_restored_whole_under_the_fence() {
    // A Redis of this test's own, with an append-only file: not "born clean", so it is
    // trusted only once a reconcile vouched for it, and the test can take that back.
    let redis = stackctl::redis::Redis {
        dir: std::env::temp_dir().join(testkit::unique("rbksnap_redis")),
        port: stackctl::process::free_port(),
    };
    redis
        .up_with(stackctl::redis::Persistence::AppendOnly)
        .unwrap();
    let lane = Lane::new(2);
    let mut stock = Stock::new(stock::connect(&redis.url(), Duration::from_secs(2)).unwrap());
    let sold = sold_sale_on(&lane, &mut stock, "rbksnap", &redis.url());
    let sale = &sold.sale;
    // A restore spreads the 12 units left evenly (3 a bucket), each bucket's ledger then
    // starting from 3 + its live orders: a bucket with other than 2 live orders, created
    // with 5, is from another moment than the restore's buckets.
    let k = (0..B)
        .find(|&b| {
            let v = stock.bucket_view(sale, b).unwrap();
            v.held + v.sold != 2
        })
        .expect("the buyers' homes are not spread two live orders a bucket");
    // Bucket k's master snapshots it (RDB).
    let snapshot = dump_bucket(&mut stock, sale, k);
    // Another bucket's master restarts empty: the sale is restored whole, every bucket
    // rewritten (and the Redis trusted).
    let j = (k + 1) % B;
    delete_keys(&mut stock, &format!("sk:{{{sale}#{j}}}:*"));
    assert_rebuilt(&rebuild_stock_on(&lane, sale, &redis.url()));
    assert_eq!(stock.ledger(sale).unwrap().excess, 0);
    // Then bucket k's master restarts from its snapshot, older than that restore.
    delete_keys(&mut stock, &format!("sk:{{{sale}#{k}}}:*"));
    for (key, d) in &snapshot {
        redis_do(
            &mut stock,
            redis::cmd("RESTORE")
                .arg(key)
                .arg(0)
                .arg(d.as_slice())
                .arg("REPLACE"),
        );
    }
    assert!(
        stock.lost_buckets(sale).unwrap().is_empty(),
        "nothing looks lost"
    );
    let before = stock.ledger(sale).unwrap();
    assert_ne!(
        before.excess, 0,
        "buckets from two moments do not balance: {before:?}"
    );
    // A buyer paid while PostgreSQL and the topic did not hear of it (its `paid` event
    // was lost): only Redis knows, and the whole restore must keep it.
    let paid_in_redis = &sold.ids[9];
    assert_eq!(stock.settle(paid_in_redis, Settlement::Paid).unwrap(), 10);
    // That master is a process the store does not trust (it restarted): the gateways
    // hold purchases and payments, the canceller holds settlements, and the reconcile
    // over it restores the sale whole.
    redis_do(&mut stock, redis::cmd("DEL").arg(keys::TRUST));
    let cfg = order_writer::config::Config {
        database_url: lane.database_url.clone(),
        kafka_brokers: lane.stack.kafka_brokers.clone(),
        orders_topic: lane.topic.clone(),
        redis_url: redis.url(),
        metrics_listen: String::new(),
        ..Default::default()
    };
    let only = [sale.clone()];
    let done = order_writer::rebuild::run(
        &cfg,
        order_writer::rebuild::Scope::All(&only),
        Duration::from_secs(60),
        true,
    )
    .unwrap();
    assert!(
        matches!(done[0].1, order_writer::rebuild::Outcome::Restored { .. }),
        "{done:?}"
    );
    assert_eq!(stock.ledger(sale).unwrap().excess, 0);
    assert_eq!(stock.order(paid_in_redis).unwrap(), (OrderState::Paid, 10));
    let after = stock.state(sale).unwrap();
    assert_eq!(
        (after.remaining, after.held, after.sold),
        (
            sold.before.remaining,
            sold.before.held - 1,
            sold.before.sold + 1
        )
    );
    assert_eq!(stock.price(sale).unwrap(), Some(1999));
    redis.down();
}
