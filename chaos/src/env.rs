//! The drills' own stack — Redis, tansu and PostgreSQL started by `./dev` under
//! `.run/chaos` on ports of their own (so a drill can kill them without touching
//! anything else) — and the gateway and order-writer processes a drill runs on it.

use crate::ChaosError;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "chaos-ticket-secret";
pub const ADMIN: &str = "chaos-admin-token";

/// tansu 0.6 panics in its idempotence check (`idempotent_message_check`: "more or less
/// than one row") when an idempotent producer carries on after the broker restarted,
/// and its storage is dead from then on. The drills restart the broker, so their
/// producers run without idempotence (still acks=all): a duplicate in the log is
/// harmless, the writer keeps each order once by its id. Against real Kafka keep the
/// default (idempotent).
pub const TANSU_PRODUCER: &str = "enable.idempotence=false";

pub struct Env {
    /// The order topic and consumer group of the drill being run (each drill has its
    /// own, so that one drill's leftovers never slow or confuse the next).
    pub topic: std::sync::Mutex<(String, String)>,
    pub root: PathBuf,
    pub run: PathBuf,
    pub redis_port: u16,
    pub pg_port: u16,
    pub kafka_port: u16,
    bin_dir: PathBuf,
}

fn port_from(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl Env {
    /// Bring the drill stack up (idempotent).
    pub fn open() -> Result<Env, ChaosError> {
        let root = seckill_common::stack::workspace_root().ok_or_else(|| {
            ChaosError::Setup("run from inside the project (no ./dev found)".into())
        })?;
        let exe = std::env::current_exe().map_err(|e| ChaosError::Setup(e.to_string()))?;
        let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let env = Env {
            topic: std::sync::Mutex::new(("orders".into(), "order-writer".into())),
            run: std::env::var("CHAOS_RUN_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join(".run/chaos")),
            root,
            redis_port: port_from("CHAOS_REDIS_PORT", 36379),
            pg_port: port_from("CHAOS_PG_PORT", 35432),
            kafka_port: port_from("CHAOS_KAFKA_PORT", 39092),
            bin_dir,
        };
        env.up()?;
        Ok(env)
    }

    fn dev(&self, args: &[&str]) -> Result<(), ChaosError> {
        let out = Command::new(self.root.join("dev"))
            .args(args)
            .env("SECKILL_RUN_DIR", &self.run)
            .env("SECKILL_REDIS_PORT", self.redis_port.to_string())
            .env("SECKILL_PG_PORT", self.pg_port.to_string())
            .env("SECKILL_KAFKA_PORT", self.kafka_port.to_string())
            .stdout(Stdio::null())
            .output()
            .map_err(|e| ChaosError::Setup(format!("./dev {args:?}: {e}")))?;
        if !out.status.success() {
            return Err(ChaosError::Setup(format!(
                "./dev {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// A fresh order topic and consumer group for the next drill.
    pub fn fresh_topic(&self, drill: &str) -> Result<String, ChaosError> {
        let name = format!("orders_{}_{}", drill.replace('-', "_"), std::process::id());
        seckill_common::kafka::create_topic(&self.brokers(), &name, 4)
            .map_err(|e| ChaosError::Setup(format!("create topic {name}: {e}")))?;
        *self.topic.lock().unwrap_or_else(|p| p.into_inner()) =
            (name.clone(), format!("writers_{name}"));
        Ok(name)
    }

    fn topic_and_group(&self) -> (String, String) {
        self.topic.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Start whatever of the stack is down.
    pub fn up(&self) -> Result<(), ChaosError> {
        self.dev(&["up"])
    }

    /// Stop one service cleanly: `redis`, `postgres` or `tansu`.
    pub fn stop(&self, service: &str) -> Result<(), ChaosError> {
        self.dev(&["stop", service])
    }

    pub fn down(&self) -> Result<(), ChaosError> {
        self.dev(&["down"])
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }
    pub fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/seckill", self.pg_port)
    }
    pub fn stack(&self) -> seckill_common::stack::Stack {
        seckill_common::stack::Stack {
            redis_url: self.redis_url(),
            kafka_brokers: self.brokers(),
            database_url: self.database_url(),
        }
    }

    /// Send `signal` (e.g. "STOP", "CONT", "KILL") to a stack service.
    pub fn signal(&self, service: &str, signal: &str) -> Result<(), ChaosError> {
        let pidfile = match service {
            "redis" => self.run.join("redis/redis.pid"),
            "tansu" => self.run.join("tansu/tansu.pid"),
            other => return Err(ChaosError::Setup(format!("no pid file for {other}"))),
        };
        let pid = std::fs::read_to_string(&pidfile)
            .map_err(|e| ChaosError::Setup(format!("{}: {e}", pidfile.display())))?;
        kill(pid.trim(), signal)
    }

    fn bin(&self, name: &str) -> Result<PathBuf, ChaosError> {
        let p = self.bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(ChaosError::Setup(format!(
                "{} not built (cargo build --release --workspace)",
                p.display()
            )))
        }
    }

    fn log(&self, name: &str) -> Result<std::fs::File, ChaosError> {
        std::fs::create_dir_all(self.run.join("logs"))
            .map_err(|e| ChaosError::Setup(e.to_string()))?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run.join("logs").join(format!("{name}.log")))
            .map_err(|e| ChaosError::Setup(e.to_string()))
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
        let port = free_port();
        let log = self.log(name)?;
        let mut cmd = Command::new(self.bin("gateway")?);
        cmd.current_dir(&self.run)
            .env("SECKILL_LISTEN", format!("127.0.0.1:{port}"))
            .env("SECKILL_REDIS_URL", redis_url.unwrap_or(self.redis_url()))
            .env("SECKILL_KAFKA_BROKERS", self.brokers())
            .env("SECKILL_TICKET_SECRET", SECRET)
            .env("SECKILL_ADMIN_TOKEN", ADMIN)
            .env("SECKILL_CLUSTER", cluster)
            .env(
                "SECKILL_AUDIT_LOG",
                self.run.join(format!("logs/{name}-audit.jsonl")),
            )
            .env("SECKILL_SPOOL_DIR", self.run.join(format!("spool/{name}")))
            .env("SECKILL_KAFKA_TIMEOUT_MS", "3000")
            .env("SECKILL_KAFKA_EXTRA", TANSU_PRODUCER)
            .env("SECKILL_ORDERS_TOPIC", self.topic_and_group().0)
            .env("SECKILL_USER_RPS", "1000")
            .env("SECKILL_USER_BURST", "1000")
            .env("SECKILL_IP_RPS", "1000000")
            .env("SECKILL_IP_BURST", "1000000")
            .env("SECKILL_LOG", "info,may=warn")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Proc::spawn(name, cmd, port)
    }

    pub fn writer(&self, name: &str) -> Result<Proc, ChaosError> {
        let port = free_port();
        let log = self.log(name)?;
        let mut cmd = Command::new(self.bin("order-writer")?);
        cmd.current_dir(&self.run)
            .env("SECKILL_DATABASE_URL", self.database_url())
            .env("SECKILL_KAFKA_BROKERS", self.brokers())
            .env("SECKILL_REDIS_URL", self.redis_url())
            .env("SECKILL_METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .env("SECKILL_MAX_POLL_INTERVAL_MS", "10000")
            // CHAOS_WRITER_KAFKA_DEBUG=cgrp (say) puts librdkafka's debug log in the writer's log.
            .env(
                "SECKILL_KAFKA_EXTRA",
                match std::env::var("CHAOS_WRITER_KAFKA_DEBUG") {
                    Ok(d) => format!("{TANSU_PRODUCER},debug={d}"),
                    Err(_) => TANSU_PRODUCER.to_string(),
                },
            )
            .env("SECKILL_ORDERS_TOPIC", self.topic_and_group().0)
            .env("SECKILL_GROUP_ID", self.topic_and_group().1)
            .env(
                "SECKILL_LOG",
                std::env::var("CHAOS_WRITER_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        Proc::spawn(name, cmd, port)
    }

    /// `order-writer rebuild-stock`: restore lost sales from PostgreSQL and the topic.
    pub fn rebuild_stock(&self) -> Result<String, ChaosError> {
        let out = Command::new(self.bin("order-writer")?)
            .current_dir(&self.run)
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

    /// `gateway switch …` against `gw`, as an operator would type it.
    pub fn switch(&self, gw: &Proc, args: &[&str]) -> Result<String, ChaosError> {
        let out = Command::new(self.bin("gateway")?)
            .args(args)
            .args(["--url", &gw.url(), "--token", ADMIN])
            .env("USER", "chaos")
            .output();
        stdout_of(out, &format!("gateway {args:?}"))
    }
}

/// A finished command's standard output, or its standard error as the failure.
fn stdout_of(out: std::io::Result<std::process::Output>, what: &str) -> Result<String, ChaosError> {
    let out = out.map_err(|e| ChaosError::Setup(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(ChaosError::Setup(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kill(pid: &str, signal: &str) -> Result<(), ChaosError> {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), pid])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(ChaosError::Setup(format!("kill -{signal} {pid} failed")))
    }
}

/// A gateway or writer process; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub port: u16,
}

impl Proc {
    /// Start `cmd` and wait until it listens on `port`.
    fn spawn(name: &str, mut cmd: Command, port: u16) -> Result<Proc, ChaosError> {
        let child = cmd
            .spawn()
            .map_err(|e| ChaosError::Setup(format!("{name}: {e}")))?;
        let p = Proc {
            name: name.into(),
            child,
            port,
        };
        p.wait_port(Duration::from_secs(15))?;
        Ok(p)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_port(&self, within: Duration) -> Result<(), ChaosError> {
        let end = Instant::now() + within;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > end {
                return Err(ChaosError::Setup(format!(
                    "{} did not listen on {} (see .run/chaos/logs/{}.log)",
                    self.name, self.port, self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A metric's value from `/metrics` (the first sample whose name and labels match).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .new_agent();
        let text = agent
            .get(&format!("{}/metrics", self.url()))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        parse_metric(&text, name)
    }
}

pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(&self.child.id().to_string(), "TERM");
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            self.kill9();
        }
    }
}
