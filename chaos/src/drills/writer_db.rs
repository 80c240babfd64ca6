//! Faults behind the topic: the order-writer killed mid-batch (4), PostgreSQL down (5).

use super::{observe, rig, sleep, start_load};
use crate::drill::{wait_for, Drill};
use crate::env::{Env, Service};
use crate::verify::invariants;
use crate::ChaosError;
use std::time::Duration;

pub(super) fn writer_killed(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (gws, mut w1, sale) = rig(env, d, "d4", 1, None, &[])?;
    let gw = &gws[0];
    let mut load = start_load(d, &[gw], &sale, 8, 25.0, 60);
    sleep(6.0);
    let written = w1
        .metric("seckill_writer_rows_written_total")
        .unwrap_or(0.0);
    d.log(format!(
        "FAULT: kill -9 order-writer after {written} rows, batches in flight"
    ));
    w1.kill9();
    let f0 = load.elapsed_ms();
    // At once, within the dead member's session timeout: the group rebalances when the
    // coordinator expires it.
    d.log("REMOVED: a new order-writer starts (the group rebalances)");
    let w2 = env.writer("d4-writer-2")?;
    let assigned = wait_for(Duration::from_secs(20), || {
        w2.metric("seckill_writer_assigned_partitions")
            .is_some_and(|n| n > 0.0)
    });
    d.check(
        format!(
            "the new writer was assigned the partitions ({})",
            w2.metric("seckill_writer_assigned_partitions")
                .unwrap_or(0.0)
        ),
        assigned,
    );
    sleep(3.0);
    let during = load.window(f0, load.elapsed_ms());
    d.log(format!(
        "while the writer was away and rejoining: {}",
        during.summary()
    ));
    d.check(
        format!(
            "the gateway is unaffected: {} accepted, {} 5xx",
            during.count("202"),
            during.count("5")
        ),
        during.count("202") > 0 && during.count("5") == 0,
    );
    load.stop();
    invariants(env, d, &sale, &load)
}

pub(super) fn postgres_down(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (gws, w, sale) = rig(env, d, "d5", 1, None, &[])?;
    let gw = &gws[0];
    let mut load = start_load(d, &[gw], &sale, 6, 20.0, 90);
    sleep(5.0);
    let (acked, _) = load.acked();
    d.log("operator: gateway switch set status_reads cache");
    env.switch(gw, &["switch", "set", "status_reads", "cache"])?;
    d.log("FAULT: PostgreSQL stopped for 10 s");
    env.stop(Service::Postgres);
    let f0 = load.elapsed_ms();
    let mut lag = 0.0f64;
    let client = loadtest::buyer::Client::new(&gw.url(), crate::env::SECRET);
    let mut cached = 0;
    wait_for(Duration::from_secs(10), || {
        lag = lag.max(w.metric("seckill_writer_consumer_lag").unwrap_or(0.0));
        if let Some((id, user)) = acked.get(cached) {
            if client
                .order_status(id, *user)
                .is_ok_and(|a| a.status == 200 && a.body["cached"] == true)
            {
                cached += 1;
            }
        }
        false
    });
    d.log("REMOVED: PostgreSQL started");
    env.up()?;
    let f1 = load.elapsed_ms();
    let during = observe(d, &load, "during", f0, f1);
    d.check(
        format!(
            "orders accepted throughout: {} accepted, {} 5xx",
            during.count("202"),
            during.count("5")
        ),
        during.count("202") > 0 && during.count("5") == 0,
    );
    d.check(
        format!("the writer's lag grew while PostgreSQL was down (max {lag})"),
        lag > 0.0,
    );
    d.check(
        format!("order status served from the gateway's cache meanwhile ({cached} reads)"),
        cached > 0,
    );
    // Under steady load the gauge never rests at 0: drained means back under half a
    // second of traffic (120 orders/s here).
    let t_up = std::time::Instant::now();
    let drained = wait_for(Duration::from_secs(60), || {
        w.metric("seckill_writer_consumer_lag")
            .is_some_and(|l| l <= 60.0)
    });
    d.check(
        format!(
            "the lag drained (to at most 60, half a second of orders) {:.1} s after PostgreSQL came back",
            t_up.elapsed().as_secs_f64()
        ),
        drained,
    );
    d.log("operator: gateway switch set status_reads normal");
    env.switch(gw, &["switch", "set", "status_reads", "normal"])?;
    d.check(
        "status reads back to normal",
        gw.metric("seckill_switch_status_reads{mode=\"normal\"}") == Some(1.0),
    );
    load.stop();
    invariants(env, d, &sale, &load)
}
