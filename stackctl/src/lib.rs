//! The one stack controller. Tests, drills, the bench and `./dev` all start, stop, kill,
//! pause and wait for the project-local services through this crate:
//!
//! - [`Stack`]: Redis, PostgreSQL and Kafka under one run directory on ports of their
//!   own (`up` is idempotent, `down` stops only what it started), and the gateway and
//!   order-writer processes run on it.
//! - [`redis`], [`postgres`], [`kafka`]: one service each (Kafka: Apache Kafka 4 in
//!   KRaft mode, jars from Maven Central, one node or a three-node cluster).
//! - [`process`]: pid files, signals, liveness, [`process::Proc`] for child services.
//! - [`ensure_up`]: what a test calls first.
//! - [`redis_cluster`]: the Redis Cluster profile (`SECKILL_REDIS_CLUSTER=1`: three
//!   masters, three replicas; the stack's Redis URL becomes `redis+cluster://…`).
//! - [`secure`]: the TLS profile (`SECKILL_STACK_TLS=1`): a throwaway CA, Redis over
//!   TLS with ACL users, PostgreSQL over TLS with an owner and a writer role, Kafka
//!   over SASL_SSL with SCRAM users and client certificates.
//! - [`haproxy`]: the load balancer (HAProxy) in front of gateways, with a canary pool.
//! - [`jaeger`]: the trace collector (`SECKILL_TRACING=1`, `stackctl up --tracing`):
//!   Jaeger v1.75.0 built once from the Go module proxy.

pub mod haproxy;
pub mod jaeger;
pub mod kafka;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod redis_cluster;
pub mod secure;

use process::Proc;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("missing: {0}")]
    Missing(String),
    /// A program of the stack that would not run (not installed, most likely).
    #[error("missing: {tool} ({source}); run ./dev setup")]
    Tool {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `what` could not be done.
    #[error("{what}: {source}")]
    Failed {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no balancer under {} ({source}): start one first", .dir.display())]
    NoBalancer {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fetching Kafka from Maven Central failed: {0}")]
    Fetch(String),
    #[error("port {0} is taken by a process this stack did not start (wanted for {1})")]
    PortTaken(u16, &'static str),
    #[error("{0} did not start (see {1})")]
    Start(&'static str, String),
    #[error("{0}")]
    Process(String),
    #[error("{0}")]
    Topic(#[from] seckill_common::kafka::TopicError),
}

impl StackError {
    /// `StackError::Failed` for `what`.
    pub fn failed(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> StackError {
        let what = what.to_string();
        move |source| StackError::Failed { what, source }
    }

    /// `StackError::Tool` for a program that would not run.
    pub fn tool(tool: &'static str) -> impl FnOnce(std::io::Error) -> StackError {
        move |source| StackError::Tool { tool, source }
    }
}

/// One service of the stack, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Redis,
    Postgres,
    /// One Kafka node (0-based).
    Kafka(usize),
    /// One node of the Redis Cluster profile (0-based, by port).
    RedisNode(usize),
}

impl std::str::FromStr for Service {
    type Err = StackError;
    fn from_str(s: &str) -> Result<Service, StackError> {
        match s {
            "redis" => Ok(Service::Redis),
            "postgres" => Ok(Service::Postgres),
            "kafka" => Ok(Service::Kafka(0)),
            _ => s
                .strip_prefix("kafka-")
                .and_then(|n| n.parse().ok())
                .map(Service::Kafka)
                .or_else(|| {
                    s.strip_prefix("redis-")
                        .and_then(|n| n.parse().ok())
                        .map(Service::RedisNode)
                })
                .ok_or_else(|| {
                    StackError::Process(format!(
                        "no service {s} (redis, postgres, kafka-N, redis-N)"
                    ))
                }),
        }
    }
}

pub struct Stack {
    pub root: PathBuf,
    pub run: PathBuf,
    pub redis: redis::Redis,
    /// The Redis Cluster profile (`SECKILL_REDIS_CLUSTER=1`), beside the single Redis.
    pub redis_cluster: Option<redis_cluster::RedisCluster>,
    pub postgres: postgres::Postgres,
    pub kafka: kafka::Kafka,
    /// Topics created on `up`: (name, partitions).
    pub topics: Vec<(String, i32)>,
    /// The TLS profile (`SECKILL_STACK_TLS=1`).
    pub secure: Option<secure::Secure>,
    /// The trace collector, started by `up` when `tracing` (`SECKILL_TRACING=1`,
    /// `stackctl up --tracing`); `down` stops it whenever it runs.
    pub jaeger: jaeger::Jaeger,
    pub tracing: bool,
}

/// Where the stack lives and on which ports.
pub struct Spec {
    pub run: PathBuf,
    pub redis_port: u16,
    pub pg_port: u16,
    pub kafka_port: u16,
    pub kafka_nodes: usize,
    pub topics: Vec<(String, i32)>,
    /// The TLS profile.
    pub tls: bool,
    /// Run Jaeger, and point the components' spans at it.
    pub tracing: bool,
}

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The workspace root (the directory holding `dev` and `Cargo.toml`).
pub fn root() -> Result<PathBuf, StackError> {
    seckill_common::stack::workspace_root()
        .or_else(|| {
            Some(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .parent()?
                    .to_path_buf(),
            )
        })
        .ok_or_else(|| StackError::Missing("the project's root directory".into()))
}

impl Spec {
    /// The local stack's documented defaults, overridden by `SECKILL_RUN_DIR`,
    /// `SECKILL_REDIS_PORT`, `SECKILL_PG_PORT`, `SECKILL_KAFKA_PORT`,
    /// `SECKILL_KAFKA_NODES` and `SECKILL_TOPICS` ("orders:8 orders-dlq:1"); with
    /// `SECKILL_TRACING=1`, Jaeger on `SECKILL_OTLP_PORT` (OTLP/HTTP, 14318) and
    /// `SECKILL_JAEGER_PORT` (query API, 16686; its gRPC one below it).
    /// `SECKILL_STACK_TLS=1`: the TLS profile, by default in `.run/tls` on ports of its
    /// own (the plain ones + 1, Kafka's + 208: 16380, 15433, 19300 by default), so that
    /// it runs beside the plain stack.
    pub fn from_env() -> Result<Spec, StackError> {
        let root = root()?;
        let topics = std::env::var("SECKILL_TOPICS").unwrap_or("orders:8 orders-dlq:1".into());
        let tls = std::env::var("SECKILL_STACK_TLS").is_ok_and(|v| v == "1" || v == "true");
        let tracing = std::env::var("SECKILL_TRACING").is_ok_and(|v| v == "1" || v == "true");
        // The TLS profile beside the plain stack: the plain ports (or their overrides)
        // + 1 for Redis and PostgreSQL, Kafka + 208 (its controller at + 100 more stays
        // clear of the plain stack's three controllers).
        let (shift, kafka_shift) = if tls { (1, 208) } else { (0, 0) };
        Ok(Spec {
            run: std::env::var_os("SECKILL_RUN_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(if tls { ".run/tls" } else { ".run" })),
            redis_port: var("SECKILL_REDIS_PORT", 16379u16).saturating_add(shift),
            pg_port: var("SECKILL_PG_PORT", 15432u16).saturating_add(shift),
            kafka_port: var("SECKILL_KAFKA_PORT", 19092u16).saturating_add(kafka_shift),
            tls,
            tracing,
            kafka_nodes: var("SECKILL_KAFKA_NODES", 1usize).clamp(1, 9),
            topics: topics
                .split_whitespace()
                .filter_map(|t| {
                    let (name, parts) = t.split_once(':').unwrap_or((t, "1"));
                    Some((name.to_string(), parts.parse().ok()?))
                })
                .collect(),
        })
    }
}

impl Stack {
    pub fn new(spec: Spec) -> Result<Stack, StackError> {
        let root = root()?;
        let cache = std::env::var_os("SECKILL_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".run/cache"));
        let secure = spec.tls.then(|| secure::Secure {
            dir: spec.run.join("secure"),
        });
        Ok(Stack {
            redis: redis::Redis {
                dir: spec.run.join("redis"),
                port: spec.redis_port,
            },
            redis_cluster: redis_cluster::RedisCluster::from_env(&spec.run),
            postgres: postgres::Postgres {
                dir: spec.run.join("pg"),
                port: spec.pg_port,
            },
            kafka: kafka::Kafka {
                dir: spec.run.join("kafka"),
                cache: cache.clone(),
                port: spec.kafka_port,
                nodes: spec.kafka_nodes,
                secure: secure.clone(),
            },
            secure,
            jaeger: jaeger::Jaeger {
                dir: spec.run.join("jaeger"),
                cache: cache.clone(),
                // The TLS profile's beside the plain stack's (its query API's gRPC port
                // is the one below).
                otlp_port: var("SECKILL_OTLP_PORT", 14318u16).saturating_add(2 * spec.tls as u16),
                query_port: var("SECKILL_JAEGER_PORT", 16686u16)
                    .saturating_add(2 * spec.tls as u16),
            },
            tracing: spec.tracing,
            topics: spec.topics,
            run: spec.run,
            root,
        })
    }

    pub fn from_env() -> Result<Stack, StackError> {
        Stack::new(Spec::from_env()?)
    }

    /// The addresses every component is pointed at; on the TLS profile, with the
    /// administrator's credentials and the TLS settings (for tools and tests).
    pub fn addresses(&self) -> seckill_common::stack::Stack {
        let plain = seckill_common::stack::Stack {
            redis_url: match &self.redis_cluster {
                Some(c) => c.url(),
                None => self.redis.url(),
            },
            kafka_brokers: self.kafka.bootstrap(),
            database_url: self.postgres.url("seckill"),
            tracing_endpoint: self.traced().map(|j| j.otlp_url()).unwrap_or_default(),
            jaeger_url: self.traced().map(|j| j.query_url()).unwrap_or_default(),
            ..Default::default()
        };
        match &self.secure {
            None => plain,
            Some(s) => {
                let pw = s.password(secure::ADMIN).unwrap_or_default();
                seckill_common::stack::Stack {
                    redis_url: format!(
                        "rediss://{}:{pw}@127.0.0.1:{}",
                        secure::ADMIN,
                        self.redis.port
                    ),
                    database_url: self
                        .postgres
                        .secure_url(s, secure::ADMIN, "seckill")
                        .unwrap_or_default(),
                    redis_ca_file: s.ca().display().to_string(),
                    kafka_extra: s.kafka_extra(secure::ADMIN, true).unwrap_or_default(),
                    database_ca_file: s.ca().display().to_string(),
                    ..plain
                }
            }
        }
    }

    /// The settings a component (`user`: [`secure::GATEWAY`] or [`secure::WRITER`])
    /// gets on the TLS profile: its own users and password files, the CA; nothing on
    /// the plain stack.
    pub fn component_env(&self, user: &str) -> Result<Vec<(&'static str, String)>, StackError> {
        let Some(s) = &self.secure else {
            return Ok(vec![]);
        };
        let file = |u: &str| s.password_file(u).display().to_string();
        let mut env = vec![
            (
                "SECKILL_REDIS_URL",
                format!("rediss://{user}@127.0.0.1:{}", self.redis.port),
            ),
            ("SECKILL_REDIS_PASSWORD_FILE", file(user)),
            ("SECKILL_REDIS_CA_FILE", s.ca().display().to_string()),
            ("SECKILL_KAFKA_EXTRA", s.kafka_extra(user, false)?),
            ("SECKILL_KAFKA_PASSWORD_FILE", file(user)),
        ];
        if user == secure::WRITER {
            let url = format!(
                "postgres://{user}@127.0.0.1:{}/seckill?sslmode=verify-full",
                self.postgres.port
            );
            env.extend([
                ("SECKILL_DATABASE_URL", url),
                ("SECKILL_DATABASE_PASSWORD_FILE", file(user)),
                ("SECKILL_DATABASE_CA_FILE", s.ca().display().to_string()),
                // Its role cannot change the schema: `order-writer migrate` does, as
                // the administrator, before it starts (see `Stack::writer`).
                ("SECKILL_MIGRATE", "false".into()),
            ]);
        }
        Ok(env)
    }

    /// Start whatever is down, wait until each answers, write `<run>/stack.env`.
    /// Serialised across processes by a lock file (test binaries start in parallel).
    pub fn up(&self) -> Result<(), StackError> {
        std::fs::create_dir_all(&self.run)?;
        let _lock = Lock::take(&self.run.join("stack.lock"))?;
        if let Some(s) = &self.secure {
            s.ensure()?;
        }
        self.redis
            .up_secured(redis::Persistence::from_env(), self.secure.as_ref())?;
        if let Some(c) = &self.redis_cluster {
            c.up()?;
        }
        self.postgres.up_secured(self.secure.as_ref())?;
        self.kafka.up(&self.topics)?;
        if self.tracing {
            self.jaeger.up()?;
        }
        // The TLS profile's holds the administrator's passwords.
        secure::write_private(&self.run.join("stack.env"), &self.addresses().env_file())?;
        Ok(())
    }

    pub fn down(&self) {
        self.jaeger.down();
        self.kafka.down();
        self.postgres.down();
        self.redis.down();
        if let Some(c) = &self.redis_cluster {
            c.down();
        }
    }

    /// The collector, when this stack traces (asked to, or brought up with it before:
    /// a stack brought up with `--tracing` keeps tracing for the commands that follow,
    /// and `status` reports its collector down if it died).
    pub fn traced(&self) -> Option<&jaeger::Jaeger> {
        (self.tracing || self.jaeger.started()).then_some(&self.jaeger)
    }

    /// Stop one service cleanly (`up` starts it again).
    pub fn stop(&self, s: Service) {
        match s {
            Service::Redis => self.redis.down(),
            Service::Postgres => self.postgres.down(),
            Service::Kafka(n) => self.kafka.stop(&[n]),
            Service::RedisNode(n) => {
                if let Some(c) = &self.redis_cluster {
                    c.stop_node(n)
                }
            }
        }
    }

    /// Send a signal to one service (SIGKILL, SIGSTOP, SIGCONT).
    pub fn signal(&self, s: Service, sig: i32) -> Result<(), StackError> {
        match s {
            Service::Redis => {
                let pid = self
                    .redis
                    .pid()
                    .ok_or_else(|| StackError::Process("redis is not running".into()))?;
                process::signal(pid, sig)
            }
            Service::Postgres => Err(StackError::Process(
                "signal postgres through pg_ctl (stop) instead".into(),
            )),
            Service::Kafka(n) => self.kafka.signal(n, sig),
            Service::RedisNode(n) => self
                .redis_cluster
                .as_ref()
                .ok_or_else(|| {
                    StackError::Process("no redis cluster (SECKILL_REDIS_CLUSTER=1)".into())
                })?
                .signal(n, sig),
        }
    }

    /// One line per service: name, up or down, address.
    pub fn status(&self) -> Vec<(String, bool, String)> {
        let (redis, postgres) = match &self.secure {
            None => (self.redis.url(), self.postgres.url("seckill")),
            Some(_) => (
                format!("rediss://127.0.0.1:{} (TLS, ACL users)", self.redis.port),
                format!(
                    "postgres://127.0.0.1:{}/seckill (TLS, SCRAM roles)",
                    self.postgres.port
                ),
            ),
        };
        let mut s = vec![
            ("redis".into(), self.redis.is_up(), redis),
            ("postgres".into(), self.postgres.is_up(), postgres),
        ];
        if let Some(c) = &self.redis_cluster {
            for n in 0..c.nodes() {
                s.push((
                    format!("redis-{n}"),
                    c.node_up(n),
                    format!("127.0.0.1:{} (cluster)", c.port(n)),
                ));
            }
        }
        if let Some(j) = self.traced() {
            s.push((
                "jaeger".into(),
                j.is_up(),
                format!(
                    "{} (OTLP/HTTP), {} (query API)",
                    j.otlp_url(),
                    j.query_url()
                ),
            ));
        }
        let listed = self.kafka.brokers_listed();
        for n in 0..self.kafka.nodes {
            s.push((
                format!("kafka-{n}"),
                self.kafka.pid(n).is_some() && port_ok(self.kafka.broker_port(n)),
                format!(
                    "127.0.0.1:{} ({listed} in metadata)",
                    self.kafka.broker_port(n)
                ),
            ));
        }
        s
    }

    fn log_file(&self, name: &str) -> Result<(PathBuf, std::fs::File), StackError> {
        let dir = self.run.join("logs");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok((path, f))
    }

    /// A gateway named `name` on this stack, its two listeners on free ports (`port`,
    /// `internal_port` of the [`Proc`]), with its log, audit log and spool under the run
    /// directory; `env` adds or overrides settings. Waits until it listens on both (not
    /// until it is ready: a drill may start one with a service down).
    pub fn gateway(
        &self,
        bin: &Path,
        name: &str,
        env: &[(&str, String)],
    ) -> Result<Proc, StackError> {
        let port = process::free_port();
        // Two free ports in a row may be the same one, given back: never both listeners.
        let internal_port = std::iter::repeat_with(process::free_port)
            .find(|p| *p != port)
            .unwrap_or_default();
        let a = self.addresses();
        let own = [
            ("SECKILL_LISTEN", format!("127.0.0.1:{port}")),
            (
                "SECKILL_INTERNAL_LISTEN",
                format!("127.0.0.1:{internal_port}"),
            ),
            ("SECKILL_REDIS_URL", a.redis_url),
            ("SECKILL_KAFKA_BROKERS", a.kafka_brokers),
            (
                "SECKILL_AUDIT_LOG",
                self.run
                    .join(format!("logs/{name}-audit.jsonl"))
                    .display()
                    .to_string(),
            ),
            (
                "SECKILL_SPOOL_DIR",
                self.run.join(format!("spool/{name}")).display().to_string(),
            ),
            // Local stacks run with the development secrets; production refuses them.
            ("SECKILL_DEV_INSECURE", "1".into()),
            ("SECKILL_LOG", "info,may=warn".into()),
            ("SECKILL_TRACING_ENDPOINT", a.tracing_endpoint.clone()),
        ];
        let mut own = own.to_vec();
        own.extend(self.component_env(secure::GATEWAY)?);
        self.spawn(bin, name, (port, internal_port), &own, env)
    }

    /// An order-writer named `name` on this stack, its metrics on a free port.
    pub fn writer(
        &self,
        bin: &Path,
        name: &str,
        env: &[(&str, String)],
    ) -> Result<Proc, StackError> {
        let port = process::free_port();
        let a = self.addresses();
        let own = [
            ("SECKILL_DATABASE_URL", a.database_url),
            ("SECKILL_KAFKA_BROKERS", a.kafka_brokers),
            ("SECKILL_REDIS_URL", a.redis_url),
            ("SECKILL_METRICS_LISTEN", format!("127.0.0.1:{port}")),
            ("SECKILL_LOG", "info".into()),
            ("SECKILL_TRACING_ENDPOINT", a.tracing_endpoint.clone()),
        ];
        let mut own = own.to_vec();
        own.extend(self.component_env(secure::WRITER)?);
        if self.secure.is_some() {
            self.migrate(bin, name)?;
        }
        // Its metrics are its only listener, public and operators' alike.
        self.spawn(bin, name, (port, port), &own, env)
    }

    /// `order-writer migrate` as the administrator (the TLS profile's writer role may not
    /// change the schema), waited for.
    fn migrate(&self, bin: &Path, name: &str) -> Result<(), StackError> {
        let (log, f) = self.log_file(name)?;
        let a = self.addresses();
        let status = Command::new(bin)
            .arg("migrate")
            .current_dir(&self.run)
            .env("SECKILL_DATABASE_URL", a.database_url)
            .env("SECKILL_DATABASE_CA_FILE", a.database_ca_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .status()
            .map_err(StackError::failed(format!("{} migrate", bin.display())))?;
        if status.success() {
            Ok(())
        } else {
            Err(StackError::Start(
                "order-writer migrate",
                log.display().to_string(),
            ))
        }
    }

    /// `bin` started as `name` in the run directory with `own` settings, then `env`
    /// (which may override them), its output in its log; waits until it listens on
    /// both `ports` (public, internal).
    fn spawn(
        &self,
        bin: &Path,
        name: &str,
        (port, internal_port): (u16, u16),
        own: &[(&str, String)],
        env: &[(&str, String)],
    ) -> Result<Proc, StackError> {
        let (log, f) = self.log_file(name)?;
        let mut cmd = Command::new(bin);
        cmd.current_dir(&self.run)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f);
        for (k, v) in own.iter().chain(env) {
            cmd.env(k, v);
        }
        Proc::spawn(name, cmd, port, internal_port, &log)
    }
}

fn port_ok(port: u16) -> bool {
    process::port_open(port)
}

/// A binary of the workspace: beside the running executable (tools and drills run from
/// target/release), else in target/release.
pub fn bin(name: &str) -> Result<PathBuf, StackError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join(name)));
    let release = root()?.join("target/release").join(name);
    beside
        .into_iter()
        .chain([release])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            StackError::Missing(format!("{name} (cargo build --release --workspace --bins)"))
        })
}

/// An exclusive `flock` held until dropped.
struct Lock {
    _file: std::fs::File,
}

impl Lock {
    fn take(path: &Path) -> Result<Lock, StackError> {
        Ok(Lock {
            _file: redis_cluster::flock(path)?,
        })
    }
}

/// The stack for a test or a tool: the addresses from `stack.env` / the environment if
/// Redis and Kafka answer there; otherwise bring the local stack up (defaults and
/// `SECKILL_*` overrides) first. Panics with the reason when it cannot: for test
/// harnesses and demos, never request paths.
pub fn ensure_up() -> seckill_common::stack::Stack {
    let found = seckill_common::stack::Stack::discover();
    if seckill_common::stack::answers(&found) {
        return found;
    }
    let stack = Stack::from_env().unwrap_or_else(|e| panic!("local stack: {e}"));
    if let Err(e) = stack.up() {
        panic!("could not bring the local stack up: {e}");
    }
    stack.addresses()
}
