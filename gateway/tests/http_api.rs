//! The gateway over HTTP, as a separate process on the real local stack.

mod harness;

use harness::{consume, now_ms, Gateway, Options, PrivateRedis};
use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn happy_path_ticket_token_order_lands_in_kafka() {
    let gw = Gateway::start();
    let sale = gw.open_sale("happy", 10);
    let t = gw.token(&sale, 42);
    assert_eq!(t.status, 201, "{}", t.body);
    let token = t.json()["token"].as_str().unwrap().to_string();
    let o = gw.order(&sale, 42, &token);
    assert_eq!(o.status, 202, "{}", o.body);
    let order_id = o.json()["order_id"].as_str().unwrap().to_string();
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
    let paid = gw.post(
        &format!("/v1/orders/{order_id}/pay"),
        Some(&gw.ticket(42)),
        None,
    );
    assert_eq!(
        (paid.status, paid.json()["status"].as_str()),
        (200, Some("paid"))
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
    let tok = |u| {
        gw.token(&sale, u).json()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
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
    // 503 paused sale, with Retry-After; resumes.
    let p = gw.open_sale("paused", 5);
    let pause = |on: bool| {
        gw.post(
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
    check(gw.get("/admin/switches", None), 401, "unauthorized");
    check(
        gw.get("/admin/switches", Some("Bearer wrong")),
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
fn rate_limits_answer_429_with_retry_after_and_are_live_switches() {
    let gw = Gateway::start_with(Options {
        env: vec![
            ("SECKILL_USER_RPS", "1".into()),
            ("SECKILL_USER_BURST", "3".into()),
        ],
        ..Default::default()
    });
    let sale = gw.open_sale("limits", 100);
    let codes: Vec<u16> = (0..5).map(|_| gw.token(&sale, 9).status).collect();
    assert_eq!(codes, vec![201, 201, 201, 429, 429]);
    let r = gw.token(&sale, 9);
    assert_eq!(
        (r.status, r.code().as_str(), r.header("Retry-After")),
        (429, "rate_limited", Some("1"))
    );
    assert_eq!(
        gw.token(&sale, 10).status,
        201,
        "another user is not limited"
    );
    assert!(gw.metric("seckill_limited_total{limit=\"user\"}") >= 3.0);

    // Raise the per-user rate live; the change is audited.
    let body = r#"{"rates":{"global_rps":100000,"global_burst":100000,"user_rps":1000,"user_burst":1000,"ip_rps":100000,"ip_burst":100000}}"#;
    let set = gw.post("/admin/switches", Some(&Gateway::admin_auth()), Some(body));
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(gw.token(&sale, 9).status, 201);
    assert_eq!(
        gw.metric("seckill_switch_rate{limit=\"user_burst\"}"),
        1000.0
    );
    let audit = std::fs::read_to_string(&gw.audit).unwrap();
    assert!(
        audit.contains("\"set_switches\"") && audit.contains("\"user_burst\":1000"),
        "{audit}"
    );

    // Admission ratio 0: every token request is shed with 503 + Retry-After.
    let set = gw.post(
        "/admin/switches",
        Some(&Gateway::admin_auth()),
        Some(r#"{"admission_ratio":0.0}"#),
    );
    assert_eq!(set.status, 200);
    let r = gw.token(&sale, 11);
    assert_eq!(
        (r.status, r.code().as_str(), r.header("Retry-After")),
        (503, "admission_shed", Some("1"))
    );
    let bad = gw.post(
        "/admin/switches",
        Some(&Gateway::admin_auth()),
        Some(r#"{"admission_ratio":2}"#),
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn duplicate_click_storm_buys_exactly_once() {
    let gw = Arc::new(Gateway::start());
    let sale = gw.open_sale("storm", 100);
    let user = 77;
    // 50 parallel clicks with the same token.
    let token = gw.token(&sale, user).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
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
        .map(|_| {
            gw.token(&sale, user2).json()["token"]
                .as_str()
                .unwrap()
                .to_string()
        })
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
    let token = gw.token(&sale, 5).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
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
    let t = gw.token(&sale, 1).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
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
    let t = gw.token(&sale, 1).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
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
    let t = gw.token(&sale, 1).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
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
fn the_breaker_opens_while_redis_is_stopped_and_closes_after() {
    let redis = PrivateRedis::start();
    let gw = Gateway::start_with(Options {
        redis_url: Some(redis.url()),
        env: vec![
            ("SECKILL_REDIS_TIMEOUT_MS", "100".into()),
            ("SECKILL_BREAKER_THRESHOLD", "3".into()),
            ("SECKILL_BREAKER_COOL_OFF_MS", "300".into()),
        ],
        ..Default::default()
    });
    let sale = gw.open_sale("breaker", 1000);
    assert_eq!(gw.token(&sale, 1).status, 201);
    redis.signal("-STOP");
    // The first few calls time out (100 ms); then the breaker answers at once.
    for u in 0..5 {
        let r = gw.token(&sale, 100 + u);
        assert_eq!((r.status, r.code().as_str()), (503, "redis_unavailable"));
    }
    assert_eq!(gw.metric("seckill_redis_breaker_open"), 1.0);
    let t0 = Instant::now();
    let fast: Vec<u16> = (0..20).map(|u| gw.token(&sale, 200 + u).status).collect();
    let each = t0.elapsed() / 20;
    assert!(fast.iter().all(|s| *s == 503), "{fast:?}");
    assert!(
        each < Duration::from_millis(50),
        "fails fast while open: {each:?} per request"
    );
    assert_eq!(gw.get("/readyz", None).status, 503);
    redis.signal("-CONT");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if gw.token(&sale, 999).status == 201 {
            break;
        }
        assert!(
            Instant::now() < end,
            "breaker never closed after Redis resumed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gw.metric("seckill_redis_breaker_open"), 0.0);
    gw.wait_ready(Duration::from_secs(5));
}

#[test]
fn bad_bodies_are_refused_and_a_slow_client_stalls_no_one() {
    let gw = Arc::new(Gateway::start());
    let sale = gw.open_sale("input", 100);
    // Oversized: refused with 413 and the connection closed, without reading the body.
    let big = format!("POST /v1/sales/{sale}/orders HTTP/1.1\r\nAuthorization: {}\r\nContent-Length: 10000000\r\n\r\n{{\"token\":", gw.ticket(1));
    let r = gw.raw(big.as_bytes());
    assert_eq!(
        (r.status, r.code().as_str(), r.header("Connection")),
        (413, "body_too_large", Some("close"))
    );
    // Malformed Content-Length (RFC 9112: digits only): 400 and the connection closed,
    // so what follows the head is never read as another request.
    for len in ["12abc", "+5", "1 2", "-1"] {
        let smuggled = "GET /metrics HTTP/1.1\r\n\r\n";
        let bad = format!("POST /v1/sales/{sale}/orders HTTP/1.1\r\nAuthorization: {}\r\nContent-Length: {len}\r\n\r\n{smuggled}", gw.ticket(1));
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bad.as_bytes()).unwrap();
        let r = harness::read_response(&mut s);
        assert_eq!(
            (r.status, r.code().as_str(), r.header("Connection")),
            (400, "malformed_request", Some("close")),
            "Content-Length: {len}"
        );
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut rest);
        assert!(
            !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
            "a second answer after Content-Length {len:?}: {}",
            String::from_utf8_lossy(&rest)
        );
    }
    // Garbage instead of HTTP: the connection is dropped, the server lives on.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"\x00\x01\x02 nonsense\r\n\r\n").unwrap();
    drop(s);
    assert_eq!(gw.get("/healthz", None).status, 200);

    // A client dribbling its headers one byte at a time, while others are served.
    let port = gw.port;
    let slow = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: yes" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    for u in 0..50 {
        assert_eq!(gw.token(&sale, 1000 + u).status, 201);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "others were served while the slow client dribbled: {:?}",
        t0.elapsed()
    );
    slow.join().unwrap();
    // An endless header is cut off at the header limit.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let mut head = b"GET /healthz HTTP/1.1\r\nX-Long: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 40_000));
    let _ = s.write_all(&head);
    let r = harness::read_response(&mut s);
    assert_eq!(r.status, 431);
}

#[test]
fn with_the_sink_on_kafka_and_no_broker_an_order_is_refused_before_anything_is_reserved() {
    // No broker listens here; the sink is Kafka only (no spool), so orders are refused,
    // and refused before the purchase script runs: no unit is ever held for them.
    let nowhere = format!("127.0.0.1:{}", harness::free_port());
    let env = vec![
        ("SECKILL_KAFKA_TIMEOUT_MS", "1000".into()),
        ("SECKILL_ORDER_SINK", "kafka".into()),
    ];
    let gw = Gateway::start_with(Options {
        brokers: Some(nowhere),
        env,
        ..Default::default()
    });
    assert_eq!(
        gw.get("/readyz", None).status,
        503,
        "not ready without a broker"
    );
    let sale = gw.open_sale("nobroker", 1);
    let t = gw.token(&sale, 5).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // The health loop has seen the broker missing (it asks every second).
    std::thread::sleep(Duration::from_millis(2500));
    let r = gw.order(&sale, 5, &t);
    assert_eq!(
        (r.status, r.code().as_str(), r.header("Retry-After")),
        (503, "order_sink_unavailable", Some("1")),
        "{}",
        r.body
    );
    let mut s = stock::Stock::new(stock::connect(&gw.redis_url, Duration::from_secs(2)).unwrap());
    let st = s.state(&sale).unwrap();
    assert_eq!((st.remaining, st.held, st.sold), (1, 0, 0), "nothing held");
    assert_eq!(s.buyers(&sale).unwrap(), vec![], "the buyer may try again");
    assert_eq!(
        gw.metric("seckill_stock_released_on_sink_failure_total"),
        0.0,
        "nothing had to be released"
    );
    // The token was not spent: the same order goes through once a broker is back.
    assert_eq!(s.purchase(&sale, 5, &t).map(|p| p.remaining), Ok(0));
}

#[test]
fn an_order_whose_delivery_is_unconfirmed_is_spooled_and_acknowledged_even_on_the_kafka_sink() {
    // The broker is up, but the topic does not exist: every delivery report fails. Such
    // a failure does not prove the order is not in the log (a timed-out request may have
    // been written), so refusing it could leave an order the buyer was told failed.
    let env = vec![
        ("SECKILL_KAFKA_TIMEOUT_MS", "1500".into()),
        ("SECKILL_ORDER_SINK", "kafka".into()),
        ("SECKILL_ORDERS_TOPIC", harness::unique("no_such_topic")),
    ];
    let gw = Gateway::start_with(Options {
        env,
        ..Default::default()
    });
    let sale = gw.open_sale("unconfirmed", 2);
    let t = gw.token(&sale, 5).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = gw.order(&sale, 5, &t);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["spooled"], true);
    let st = stock::Stock::new(stock::connect(&gw.redis_url, Duration::from_secs(2)).unwrap())
        .state(&sale)
        .unwrap();
    assert_eq!(
        (st.remaining, st.held),
        (1, 1),
        "the unit stays with its order"
    );
    assert_eq!(
        gw.metric("seckill_stock_released_on_sink_failure_total"),
        0.0
    );
}

#[test]
fn a_second_gateway_on_an_address_or_a_spool_in_use_refuses_to_start() {
    let gw = Gateway::start();
    let spawn = |listen: String, spool: std::path::PathBuf| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env("SECKILL_LISTEN", listen)
            .env("SECKILL_SPOOL_DIR", spool)
            .env("SECKILL_REDIS_URL", &gw.redis_url)
            .env("SECKILL_KAFKA_BROKERS", &gw.brokers)
            .env("SECKILL_DEV_INSECURE", "1")
            .env(
                "SECKILL_AUDIT_LOG",
                std::env::temp_dir().join(harness::unique("audit")),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait = |mut c: std::process::Child| {
        let end = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (status, err);
            }
            if std::time::Instant::now() > end {
                let _ = c.kill();
                panic!("the second gateway kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let own_spool = std::env::temp_dir().join(harness::unique("spool"));
    let (status, err) = wait(spawn(format!("127.0.0.1:{}", gw.port), own_spool));
    assert!(!status.success());
    assert!(err.contains(&format!("127.0.0.1:{}", gw.port)), "{err}");
    let first_spool = gw.audit.parent().unwrap().join("spool");
    let (status, err) = wait(spawn(
        format!("127.0.0.1:{}", harness::free_port()),
        first_spool,
    ));
    assert!(!status.success());
    assert!(err.contains("in use by another gateway"), "{err}");
    // The first one never noticed.
    assert_eq!(gw.get("/readyz", None).status, 200);
}

#[test]
fn a_spool_larger_than_the_producer_queue_replays_completely() {
    // 250,000 spooled orders: more than librdkafka's 200,000-message queue.
    const N: usize = 250_000;
    let dir = std::env::temp_dir().join(harness::unique("bigspool"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::with_capacity(N * 130);
    for i in 0..N {
        text.push_str(&format!(
            r#"{{"event":"reserved","order_id":"big-{i}","sale":"big","user":{i},"units":1,"per_user_limit":1,"at_ms":1}}"#
        ));
        text.push('\n');
    }
    std::fs::write(dir.join("spool-000000000000001-000001.jsonl"), text).unwrap();
    let gw = Gateway::start_with(Options {
        env: vec![("SECKILL_SPOOL_DIR", dir.display().to_string())],
        ..Default::default()
    });
    let end = std::time::Instant::now() + Duration::from_secs(120);
    while gw.metric("seckill_spool_pending") > 0.0 {
        assert!(
            std::time::Instant::now() < end,
            "spool not drained: {} pending",
            gw.metric("seckill_spool_pending")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(gw.metric("seckill_spool_replayed_total"), N as f64);
    let ids: std::collections::HashSet<String> =
        consume(&gw.brokers, &gw.topic, N, Duration::from_secs(60))
            .into_iter()
            .map(|(_, v)| v)
            .collect();
    assert_eq!(ids.len(), N, "every spooled order reached the topic");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("jsonl"))
        .collect();
    assert!(left.is_empty(), "replayed files are deleted: {left:?}");
}

#[test]
fn without_a_broker_orders_go_to_the_durable_spool() {
    let nowhere = format!("127.0.0.1:{}", harness::free_port());
    let gw = Gateway::start_with(Options {
        brokers: Some(nowhere),
        env: vec![("SECKILL_KAFKA_TIMEOUT_MS", "1000".into())],
        ..Default::default()
    });
    gw.wait_ready(Duration::from_secs(10));
    let sale = gw.open_sale("spool", 5);
    let t = gw.token(&sale, 5).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = gw.order(&sale, 5, &t);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["spooled"], true);
    let id = r.json()["order_id"].as_str().unwrap().to_string();
    let spool = gw.audit.parent().unwrap().join("spool");
    let on_disk: String = std::fs::read_dir(&spool)
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert!(
        on_disk.contains(&format!("\"order_id\":\"{id}\"")),
        "{on_disk}"
    );
    assert_eq!(
        gw.metric("seckill_spooled_total"),
        2.0,
        "the sale definition and the order"
    );
    assert_eq!(gw.metric("seckill_spool_pending"), 2.0);
    let st = stock::Stock::new(stock::connect(&gw.redis_url, Duration::from_secs(2)).unwrap())
        .state(&sale)
        .unwrap();
    assert_eq!(
        (st.remaining, st.held),
        (4, 1),
        "the unit stays held for the spooled order"
    );
}

#[test]
fn switches_set_through_one_gateway_are_followed_by_another_and_a_local_override_wins() {
    let cluster = harness::unique("cluster");
    let env = || vec![("SECKILL_CLUSTER", cluster.clone())];
    let a = Gateway::start_with(Options {
        env: env(),
        ..Default::default()
    });
    let b = Gateway::start_with(Options {
        env: env(),
        ..Default::default()
    });
    let sale = a.open_sale("follow", 10);
    let admin = Gateway::admin_auth();
    let set = a.post(
        "/admin/switches",
        Some(&admin),
        Some(r#"{"pause_all":true}"#),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    let t0 = Instant::now();
    while b.token(&sale, 1).code() != "sale_paused" {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "b did not follow within one second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.metric("seckill_switch_pause_all"), 1.0);
    // A local override on b wins over the central value; a does not see it.
    let local = b.post(
        "/admin/switches/local",
        Some(&admin),
        Some(r#"{"pause_all":false}"#),
    );
    assert_eq!(local.status, 200, "{}", local.body);
    // (User 1 may hold its ten live tokens from the polling above.)
    assert_eq!(b.token(&sale, 4).status, 201);
    assert_eq!(a.token(&sale, 2).code(), "sale_paused");
    assert_eq!(b.metric("seckill_switch_local_override"), 1.0);
    let cleared = b.request("DELETE", "/admin/switches/local", Some(&admin), None);
    assert_eq!(cleared.status, 200);
    assert_eq!(b.token(&sale, 3).code(), "sale_paused");
    // Resume centrally; the audit stream has every change, with its actor.
    assert_eq!(
        a.post(
            "/admin/switches",
            Some(&admin),
            Some(r#"{"pause_all":false}"#)
        )
        .status,
        200
    );
    let audit = a.get("/admin/audit", Some(&admin));
    let actions: Vec<String> = audit.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        actions.starts_with(&[
            "set_switches".to_string(),
            "clear_local_override".into(),
            "set_local_override".into(),
            "set_switches".into()
        ]),
        "{actions:?}"
    );
    // A value that is not a switch value is refused and changes nothing.
    assert_eq!(
        a.post(
            "/admin/switches",
            Some(&admin),
            Some(r#"{"order_sink":"carrier_pigeon"}"#)
        )
        .status,
        400
    );
    assert_eq!(
        a.get("/admin/switches", Some(&admin)).json()["effective"]["order_sink"],
        "auto"
    );
}

#[test]
fn every_orders_id_is_unique_across_two_gateways() {
    let a = Gateway::start();
    let b = Gateway::start();
    let sale = a.open_sale("two", 200);
    let mut ids = HashSet::new();
    for u in 0..100u64 {
        let gw = if u % 2 == 0 { &a } else { &b };
        let t = gw.token(&sale, u).json()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let o = gw.order(&sale, u, &t);
        assert_eq!(o.status, 202);
        assert!(ids.insert(o.json()["order_id"].as_str().unwrap().to_string()));
    }
}

#[test]
fn shutdown_drains_and_exits_cleanly() {
    let mut gw = Gateway::start();
    let sale = gw.open_sale("drain", 10);
    assert_eq!(gw.token(&sale, 1).status, 201);
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("gateway exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn with_the_switch_store_down_the_last_values_stay_and_a_local_override_works() {
    let redis = PrivateRedis::start();
    let gw = Gateway::start_with(Options {
        redis_url: Some(redis.url()),
        ..Default::default()
    });
    let admin = Gateway::admin_auth();
    let set = gw.post(
        "/admin/switches",
        Some(&admin),
        Some(r#"{"admission_ratio":0.5}"#),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(gw.metric("seckill_switch_store_up"), 1.0);
    redis.signal("-STOP");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(gw.metric("seckill_switch_store_up"), 0.0);
    assert_eq!(
        gw.metric("seckill_switch_admission_ratio"),
        0.5,
        "the last known value stays"
    );
    // A central change cannot be stored: refused, with the way out in the message.
    let central = gw.post(
        "/admin/switches",
        Some(&admin),
        Some(r#"{"admission_ratio":1.0}"#),
    );
    assert_eq!(
        (central.status, central.code().as_str()),
        (503, "switch_store_unreachable")
    );
    // A local override is taken at once.
    let local = gw.post(
        "/admin/switches/local",
        Some(&admin),
        Some(r#"{"admission_ratio":0.9}"#),
    );
    assert_eq!(local.status, 200, "{}", local.body);
    assert_eq!(gw.metric("seckill_switch_admission_ratio"), 0.9);
    redis.signal("-CONT");
    let end = Instant::now() + Duration::from_secs(5);
    while gw.metric("seckill_switch_store_up") != 1.0 {
        assert!(Instant::now() < end, "the store never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        gw.metric("seckill_switch_admission_ratio"),
        0.9,
        "the override still wins"
    );
    gw.request("DELETE", "/admin/switches/local", Some(&admin), None);
    assert_eq!(
        gw.metric("seckill_switch_admission_ratio"),
        0.5,
        "back to the central value"
    );
}

#[test]
fn the_password_in_the_redis_url_is_used_and_a_wrong_one_keeps_the_gateway_unready() {
    let redis = PrivateRedis::start();
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret-pw")
        .query::<()>(&mut c)
        .unwrap();
    let good = Gateway::start_with(Options {
        redis_url: Some(format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port)),
        ..Default::default()
    });
    let sale = good.open_sale("auth", 5);
    let t = good.token(&sale, 1);
    assert_eq!(t.status, 201, "{}", t.body);
    let o = good.order(&sale, 1, t.json()["token"].as_str().unwrap());
    assert_eq!(o.status, 202, "{}", o.body);

    let stack = stackctl::ensure_up();
    let bad = Gateway::start_with(Options {
        redis_url: Some(format!("redis://:wrong@127.0.0.1:{}", redis.port)),
        // Given explicitly: do not wait for readiness, which must never come.
        brokers: Some(stack.kafka_brokers),
        ..Default::default()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(bad.get("/readyz", None).status, 503);
    let r = bad.token(&sale, 2);
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "redis_unavailable"),
        "{}",
        r.body
    );
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
    let r = gw.post("/admin/sales", Some(&Gateway::admin_auth()), Some(&body));
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
    let m = gw.get("/metrics", None).body;
    assert!(
        m.contains(&format!("seckill_sale_requests_total{{sale=\"{sale}\"}}")),
        "{m}"
    );
    assert!(
        !m.contains("made_up_sale") && !m.contains("a%22b") && !m.contains("a\"b"),
        "{m}"
    );
    // A sale created later is seen at once by the gateway that created it.
    let r = gw.post(
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

#[test]
fn sale_state_order_status_and_pay_are_rate_limited() {
    let gw = Gateway::start_with(Options {
        env: vec![
            ("SECKILL_IP_RPS", "1".into()),
            ("SECKILL_IP_BURST", "5".into()),
        ],
        ..Default::default()
    });
    let sale = gw.open_sale("reads", 5);
    let states: Vec<u16> = (0..20)
        .map(|_| gw.get(&format!("/v1/sales/{sale}"), None).status)
        .collect();
    assert!(states.contains(&429), "{states:?}");
    let limited = gw.get(&format!("/v1/sales/{sale}"), None);
    if limited.status == 429 {
        assert!(limited.header("Retry-After").is_some());
    }
    let statuses: Vec<u16> = (0..20)
        .map(|_| {
            gw.get(&format!("/v1/orders/{sale}-1"), Some(&gw.ticket(3)))
                .status
        })
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let pays: Vec<u16> = (0..20)
        .map(|_| {
            gw.post(
                &format!("/v1/orders/{sale}-1/pay"),
                Some(&gw.ticket(4)),
                None,
            )
            .status
        })
        .collect();
    assert!(pays.contains(&429), "{pays:?}");
}

#[test]
fn a_buyer_cannot_hoard_purchase_tokens() {
    let gw = Gateway::start_with(Options {
        env: vec![("SECKILL_MAX_LIVE_TOKENS", "3".into())],
        ..Default::default()
    });
    let sale = gw.open_sale("hoard", 5);
    for _ in 0..3 {
        assert_eq!(gw.token(&sale, 9).status, 201);
    }
    let r = gw.token(&sale, 9);
    assert_eq!(
        (r.status, r.code().as_str(), r.header("Retry-After")),
        (429, "too_many_tokens", Some("10")),
        "{}",
        r.body
    );
    assert_eq!(gw.token(&sale, 10).status, 201, "others are not affected");
}

#[test]
fn a_client_pipelining_metrics_pages_is_rate_limited() {
    let gw = Gateway::start_with(Options {
        env: vec![
            ("SECKILL_METRICS_IP_RPS", "5".into()),
            ("SECKILL_METRICS_IP_BURST", "10".into()),
        ],
        ..Default::default()
    });
    let codes: Vec<u16> = (0..40).map(|_| gw.get("/metrics", None).status).collect();
    let ok = codes.iter().filter(|c| **c == 200).count();
    assert!((10..=15).contains(&ok), "{ok} full pages: {codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    let r = gw.get("/metrics", None);
    assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
    assert!(r.header("Retry-After").is_some());
}
