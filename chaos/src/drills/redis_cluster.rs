//! Redis Cluster: the sale's master killed after selling alone (13); a master holding
//! buckets of a sale restarted empty inside the node timeout (15).

use super::lost_writes::{
    distinct, missing_in_buckets, recover, resold_check, sample_ids, sell_out,
    sold_again_then_checked, StoreWatch,
};
use super::{failed, observe, open_bucketed_sale, sleep, start_load};
use crate::drill::{wait_for, Drill};
use crate::env::{Env, Proc};
use crate::load::{Load, Window};
use crate::verify::invariants;
use crate::ChaosError;
use stackctl::process::{SIGCONT, SIGKILL, SIGSTOP};
use stackctl::redis_cluster::RedisCluster;
use std::time::Duration;

/// `seckill_redis_unreplicated_total` summed over `gws` (None: a gateway did not answer).
fn unreplicated(gws: &[Proc]) -> Option<f64> {
    gws.iter()
        .map(|g| g.metric("seckill_redis_unreplicated_total"))
        .sum()
}

/// Start of the first 50 ms slice from `from_ms` on (ms since the load's start) in which
pub(super) fn redis_master_killed(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
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
    // Small enough to sell out after the failover, so "no oversell" is tested at the edge;
    // in 8 buckets over the three masters (moves between them under way throughout).
    let (units, buckets) = (2000, 8);
    let sale = open_bucketed_sale(d, &gws[0], units, buckets)?;
    let r = roles(d, c, &sale, buckets)?;
    let load = selling(d, &gws, &sale);
    let unrepl_before = unreplicated(&gws).unwrap_or(-1.0);
    let mut watch = StoreWatch::start(env, &gws, &writer);
    let alone = master_sells_alone(d, c, &r, &load, &gws, unrepl_before)?;
    let promoted_ms = await_promotion(d, c, &r, &load, &gws, &writer, &mut watch);
    let missing = missing_on_promoted(d, c, &r, &load, &sale)?;
    let rec = recover(
        d,
        &load,
        &gws,
        &writer,
        &mut watch,
        alone.f0,
        promoted_ms,
        missing.len(),
    );
    let unrepl_alone = unreplicated(&gws).unwrap_or(-1.0);
    restart_old_master(d, c, &r)?;
    sell_out(d, &url, &sale, units)?;
    let unrepl = [unrepl_before, alone.unrepl, unrepl_alone];
    report_unreplicated(d, &gws, &r, unrepl, &alone.paused);
    sold_again_then_checked(env, d, &sale, load, &rec, units)
}

/// Load on every gateway for five seconds, checked to be selling on the cluster.
fn selling(d: &mut Drill, gws: &[Proc], sale: &str) -> Load {
    let gw_refs: Vec<&Proc> = gws.iter().collect();
    let load = start_load(d, &gw_refs, sale, 8, 25.0, 80);
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
    load
}

/// The master holding most of the sale's buckets (to be killed), one of their slots,
/// the buckets, and that master's replica.
struct Roles {
    slot: u16,
    victim: usize,
    replica: usize,
    buckets: u32,
    on_victim: Vec<u32>,
}

/// Find the master holding most of `sale`'s buckets and its replica, and say which
/// they are.
fn roles(d: &Drill, c: &RedisCluster, sale: &str, buckets: u32) -> Result<Roles, ChaosError> {
    let by_master = buckets_by_master(c, sale, buckets)?;
    let (victim, on_victim) = by_master
        .into_iter()
        .max_by_key(|(_, v)| v.len())
        .ok_or_else(|| ChaosError::Setup("the sale has no bucket".into()))?;
    let slot = bucket_slot(sale, on_victim[0]);
    let topo = c.topology()?;
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
        "buckets {on_victim:?} of the sale (slot {slot} and others): master redis-{victim} (port {}, run_id {}), its replica redis-{replica} (port {}, run_id {})",
        c.port(victim),
        stackctl::redis::run_id(c.port(victim)).unwrap_or("?".into()),
        c.port(replica),
        stackctl::redis::run_id(c.port(replica)).unwrap_or("?".into()),
    ));
    Ok(Roles {
        slot,
        victim,
        replica,
        buckets,
        on_victim,
    })
}

/// The master's second of selling without its replica.
struct Alone {
    /// The answers meanwhile.
    paused: Window,
    /// When the master was killed (ms since the load's start).
    f0: u64,
    /// `seckill_redis_unreplicated_total` after it.
    unrepl: f64,
}

/// The fault: the replica stopped and cut off, the master selling alone for 1 s, then
/// killed; the replica runs again whatever happened.
fn master_sells_alone(
    d: &Drill,
    c: &RedisCluster,
    r: &Roles,
    load: &Load,
    gws: &[Proc],
    unrepl_before: f64,
) -> Result<Alone, ChaosError> {
    let (slot, victim, replica) = (r.slot, r.victim, r.replica);
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
    let unrepl_paused = unreplicated(gws).unwrap_or(-1.0);
    let paused = observe(d, load, "the master alone (replica stopped)", p0, f0);
    d.log(format!(
        "replica links cut on the master: {killed_links}; while alone the master accepted {} orders; seckill_redis_unreplicated_total {unrepl_before} → {unrepl_paused} (WAIT 1 timed out after 50 ms, 202 anyway)",
        paused.count("202")
    ));
    Ok(Alone {
        paused,
        f0,
        unrepl: unrepl_paused,
    })
}

/// Wait (at most 20 s, the store watched meanwhile) for the replica to take over the
/// slot, and check it did; when that was seen (ms since the load's start).
fn await_promotion(
    d: &mut Drill,
    c: &RedisCluster,
    r: &Roles,
    load: &Load,
    gws: &[Proc],
    writer: &Proc,
    watch: &mut StoreWatch,
) -> u64 {
    let promoted = stackctl::redis_cluster::measure_until(Duration::from_secs(20), || {
        watch.poll(load, gws, writer);
        c.master_of(r.slot).is_ok_and(|m| m != r.victim)
    });
    let promoted_ms = load.elapsed_ms();
    let new_master = c.master_of(r.slot).ok();
    d.check(
        format!(
            "a replica took over slot {}: redis-{} is its master {} (run_id {})",
            r.slot,
            new_master.map_or("?".into(), |m| m.to_string()),
            promoted.map_or("(not within 20 s)".into(), |t| format!(
                "{:.1} s after the kill",
                t.as_secs_f64()
            )),
            new_master
                .and_then(|m| stackctl::redis::run_id(c.port(m)))
                .unwrap_or("?".into()),
        ),
        promoted.is_some() && new_master == Some(r.replica),
    );
    promoted_ms
}

/// The acknowledged orders the promoted replica lacks, read at once, before the
/// writer's reconcile (it waits its grace period first) puts anything back; checked to
/// be some.
fn missing_on_promoted(
    d: &mut Drill,
    c: &RedisCluster,
    r: &Roles,
    load: &Load,
    sale: &str,
) -> Result<Vec<(String, u64)>, ChaosError> {
    let replica = r.replica;
    let (acked, _) = load.acked();
    let mut read = Err(ChaosError::Setup("not read yet".into()));
    wait_for(Duration::from_secs(3), || {
        read = missing_in_buckets(c.port(replica), sale, r.buckets, &r.on_victim, &acked);
        read.is_ok()
    });
    let missing = read.map_err(|e| ChaosError::GaveUp {
        what: format!("could not read the sale on redis-{replica}"),
        source: Box::new(e),
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
    Ok(missing)
}

/// Start the killed master again and check it rejoined as a replica.
fn restart_old_master(d: &mut Drill, c: &RedisCluster, r: &Roles) -> Result<(), ChaosError> {
    let victim = r.victim;
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
    Ok(())
}

/// Why WAIT alone is not enough, the unreplicated counter over the drill
/// (`[before, after selling alone, at the restart]`), and the check that it counted.
fn report_unreplicated(d: &mut Drill, gws: &[Proc], r: &Roles, seen: [f64; 3], paused: &Window) {
    let [unrepl_before, unrepl_paused, unrepl_alone] = seen;
    let victim = r.victim;
    let unrepl = unreplicated(gws);
    d.log(
        "why WAIT alone cannot prevent a resold unit: a purchase whose WAIT times out (no \
         replica answered within 50 ms) is still answered 202 — its order is in Kafka — and \
         counted in seckill_redis_unreplicated_total. A replica promoted without those \
         purchases would sell their units again; the gateways therefore hold purchases after \
         a slot-map change until the writer has re-applied every acknowledged order the new \
         master lacks and trusted it ({sk:epoch}:trust).",
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
}

/// Drill 15: a master that holds buckets of a bucketed sale (but neither the store epoch
/// nor the sale's meta) is killed and started again at once, empty, inside the cluster's
/// node timeout: it keeps its node id and its slots, no replica takes over, and every key
/// it held is gone — its replica resyncs to the empty data. The cluster's own identity
/// must make that a loss: purchases held, the sale restored whole, nothing resold.
pub(super) fn redis_master_restarted_empty(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    let url = env.use_cluster()?;
    let c = &env.cluster;
    let gws = (0..2)
        .map(|i| env.gateway(&format!("d15-gw-{i}"), "d15", Some(url.clone()), &[]))
        .collect::<Result<Vec<_>, _>>()?;
    let writer = env.writer("d15-writer")?;
    let (units, buckets) = (2000, 8);
    // A sale with buckets on a master that holds neither the epoch nor its meta (a few
    // tries: where the buckets land depends on the sale's name).
    let mut tries = 0;
    let (sale, victim, lost) = loop {
        tries += 1;
        let sale = open_bucketed_sale(d, &gws[0], units, buckets)?;
        match empty_victim(d, c, &sale, buckets) {
            Ok((victim, lost)) => break (sale, victim, lost),
            Err(e) if tries >= 5 => return Err(e),
            Err(_) => sleep(0.01),
        }
    };
    let mut load = selling(d, &gws, &sale);
    let mut watch = StoreWatch::start(env, &gws, &writer);
    let (acked, _) = load.acked();
    let on_victim = acked
        .iter()
        .filter(|(id, _)| {
            stock::keys::split_order_id(id)
                .is_some_and(|(_, seq)| lost.contains(&stock::keys::order_bucket(seq, buckets)))
        })
        .count();
    d.log(format!(
        "FAULT: kill -9 redis-{victim} and start it again at once, empty (no persistence), inside the {} ms node timeout; {on_victim} of {} acknowledged orders so far live in its buckets {lost:?}",
        c.node_timeout_ms,
        distinct(&acked)
    ));
    let f0 = load.elapsed_ms();
    c.signal(victim, SIGKILL)?;
    stackctl::process::wait_until(Duration::from_secs(5), || {
        !c.node_up(victim) && !stackctl::process::port_open(c.port(victim))
    });
    c.start_node(victim)?;
    let back = load.elapsed_ms();
    let slot = bucket_slot(&sale, lost[0]);
    let keys = c.query(c.port(victim), &["DBSIZE"]).unwrap_or_default();
    d.check(
        format!(
            "redis-{victim} is back as the master of slot {slot}, restarted {:.2} s after the kill (no failover), with {} keys",
            (back - f0) as f64 / 1000.0,
            keys.trim()
        ),
        c.master_of(slot).is_ok_and(|m| m == victim),
    );
    // Purchases under way at the kill on the other masters may still be answered; from
    // a moment after it (the gateways' connections to the victim broke at once), none.
    recover(d, &load, &gws, &writer, &mut watch, f0 + 250, back, 0);
    let mut st = stock::Stock::new(stock::connect(&url, Duration::from_secs(2))?);
    let missing = st.lost_buckets(&sale)?;
    d.check(
        format!("the sale is whole again: buckets missing {missing:?}"),
        missing.is_empty(),
    );
    sell_out(d, &url, &sale, units)?;
    load.stop();
    resold_check(d, &load, units);
    invariants(env, d, &sale, &load)
}

/// The slot of bucket `b`'s keys.
fn bucket_slot(sale: &str, b: u32) -> u16 {
    stock::cluster::slot(stock::keys::SaleKeys::bucket(sale, b).meta.as_bytes())
}

/// The masters holding `sale`'s `buckets` buckets, each with the buckets it holds.
fn buckets_by_master(
    c: &RedisCluster,
    sale: &str,
    buckets: u32,
) -> Result<Vec<(usize, Vec<u32>)>, ChaosError> {
    let mut by_master: Vec<(usize, Vec<u32>)> = Vec::new();
    for b in 0..buckets {
        let m = c.master_of(bucket_slot(sale, b))?;
        match by_master.iter_mut().find(|(x, _)| *x == m) {
            Some((_, v)) => v.push(b),
            None => by_master.push((m, vec![b])),
        }
    }
    Ok(by_master)
}

/// The master to restart empty: one holding buckets of the sale but not the store epoch
/// (whose loss is drill 2's) nor the sale's meta; and the buckets it holds.
fn empty_victim(
    d: &Drill,
    c: &RedisCluster,
    sale: &str,
    buckets: u32,
) -> Result<(usize, Vec<u32>), ChaosError> {
    let epoch = c.master_of(stock::cluster::slot(stock::keys::EPOCH.as_bytes()))?;
    let meta = c.master_of(stock::cluster::slot(
        stock::keys::SaleKeys::new(sale).meta.as_bytes(),
    ))?;
    let by_master = buckets_by_master(c, sale, buckets)?;
    let shares: Vec<String> = by_master
        .iter()
        .map(|(m, v)| format!("redis-{m}: buckets {v:?}"))
        .collect();
    d.log(format!(
        "the sale's buckets by master: {}; the store epoch on redis-{epoch}, the sale's meta on redis-{meta}",
        shares.join(", ")
    ));
    by_master
        .into_iter()
        .filter(|(m, _)| *m != epoch && *m != meta)
        .max_by_key(|(_, v)| v.len())
        .ok_or_else(|| {
            ChaosError::Setup(
                "no master holds buckets of the sale without the epoch or the meta".into(),
            )
        })
}
