//! `chaos campaign --seed S --minutes M`: a randomized fault campaign in the manner of
//! Jepsen's nemesis. A buyer mix ([`crate::load::Mix`]: buy and pay, double-click, pay
//! later, abandon, replay an old token) runs against two gateways and an order-writer
//! with a short payment window, so expiry runs all the time. A schedule drawn from
//! `StdRng::seed_from_u64(S)` injects one fault at a time — the faults the drills
//! know: Redis paused (SIGSTOP), Redis `kill -9` and restarted from its append-only
//! file, a broker `kill -9` and restarted, the writer `kill -9` and restarted,
//! PostgreSQL stopped and started, a gateway `kill -9` and restarted (same spool), a
//! black hole between the gateways and Redis (the fault proxy) — for a seeded few
//! seconds, then heals it and waits for the stack to be healthy again.
//!
//! `--cluster` runs it on the Redis Cluster profile (three masters, three replicas,
//! sales in eight stock buckets over the masters, `WAIT 1`), where the Redis faults are
//! a master paused past the node timeout (its replica takes over), a master `kill -9`d
//! (failover, then it rejoins as a replica), a master restarted empty inside the node
//! timeout (its buckets lost: restored whole by the reconcile, drill 15) and a master
//! restarted inside the node timeout from a snapshot taken as the previous fault began
//! (its buckets back from before that fault's reconcile, which may have rewritten the
//! others: the ledger cannot balance, and the reconcile restores the sale whole).
//!
//! Each fault gets a sale of its own: when the stack is healthy again the buyers move to
//! a new sale, and the previous one — no longer bought from, its unpaid orders expired
//! and released — is checked by the drills' verifier ([`crate::verify`]: no oversell,
//! the per-user limit, every 202 in PostgreSQL exactly once, conservation
//! remaining + held + sold = initial, stock held only by orders, tokens used once), plus
//! "no 202 dead-lettered" (the writer's dead-letter topic against every acknowledged
//! order). At the end the buyers stop, everything drains and every sale is checked again.
//! The same seed draws the same faults in the same order, each with the same duration
//! and target.

use crate::drill::{wait_for, Drill};
use crate::env::{Env, Proc, Service};
use crate::load::{Endpoint, Load, Mix, Spec};
use crate::proxy::{Proxy, Toxic};
use crate::verify::{invariants_of, Answers};
use crate::ChaosError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stackctl::process::{SIGCONT, SIGKILL, SIGSTOP};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// The writer's settings: a five-second payment window, scanned often, and the
/// reservation sweep soon after it, so that expiry runs throughout the campaign.
const WRITER: [(&str, &str); 4] = [
    ("SECKILL_PAYMENT_WINDOW_SECS", "5"),
    ("SECKILL_CANCEL_SCAN_MS", "200"),
    ("SECKILL_RESERVATION_GRACE_SECS", "2"),
    ("SECKILL_RESERVATION_SWEEP_MS", "1000"),
];

/// Units per sale: far more than a fault's worth of buyers, so no sale sells out.
const UNITS: i64 = 100_000;
const GATEWAYS: usize = 2;
/// Stock buckets per sale on the cluster profile: spread over the three masters, moves
/// between them under way throughout.
const CLUSTER_BUCKETS: u32 = 8;
/// A master paused at least this long: past the 2 s node timeout and the election, so its
/// replica takes over.
const MASTER_PAUSE_MIN: Duration = Duration::from_millis(5000);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    RedisPause,
    RedisKill,
    BrokerKill,
    WriterKill,
    PostgresStop,
    GatewayKill,
    NetBlackhole,
    /// The cluster profile's: a master paused (SIGSTOP) — past the node timeout its
    /// replica takes over, and the old master, resumed, rejoins as a replica and drops
    /// what it had not replicated.
    MasterPause,
    /// A master `kill -9`; its replica takes over; the old one is started again (empty,
    /// no persistence) once it has, and rejoins as a replica.
    MasterKill,
    /// A master `kill -9` and started again at once, empty, inside the node timeout: no
    /// failover, its slots' keys are gone (drill 15). Never the epoch's master (a total
    /// loss is the operator's, drill 2).
    MasterEmptyRestart,
    /// A master `kill -9` and started again at once from its last snapshot (RDB), inside
    /// the node timeout: its slots' keys as they were when the previous fault began —
    /// before that fault's reconcile, which may have restored a sale whole and rewritten
    /// its buckets on the other masters. Every node is snapshotted as each other fault
    /// begins. Never the epoch's master.
    MasterSnapshotRestart,
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::RedisPause,
        Fault::RedisKill,
        Fault::BrokerKill,
        Fault::WriterKill,
        Fault::PostgresStop,
        Fault::GatewayKill,
        Fault::NetBlackhole,
    ];
    /// The cluster profile's faults (no fault proxy: the gateways talk to every node).
    const CLUSTER: [Fault; 8] = [
        Fault::MasterPause,
        Fault::MasterKill,
        Fault::BrokerKill,
        Fault::WriterKill,
        Fault::PostgresStop,
        Fault::GatewayKill,
        Fault::MasterEmptyRestart,
        Fault::MasterSnapshotRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::RedisPause => "redis-pause",
            Fault::RedisKill => "redis-kill",
            Fault::BrokerKill => "broker-kill",
            Fault::WriterKill => "writer-kill",
            Fault::PostgresStop => "postgres-stop",
            Fault::GatewayKill => "gateway-kill",
            Fault::NetBlackhole => "net-blackhole",
            Fault::MasterPause => "master-pause",
            Fault::MasterKill => "master-kill",
            Fault::MasterEmptyRestart => "master-empty-restart",
            Fault::MasterSnapshotRestart => "master-snapshot-restart",
        }
    }
}

/// One fault of the schedule: the quiet time before it, how long it lasts, and which
/// broker or gateway it hits (taken modulo their number).
#[derive(Debug, Clone, Copy)]
pub struct Planned {
    pub gap: Duration,
    pub fault: Fault,
    pub lasts: Duration,
    pub target: usize,
}

/// The seed's schedule: its first `n` faults (a campaign runs as many as its time allows),
/// drawn from the profile's faults.
pub fn schedule(seed: u64, n: usize, cluster: bool) -> Vec<Planned> {
    let kinds: &[Fault] = if cluster {
        &Fault::CLUSTER
    } else {
        &Fault::ALL
    };
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut p = Planned {
                gap: Duration::from_millis(rng.random_range(2000..6000)),
                fault: kinds[rng.random_range(0..kinds.len())],
                lasts: Duration::from_millis(rng.random_range(2000..7000)),
                target: rng.random_range(0..64),
            };
            // A pause shorter than the node timeout and an election is no failover.
            if p.fault == Fault::MasterPause {
                p.lasts = p.lasts.max(MASTER_PAUSE_MIN);
            }
            p
        })
        .collect()
}

/// What happened to one planned fault.
struct Done {
    plan: Planned,
    what: String,
    start_s: f64,
    heal_s: f64,
    healthy_s: Option<f64>,
}

/// The processes the campaign runs on the drill stack.
struct Rig<'a> {
    env: &'a Env,
    /// The fault proxy in front of the single Redis; none on the cluster profile.
    proxy: Option<Proxy>,
    /// The gateways' Redis URL.
    redis: String,
    /// Stock buckets per sale: 8 on the cluster (spread over the masters), else 1.
    buckets: u32,
    /// The cluster node the running fault hit.
    victim: Option<usize>,
    /// A heal that did not go as planned (checked as failed).
    heal_problem: Option<String>,
    gws: Vec<Proc>,
    writer: Proc,
}

impl<'a> Rig<'a> {
    /// The campaign's stack: the AOF Redis behind the fault proxy (or the Redis Cluster,
    /// three masters and three replicas), a fresh order topic and its dead-letter topic,
    /// the writer and the gateways, healthy.
    fn up(
        env: &'a Env,
        d: &mut Drill,
        seed: u64,
        name: &str,
        cluster: bool,
    ) -> Result<Rig<'a>, ChaosError> {
        env.up()?;
        env.fresh_topic(name)?;
        let (proxy, redis, buckets, what) = if cluster {
            let url = env.use_fresh_cluster()?;
            let c = &env.cluster;
            let what = format!(
                "Redis Cluster {url} (3 masters + 3 replicas on {}..{}, node timeout {} ms, WAIT 1), sales in {CLUSTER_BUCKETS} stock buckets",
                c.port(0),
                c.port(c.nodes() - 1),
                c.node_timeout_ms
            );
            (None, url, CLUSTER_BUCKETS, what)
        } else {
            let redis = env.use_aof_redis()?;
            let upstream: std::net::SocketAddr = ([127, 0, 0, 1], env.aof_redis.port).into();
            let proxy = Proxy::start(upstream).map_err(ChaosError::Proxy)?;
            let what = format!(
                "Redis {redis} (append-only file) behind the fault proxy 127.0.0.1:{}",
                proxy.port
            );
            let url = format!("redis://127.0.0.1:{}", proxy.port);
            (Some(proxy), url, 1, what)
        };
        seckill_common::kafka::create_topic(&env.brokers(), &dlq_topic(env), 1).map_err(
            |source| ChaosError::Topic {
                what: "create the dead-letter topic".into(),
                source,
            },
        )?;
        d.log(format!(
            "seed {seed}: {what}, {GATEWAYS} gateways, one writer (payment window 5 s, cancel scan 200 ms, sweep 1 s after 2 s grace), dead letters to {}",
            dlq_topic(env)
        ));
        let mut rig = Rig {
            env,
            proxy,
            redis,
            buckets,
            victim: None,
            heal_problem: None,
            gws: Vec::new(),
            writer: Rig::writer(env)?,
        };
        for i in 0..GATEWAYS {
            let g = rig.gateway(i)?;
            rig.gws.push(g);
        }
        if !wait_for(Duration::from_secs(90), || rig.healthy()) {
            return Err(ChaosError::Setup(format!(
                "the stack never became healthy within 90 s: {}",
                rig.unhealthy().unwrap_or_default()
            )));
        }
        Ok(rig)
    }

    /// Fault `k` as planned: injected, lasting, healed, and the stack checked healthy
    /// again (within 90 s).
    fn fault_and_heal(
        &mut self,
        d: &mut Drill,
        load: &Load,
        k: usize,
        p: Planned,
    ) -> Result<Done, ChaosError> {
        if self.proxy.is_none() && p.fault != Fault::MasterSnapshotRestart {
            // The snapshot a later master-snapshot-restart starts from (best effort: a
            // node down or saving already keeps its last one).
            let c = &self.env.cluster;
            for i in 0..c.nodes() {
                let _ = c.snapshot(i);
            }
            // Written before the fault: an empty restart must not meet a save finishing
            // after it removed the file.
            wait_for(Duration::from_secs(10), || {
                (0..c.nodes()).all(|i| {
                    c.query(c.port(i), &["INFO", "persistence"])
                        .map_or(true, |info| !info.contains("rdb_bgsave_in_progress:1"))
                })
            });
        }
        let what = self.inject(&p)?;
        let start_s = d.elapsed().as_secs_f64();
        d.log(format!(
            "FAULT {k} {} for {:.1} s: {what}",
            p.fault.name(),
            p.lasts.as_secs_f64()
        ));
        std::thread::sleep(p.lasts);
        let healed = self.heal(&p, load)?;
        let heal_s = d.elapsed().as_secs_f64();
        d.log(format!("HEALED {k} {}: {healed}", p.fault.name()));
        if let Some(problem) = self.heal_problem.take() {
            d.check(format!("fault {k}: {problem}"), false);
        }
        let healthy = wait_for(Duration::from_secs(90), || self.healthy());
        let healthy_s = healthy.then(|| d.elapsed().as_secs_f64());
        d.check(
            format!(
                "after fault {k} ({}): the stack is healthy again ({})",
                p.fault.name(),
                healthy_s.map_or_else(
                    || format!("not within 90 s: {}", self.unhealthy().unwrap_or_default()),
                    |t| format!("{:.1} s after the heal", t - heal_s)
                )
            ),
            healthy,
        );
        Ok(Done {
            plan: p,
            what,
            start_s,
            heal_s,
            healthy_s,
        })
    }
}

impl Rig<'_> {
    fn gateway(&self, i: usize) -> Result<Proc, ChaosError> {
        self.env.gateway(
            &format!("campaign-gw-{i}"),
            "campaign",
            Some(self.redis.clone()),
            &[],
        )
    }

    fn writer(env: &Env) -> Result<Proc, ChaosError> {
        let dlq = dlq_topic(env);
        let mut extra: Vec<(&str, &str)> = WRITER.to_vec();
        extra.push(("SECKILL_DLQ_TOPIC", &dlq));
        env.writer_with("campaign-writer", &extra)
    }

    /// Inject `p`'s fault; returns what was done (for the timeline).
    fn inject(&mut self, p: &Planned) -> Result<String, ChaosError> {
        let env = self.env;
        Ok(match p.fault {
            Fault::RedisPause => {
                redis_signal(env, SIGSTOP)?;
                "kill -STOP redis".into()
            }
            Fault::RedisKill => {
                redis_signal(env, SIGKILL)?;
                wait_for(Duration::from_secs(5), || !env.aof_redis.is_up());
                "kill -9 redis (append-only file, appendfsync everysec)".into()
            }
            Fault::BrokerKill => {
                let n = p.target % env.stack.kafka.nodes;
                env.signal(Service::Kafka(n), SIGKILL)?;
                format!("kill -9 kafka-{n}")
            }
            Fault::WriterKill => {
                self.writer.kill9();
                "kill -9 order-writer".into()
            }
            Fault::PostgresStop => {
                env.stop(Service::Postgres);
                "PostgreSQL stopped".into()
            }
            Fault::GatewayKill => {
                let i = p.target % self.gws.len();
                self.gws[i].kill9();
                format!("kill -9 gateway {i}")
            }
            Fault::NetBlackhole => {
                self.toxic(Toxic::Blackhole)?;
                "black hole between the gateways and Redis".into()
            }
            Fault::MasterPause => {
                let m = self.pick_master(p.target, false)?;
                env.cluster.signal(m, SIGSTOP)?;
                format!("kill -STOP redis-{m} (a master)")
            }
            Fault::MasterKill => {
                let m = self.pick_master(p.target, false)?;
                env.cluster.signal(m, SIGKILL)?;
                wait_for(Duration::from_secs(5), || !env.cluster.node_up(m));
                format!("kill -9 redis-{m} (a master)")
            }
            Fault::MasterEmptyRestart | Fault::MasterSnapshotRestart => {
                let m = self.pick_master(p.target, true)?;
                let c = &env.cluster;
                c.signal(m, SIGKILL)?;
                stackctl::process::wait_until(Duration::from_secs(5), || {
                    !c.node_up(m) && !stackctl::process::port_open(c.port(m))
                });
                let from = if p.fault == Fault::MasterEmptyRestart {
                    c.start_node(m)?;
                    "empty"
                } else {
                    c.start_from_snapshot(m)?;
                    "from its snapshot of the previous fault's start"
                };
                format!(
                    "kill -9 redis-{m} (a master) and started again at once, {from}, inside the {} ms node timeout",
                    c.node_timeout_ms
                )
            }
        })
    }

    fn toxic(&self, t: Toxic) -> Result<(), ChaosError> {
        self.proxy
            .as_ref()
            .ok_or_else(|| ChaosError::Setup("no fault proxy on the cluster profile".into()))?
            .set(t);
        Ok(())
    }

    /// The master the fault hits (`target` modulo the masters now), remembered for the
    /// heal; with `spare_epoch`, never the one holding the store epoch (and trust map).
    fn pick_master(&mut self, target: usize, spare_epoch: bool) -> Result<usize, ChaosError> {
        let c = &self.env.cluster;
        let epoch = c.master_of(stock::cluster::slot(stock::keys::EPOCH.as_bytes()))?;
        let masters: Vec<usize> = c
            .masters_now()?
            .into_iter()
            .filter(|m| !spare_epoch || *m != epoch)
            .collect();
        if masters.is_empty() {
            return Err(ChaosError::Setup("no master to hit".into()));
        }
        let m = masters[target % masters.len()];
        self.victim = Some(m);
        Ok(m)
    }

    fn victim(&self) -> Result<usize, ChaosError> {
        self.victim
            .ok_or_else(|| ChaosError::Setup("no cluster node was hit".into()))
    }

    /// Undo `p`'s fault; returns what was done.
    fn heal(&mut self, p: &Planned, load: &Load) -> Result<String, ChaosError> {
        let env = self.env;
        Ok(match p.fault {
            Fault::RedisPause => {
                redis_signal(env, SIGCONT)?;
                "kill -CONT redis".into()
            }
            Fault::RedisKill => {
                env.up()?;
                "redis restarted from its append-only file".into()
            }
            Fault::BrokerKill => {
                let n = p.target % env.stack.kafka.nodes;
                env.stack.kafka.restart_node(n)?;
                format!("kafka-{n} restarted")
            }
            Fault::WriterKill => {
                self.writer = Rig::writer(env)?;
                "order-writer restarted".into()
            }
            Fault::PostgresStop => {
                env.up()?;
                "PostgreSQL started".into()
            }
            Fault::GatewayKill => {
                let i = p.target % self.gws.len();
                self.gws[i] = self.gateway(i)?;
                load.set_gateway(i, Endpoint::of(&self.gws[i]));
                format!(
                    "gateway {i} restarted (same spool), on port {}",
                    self.gws[i].port
                )
            }
            Fault::NetBlackhole => {
                self.toxic(Toxic::Pass)?;
                "the proxy passes again".into()
            }
            Fault::MasterPause => {
                let m = self.victim()?;
                env.cluster.signal(m, SIGCONT)?;
                format!("kill -CONT redis-{m}")
            }
            Fault::MasterKill => {
                // Started again once a replica has its slots (bounded): a node started
                // before that would be an empty master (the next fault's kind).
                let m = self.victim()?;
                let c = &env.cluster;
                let taken_over = || {
                    c.masters_now()
                        .is_ok_and(|ms| ms.len() == 3 && !ms.contains(&m))
                };
                let mut promoted = wait_for(Duration::from_secs(20), taken_over);
                if !promoted {
                    // Started now, the node would come back an empty master: force its
                    // replica to take over first, and say so.
                    self.heal_problem = Some(format!(
                        "redis-{m}'s replica did not take over within 20 s of the kill (forced with CLUSTER FAILOVER TAKEOVER)"
                    ));
                    takeover(c, m);
                    promoted = wait_for(Duration::from_secs(10), taken_over);
                }
                c.start_node(m)?;
                if promoted {
                    format!("redis-{m} started again after a replica took over; it rejoins as a replica")
                } else {
                    format!("redis-{m} started again; no replica took over within 20 s")
                }
            }
            Fault::MasterEmptyRestart | Fault::MasterSnapshotRestart => {
                format!("redis-{} was started again at once", self.victim()?)
            }
        })
    }

    /// Every service up and every process ready: each gateway ready (`/readyz`: Redis
    /// reachable, breaker closed, store confirmed) with its spool empty and its store
    /// confirmed, the writer holding partitions, every broker in the metadata.
    fn healthy(&self) -> bool {
        self.unhealthy().is_none()
    }

    /// The first part of the stack that is not healthy yet, named (none: healthy).
    fn unhealthy(&self) -> Option<String> {
        let env = self.env;
        let redis_up = if self.proxy.is_some() {
            env.aof_redis.is_up()
        } else {
            (0..env.cluster.nodes()).all(|i| env.cluster.node_up(i)) && env.cluster.ready()
        };
        if !redis_up {
            return Some("Redis".into());
        }
        if !env.stack.postgres.is_up() {
            return Some("PostgreSQL".into());
        }
        if env.stack.kafka.brokers_listed() != env.stack.kafka.nodes {
            return Some("a broker missing from the metadata".into());
        }
        if !self
            .writer
            .metric("seckill_writer_assigned_partitions")
            .is_some_and(|n| n > 0.0)
        {
            return Some("the writer holds no partition".into());
        }
        self.gws.iter().enumerate().find_map(|(i, g)| {
            if !ready(g) {
                Some(format!("gateway {i} not ready"))
            } else if g.metric("seckill_spool_pending") != Some(0.0) {
                Some(format!("gateway {i}'s spool not empty"))
            } else if g.metric("seckill_redis_store_unconfirmed").unwrap_or(0.0) != 0.0 {
                Some(format!("gateway {i}'s store unconfirmed"))
            } else {
                None
            }
        })
    }
}

/// `CLUSTER FAILOVER TAKEOVER` on the replicas of node `m` (down): they promote
/// themselves without the other masters' agreement.
fn takeover(c: &stackctl::redis_cluster::RedisCluster, m: usize) {
    let Ok(nodes) = c.topology() else { return };
    let Some(id) = nodes
        .iter()
        .find(|n| n.port == c.port(m))
        .map(|n| n.id.clone())
    else {
        return;
    };
    for r in nodes
        .iter()
        .filter(|n| n.master_id.as_deref() == Some(id.as_str()))
    {
        let _ = c.query(r.port, &["CLUSTER", "FAILOVER", "TAKEOVER"]);
    }
}

fn ready(g: &Proc) -> bool {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    agent
        .get(&format!("{}/readyz", g.url()))
        .call()
        .is_ok_and(|r| r.status() == 200)
}

fn redis_signal(env: &Env, sig: i32) -> Result<(), ChaosError> {
    let pid = env
        .aof_redis
        .pid()
        .ok_or_else(|| ChaosError::Setup("redis is not running".into()))?;
    Ok(stackctl::process::signal(pid, sig)?)
}

fn dlq_topic(env: &Env) -> String {
    format!("{}_dlq", env.topic_and_group().0)
}

/// A sale whose buyers have gone: drained when every acknowledged order is in
/// PostgreSQL, none is still `reserved` there, and Redis holds no unit (the unpaid ones
/// expired and were released, reservations without an order swept).
fn drained(env: &Env, sale: &str, acked: &[(String, u64)]) -> bool {
    let Ok(mut db) = postgres::Client::connect(&env.database_url(), postgres::NoTls) else {
        return false;
    };
    let Ok(rows) = db.query(
        "SELECT order_id, status FROM orders WHERE sale = $1",
        &[&sale],
    ) else {
        return false;
    };
    let have: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let reserved = rows.iter().any(|r| r.get::<_, String>(1) == "reserved");
    if reserved || !acked.iter().all(|(id, _)| have.contains(id)) {
        return false;
    }
    stock::connect(&env.redis_url(), Duration::from_secs(2))
        .ok()
        .and_then(|c| stock::Stock::new(c).state(sale).ok())
        .is_some_and(|s| s.held == 0)
}

pub struct Outcome {
    pub passed: bool,
}

/// Run the campaign (on the single Redis, or with `cluster` on the Redis Cluster);
/// prints the timeline, fault counts and every check.
pub fn run(env: &Env, seed: u64, minutes: f64, cluster: bool) -> Result<Outcome, ChaosError> {
    let name = format!("campaign-s{seed}{}", if cluster { "c" } else { "" });
    let mut d = Drill::new(
        &name,
        &format!(
            "seeded fault campaign, seed {seed}, {minutes} min{}",
            if cluster { ", Redis Cluster" } else { "" }
        ),
    );
    let mut rig = Rig::up(env, &mut d, seed, &name, cluster)?;
    let budget = Duration::from_secs_f64(minutes * 60.0);
    let buckets = rig.buckets;
    let mut sales = vec![crate::drills::open_bucketed_sale(
        &d,
        &rig.gws[0],
        UNITS,
        buckets,
    )?];
    let load = Load::start(Spec {
        gateways: rig.gws.iter().map(Endpoint::of).collect(),
        sale: &sales[0],
        workers: 4,
        rate: 8.0,
        // Bounded whatever happens: the campaign's time and four minutes more.
        max: budget + Duration::from_secs(240),
        first_user: 1,
        mix: Some(Mix { seed }),
    });
    d.log("load: 4 buyers × 8/s over both gateways, mix: 25% buy and pay, 15% double-click, 25% pay within 0-8 s, 20% abandon, 15% replay an earlier token");
    let start = Instant::now();
    let mut done: Vec<Done> = Vec::new();
    // Enough for any campaign: a fault takes at least its gap and duration (4 s).
    let plan = schedule(seed, (budget.as_secs() / 4 + 1) as usize, cluster);
    for p in plan {
        if start.elapsed() + p.gap + p.lasts >= budget {
            break;
        }
        std::thread::sleep(p.gap);
        let k = done.len() + 1;
        let fault = p.fault;
        done.push(rig.fault_and_heal(&mut d, &load, k, p)?);
        // The buyers move to a new sale; the last one drains and is checked.
        let old = sales.last().cloned().unwrap_or_default();
        match crate::drills::open_bucketed_sale(&d, &rig.gws[0], UNITS, buckets) {
            Ok(s) => {
                load.switch_sale(&s);
                sales.push(s);
            }
            Err(e) => {
                d.check(format!("a new sale after fault {k}: {e}"), false);
                continue;
            }
        }
        verify_sale(
            env,
            &mut d,
            &load,
            &old,
            &format!("[sale {k}, fault {}] ", fault.name()),
        )?;
        verify_dead_letters(env, &mut d, &load, &format!("[after fault {k}] "));
    }
    d.log(format!(
        "{:.0} s of faults done; the buyers stop, everything drains",
        start.elapsed().as_secs_f64()
    ));
    let mut load = load;
    load.stop();
    let all = load.window(0, u64::MAX);
    d.log(format!("the whole load: {}", all.summary()));
    d.log(format!("payments: {:?}", all.pay_answers));
    for (k, sale) in sales.iter().enumerate() {
        verify_sale(env, &mut d, &load, sale, &format!("[end, sale {}] ", k + 1))?;
    }
    verify_dead_letters(env, &mut d, &load, "[end] ");
    report(&d, seed, minutes, cluster, &done);
    Ok(Outcome { passed: d.passed() })
}

/// Wait (bounded) for `sale` to drain, then check its invariants.
fn verify_sale(
    env: &Env,
    d: &mut Drill,
    load: &Load,
    sale: &str,
    label: &str,
) -> Result<(), ChaosError> {
    let t0 = Instant::now();
    let quiet = wait_for(Duration::from_secs(60), || {
        drained(env, sale, &load.acked_for(sale).0)
    });
    d.log(format!(
        "{label}{sale}: {} after {:.1} s",
        if quiet {
            "drained (every 202 in PostgreSQL, nothing reserved, nothing held)"
        } else {
            "NOT drained (checked as it is)"
        },
        t0.elapsed().as_secs_f64()
    ));
    let (acked, tokens) = load.acked_for(sale);
    let all = load.window_for(sale);
    let answers = Answers {
        acked: &acked,
        tokens: &tokens,
        all: &all,
        unknown: all.count_orders("io"),
    };
    d.log(format!("{label}answers: {}", all.summary()));
    invariants_of(env, d, sale, label, &answers, Duration::from_secs(60))
}

/// No acknowledged order in the writer's dead-letter topic.
fn verify_dead_letters(env: &Env, d: &mut Drill, load: &Load, label: &str) {
    let (acked, _) = load.acked();
    let acked: HashSet<&str> = acked.iter().map(|(o, _)| o.as_str()).collect();
    match loadtest::verify::read_topic(&env.stack(), &dlq_topic(env), Duration::from_secs(30)) {
        Ok(letters) => {
            let ids: Vec<String> = letters
                .iter()
                .filter_map(|b| {
                    serde_json::from_slice::<seckill_common::order::OrderMessage>(b).ok()
                })
                .map(|o| o.order_id)
                .collect();
            let dead: Vec<&String> = ids
                .iter()
                .filter(|id| acked.contains(id.as_str()))
                .collect();
            d.check(
                format!(
                    "{label}no 202 dead-lettered: {} dead letters, {} of them acknowledged{}",
                    letters.len(),
                    dead.len(),
                    if dead.is_empty() {
                        String::new()
                    } else {
                        format!(" (e.g. {:?})", &dead[..dead.len().min(5)])
                    }
                ),
                dead.is_empty(),
            );
        }
        Err(e) => {
            d.check(format!("{label}read the dead-letter topic: {e}"), false);
        }
    }
}

fn report(d: &Drill, seed: u64, minutes: f64, cluster: bool, done: &[Done]) {
    let flag = if cluster { " --cluster" } else { "" };
    println!(
        "\n=== campaign seed {seed}, {minutes} min{flag}: {} faults",
        done.len()
    );
    for (k, f) in done.iter().enumerate() {
        println!(
            "  {:>2}. {:<14} {:>6.1}s → healed {:>6.1}s ({:.1} s, planned {:.1} s) → healthy {}  {}",
            k + 1,
            f.plan.fault.name(),
            f.start_s,
            f.heal_s,
            f.heal_s - f.start_s,
            f.plan.lasts.as_secs_f64(),
            f.healthy_s.map_or("never".into(), |t| format!("{t:.1}s")),
            f.what
        );
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in done {
        *counts.entry(f.plan.fault.name()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  faults by kind: {}", counts.join(", "));
    let failed = d.failed_checks();
    println!(
        "  checks: {} PASS, {} FAIL",
        d.checks() - failed.len(),
        failed.len()
    );
    for f in failed {
        println!("  FAIL {f}");
    }
    println!(
        "  {} (reproduce: chaos campaign --seed {seed} --minutes {minutes}{flag})",
        if d.passed() { "PASS" } else { "FAIL" }
    );
}
