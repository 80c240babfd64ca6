//! The gateway over HTTP, as a separate process on the real local stack: buying,
//! refusals and replays. Switches, limits and the breaker are in `http_limits.rs`; the
//! order sink and its spool in `http_spool.rs`.

mod harness;

use harness::{consume, now_ms, Gateway, Options, PrivateRedis};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn happy_path_ticket_token_order_lands_in_kafka() {
    let gw = Gateway::start();
    let sale = gw.open_sale("happy", 10);
    let t = gw.token(&sale, 42);
    assert_eq!(t.status, 201, "{}", t.body);
    let token = t.field("token");
    let o = gw.order(&sale, 42, &token);
    assert_eq!(o.status, 202, "{}", o.body);
    let order_id = o.field("order_id");
    assert_eq!(o.json()["status"], "reserved");

    let msgs = consume(&gw.brokers, &gw.topic, 1, Duration::from_secs(20));
    assert_eq!(msgs.len(), 1, "exactly the one order is in the topic");
    let (key, value) = &msgs[0];
    assert_eq!(key, "42", "keyed by user");
    let m: seckill_common::order::OrderMessage = serde_json::from_str(value).unwrap();
    assert_eq!(
        (m.order_id.as_str(), m.sale.as_str(), m.user, m.units),
        (order_id.as_str(), sale.as_str(), 42, 1)
    );

    // The buyer sees the order, pays it; sale state shows the remaining stock.
    let st = gw.get(&format!("/v1/orders/{order_id}"), Some(&gw.ticket(42)));
    assert_eq!(
        (st.status, st.json()["status"].as_str()),
        (200, Some("reserved"))
    );
    assert_eq!(
        gw.get(&format!("/v1/orders/{order_id}"), Some(&gw.ticket(43)))
            .status,
        404,
        "not someone else's"
    );
    let paid = gw.pay(&order_id, 42);
    assert_eq!(
        (paid.status, paid.json()["status"].as_str()),
        (200, Some("paid")),
        "{}",
        paid.body
    );
    let s = gw.get(&format!("/v1/sales/{sale}"), None);
    assert_eq!(
        (
            s.status,
            s.json()["remaining"].as_i64(),
            s.json()["phase"].as_str()
        ),
        (200, Some(9), Some("open"))
    );
}

#[test]
fn each_refusal_has_its_status_and_json_code() {
    let gw = Gateway::start_with(Options {
        env: vec![("SECKILL_SALE_CACHE_MS", "0".into())],
        ..Default::default()
    });
    let sale = gw.open_sale("errors", 2);
    let tok = |u| gw.token(&sale, u).field("token");
    let check = |r: harness::Resp, status: u16, code: &str| {
        assert_eq!((r.status, r.code().as_str()), (status, code), "{}", r.body);
        if status == 429 || status == 503 {
            assert!(r.header("Retry-After").is_some(), "Retry-After on {status}");
        }
    };
    let path = format!("/v1/sales/{sale}/tokens");
    // 401: missing, forged, expired ticket.
    check(gw.post(&path, None, None), 401, "ticket_missing");
    let forged = seckill_common::ticket::mint(b"not-the-secret", 1, (now_ms() / 1000 + 60) as u64);
    check(
        gw.post(&path, Some(&format!("Ticket {forged}")), None),
        401,
        "ticket_invalid",
    );
    let expired =
        seckill_common::ticket::mint(harness::SECRET.as_bytes(), 1, (now_ms() / 1000 - 1) as u64);
    check(
        gw.post(&path, Some(&format!("Ticket {expired}")), None),
        401,
        "ticket_expired",
    );
    // 404 no such sale; 404 unknown route; 405 wrong method.
    check(gw.token("no_such_sale_anywhere", 1), 404, "no_such_sale");
    check(gw.get("/v2/nothing", None), 404, "not_found");
    check(
        gw.get(&path, Some(&gw.ticket(1))),
        405,
        "method_not_allowed",
    );
    // Token problems: another user's, reused, never issued; then 409 already bought.
    let t1 = tok(1);
    check(gw.order(&sale, 2, &t1), 409, "token_not_yours");
    check(
        gw.order(&sale, 1, "0123456789abcdef0123456789abcdef"),
        409,
        "token_invalid",
    );
    let t1b = tok(1);
    let first = gw.order(&sale, 1, &t1);
    assert_eq!(first.status, 202);
    // A retry with the same token learns the same order (its reply may have been lost).
    let retry = gw.order(&sale, 1, &t1);
    assert_eq!(retry.status, 202, "{}", retry.body);
    assert_eq!(retry.json()["order_id"], first.json()["order_id"]);
    assert_eq!(retry.json()["replayed"], true);
    check(gw.order(&sale, 1, &t1b), 409, "already_bought");
    check(gw.token(&sale, 1), 409, "already_bought");
    // 410 sold out once the last unit is gone (then shed from memory).
    let t4 = tok(4);
    assert_eq!(gw.order(&sale, 4, &t4).status, 202);
    check(gw.token(&sale, 3), 410, "sold_out");
    // 425 not started, 410 ended.
    let later = gw.sale("later", 5, now_ms() + 3_600_000, now_ms() + 7_200_000);
    check(gw.token(&later, 1), 425, "not_started");
    let over = gw.sale("over", 5, now_ms() - 7_200_000, now_ms() - 3_600_000);
    check(gw.token(&over, 1), 410, "sale_ended");
    // An ended sale is then answered from memory too, before the ticket is verified.
    let shed = gw.metric("seckill_sold_out_shed_total");
    let forged = gw.post(
        &format!("/v1/sales/{over}/tokens"),
        Some("Ticket 7.9999999999.deadbeef"),
        None,
    );
    check(forged, 410, "sale_ended");
    assert_eq!(gw.metric("seckill_sold_out_shed_total"), shed + 1.0);
    // 503 paused sale, with Retry-After; resumes.
    let p = gw.open_sale("paused", 5);
    let pause = |on: bool| {
        gw.internal().post(
            &format!("/admin/sales/{p}/pause"),
            Some(&Gateway::admin_auth()),
            Some(&format!(r#"{{"paused":{on}}}"#)),
        )
    };
    assert_eq!(pause(true).status, 200);
    check(gw.token(&p, 1), 503, "sale_paused");
    assert_eq!(pause(false).status, 200);
    assert_eq!(gw.token(&p, 1).status, 201);
    // 400 bad JSON and unknown fields; 401 admin without the bearer token.
    check(
        gw.post(
            &format!("/v1/sales/{p}/orders"),
            Some(&gw.ticket(1)),
            Some("{not json"),
        ),
        400,
        "bad_request",
    );
    check(
        gw.post(
            &format!("/v1/sales/{p}/orders"),
            Some(&gw.ticket(1)),
            Some(r#"{"token":"x","qty":9}"#),
        ),
        400,
        "bad_request",
    );
    check(
        gw.internal().get("/admin/switches", None),
        401,
        "unauthorized",
    );
    check(
        gw.internal().get("/admin/switches", Some("Bearer wrong")),
        401,
        "unauthorized",
    );
    // 404 order that does not exist; 409 paying a cancelled order is in the writer's tests.
    check(
        gw.get(&format!("/v1/orders/{p}-999"), Some(&gw.ticket(1))),
        404,
        "no_such_order",
    );
}

#[test]
fn duplicate_click_storm_buys_exactly_once() {
    let gw = Arc::new(Gateway::start());
    let sale = gw.open_sale("storm", 100);
    let user = 77;
    // 50 parallel clicks with the same token.
    let token = gw.token(&sale, user).field("token");
    // Every click learns the one order the token made.
    let same: Vec<(u16, String)> = parallel(
        50,
        |_| {
            let r = gw.order(&sale, user, &token);
            let id = r.json()["order_id"].as_str().unwrap_or("").to_string();
            (r.status, id)
        },
        &gw,
    );
    assert!(same.iter().all(|(s, _)| *s == 202), "{same:?}");
    let ids: std::collections::HashSet<&str> = same.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    // 10 parallel clicks (the live-token cap), each with a fresh token, from a second user.
    let user2 = 78;
    let tokens: Vec<String> = (0..10)
        .map(|_| gw.token(&sale, user2).field("token"))
        .collect();
    let fresh: Vec<u16> = parallel(10, |i| gw.order(&sale, user2, &tokens[i]).status, &gw);
    assert_eq!(fresh.iter().filter(|s| **s == 202).count(), 1, "{fresh:?}");
    let s = gw.get(&format!("/v1/sales/{sale}"), None).json();
    assert!(s["remaining"].as_i64().unwrap() >= 98);
    // Retries resend their order (harmless: the writer keeps one row per order id).
    let msgs = consume(&gw.brokers, &gw.topic, 51, Duration::from_secs(5));
    let orders: std::collections::HashSet<String> = msgs
        .iter()
        .map(|(_, v)| serde_json::from_str::<serde_json::Value>(v).unwrap()["order_id"].to_string())
        .collect();
    assert_eq!(orders.len(), 2, "two orders in Kafka, no more");
}

#[test]
fn replaying_a_spent_token_does_not_produce_its_order_again() {
    let gw = Gateway::start();
    let sale = gw.open_sale("replay_flood", 10);
    let token = gw.token(&sale, 5).field("token");
    let first = gw.order(&sale, 5, &token);
    assert_eq!(first.status, 202, "{}", first.body);
    for _ in 0..40 {
        let r = gw.order(&sale, 5, &token);
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.json()["order_id"], first.json()["order_id"]);
        assert_eq!(r.json()["replayed"], true);
    }
    // At most 41 could arrive; wait for them all, then count.
    let msgs = consume(&gw.brokers, &gw.topic, 41, Duration::from_secs(5));
    assert_eq!(msgs.len(), 1, "one order, one message: {msgs:?}");
}

fn parallel<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync, _gw: &Gateway) -> Vec<T> {
    let start = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (f, start) = (&f, &start);
                s.spawn(move || {
                    start.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_sold_out_sale_sheds_token_requests_from_memory_without_redis() {
    let redis = PrivateRedis::start();
    let gw = Gateway::start_with(Options {
        redis_url: Some(redis.url()),
        env: vec![("SECKILL_SOLD_OUT_RECHECK_MS", "60000".into())],
        ..Default::default()
    });
    let sale = gw.open_sale("shed", 1);
    let t = gw.token(&sale, 1).field("token");
    let o = gw.order(&sale, 1, &t);
    assert_eq!(o.json()["remaining"], 0);
    let evals_before = redis.calls("evalsha");
    for u in 2..202 {
        let r = gw.token(&sale, u);
        assert_eq!((r.status, r.code().as_str()), (410, "sold_out"));
    }
    assert_eq!(
        redis.calls("evalsha"),
        evals_before,
        "no script ran for 200 sold-out token requests"
    );
    assert_eq!(gw.metric("seckill_sold_out_shed_total"), 200.0);
    assert_eq!(gw.metric("seckill_sold_out_sales"), 1.0);
    // The sale's state is public: answered before any ticket crypto, so a ticket that
    // would not verify gets the same 410; a request without one is still 401, and a
    // malformed sale id still 404.
    let path = format!("/v1/sales/{sale}/tokens");
    let forged = gw.post(&path, Some("Ticket 7.9999999999.deadbeef"), None);
    assert_eq!((forged.status, forged.code().as_str()), (410, "sold_out"));
    let none = gw.post(&path, None, None);
    assert_eq!((none.status, none.code().as_str()), (401, "ticket_missing"));
    let bad = gw.post("/v1/sales/no$such/tokens", Some(&gw.ticket(2)), None);
    assert_eq!(bad.status, 404, "{}", bad.body);
    assert_eq!(gw.metric("seckill_sold_out_shed_total"), 201.0);
    // An order request still reaches the purchase script (it may be the buyer's own
    // retry), which judges the token first.
    let r = gw.order(&sale, 2, "0123456789abcdef0123456789abcdef");
    assert_eq!((r.status, r.code().as_str()), (409, "token_invalid"));
    assert_eq!(redis.calls("evalsha"), evals_before + 1);
}

#[test]
fn a_buyer_retrying_their_purchase_after_sell_out_gets_their_order_back() {
    let gw = Gateway::start();
    let sale = gw.open_sale("retry_after_sold_out", 1);
    let t = gw.token(&sale, 1).field("token");
    let first = gw.order(&sale, 1, &t);
    assert_eq!(first.status, 202);
    assert_eq!(first.json()["remaining"], 0);
    // The sale is now sold out in this gateway's memory; the reply was "lost".
    assert_eq!(gw.token(&sale, 2).code(), "sold_out");
    let again = gw.order(&sale, 1, &t);
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.json()["order_id"], first.json()["order_id"]);
    assert_eq!(again.json()["replayed"], true);
}

#[test]
fn a_malformed_order_body_is_400_whatever_the_sale_state() {
    let gw = Gateway::start();
    let sale = gw.open_sale("malformed_after_sold_out", 1);
    let t = gw.token(&sale, 1).field("token");
    assert_eq!(gw.order(&sale, 1, &t).status, 202);
    assert_eq!(gw.token(&sale, 2).code(), "sold_out");
    for body in ["", "{", "[]", "{\"token\": 5}", "{\"tokn\": \"x\"}"] {
        let r = gw.post(
            &format!("/v1/sales/{sale}/orders"),
            Some(&gw.ticket(2)),
            Some(body),
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "bad_request"),
            "body {body:?}"
        );
    }
}

#[test]
fn every_orders_id_is_unique_across_two_gateways() {
    let a = Gateway::start();
    let b = Gateway::start();
    let sale = a.open_sale("two", 200);
    let mut ids = HashSet::new();
    for u in 0..100u64 {
        let gw = if u % 2 == 0 { &a } else { &b };
        let t = gw.token(&sale, u).field("token");
        let o = gw.order(&sale, u, &t);
        assert_eq!(o.status, 202);
        assert!(ids.insert(o.field("order_id")));
    }
}

#[test]
fn a_sale_cannot_be_created_on_a_store_that_lost_its_data() {
    let redis = PrivateRedis::start();
    let gw = Gateway::start_with(Options {
        redis_url: Some(redis.url()),
        ..Default::default()
    });
    gw.open_sale("before", 5);
    // The switch follower has seen the store epoch.
    std::thread::sleep(Duration::from_millis(800));
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("FLUSHALL").query::<()>(&mut c).unwrap();
    // At once (before or after the next poll noticed): refused, and no new epoch.
    let body = format!(
        r#"{{"sale":"{}","stock":5,"start_ms":{},"end_ms":{}}}"#,
        harness::unique("after"),
        now_ms() - 1000,
        now_ms() + 60_000
    );
    let r = gw
        .internal()
        .post("/admin/sales", Some(&Gateway::admin_auth()), Some(&body));
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "redis_data_lost"),
        "{}",
        r.body
    );
    let epoch: Option<String> = redis::cmd("GET")
        .arg(stock::keys::EPOCH)
        .query(&mut c)
        .unwrap();
    assert_eq!(epoch, None, "selling must not resume before the rebuild");
    let keys: Vec<String> = redis::cmd("KEYS").arg("sk:{*").query(&mut c).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[test]
fn only_sales_redis_knows_get_a_metric_series_and_unknown_ids_are_answered_from_memory() {
    let redis = PrivateRedis::start();
    let gw = Gateway::start_with(Options {
        redis_url: Some(redis.url()),
        ..Default::default()
    });
    let sale = gw.open_sale("known", 5);
    assert_eq!(gw.token(&sale, 1).status, 201);
    // A malformed id (never sent to Redis) and a well-formed unknown one.
    let junk = gw.post("/v1/sales/a%22b/tokens", Some(&gw.ticket(2)), None);
    assert_eq!((junk.status, junk.code().as_str()), (404, "no_such_sale"));
    let evals = redis.calls("evalsha");
    for _ in 0..50 {
        let r = gw.token("made_up_sale", 2);
        assert_eq!((r.status, r.code().as_str()), (404, "no_such_sale"));
        let r = gw.get("/v1/sales/made_up_sale", None);
        assert_eq!(r.status, 404);
    }
    assert!(
        redis.calls("evalsha") - evals <= 2,
        "unknown ids cost Redis {} calls",
        redis.calls("evalsha") - evals
    );
    let m = gw.internal().get("/metrics", None).body;
    assert!(
        m.contains(&format!("seckill_sale_requests_total{{sale=\"{sale}\"}}")),
        "{m}"
    );
    assert!(
        !m.contains("made_up_sale") && !m.contains("a%22b") && !m.contains("a\"b"),
        "{m}"
    );
    // A sale created later is seen at once by the gateway that created it.
    let r = gw.internal().post(
        "/admin/sales",
        Some(&Gateway::admin_auth()),
        Some(&format!(
            r#"{{"sale":"made_up_sale","stock":1,"start_ms":{},"end_ms":{}}}"#,
            now_ms() - 1000,
            now_ms() + 60_000
        )),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(gw.token("made_up_sale", 2).status, 201);
}
