//! Faults of the Kafka cluster: all of it down (3), one broker killed (9), a rolling
//! restart (10).

use super::{finish, observe, peak, rig, sleep, start_load, P99_BUDGET_MS};
use crate::drill::{wait_for, Drill};
use crate::env::{Env, Service};
use crate::verify::invariants;
use crate::ChaosError;
use stackctl::process::SIGKILL;
use std::time::Duration;

pub(super) fn broker_down(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (gws, _w, sale) = rig(env, d, "d3", 1, None, &[])?;
    let gw = &gws[0];
    let mut load = start_load(d, &[gw], &sale, 6, 20.0, 100);
    sleep(5.0);
    d.log(format!(
        "baseline: {}",
        load.window(0, load.elapsed_ms()).summary()
    ));
    // The manual switch first (broker maintenance): spool only, then back to auto.
    d.log("operator: gateway switch set order_sink spool");
    env.switch(gw, &["switch", "set", "order_sink", "spool"])?;
    let held = peak(Duration::from_secs(3), || {
        gw.metric("seckill_spool_pending")
    });
    d.check(
        format!("order_sink spool: orders held in the spool with the broker up ({held})"),
        held > 0.0,
    );
    d.log("operator: gateway switch set order_sink auto");
    env.switch(gw, &["switch", "set", "order_sink", "auto"])?;
    let replayed = wait_for(Duration::from_secs(15), || {
        gw.metric("seckill_spool_pending") == Some(0.0)
    });
    d.check("back to auto: the spool replayed into the broker", replayed);
    d.log("FAULT: kill -9 every broker of the Kafka cluster");
    for n in 0..env.stack.kafka.nodes {
        env.signal(Service::Kafka(n), SIGKILL)?;
    }
    let f0 = load.elapsed_ms();
    let spooled = peak(Duration::from_secs(10), || {
        gw.metric("seckill_spool_pending")
    });
    d.log("REMOVED: the cluster restarted (same logs)");
    env.up()?;
    let f1 = load.elapsed_ms();
    let during = observe(d, &load, "during", f0, f1);
    d.check(
        format!(
            "orders still accepted while the broker is down: {} (spool held up to {spooled})",
            during.count("202")
        ),
        during.count("202") > 0 && spooled > 0.0,
    );
    d.check(
        format!(
            "no order refused for the broker: {} order_sink_unavailable",
            during.count("503 order_sink_unavailable")
        ),
        during.count("503 order_sink_unavailable") == 0,
    );
    d.check(
        format!(
            "p99 bounded by the delivery timeout: {:.0} ms (timeout 3000 ms)",
            during.p99_ms
        ),
        during.p99_ms <= 4000.0,
    );
    let drained = wait_for(Duration::from_secs(45), || {
        gw.metric("seckill_spool_pending") == Some(0.0)
    });
    d.check(
        format!(
            "the spool was replayed into the broker ({} orders replayed)",
            gw.metric("seckill_spool_replayed_total").unwrap_or(0.0)
        ),
        drained,
    );
    sleep(3.0);
    load.stop();
    invariants(env, d, &sale, &load)
}

/// The node leading most partitions of the drill's topic (node 0 if none answers).
fn busiest_leader(env: &Env) -> usize {
    let leaders = env.stack.kafka.leaders(&env.topic_and_group().0);
    (0..env.stack.kafka.nodes)
        .max_by_key(|n| leaders.iter().filter(|l| **l == Some(*n)).count())
        .unwrap_or(0)
}

pub(super) fn broker_killed(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (gws, _w, sale) = rig(env, d, "d9", 1, None, &[])?;
    let gw = &gws[0];
    let load = start_load(d, &[gw], &sale, 8, 25.0, 90);
    sleep(5.0);
    d.log(format!(
        "baseline: {}",
        load.window(0, load.elapsed_ms()).summary()
    ));
    let victim = busiest_leader(env);
    let topic = env.topic_and_group().0;
    let before = env.stack.kafka.leaders(&topic);
    d.log(format!("partition leaders (node index): {before:?}"));
    d.log(format!("FAULT: kill -9 kafka-{victim}"));
    env.signal(Service::Kafka(victim), SIGKILL)?;
    let f0 = load.elapsed_ms();
    let moved = wait_for(Duration::from_secs(20), || {
        let l = env.stack.kafka.leaders(&topic);
        !l.is_empty() && l.iter().all(|p| p.is_some() && *p != Some(victim))
    });
    let after_kill = env.stack.kafka.leaders(&topic);
    d.check(
        format!(
            "the leaders moved to the two live brokers within 20 s: {after_kill:?} ({:.1} s)",
            (load.elapsed_ms() - f0) as f64 / 1000.0
        ),
        moved,
    );
    sleep(8.0);
    let f1 = load.elapsed_ms();
    let during = observe(d, &load, "one broker down", f0, f1);
    d.check(
        format!(
            "orders accepted with one broker down: {}, none refused for the sink ({} order_sink_unavailable)",
            during.count("202"),
            during.count("503 order_sink_unavailable")
        ),
        during.count("202") > 0 && during.count("503 order_sink_unavailable") == 0,
    );
    let late = observe(d, &load, "after the leaders moved", f1 - 4000, f1);
    d.check(
        format!(
            "after the move, p99 {:.0} ms within {P99_BUDGET_MS} ms (a 202 waits for two in-sync replicas)",
            late.p99_ms
        ),
        late.count("202") > 0 && late.p99_ms <= P99_BUDGET_MS,
    );
    d.log(format!("REMOVED: kafka-{victim} restarted"));
    env.stack.kafka.restart_node(victim)?;
    let r0 = load.elapsed_ms();
    sleep(4.0);
    let drained = wait_for(Duration::from_secs(30), || {
        gw.metric("seckill_spool_pending") == Some(0.0)
    });
    d.check("nothing left in the spool", drained);
    finish(env, d, load, &sale, r0, "the broker rejoined")
}

pub(super) fn brokers_rolling_restart(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (gws, _w, sale) = rig(env, d, "d10", 1, None, &[])?;
    let gw = &gws[0];
    let load = start_load(d, &[gw], &sale, 8, 25.0, 110);
    sleep(5.0);
    d.log(format!(
        "baseline: {}",
        load.window(0, load.elapsed_ms()).summary()
    ));
    let f0 = load.elapsed_ms();
    for n in 0..env.stack.kafka.nodes {
        d.log(format!(
            "FAULT: kafka-{n} stopped (controlled shutdown) and started again"
        ));
        env.stop(Service::Kafka(n));
        sleep(2.0);
        env.stack.kafka.restart_node(n)?;
        d.log(format!("kafka-{n} back in the cluster"));
        sleep(3.0);
    }
    let f1 = load.elapsed_ms();
    let during = observe(d, &load, "rolling restart", f0, f1);
    d.check(
        format!(
            "orders accepted through the restarts: {}, {} refused for the sink, {} other 5xx",
            during.count("202"),
            during.count("503 order_sink_unavailable"),
            during.count("5")
        ),
        during.count("202") > 0 && during.count("5") == 0,
    );
    d.check(
        format!(
            "p99 through the restarts {:.0} ms within the delivery timeout (3000 ms)",
            during.p99_ms
        ),
        during.p99_ms <= 3000.0,
    );
    let drained = wait_for(Duration::from_secs(30), || {
        gw.metric("seckill_spool_pending") == Some(0.0)
    });
    d.check("nothing left in the spool", drained);
    sleep(3.0);
    finish(env, d, load, &sale, f1, "after the last restart")
}
