//! Expiry at a sale's scale: the payment-window scan settles Redis and PostgreSQL
//! together, page by page; the reservation sweep never releases a unit whose row still
//! reads `reserved`; an order Redis released that collides with the buyer's new order is
//! written cancelled, never dead-lettered. Each test has its own PostgreSQL (the scan
//! cancels every expired row it sees).

mod harness;

use harness::*;
use order_writer::canceller;
use order_writer::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use seckill_common::order::{OrderEvent, OrderMessage};
use std::time::{Duration, Instant};
use stock::{OrderState, Settlement, Stock};

/// Messages on the dead-letter topic (its high watermark; one partition).
fn dead_letters(lane: &Lane) -> i64 {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &lane.stack.kafka_brokers)
        .create()
        .unwrap();
    let (_, high) = c
        .fetch_watermarks(&lane.dlq, 0, Duration::from_secs(10))
        .unwrap();
    high
}

/// A new order for `user` (a new token), as the gateway would produce it.
fn buy(stock: &mut Stock<stock::Conn>, sale: &str, user: u64) -> OrderMessage {
    let t = stock
        .issue_token(sale, user, Duration::from_secs(600))
        .unwrap();
    let p = stock.purchase(sale, user, &t.token).unwrap();
    assert!(!p.replayed);
    let mut m = order(&p.order_id, sale, user, OrderEvent::Reserved);
    m.at_ms = p.reserved_at_ms;
    m
}

fn count(db: &mut postgres::Client, sale: &str, status: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM orders WHERE sale = $1 AND status = $2",
        &[&sale, &status],
    )
    .unwrap()
    .get(0)
}

fn scan_config(url: &str, redis_url: &str) -> Config {
    Config {
        database_url: url.to_string(),
        redis_url: redis_url.to_string(),
        payment_window_secs: 0,
        reservation_grace_secs: 0,
        ..Config::default()
    }
}

#[test]
fn a_buyer_whose_released_order_still_has_a_live_row_buys_again_without_a_dead_letter() {
    let (_pg, lane) = private_lane(1);
    let mut stock = lane.stock();
    let (sale, first) = reserve(&mut stock, 4, 2);
    let p = lane.producer();
    lane.produce(&p, &first);
    // The writer's own canceller stays out of the way (a window of an hour).
    let _w = lane.writer(&[("SECKILL_PAYMENT_WINDOW_SECS", "3600")]);
    let mut db = lane.db();
    wait_rows(&mut db, &sale, 2, Duration::from_secs(60));
    // Redis released both orders ahead of PostgreSQL (as a sweep that ran before a
    // delayed row landed does); each buyer buys again. Buyer 1's new order meets its old
    // live row in the table; buyer 2's old order comes again in the same batch as its new
    // one (a replay), so both collisions are seen.
    for m in &first {
        stock.settle(&m.order_id, Settlement::Released).unwrap();
    }
    let again1 = buy(&mut stock, &sale, first[0].user);
    let again2 = buy(&mut stock, &sale, first[1].user);
    // A poison row first in the batch (units past the column's range): the database
    // reports it before the collisions, which are then settled all the same.
    let mut poison = order(
        &format!("{sale}-999999999"),
        &sale,
        77,
        OrderEvent::Reserved,
    );
    poison.units = 3_000_000_000;
    lane.produce(
        &p,
        &[poison, again1.clone(), first[1].clone(), again2.clone()],
    );
    wait_for("the new orders' rows", Duration::from_secs(60), || {
        status_of(&mut db, &again1.order_id).is_some()
            && status_of(&mut db, &again2.order_id).is_some()
    });
    for m in &first {
        assert_eq!(
            status_of(&mut db, &m.order_id).as_deref(),
            Some("cancelled")
        );
    }
    for m in [&again1, &again2] {
        assert_eq!(status_of(&mut db, &m.order_id).as_deref(), Some("reserved"));
    }
    let dead = lane.dead_letters(2, Duration::from_secs(5));
    assert_eq!(dead.len(), 1, "only the poison row is dead-lettered");
    assert!(dead[0].1.contains("units"), "{:?}", dead[0].1);
}

#[test]
fn the_reservation_sweep_leaves_orders_with_rows_to_the_payment_window_scan() {
    let (_pg, lane) = private_lane(1);
    let mut stock = lane.stock();
    let (sale, msgs) = reserve(&mut stock, 2, 2);
    let mut db = lane.db();
    // The first order has its row; the second's purchase reply was lost (no row anywhere).
    let refs: Vec<&OrderMessage> = msgs[..1].iter().collect();
    order_writer::db::write_batch(&mut db, &refs).unwrap();
    let cfg = scan_config(&lane.database_url, &lane.stack.redis_url);
    std::thread::sleep(Duration::from_millis(20));
    let released = canceller::sweep_reservations(&cfg, &mut db, &mut stock).unwrap();
    assert_eq!(released, 1, "only the orphan reservation is released");
    assert_eq!(
        stock.order(&msgs[0].order_id).unwrap().0,
        OrderState::Reserved
    );
    assert_eq!(
        stock.order(&msgs[1].order_id).unwrap().0,
        OrderState::Released
    );
    // The scan settles the row's order in Redis and the row in one step.
    let done = canceller::scan_once(&cfg, &mut db, &mut stock).unwrap();
    assert_eq!(done.cancelled, 1);
    assert_eq!(
        status_of(&mut db, &msgs[0].order_id).as_deref(),
        Some("cancelled")
    );
    assert_eq!(
        stock.order(&msgs[0].order_id).unwrap().0,
        OrderState::Released
    );
    let st = stock.state(&sale).unwrap();
    assert_eq!((st.remaining, st.held, st.sold), (2, 0, 0));
}

/// A sale of `SECKILL_EXPIRY_UNITS` units (default 4,000; the issue's figure is 100,000),
/// every unit bought, half paid, the window over: one scanning thread cancels the unpaid
/// half page by page (its rate printed), some buyers whose order lapsed buy again, among
/// them buyers whose release reached Redis before their row was cancelled. At the end:
/// no dead letter, no oversell, PostgreSQL and Redis agree order by order.
#[test]
fn a_big_sale_half_unpaid_expires_in_pages_and_the_lapsed_buy_again() {
    let units: u64 = std::env::var("SECKILL_EXPIRY_UNITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let (_pg, lane) = private_lane(4);
    let mut stock = lane.stock();
    let (sale, mut msgs) = reserve(&mut stock, units as i64, units);
    // Bought a minute ago: past the 30 s window the scan below uses, while the orders
    // bought again during the test are not.
    for m in &mut msgs {
        m.at_ms -= 60_000;
    }
    let mut events = msgs.clone();
    for m in msgs.iter().step_by(2) {
        stock.settle(&m.order_id, Settlement::Paid).unwrap();
        events.push(order(&m.order_id, &sale, m.user, OrderEvent::Paid));
    }
    let p = lane.producer();
    lane.produce(&p, &events);
    let _w = lane.writer(&[
        ("SECKILL_PAYMENT_WINDOW_SECS", "3600"),
        ("SECKILL_BATCH_MAX", "2000"),
    ]);
    let mut db = lane.db();
    wait_rows(&mut db, &sale, units as usize, Duration::from_secs(300));
    wait_for("the paid events", Duration::from_secs(120), || {
        count(&mut db, &sale, "paid") == units.div_ceil(2) as i64
    });
    // Ten lapsed buyers' releases reach Redis before the scan reaches their rows.
    let unpaid: Vec<&OrderMessage> = msgs.iter().skip(1).step_by(2).collect();
    let early: Vec<&OrderMessage> = unpaid.iter().take(10).copied().collect();
    for m in &early {
        stock.settle(&m.order_id, Settlement::Released).unwrap();
    }
    let rebought_early: Vec<OrderMessage> = early
        .iter()
        .map(|m| buy(&mut stock, &sale, m.user))
        .collect();
    lane.produce(&p, &rebought_early);
    // The payment window ends for everyone: one thread scans, as one writer does.
    let cfg = Config {
        cancel_batch: std::env::var("SECKILL_EXPIRY_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Config::default().cancel_batch),
        payment_window_secs: 30,
        ..scan_config(&lane.database_url, &lane.stack.redis_url)
    };
    let began = Instant::now();
    let mut cancelled = 0;
    loop {
        let done = canceller::scan_once(&cfg, &mut db, &mut stock).unwrap();
        cancelled += done.cancelled;
        if done.cancelled + done.paid + done.unsettled == 0 {
            break;
        }
    }
    let took = began.elapsed();
    println!(
        "expiry: {cancelled} orders cancelled in {:.2}s by one scanning thread: {:.0}/s",
        took.as_secs_f64(),
        cancelled as f64 / took.as_secs_f64().max(1e-6)
    );
    wait_for(
        "the early re-purchases' rows",
        Duration::from_secs(60),
        || {
            rebought_early
                .iter()
                .all(|m| status_of(&mut db, &m.order_id).is_some())
        },
    );
    // A hundred more lapsed buyers buy again.
    let rebought: Vec<OrderMessage> = unpaid[10..unpaid.len().min(110)]
        .iter()
        .map(|m| buy(&mut stock, &sale, m.user))
        .collect();
    lane.produce(&p, &rebought);
    wait_rows(
        &mut db,
        &sale,
        units as usize + rebought_early.len() + rebought.len(),
        Duration::from_secs(60),
    );
    assert_eq!(
        dead_letters(&lane),
        0,
        "no acknowledged order dead-lettered"
    );
    assert!(order_writer::db::oversold_sales(&mut db)
        .unwrap()
        .is_empty());
    // PostgreSQL and Redis agree, order by order.
    let rows = db
        .query(
            "SELECT order_id, status FROM orders WHERE sale = $1",
            &[&sale],
        )
        .unwrap();
    for r in &rows {
        let (id, status): (String, String) = (r.get(0), r.get(1));
        let want = match stock.order(&id).unwrap().0 {
            OrderState::Reserved => "reserved",
            OrderState::Paid => "paid",
            OrderState::Released => "cancelled",
        };
        assert_eq!(status, want, "{id}");
    }
    let st = stock.state(&sale).unwrap();
    assert!(st.conserved());
    assert_eq!(st.sold, units.div_ceil(2) as i64);
    assert_eq!(st.held as usize, rebought_early.len() + rebought.len());
}
