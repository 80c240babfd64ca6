//! Stock buckets against the real Redis: a rush of ten times more buyers than units over
//! four buckets (every unit sold, none stranded, conservation, no oversell, the per-user
//! limit, and the share of "sold out" answers given while units remained elsewhere);
//! a transfer interrupted between withdraw and deposit, recovered exactly once; orders
//! settled in their bucket; one bucket is the plain layout.

use std::collections::HashSet;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;
use stock::keys::{self, SaleKeys};
use stock::{Conn, Exec, Settlement, Stock, StockError};

const BUCKETS: u32 = 4;
const UNITS: i64 = 400;
const USERS: u64 = 4_000;
const THREADS: usize = 8;

use testkit::{open_spec, stack_stock as connect};

fn sale_id(tag: &str) -> String {
    testkit::unique(&format!("bk_{tag}"))
}

#[test]
fn rush_over_four_buckets_sells_every_unit_without_phantom_sold_outs() {
    let sale = sale_id("rush");
    connect()
        .create_sale_with_buckets(&sale, &open_spec(UNITS, 1), BUCKETS)
        .unwrap();

    #[derive(Default)]
    struct Tally {
        orders: Vec<(String, u64)>,
        sold_out: u64,
        phantom: u64,
        already: u64,
        faults: Vec<StockError>,
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (sale, tally, start) = (sale.clone(), tally.clone(), start.clone());
            std::thread::spawn(move || {
                let mut s = connect();
                start.wait();
                // Every buyer tries twice (the second must meet the per-user limit).
                for attempt in (t as u64..USERS * 2).step_by(THREADS) {
                    let user = 1 + attempt % USERS;
                    let r = s
                        .issue_token(&sale, user, Duration::from_secs(60))
                        .and_then(|tok| s.purchase(&sale, user, &tok.token));
                    let mut tl = tally.lock().unwrap();
                    match r {
                        Ok(p) => tl.orders.push((p.order_id, user)),
                        Err(StockError::SoldOut) => {
                            tl.sold_out += 1;
                            drop(tl);
                            // Phantom: the whole sale still had units right after.
                            let left = s.state(&sale).unwrap().remaining;
                            if left > 0 {
                                tally.lock().unwrap().phantom += 1;
                            }
                        }
                        Err(StockError::AlreadyBought) => tl.already += 1,
                        Err(e) => tl.faults.push(e),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let tl = tally.lock().unwrap();
    assert!(tl.faults.is_empty(), "faults: {:?}", tl.faults);

    let mut s = connect();
    let st = s.state(&sale).unwrap();
    let spread = s.spread(&sale, BUCKETS).unwrap();
    let stranded: i64 = spread.remaining();
    assert!(st.conserved(), "{st:?}");
    assert_eq!(stranded, 0, "units left in buckets: {spread:?}");
    assert_eq!(spread.in_flight, 0);
    assert_eq!(tl.orders.len() as i64, UNITS, "every unit sold, none twice");
    assert_eq!(st.held + st.sold, UNITS);
    let ids: HashSet<&str> = tl.orders.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(ids.len(), tl.orders.len(), "order ids unique");
    let users: HashSet<u64> = tl.orders.iter().map(|(_, u)| *u).collect();
    assert_eq!(users.len(), tl.orders.len(), "per-user limit");
    let buyers = s.buyers(&sale).unwrap();
    assert!(
        buyers.iter().all(|(_, n)| *n == 1),
        "per-user limit in Redis"
    );
    assert_eq!(buyers.len() as i64, UNITS);
    // Each order was bought in its buyer's home bucket, named by its sequence.
    for (o, u) in &tl.orders {
        let (sl, seq) = keys::split_order_id(o).unwrap();
        assert_eq!(sl, sale);
        assert_eq!(
            keys::order_bucket(seq, BUCKETS),
            keys::home_bucket(*u, BUCKETS)
        );
    }
    let answers = USERS * 2;
    let mut moves = 0;
    for b in 0..BUCKETS {
        let xin = SaleKeys::bucket(&sale, b).transfers_in();
        if let redis::Value::Int(n) = s.conn_mut().exec(redis::cmd("HLEN").arg(&xin)).unwrap() {
            moves += n;
        }
    }
    assert!(moves > 0, "the buckets never rebalanced");
    let share = tl.phantom as f64 / tl.sold_out.max(1) as f64;
    println!(
        "buckets B={BUCKETS}: {UNITS} units, {USERS} buyers x2 attempts over {THREADS} threads: \
         sold {}, stranded {stranded}, sold-out answers {} of {answers}, phantom sold-outs {} \
         ({:.2}% of sold-outs), already-bought {}, transfers between buckets {moves}",
        tl.orders.len(),
        tl.sold_out,
        tl.phantom,
        share * 100.0,
        tl.already
    );
    assert!(tl.already > 0);
}

#[test]
fn a_transfer_cut_between_withdraw_and_deposit_is_recovered_exactly_once() {
    let sale = sale_id("crash");
    let mut s = connect();
    s.create_sale_with_buckets(&sale, &open_spec(40, 1), BUCKETS)
        .unwrap();
    let stock_of = |s: &mut Stock<Conn>, b| s.bucket_view(&sale, b).unwrap().stock;
    assert_eq!((0..BUCKETS).map(|b| stock_of(&mut s, b)).sum::<i64>(), 40);

    // Crash after the withdraw: units journaled in the source, counted in flight.
    let id = keys::new_token();
    assert_eq!(s.withdraw(&sale, 0, 1, &id, 5).unwrap(), 5);
    assert_eq!(stock_of(&mut s, 0), 5);
    assert_eq!(stock_of(&mut s, 1), 10);
    let st = s.state(&sale).unwrap();
    assert_eq!(st.remaining, 40, "in flight counts as remaining");
    assert!(st.conserved(), "{st:?}");
    assert_eq!(s.spread(&sale, BUCKETS).unwrap().in_flight, 5);

    // Recovery deposits once; run again, nothing more.
    assert_eq!(s.recover_transfers(&sale).unwrap(), 1);
    assert_eq!(s.recover_transfers(&sale).unwrap(), 0);
    assert_eq!(stock_of(&mut s, 0), 5);
    assert_eq!(stock_of(&mut s, 1), 15);
    assert!(s.bucket_view(&sale, 0).unwrap().journal.is_empty());
    let st = s.state(&sale).unwrap();
    assert_eq!(st.remaining, 40);
    assert!(st.conserved(), "{st:?}");
    // The mover coming back late with its deposit: a no-op.
    assert!(!s.deposit(&sale, 0, 1, &id, 5).unwrap());
    assert_eq!(stock_of(&mut s, 1), 15);

    // Crash after the deposit, before the journal entry is dropped: not counted twice,
    // and recovery only drops the entry.
    let id2 = keys::new_token();
    assert_eq!(s.withdraw(&sale, 2, 3, &id2, 4).unwrap(), 4);
    assert!(s.deposit(&sale, 2, 3, &id2, 4).unwrap());
    assert_eq!(s.state(&sale).unwrap().remaining, 40);
    assert_eq!(s.recover_transfers(&sale).unwrap(), 0);
    assert_eq!(s.recover_transfers(&sale).unwrap(), 0);
    assert_eq!(stock_of(&mut s, 2), 6);
    assert_eq!(stock_of(&mut s, 3), 14);
    assert_eq!(s.spread(&sale, BUCKETS).unwrap().in_flight, 0);

    // A withdraw never takes more than the bucket holds.
    let id3 = keys::new_token();
    assert_eq!(s.withdraw(&sale, 0, 2, &id3, 100).unwrap(), 5);
    assert_eq!(s.withdraw(&sale, 0, 2, &keys::new_token(), 1).unwrap(), 0);
    assert_eq!(s.recover_transfers(&sale).unwrap(), 1);
    let st = s.state(&sale).unwrap();
    assert!(st.conserved() && st.remaining == 40, "{st:?}");
}

#[test]
fn bucketed_orders_settle_in_their_bucket_and_one_bucket_is_the_plain_layout() {
    let mut s = connect();
    // B = 1: today's keys and nothing else.
    let plain = sale_id("plain");
    s.create_sale_with_buckets(&plain, &open_spec(3, 1), 1)
        .unwrap();
    assert_eq!(s.buckets_of(&plain).unwrap(), 1);
    let exists = |s: &mut Stock<Conn>, key: &str| {
        s.conn_mut()
            .exec(redis::cmd("EXISTS").arg(key))
            .map(|v| v == redis::Value::Int(1))
            .unwrap()
    };
    assert!(!exists(&mut s, &SaleKeys::bucket(&plain, 0).meta));
    let t = s.issue_token(&plain, 7, Duration::from_secs(60)).unwrap();
    let p = s.purchase(&plain, 7, &t.token).unwrap();
    assert_eq!(p.remaining, 2);
    assert!(exists(&mut s, &SaleKeys::new(&plain).stock));

    // B = 4, limit 2: orders in the buyer's home bucket; release returns the unit there.
    let sale = sale_id("settle");
    s.create_sale_with_buckets(&sale, &open_spec(8, 2), BUCKETS)
        .unwrap();
    assert_eq!(s.buckets_of(&sale).unwrap(), BUCKETS);
    assert!(matches!(
        s.create_sale_with_buckets(&sale, &open_spec(8, 2), BUCKETS),
        Err(StockError::SaleExists)
    ));
    let user = 11;
    let home = keys::home_bucket(user, BUCKETS);
    let mut orders = vec![];
    for _ in 0..2 {
        let t = s.issue_token(&sale, user, Duration::from_secs(60)).unwrap();
        orders.push(s.purchase(&sale, user, &t.token).unwrap().order_id);
    }
    // Its home bucket held 2; the third attempt meets the limit before the stock.
    let t = s.issue_token(&sale, user, Duration::from_secs(60));
    assert!(matches!(t, Err(StockError::AlreadyBought)), "{t:?}");
    for o in &orders {
        let (_, seq) = keys::split_order_id(o).unwrap();
        assert_eq!(keys::order_bucket(seq, BUCKETS), home);
        assert_eq!(s.order(o).unwrap(), (stock::OrderState::Reserved, user));
    }
    let before = s.bucket_view(&sale, home).unwrap().stock;
    assert_eq!(s.settle(&orders[0], Settlement::Released).unwrap(), user);
    assert_eq!(s.bucket_view(&sale, home).unwrap().stock, before + 1);
    assert_eq!(s.settle(&orders[1], Settlement::Paid).unwrap(), user);
    assert!(matches!(
        s.settle(&orders[0], Settlement::Paid),
        Err(StockError::AlreadyReleased)
    ));
    let st = s.state(&sale).unwrap();
    assert_eq!((st.remaining, st.held, st.sold, st.initial), (7, 0, 1, 8));
    assert!(st.conserved());

    // Drain another user's home bucket's neighbours: a buyer whose home is empty still
    // buys while any bucket has stock, and only an empty sale is sold out.
    let mut bought = 0;
    for u in 100..200u64 {
        match s
            .issue_token(&sale, u, Duration::from_secs(60))
            .and_then(|t| s.purchase(&sale, u, &t.token))
        {
            Ok(_) => bought += 1,
            Err(StockError::SoldOut) => {
                assert_eq!(s.state(&sale).unwrap().remaining, 0, "phantom sold out");
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(bought, 7);
    let st = s.state(&sale).unwrap();
    assert!(st.conserved() && st.remaining == 0, "{st:?}");

    // The sweep's paging visits every bucket.
    let mut cursor = 0;
    let mut seen = 0;
    loop {
        let (next, ids) = s
            .expired_reservations(&sale, Duration::ZERO, cursor, 2)
            .unwrap();
        seen += ids.len();
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen as i64, st.held);

    // Pause reaches every bucket.
    s.set_paused(&sale, true).unwrap();
    assert!(s.state(&sale).unwrap().paused);
    for u in [1u64, 2, 3, 4, 5, 6] {
        assert!(matches!(
            s.issue_token(&sale, u, Duration::from_secs(60)),
            Err(StockError::Paused)
        ));
    }
}

/// A key's integer, 0 if absent.
fn int(s: &mut Stock<Conn>, cmd: &mut redis::Cmd) -> i64 {
    match s.conn_mut().exec(cmd).unwrap() {
        redis::Value::Int(n) => n,
        redis::Value::Nil | redis::Value::Okay => 0,
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap().parse().unwrap(),
        v => panic!("{v:?}"),
    }
}

#[test]
fn a_move_half_lost_with_a_master_is_found_by_the_ledger_and_redone_once() {
    let sale = sale_id("halflost");
    let mut s = connect();
    s.create_sale_with_buckets(&sale, &open_spec(40, 1), BUCKETS)
        .unwrap();
    assert_eq!(s.ledger(&sale).unwrap().excess, 0);
    // A buyer, so the ledger counts held units too.
    let user = (1..).find(|u| keys::home_bucket(*u, BUCKETS) == 0).unwrap();
    let t = s.issue_token(&sale, user, Duration::from_secs(60)).unwrap();
    s.purchase(&sale, user, &t.token).unwrap();

    // A complete move 0 → 1, then the source master loses it (its AOF's last second):
    // the withdrawal and the journal entry are gone, the deposit survived elsewhere.
    let id = keys::new_token();
    assert_eq!(s.withdraw(&sale, 0, 1, &id, 5).unwrap(), 5);
    assert!(s.deposit(&sale, 0, 1, &id, 5).unwrap());
    assert_eq!(
        s.recover_transfers(&sale).unwrap(),
        0,
        "journal entry moved to done"
    );
    let src = SaleKeys::bucket(&sale, 0);
    int(
        &mut s,
        redis::cmd("HDEL").arg(src.transfers_done()).arg(&id),
    );
    int(&mut s, redis::cmd("INCRBY").arg(&src.stock).arg(5));
    // The sum looks like 45 units; the ledger says which are twice.
    assert_eq!(s.state(&sale).unwrap().remaining, 44);
    let l = s.ledger(&sale).unwrap();
    assert_eq!((l.excess, l.initial, l.in_flight), (5, 40, 0), "{l:?}");
    let r = s.reconcile_transfers(&sale).unwrap();
    assert_eq!(
        (r.rewithdrawn, r.shortfall, r.deposited),
        (1, 0, 0),
        "{r:?}"
    );
    assert_eq!(s.ledger(&sale).unwrap().excess, 0);
    assert_eq!(s.state(&sale).unwrap().remaining, 39);
    let again = s.reconcile_transfers(&sale).unwrap();
    assert_eq!((again.rewithdrawn, again.deposited), (0, 0), "once only");

    // The other half: the destination loses the deposit while the source has it done.
    let id2 = keys::new_token();
    assert_eq!(s.withdraw(&sale, 2, 3, &id2, 4).unwrap(), 4);
    assert!(s.deposit(&sale, 2, 3, &id2, 4).unwrap());
    s.recover_transfers(&sale).unwrap();
    let dst = SaleKeys::bucket(&sale, 3);
    int(&mut s, redis::cmd("HDEL").arg(dst.transfers_in()).arg(&id2));
    int(&mut s, redis::cmd("DECRBY").arg(&dst.stock).arg(4));
    assert_eq!(s.ledger(&sale).unwrap().excess, -4, "units vanished");
    let r = s.reconcile_transfers(&sale).unwrap();
    assert_eq!((r.rewithdrawn, r.deposited), (0, 1), "{r:?}");
    assert_eq!(s.ledger(&sale).unwrap().excess, 0);
    assert_eq!(s.state(&sale).unwrap().remaining, 39);

    // A redone withdrawal whose units were sold meanwhile reports the shortfall.
    let id3 = keys::new_token();
    assert_eq!(s.withdraw(&sale, 1, 2, &id3, 3).unwrap(), 3);
    assert!(s.deposit(&sale, 1, 2, &id3, 3).unwrap());
    s.recover_transfers(&sale).unwrap();
    let b1 = SaleKeys::bucket(&sale, 1);
    int(
        &mut s,
        redis::cmd("HDEL").arg(b1.transfers_done()).arg(&id3),
    );
    int(&mut s, redis::cmd("SET").arg(&b1.stock).arg(1));
    let r = s.reconcile_transfers(&sale).unwrap();
    assert_eq!((r.rewithdrawn, r.shortfall), (1, 2), "{r:?}");
    assert!(s.ledger(&sale).unwrap().excess != 0);
}

#[test]
fn a_sale_whose_bucket_survived_its_meta_is_not_created_over_it() {
    let sale = sale_id("survivor");
    let mut s = connect();
    s.create_sale_with_buckets(&sale, &open_spec(40, 1), BUCKETS)
        .unwrap();
    let user = (1..).find(|u| keys::home_bucket(*u, BUCKETS) == 2).unwrap();
    let t = s.issue_token(&sale, user, Duration::from_secs(60)).unwrap();
    s.purchase(&sale, user, &t.token).unwrap();
    // The master of the sale's meta restarted empty; bucket 2's master did not.
    int(&mut s, redis::cmd("DEL").arg(SaleKeys::new(&sale).meta));
    assert_eq!(
        s.create_sale_with_buckets(&sale, &open_spec(40, 1), BUCKETS),
        Err(StockError::SaleExists)
    );
    let held = int(
        &mut s,
        redis::cmd("HLEN").arg(SaleKeys::bucket(&sale, 2).reservations),
    );
    assert_eq!(held, 1, "the surviving bucket keeps its reservation");
}
