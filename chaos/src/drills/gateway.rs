//! Faults of the gateways: one of two killed (6), overload (8), one of three killed
//! behind a balancer (11), a faulty canary rolled back (12).

use super::{failed, finish, observe, rig, sleep, start_load, P99_BUDGET_MS};
use crate::drill::{wait_for, Drill};
use crate::env::{Env, Proc, ADMIN};
use crate::load::{Endpoint, Load, Spec};
use crate::verify::invariants;
use crate::ChaosError;
use seckill_common::now_ms;
use std::time::Duration;

pub(super) fn gateway_killed(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
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

pub(super) fn overload(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
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

// ---------------------------------------------------------------- behind a balancer

/// Gateways behind HAProxy (stackctl's balancer, named `tag`, under the drill stack's run
/// directory): each gateway trusts the balancer's address (127.0.0.1) for PROXY headers
/// on its public listener, so every buyer's request goes through the balancer; the
/// sale is created on a gateway's internal listener, which no balancer fronts (it asks
/// nobody for a header). Returns the balancer, the stable and canary gateways and the
/// sale.
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
    // Through the first gateway's internal listener: the balancer fronts the buyers'
    // listeners only.
    loadtest::buyer::Client::new(&url, crate::env::SECRET)
        .with_internal(&gws[0].internal_url())
        .create_sale(
            ADMIN,
            &sale,
            1_000_000,
            now_ms() - 1000,
            now_ms() + 3_600_000,
        )?;
    d.log(format!(
        "sale {sale} opened (the balancer in front of the buyers' listeners)"
    ));
    Ok((lb, gws, canary_gw, sale))
}

/// First and last 100 ms slice (ms since the load's start) with a failed answer.
fn failure_span(load: &Load, from_ms: u64, to_ms: u64) -> Option<(u64, u64)> {
    let slices: Vec<u64> = (from_ms / 100..to_ms.div_ceil(100))
        .map(|s| s * 100)
        .filter(|&t| failed(&load.window(t, t + 100)) > 0)
        .collect();
    Some((*slices.first()?, *slices.last()? + 100))
}

/// 8 buyers × 25/s through the balancer, for at most 60 s (they never pay: `internal`,
/// a gateway's internal listener, would take the provider's callbacks).
fn balancer_load(
    d: &Drill,
    lb: &stackctl::haproxy::Balancer,
    internal: &Proc,
    sale: &str,
) -> Result<Load, ChaosError> {
    let load = Load::start(Spec {
        gateways: vec![Endpoint {
            url: lb.url()?,
            internal: internal.internal_url(),
        }],
        sale,
        workers: 8,
        rate: 25.0,
        max: Duration::from_secs(60),
        first_user: 1,
        mix: None,
    });
    d.log("load: 8 buyers × 25/s through the balancer, at most 60 s");
    Ok(load)
}

pub(super) fn balancer_gateway_killed(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let (lb, mut gws, _, sale) = behind_balancer(env, d, "d11", 3, None)?;
    let _w = env.writer("d11-writer")?;
    let mut load = balancer_load(d, &lb, &gws[0], &sale)?;
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
        .map_err(ChaosError::io("stackctl canary"))?;
    if !out.status.success() {
        return Err(ChaosError::Setup(format!(
            "stackctl canary {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn canary_rollback(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
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
        .map_err(ChaosError::io("redis-cli"))?;
    if !String::from_utf8_lossy(&acl.stdout).contains("OK") {
        return Err(ChaosError::Setup(format!("ACL SETUSER: {:?}", acl)));
    }
    let canary_redis = format!("redis://{user}:{pass}@127.0.0.1:{}", env.stack.redis.port);
    let (lb, gws, _canary, sale) = behind_balancer(env, d, "d12", 2, Some((canary_redis, vec![])))?;
    let _w = env.writer("d12-writer")?;
    let mut load = balancer_load(d, &lb, &gws[0], &sale)?;
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
