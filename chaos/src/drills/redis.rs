//! Faults of the one Redis: paused (1), restarted without its data (2), slow then a
//! black hole (7).

use super::{finish, observe, ok_answers, peak, rig, sleep, start_load, P99_BUDGET_MS};
use crate::drill::{wait_for, Drill};
use crate::env::{Env, Service};
use crate::proxy::{Proxy, Toxic};
use crate::verify::invariants;
use crate::ChaosError;
use stackctl::process::{SIGCONT, SIGSTOP};
use std::time::Duration;

pub(super) fn redis_paused(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
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

pub(super) fn redis_data_lost(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
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

pub(super) fn redis_slow_then_blackhole(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], env.stack.redis.port).into();
    let proxy = Proxy::start(upstream).map_err(ChaosError::Proxy)?;
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
