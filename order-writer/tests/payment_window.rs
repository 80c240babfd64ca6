//! The payment window: unpaid orders are cancelled and their stock returned exactly once;
//! paid ones are not; pay and cancel racing on one order have exactly one winner.
//! Each test has its own PostgreSQL: a payment-window scan cancels every expired order
//! it sees, and must not touch the orders of tests running beside it.

mod harness;

use harness::*;
use seckill_common::order::OrderEvent;
use std::time::Duration;
use stock::{OrderState, Settlement, StockError};

#[test]
fn unpaid_orders_are_cancelled_their_stock_returns_and_sells_again() {
    let (_pg, lane) = private_lane(1);
    let mut stock = lane.stock();
    let (sale, msgs) = reserve(&mut stock, 3, 3);
    assert_eq!(stock.state(&sale).unwrap().remaining, 0);
    // The first buyer pays (Redis decides, the paid event follows its order).
    stock.settle(&msgs[0].order_id, Settlement::Paid).unwrap();
    let mut events = msgs.clone();
    events.push(order(
        &msgs[0].order_id,
        &sale,
        msgs[0].user,
        OrderEvent::Paid,
    ));
    let p = lane.producer();
    lane.produce(&p, &events);
    let _w = lane.writer(&[
        ("SECKILL_PAYMENT_WINDOW_SECS", "2"),
        ("SECKILL_CANCEL_SCAN_MS", "200"),
    ]);
    let mut db = lane.db();
    wait_for(
        "the two unpaid orders to be cancelled",
        Duration::from_secs(30),
        || {
            msgs[1..]
                .iter()
                .all(|m| status_of(&mut db, &m.order_id).as_deref() == Some("cancelled"))
        },
    );
    assert_eq!(
        status_of(&mut db, &msgs[0].order_id).as_deref(),
        Some("paid")
    );
    let st = stock.state(&sale).unwrap();
    assert_eq!(
        (st.remaining, st.held, st.sold),
        (2, 0, 1),
        "two units back, once"
    );
    assert!(st.conserved());
    for m in &msgs[1..] {
        assert_eq!(stock.order(&m.order_id).unwrap().0, OrderState::Released);
    }
    // The returned units sell again, and the scan never returns them twice.
    let t = stock
        .issue_token(&sale, 100, Duration::from_secs(60))
        .unwrap();
    stock.purchase(&sale, 100, &t.token).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let st = stock.state(&sale).unwrap();
    assert_eq!((st.remaining, st.held, st.sold), (1, 1, 1));
}

#[test]
fn pay_and_cancel_racing_on_one_order_have_exactly_one_winner() {
    let (_pg, lane) = private_lane(1);
    let mut stock = lane.stock();
    let (sale, msgs) = reserve(&mut stock, 40, 40);
    let p = lane.producer();
    lane.produce(&p, &msgs);
    let mut db = lane.db();
    // Written first, with a long window; then two writers race a payer.
    let w = lane.writer(&[]);
    wait_rows(&mut db, &sale, msgs.len(), Duration::from_secs(30));
    drop(w);
    // Expired, oldest first in `msgs` order; the canceller takes one at a time from the
    // front while the payer pays from the back, so they meet in the middle.
    for (i, m) in msgs.iter().enumerate() {
        db.execute("UPDATE orders SET accepted_at = now() - interval '1 hour' + $2 * interval '1 millisecond' WHERE order_id = $1", &[&m.order_id, &(i as f64)]).unwrap();
    }
    let scan = [
        ("SECKILL_PAYMENT_WINDOW_SECS", "60"),
        ("SECKILL_CANCEL_SCAN_MS", "10"),
        ("SECKILL_CANCEL_BATCH", "1"),
    ];
    let _a = lane.writer(&scan);
    let _b = lane.writer(&scan);
    let payer = {
        let ids: Vec<String> = msgs.iter().rev().map(|m| m.order_id.clone()).collect();
        let mut s = lane.stock();
        std::thread::spawn(move || {
            ids.iter()
                .map(|id| {
                    std::thread::sleep(Duration::from_millis(10));
                    (id.clone(), s.settle(id, Settlement::Paid))
                })
                .collect::<Vec<_>>()
        })
    };
    let paid = payer.join().unwrap();
    wait_for(
        "every order settled in PostgreSQL",
        Duration::from_secs(30),
        || {
            msgs.iter()
                .all(|m| status_of(&mut db, &m.order_id).as_deref() != Some("reserved"))
        },
    );
    let (mut won_pay, mut won_cancel) = (0, 0);
    for (id, r) in paid {
        let pg = status_of(&mut db, &id).unwrap();
        let (redis_state, _) = stock.order(&id).unwrap();
        match r {
            Ok(_) => {
                won_pay += 1;
                assert_eq!(
                    (pg.as_str(), redis_state),
                    ("paid", OrderState::Paid),
                    "{id}: the client was told paid"
                );
            }
            Err(StockError::AlreadyReleased) => {
                won_cancel += 1;
                assert_eq!(
                    (pg.as_str(), redis_state),
                    ("cancelled", OrderState::Released),
                    "{id}: the client was told cancelled"
                );
            }
            Err(e) => panic!("{id}: {e}"),
        }
    }
    assert_eq!(won_pay + won_cancel, msgs.len());
    println!("pay won {won_pay}, cancel won {won_cancel}");
    let st = stock.state(&sale).unwrap();
    assert_eq!(
        (st.sold, st.remaining, st.held),
        (won_pay as i64, won_cancel as i64, 0)
    );
    assert!(st.conserved());
}

#[test]
fn a_reservation_with_no_order_anywhere_is_released_after_the_window() {
    let (_pg, lane) = private_lane(1);
    let mut stock = lane.stock();
    // Three purchases; the gateway "lost" the reply of the last one, so only two orders
    // ever reach the topic. The sale's definition does (as the gateway sends it).
    let (sale, msgs) = reserve(&mut stock, 3, 3);
    let def = seckill_common::order::SaleDefinition {
        stock: 3,
        per_user_limit: 1,
        start_ms: now_ms() - 1000,
        end_ms: now_ms() + 3_600_000,
        buckets: 1,
        price_cents: None,
    };
    let mut events = vec![seckill_common::order::OrderMessage::opened(
        &sale,
        def,
        now_ms(),
    )];
    events.extend(msgs[..2].iter().cloned());
    let p = lane.producer();
    lane.produce(&p, &events);
    let w = lane.writer(&[
        ("SECKILL_PAYMENT_WINDOW_SECS", "2"),
        ("SECKILL_RESERVATION_GRACE_SECS", "0"),
        ("SECKILL_RESERVATION_SWEEP_MS", "300"),
        ("SECKILL_CANCEL_SCAN_MS", "200"),
    ]);
    let mut db = lane.db();
    wait_for(
        "every reservation to be released",
        Duration::from_secs(30),
        || stock.state(&sale).is_ok_and(|s| s.held == 0),
    );
    let st = stock.state(&sale).unwrap();
    assert_eq!(
        (st.remaining, st.held, st.sold),
        (3, 0, 0),
        "every unit is back, once"
    );
    assert!(st.conserved());
    wait_for(
        "the two orders with rows to be cancelled",
        Duration::from_secs(30),
        || {
            msgs[..2]
                .iter()
                .all(|m| status_of(&mut db, &m.order_id).as_deref() == Some("cancelled"))
        },
    );
    assert_eq!(
        status_of(&mut db, &msgs[2].order_id),
        None,
        "no row appears for the lost one"
    );
    drop(w);
}

#[test]
fn a_sale_without_a_definition_in_postgresql_is_checked_for_oversell_against_redis() {
    let (_pg, lane) = private_lane(1);
    let mut stock = lane.stock();
    // Two units, two orders; no `opened` event ever reached PostgreSQL.
    let (sale, msgs) = reserve(&mut stock, 2, 2);
    let mut db = lane.db();
    let refs: Vec<&seckill_common::order::OrderMessage> = msgs.iter().collect();
    order_writer::db::write_batch(&mut db, &refs).unwrap();
    assert!(order_writer::canceller::oversold(&mut db, &mut stock)
        .unwrap()
        .is_empty());
    // A third live row for a sale of two units: an oversell, found without a definition.
    let extra = order(
        &format!("{sale}-999999999"),
        &sale,
        99,
        OrderEvent::Reserved,
    );
    order_writer::db::write_batch(&mut db, &[&extra]).unwrap();
    assert_eq!(
        order_writer::canceller::oversold(&mut db, &mut stock).unwrap(),
        vec![sale]
    );
}
