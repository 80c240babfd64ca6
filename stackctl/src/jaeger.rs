//! Jaeger (v1.75.0, the OpenTelemetry-collector-based `jaeger` binary) as the local
//! stack's trace collector: OTLP/HTTP in, traces kept in memory, the query API out.
//!
//! Built once from the Go module proxy into the cache (`stackctl/jaeger/go.mod` pins it,
//! with `go.sum`), like Kafka's jars from Maven Central. Started by `stackctl up` when
//! `SECKILL_TRACING=1` (`stackctl up --tracing`), on 127.0.0.1 only: OTLP/HTTP on
//! `SECKILL_OTLP_PORT` (14318), the query API on `SECKILL_JAEGER_PORT` (16686).

use crate::process::{self, port_open, wait_until};
use crate::StackError;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The pinned release (the `tool` line of `stackctl/jaeger/go.mod`).
pub const VERSION: &str = "v1.75.0";
const GO_MOD: &str = include_str!("../jaeger/go.mod");
const GO_SUM: &str = include_str!("../jaeger/go.sum");

pub struct Jaeger {
    pub dir: PathBuf,
    pub cache: PathBuf,
    /// OTLP/HTTP receiver.
    pub otlp_port: u16,
    /// Query API (`/api/traces/{id}`, `/api/services`).
    pub query_port: u16,
}

impl Jaeger {
    /// Where components send spans.
    pub fn otlp_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_port)
    }

    /// Jaeger's query API.
    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.query_port)
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("jaeger.pid")
    }

    /// Its pid while the process runs: a live pid whose command line names this stack's
    /// configuration file (a reused pid is not taken for it).
    pub fn pid(&self) -> Option<i32> {
        process::running_as(&self.pidfile(), &self.config_path().display().to_string())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// Whether this stack was brought up with its collector: the pid file `up` writes
    /// and `down` removes (alive or not: a dead collector is reported down, not hidden).
    pub fn started(&self) -> bool {
        self.pidfile().is_file()
    }

    pub fn is_up(&self) -> bool {
        self.pid().is_some() && port_open(self.otlp_port) && port_open(self.query_port)
    }

    /// The `jaeger` binary, built the first time with `go build` from the pinned module
    /// (the Go module proxy; a few minutes on two cores).
    pub fn binary(&self) -> Result<PathBuf, StackError> {
        let home = self.cache.join(format!("jaeger-{VERSION}"));
        let bin = home.join("jaeger");
        // The marker holds the pin's hash: a changed go.mod or go.sum builds again.
        let pin = format!(
            "{:016x}\n",
            crate::kafka::fnv1a(format!("{GO_MOD}{GO_SUM}").as_bytes())
        );
        if std::fs::read_to_string(home.join("complete")).is_ok_and(|c| c == pin) && bin.is_file() {
            return Ok(bin);
        }
        let module = home.join("module");
        std::fs::create_dir_all(&module)?;
        std::fs::write(module.join("go.mod"), GO_MOD)?;
        std::fs::write(module.join("go.sum"), GO_SUM)?;
        tracing::info!(
            "building Jaeger {VERSION} from the Go module proxy into {} (once)",
            home.display()
        );
        // A name of this process's own: two builds at once never write one file.
        let partial = home.join(format!("jaeger.partial.{}", std::process::id()));
        let out = Command::new("go")
            .current_dir(&module)
            .args(["build", "-trimpath", "-o"])
            .arg(&partial)
            .arg("github.com/jaegertracing/jaeger/cmd/jaeger")
            // The module's go.sum is the pin: never rewrite it, never fetch another Go.
            .env("GOFLAGS", "-mod=readonly")
            .env("GOTOOLCHAIN", "local")
            .stdin(Stdio::null())
            .output()
            .map_err(StackError::tool("go"))?;
        if !out.status.success() {
            return Err(StackError::Fetch(format!(
                "go build of Jaeger {VERSION} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        std::fs::rename(&partial, &bin)?;
        std::fs::write(home.join("complete"), pin)?;
        Ok(bin)
    }

    /// The collector's configuration: OTLP/HTTP in, memory storage (the newest 50,000
    /// traces), the query API; nothing else listens.
    fn config(&self) -> String {
        format!(
            "# Written by stackctl on every start; edit stackctl/src/jaeger.rs instead.\n\
             service:\n  extensions: [jaeger_storage, jaeger_query]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [jaeger_storage_exporter]\n  telemetry:\n    metrics:\n      level: none\n    logs:\n      level: warn\n\
             extensions:\n  jaeger_query:\n    storage:\n      traces: mem\n    http:\n      endpoint: 127.0.0.1:{query}\n    grpc:\n      endpoint: 127.0.0.1:{grpc}\n  jaeger_storage:\n    backends:\n      mem:\n        memory:\n          max_traces: 50000\n\
             receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{otlp}\n\
             processors:\n  batch:\n    timeout: 200ms\n\
             exporters:\n  jaeger_storage_exporter:\n    trace_storage: mem\n",
            query = self.query_port,
            grpc = self.query_port.saturating_sub(1),
            otlp = self.otlp_port,
        )
    }

    /// Start it unless it runs; wait until both ports answer.
    pub fn up(&self) -> Result<(), StackError> {
        if self.is_up() {
            return Ok(());
        }
        if self.pid().is_some() {
            // Started and still coming up (an earlier `up` that gave up waiting): wait
            // for it rather than start a second one.
            if wait_until(Duration::from_secs(60), || self.is_up()) {
                return Ok(());
            }
            return Err(StackError::Start(
                "jaeger",
                self.log().display().to_string(),
            ));
        }
        for port in [self.otlp_port, self.query_port] {
            if port_open(port) && self.pid().is_none() {
                return Err(StackError::PortTaken(port, "jaeger"));
            }
        }
        let bin = self.binary()?;
        std::fs::create_dir_all(&self.dir)?;
        let config = self.config_path();
        std::fs::write(&config, self.config())?;
        let log = std::fs::File::create(self.log())?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = process::detach(&mut cmd)
            .spawn()
            .map_err(StackError::failed("jaeger"))?;
        std::fs::write(self.pidfile(), child.id().to_string())?;
        process::reap(child);
        if !wait_until(Duration::from_secs(60), || self.is_up()) {
            return Err(StackError::Start(
                "jaeger",
                self.log().display().to_string(),
            ));
        }
        Ok(())
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("jaeger.log")
    }

    pub fn down(&self) {
        if let Some(pid) = self.pid() {
            process::terminate(pid, Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(self.pidfile());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_module_names_the_pinned_release() {
        assert!(GO_MOD.contains(&format!("github.com/jaegertracing/jaeger {VERSION}")));
        assert!(GO_MOD.contains("tool github.com/jaegertracing/jaeger/cmd/jaeger"));
    }

    #[test]
    fn the_collector_listens_on_loopback_only() {
        let j = Jaeger {
            dir: "/d".into(),
            cache: "/c".into(),
            otlp_port: 14318,
            query_port: 16686,
        };
        let c = j.config();
        assert!(c.contains("endpoint: 127.0.0.1:14318"));
        assert!(c.contains("endpoint: 127.0.0.1:16686"));
        assert_eq!(c.matches("endpoint:").count(), 3);
        assert_eq!(c.matches("127.0.0.1:").count(), 3);
    }
}
