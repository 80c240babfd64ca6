//! One trace per order, from the click to the row: the gateway's request and its steps,
//! the Kafka hand-off, the writer's consumption and its PostgreSQL write, found in the
//! stack's Jaeger by the trace id the 202 carries. Needs the stack's collector
//! (`./dev up --tracing`; `./dev test` brings the stack up so).

mod harness;

use harness::{unique, Gateway, Options};
use serde_json::Value;
use std::time::{Duration, Instant};

fn jaeger() -> String {
    let stack = stackctl::ensure_up();
    assert!(
        !stack.jaeger_url.is_empty(),
        "the local stack runs no trace collector: bring it up with `./dev up --tracing` \
         (./dev test does)"
    );
    stack.jaeger_url
}

/// GET a JSON document from Jaeger's query API (None while it answers 404).
fn get(url: &str) -> Option<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().expect("Jaeger's query API answers");
    (r.status() == 200).then(|| r.body_mut().read_json().expect("JSON"))
}

/// The spans of a trace with their service, once `done` holds for them (30 s at most).
fn spans_of(base: &str, trace: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = get(&format!("{base}/api/traces/{trace}"))
            .map(|d| parse(&d))
            .unwrap_or_default();
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < end,
            "trace {trace} incomplete after 30 s: {spans:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    id: String,
    parent: Option<String>,
    tags: Vec<(String, String)>,
}

impl Span {
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse(doc: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for t in doc["data"].as_array().into_iter().flatten() {
        for s in t["spans"].as_array().into_iter().flatten() {
            let pid = s["processID"].as_str().unwrap_or_default();
            out.push(Span {
                service: t["processes"][pid]["serviceName"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                name: s["operationName"].as_str().unwrap_or_default().into(),
                id: s["spanID"].as_str().unwrap_or_default().into(),
                parent: s["references"]
                    .as_array()
                    .and_then(|r| r.first())
                    .and_then(|r| r["spanID"].as_str())
                    .map(String::from),
                tags: s["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        let v = &t["value"];
                        let v = v.as_str().map(String::from).unwrap_or(v.to_string());
                        (t["key"].as_str().unwrap_or_default().to_string(), v)
                    })
                    .collect(),
            });
        }
    }
    out
}

fn find<'a>(spans: &'a [Span], service: &str, name: &str) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
}

#[test]
fn an_order_is_one_trace_from_the_gateway_through_kafka_to_postgres() {
    let jaeger = jaeger();
    let traced = || vec![("SECKILL_TRACING_SAMPLE_RATIO", "1".to_string())];
    let gw = Gateway::start_with(Options {
        env: traced(),
        ..Default::default()
    });
    let ctl = stackctl::Stack::from_env().expect("the local stack");
    let group = unique("trace_writer");
    let mut env = traced();
    env.extend([
        ("SECKILL_ORDERS_TOPIC", gw.topic.clone()),
        ("SECKILL_GROUP_ID", group.clone()),
        ("SECKILL_RECONCILE_POLL_MS", "0".to_string()),
    ]);
    let _writer = ctl
        .writer(
            &stackctl::bin("order-writer").expect("order-writer built"),
            &group,
            &env,
        )
        .expect("start an order-writer");
    let sale = gw.open_sale("traced", 10);
    let r = gw.buy(&sale, 42);
    assert_eq!(r.status, 202, "{}", r.body);
    let order_id = r.field("order_id");
    let trace = r.field("trace_id");
    assert_eq!(trace.len(), 32, "{trace}");

    let spans = spans_of(&jaeger, &trace, |s| {
        find(s, "seckill-order-writer", "postgres.write_batch").is_some()
            && find(s, "seckill-gateway", "kafka.produce").is_some()
    });
    let root = find(&spans, "seckill-gateway", "POST /v1/sales/{sale}/orders")
        .expect("the request's span");
    assert_eq!(root.parent, None, "the request starts the trace");
    assert_eq!(root.tag("seckill.order_id"), Some(order_id.as_str()));
    assert_eq!(root.tag("http.response.status_code"), Some("202"));
    for step in ["ticket", "limits", "redis.purchase", "kafka.produce"] {
        let s = find(&spans, "seckill-gateway", step)
            .unwrap_or_else(|| panic!("no {step} span: {spans:#?}"));
        assert_eq!(s.parent.as_deref(), Some(root.id.as_str()), "{step}");
    }
    let produce = find(&spans, "seckill-gateway", "kafka.produce").unwrap();
    let consume = find(&spans, "seckill-order-writer", "order.consume").expect("the writer's span");
    assert_eq!(
        consume.parent.as_deref(),
        Some(produce.id.as_str()),
        "the writer continues the trace under the hand-off (the message's traceparent)"
    );
    assert_eq!(consume.tag("seckill.order_id"), Some(order_id.as_str()));
    assert_eq!(
        consume.tag("messaging.destination.name"),
        Some(gw.topic.as_str())
    );
    let write = find(&spans, "seckill-order-writer", "postgres.write_batch").unwrap();
    assert_eq!(write.parent.as_deref(), Some(consume.id.as_str()));
    assert_eq!(write.tag("db.system.name"), Some("postgresql"));
}

#[test]
fn unsampled_orders_carry_no_trace_id_but_failures_are_always_traced() {
    let jaeger = jaeger();
    // Nothing sampled, and a Redis nobody listens on: every purchase fails with a 5xx.
    let dead_redis = format!("redis://127.0.0.1:{}", harness::free_port());
    let gw = Gateway::start_with(Options {
        env: vec![("SECKILL_TRACING_SAMPLE_RATIO", "0".to_string())],
        ..Default::default()
    });
    let sale = gw.open_sale("untraced", 10);
    let r = gw.buy(&sale, 1);
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.json().get("trace_id").is_none(), "{}", r.body);

    let broken = Gateway::start_with(Options {
        redis_url: Some(dead_redis),
        brokers: Some(gw.brokers.clone()),
        env: vec![("SECKILL_TRACING_SAMPLE_RATIO", "0".to_string())],
    });
    let failed_sale = unique("failing");
    let r = broken.token(&failed_sale, 7);
    assert!(r.status >= 500, "{} {}", r.status, r.body);
    let query = format!(
        "{jaeger}/api/traces?service=seckill-gateway&lookback=1h&limit=5&tags=%7B%22seckill.sale%22%3A%22{failed_sale}%22%7D"
    );
    let end = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = get(&query).map(|d| parse(&d)).unwrap_or_default();
        if !spans.is_empty() {
            break spans;
        }
        assert!(Instant::now() < end, "the failed request was not traced");
        std::thread::sleep(Duration::from_millis(250));
    };
    let root = find(&spans, "seckill-gateway", "POST /v1/sales/{sale}/tokens")
        .expect("the failed request's span");
    assert_eq!(root.tag("error"), Some("true"), "{root:#?}");
    assert_eq!(root.tag("seckill.sampled_for"), Some("error"));
    assert_eq!(
        root.tag("http.response.status_code"),
        Some(r.status.to_string().as_str())
    );
}
