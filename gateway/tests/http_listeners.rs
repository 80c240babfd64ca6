//! The two listeners keep their surfaces apart: the public one (`listen`) serves the
//! buyers, the internal one (`internal_listen`) the operators and the payment provider;
//! each answers the other's routes as unknown paths (404, the usual JSON error body), and
//! both answer the probes.

mod harness;

use harness::{now_ms, payment_body, Endpoint, Gateway, Resp, WEBHOOK};

/// 404 `not_found` in the gateway's JSON error body, as for any unknown path.
fn assert_unknown(r: &Resp, what: &str) {
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "not_found"),
        "{what}: {}",
        r.body
    );
    assert!(
        r.json()["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        r.body
    );
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
}

/// A `/metrics` page's sample of `name`, exactly.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_public_listener_serves_buyers_only_and_the_internal_one_the_rest() {
    let gw = Gateway::start();
    let (public, internal): (Endpoint, Endpoint) = (gw.public(), gw.internal());
    let admin = Gateway::admin_auth();
    let sale_body = |sale: &str| {
        format!(
            r#"{{"sale":"{sale}","stock":3,"start_ms":{},"end_ms":{}}}"#,
            now_ms() - 1000,
            now_ms() + 3_600_000
        )
    };

    // The admin API on the public listener: unknown, and nothing is created.
    let sale = harness::unique("listeners");
    let r = public.post("/admin/sales", Some(&admin), Some(&sale_body(&sale)));
    assert_unknown(&r, "POST /admin/sales on the public listener");
    assert_unknown(
        &public.get("/admin/sales", Some(&admin)),
        "GET /admin/sales on the public listener",
    );
    assert_unknown(
        &public.get("/admin/switches", Some(&admin)),
        "GET /admin/switches on the public listener",
    );
    assert_eq!(
        gw.get(&format!("/v1/sales/{sale}"), None).status,
        404,
        "the public POST /admin/sales created the sale"
    );
    // On the internal listener it works (GET is the route's 405, not an unknown path).
    let r = internal.post("/admin/sales", Some(&admin), Some(&sale_body(&sale)));
    assert_eq!(r.status, 201, "POST /admin/sales internal: {}", r.body);
    let r = internal.get("/admin/sales", Some(&admin));
    assert_eq!(
        (r.status, r.header("allow")),
        (405, Some("POST")),
        "{}",
        r.body
    );
    assert_eq!(internal.get("/admin/switches", Some(&admin)).status, 200);

    // The buyers' routes: served publicly, unknown on the internal listener.
    assert_eq!(gw.get(&format!("/v1/sales/{sale}"), None).status, 200);
    let ticket = gw.ticket(7);
    for (method, path) in [
        ("GET", format!("/v1/sales/{sale}")),
        ("POST", format!("/v1/sales/{sale}/tokens")),
        ("POST", format!("/v1/sales/{sale}/orders")),
        ("GET", format!("/v1/orders/{sale}-1")),
        ("POST", format!("/v1/orders/{sale}-1/pay")),
    ] {
        let r = internal.request(method, &path, Some(&ticket), Some(r#"{"token":"x"}"#));
        assert_unknown(&r, &format!("{method} {path} on the internal listener"));
    }
    let order = gw.buy(&sale, 7);
    assert_eq!(order.status, 202, "{}", order.body);
    let order = order.field("order_id");

    // The provider's callback, signed and valid: unknown on the public listener, and the
    // order stays unpaid; on the internal listener it pays.
    let started = gw.post(&format!("/v1/orders/{order}/pay"), Some(&ticket), None);
    assert_eq!(started.status, 200, "{}", started.body);
    let p = &started.json()["payment"];
    let body = payment_body(
        &order,
        p["intent_id"].as_str().unwrap(),
        p["amount_cents"].as_i64().unwrap(),
        p["currency"].as_str().unwrap(),
    );
    let sig = seckill_common::payment::signature(
        WEBHOOK.as_bytes(),
        (now_ms() / 1000) as u64,
        body.as_bytes(),
    );
    let signed = [("Seckill-Signature", sig.as_str())];
    let r = public.request_with("POST", "/payments/webhook", &signed, Some(&body));
    assert_unknown(&r, "POST /payments/webhook on the public listener");
    let status = gw.get(&format!("/v1/orders/{order}"), Some(&ticket));
    assert_eq!(status.field("status"), "reserved", "{}", status.body);
    let r = internal.request_with("POST", "/payments/webhook", &signed, Some(&body));
    assert_eq!(
        (r.status, r.field("status").as_str()),
        (200, "paid"),
        "{}",
        r.body
    );

    // Metrics: unknown publicly (counted as an unknown path), a page internally.
    assert_unknown(
        &public.get("/metrics", None),
        "GET /metrics on the public listener",
    );
    let page = internal.get("/metrics", None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type")
            .map(|c| c.starts_with("text/plain")),
        Some(true)
    );
    assert!(
        sample(
            &page.body,
            "seckill_http_requests_total{route=\"admin_sales\",status=\"201\"}"
        ) == Some(1.0),
        "only the internal create counts as admin_sales:\n{}",
        page.body
    );
    assert!(
        sample(
            &page.body,
            "seckill_http_requests_total{route=\"other\",status=\"404\"}"
        )
        .is_some_and(|n| n >= 10.0),
        "{}",
        page.body
    );
    for l in ["public", "internal"] {
        let name = format!("seckill_http_listener_connections{{listener=\"{l}\"}}");
        assert!(
            sample(&page.body, &name).is_some(),
            "{name}:\n{}",
            page.body
        );
    }

    // The probes: on both.
    for at in [public, internal] {
        assert_eq!(at.get("/healthz", None).status, 200);
        assert_eq!(at.get("/readyz", None).status, 200);
    }
}
