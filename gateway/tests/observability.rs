//! Every gateway metric that the alert rules and the dashboard name is really exported.

mod harness;

use harness::Gateway;
use seckill_common::observability::{metric_names, missing, ALERTS, DASHBOARD};

#[test]
fn every_gateway_metric_the_alerts_and_dashboard_use_is_exported() {
    let gw = Gateway::start();
    let sale = gw.open_sale("observe", 10);
    let t = gw.token(&sale, 1);
    assert_eq!(t.status, 201);
    let text = gw.internal().get("/metrics", None).body;
    let mut wanted = metric_names(ALERTS);
    wanted.extend(metric_names(DASHBOARD));
    wanted.retain(|n| !n.starts_with("seckill_writer_"));
    assert!(wanted.len() > 15, "{wanted:?}");
    assert_eq!(
        missing(&wanted, &text),
        Vec::<String>::new(),
        "named by runbooks/ but not exported"
    );
}

/// Where a produce's time goes: librdkafka's statistics reach the metrics within a few
/// of their 1 s windows once orders flow to the broker.
#[test]
fn the_producer_stages_are_exported_once_orders_flow() {
    let gw = Gateway::start();
    let sale = gw.open_sale("stages", 200);
    let rtt = "seckill_kafka_producer_stage_seconds{stage=\"rtt\",quantile=\"0.99\"}";
    let seen = (0..100u64).any(|user| {
        let t = gw.token(&sale, user).field("token");
        assert_eq!(gw.order(&sale, user, &t).status, 202);
        std::thread::sleep(std::time::Duration::from_millis(100));
        gw.metric(rtt) > 0.0
    });
    assert!(seen, "no producer statistics in 10 s of orders");
    let text = gw.internal().get("/metrics", None).body;
    for stage in ["queue", "outbuf", "rtt"] {
        assert!(
            text.contains(&format!(
                "seckill_kafka_producer_stage_seconds{{stage=\"{stage}\",quantile=\"0.5\"}}"
            )),
            "{stage}"
        );
    }
}
