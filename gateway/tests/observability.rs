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
