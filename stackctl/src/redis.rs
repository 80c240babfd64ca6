//! A `redis-server` on its own port with its files under `dir`; nothing persisted
//! (the drills that lose Redis's data rely on that).

use crate::process::{self, port_open, wait_until};
use crate::StackError;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Redis {
    pub dir: PathBuf,
    pub port: u16,
}

impl Redis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    pub fn pid(&self) -> Option<i32> {
        process::running_as(&self.pidfile(), "redis-server")
    }

    pub fn is_up(&self) -> bool {
        self.pid().is_some() && port_open(self.port)
    }

    /// Start it unless it is up (idempotent); refuse a port some other process holds.
    pub fn up(&self) -> Result<(), StackError> {
        if self.is_up() {
            return Ok(());
        }
        if port_open(self.port) {
            return Err(StackError::PortTaken(self.port, "redis"));
        }
        std::fs::create_dir_all(&self.dir)?;
        let status = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .args(["--maxclients", "10000"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.pidfile())
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .status()
            .map_err(|e| StackError::Missing(format!("redis-server ({e}); run ./dev setup")))?;
        if !status.success() || !wait_until(Duration::from_secs(10), || self.is_up()) {
            return Err(StackError::Start(
                "redis",
                self.dir.join("redis.log").display().to_string(),
            ));
        }
        Ok(())
    }

    pub fn down(&self) {
        if let Some(pid) = self.pid() {
            process::terminate(pid, Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(self.pidfile());
    }
}
