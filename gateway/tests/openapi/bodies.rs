//! The request schemas and the server agree: what they allow is not refused, what they
//! forbid is (400).

use crate::harness::{unique, Gateway};
use crate::schema::{answers_as_documented, auth_for, deref, doc, operations, send};
use serde_json::{json, Map, Value};

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
            Some("^[A-Za-z0-9_]{1,64}-[0-9]{1,20}$") => (
                json!("a-0"),
                json!(format!("{}-{}", "Z".repeat(64), "9".repeat(20))),
            ),
            Some("^[A-Z]{3}$") => (json!("AAA"), json!("ZZZ")),
            Some(p) => panic!("add a value for the pattern {p}"),
            None => {
                let lo = s["minLength"].as_u64().unwrap_or(0).max(1) as usize;
                let hi = s["maxLength"].as_u64().map_or(lo, |m| m as usize);
                (json!("x".repeat(lo)), json!("x".repeat(hi)))
            }
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
                let r = send(
                    &gw,
                    &op,
                    &method,
                    &path,
                    auth.as_deref(),
                    Some(&body.to_string()),
                );
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
        // Unknown fields are refused where the schema says so (not in the provider's
        // callback: providers add fields).
        if s["additionalProperties"] == json!(false) {
            with("an unknown field".into(), &|b| {
                b["no_such_field"] = json!(1)
            });
        }
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
                if ps["additionalProperties"] == json!(false) {
                    with(format!("{k} with an unknown field"), &|b| {
                        b[&k2]["no_such_field"] = json!(1)
                    });
                }
                for inner in ps["required"].as_array().into_iter().flatten() {
                    let inner = inner.as_str().unwrap().to_string();
                    with(format!("{k} without {inner}"), &|b| {
                        b[&k2].as_object_mut().unwrap().remove(&inner);
                    });
                }
            }
        }
        let auth = auth_for(&gw, &op, 78);
        for (why, body) in broken {
            let what = format!("{method} {path} with {why}: {body}");
            let r = send(
                &gw,
                &op,
                &method,
                &path,
                auth.as_deref(),
                Some(&body.to_string()),
            );
            assert_eq!(r.status, 400, "{what}: {}", r.body);
            answers_as_documented(&doc, &what, &op, &r);
        }
    }
}
