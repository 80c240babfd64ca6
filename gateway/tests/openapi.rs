//! `openapi.json` stays true: every documented operation exists on a running gateway and
//! answers one of its documented statuses, and every route the gateway serves is documented.

mod harness;

use gateway::app::App;
use gateway::metrics::{Route, ROUTES};
use harness::{now_ms, unique, Gateway};
use std::collections::HashSet;

#[test]
fn every_documented_route_answers_as_documented() {
    let doc: serde_json::Value = serde_json::from_str(include_str!("../openapi.json")).unwrap();
    let gw = Gateway::start();
    let sale = gw.open_sale("openapi", 10);
    let user = 5;
    let token = gw.token(&sale, user).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let order = gw.order(&sale, user, &token).json()["order_id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut served = HashSet::new();
    let paths = doc["paths"].as_object().unwrap();
    for (template, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let method = method.to_uppercase();
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
            let auth = match op["security"][0]
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .as_deref()
            {
                Some("ticket") => Some(gw.ticket(buyer)),
                Some("admin") => Some(Gateway::admin_auth()),
                _ => None,
            };
            let body = match (method.as_str(), template.as_str()) {
                ("POST", "/v1/sales/{sale}/orders") => {
                    let fresh = gw.token(&sale, buyer).json()["token"]
                        .as_str()
                        .unwrap()
                        .to_string();
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
                _ => None,
            };
            let r = gw.request(&method, &path, auth.as_deref(), body.as_deref());
            let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            assert!(
                documented.contains(&&r.status.to_string()),
                "{method} {template} answered {} ({}) which is not documented ({documented:?})",
                r.status,
                r.body
            );
            let success = documented
                .iter()
                .filter_map(|c| c.parse::<u16>().ok())
                .min()
                .unwrap();
            assert_eq!(
                r.status, success,
                "{method} {template} with valid input: {}",
                r.body
            );
        }
    }
    let all: HashSet<usize> = ROUTES
        .iter()
        .filter(|r| **r != Route::Other)
        .map(|r| *r as usize)
        .collect();
    assert_eq!(served, all, "every route the gateway serves is documented");
}
