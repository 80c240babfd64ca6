//! The drills. Each: start its gateway(s) and writer on the drill stack, open a sale,
//! start load, inject the fault, check the degradation while it lasts, remove it, check
//! recovery, stop the load, check the invariants. Each stays well under two minutes.

use crate::drill::{wait_for, Drill};
use crate::env::{Env, Proc, Service, ADMIN};
use crate::load::{Load, Spec};
use crate::proxy::{Proxy, Toxic};
use crate::verify::invariants;
use crate::ChaosError;
use seckill_common::now_ms;
use stackctl::process::{SIGCONT, SIGKILL, SIGSTOP};
use std::time::Duration;

pub type DrillFn = fn(&Env, &mut Drill) -> Result<(), ChaosError>;

/// (number, name, what it proves, the drill)
pub const DRILLS: [(u32, &str, &str, DrillFn); 14] = [
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
    (13, "redis-master-killed", "Redis Cluster: the sale's master takes purchases its (stopped) replica never gets, then kill -9: the replica takes over without them, purchases held until the writer re-applies them, nothing resold", redis_master_killed),
    (14, "redis-aof-tail-lost", "Redis (AOF everysec) kill -9 and the AOF's last second lost, restarted: purchases held (503 store_recovering) until the writer re-applies the lost orders, nothing resold", redis_aof_tail_lost),
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

fn brokers_rolling_restart(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
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
        stable: gws
            .iter()
            .map(|g| format!("127.0.0.1:{}", g.port))
            .collect(),
        canary: canary_gw
            .iter()
            .map(|g| format!("127.0.0.1:{}", g.port))
            .collect(),
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
        format!(
            "through the balancer: {} orders accepted, {} failed",
            before.count("202"),
            failed(&before)
        ),
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
        format!(
            "the balancer routed around the dead gateway within 2 s ({span_ms} ms of failures)"
        ),
        span_ms <= 2000,
    );
    d.check(
        format!(
            "failed share after the kill {:.2}% (at most 2%)",
            share * 100.0
        ),
        share <= 0.02,
    );
    let tail = observe(d, &load, "last 5 s", f1 - 5000, f1);
    d.check(
        format!(
            "the two live gateways serve everything: {} accepted, {} failed in the last 5 s",
            tail.count("202"),
            failed(&tail)
        ),
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
        .args([
            "-p",
            &env.stack.redis.port.to_string(),
            "ACL",
            "SETUSER",
            user,
            "reset",
            "on",
        ])
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
        format!(
            "stable pool only: {} accepted, {} failed",
            before.count("202"),
            failed(&before)
        ),
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
    let after = observe(
        d,
        &load,
        "after the rollback (from 500 ms on)",
        r0 + 500,
        r1,
    );
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
fn first_slice(
    load: &Load,
    from_ms: u64,
    to_ms: u64,
    hit: impl Fn(&crate::load::Window) -> bool,
) -> Option<u64> {
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
    // WAIT 1 before every purchase's 202 (the default on a cluster URL; said explicitly),
    // 50 ms at most: with the replica gone it times out and the purchase is still
    // answered 202, counted in seckill_redis_unreplicated_total.
    let wait = [
        ("SECKILL_REDIS_WAIT_REPLICAS", "1"),
        ("SECKILL_REDIS_WAIT_TIMEOUT_MS", "50"),
    ];
    let gws = (0..2)
        .map(|i| env.gateway(&format!("d13-gw-{i}"), "d13", Some(url.clone()), &wait))
        .collect::<Result<Vec<_>, _>>()?;
    let writer = env.writer("d13-writer")?;
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
        .map(|n| (n.port - c.base_port) as usize)
        .ok_or_else(|| {
            ChaosError::Setup(format!("redis-{victim} has no replica in CLUSTER NODES"))
        })?;
    d.log(format!(
        "the sale's keys (hash tag {{{sale}}}) are in slot {slot}: master redis-{victim} (port {}, run_id {}), its replica redis-{replica} (port {}, run_id {})",
        c.port(victim),
        stackctl::redis::run_id(c.port(victim)).unwrap_or("?".into()),
        c.port(replica),
        stackctl::redis::run_id(c.port(replica)).unwrap_or("?".into()),
    ));
    let gw_refs: Vec<&Proc> = gws.iter().collect();
    let mut load = start_load(d, &gw_refs, &sale, 8, 25.0, 80);
    sleep(5.0);
    let before = observe(d, &load, "before", 0, load.elapsed_ms());
    d.check(
        format!(
            "selling on the cluster: {} orders accepted, {} failed",
            before.count("202"),
            failed(&before)
        ),
        before.count("202") > 0,
    );
    let unrepl_before = unreplicated(&gws).unwrap_or(-1.0);
    let mut watch = StoreWatch::start(env, &gws, &writer);
    // Make the loss certain: the replica stops (SIGSTOP) and its link is cut on the master
    // (CLIENT KILL TYPE replica). SIGSTOP alone is not enough: the master keeps writing
    // the replication stream into the socket, the kernel buffers it for the stopped
    // replica, and after SIGCONT the replica reads all of it — even with the master dead
    // — so it would be promoted with every purchase. With its link cut, the master's
    // further writes reach only its own backlog: the replica never sees them.
    d.log(format!(
        "FAULT 1/2: kill -STOP redis-{replica} (the replica of slot {slot}), its link cut on redis-{victim} (CLIENT KILL TYPE replica); the master goes on selling alone for 1 s"
    ));
    c.signal(replica, SIGSTOP)?;
    let p0 = load.elapsed_ms();
    let alone = (|| -> Result<String, ChaosError> {
        let killed = c
            .query(c.port(victim), &["CLIENT", "KILL", "TYPE", "replica"])
            .map_err(|e| {
                ChaosError::Setup(format!("CLIENT KILL TYPE replica on redis-{victim}: {e}"))
            })?;
        sleep(1.0);
        d.log(format!("FAULT 2/2: kill -9 redis-{victim}, the master of slot {slot}; kill -CONT redis-{replica}"));
        c.signal(victim, SIGKILL)?;
        Ok(killed)
    })();
    // Whatever happened, the replica runs again.
    let resumed_replica = c.signal(replica, SIGCONT);
    let killed_links = alone?;
    resumed_replica?;
    let f0 = load.elapsed_ms();
    let unrepl_paused = unreplicated(&gws).unwrap_or(-1.0);
    let paused = observe(d, &load, "the master alone (replica stopped)", p0, f0);
    d.log(format!(
        "replica links cut on the master: {killed_links}; while alone the master accepted {} orders; seckill_redis_unreplicated_total {unrepl_before} → {unrepl_paused} (WAIT 1 timed out after 50 ms, 202 anyway)",
        paused.count("202")
    ));
    let promoted = stackctl::redis_cluster::measure_until(Duration::from_secs(20), || {
        watch.poll(&load, &gws, &writer);
        c.master_of(slot).is_ok_and(|m| m != victim)
    });
    let promoted_ms = load.elapsed_ms();
    let new_master = c.master_of(slot).ok();
    d.check(
        format!(
            "a replica took over slot {slot}: redis-{} is its master {} (run_id {})",
            new_master.map_or("?".into(), |m| m.to_string()),
            promoted.map_or("(not within 20 s)".into(), |t| format!(
                "{:.1} s after the kill",
                t.as_secs_f64()
            )),
            new_master
                .and_then(|m| stackctl::redis::run_id(c.port(m)))
                .unwrap_or("?".into()),
        ),
        promoted.is_some() && new_master == Some(replica),
    );
    // What the promoted replica knows: read at once, before the writer's reconcile (it
    // waits its grace period first) puts anything back.
    let (acked, _) = load.acked();
    let mut missing = None;
    let mut why = String::new();
    wait_for(Duration::from_secs(3), || {
        match missing_in_redis(c.port(replica), &sale, &acked) {
            Ok(m) => missing = Some(m),
            Err(e) => why = e.to_string(),
        }
        missing.is_some()
    });
    let missing = missing.ok_or_else(|| {
        ChaosError::Setup(format!("could not read the sale on redis-{replica}: {why}"))
    })?;
    d.check(
        format!(
            "acknowledged orders the promoted replica never received: {} of {} 202s so far (their orders are in Kafka){}",
            missing.len(),
            distinct(&acked),
            sample_ids(&missing)
        ),
        !missing.is_empty(),
    );
    let rec = recover(
        d,
        &load,
        &gws,
        &writer,
        &mut watch,
        f0,
        promoted_ms,
        missing.len(),
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
    sell_out(d, &url, &sale, units)?;
    let unrepl = unreplicated(&gws);
    d.log(
        "why WAIT alone cannot prevent a resold unit: a purchase whose WAIT times out (no \
         replica answered within 50 ms) is still answered 202 — its order is in Kafka — and \
         counted in seckill_redis_unreplicated_total. A replica promoted without those \
         purchases would sell their units again; the gateways therefore hold purchases after \
         a slot-map change until the writer has re-applied every acknowledged order the new \
         master lacks and trusted it (sk:trust).",
    );
    d.log(format!(
        "seckill_redis_unreplicated_total (both gateways): {unrepl_before} before the fault, \
         {unrepl_paused} after the master sold alone, {unrepl_alone} when redis-{victim} was \
         restarted (the promoted master had no replica until then), {} at the end",
        unrepl.map_or("?".into(), |u| u.to_string())
    ));
    d.check(
        format!(
            "unreplicated 202s reported: {} (at least the {} made while the replica was stopped)",
            unrepl.map_or("?".into(), |u| u.to_string()),
            paused.count("202")
        ),
        unrepl.is_some() && unrepl_paused > unrepl_before,
    );
    let after = observe(
        d,
        &load,
        "after the recovery",
        rec.first_ok.unwrap_or(u64::MAX),
        u64::MAX,
    );
    d.check(
        format!("after the recovery: {} orders accepted", after.count("202")),
        after.count("202") > 0,
    );
    load.stop();
    resold_check(d, &load, units);
    invariants(env, d, &sale, &load)
}

// ---------------------------------------------------------------- Redis forgets acknowledged orders

/// The gauge a gateway holds at 1 while some Redis master is not known to hold every
/// acknowledged order (restarted or promoted, not yet reconciled).
const UNCONFIRMED: &str = "seckill_redis_store_unconfirmed";
/// The writer's reconcile counters: passes, orders put back into Redis, conflicts.
const RECONCILE: [&str; 3] = [
    "seckill_writer_reconciles_total",
    "seckill_writer_reconciled_orders_total",
    "seckill_writer_reconcile_conflicts_total",
];

/// A process's `/metrics` text (one request for several metrics).
fn metrics_text(p: &Proc) -> Option<String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent();
    agent
        .get(&format!("{}/metrics", p.url()))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()
}

/// The store's recovery as the gateways and the writer report it, polled by the drill:
/// when every gateway was seen holding purchases (`seckill_redis_store_unconfirmed` 1),
/// when all were confirmed again, when the writer's reconcile counter moved. Times are
/// milliseconds since the load's start.
struct StoreWatch {
    held: Vec<bool>,
    held_at: Option<u64>,
    confirmed_at: Option<u64>,
    reconciled_at: Option<u64>,
    /// The writer's reconcile counters when the watch started, and now (None: not exported).
    base: [Option<f64>; 3],
    now: [Option<f64>; 3],
    /// Whether the gateways export the gauge at all.
    gauge_seen: bool,
    /// The writer's log, and its length when the watch started.
    log: (std::path::PathBuf, u64),
}

impl StoreWatch {
    fn start(env: &Env, gws: &[Proc], writer: &Proc) -> StoreWatch {
        let base = Self::counters(writer);
        let log = env
            .stack
            .run
            .join("logs")
            .join(format!("{}.log", writer.name));
        let len = std::fs::metadata(&log).map_or(0, |m| m.len());
        StoreWatch {
            held: vec![false; gws.len()],
            held_at: None,
            confirmed_at: None,
            reconciled_at: None,
            base,
            now: base,
            gauge_seen: false,
            log: (log, len),
        }
    }

    fn counters(writer: &Proc) -> [Option<f64>; 3] {
        let text = metrics_text(writer).unwrap_or_default();
        RECONCILE.map(|m| stackctl::process::parse_metric(&text, m))
    }

    fn poll(&mut self, load: &Load, gws: &[Proc], writer: &Proc) {
        let now = load.elapsed_ms();
        let gauges: Vec<Option<f64>> = gws
            .iter()
            .map(|g| {
                stackctl::process::parse_metric(&metrics_text(g).unwrap_or_default(), UNCONFIRMED)
            })
            .collect();
        self.gauge_seen |= gauges.iter().any(Option::is_some);
        for (h, g) in self.held.iter_mut().zip(&gauges) {
            *h |= *g == Some(1.0);
        }
        if self.held_at.is_none() && self.held.iter().all(|h| *h) {
            self.held_at = Some(now);
        }
        if self.held_at.is_some()
            && self.confirmed_at.is_none()
            && gauges.iter().all(|g| *g == Some(0.0))
        {
            self.confirmed_at = Some(now);
        }
        self.now = Self::counters(writer);
        if self.reconciled_at.is_none() && self.delta(0) > 0.0 {
            self.reconciled_at = Some(now);
        }
    }

    /// How much counter `i` of [`RECONCILE`] grew since the start.
    fn delta(&self, i: usize) -> f64 {
        self.now[i].unwrap_or(0.0) - self.base[i].unwrap_or(0.0)
    }

    fn counter_text(&self, i: usize) -> String {
        match self.now[i] {
            Some(_) => format!("+{}", self.delta(i)),
            None => "not exported".into(),
        }
    }
}

/// Orders acknowledged (id, user) that the Redis node at `port` does not hold for that
/// user: no reservation (`res`: order → user) and no settlement (`settled`: order →
/// `paid|user` or `released|user`). An order id the store handed out again to another
/// buyer counts as missing too.
fn missing_in_redis(
    port: u16,
    sale: &str,
    acked: &[(String, u64)],
) -> Result<Vec<(String, u64)>, ChaosError> {
    let keys = stock::keys::SaleKeys::new(sale);
    let hash = |key: &str| -> Result<std::collections::HashMap<String, String>, ChaosError> {
        let text = stackctl::redis_cluster::query(port, &["HGETALL", key], Duration::from_secs(5))
            .map_err(|e| ChaosError::Setup(format!("HGETALL {key} on port {port}: {e}")))?;
        let lines: Vec<&str> = text.lines().collect();
        Ok(lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect())
    };
    let res = hash(&keys.reservations)?;
    let settled = hash(&keys.settled)?;
    let mut seen = std::collections::HashSet::new();
    Ok(acked
        .iter()
        .filter(|(id, u)| seen.insert((id.as_str(), *u)))
        .filter(|(id, u)| {
            let user = u.to_string();
            let held = res.get(id).is_some_and(|x| *x == user);
            let done = settled
                .get(id)
                .is_some_and(|x| x.rsplit('|').next() == Some(user.as_str()));
            !(held || done)
        })
        .cloned()
        .collect())
}

/// Distinct acknowledged orders (a retried purchase is answered with its order again).
fn distinct(acked: &[(String, u64)]) -> usize {
    acked.iter().collect::<std::collections::HashSet<_>>().len()
}

fn sample_ids(missing: &[(String, u64)]) -> String {
    if missing.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = missing
        .iter()
        .take(3)
        .map(|(id, u)| format!("{id} (user {u})"))
        .collect();
    format!(", e.g. {}", ids.join(", "))
}

/// What [`recover`] saw: the first 202 (request start, ms since the load's start).
struct Recovered {
    first_ok: Option<u64>,
}

/// After Redis forgot `lost` acknowledged orders (from `f0`, the fault; `back`, the time a
/// Redis serves the sale again): watch the gateways hold purchases and the writer
/// reconcile until purchases are accepted again, and check that they were held until the
/// reconcile, that the writer put back at least the lost orders, and how long it took.
#[allow(clippy::too_many_arguments)]
fn recover(
    d: &mut Drill,
    load: &Load,
    gws: &[Proc],
    writer: &Proc,
    watch: &mut StoreWatch,
    f0: u64,
    back: u64,
    lost: usize,
) -> Recovered {
    // Until a 202 came (request started after the fault) and the writer reconciled, or
    // 3 s after that 202 without a reconcile (no reconcile is coming), at most 40 s.
    let t0 = std::time::Instant::now();
    let mut ok_seen: Option<std::time::Instant> = None;
    wait_for(Duration::from_secs(40), || {
        watch.poll(load, gws, writer);
        if ok_seen.is_none() && load.window(f0, u64::MAX).count("202") > 0 {
            ok_seen = Some(std::time::Instant::now());
        }
        ok_seen
            .is_some_and(|t| watch.reconciled_at.is_some() || t.elapsed() > Duration::from_secs(3))
    });
    // A little longer for the gauges to drop everywhere.
    wait_for(Duration::from_secs(3), || {
        watch.poll(load, gws, writer);
        watch.confirmed_at.is_some() || watch.held_at.is_none()
    });
    let now = load.elapsed_ms();
    let first_ok = first_slice(load, f0, now, |w| w.count("202") > 0);
    let rel = |t: Option<u64>| {
        t.map_or("never".to_string(), |t| {
            format!("{:.2} s", (t as f64 - back as f64) / 1000.0)
        })
    };
    let held = observe(
        d,
        load,
        "from the fault to the first 202",
        f0,
        first_ok.unwrap_or(now),
    );
    d.log(format!(
        "recovery timeline: gateways all holding {} after the fault; after the store was back ({:.2} s after the fault): writer reconcile seen {}, gateways all confirmed {}, first 202 {}; writer: reconciles {}, orders re-applied {}, conflicts {} (watched {:.1} s)",
        watch.held_at.map_or("never".into(), |t| format!("{:.2} s", (t as f64 - f0 as f64) / 1000.0)),
        (back as f64 - f0 as f64) / 1000.0,
        rel(watch.reconciled_at),
        rel(watch.confirmed_at),
        rel(first_ok),
        watch.counter_text(0),
        watch.counter_text(1),
        watch.counter_text(2),
        t0.elapsed().as_secs_f64()
    ));
    for line in reconcile_log_lines(watch, 6) {
        d.log(format!("  writer: {line}"));
    }
    d.check(
        format!(
            "purchases held while the store was unconfirmed: {} answered 503 store_recovering, seckill_redis_store_unconfirmed 1 on {} of {} gateways{}",
            held.count_orders("503 store_recovering"),
            watch.held.iter().filter(|h| **h).count(),
            gws.len(),
            if watch.gauge_seen { "" } else { " (gauge not exported)" }
        ),
        watch.held_at.is_some() && held.count_orders("503 store_recovering") > 0,
    );
    d.check(
        format!(
            "the writer reconciled: reconciles {}, orders re-applied {} (lost: {lost}), conflicts {}",
            watch.counter_text(0),
            watch.counter_text(1),
            watch.counter_text(2)
        ),
        watch.reconciled_at.is_some() && watch.delta(1) >= lost as f64,
    );
    // The first 202 after the fault comes from a store the writer has reconciled: no
    // purchase started before the reconcile was accepted (250 ms: the polling's grain).
    d.check(
        format!(
            "no purchase accepted before the reconcile: first 202 {} after the store was back, reconcile seen {}",
            rel(first_ok),
            rel(watch.reconciled_at)
        ),
        match (first_ok, watch.reconciled_at) {
            (Some(ok), Some(r)) => ok + 250 >= r,
            _ => false,
        },
    );
    d.check(
        format!(
            "purchases resumed: first 202 {} after the store was back, {} after the fault (within 30 s)",
            rel(first_ok),
            first_ok.map_or("never".into(), |t| format!("{:.2} s", (t as f64 - f0 as f64) / 1000.0))
        ),
        first_ok.is_some_and(|t| t.saturating_sub(back) <= 30_000),
    );
    Recovered { first_ok }
}

/// The last `n` lines the writer logged since the watch started that mention its
/// reconcile (colour codes removed).
fn reconcile_log_lines(watch: &StoreWatch, n: usize) -> Vec<String> {
    use std::io::{Read, Seek};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(&watch.log.0) {
        if f.seek(std::io::SeekFrom::Start(watch.log.1)).is_ok() {
            let _ = f.take(4 << 20).read_to_string(&mut text);
        }
    }
    let lines: Vec<String> = text
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains("reconcil") && !l.contains("canceller"))
        .map(|l| l.chars().take(300).collect())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Wait (bounded) until the sale is sold out, and say what Redis holds.
fn sell_out(d: &mut Drill, url: &str, sale: &str, units: i64) -> Result<(), ChaosError> {
    let mut st = stock::Stock::new(stock::connect(url, Duration::from_secs(2))?);
    let sold_out = wait_for(Duration::from_secs(40), || {
        st.state(sale).is_ok_and(|s| s.remaining == 0)
    });
    let state = st.state(sale)?;
    d.log(format!(
        "Redis after the sale: remaining {}, held {}, sold {} of {units}",
        state.remaining, state.held, state.sold
    ));
    d.check(format!("the sale sold out ({units} units)"), sold_out);
    Ok(())
}

/// From the buyers' side: no more buyers told 202 than units, no order id told to two.
fn resold_check(d: &mut Drill, load: &Load, units: i64) {
    let (acked, _) = load.acked();
    let buyers: std::collections::HashSet<u64> = acked.iter().map(|(_, u)| *u).collect();
    let mut owner: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let twice = acked
        .iter()
        .filter(|(id, u)| *owner.entry(id.as_str()).or_insert(*u) != *u)
        .count();
    d.check(
        format!(
            "no unit sold twice: {} buyers acknowledged for {units} units, {twice} order ids acknowledged to a second buyer",
            buyers.len()
        ),
        buyers.len() as i64 <= units && twice == 0,
    );
}

fn redis_aof_tail_lost(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    use stackctl::redis::{AofSampler, Persistence};
    let url = env.use_aof_redis()?;
    let r = &env.aof_redis;
    d.log(format!(
        "Redis with an append-only file on {url}: appendonly yes, appendfsync everysec, aof-load-truncated yes ({}), run_id {}",
        r.aof_dir().display(),
        r.run_id().unwrap_or("?".into())
    ));
    let gws = (0..2)
        .map(|i| env.gateway(&format!("d14-gw-{i}"), "d14", None, &[]))
        .collect::<Result<Vec<_>, _>>()?;
    let writer = env.writer("d14-writer")?;
    // About 5 s of selling before the fault: the sale sells out after the recovery, so a
    // unit sold twice would show as an oversell.
    let units = 2000;
    let sale = open_sale(d, &gws[0], units)?;
    // The AOF's size every 50 ms, the last 5 s kept: what the OS may lose is known.
    let mut sampler = AofSampler::start(
        r,
        Duration::from_millis(50),
        Duration::from_secs(5),
        Duration::from_secs(300),
    );
    let gw_refs: Vec<&Proc> = gws.iter().collect();
    let mut load = start_load(d, &gw_refs, &sale, 8, 25.0, 80);
    sleep(5.0);
    let before = observe(d, &load, "before", 0, load.elapsed_ms());
    d.check(
        format!(
            "selling with the AOF on: {} orders accepted",
            before.count("202")
        ),
        before.count("202") > 0,
    );
    let mut watch = StoreWatch::start(env, &gws, &writer);
    let old_run = r.run_id().unwrap_or("?".into());
    d.log("FAULT: kill -9 Redis; then the OS loses its unsynced page cache: the newest incremental AOF is cut back to its size 1 s before the kill (appendfsync everysec may lose that much)");
    let cut = r.crash_losing_tail(&sampler, Duration::from_secs(1));
    let f0 = load.elapsed_ms();
    sampler.stop();
    let cut = cut?;
    d.check(
        format!(
            "the AOF lost its tail: {} cut from {} to {} bytes ({} bytes written in the {:.2} s before the kill)",
            cut.file.display(),
            cut.from,
            cut.to,
            cut.bytes_lost(),
            cut.before_kill.as_secs_f64()
        ),
        cut.bytes_lost() > 0,
    );
    r.up_with(Persistence::AppendOnly)?;
    let back = load.elapsed_ms();
    // What the restarted Redis knows, read at once (the writer's reconcile waits its grace
    // period before putting anything back).
    let (acked, _) = load.acked();
    let mut missing = None;
    let mut why = String::new();
    wait_for(Duration::from_secs(5), || {
        match missing_in_redis(r.port, &sale, &acked) {
            Ok(m) => missing = Some(m),
            Err(e) => why = e.to_string(), // LOADING while it replays the file
        }
        missing.is_some()
    });
    let missing = missing
        .ok_or_else(|| ChaosError::Setup(format!("could not read the restarted Redis: {why}")))?;
    let state = stock::Stock::new(stock::connect(&url, Duration::from_secs(2))?).state(&sale)?;
    d.log(format!(
        "REMOVED: Redis restarted from what is left of its AOF, {} ms after the kill; run_id {old_run} → {}; it holds {} reserved or sold, remaining {}",
        back - f0,
        r.run_id().unwrap_or("?".into()),
        state.held + state.sold,
        state.remaining
    ));
    d.check(
        format!(
            "acknowledged orders lost with the AOF's tail: {} of {} 202s are not in the restarted Redis (their orders are in Kafka){}",
            missing.len(),
            distinct(&acked),
            sample_ids(&missing)
        ),
        !missing.is_empty(),
    );
    let rec = recover(d, &load, &gws, &writer, &mut watch, f0, back, missing.len());
    sell_out(d, &url, &sale, units)?;
    let after = observe(
        d,
        &load,
        "after the recovery",
        rec.first_ok.unwrap_or(u64::MAX),
        u64::MAX,
    );
    d.check(
        format!("after the recovery: {} orders accepted", after.count("202")),
        after.count("202") > 0,
    );
    load.stop();
    resold_check(d, &load, units);
    invariants(env, d, &sale, &load)
}
