//! The drills. Each: start its gateway(s) and writer on the drill stack, open a sale,
//! start load, inject the fault, check the degradation while it lasts, remove it, check
//! recovery, stop the load, check the invariants. Each stays well under two minutes.

use crate::drill::{wait_for, Drill};
use crate::env::{Env, Proc, Service, ADMIN};
use stackctl::process::{SIGCONT, SIGKILL, SIGSTOP};
use crate::load::{Load, Spec};
use crate::proxy::{Proxy, Toxic};
use crate::verify::invariants;
use crate::ChaosError;
use seckill_common::now_ms;
use std::time::Duration;

pub type DrillFn = fn(&Env, &mut Drill) -> Result<(), ChaosError>;

/// (number, name, what it proves, the drill)
pub const DRILLS: [(u32, &str, &str, DrillFn); 13] = [
    (1, "redis-paused", "Redis SIGSTOPped 5 s: fast 503s, the breaker opens and closes, no stall", redis_paused),
    (2, "redis-data-lost", "Redis restarted without its data: detected, selling stops, stock rebuilt from PostgreSQL and the topic, resumed", redis_data_lost),
    (3, "cluster-down", "the whole Kafka cluster killed: orders go to the durable spool, replayed when it is back, nothing lost or doubled", broker_down),
    (4, "writer-killed", "order-writer kill -9 mid-batch and restarted: exactly once", writer_killed),
    (5, "postgres-down", "PostgreSQL down 10 s: lag grows then drains; status reads switched to cache meanwhile", postgres_down),
    (6, "gateway-killed", "one of two gateways kill -9 under load: every acknowledged order persisted", gateway_killed),
    (7, "redis-slow-then-blackhole", "+50 ms then a black hole between gateway and Redis: timeouts and the breaker keep p99 bounded", redis_slow_then_blackhole),
    (8, "overload", "three times capacity: limits and the admission ratio keep p99 bounded, no error storm", overload),
    (9, "broker-killed", "one of three brokers kill -9 under load: the partition leaders move, idempotent producers go on, no 202 lost or doubled", broker_killed),
    (10, "brokers-rolling-restart", "each of three brokers restarted in turn under load, idempotent producers running: nothing refused, lost or doubled", brokers_rolling_restart),
    (11, "balancer-gateway-killed", "three gateways behind HAProxy, one kill -9 under load: routed around within 2 s, at most 2% failed, nothing lost", balancer_gateway_killed),
    (12, "canary-rollback", "a faulty canary (Redis credentials without script rights) takes 20% of users; stackctl canary rollback stops the failures, nothing lost", canary_rollback),
    (13, "redis-master-killed", "Redis Cluster: the master of the sale's slot kill -9 under load (WAIT 1): its replica takes over, purchases resume, nothing lost or resold", redis_master_killed),
];

/// The latency budget a degraded answer must stay within (p99), whatever the fault:
/// well above the 200 ms Redis timeout, far below the clients' 30 s.
const P99_BUDGET_MS: f64 = 1000.0;

fn open_sale(d: &Drill, gw: &Proc, units: i64) -> Result<String, ChaosError> {
    let sale = format!("chaos_{}_{}", d.name.replace('-', "_"), now_ms());
    loadtest::buyer::Client::new(&gw.url(), crate::env::SECRET).create_sale(
        ADMIN,
        &sale,
        units,
        now_ms() - 1000,
        now_ms() + 3_600_000,
    )?;
    d.log(format!("sale {sale} opened with {units} units"));
    Ok(sale)
}

fn start_load(
    d: &Drill,
    gws: &[&Proc],
    sale: &str,
    workers: u64,
    rate: f64,
    max_secs: u64,
) -> Load {
    d.log(format!(
        "load: {workers} buyers × {rate}/s over {} gateway(s), at most {max_secs} s",
        gws.len()
    ));
    Load::start(Spec {
        gateways: gws.iter().map(|g| g.url()).collect(),
        sale,
        workers,
        rate,
        max: Duration::from_secs(max_secs),
        first_user: 1,
    })
}

/// The largest value `f` gave, polled every 100 ms for `within`.
fn peak(within: Duration, mut f: impl FnMut() -> Option<f64>) -> f64 {
    let mut top = 0.0f64;
    wait_for(within, || {
        top = top.max(f().unwrap_or(0.0));
        false
    });
    top
}

/// A gateway (or two) and a writer on the drill stack, and a sale of a million units.
fn rig(
    env: &Env,
    d: &Drill,
    tag: &str,
    gateways: usize,
    redis_url: Option<String>,
    extra: &[(&str, &str)],
) -> Result<(Vec<Proc>, Proc, String), ChaosError> {
    let gws = (0..gateways)
        .map(|i| env.gateway(&format!("{tag}-gw-{i}"), tag, redis_url.clone(), extra))
        .collect::<Result<Vec<_>, _>>()?;
    let writer = env.writer(&format!("{tag}-writer"))?;
    let sale = open_sale(d, &gws[0], 1_000_000)?;
    Ok((gws, writer, sale))
}

/// Check that orders are accepted since `from_ms`, stop the load, check the invariants.
fn finish(
    env: &Env,
    d: &mut Drill,
    mut load: Load,
    sale: &str,
    from_ms: u64,
    what: &str,
) -> Result<(), ChaosError> {
    let after = observe(d, &load, "after", from_ms, u64::MAX);
    d.check(
        format!("{what}: {} orders accepted", after.count("202")),
        after.count("202") > 0,
    );
    load.stop();
    invariants(env, d, sale, &load)
}

/// The load's answers between two times, logged under `label`.
fn observe(d: &Drill, load: &Load, label: &str, from_ms: u64, to_ms: u64) -> crate::load::Window {
    let w = load.window(from_ms, to_ms);
    d.log(format!("{label}: {}", w.summary()));
    w
}

fn sleep(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

fn ok_answers(w: &crate::load::Window) -> u64 {
    w.count("201") + w.count("202")
}

fn redis_paused(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (gws, _w, sale) = rig(env, d, "d1", 1, None, &[])?;
    let gw = &gws[0];
    let mut load = start_load(d, &[gw], &sale, 8, 20.0, 60);
    sleep(5.0);
    let f0 = load.elapsed_ms();
    d.log(format!("baseline: {}", load.window(0, f0).summary()));
    d.log("FAULT: kill -STOP redis");
    env.signal(Service::Redis, SIGSTOP)?;
    let opened = peak(Duration::from_secs(5), || {
        gw.metric("seckill_redis_breaker_open")
    }) == 1.0;
    env.signal(Service::Redis, SIGCONT)?;
    let f1 = load.elapsed_ms();
    d.log("REMOVED: kill -CONT redis");
    let during = observe(d, &load, "during", f0, f1);
    d.check(format!("fast 503s while Redis is stopped: {} answered 503, p99 {:.0} ms within {P99_BUDGET_MS} ms", during.count("503"), during.p99_ms), during.count("503") > 0 && during.p99_ms <= P99_BUDGET_MS);
    d.check(
        format!(
            "no stall: the slowest answer took {:.0} ms (under 2 s)",
            during.max_ms
        ),
        during.max_ms < 2000.0,
    );
    d.check("the breaker opened", opened);
    let closed = wait_for(Duration::from_secs(10), || {
        gw.metric("seckill_redis_breaker_open") == Some(0.0)
    });
    d.check("the breaker closed after Redis resumed", closed);
    sleep(5.0);
    let after = observe(d, &load, "after", load.elapsed_ms() - 4000, u64::MAX);
    d.check(
        format!(
            "sales resumed: {} successes in the last 4 s",
            ok_answers(&after)
        ),
        ok_answers(&after) > 0 && after.count("503") == 0,
    );
    load.stop();
    invariants(env, d, &sale, &load)
}

fn redis_data_lost(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (gws, _w, sale) = rig(env, d, "d2", 2, None, &[])?;
    let (a, b) = (&gws[0], &gws[1]);
    let load = start_load(d, &[a, b], &sale, 6, 20.0, 90);
    sleep(6.0);
    d.log(format!(
        "baseline: {}",
        load.window(0, load.elapsed_ms()).summary()
    ));
    d.log("FAULT: Redis restarted without its data");
    env.stop(Service::Redis);
    let f0 = load.elapsed_ms();
    env.up()?;
    let detected = wait_for(Duration::from_secs(3), || {
        [&a, &b]
            .iter()
            .all(|g| g.metric("seckill_redis_data_lost") == Some(1.0))
    });
    d.check(
        "both gateways detected the loss (seckill_redis_data_lost 1) within 3 s",
        detected,
    );
    sleep(3.0);
    let lost = observe(d, &load, "while lost", f0, load.elapsed_ms());
    d.check(
        format!(
            "selling stopped: {} answered 503 redis_data_lost, 0 accepted",
            lost.count("503 redis_data_lost")
        ),
        lost.count("503 redis_data_lost") > 0 && lost.count("202") == 0 && lost.count("201") == 0,
    );
    d.log("operator: order-writer rebuild-stock");
    let out = env.rebuild_stock()?;
    for line in out.lines() {
        d.log(format!("  {line}"));
    }
    let f1 = load.elapsed_ms();
    d.check(
        "the sale was restored",
        out.lines()
            .any(|l| l.starts_with(&format!("{sale}: Restored"))),
    );
    let resumed = wait_for(Duration::from_secs(3), || {
        [&a, &b]
            .iter()
            .all(|g| g.metric("seckill_redis_data_lost") == Some(0.0))
    });
    d.check("both gateways resumed within 3 s of the rebuild", resumed);
    sleep(5.0);
    finish(env, d, load, &sale, f1 + 1000, "sales resumed")
}

fn broker_down(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
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

fn writer_killed(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
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

fn postgres_down(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (gws, w, sale) = rig(env, d, "d5", 1, None, &[])?;
    let gw = &gws[0];
    let mut load = start_load(d, &[gw], &sale, 6, 20.0, 90);
    sleep(5.0);
    let (acked, _) = load.acked();
    d.log("operator: gateway switch set status_reads cache");
    env.switch(&gw, &["switch", "set", "status_reads", "cache"])?;
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
    env.switch(&gw, &["switch", "set", "status_reads", "normal"])?;
    d.check(
        "status reads back to normal",
        gw.metric("seckill_switch_status_reads") == Some(0.0),
    );
    load.stop();
    invariants(env, d, &sale, &load)
}

fn gateway_killed(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (mut gws, _w, sale) = rig(env, d, "d6", 2, None, &[])?;
    let b = gws
        .pop()
        .ok_or_else(|| ChaosError::Setup("no gateway".into()))?;
    let mut a = gws
        .pop()
        .ok_or_else(|| ChaosError::Setup("no gateway".into()))?;
    let load = start_load(d, &[&a, &b], &sale, 8, 25.0, 60);
    sleep(6.0);
    d.log(format!(
        "FAULT: kill -9 gateway a under load ({} in flight)",
        a.metric("seckill_http_in_flight").unwrap_or(0.0)
    ));
    a.kill9();
    let f0 = load.elapsed_ms();
    sleep(8.0);
    finish(env, d, load, &sale, f0 + 500, "gateway b keeps selling")
}

fn redis_slow_then_blackhole(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], env.stack.redis.port).into();
    let proxy = Proxy::start(upstream).map_err(|e| ChaosError::Setup(e.to_string()))?;
    d.log(format!(
        "proxy 127.0.0.1:{} → Redis {}",
        proxy.port, env.stack.redis.port
    ));
    let proxied = Some(format!("redis://127.0.0.1:{}", proxy.port));
    let (gws, _w, sale) = rig(env, d, "d7", 1, proxied, &[])?;
    let gw = &gws[0];
    let mut load = start_load(d, &[gw], &sale, 6, 20.0, 80);
    sleep(5.0);
    observe(d, &load, "baseline", 0, load.elapsed_ms());
    d.log("FAULT: +50 ms on every reply from Redis");
    proxy.set(Toxic::Latency(Duration::from_millis(50)));
    let f0 = load.elapsed_ms();
    sleep(8.0);
    let f1 = load.elapsed_ms();
    let slow = observe(d, &load, "slow", f0, f1);
    d.check(
        format!(
            "slow Redis: still selling ({} successes), p99 {:.0} ms within {P99_BUDGET_MS} ms",
            ok_answers(&slow),
            slow.p99_ms
        ),
        ok_answers(&slow) > 0 && slow.p99_ms <= P99_BUDGET_MS && slow.p50_ms >= 50.0,
    );
    d.log("FAULT: black hole (connections open, nothing passes)");
    proxy.set(Toxic::Blackhole);
    let opened = peak(Duration::from_secs(6), || {
        gw.metric("seckill_redis_breaker_open")
    }) == 1.0;
    let f2 = load.elapsed_ms();
    proxy.set(Toxic::Pass);
    d.log("REMOVED: the proxy passes again");
    let hole = observe(d, &load, "black hole", f1, f2);
    d.check(
        format!(
            "black hole: fast 503s ({}), p99 {:.0} ms within {P99_BUDGET_MS} ms",
            hole.count("503"),
            hole.p99_ms
        ),
        hole.count("503") > 0 && hole.p99_ms <= P99_BUDGET_MS,
    );
    d.check("the breaker opened", opened);
    let back = wait_for(Duration::from_secs(10), || {
        gw.metric("seckill_redis_breaker_open") == Some(0.0)
    });
    sleep(4.0);
    let after = observe(d, &load, "after", load.elapsed_ms() - 3000, u64::MAX);
    d.check(
        format!(
            "recovered: breaker closed, {} successes in the last 3 s, no 5xx",
            ok_answers(&after)
        ),
        back && ok_answers(&after) > 0 && after.count("5") == 0,
    );
    load.stop();
    invariants(env, d, &sale, &load)
}

fn overload(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    // Capacity is declared as the global limit: 300 requests/s (150 buyers/s, each a
    // token and an order). The load offers three times that.
    let capacity = [
        ("SECKILL_GLOBAL_RPS", "300"),
        ("SECKILL_GLOBAL_BURST", "60"),
    ];
    // Two gateways of one cluster: the load goes to the first; the switch is set through
    // the first and the second must follow within a second.
    let (gws, _w, sale) = rig(env, d, "d8", 2, None, &capacity)?;
    let (gw, other) = (&gws[0], &gws[1]);
    let mut load = start_load(d, &[gw], &sale, 30, 15.0, 60);
    sleep(8.0);
    let f0 = load.elapsed_ms();
    let limited = observe(d, &load, "3x capacity, limits only", 2000, f0);
    let offered = limited.requests as f64 / ((f0 - 2000) as f64 / 1000.0);
    d.log(format!(
        "offered {offered:.0} requests/s against a capacity of 300"
    ));
    d.check(
        format!(
            "the excess is refused fast with 429: {} (p99 {:.0} ms)",
            limited.count("429"),
            limited.p99_ms
        ),
        limited.count("429") > 0 && limited.p99_ms <= P99_BUDGET_MS,
    );
    d.check(
        format!(
            "no error storm: {} 5xx, {} failed connections",
            limited.count("5"),
            limited.count("io")
        ),
        limited.count("5") == 0 && limited.count("io") == 0,
    );
    d.log("operator: gateway switch set admission_ratio 0.3");
    env.switch(gw, &["switch", "set", "admission_ratio", "0.3"])?;
    let f1 = load.elapsed_ms();
    let t = std::time::Instant::now();
    let followed = wait_for(Duration::from_secs(1), || {
        other.metric("seckill_switch_admission_ratio") == Some(0.3)
    });
    d.check(
        format!(
            "the other gateway followed the switch in {} ms (within a second)",
            t.elapsed().as_millis()
        ),
        followed,
    );
    sleep(8.0);
    let f2 = load.elapsed_ms();
    let admitted = observe(d, &load, "admission 0.3", f1 + 500, f2);
    d.check(
        format!(
            "token requests shed by admission: {} answered 503 admission_shed with Retry-After",
            admitted.count("503 admission_shed")
        ),
        admitted.count("503 admission_shed") > 0,
    );
    d.check(
        format!(
            "p99 bounded: {:.0} ms within {P99_BUDGET_MS} ms; no other 5xx",
            admitted.p99_ms
        ),
        admitted.p99_ms <= P99_BUDGET_MS
            && admitted.count("5") == admitted.count("503 admission_shed"),
    );
    d.check(
        format!("still selling: {} orders accepted", admitted.count("202")),
        admitted.count("202") > 0,
    );
    env.switch(gw, &["switch", "set", "admission_ratio", "1.0"])?;
    d.log("operator: admission ratio back to 1.0");
    // Sale pause for every sale, set through one gateway: both stop selling at once.
    d.log("operator: gateway switch set pause_all true");
    env.switch(gw, &["switch", "set", "pause_all", "true"])?;
    let both = wait_for(Duration::from_secs(1), || {
        [gw, other]
            .iter()
            .all(|g| g.metric("seckill_switch_pause_all") == Some(1.0))
    });
    let p0 = load.elapsed_ms();
    sleep(3.0);
    let paused = observe(d, &load, "paused", p0, load.elapsed_ms());
    d.check(
        format!("pause_all: both gateways paused within a second, {} answered 503 sale_paused, {} accepted", paused.count("503 sale_paused"), paused.count("202")),
        both && paused.count("503 sale_paused") > 0 && paused.count("202") == 0 && paused.count("201") == 0,
    );
    env.switch(gw, &["switch", "set", "pause_all", "false"])?;
    d.log("operator: pause_all false");
    let r0 = load.elapsed_ms();
    sleep(2.0);
    let resumed = observe(d, &load, "resumed", r0 + 500, load.elapsed_ms());
    d.check(
        format!("resumed: {} accepted", resumed.count("202")),
        resumed.count("202") > 0,
    );
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

fn broker_killed(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (gws, _w, sale) = rig(env, d, "d9", 1, None, &[])?;
    let gw = &gws[0];
    let load = start_load(d, &[gw], &sale, 8, 25.0, 90);
    sleep(5.0);
    d.log(format!("baseline: {}", load.window(0, load.elapsed_ms()).summary()));
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

fn brokers_rolling_restart(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (gws, _w, sale) = rig(env, d, "d10", 1, None, &[])?;
    let gw = &gws[0];
    let load = start_load(d, &[gw], &sale, 8, 25.0, 110);
    sleep(5.0);
    d.log(format!("baseline: {}", load.window(0, load.elapsed_ms()).summary()));
    let f0 = load.elapsed_ms();
    for n in 0..env.stack.kafka.nodes {
        d.log(format!("FAULT: kafka-{n} stopped (controlled shutdown) and started again"));
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

// ---------------------------------------------------------------- behind a balancer

/// Gateways behind HAProxy (stackctl's balancer, named `tag`, under the drill stack's run
/// directory): each gateway trusts the balancer's address (127.0.0.1) for PROXY headers,
/// so every request, the sale's creation included, goes through the balancer. Returns
/// the balancer, the stable and canary gateways and the sale.
fn behind_balancer(
    env: &Env,
    d: &Drill,
    tag: &str,
    stable: usize,
    canary: Option<(String, Vec<(&str, &str)>)>,
) -> Result<(stackctl::haproxy::Balancer, Vec<Proc>, Option<Proc>, String), ChaosError> {
    let trusted = [("SECKILL_TRUSTED_PROXIES", "127.0.0.1")];
    let gws = (0..stable)
        .map(|i| env.gateway(&format!("{tag}-gw-{i}"), tag, None, &trusted))
        .collect::<Result<Vec<_>, _>>()?;
    let canary_gw = match canary {
        Some((redis_url, extra)) => {
            let mut e = trusted.to_vec();
            e.extend(extra);
            Some(env.gateway(&format!("{tag}-canary"), tag, Some(redis_url), &e)?)
        }
        None => None,
    };
    let mut lb = stackctl::haproxy::Balancer::new(&env.stack.run, tag);
    lb.stop_on_drop = true;
    let plan = stackctl::haproxy::Plan {
        port: stackctl::process::free_port(),
        stable: gws.iter().map(|g| format!("127.0.0.1:{}", g.port)).collect(),
        canary: canary_gw.iter().map(|g| format!("127.0.0.1:{}", g.port)).collect(),
        canary_permille: 0,
        canary_header: false,
    };
    lb.start(&plan, true)?;
    let url = lb.url()?;
    d.log(format!(
        "HAProxy on {url} in front of {} stable gateway(s){}, all healthy on /readyz (send-proxy-v2)",
        gws.len(),
        if canary_gw.is_some() { " and a canary" } else { "" }
    ));
    let sale = format!("chaos_{}_{}", d.name.replace('-', "_"), now_ms());
    loadtest::buyer::Client::new(&url, crate::env::SECRET).create_sale(
        ADMIN,
        &sale,
        1_000_000,
        now_ms() - 1000,
        now_ms() + 3_600_000,
    )?;
    d.log(format!("sale {sale} opened through the balancer"));
    Ok((lb, gws, canary_gw, sale))
}

/// Answers that are failures a buyer sees: no answer, or a 5xx.
fn failed(w: &crate::load::Window) -> u64 {
    w.count("io") + w.count("5")
}

/// First and last 100 ms slice (ms since the load's start) with a failed answer.
fn failure_span(load: &Load, from_ms: u64, to_ms: u64) -> Option<(u64, u64)> {
    let slices: Vec<u64> = (from_ms / 100..to_ms.div_ceil(100))
        .map(|s| s * 100)
        .filter(|&t| failed(&load.window(t, t + 100)) > 0)
        .collect();
    Some((*slices.first()?, *slices.last()? + 100))
}

fn balancer_gateway_killed(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (lb, mut gws, _, sale) = behind_balancer(env, d, "d11", 3, None)?;
    let _w = env.writer("d11-writer")?;
    let mut load = Load::start(Spec {
        gateways: vec![lb.url()?],
        sale: &sale,
        workers: 8,
        rate: 25.0,
        max: Duration::from_secs(60),
        first_user: 1,
    });
    d.log("load: 8 buyers × 25/s through the balancer, at most 60 s");
    sleep(6.0);
    let before = observe(d, &load, "before", 1000, load.elapsed_ms());
    d.check(
        format!("through the balancer: {} orders accepted, {} failed", before.count("202"), failed(&before)),
        before.count("202") > 0 && failed(&before) == 0,
    );
    d.log("FAULT: kill -9 gateway 0 of 3 under load");
    let victim = gws.remove(0);
    let mut victim = victim;
    victim.kill9();
    let f0 = load.elapsed_ms();
    let t = std::time::Instant::now();
    let down = wait_for(Duration::from_secs(5), || {
        lb.servers()
            .is_ok_and(|s| s.iter().any(|s| s.name == "gw0" && !s.up))
    });
    d.check(
        format!(
            "HAProxy's /readyz checks marked it DOWN in {} ms",
            t.elapsed().as_millis()
        ),
        down && t.elapsed() <= Duration::from_secs(2),
    );
    sleep(8.0);
    let f1 = load.elapsed_ms();
    let after = observe(d, &load, "from the kill on", f0.saturating_sub(200), f1);
    let share = failed(&after) as f64 / after.requests.max(1) as f64;
    let span = failure_span(&load, f0.saturating_sub(200), f1);
    let span_ms = span.map_or(0, |(a, b)| b - a);
    d.log(format!(
        "route-around: {} failed of {} requests ({:.2}%), {}",
        failed(&after),
        after.requests,
        share * 100.0,
        match span {
            Some((a, b)) => format!(
                "first failure {} ms, last {} ms after the kill: failures for {span_ms} ms",
                a as i64 - f0 as i64,
                b as i64 - f0 as i64
            ),
            None => "no request failed".into(),
        }
    ));
    d.check(
        format!("the balancer routed around the dead gateway within 2 s ({span_ms} ms of failures)"),
        span_ms <= 2000,
    );
    d.check(
        format!("failed share after the kill {:.2}% (at most 2%)", share * 100.0),
        share <= 0.02,
    );
    let tail = observe(d, &load, "last 5 s", f1 - 5000, f1);
    d.check(
        format!("the two live gateways serve everything: {} accepted, {} failed in the last 5 s", tail.count("202"), failed(&tail)),
        tail.count("202") > 0 && failed(&tail) == 0,
    );
    load.stop();
    invariants(env, d, &sale, &load)
}

/// `stackctl canary …` (the runbook's command) against the drill stack's balancer `name`.
fn canary_command(env: &Env, name: &str, args: &[&str]) -> Result<String, ChaosError> {
    let out = std::process::Command::new(stackctl::bin("stackctl")?)
        .arg("canary")
        .args(args)
        .args(["--name", name])
        .env("SECKILL_RUN_DIR", &env.stack.run)
        .output()
        .map_err(|e| ChaosError::Setup(format!("stackctl canary: {e}")))?;
    if !out.status.success() {
        return Err(ChaosError::Setup(format!(
            "stackctl canary {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn canary_rollback(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    // The faulty canary: deployed with Redis credentials that may not run the sale
    // scripts (an ACL user without EVALSHA). It answers /readyz (PING works), so the
    // health checks let it in; every token or order it handles fails with a 5xx.
    let (user, pass) = ("d12_canary", "d12-canary-password");
    let acl = std::process::Command::new("redis-cli")
        .args(["-p", &env.stack.redis.port.to_string(), "ACL", "SETUSER", user, "reset", "on"])
        .arg(format!(">{pass}"))
        .args(["~*", "&*", "+@all", "-evalsha", "-eval"])
        .output()
        .map_err(|e| ChaosError::Setup(format!("redis-cli: {e}")))?;
    if !String::from_utf8_lossy(&acl.stdout).contains("OK") {
        return Err(ChaosError::Setup(format!("ACL SETUSER: {:?}", acl)));
    }
    let canary_redis = format!("redis://{user}:{pass}@127.0.0.1:{}", env.stack.redis.port);
    let (lb, _gws, _canary, sale) =
        behind_balancer(env, d, "d12", 2, Some((canary_redis, vec![])))?;
    let _w = env.writer("d12-writer")?;
    let mut load = Load::start(Spec {
        gateways: vec![lb.url()?],
        sale: &sale,
        workers: 8,
        rate: 25.0,
        max: Duration::from_secs(60),
        first_user: 1,
    });
    d.log("load: 8 buyers × 25/s through the balancer, at most 60 s");
    sleep(4.0);
    let b0 = load.elapsed_ms();
    let before = observe(d, &load, "canary share 0", 1000, b0);
    d.check(
        format!("stable pool only: {} accepted, {} failed", before.count("202"), failed(&before)),
        before.count("202") > 0 && failed(&before) == 0,
    );
    d.log("operator: stackctl canary set 0.2 --name d12 (20% of users, sticky by user id)");
    canary_command(env, "d12", &["set", "0.2"])?;
    let c0 = load.elapsed_ms();
    sleep(6.0);
    let c1 = load.elapsed_ms();
    let during = observe(d, &load, "canary 20%", c0, c1);
    let share = failed(&during) as f64 / during.requests.max(1) as f64;
    d.check(
        format!(
            "the faulty canary shows: {} failed of {} ({:.1}%), the rest served",
            failed(&during),
            during.requests,
            share * 100.0
        ),
        failed(&during) > 0 && share < 0.5 && during.count("202") > 0,
    );
    d.log("operator (runbooks/canary.md): stackctl canary rollback --name d12");
    let t = std::time::Instant::now();
    let shown = canary_command(env, "d12", &["rollback"])?;
    let r0 = load.elapsed_ms();
    d.log(format!(
        "rolled back in {} ms: {}",
        t.elapsed().as_millis(),
        shown.lines().next().unwrap_or("")
    ));
    sleep(6.0);
    let r1 = load.elapsed_ms();
    let span = failure_span(&load, r0, r1);
    let after = observe(d, &load, "after the rollback (from 500 ms on)", r0 + 500, r1);
    d.check(
        format!(
            "after the rollback nothing fails: {} accepted, {} failed (last failure {} ms after the command)",
            after.count("202"),
            failed(&after),
            span.map_or(0, |(_, b)| b.saturating_sub(r0))
        ),
        after.count("202") > 0 && failed(&after) == 0,
    );
    load.stop();
    invariants(env, d, &sale, &load)
}

// ---------------------------------------------------------------- Redis Cluster

/// `seckill_redis_unreplicated_total` summed over `gws` (None: a gateway did not answer).
fn unreplicated(gws: &[Proc]) -> Option<f64> {
    gws.iter()
        .map(|g| g.metric("seckill_redis_unreplicated_total"))
        .sum()
}

/// Start of the first 50 ms slice from `from_ms` on (ms since the load's start) in which
/// `hit` holds.
fn first_slice(load: &Load, from_ms: u64, to_ms: u64, hit: impl Fn(&crate::load::Window) -> bool) -> Option<u64> {
    (from_ms..to_ms)
        .step_by(50)
        .find(|&t| hit(&load.window(t, t + 50)))
}

fn redis_master_killed(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let url = env.use_cluster()?;
    let c = &env.cluster;
    d.log(format!(
        "Redis Cluster profile: 3 masters + 3 replicas on {}..{} (cluster-node-timeout {} ms)",
        c.port(0),
        c.port(c.nodes() - 1),
        c.node_timeout_ms
    ));
    // WAIT 1 before every purchase's 202 (the default on a cluster URL; said explicitly).
    let wait = [("SECKILL_REDIS_WAIT_REPLICAS", "1"), ("SECKILL_REDIS_WAIT_TIMEOUT_MS", "50")];
    let gws = (0..2)
        .map(|i| env.gateway(&format!("d13-gw-{i}"), "d13", Some(url.clone()), &wait))
        .collect::<Result<Vec<_>, _>>()?;
    let _w = env.writer("d13-writer")?;
    // Small enough to sell out after the failover, so "no oversell" is tested at the edge.
    let units = 2000;
    let sale = open_sale(d, &gws[0], units)?;
    let slot = stock::cluster::slot(stock::keys::SaleKeys::new(&sale).meta.as_bytes());
    let topo = c.topology()?;
    let victim = c.master_of(slot)?;
    let victim_id = topo
        .iter()
        .find(|n| n.port == c.port(victim))
        .map(|n| n.id.clone())
        .unwrap_or_default();
    let replica = topo
        .iter()
        .find(|n| n.master_id.as_deref() == Some(victim_id.as_str()))
        .map(|n| (n.port - c.base_port) as usize);
    d.log(format!(
        "the sale's keys (hash tag {{{sale}}}) are in slot {slot}: master redis-{victim} (port {}), its replica redis-{}",
        c.port(victim),
        replica.map_or("?".into(), |r| r.to_string())
    ));
    let gw_refs: Vec<&Proc> = gws.iter().collect();
    let mut load = start_load(d, &gw_refs, &sale, 8, 25.0, 70);
    sleep(5.0);
    let before = observe(d, &load, "before", 0, load.elapsed_ms());
    d.check(
        format!("selling on the cluster: {} orders accepted, {} failed", before.count("202"), failed(&before)),
        before.count("202") > 0,
    );
    let unrepl_before = unreplicated(&gws).unwrap_or(-1.0);
    d.log(format!("FAULT: kill -9 redis-{victim}, the master of slot {slot}"));
    c.signal(victim, SIGKILL)?;
    let f0 = load.elapsed_ms();
    let promoted = stackctl::redis_cluster::measure_until(Duration::from_secs(20), || {
        c.master_of(slot).is_ok_and(|m| m != victim)
    });
    let new_master = c.master_of(slot).ok();
    d.check(
        format!(
            "a replica took over slot {slot}: redis-{} is its master {}",
            new_master.map_or("?".into(), |m| m.to_string()),
            promoted.map_or("(not within 20 s)".into(), |t| format!("{:.1} s after the kill", t.as_secs_f64()))
        ),
        promoted.is_some() && new_master == replica,
    );
    // Purchases must come back: wait for 202s after the promotion, then measure.
    let resumed = wait_for(Duration::from_secs(20), || {
        load.window(f0, u64::MAX).count("202") > 0
    });
    sleep(3.0);
    let f1 = load.elapsed_ms();
    let during = observe(d, &load, "from the kill on", f0, f1);
    let first_fail = first_slice(&load, f0, f1, |w| failed(w) > 0);
    let first_ok = first_slice(&load, first_fail.unwrap_or(f0), f1, |w| w.count("202") > 0);
    let last_fail = failure_span(&load, f0, f1).map(|(_, b)| b);
    let rel = |t: Option<u64>| t.map_or("-".to_string(), |t| format!("{:.2} s", (t as f64 - f0 as f64) / 1000.0));
    let outage_ms = match (first_fail, first_ok) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        (None, Some(_)) => Some(0),
        _ => None,
    };
    d.log(format!(
        "failover as the buyers saw it: first refusal {} after the kill, first 202 after it {} after the kill ({} of refusals), last refusal by {}; {} requests failed meanwhile",
        rel(first_fail),
        rel(first_ok),
        outage_ms.map_or("-".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0)),
        rel(last_fail),
        failed(&during)
    ));
    d.check(
        format!(
            "purchases resumed: first 202 {} after the first refusal (within 15 s)",
            outage_ms.map_or("never".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0))
        ),
        resumed && outage_ms.is_some_and(|ms| ms <= 15_000),
    );
    let unrepl_alone = unreplicated(&gws).unwrap_or(-1.0);
    d.log(format!("REMOVED: redis-{victim} started again"));
    c.start_node(victim)?;
    let healthy = wait_for(Duration::from_secs(30), || c.ready());
    let rejoined = c
        .topology()
        .is_ok_and(|t| t.iter().any(|n| n.port == c.port(victim) && !n.master));
    d.check(
        format!("redis-{victim} rejoined as a replica, cluster healthy"),
        healthy && rejoined,
    );
    // Sell the rest: the sale ends sold out, so "no oversell" is checked at its edge.
    let mut st = stock::Stock::new(stock::connect(&url, Duration::from_secs(2))?);
    let sold_out = wait_for(Duration::from_secs(40), || {
        st.state(&sale).is_ok_and(|s| s.remaining == 0)
    });
    let state = st.state(&sale)?;
    d.log(format!(
        "Redis after the sale: remaining {}, held {}, sold {} of {units}",
        state.remaining, state.held, state.sold
    ));
    d.check(format!("the sale sold out on the new master ({units} units)"), sold_out);
    let unrepl = unreplicated(&gws);
    d.log(
        "why WAIT makes a resold unit impossible here: the gateway ends every pipelined write \
         carrying purchases with WAIT 1 <timeout> and answers a purchase only after it; Redis \
         replicates a master's writes in order, so a purchase WAIT saw on the replica is there \
         with every write before it. The replica promoted in the killed master's place (the \
         only one) therefore held every reservation behind a replicated 202 and the stock \
         count after it: nothing acknowledged could be sold again. A purchase whose WAIT timed \
         out is still answered 202 (its order is in Kafka) but counted in \
         seckill_redis_unreplicated_total; only those could be missing on the new master.",
    );
    d.log(format!(
        "seckill_redis_unreplicated_total (both gateways): {unrepl_before} before the kill (WAIT \
         timed out with the replica up: those could have been lost), {unrepl_alone} when redis-{victim} \
         was restarted (the promoted master had no replica until then, so every 202 meanwhile \
         was unreplicated by construction), {} at the end",
        unrepl.map_or("?".into(), |u| u.to_string())
    ));
    d.check(
        format!(
            "unreplicated 202s reported: {} (if > 0, the invariants below still prove from Redis and PostgreSQL that none was lost or resold)",
            unrepl.map_or("?".into(), |u| u.to_string())
        ),
        unrepl.is_some(),
    );
    let from = first_ok.unwrap_or(f1);
    let after = observe(d, &load, "after the failover", from, u64::MAX);
    d.check(
        format!("after the failover: {} orders accepted", after.count("202")),
        after.count("202") > 0,
    );
    load.stop();
    invariants(env, d, &sale, &load)
}
