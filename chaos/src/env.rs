//! The drills' own stack — Redis, PostgreSQL and a three-node Apache Kafka cluster
//! (replication factor 3, `min.insync.replicas=2`), run by `stackctl` under
//! `.run/chaos` on ports of their own (so a drill can kill them without touching
//! anything else) — and the gateway and order-writer processes a drill runs on it.
//! Producers run as in production: idempotent, acks=all.
//!
//! Optional Redis Cluster profile: a drill that calls [`Env::use_cluster`] gets three
//! masters and three replicas (stackctl's [`stackctl::redis_cluster`], under
//! `<run>/redis-cluster` on `CHAOS_REDIS_CLUSTER_PORT`, default 18001..18006: below
//! 22768, so the cluster bus on port + 10000 stays out of the ephemeral range); until the
//! next drill, its gateways, writers, tools and the invariants use the cluster.
//!
//! Optional Redis with an append-only file: a drill that calls [`Env::use_aof_redis`]
//! gets a single Redis of its own (`<run>/redis-aof` on `CHAOS_REDIS_AOF_PORT`, default
//! the drill Redis's port + 10: 17389) with `appendonly yes`, `appendfsync everysec`,
//! started fresh (no file from an earlier drill); likewise until the next drill.

use crate::ChaosError;
pub use stackctl::process::{parse_metric, Proc};
pub use stackctl::Service;
use std::path::PathBuf;
use std::process::Command;

pub const SECRET: &str = "chaos-ticket-secret";
pub const ADMIN: &str = "chaos-admin-token";

pub struct Env {
    /// The order topic and consumer group of the drill being run (each drill has its
    /// own, so that one drill's leftovers never slow or confuse the next).
    pub topic: std::sync::Mutex<(String, String)>,
    pub stack: stackctl::Stack,
    /// The Redis Cluster profile, started by the first drill that asks for it.
    pub cluster: stackctl::redis_cluster::RedisCluster,
    /// Whether the running drill is on the cluster (reset by [`Env::fresh_topic`]).
    on_cluster: std::sync::atomic::AtomicBool,
    /// Whether the cluster was started (then `up` restarts its killed nodes).
    cluster_started: std::sync::atomic::AtomicBool,
    /// The Redis with an append-only file, started by the first drill that asks for it.
    pub aof_redis: stackctl::redis::Redis,
    /// Whether the running drill is on it (reset by [`Env::fresh_topic`]).
    on_aof: std::sync::atomic::AtomicBool,
    /// Whether it was started (then `up` restarts it, from its file).
    aof_started: std::sync::atomic::AtomicBool,
}

fn port_from(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Env {
    /// Bring the drill stack up (idempotent).
    pub fn open() -> Result<Env, ChaosError> {
        let root = stackctl::root()?;
        let run = std::env::var_os("CHAOS_RUN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".run/chaos"));
        let cluster = stackctl::redis_cluster::RedisCluster::new(
            run.join("redis-cluster"),
            port_from("CHAOS_REDIS_CLUSTER_PORT", 18001),
        );
        let redis_port = port_from("CHAOS_REDIS_PORT", 17379);
        let aof_redis = stackctl::redis::Redis {
            dir: run.join("redis-aof"),
            port: port_from("CHAOS_REDIS_AOF_PORT", redis_port + 10),
        };
        let stack = stackctl::Stack::new(stackctl::Spec {
            run,
            // Below the kernel's ephemeral range (32768-60999): a listener there can find
            // its port taken by some connection's local end.
            redis_port,
            pg_port: port_from("CHAOS_PG_PORT", 17432),
            kafka_port: port_from("CHAOS_KAFKA_PORT", 17092),
            kafka_nodes: 3,
            topics: vec![],
            tls: false,
            tracing: false,
        })?;
        let env = Env {
            topic: std::sync::Mutex::new(("orders".into(), "order-writer".into())),
            stack,
            cluster,
            on_cluster: false.into(),
            cluster_started: false.into(),
            aof_redis,
            on_aof: false.into(),
            aof_started: false.into(),
        };
        env.up()?;
        Ok(env)
    }

    /// A fresh order topic and consumer group for the next drill (which starts on the
    /// single Redis).
    pub fn fresh_topic(&self, drill: &str) -> Result<String, ChaosError> {
        self.on_cluster
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.on_aof
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let name = format!("orders_{}_{}", drill.replace('-', "_"), std::process::id());
        seckill_common::kafka::create_topic(&self.brokers(), &name, 4).map_err(|source| {
            ChaosError::Topic {
                what: format!("create topic {name}"),
                source,
            }
        })?;
        *self.topic.lock().unwrap_or_else(|p| p.into_inner()) =
            (name.clone(), format!("writers_{name}"));
        Ok(name)
    }

    pub fn topic_and_group(&self) -> (String, String) {
        self.topic.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Start whatever of the stack is down (the cluster's nodes too, once started).
    pub fn up(&self) -> Result<(), ChaosError> {
        self.stack.up()?;
        if self
            .cluster_started
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.cluster.up()?;
        }
        if self.aof_started.load(std::sync::atomic::Ordering::SeqCst) {
            self.aof_redis
                .up_with(stackctl::redis::Persistence::AppendOnly)?;
        }
        Ok(())
    }

    /// Put the running drill on the Redis with an append-only file, started afresh
    /// (its directory emptied first): gateways started without a Redis URL, writers,
    /// `rebuild-stock` and the invariants use it. Returns its URL.
    pub fn use_aof_redis(&self) -> Result<String, ChaosError> {
        self.aof_redis.down();
        remove_dir(&self.aof_redis.dir)?;
        self.aof_started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.aof_redis
            .up_with(stackctl::redis::Persistence::AppendOnly)?;
        self.on_aof.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(self.aof_redis.url())
    }

    /// Put the running drill on the Redis Cluster profile (started, healthy): gateways
    /// started without a Redis URL, writers, `rebuild-stock` and the invariants use it.
    /// Returns its `redis+cluster://` URL.
    pub fn use_cluster(&self) -> Result<String, ChaosError> {
        self.cluster_started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cluster.up()?;
        self.on_cluster
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(self.cluster.url())
    }

    /// [`Env::use_cluster`] on a cluster made afresh (stopped, its directory removed,
    /// created again): a campaign starts from a store that never had a sale, whatever an
    /// earlier run left in it.
    pub fn use_fresh_cluster(&self) -> Result<String, ChaosError> {
        self.cluster.down();
        remove_dir(&self.cluster.dir)?;
        self.use_cluster()
    }

    /// Stop one service cleanly.
    pub fn stop(&self, service: Service) {
        self.stack.stop(service)
    }

    pub fn down(&self) {
        self.stack.down();
        self.cluster.down();
        self.aof_redis.down();
    }

    /// The running drill's Redis: the single one, the cluster after [`Env::use_cluster`],
    /// the one with an append-only file after [`Env::use_aof_redis`].
    pub fn redis_url(&self) -> String {
        if self.on_cluster.load(std::sync::atomic::Ordering::SeqCst) {
            self.cluster.url()
        } else if self.on_aof.load(std::sync::atomic::Ordering::SeqCst) {
            self.aof_redis.url()
        } else {
            self.stack.redis.url()
        }
    }
    pub fn brokers(&self) -> String {
        self.stack.kafka.bootstrap()
    }
    pub fn database_url(&self) -> String {
        self.stack.postgres.url("seckill")
    }
    pub fn stack(&self) -> seckill_common::stack::Stack {
        seckill_common::stack::Stack {
            redis_url: self.redis_url(),
            ..self.stack.addresses()
        }
    }

    /// Send a signal (`stackctl::process::SIGKILL`, `SIGSTOP`, `SIGCONT`) to a service.
    pub fn signal(&self, service: Service, sig: i32) -> Result<(), ChaosError> {
        Ok(self.stack.signal(service, sig)?)
    }

    /// A gateway named `name` in gateway cluster `cluster`, on Redis at `redis_url`
    /// (a proxy, say) or the stack's.
    pub fn gateway(
        &self,
        name: &str,
        cluster: &str,
        redis_url: Option<String>,
        extra: &[(&str, &str)],
    ) -> Result<Proc, ChaosError> {
        let mut env = vec![
            ("SECKILL_REDIS_URL", redis_url.unwrap_or(self.redis_url())),
            ("SECKILL_TICKET_SECRET", SECRET.into()),
            ("SECKILL_ADMIN_TOKEN", ADMIN.into()),
            ("SECKILL_CLUSTER", cluster.into()),
            ("SECKILL_KAFKA_TIMEOUT_MS", "3000".into()),
            ("SECKILL_ORDERS_TOPIC", self.topic_and_group().0),
            ("SECKILL_USER_RPS", "1000".into()),
            ("SECKILL_USER_BURST", "1000".into()),
            ("SECKILL_IP_RPS", "1000000".into()),
            ("SECKILL_IP_BURST", "1000000".into()),
            ("SECKILL_MAX_CONNECTIONS_PER_IP", "0".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        Ok(self.stack.gateway(&stackctl::bin("gateway")?, name, &env)?)
    }

    pub fn writer(&self, name: &str) -> Result<Proc, ChaosError> {
        self.writer_with(name, &[])
    }

    /// An order-writer with settings added or overridden by `extra`.
    pub fn writer_with(&self, name: &str, extra: &[(&str, &str)]) -> Result<Proc, ChaosError> {
        let (topic, group) = self.topic_and_group();
        let mut env = vec![
            ("SECKILL_MAX_POLL_INTERVAL_MS", "10000".to_string()),
            ("SECKILL_ORDERS_TOPIC", topic),
            ("SECKILL_GROUP_ID", group),
            ("SECKILL_REDIS_URL", self.redis_url()),
            (
                "SECKILL_LOG",
                std::env::var("CHAOS_WRITER_LOG").unwrap_or("info".into()),
            ),
        ];
        // CHAOS_WRITER_KAFKA_DEBUG=cgrp (say) puts librdkafka's debug log in the writer's log.
        if let Ok(d) = std::env::var("CHAOS_WRITER_KAFKA_DEBUG") {
            env.push(("SECKILL_KAFKA_EXTRA", format!("debug={d}")));
        }
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        Ok(self
            .stack
            .writer(&stackctl::bin("order-writer")?, name, &env)?)
    }

    /// `order-writer rebuild-stock`: restore lost sales from PostgreSQL and the topic.
    pub fn rebuild_stock(&self) -> Result<String, ChaosError> {
        let out = Command::new(stackctl::bin("order-writer")?)
            .current_dir(&self.stack.run)
            .arg("rebuild-stock")
            .env("SECKILL_ORDERS_TOPIC", self.topic_and_group().0)
            .env("SECKILL_DATABASE_URL", self.database_url())
            .env("SECKILL_KAFKA_BROKERS", self.brokers())
            .env("SECKILL_REDIS_URL", self.redis_url())
            .env("SECKILL_METRICS_LISTEN", "")
            .env("SECKILL_LOG", "warn")
            .output();
        stdout_of(out, "order-writer rebuild-stock")
    }

    /// `gateway switch …` against `gw`'s internal listener, as an operator would type it.
    pub fn switch(&self, gw: &Proc, args: &[&str]) -> Result<String, ChaosError> {
        let out = Command::new(stackctl::bin("gateway")?)
            .args(args)
            .args(["--url", &gw.internal_url(), "--token", ADMIN])
            .env("USER", "chaos")
            .output();
        stdout_of(out, &format!("gateway {args:?}"))
    }
}

/// A finished command's standard output, or its standard error as the failure.
fn stdout_of(out: std::io::Result<std::process::Output>, what: &str) -> Result<String, ChaosError> {
    let out = out.map_err(ChaosError::io(what))?;
    if !out.status.success() {
        return Err(ChaosError::Setup(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Remove `dir` and everything in it (nothing there is fine).
fn remove_dir(dir: &std::path::Path) -> Result<(), ChaosError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ChaosError::Setup(format!("{}: {e}", dir.display()))),
    }
}
