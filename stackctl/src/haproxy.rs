//! The load balancer: HAProxy (Debian package `haproxy`, from `./dev setup`) in front of
//! gateways, as a child process with its configuration, state, admin socket and log
//! under `<run>/haproxy/<name>/` on a port of its own (no systemd).
//!
//! - Every gateway is health-checked on `GET /readyz` every 250 ms (down after 2 failed
//!   checks, up after 2 good ones); a connection the gateway refuses is retried on
//!   another one (`retries 3`, `option redispatch`), so a dead gateway costs only the
//!   requests it held.
//! - Connections to the gateways start with a PROXY protocol v2 header
//!   (`send-proxy-v2`): the gateways (`trusted_proxies` = the balancer's address) see
//!   each buyer's address for their per-IP limits.
//! - Two pools: `stable` and `canary`. A request goes to the canary pool when it carries
//!   `X-Canary: 1`, or when its user is in the canary share — sticky by user: the user
//!   id of the `Authorization: Ticket <user>.<expires>.<sig>` value, CRC32'd, modulo
//!   1000 ([`bucket`]), below the share in per mille. Both numbers live in a map file
//!   (`canary.map`) that [`Balancer::set_canary`] rewrites and applies at run time over
//!   the admin socket (`set map`): no reload, no connection dropped. A canary pool with
//!   no gateway up sends everyone to `stable`. The pool that answered is in the response
//!   header `X-Seckill-Pool`.
//! - [`Balancer::reload`] (new backend lists) is HAProxy's graceful master-worker reload
//!   (SIGUSR2): the old worker finishes its connections.

use crate::process::{self, wait_until};
use crate::StackError;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What the balancer routes: its port, the two pools, and the canary switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub port: u16,
    /// `host:port` of each gateway.
    pub stable: Vec<String>,
    pub canary: Vec<String>,
    /// Users (by [`bucket`]) sent to the canary pool, in per mille (0..=1000).
    pub canary_permille: u32,
    /// Whether `X-Canary: 1` requests go to the canary pool.
    pub canary_header: bool,
}

impl Plan {
    fn to_state(&self) -> String {
        format!(
            "port={}\nstable={}\ncanary={}\ncanary_permille={}\ncanary_header={}\n",
            self.port,
            self.stable.join(","),
            self.canary.join(","),
            self.canary_permille,
            self.canary_header as u8
        )
    }

    fn from_state(text: &str) -> Result<Plan, StackError> {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .map(str::trim)
                .ok_or_else(|| StackError::Process(format!("balancer state without {k}")))
        };
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let num = |k: &str| -> Result<u32, StackError> {
            get(k)?
                .parse()
                .map_err(|_| StackError::Process(format!("balancer state: bad {k}")))
        };
        Ok(Plan {
            port: num("port")? as u16,
            stable: list(get("stable")?),
            canary: list(get("canary")?),
            canary_permille: num("canary_permille")?.min(1000),
            canary_header: get("canary_header")? == "1",
        })
    }
}

/// The canary bucket (0..1000) of a user id, as HAProxy computes it from the ticket:
/// `crc32` of the decimal id (CRC-32/IEEE, HAProxy's `crc32` converter without
/// avalanche), modulo 1000.
pub fn bucket(user: u64) -> u32 {
    crc32(user.to_string().as_bytes()) % 1000
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A share (0.0..=1.0, or "10%") as per mille.
pub fn parse_share(s: &str) -> Result<u32, StackError> {
    let s = s.trim();
    let v: f64 = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse(),
    }
    .map_err(|_| StackError::Process(format!("share {s:?}: a number in 0..1 or a percentage")))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(StackError::Process(format!("share {s:?} is outside 0..1")));
    }
    Ok((v * 1000.0).round() as u32)
}

/// One HAProxy, named, under `<run>/haproxy/<name>/`.
pub struct Balancer {
    pub dir: PathBuf,
    /// Stop HAProxy when this handle is dropped (false for one started from the CLI).
    pub stop_on_drop: bool,
}

impl Balancer {
    pub fn new(run: &Path, name: &str) -> Balancer {
        Balancer {
            dir: run.join("haproxy").join(name),
            stop_on_drop: false,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }
    pub fn map_path(&self) -> PathBuf {
        self.dir.join("canary.map")
    }
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("haproxy.log")
    }
    fn state_path(&self) -> PathBuf {
        self.dir.join("balancer.state")
    }
    fn pid_path(&self) -> PathBuf {
        self.dir.join("haproxy.pid")
    }

    /// The master process's pid, if it runs.
    pub fn pid(&self) -> Option<i32> {
        process::running_as(&self.pid_path(), "haproxy")
    }

    pub fn is_up(&self) -> bool {
        self.pid().is_some()
    }

    /// The plan last written (by `start`, `reload` or `set_canary`).
    pub fn plan(&self) -> Result<Plan, StackError> {
        let text = std::fs::read_to_string(self.state_path()).map_err(|source| {
            StackError::NoBalancer {
                dir: self.dir.clone(),
                source,
            }
        })?;
        Plan::from_state(&text)
    }

    pub fn url(&self) -> Result<String, StackError> {
        Ok(format!("http://127.0.0.1:{}", self.plan()?.port))
    }

    /// The HAProxy configuration for `plan`.
    pub fn render(&self, plan: &Plan) -> String {
        let map = self.map_path().display().to_string();
        let server = |pool: &str, i: usize, addr: &str| {
            format!("    server {pool}{i} {addr} check send-proxy-v2\n")
        };
        let stable: String = plan
            .stable
            .iter()
            .enumerate()
            .map(|(i, a)| server("gw", i, a))
            .collect();
        let canary: String = plan
            .canary
            .iter()
            .enumerate()
            .map(|(i, a)| server("canary", i, a))
            .collect();
        format!(
            "# Written by stackctl (stackctl/src/haproxy.rs); `stackctl balancer reload` rewrites it.
global
    stats socket {sock} mode 600 level admin
    maxconn 4000

defaults
    mode http
    log global
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    retries 3
    option redispatch 1
    default-server inter 250ms fastinter 250ms downinter 500ms fall 2 rise 2

frontend seckill
    bind 127.0.0.1:{port}
    # Sticky canary share: the ticket's user id, crc32, modulo 1000 (stackctl::haproxy::bucket).
    http-request set-var(txn.bucket) req.hdr(authorization),word(2,' '),word(1,'.'),crc32,mod(1000) if {{ req.hdr(authorization) -m beg -i \"ticket \" }}
    http-request set-var(txn.share) str(share),map_str_int({map},0)
    http-request set-var(txn.header_on) str(header),map_str_int({map},0)
    acl canary_up nbsrv(canary) gt 0
    acl canary_header req.hdr(x-canary) -m str 1
    acl header_on var(txn.header_on) -m int eq 1
    acl has_bucket var(txn.bucket) -m found
    acl canary_user var(txn.bucket),sub(txn.share) -m int lt 0
    use_backend canary if canary_up header_on canary_header
    use_backend canary if canary_up has_bucket canary_user
    default_backend stable
    http-response set-header X-Seckill-Pool %[be_name]

backend stable
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{stable}
backend canary
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{canary}",
            sock = self.socket_path().display(),
            port = plan.port,
        )
    }

    fn map_text(plan: &Plan) -> String {
        format!(
            "share {}\nheader {}\n",
            plan.canary_permille, plan.canary_header as u8
        )
    }

    /// Write the configuration, map and state of `plan`, and check the configuration
    /// with `haproxy -c`.
    fn write(&self, plan: &Plan) -> Result<(), StackError> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(self.map_path(), Self::map_text(plan))?;
        let cfg = self.config_path();
        let tmp = self.dir.join("haproxy.cfg.new");
        std::fs::write(&tmp, self.render(plan))?;
        let out = Command::new(haproxy_bin()?)
            .args(["-c", "-q", "-f"])
            .arg(&tmp)
            .output()?;
        if !out.status.success() {
            return Err(StackError::Process(format!(
                "haproxy -c refused the configuration {}: {}",
                tmp.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::rename(&tmp, &cfg)?;
        std::fs::write(self.state_path(), plan.to_state())?;
        Ok(())
    }

    /// Start HAProxy for `plan` (stopping one this directory already runs) and wait
    /// until it listens; with `wait_healthy`, also until every gateway of the plan is
    /// up in its health checks (at most 20 s).
    pub fn start(&self, plan: &Plan, wait_healthy: bool) -> Result<(), StackError> {
        self.stop();
        if process::port_open(plan.port) {
            return Err(StackError::PortTaken(plan.port, "the balancer"));
        }
        self.write(plan)?;
        let _ = std::fs::remove_file(self.socket_path());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(haproxy_bin()?);
        cmd.arg("-W")
            .arg("-f")
            .arg(self.config_path())
            .arg("-p")
            .arg(self.pid_path())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        process::detach(&mut cmd);
        let child = cmd.spawn().map_err(StackError::failed("start haproxy"))?;
        let pid = child.id() as i32;
        std::fs::write(self.pid_path(), pid.to_string())?;
        process::reap(child);
        let listening = wait_until(Duration::from_secs(10), || {
            process::port_open(plan.port) && self.socket_path().exists() || !process::alive(pid)
        });
        if !listening || !process::alive(pid) {
            return Err(StackError::Start(
                "haproxy",
                self.log_path().display().to_string(),
            ));
        }
        if wait_healthy {
            let want = plan.stable.len() + plan.canary.len();
            let all = wait_until(Duration::from_secs(20), || {
                self.servers()
                    .is_ok_and(|s| s.iter().filter(|s| s.up).count() == want)
            });
            if !all {
                return Err(StackError::Process(format!(
                    "not every gateway passed its /readyz check within 20 s: {:?}",
                    self.servers().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// Graceful reload with `plan` (new backend lists): HAProxy's master starts a new
    /// worker on the new configuration, the old one finishes its connections.
    pub fn reload(&self, plan: &Plan) -> Result<(), StackError> {
        let pid = self
            .pid()
            .ok_or_else(|| StackError::Process("the balancer is not running".into()))?;
        self.write(plan)?;
        process::signal(pid, libc::SIGUSR2)
    }

    /// Stop HAProxy (SIGTERM to the master, SIGKILL after 5 s).
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            process::terminate(pid, Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(self.pid_path());
    }

    /// Set the canary share (per mille) and whether `X-Canary: 1` is honoured: written
    /// to the map file and state (kept across restarts and reloads), and applied to the
    /// running HAProxy over its admin socket at once (no reload). Returns the plan now
    /// in force.
    pub fn set_canary(&self, permille: u32, header: bool) -> Result<Plan, StackError> {
        let mut plan = self.plan()?;
        plan.canary_permille = permille.min(1000);
        plan.canary_header = header;
        std::fs::write(self.map_path(), Self::map_text(&plan))?;
        std::fs::write(self.state_path(), plan.to_state())?;
        if self.is_up() {
            let map = self.map_path().display().to_string();
            for (k, v) in [("share", plan.canary_permille), ("header", header as u32)] {
                let out = self.command(&format!("set map {map} {k} {v}"))?;
                if !out.trim().is_empty() {
                    return Err(StackError::Process(format!(
                        "haproxy: set map {k}: {}",
                        out.trim()
                    )));
                }
            }
            // Read back what HAProxy now uses.
            let shown = self.command(&format!("show map {map}"))?;
            let want = format!("share {}", plan.canary_permille);
            if !shown.lines().any(|l| l.ends_with(&want)) {
                return Err(StackError::Process(format!(
                    "haproxy did not take the new share: {shown}"
                )));
            }
        }
        Ok(plan)
    }

    /// One command over the admin socket; its answer.
    pub fn command(&self, cmd: &str) -> Result<String, StackError> {
        let mut s = std::os::unix::net::UnixStream::connect(self.socket_path()).map_err(
            StackError::failed(format!("admin socket {}", self.socket_path().display())),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.set_write_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(format!("{cmd}\n").as_bytes())?;
        let mut out = String::new();
        s.take(1 << 20).read_to_string(&mut out)?;
        Ok(out)
    }

    /// Every server of both pools and whether its health check says it is up.
    pub fn servers(&self) -> Result<Vec<Server>, StackError> {
        let csv = self.command("show stat")?;
        let mut header: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for line in csv.lines() {
            if let Some(h) = line.strip_prefix("# ") {
                header = h.split(',').map(String::from).collect();
                continue;
            }
            let f: Vec<&str> = line.split(',').collect();
            let col = |name: &str| {
                header
                    .iter()
                    .position(|h| h == name)
                    .and_then(|i| f.get(i).copied())
            };
            let (Some(pool), Some(name), Some(status)) =
                (col("pxname"), col("svname"), col("status"))
            else {
                continue;
            };
            if name == "FRONTEND" || name == "BACKEND" || pool == "seckill" {
                continue;
            }
            out.push(Server {
                pool: pool.to_string(),
                name: name.to_string(),
                address: col("addr").unwrap_or("").to_string(),
                up: status.starts_with("UP"),
                status: status.to_string(),
            });
        }
        Ok(out)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if self.stop_on_drop {
            self.stop();
        }
    }
}

/// One gateway as HAProxy's health checks see it.
#[derive(Debug, Clone, Default)]
pub struct Server {
    pub pool: String,
    pub name: String,
    pub address: String,
    pub up: bool,
    /// HAProxy's word: UP, DOWN, "UP 1/2" (going down), MAINT …
    pub status: String,
}

/// The `haproxy` executable (`./dev setup` installs the Debian package).
pub fn haproxy_bin() -> Result<PathBuf, StackError> {
    [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .ok_or_else(|| StackError::Missing("haproxy (./dev setup installs it)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn shares_and_state_round_trip() {
        assert_eq!(parse_share("0.1").unwrap(), 100);
        assert_eq!(parse_share("25%").unwrap(), 250);
        assert_eq!(parse_share("1").unwrap(), 1000);
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("-0.1").is_err());
        assert!(parse_share("x").is_err());
        let p = Plan {
            port: 8000,
            stable: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            canary: vec![],
            canary_permille: 50,
            canary_header: true,
        };
        assert_eq!(Plan::from_state(&p.to_state()).unwrap(), p);
    }

    #[test]
    fn buckets_spread_users() {
        let in_tenth = (1..=10_000u64).filter(|u| bucket(*u) < 100).count();
        assert!(
            (700..1300).contains(&in_tenth),
            "{in_tenth} of 10000 users in a 10% share"
        );
    }
}
