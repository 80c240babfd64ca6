//! The document and the checks of an answer against it.

use crate::harness::{Endpoint, Gateway, Resp};
use gateway::app::App;
use gateway::metrics::Listener;
use serde_json::{json, Value};

pub fn doc() -> Value {
    serde_json::from_str(include_str!("../../openapi.json")).expect("openapi.json is JSON")
}

/// `v`, or what its `$ref` points at.
pub fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => deref(doc, doc.pointer(r.trim_start_matches('#')).expect(r)),
        None => v,
    }
}

/// The subset of JSON Schema (OpenAPI 3.0) that openapi.json uses, minus `pattern`.
pub fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
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
pub fn answers_as_documented(doc: &Value, what: &str, op: &Value, r: &Resp) {
    let Some(resp) = op["responses"].get(r.status.to_string()) else {
        let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
        panic!(
            "{what} answered {} ({}), not documented ({documented:?})",
            r.status, r.body
        );
    };
    check_response(doc, what, deref(doc, resp), r);
}

pub fn check_response(doc: &Value, what: &str, resp: &Value, r: &Resp) {
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

/// The HTTP methods a path item may hold (its other keys, such as `servers`, are not
/// operations).
pub const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Each documented operation: (path template, method, operation).
pub fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = vec![];
    for (template, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                out.push((template.clone(), method.to_uppercase(), op.clone()));
            }
        }
    }
    out
}

/// The listeners the document says `template` is served on: its path's `servers`, else
/// the document's, each named by its URL — `http://` and the default `listen` (public)
/// or `internal_listen` (internal).
pub fn documented_listeners(doc: &Value, template: &str) -> Vec<Listener> {
    let servers = doc["paths"][template]["servers"]
        .as_array()
        .or(doc["servers"].as_array())
        .unwrap_or_else(|| panic!("{template}: no servers"));
    let defaults = gateway::config::Config::default();
    servers
        .iter()
        .map(|s| match s["url"].as_str() {
            Some(u) if u == format!("http://{}", defaults.listen) => Listener::Public,
            Some(u) if u == format!("http://{}", defaults.internal_listen) => Listener::Internal,
            other => panic!("{template}: a server of neither listener: {other:?}"),
        })
        .collect()
}

/// The listener of `gw` that serves `path` (the public one when both do).
/// `servers_are_the_listeners_that_serve_each_path` checks the document says the same.
pub fn endpoint(gw: &Gateway, path: &str) -> Endpoint {
    if Listener::Public.serves(App::route_of(path)) {
        gw.public()
    } else {
        gw.internal()
    }
}

/// The request header fields `op` needs for `body`: the provider's signature over it,
/// for the operations the `Signature` scheme secures.
pub fn signed_headers(op: &Value, body: Option<&str>) -> Vec<(&'static str, String)> {
    if op["security"][0]["Signature"].is_array() {
        let now = (crate::harness::now_ms() / 1000) as u64;
        let sig = seckill_common::payment::signature(
            crate::harness::WEBHOOK.as_bytes(),
            now,
            body.unwrap_or("").as_bytes(),
        );
        vec![("Seckill-Signature", sig)]
    } else {
        vec![]
    }
}

/// Send `body` to `path` as `op` needs it, on the listener that serves it: its
/// credentials (the user's ticket or the admin token, `auth`) and, for the provider's
/// callback, its signature.
pub fn send(
    gw: &Gateway,
    op: &Value,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> crate::harness::Resp {
    let signed = signed_headers(op, body);
    let mut headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    endpoint(gw, path).request_with(method, path, &headers, body)
}

pub fn auth_for(gw: &Gateway, op: &Value, user: u64) -> Option<String> {
    match op["security"][0]
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .as_deref()
    {
        Some("Ticket") => Some(gw.ticket(user)),
        Some("Bearer") => Some(Gateway::admin_auth()),
        // The payment provider's signature covers the body: see `signed_headers`.
        Some("Signature") => None,
        Some(other) => panic!("unknown security scheme {other}"),
        None => None,
    }
}
