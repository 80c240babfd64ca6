//! A Redis that kept a sale but lost its last writes (an append-only file's last
//! second, a failover's unreplicated writes), simulated by putting the sale's keys back
//! as they were at an earlier moment (DUMP/RESTORE), then `Stock::reapply` from the
//! orders known outside Redis. Against the local stack's real Redis.

use std::time::Duration;
use stock::keys::SaleKeys;
use stock::{RestoredOrder, RestoredStatus, Settlement, Stock, StockError};

const TTL: Duration = Duration::from_secs(60);

use testkit::stack_stock as stock;

fn new_sale(s: &mut Stock<stock::Conn>, tag: &str, units: i64, buckets: u32) -> String {
    testkit::open_sale(s, &format!("t_{tag}"), units, buckets)
}

/// Every key of the sale (all buckets, journals), for a snapshot.
fn sale_keys(sale: &str, buckets: u32) -> Vec<String> {
    let mut ks: Vec<SaleKeys> = vec![SaleKeys::new(sale)];
    if buckets > 1 {
        ks.extend((0..buckets).map(|b| SaleKeys::bucket(sale, b)));
    }
    ks.iter()
        .flat_map(|k| {
            let mut v: Vec<String> = k.all().iter().map(|s| s.to_string()).collect();
            v.push(k.transfers_out());
            v.push(k.transfers_in());
            v.push(k.transfers_done());
            v
        })
        .collect()
}

type Snapshot = Vec<(String, Option<Vec<u8>>)>;

fn snapshot(s: &mut Stock<stock::Conn>, keys: &[String]) -> Snapshot {
    keys.iter()
        .map(|k| {
            let v: Option<Vec<u8>> = redis::cmd("DUMP").arg(k).query(s.conn_mut()).unwrap();
            (k.clone(), v)
        })
        .collect()
}

/// Redis forgets everything written since `snap`.
fn lose_since(s: &mut Stock<stock::Conn>, snap: &Snapshot) {
    for (k, v) in snap {
        match v {
            Some(dump) => {
                let _: () = redis::cmd("RESTORE")
                    .arg(k)
                    .arg(0)
                    .arg(dump)
                    .arg("REPLACE")
                    .query(s.conn_mut())
                    .unwrap();
            }
            None => {
                let _: () = redis::cmd("DEL").arg(k).query(s.conn_mut()).unwrap();
            }
        }
    }
}

fn buy(s: &mut Stock<stock::Conn>, sale: &str, user: u64) -> String {
    let t = s.issue_token(sale, user, TTL).unwrap();
    s.purchase(sale, user, &t.token).unwrap().order_id
}

fn order(id: &str, user: u64, status: RestoredStatus) -> RestoredOrder {
    RestoredOrder {
        order_id: id.to_string(),
        user,
        status,
    }
}

fn partial_loss_is_put_back(buckets: u32) {
    let mut s = stock();
    let sale = new_sale(&mut s, "reapply", 20, buckets);
    let mut truth = Vec::new();
    for user in 1..=6u64 {
        truth.push((buy(&mut s, &sale, user), user, RestoredStatus::Reserved));
    }
    s.settle(&truth[0].0, Settlement::Paid).unwrap();
    truth[0].2 = RestoredStatus::Paid;
    s.settle(&truth[1].0, Settlement::Released).unwrap();
    truth[1].2 = RestoredStatus::Cancelled;
    let snap = snapshot(&mut s, &sale_keys(&sale, buckets));

    // After the snapshot: six more orders, a payment and a cancellation.
    for user in 7..=12u64 {
        truth.push((buy(&mut s, &sale, user), user, RestoredStatus::Reserved));
    }
    s.settle(&truth[2].0, Settlement::Paid).unwrap();
    truth[2].2 = RestoredStatus::Paid;
    s.settle(&truth[3].0, Settlement::Released).unwrap();
    truth[3].2 = RestoredStatus::Cancelled;
    let before = s.state(&sale).unwrap();
    assert_eq!((before.remaining, before.held, before.sold), (10, 8, 2));

    lose_since(&mut s, &snap);
    let lost = s.state(&sale).unwrap();
    assert_eq!(
        (lost.remaining, lost.held, lost.sold),
        (15, 4, 1),
        "the loss is real"
    );

    let orders: Vec<RestoredOrder> = truth.iter().map(|(o, u, st)| order(o, *u, *st)).collect();
    let r = s.reapply(&sale, &orders).unwrap();
    assert_eq!(
        (r.applied, r.conflicts),
        (8, 0),
        "six orders, one payment, one cancellation"
    );
    let after = s.state(&sale).unwrap();
    assert_eq!(
        (after.remaining, after.held, after.sold),
        (before.remaining, before.held, before.sold)
    );
    assert!(after.conserved());
    // Idempotent.
    assert_eq!(s.reapply(&sale, &orders).unwrap().applied, 0);
    assert_eq!(s.state(&sale).unwrap().remaining, before.remaining);

    // A buyer whose order was lost and put back is still at the limit.
    match s
        .issue_token(&sale, 9, TTL)
        .and_then(|t| s.purchase(&sale, 9, &t.token))
    {
        Err(StockError::AlreadyBought) => {}
        other => panic!("user 9 bought again: {other:?}"),
    }
    // New orders never reuse an id handed out before the loss.
    let ids: std::collections::HashSet<&str> = truth.iter().map(|(o, ..)| o.as_str()).collect();
    for user in 13..=20u64 {
        let id = buy(&mut s, &sale, user);
        assert!(!ids.contains(id.as_str()), "order id {id} handed out twice");
    }
    // The rest sells out exactly: 10 left - 8 bought above = 2.
    assert_eq!(s.state(&sale).unwrap().remaining, 2);
    assert!(s.state(&sale).unwrap().conserved());
}

#[test]
fn a_partial_loss_is_put_back_once() {
    partial_loss_is_put_back(1);
}

#[test]
fn a_partial_loss_of_a_bucketed_sale_is_put_back_once() {
    partial_loss_is_put_back(4);
}

#[test]
fn a_lost_unit_sold_again_is_a_conflict_not_a_negative_stock() {
    let mut s = stock();
    let sale = new_sale(&mut s, "conflict", 2, 1);
    let a = buy(&mut s, &sale, 1);
    let snap = snapshot(&mut s, &sale_keys(&sale, 1));
    let b = buy(&mut s, &sale, 2);
    lose_since(&mut s, &snap);
    // Without the fence, the lost unit sells again, and b's id is handed out again.
    let c = buy(&mut s, &sale, 3);
    assert_eq!(c, b, "the sequence went back with the loss");
    let orders = vec![
        order(&a, 1, RestoredStatus::Reserved),
        order(&b, 2, RestoredStatus::Reserved),
    ];
    let r = s.reapply(&sale, &orders).unwrap();
    // b's id is held by user 3 now: a conflict; nothing applied, the stock never goes
    // below zero.
    assert_eq!((r.applied, r.conflicts), (0, 1));
    let st = s.state(&sale).unwrap();
    assert_eq!(st.remaining, 0);
    assert!(st.conserved());

    // a's id went to user 2; another lost order finds no unit left: two conflicts.
    let sale = new_sale(&mut s, "conflict2", 1, 1);
    let snap = snapshot(&mut s, &sale_keys(&sale, 1));
    let a = buy(&mut s, &sale, 1);
    lose_since(&mut s, &snap);
    let _ = buy(&mut s, &sale, 2); // same id again
    let r = s
        .reapply(
            &sale,
            &[
                order(&a, 1, RestoredStatus::Reserved),
                order(
                    &format!("{sale}-999999999999999"),
                    3,
                    RestoredStatus::Reserved,
                ),
            ],
        )
        .unwrap();
    assert_eq!((r.applied, r.conflicts), (0, 2));
    assert!(s.state(&sale).unwrap().conserved());
}

#[test]
fn a_payment_lost_before_the_order_expired_here_is_paid_again_from_stock() {
    let mut s = stock();
    let sale = new_sale(&mut s, "paid_there", 3, 1);
    let a = buy(&mut s, &sale, 1);
    let snap = snapshot(&mut s, &sale_keys(&sale, 1));
    // The payment reaches PostgreSQL (its event), then Redis loses it...
    s.settle(&a, Settlement::Paid).unwrap();
    lose_since(&mut s, &snap);
    // ...and the order, held again here, expires and is released.
    s.settle(&a, Settlement::Released).unwrap();
    assert_eq!(s.state(&sale).unwrap().remaining, 3);
    let orders = vec![order(&a, 1, RestoredStatus::Paid)];
    let r = s.reapply(&sale, &orders).unwrap();
    assert_eq!((r.applied, r.conflicts), (1, 0));
    let st = s.state(&sale).unwrap();
    assert_eq!((st.remaining, st.held, st.sold), (2, 0, 1));
    assert!(st.conserved());
    assert_eq!(s.order(&a).unwrap().0, stock::OrderState::Paid);
    // Idempotent, and the buyer is at the limit again.
    assert_eq!(s.reapply(&sale, &orders).unwrap().applied, 0);
    assert!(matches!(
        s.issue_token(&sale, 1, TTL),
        Err(StockError::AlreadyBought)
    ));
}

#[test]
fn a_lost_payment_of_a_buyer_who_bought_again_is_paid_from_stock_not_sold_again() {
    let mut s = stock();
    let sale = new_sale(&mut s, "limit_there", 3, 1);
    let a = buy(&mut s, &sale, 1);
    let snap = snapshot(&mut s, &sale_keys(&sale, 1));
    s.settle(&a, Settlement::Paid).unwrap();
    lose_since(&mut s, &snap);
    // The lost payment's order expires here, and the buyer buys again.
    s.settle(&a, Settlement::Released).unwrap();
    let b = buy(&mut s, &sale, 1);
    let orders = vec![
        order(&a, 1, RestoredStatus::Paid),
        order(&b, 1, RestoredStatus::Reserved),
    ];
    let r = s.reapply(&sale, &orders).unwrap();
    // The paid unit is taken back (PostgreSQL has it paid: it must not sell again), even
    // though the buyer's new order puts them over the limit.
    assert_eq!((r.applied, r.conflicts), (1, 0));
    let st = s.state(&sale).unwrap();
    assert_eq!((st.remaining, st.held, st.sold), (1, 1, 1));
    assert!(st.conserved());
    // A reserved put-back is still refused at the limit.
    let c = format!("{sale}-999999999");
    let r = s
        .reapply(&sale, &[order(&c, 1, RestoredStatus::Reserved)])
        .unwrap();
    assert_eq!((r.applied, r.conflicts), (0, 1));
}

/// A token spent in the lost tail comes back from the loss as new. Its order is put back
/// by the reconcile; the token must not buy a second one (limit 2 leaves room for it):
/// every token issued before the reconcile is void, a token issued after it buys.
fn a_token_spent_in_a_lost_tail_is_void(buckets: u32) {
    let mut s = stock();
    let sale = testkit::unique("t_void");
    let now = testkit::now_ms();
    let spec = stock::SaleSpec {
        stock: 10,
        per_user_limit: 2,
        start_ms: now - 3_600_000,
        end_ms: now + 3_600_000,
    };
    s.create_sale_with_buckets(&sale, &spec, buckets).unwrap();
    let user = 5u64;
    let home = if buckets > 1 {
        SaleKeys::bucket(&sale, stock::keys::home_bucket(user, buckets))
    } else {
        SaleKeys::new(&sale)
    };
    let spent = s.issue_token(&sale, user, TTL).unwrap().token;
    let unused = s.issue_token(&sale, user, TTL).unwrap().token;
    let mut keys = sale_keys(&sale, buckets);
    keys.push(home.token(&spent));
    let snap = snapshot(&mut s, &keys);
    let lost_order = s.purchase(&sale, user, &spent).unwrap().order_id;
    lose_since(&mut s, &snap);

    let r = s
        .reapply(&sale, &[order(&lost_order, user, RestoredStatus::Reserved)])
        .unwrap();
    assert_eq!((r.applied, r.conflicts), (1, 0));
    for token in [&spent, &unused] {
        match s.purchase(&sale, user, token) {
            Err(StockError::TokenExpired) => {}
            other => panic!("a token issued before the reconcile bought: {other:?}"),
        }
    }
    let fresh = s.issue_token(&sale, user, TTL).unwrap().token;
    let second = s.purchase(&sale, user, &fresh).unwrap().order_id;
    assert_ne!(second, lost_order);
    match s
        .issue_token(&sale, user, TTL)
        .and_then(|t| s.purchase(&sale, user, &t.token))
    {
        Err(StockError::AlreadyBought) => {}
        other => panic!("the buyer went over the limit: {other:?}"),
    }
    let st = s.state(&sale).unwrap();
    assert_eq!((st.remaining, st.held), (8, 2));
    assert!(st.conserved());
}

#[test]
fn a_token_spent_in_a_lost_tail_does_not_buy_again_after_the_reconcile() {
    a_token_spent_in_a_lost_tail_is_void(1);
}

#[test]
fn a_token_spent_in_a_lost_tail_of_a_bucket_does_not_buy_again_after_the_reconcile() {
    a_token_spent_in_a_lost_tail_is_void(4);
}
