//! A PostgreSQL cluster on its own port with its data under `dir`. PostgreSQL refuses
//! to run as root, so its tools run as the `postgres` user when we are root.

use crate::process::port_open;
use crate::StackError;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin).
fn bin_dir() -> Result<PathBuf, StackError> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").is_file())
        .max_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        })
        .ok_or_else(|| StackError::Missing("PostgreSQL server (run ./dev setup)".into()))
}

impl Postgres {
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tool(&self, name: &str, args: &[&str]) -> Result<bool, StackError> {
        let exe = bin_dir()?.join(name);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(StackError::failed(name))?;
        if !out.status.success() {
            tracing::debug!("{name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.status.success())
    }

    pub fn is_up(&self) -> bool {
        self.data().join("postmaster.pid").is_file() && port_open(self.port)
    }

    /// initdb once, start unless up, create the `seckill` database.
    pub fn up(&self) -> Result<(), StackError> {
        let sock = self.dir.join("sock");
        std::fs::create_dir_all(&sock)?;
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(StackError::Process(format!(
                    "chown postgres {}",
                    self.dir.display()
                )));
            }
        }
        let data = self.data().display().to_string();
        let log = self.dir.join("postgres.log").display().to_string();
        if !self.data().join("PG_VERSION").is_file()
            && !self.tool(
                "initdb",
                &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            )?
        {
            return Err(StackError::Start("postgres initdb", data));
        }
        if !self.is_up() {
            if port_open(self.port) {
                return Err(StackError::PortTaken(self.port, "postgres"));
            }
            let opts = format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=200 -c fsync=on",
                self.port,
                sock.display()
            );
            if !self.tool(
                "pg_ctl",
                &[
                    "-D", &data, "-l", &log, "-w", "-t", "30", "-o", &opts, "start",
                ],
            )? {
                return Err(StackError::Start("postgres", log));
            }
        }
        self.create_db("seckill")
    }

    fn create_db(&self, name: &str) -> Result<(), StackError> {
        let psql = |sql: &str| {
            Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-d", "postgres", "-tAc", sql])
                .output()
                .map_err(StackError::tool("psql"))
        };
        let have = psql(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{name}'"
        ))?;
        if String::from_utf8_lossy(&have.stdout).trim() == "1" {
            return Ok(());
        }
        let made = psql(&format!("CREATE DATABASE {name}"))?;
        if made.status.success() || String::from_utf8_lossy(&made.stderr).contains("already exists")
        {
            Ok(())
        } else {
            Err(StackError::Process(format!(
                "create database {name}: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            )))
        }
    }

    /// A clean, fast stop (`pg_ctl -m fast`).
    pub fn down(&self) {
        if self.data().join("postmaster.pid").is_file() {
            let data = self.data().display().to_string();
            let _ = self.tool("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        }
    }

    /// Crash-stop (`pg_ctl -m immediate`): no checkpoint, as a power cut.
    pub fn crash(&self) {
        let data = self.data().display().to_string();
        let _ = self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
