//! Every documented operation answers as documented, in every state: served, other
//! methods on its path, status reads switched off, every degradation.

use crate::harness::{now_ms, unique, Gateway};
use crate::schema::{
    answers_as_documented, auth_for, check_response, deref, doc, documented_listeners, endpoint,
    operations, send, signed_headers, METHODS,
};
use gateway::app::App;
use gateway::metrics::{Listener, Route, LISTENERS, ROUTES};
use serde_json::json;
use std::collections::{BTreeSet, HashSet};

#[test]
fn every_documented_route_answers_as_documented() {
    let doc = doc();
    let gw = Gateway::start();
    let sale = gw.open_sale("openapi", 10);
    let user = 5;
    let token = gw.token(&sale, user).field("token");
    let order = gw.order(&sale, user, &token).field("order_id");

    let mut served = HashSet::new();
    for (template, method, op) in operations(&doc) {
        let path = template.replace("{sale}", &sale).replace("{id}", &order);
        let route = App::route_of(&path);
        assert_ne!(
            route,
            Route::Other,
            "{method} {template} is documented but not routed"
        );
        served.insert(route as usize);
        // Token and order operations act as fresh users (the first one already bought).
        let buyer = match template.as_str() {
            "/v1/sales/{sale}/tokens" => user + 1,
            "/v1/sales/{sale}/orders" => user + 2,
            _ => user,
        };
        let auth = auth_for(&gw, &op, buyer);
        let body = match (method.as_str(), template.as_str()) {
            ("POST", "/v1/sales/{sale}/orders") => {
                let fresh = gw.token(&sale, buyer).field("token");
                Some(format!(r#"{{"token":"{fresh}"}}"#))
            }
            ("POST", "/admin/sales") => Some(format!(
                r#"{{"sale":"{}","stock":5,"start_ms":{},"end_ms":{}}}"#,
                unique("oa"),
                now_ms(),
                now_ms() + 60_000
            )),
            ("POST", "/admin/sales/{sale}/pause") => Some(r#"{"paused":false}"#.to_string()),
            ("POST", "/admin/switches") | ("POST", "/admin/switches/local") => {
                Some(r#"{"status_reads":"normal"}"#.to_string())
            }
            // The provider pays the order at the default price.
            ("POST", "/payments/webhook") => Some(crate::harness::payment_body(
                &order,
                &seckill_common::payment::intent_id(crate::harness::WEBHOOK.as_bytes(), &order),
                100,
                "EUR",
            )),
            _ => None,
        };
        let what = format!("{method} {template}");
        let r = send(&gw, &op, &method, &path, auth.as_deref(), body.as_deref());
        answers_as_documented(&doc, &what, &op, &r);
        let success = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|c| c.parse::<u16>().ok())
            .min()
            .unwrap();
        assert_eq!(r.status, success, "{what} with valid input: {}", r.body);

        // Without credentials (a ticket, the admin token, the provider's signature): 401,
        // as documented.
        if auth.is_some() || !signed_headers(&op, body.as_deref()).is_empty() {
            let r = endpoint(&gw, &path).request(&method, &path, None, body.as_deref());
            assert_eq!(r.status, 401, "{what} without credentials: {}", r.body);
            answers_as_documented(&doc, &what, &op, &r);
        }
        // A body over max_body_bytes (4096) on any operation: 413, as documented.
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
        let r = send(&gw, &op, &method, &path, auth.as_deref(), Some(&big));
        assert_eq!(r.status, 413, "{what} with a large body: {}", r.body);
        answers_as_documented(&doc, &what, &op, &r);
    }
    let all: HashSet<usize> = ROUTES
        .iter()
        .filter(|r| **r != Route::Other)
        .map(|r| *r as usize)
        .collect();
    assert_eq!(served, all, "every route the gateway serves is documented");
}

/// Each path is served on the listeners its `servers` name and nowhere else: on the
/// other listener it is an unknown path (404 `not_found`, as the document's description
/// says), whatever the method and credentials.
#[test]
fn servers_are_the_listeners_that_serve_each_path() {
    let doc = doc();
    let gw = Gateway::start();
    let sale = gw.open_sale("servers", 5);
    for (template, method, op) in operations(&doc) {
        let path = template.replace("{sale}", &sale).replace("{id}", "x-1");
        let documented = documented_listeners(&doc, &template);
        let what = format!("{method} {template}");
        for l in LISTENERS {
            assert_eq!(
                l.serves(App::route_of(&path)),
                documented.contains(&l),
                "{what}: served on the {} listener vs openapi.json's servers",
                l.label()
            );
            if documented.contains(&l) {
                continue;
            }
            let at = match l {
                Listener::Public => gw.public(),
                Listener::Internal => gw.internal(),
            };
            let auth = auth_for(&gw, &op, 3);
            let r = at.request(&method, &path, auth.as_deref(), Some("{}"));
            assert_eq!(
                (r.status, r.code().as_str()),
                (404, "not_found"),
                "{what} on the {} listener: {}",
                l.label(),
                r.body
            );
        }
    }
}

/// Paths answer only their documented methods: any other is 405 with `Allow` listing
/// exactly those (schemathesis's unsupported_method and allow_header_conformance).
#[test]
fn other_methods_are_405_with_the_documented_allow() {
    let doc = doc();
    let gw = Gateway::start();
    for (template, ops) in doc["paths"].as_object().unwrap() {
        let path = template.replace("{sale}", "s1").replace("{id}", "s1-1");
        let documented: BTreeSet<String> = ops
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| METHODS.contains(&k.as_str()))
            .map(|m| m.to_uppercase())
            .collect();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if documented.contains(method) {
                continue;
            }
            let r = endpoint(&gw, &path).request(method, &path, Some(&Gateway::admin_auth()), None);
            let what = format!("{method} {template}");
            assert_eq!(r.status, 405, "{what}: {}", r.body);
            let allow: BTreeSet<String> = r
                .header("allow")
                .unwrap_or_else(|| panic!("{what}: 405 without Allow"))
                .split(',')
                .map(|m| m.trim().to_string())
                .collect();
            assert_eq!(allow, documented, "{what}: Allow vs openapi.json");
            check_response(
                &doc,
                &what,
                deref(
                    &doc,
                    &json!({"$ref": "#/components/responses/MethodNotAllowed"}),
                ),
                &r,
            );
        }
    }
}

/// Status reads switched off still ask for the ticket first: 401 without one (found by
/// schemathesis: the 503 answered credential-less requests).
#[test]
fn order_status_checks_the_ticket_before_the_switch() {
    let doc = doc();
    let op = &doc["paths"]["/v1/orders/{id}"]["get"];
    let gw = Gateway::start();
    let admin = Gateway::admin_auth();
    let r = gw.internal().post(
        "/admin/switches/local",
        Some(&admin),
        Some(r#"{"status_reads":"off"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let refused = |auth: Option<&str>, status: u16, code: &str| {
        let r = gw.get("/v1/orders/s1-1", auth);
        assert_eq!((r.status, r.code().as_str()), (status, code), "{}", r.body);
        answers_as_documented(&doc, "GET /v1/orders/{id}", op, &r);
    };
    refused(None, 401, "ticket_missing");
    refused(Some(&gw.ticket(3)), 503, "status_reads_off");
}

/// Under every degradation an operator can switch on (limits at their lowest, admission
/// shed, status reads off or from cache, everything paused, the Redis breaker open),
/// each operation still answers only what it documents (429 and 503 with Retry-After).
#[test]
fn degraded_answers_are_documented() {
    let doc = doc();
    let gw = Gateway::start();
    let admin = Gateway::admin_auth();
    let sale = gw.open_sale("degraded", 10);
    let token = gw.token(&sale, 9).field("token");
    let order = gw.order(&sale, 9, &token).field("order_id");
    let rates =
        r#"{"global_rps":1,"global_burst":1,"user_rps":1,"user_burst":1,"ip_rps":1,"ip_burst":1}"#;
    let states = [
        format!(r#"{{"rates":{rates},"admission_ratio":0.0,"status_reads":"cache"}}"#),
        r#"{"status_reads":"off","pause_all":true}"#.to_string(),
        r#"{"redis_breaker":"open"}"#.to_string(),
    ];
    for state in states {
        let r = gw
            .internal()
            .post("/admin/switches/local", Some(&admin), Some(&state));
        assert_eq!(r.status, 200, "{state}: {}", r.body);
        for (template, method, op) in operations(&doc) {
            if template.starts_with("/admin/switches") {
                continue; // would change the state under test
            }
            let path = template.replace("{sale}", &sale).replace("{id}", &order);
            let auth = auth_for(&gw, &op, 9);
            let body = match template.as_str() {
                "/v1/sales/{sale}/orders" => Some(format!(r#"{{"token":"{token}"}}"#)),
                "/admin/sales" => Some(format!(
                    r#"{{"sale":"{}","stock":1,"start_ms":0,"end_ms":1}}"#,
                    unique("dg")
                )),
                "/admin/sales/{sale}/pause" => Some(r#"{"paused":false}"#.to_string()),
                _ => None,
            };
            // Three in a row: the second and third meet the lowest limits.
            for _ in 0..3 {
                let r =
                    endpoint(&gw, &path).request(&method, &path, auth.as_deref(), body.as_deref());
                answers_as_documented(&doc, &format!("{method} {template} ({state})"), &op, &r);
            }
        }
        let r = gw
            .internal()
            .request("DELETE", "/admin/switches/local", Some(&admin), None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
}
