//! `openapi.json` stays true, both ways:
//! - every documented operation exists on a running gateway and answers, with valid
//!   input, its documented success in the documented shape; every route the gateway
//!   serves is documented;
//! - every refusal the server can choose (`error.rs`) is documented with its status,
//!   code and `Retry-After`; every operation documents the edge's refusals; other
//!   methods on a documented path answer 405 with `Allow` listing the documented ones;
//! - the server enforces what the request schemas declare (a body breaking a declared
//!   constraint is 400) and nothing more (bodies the schemas allow, at their bounds,
//!   are not refused with 400).
//!
//! `gateway/fuzz/run.sh` (schemathesis, in `./dev test`) explores the same contract
//! with generated requests; these are its cheap, deterministic core.

mod harness;

use gateway::app::App;
use gateway::error::{ApiError, ControlError};
use gateway::metrics::{Limit, Route, ROUTES};
use gateway::order_sink::SinkError;
use gateway::switches::InvalidSwitch;
use harness::{now_ms, unique, Gateway, Resp};
use may_minihttp::Refusal;
use seckill_common::ticket::TicketError;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashSet};
use stock::StockError;

fn doc() -> Value {
    serde_json::from_str(include_str!("../openapi.json")).expect("openapi.json is JSON")
}

/// `v`, or what its `$ref` points at.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => deref(doc, doc.pointer(r.trim_start_matches('#')).expect(r)),
        None => v,
    }
}

/// The subset of JSON Schema (OpenAPI 3.0) that openapi.json uses, minus `pattern`.
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let s = deref(doc, schema);
    if v.is_null() && s["nullable"] == true {
        return Ok(());
    }
    if let Some(all) = s["allOf"].as_array() {
        for sub in all {
            conforms(doc, sub, v, at)?;
        }
    }
    if let Some(any) = s["anyOf"].as_array() {
        let errs: Vec<String> = any
            .iter()
            .filter_map(|sub| conforms(doc, sub, v, at).err())
            .collect();
        if errs.len() == any.len() {
            return Err(format!("{at}: matches none of anyOf: {errs:?}"));
        }
    }
    let fail = |why: String| Err(format!("{at}: {why} (value {v})"));
    let ok_type = match s["type"].as_str() {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("boolean") => v.is_boolean(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some(t) => return fail(format!("unknown type {t}")),
    };
    if !ok_type {
        return fail(format!("not of type {}", s["type"]));
    }
    if let Some(e) = s["enum"].as_array() {
        if !e.contains(v) {
            return fail(format!("not one of {e:?}"));
        }
    }
    if let (Some(min), Some(x)) = (s["minimum"].as_f64(), v.as_f64()) {
        if x < min {
            return fail(format!("below {min}"));
        }
    }
    if let (Some(max), Some(x)) = (s["maximum"].as_f64(), v.as_f64()) {
        if x > max {
            return fail(format!("above {max}"));
        }
    }
    if let Some(o) = v.as_object() {
        let props = s["properties"].as_object();
        for r in s["required"].as_array().into_iter().flatten() {
            if !o.contains_key(r.as_str().unwrap()) {
                return fail(format!("missing required {r}"));
            }
        }
        if let Some(n) = s["minProperties"].as_u64() {
            if (o.len() as u64) < n {
                return fail(format!("fewer than {n} properties"));
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => conforms(doc, ps, x, &format!("{at}.{k}"))?,
                None => match &s["additionalProperties"] {
                    Value::Bool(false) => return fail(format!("undeclared property {k:?}")),
                    extra @ Value::Object(_) => conforms(doc, extra, x, &format!("{at}.{k}"))?,
                    _ => {}
                },
            }
        }
    }
    if let Some(a) = v.as_array() {
        if let Some(n) = s["maxItems"].as_u64() {
            if a.len() as u64 > n {
                return fail(format!("more than {n} items"));
            }
        }
        for (i, x) in a.iter().enumerate() {
            conforms(doc, &s["items"], x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The answer is documented for `op`: its status, content type, required headers, body.
fn answers_as_documented(doc: &Value, what: &str, op: &Value, r: &Resp) {
    let Some(resp) = op["responses"].get(r.status.to_string()) else {
        let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
        panic!(
            "{what} answered {} ({}), not documented ({documented:?})",
            r.status, r.body
        );
    };
    check_response(doc, what, deref(doc, resp), r);
}

fn check_response(doc: &Value, what: &str, resp: &Value, r: &Resp) {
    for (name, h) in resp["headers"].as_object().into_iter().flatten() {
        let h = deref(doc, h);
        if h["required"] == true {
            let got = r
                .header(name)
                .unwrap_or_else(|| panic!("{what} {}: documented header {name} missing", r.status));
            if h["schema"]["type"] == "integer" {
                let n: Value = json!(got
                    .parse::<i64>()
                    .unwrap_or_else(|_| panic!("{what}: {name}: {got:?} is no integer")));
                conforms(doc, &h["schema"], &n, name).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
        }
    }
    let (media, content) = resp["content"]
        .as_object()
        .and_then(|c| c.iter().next())
        .unwrap_or_else(|| panic!("{what} {}: no content documented", r.status));
    let got = r.header("content-type").unwrap_or("");
    assert!(
        got.split(';').next() == Some(media.as_str()),
        "{what} {}: Content-Type {got:?}, documented {media}",
        r.status
    );
    if media == "application/json" {
        conforms(doc, &content["schema"], &r.json(), "body")
            .unwrap_or_else(|e| panic!("{what} {}: {e}\n{}", r.status, r.body));
    }
}

/// Each documented operation: (path template, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = vec![];
    for (template, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            out.push((template.clone(), method.to_uppercase(), op.clone()));
        }
    }
    out
}

fn auth_for(gw: &Gateway, op: &Value, user: u64) -> Option<String> {
    match op["security"][0]
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .as_deref()
    {
        Some("Ticket") => Some(gw.ticket(user)),
        Some("Bearer") => Some(Gateway::admin_auth()),
        Some(other) => panic!("unknown security scheme {other}"),
        None => None,
    }
}

#[test]
fn every_documented_route_answers_as_documented() {
    let doc = doc();
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
        let what = format!("{method} {template}");
        let r = gw.request(&method, &path, auth.as_deref(), body.as_deref());
        answers_as_documented(&doc, &what, &op, &r);
        let success = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|c| c.parse::<u16>().ok())
            .min()
            .unwrap();
        assert_eq!(r.status, success, "{what} with valid input: {}", r.body);

        // Without credentials: 401, as documented.
        if auth.is_some() {
            let r = gw.request(&method, &path, None, body.as_deref());
            assert_eq!(r.status, 401, "{what} without credentials: {}", r.body);
            answers_as_documented(&doc, &what, &op, &r);
        }
        // A body over max_body_bytes (4096) on any operation: 413, as documented.
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
        let r = gw.request(&method, &path, auth.as_deref(), Some(&big));
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

/// Every refusal `error.rs` can choose, with its status, code and Retry-After, is in
/// the document; every operation documents the refusals of the HTTP edge.
#[test]
fn every_refusal_is_documented() {
    let doc = doc();
    let stock = [
        StockError::NoSale,
        StockError::SaleExists,
        StockError::Paused,
        StockError::NotStarted { start_ms: 1 },
        StockError::Ended,
        StockError::SoldOut,
        StockError::AlreadyBought,
        StockError::TooManyTokens,
        StockError::TokenInvalid,
        StockError::TokenExpired,
        StockError::TokenNotYours,
        StockError::TokenUsed,
        StockError::NoOrder,
        StockError::AlreadyReleased,
        StockError::AlreadyPaid,
        StockError::Replayed,
        StockError::WouldOversell { held: 1, sold: 1 },
        StockError::Invalid("x".into()),
        StockError::Redis("x".into()),
        StockError::Timeout,
        StockError::BadReply("x".into()),
    ];
    let mut errors: Vec<ApiError> = vec![
        ApiError::NotFound,
        ApiError::MethodNotAllowed,
        ApiError::BadRequest("x".into()),
        ApiError::BadJson(serde_json::from_str::<Value>("{").unwrap_err()),
        ApiError::InvalidSwitch(InvalidSwitch::ZeroRate),
        ApiError::TooLarge(1),
        ApiError::NoTicket,
        ApiError::Ticket(TicketError::Malformed),
        ApiError::Ticket(TicketError::Forged),
        ApiError::Ticket(TicketError::Expired),
        ApiError::Unauthorized,
        ApiError::Limited(Limit::User, 3),
        ApiError::SoldOutShed,
        ApiError::PausedAll,
        ApiError::AdmissionShed,
        ApiError::StatusReadsOff,
        ApiError::SinkUnavailable(SinkError::Unavailable),
        ApiError::OutcomeUnknown {
            order_id: "s-1".into(),
            reason: "x".into(),
        },
        ApiError::Draining,
        ApiError::StoreLost,
        ApiError::StoreUnconfirmed,
        ApiError::StatusCacheMiss,
        ApiError::SwitchStore(ControlError::NoAnswer),
    ];
    errors.extend(stock.into_iter().map(ApiError::Stock));
    errors.extend(Refusal::ALL.into_iter().map(ApiError::Refused));

    let mut codes_in_error_rs = BTreeSet::new();
    for e in &errors {
        let status = e.status();
        let code = e.code();
        codes_in_error_rs.insert(code.to_string());
        let resp = status_response(&doc, status)
            .unwrap_or_else(|| panic!("{status} ({code}) is documented by no operation"));
        let enum_codes = error_codes(&doc, resp);
        assert!(
            enum_codes.iter().any(|c| c == code),
            "{status} documents codes {enum_codes:?} but not {code:?} ({e})"
        );
        let has_retry = resp["headers"]["Retry-After"].is_object();
        assert_eq!(
            has_retry,
            e.retry_after().is_some(),
            "{status} {code}: Retry-After documented {has_retry}, sent {:?}",
            e.retry_after()
        );
        if status == 405 {
            assert_eq!(resp["headers"]["Allow"]["required"], true);
        }
    }
    // Codes in the Error schema that the server never sends are stale.
    let schema_codes: BTreeSet<String> = doc["components"]["schemas"]["Error"]["properties"]
        ["error"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        schema_codes, codes_in_error_rs,
        "Error.error enum vs error.rs"
    );
    // A code added to error.rs without a case above (and without documentation) fails
    // here: every `=> "code"` literal of `ApiError::code` is in the Error schema.
    let src = include_str!("../src/error.rs");
    let code_fn = &src[src.find("pub fn code(").unwrap()..src.find("pub fn retry_after(").unwrap()];
    for literal in code_fn.split("=> \"").skip(1) {
        let code = &literal[..literal.find('"').unwrap()];
        // `/readyz` answers "not ready" with its readiness object (documented there),
        // not with an Error body: `ApiError::body` says so.
        if code == "not_ready" {
            continue;
        }
        assert!(
            schema_codes.contains(code),
            "error.rs sends {code:?}: add the variant to this test and the code to openapi.json"
        );
    }

    // The edge answers these on any route, before the handler.
    for (template, method, op) in operations(&doc) {
        for status in [400, 408, 413, 429, 431, 501, 503] {
            assert!(
                op["responses"].get(status.to_string()).is_some(),
                "{method} {template} does not document the edge's {status}"
            );
        }
    }
}

/// The shared refusal response documented for `status` (405, which no operation can
/// answer, is documented in components only).
fn status_response(doc: &Value, status: u16) -> Option<&Value> {
    let from_ops = doc["paths"]
        .as_object()?
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
        .filter_map(|op| op["responses"].get(status.to_string()))
        .map(|r| deref(doc, r))
        .find(|r| r["content"]["application/json"]["schema"]["allOf"].is_array());
    from_ops
        .or_else(|| (status == 405).then(|| &doc["components"]["responses"]["MethodNotAllowed"]))
}

/// The error codes a refusal response's schema allows.
fn error_codes(doc: &Value, resp: &Value) -> Vec<String> {
    let schema = &resp["content"]["application/json"]["schema"];
    let mut out = vec![];
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let part = deref(doc, part);
        if let Some(e) = part["properties"]["error"]["enum"].as_array() {
            out = e.iter().map(|c| c.as_str().unwrap().to_string()).collect();
        }
    }
    out
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
            .map(|m| m.to_uppercase())
            .collect();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if documented.contains(method) {
                continue;
            }
            let r = gw.request(method, &path, Some(&Gateway::admin_auth()), None);
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

/// Values of a schema at its bounds: (minimal, maximal) — the extremes a client may send.
fn bounds(doc: &Value, schema: &Value, every: bool) -> (Value, Value) {
    let s = deref(doc, schema);
    if let Some(e) = s["enum"].as_array() {
        return (e[0].clone(), e[e.len() - 1].clone());
    }
    match s["type"].as_str() {
        Some("object") => {
            let required: Vec<&str> = s["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .collect();
            let (mut lo, mut hi) = (Map::new(), Map::new());
            let at_least = s["minProperties"].as_u64().unwrap_or(0) as usize;
            for (i, (k, ps)) in s["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if every || required.contains(&k.as_str()) || i < at_least {
                    let (a, b) = bounds(doc, ps, every);
                    lo.insert(k.clone(), a);
                    hi.insert(k.clone(), b);
                }
            }
            (Value::Object(lo), Value::Object(hi))
        }
        Some("integer") => {
            let lo = s["minimum"].as_i64().unwrap_or(i64::MIN);
            let hi = s["maximum"]
                .as_u64()
                .map(|m| json!(m))
                .unwrap_or(json!(i64::MAX));
            (json!(lo), hi)
        }
        Some("number") => (
            json!(s["minimum"].as_f64().unwrap_or(-1e300)),
            json!(s["maximum"].as_f64().unwrap_or(1e300)),
        ),
        Some("boolean") => (json!(false), json!(true)),
        Some("string") => match s["pattern"].as_str() {
            // The patterns openapi.json uses, at their shortest and longest.
            Some("^[A-Za-z0-9_]{1,64}$") => (json!("a"), json!("Z".repeat(64))),
            Some("^[0-9A-Fa-f]{32}$") => (json!("0".repeat(32)), json!("f".repeat(32))),
            Some(p) => panic!("add a value for the pattern {p}"),
            None => (json!("x"), json!("x")),
        },
        other => panic!("bounds of {other:?}"),
    }
}

/// The one constraint between fields that JSON Schema cannot state (openapi.json says
/// it in words): a sale ends after it starts.
fn end_after_start(body: &mut Value) {
    if let (Some(s), Some(e)) = (body["start_ms"].as_i64(), body["end_ms"].as_i64()) {
        let (s, e) = match (s, e) {
            (s, e) if e < s => (e, s),
            (s, e) if e == s && s < i64::MAX => (s, s + 1),
            (s, e) if e == s => (s - 1, e),
            ok => ok,
        };
        body["start_ms"] = json!(s);
        body["end_ms"] = json!(e);
    }
}

/// Each operation with a request body, the path to send it to, a valid body, and the
/// body's schema.
fn bodies(doc: &Value, sale: &str) -> Vec<(String, String, Value, Value, Value)> {
    let mut out = vec![];
    for (template, method, op) in operations(doc) {
        let Some(schema) = op["requestBody"]["content"]["application/json"]["schema"].as_object()
        else {
            continue;
        };
        let schema = Value::Object(schema.clone());
        let path = template.replace("{sale}", sale).replace("{id}", "x-1");
        out.push((method, path, op.clone(), schema, Value::Null));
    }
    out
}

/// Bodies the schema allows, at their bounds and with only the required fields, are
/// never refused as malformed (400): the schema declares everything the server checks.
#[test]
fn schema_valid_bodies_are_not_refused() {
    let doc = doc();
    let gw = Gateway::start();
    let sale = gw.open_sale("valid", 10);
    // Admin switch changes last: they may pause everything or open the breaker.
    let mut ops = bodies(&doc, &sale);
    ops.sort_by_key(|(_, path, ..)| path.contains("switches"));
    for (method, path, op, schema, _) in ops {
        for every in [false, true] {
            let (lo, hi) = bounds(&doc, &schema, every);
            for mut body in [lo, hi] {
                if path == "/admin/sales" {
                    body["sale"] = json!(unique("v"));
                    end_after_start(&mut body);
                }
                let what = format!("{method} {path} {body}");
                let auth = auth_for(&gw, &op, 77);
                let r = gw.request(&method, &path, auth.as_deref(), Some(&body.to_string()));
                assert_ne!(
                    r.status, 400,
                    "{what}: schema-valid body refused: {}",
                    r.body
                );
                answers_as_documented(&doc, &what, &op, &r);
            }
        }
    }
}

/// Bodies breaking a declared constraint are refused with 400: the server enforces
/// what the schema says (unknown fields, null, missing required fields, out of range,
/// wrong type, not in the enum, an empty central switch change).
#[test]
fn schema_invalid_bodies_are_refused() {
    let doc = doc();
    let gw = Gateway::start();
    let sale = gw.open_sale("invalid", 10);
    for (method, path, op, schema, _) in bodies(&doc, &sale) {
        let s = deref(&doc, &schema).clone();
        let (mut valid, _) = bounds(&doc, &s, true);
        if path == "/admin/sales" {
            end_after_start(&mut valid);
        }
        let mut broken: Vec<(String, Value)> = vec![];
        let mut with = |why: String, f: &dyn Fn(&mut Value)| {
            let mut b = valid.clone();
            f(&mut b);
            broken.push((why, b));
        };
        with("an unknown field".into(), &|b| {
            b["no_such_field"] = json!(1)
        });
        if s["minProperties"].as_u64() == Some(1) {
            with("no field at all".into(), &|b| *b = json!({}));
        }
        for r in s["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap().to_string();
            with(format!("without {r}"), &|b| {
                b.as_object_mut().unwrap().remove(&r);
            });
        }
        for (k, ps) in s["properties"].as_object().unwrap() {
            let ps = deref(&doc, ps);
            let k2 = k.clone();
            with(format!("{k} null"), &|b| b[&k2] = Value::Null);
            let wrong = if ps["type"] == "string" {
                json!(1)
            } else {
                json!("x")
            };
            with(format!("{k} of the wrong type"), &|b| {
                b[&k2] = wrong.clone()
            });
            if let Some(min) = ps["minimum"].as_i64() {
                if ps["type"] == "integer" && min > i64::MIN {
                    with(format!("{k} below its minimum"), &|b| {
                        b[&k2] = json!(min - 1)
                    });
                }
            }
            if let Some(max) = ps["maximum"].as_u64() {
                if ps["type"] == "integer" {
                    with(format!("{k} above its maximum"), &|b| {
                        b[&k2] = serde_json::from_str(&format!("{}", max as u128 + 1)).unwrap()
                    });
                }
            }
            if ps["type"] == "number" {
                if let Some(max) = ps["maximum"].as_f64() {
                    with(format!("{k} above its maximum"), &|b| {
                        b[&k2] = json!(max + 0.5)
                    });
                }
            }
            if ps["enum"].is_array() && ps["type"] == "string" {
                with(format!("{k} not in its enum"), &|b| {
                    b[&k2] = json!("nonesuch")
                });
            }
            if let Some(p) = ps["pattern"].as_str() {
                let _ = p;
                with(format!("{k} not matching its pattern"), &|b| {
                    b[&k2] = json!("no-way!")
                });
            }
            if ps["type"] == "object" {
                with(format!("{k} with an unknown field"), &|b| {
                    b[&k2]["no_such_field"] = json!(1)
                });
                for (inner, _) in ps["properties"].as_object().into_iter().flatten() {
                    let inner = inner.clone();
                    with(format!("{k} without {inner}"), &|b| {
                        b[&k2].as_object_mut().unwrap().remove(&inner);
                    });
                }
            }
        }
        let auth = auth_for(&gw, &op, 78);
        for (why, body) in broken {
            let what = format!("{method} {path} with {why}: {body}");
            let r = gw.request(&method, &path, auth.as_deref(), Some(&body.to_string()));
            assert_eq!(r.status, 400, "{what}: {}", r.body);
            answers_as_documented(&doc, &what, &op, &r);
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
    let r = gw.post(
        "/admin/switches/local",
        Some(&admin),
        Some(r#"{"status_reads":"off"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw.get("/v1/orders/s1-1", None);
    assert_eq!(
        (r.status, r.code()),
        (401, "ticket_missing".into()),
        "{}",
        r.body
    );
    answers_as_documented(&doc, "GET /v1/orders/{id}", op, &r);
    let r = gw.get("/v1/orders/s1-1", Some(&gw.ticket(3)));
    assert_eq!(
        (r.status, r.code()),
        (503, "status_reads_off".into()),
        "{}",
        r.body
    );
    answers_as_documented(&doc, "GET /v1/orders/{id}", op, &r);
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
    let token = gw.token(&sale, 9).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let order = gw.order(&sale, 9, &token).json()["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let rates =
        r#"{"global_rps":1,"global_burst":1,"user_rps":1,"user_burst":1,"ip_rps":1,"ip_burst":1}"#;
    let states = [
        format!(r#"{{"rates":{rates},"admission_ratio":0.0,"status_reads":"cache"}}"#),
        r#"{"status_reads":"off","pause_all":true}"#.to_string(),
        r#"{"redis_breaker":"open"}"#.to_string(),
    ];
    for state in states {
        let r = gw.post("/admin/switches/local", Some(&admin), Some(&state));
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
                let r = gw.request(&method, &path, auth.as_deref(), body.as_deref());
                answers_as_documented(&doc, &format!("{method} {template} ({state})"), &op, &r);
            }
        }
        let r = gw.request("DELETE", "/admin/switches/local", Some(&admin), None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
}
