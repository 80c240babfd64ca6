//! Payments come from the payment provider only: the buyer's `POST /v1/orders/{id}/pay`
//! starts one (the intent) and changes nothing; the provider's callback, signed, pays.
//! Forged, stale, wrong-amount, wrong-currency and wrong-order callbacks are refused and
//! change nothing; a duplicate is answered the same; a payment for an order already
//! cancelled is recorded as a refund due, never a sale; a payment racing the expiry ends
//! exactly one way.

mod harness;

use harness::{consume, now_ms, payment_body, Gateway, WEBHOOK};
use std::time::Duration;
use stock::{OrderState, Settlement, StockError};

fn now_s() -> u64 {
    (now_ms() / 1000) as u64
}

/// A sale priced 19.99 and an order of user 7 in it: (sale, order id).
fn priced_order(gw: &Gateway, tag: &str, units: i64) -> (String, String) {
    let sale = harness::unique(tag);
    let body = format!(
        r#"{{"sale":"{sale}","stock":{units},"start_ms":{},"end_ms":{},"price_cents":1999}}"#,
        now_ms() - 1000,
        now_ms() + 3_600_000
    );
    let r = gw
        .internal()
        .post("/admin/sales", Some(&Gateway::admin_auth()), Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["price_cents"], 1999);
    let o = gw.buy(&sale, 7);
    assert_eq!(o.status, 202, "{}", o.body);
    (sale, o.field("order_id"))
}

fn status(gw: &Gateway, order_id: &str, user: u64) -> String {
    gw.get(&format!("/v1/orders/{order_id}"), Some(&gw.ticket(user)))
        .field("status")
}

fn intent(order_id: &str) -> String {
    seckill_common::payment::intent_id(WEBHOOK.as_bytes(), order_id)
}

#[test]
fn a_buyer_only_starts_a_payment_and_the_providers_signed_callback_pays_it_once() {
    let gw = Gateway::start();
    let (_, order_id) = priced_order(&gw, "pay", 5);
    let start = gw.post(
        &format!("/v1/orders/{order_id}/pay"),
        Some(&gw.ticket(7)),
        None,
    );
    assert_eq!(start.status, 200, "{}", start.body);
    let j = start.json();
    assert_eq!(j["status"], "awaiting_payment");
    assert_eq!(j["payment"]["intent_id"], intent(&order_id));
    assert_eq!(j["payment"]["amount_cents"], 1999);
    assert_eq!(j["payment"]["currency"], "EUR");
    // Starting it again (a second tab) is the same intent; nothing is paid yet.
    let again = gw.post(
        &format!("/v1/orders/{order_id}/pay"),
        Some(&gw.ticket(7)),
        None,
    );
    assert_eq!(again.json()["payment"], j["payment"]);
    assert_eq!(status(&gw, &order_id, 7), "reserved");
    // Someone else's order cannot even be started.
    let other = gw.post(
        &format!("/v1/orders/{order_id}/pay"),
        Some(&gw.ticket(8)),
        None,
    );
    assert_eq!(
        (other.status, other.code().as_str()),
        (404, "no_such_order")
    );

    let body = payment_body(&order_id, &intent(&order_id), 1999, "EUR");
    let paid = gw.callback_signed(&body, WEBHOOK, now_s());
    assert_eq!(
        (paid.status, paid.json()["status"].as_str()),
        (200, Some("paid")),
        "{}",
        paid.body
    );
    assert_eq!(status(&gw, &order_id, 7), "paid");
    // The provider retries (it did not see our answer): the same answer, nothing more.
    let dup = gw.callback_signed(&body, WEBHOOK, now_s());
    assert_eq!(
        (dup.status, dup.json()["status"].as_str()),
        (200, Some("paid"))
    );
    // The `paid` event goes to PostgreSQL, and again with the provider's retry (its
    // first delivery may be what failed; the writer keeps one row either way).
    let msgs = consume(&gw.brokers, &gw.topic, 3, Duration::from_secs(10));
    let events: Vec<String> = msgs
        .iter()
        .map(|(_, v)| serde_json::from_str::<serde_json::Value>(v).unwrap()["event"].to_string())
        .collect();
    assert_eq!(
        events.iter().filter(|e| e.contains("paid")).count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        gw.metric("seckill_payment_callbacks_total{outcome=\"paid\"}"),
        1.0
    );
    assert_eq!(
        gw.metric("seckill_payment_callbacks_total{outcome=\"duplicate\"}"),
        1.0
    );
    // A second, different payment for the paid order (two tabs, two charges) is owed
    // back, recorded once however often the provider retries it.
    let other = body.replace(&format!("pay_{order_id}"), "pay_second_tab");
    for _ in 0..2 {
        let r = gw.callback_signed(&other, WEBHOOK, now_s());
        assert_eq!(
            (r.status, r.json()["status"].as_str()),
            (200, Some("refund_due")),
            "{}",
            r.body
        );
    }
    let audit = std::fs::read_to_string(&gw.audit).unwrap_or_default();
    assert_eq!(audit.matches("pay_second_tab").count(), 1, "{audit}");
    assert_eq!(status(&gw, &order_id, 7), "paid");
    // A paid order's start says so.
    let done = gw.post(
        &format!("/v1/orders/{order_id}/pay"),
        Some(&gw.ticket(7)),
        None,
    );
    assert_eq!(
        (done.status, done.json()["status"].as_str()),
        (200, Some("paid"))
    );
}

#[test]
fn forged_stale_and_mismatched_callbacks_are_refused_and_pay_nothing() {
    let gw = Gateway::start();
    let (_, order_id) = priced_order(&gw, "payref", 5);
    let (_, other_order) = priced_order(&gw, "payref2", 5);
    let good = payment_body(&order_id, &intent(&order_id), 1999, "EUR");
    let check = |r: harness::Resp, status: u16, code: &str| {
        assert_eq!((r.status, r.code().as_str()), (status, code), "{}", r.body);
    };
    // Signed with another secret (a forger), or not signed at all.
    check(
        gw.callback_signed(&good, "not-the-secret", now_s()),
        401,
        "signature_invalid",
    );
    check(
        gw.internal().post("/payments/webhook", None, Some(&good)),
        401,
        "signature_missing",
    );
    // A genuine callback captured and sent again after the tolerance (300 s).
    check(
        gw.callback_signed(&good, WEBHOOK, now_s() - 301),
        401,
        "signature_expired",
    );
    // Signed, but a body changed after signing.
    let sig = seckill_common::payment::signature(WEBHOOK.as_bytes(), now_s(), good.as_bytes());
    let cheaper = good.replace("1999", "1");
    check(
        gw.internal().request_with(
            "POST",
            "/payments/webhook",
            &[("Seckill-Signature", &sig)],
            Some(&cheaper),
        ),
        401,
        "signature_invalid",
    );
    // Signed by the provider, but not what this order costs, or not its intent.
    let cases = [
        (
            payment_body(&order_id, &intent(&order_id), 1000, "EUR"),
            "amount_mismatch",
        ),
        (
            payment_body(&order_id, &intent(&order_id), 1999, "USD"),
            "currency_mismatch",
        ),
        (
            payment_body(&order_id, &intent(&other_order), 1999, "EUR"),
            "intent_mismatch",
        ),
    ];
    for (body, code) in cases {
        check(gw.callback_signed(&body, WEBHOOK, now_s()), 422, code);
    }
    let unknown = format!("{}9", order_id);
    check(
        gw.callback_signed(
            &payment_body(&unknown, &intent(&unknown), 1999, "EUR"),
            WEBHOOK,
            now_s(),
        ),
        404,
        "no_such_order",
    );
    check(
        gw.callback_signed("{not json", WEBHOOK, now_s()),
        400,
        "bad_request",
    );
    assert_eq!(status(&gw, &order_id, 7), "reserved", "nothing was paid");
    // Unsigned requests (anyone can send them) are counted apart from signed refusals.
    assert_eq!(
        gw.metric("seckill_payment_callbacks_total{outcome=\"unauthenticated\"}"),
        4.0
    );
    // Signed mismatches took the buyer's money: refunds due; the rest refused.
    assert_eq!(
        gw.metric("seckill_payment_callbacks_total{outcome=\"refund_due\"}"),
        3.0
    );
    assert_eq!(
        gw.metric("seckill_payment_callbacks_total{outcome=\"refused\"}"),
        2.0
    );
    // A signed payment that does not fit its order took the buyer's money: owed back.
    let audit = std::fs::read_to_string(&gw.audit).unwrap_or_default();
    assert!(
        audit.contains("refund_due") && audit.contains("amount_cents: 1000 paid, 1999 due"),
        "{audit}"
    );
    // Another event type is acknowledged and changes nothing, whatever its shape.
    let refunded = r#"{"id":"evt_r","type":"charge.refunded","data":{"charge":"ch_1"}}"#;
    let r = gw.callback_signed(refunded, WEBHOOK, now_s());
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("ignored")),
        "{}",
        r.body
    );
    assert_eq!(status(&gw, &order_id, 7), "reserved");
    // The buyer's old route marks nothing paid, with any body.
    let r = gw.post(
        &format!("/v1/orders/{order_id}/pay"),
        Some(&gw.ticket(7)),
        Some(r#"{"status":"paid"}"#),
    );
    assert_eq!(r.json()["status"], "awaiting_payment");
    assert_eq!(status(&gw, &order_id, 7), "reserved");
}

#[test]
fn a_payment_for_a_cancelled_order_is_a_refund_due_never_a_sale() {
    let gw = Gateway::start();
    let (sale, order_id) = priced_order(&gw, "payrefund", 1);
    let mut stock =
        stock::Stock::new(stock::connect(&gw.redis_url, Duration::from_secs(2)).unwrap());
    // The payment window ran out (the writer's scan releases it): the unit is back.
    stock.settle(&order_id, Settlement::Released).unwrap();
    let body = payment_body(&order_id, &intent(&order_id), 1999, "EUR");
    let r = gw.callback_signed(&body, WEBHOOK, now_s());
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("refund_due")),
        "{}",
        r.body
    );
    assert_eq!(stock.order(&order_id).unwrap().0, OrderState::Released);
    assert_eq!(
        stock.state(&sale).unwrap().remaining,
        1,
        "the unit stays for sale"
    );
    assert_eq!(
        gw.metric("seckill_payment_callbacks_total{outcome=\"refund_due\"}"),
        1.0
    );
    let audit = std::fs::read_to_string(&gw.audit).unwrap_or_default();
    assert!(
        audit.contains("refund_due") && audit.contains(&format!("pay_{order_id}")),
        "recorded for the operator: {audit}"
    );
    // The start tells the buyer it is cancelled.
    let start = gw.post(
        &format!("/v1/orders/{order_id}/pay"),
        Some(&gw.ticket(7)),
        None,
    );
    assert_eq!(
        (start.status, start.code().as_str()),
        (409, "order_cancelled")
    );
}

#[test]
fn a_payment_racing_the_expiry_ends_exactly_one_way() {
    let gw = Gateway::start();
    let sale = harness::unique("payrace");
    let body = format!(
        r#"{{"sale":"{sale}","stock":40,"start_ms":{},"end_ms":{}}}"#,
        now_ms() - 1000,
        now_ms() + 3_600_000
    );
    assert_eq!(
        gw.internal()
            .post("/admin/sales", Some(&Gateway::admin_auth()), Some(&body))
            .status,
        201
    );
    let orders: Vec<(u64, String)> = (1..=40u64)
        .map(|u| {
            let o = gw.buy(&sale, u);
            assert_eq!(o.status, 202, "{}", o.body);
            (u, o.field("order_id"))
        })
        .collect();
    let url = gw.redis_url.clone();
    let ids: Vec<String> = orders.iter().map(|(_, id)| id.clone()).collect();
    // The expiry releases every order while the provider pays every one of them.
    let expiry = std::thread::spawn(move || {
        let mut stock = stock::Stock::new(stock::connect(&url, Duration::from_secs(2)).unwrap());
        ids.iter()
            .map(|id| stock.settle(id, Settlement::Released))
            .collect::<Vec<_>>()
    });
    let callbacks: Vec<String> = orders
        .iter()
        .map(|(_, id)| {
            // The default price: the sale was created without one.
            let r =
                gw.callback_signed(&payment_body(id, &intent(id), 100, "EUR"), WEBHOOK, now_s());
            assert_eq!(r.status, 200, "{}", r.body);
            r.field("status")
        })
        .collect();
    let released = expiry.join().unwrap();
    let mut stock =
        stock::Stock::new(stock::connect(&gw.redis_url, Duration::from_secs(2)).unwrap());
    let (mut paid, mut refunds) = (0, 0);
    for (((_, id), cb), rel) in orders.iter().zip(&callbacks).zip(&released) {
        let state = stock.order(id).unwrap().0;
        match cb.as_str() {
            "paid" => {
                paid += 1;
                assert_eq!(state, OrderState::Paid, "{id}");
                assert!(matches!(rel, Err(StockError::AlreadyPaid)), "{id}: {rel:?}");
            }
            "refund_due" => {
                refunds += 1;
                assert_eq!(state, OrderState::Released, "{id}");
                assert!(rel.is_ok(), "{id}: {rel:?}");
            }
            other => panic!("{id}: {other}"),
        }
    }
    assert_eq!(paid + refunds, 40);
    let st = stock.state(&sale).unwrap();
    assert_eq!(
        (st.sold, st.remaining, st.held),
        (paid, 40 - paid, 0),
        "every unit sold or back, none both"
    );
}
