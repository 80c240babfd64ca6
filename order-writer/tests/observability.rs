//! Every order-writer metric that the alert rules and the dashboard name is really
//! exported (the writer renders every metric, zero or not).

use seckill_common::observability::{metric_names, missing, ALERTS, DASHBOARD};

#[test]
fn every_writer_metric_the_alerts_and_dashboard_use_is_exported() {
    let text = order_writer::metrics::Metrics::default().render();
    let mut wanted = metric_names(ALERTS);
    wanted.extend(metric_names(DASHBOARD));
    wanted.retain(|n| n.starts_with("seckill_writer_"));
    assert!(wanted.len() >= 8, "{wanted:?}");
    assert_eq!(
        missing(&wanted, &text),
        Vec::<String>::new(),
        "named by runbooks/ but not exported"
    );
}
