//! An order acknowledged before Redis lost it, still in a gateway's spool while the
//! reconcile ran (the broker was away too), reaches the writer afterwards: the writer
//! puts its unit back into Redis, so it does not sell again. Against the local stack.

mod harness;

use harness::*;
use seckill_common::order::OrderEvent;
use std::time::Duration;

#[test]
fn an_order_replayed_from_a_spool_after_the_reconcile_holds_its_unit_again() {
    let lane = Lane::new(1);
    let mut stock = lane.stock();
    let (sale, msgs) = reserve(&mut stock, 10, 2);
    let producer = lane.producer();
    lane.produce(&producer, &msgs);
    let _writer = lane.writer(&[]);
    let mut db = lane.db();
    assert_eq!(
        wait_rows(&mut db, &sale, 2, Duration::from_secs(60)).len(),
        2
    );

    // Bought and acknowledged before the loss; Redis lost it (it never issued this
    // sequence number now); its message waited in a spool through the reconcile.
    let mut lost = order(&format!("{sale}-1000000"), &sale, 3, OrderEvent::Reserved);
    lost.at_ms -= 2_000;
    // A token issued before the reconcile (it could have been spent in the lost tail, its
    // order still in the spool): void after it, though the reconcile put nothing back.
    let early = stock
        .issue_token(&sale, 5, Duration::from_secs(600))
        .unwrap()
        .token;
    assert_rebuilt(&rebuild_stock(&lane, &sale));
    match stock.purchase(&sale, 5, &early) {
        Err(stock::StockError::TokenExpired) => {}
        other => panic!("a token issued before the reconcile bought: {other:?}"),
    }
    let before = stock.state(&sale).unwrap();
    assert_eq!((before.remaining, before.held), (8, 2));

    lane.produce(&producer, std::slice::from_ref(&lost));
    assert_eq!(
        wait_rows(&mut db, &sale, 3, Duration::from_secs(60)).len(),
        3
    );
    wait_for(
        "the late order's unit held in Redis",
        Duration::from_secs(30),
        || stock.state(&sale).unwrap().held == 3,
    );
    let after = stock.state(&sale).unwrap();
    assert_eq!((after.remaining, after.held), (7, 3));
    // A token issued after it buys.
    let fresh = stock
        .issue_token(&sale, 5, Duration::from_secs(600))
        .unwrap()
        .token;
    let bought = stock.purchase(&sale, 5, &fresh).unwrap();
    lane.produce(
        &producer,
        &[order(&bought.order_id, &sale, 5, OrderEvent::Reserved)],
    );
    assert_eq!(
        wait_rows(&mut db, &sale, 4, Duration::from_secs(60)).len(),
        4
    );
    assert!(after.conserved());
    // An order accepted after the reconcile is not the writer's to put back: a message
    // Redis never sold (forged, or a bug) takes no unit.
    let mut stray = order(&format!("{sale}-2000000"), &sale, 4, OrderEvent::Reserved);
    stray.at_ms += 60_000;
    lane.produce(&producer, std::slice::from_ref(&stray));
    assert_eq!(
        wait_rows(&mut db, &sale, 5, Duration::from_secs(60)).len(),
        5
    );
    assert_eq!(stock.state(&sale).unwrap().held, 4);
}
