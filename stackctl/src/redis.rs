//! A `redis-server` on its own port with its files under `dir`. By default nothing is
//! persisted (the drills that lose Redis's data rely on that); [`Persistence::AppendOnly`]
//! runs it with an append-only file fsync'd every second (`SECKILL_REDIS_APPENDONLY=1`
//! for the stack's Redis, or [`Redis::up_with`]).
//!
//! For the drill that loses an AOF's tail: [`AofSampler`] follows the size of the newest
//! incremental AOF file (Redis 7's multi-part AOF: `appendonlydir/*.incr.aof`, named by
//! the manifest) while load runs, and [`Redis::crash_losing_tail`] `kill -9`s Redis and
//! cuts that file back to the size it had a while before the kill — what an OS crash does
//! to writes still in the page cache under `appendfsync everysec`.

use crate::process::{self, port_open, wait_until};
use crate::secure::Secure;
use crate::StackError;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Redis {
    pub dir: PathBuf,
    pub port: u16,
}

/// How a Redis keeps its data across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Persistence {
    /// Nothing (`--save "" --appendonly no`): a restart starts empty.
    #[default]
    None,
    /// `--appendonly yes --appendfsync everysec --aof-load-truncated yes` (no RDB
    /// snapshots): a restart replays the AOF; a crash of the OS may lose its last second,
    /// and a file cut mid-command is loaded up to its last whole command.
    AppendOnly,
}

impl Persistence {
    /// `SECKILL_REDIS_APPENDONLY` = 1/yes/true/on: [`Persistence::AppendOnly`].
    pub fn from_env() -> Persistence {
        match std::env::var("SECKILL_REDIS_APPENDONLY")
            .as_deref()
            .map(str::trim)
        {
            Ok("1" | "yes" | "true" | "on") => Persistence::AppendOnly,
            _ => Persistence::None,
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Persistence::None => &["--save", "", "--appendonly", "no"],
            Persistence::AppendOnly => &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--aof-load-truncated",
                "yes",
            ],
        }
    }
}

impl Redis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    pub fn pid(&self) -> Option<i32> {
        process::running_as(&self.pidfile(), "redis-server")
    }

    pub fn is_up(&self) -> bool {
        self.pid().is_some() && port_open(self.port)
    }

    /// Start it unless it is up (idempotent), nothing persisted; refuse a port some
    /// other process holds.
    pub fn up(&self) -> Result<(), StackError> {
        self.up_with(Persistence::None)
    }

    /// [`Redis::up`] with the given persistence (a Redis already up is left as it is).
    pub fn up_with(&self, persistence: Persistence) -> Result<(), StackError> {
        self.up_secured(persistence, None)
    }

    /// [`Redis::up_with`], over TLS only with the profile's ACL users when `secure`.
    pub fn up_secured(
        &self,
        persistence: Persistence,
        secure: Option<&Secure>,
    ) -> Result<(), StackError> {
        if self.is_up() {
            return Ok(());
        }
        // A Redis just killed may leave a forked child (an AOF rewrite) holding the
        // listening socket for a moment: give the port a few seconds to close.
        if port_open(self.port) && !wait_until(Duration::from_secs(5), || !port_open(self.port)) {
            return Err(StackError::PortTaken(self.port, "redis"));
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut cmd = Command::new("redis-server");
        match secure {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some(s) => {
                let acl = self.dir.join("users.acl");
                crate::secure::write_private(&acl, &s.redis_acl()?)?;
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(s.server_cert())
                    .arg("--tls-key-file")
                    .arg(s.server_key())
                    .arg("--tls-ca-cert-file")
                    .arg(s.ca())
                    // A client certificate is not required (the password is).
                    .args(["--tls-auth-clients", "optional"])
                    .arg("--aclfile")
                    .arg(acl)
            }
        };
        let status = cmd
            .args(["--bind", "127.0.0.1"])
            .args(persistence.args())
            .args(["--daemonize", "yes"])
            .args(["--maxclients", "10000"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.pidfile())
            .arg("--logfile")
            .arg(self.log())
            .stdout(Stdio::null())
            .status()
            .map_err(StackError::tool("redis-server"))?;
        if !status.success() || !wait_until(Duration::from_secs(10), || self.is_up()) {
            return Err(StackError::Start("redis", self.log().display().to_string()));
        }
        // Up once it answers: a Redis loading its append-only file listens already but
        // answers `LOADING` until the data is in memory.
        let answering = || match secure {
            None => answers(self.port),
            Some(s) => answers_tls(self.port, s),
        };
        if !wait_until(Duration::from_secs(30), answering) {
            return Err(StackError::Start("redis", self.log().display().to_string()));
        }
        Ok(())
    }

    pub fn down(&self) {
        if let Some(pid) = self.pid() {
            process::terminate(pid, Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(self.pidfile());
    }

    /// The server's `run_id` (`INFO server`): a new one for every process.
    pub fn run_id(&self) -> Option<String> {
        run_id(self.port)
    }

    /// The append-only directory (Redis 7's default `appenddirname`).
    pub fn aof_dir(&self) -> PathBuf {
        self.dir.join("appendonlydir")
    }

    /// `kill -9` this Redis, then cut its newest incremental AOF back to the size it had
    /// `lost` before the kill (as `sampler` saw it): the writes an OS crash would have
    /// taken from the page cache with `appendfsync everysec` (up to a second of them, two
    /// in the worst case). The next start loads what is left (`aof-load-truncated yes`
    /// drops a command cut in half).
    pub fn crash_losing_tail(
        &self,
        sampler: &AofSampler,
        lost: Duration,
    ) -> Result<AofCut, StackError> {
        let pid = self
            .pid()
            .ok_or_else(|| StackError::Process("redis is not running".into()))?;
        process::signal(pid, libc::SIGKILL)?;
        let at = Instant::now();
        if !wait_until(Duration::from_secs(5), || !process::alive(pid)) {
            return Err(StackError::Process(format!(
                "redis {pid} did not die on SIGKILL"
            )));
        }
        sampler.cut(at, lost)
    }
}

/// `run_id` from `INFO server` of the Redis at `port`.
/// The Redis on `port` answers `PING` (not `LOADING`, not an error).
pub fn answers(port: u16) -> bool {
    crate::redis_cluster::query(port, &["PING"], Duration::from_secs(1)).is_ok_and(|r| r == "PONG")
}

/// The TLS profile's Redis on `port` answers `PING` to its administrator (`redis-cli`
/// over TLS).
pub fn answers_tls(port: u16, secure: &Secure) -> bool {
    let Ok(password) = secure.password(crate::secure::ADMIN) else {
        return false;
    };
    Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(secure.ca())
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--user",
            crate::secure::ADMIN,
        ])
        .args(["--no-auth-warning", "PING"])
        .env("REDISCLI_AUTH", password)
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}

pub fn run_id(port: u16) -> Option<String> {
    let info =
        crate::redis_cluster::query(port, &["INFO", "server"], Duration::from_secs(2)).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|v| v.trim().to_string())
}

/// The incremental AOF file Redis appends to now: of the manifest's `type i` files (Redis
/// 7 multi-part AOF), the one with the highest `seq`.
pub fn newest_incr_aof(aof_dir: &Path) -> Option<PathBuf> {
    let manifest = std::fs::read_dir(aof_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "manifest"))?;
    let text = std::fs::read_to_string(manifest).ok()?;
    newest_incr_in_manifest(&text).map(|f| aof_dir.join(f))
}

/// The `type i` file with the highest `seq` in a manifest's text
/// (`file appendonly.aof.1.incr.aof seq 1 type i`, keys in any order).
pub fn newest_incr_in_manifest(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let get = |k: &str| {
                f.chunks(2)
                    .find(|c| c.len() == 2 && c[0] == k)
                    .map(|c| c[1])
            };
            (get("type")? == "i").then_some(())?;
            Some((get("seq")?.parse::<u64>().ok()?, get("file")?.to_string()))
        })
        .max_by_key(|(seq, _)| *seq)
        .map(|(_, f)| f)
}

/// What [`Redis::crash_losing_tail`] cut.
#[derive(Debug, Clone)]
pub struct AofCut {
    pub file: PathBuf,
    /// Its size at the kill.
    pub from: u64,
    /// Its size after the cut.
    pub to: u64,
    /// How long before the kill the file had that size (the sample used).
    pub before_kill: Duration,
}

impl AofCut {
    pub fn bytes_lost(&self) -> u64 {
        self.from.saturating_sub(self.to)
    }
}

/// One sample: when, which file was the newest incremental AOF, its size.
type Sample = (Instant, PathBuf, u64);

/// Follows the size of the newest incremental AOF file of a Redis directory every
/// `every`, keeping the last `keep` of history, until stopped (or dropped) or `max` has
/// passed.
pub struct AofSampler {
    aof_dir: PathBuf,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<VecDeque<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AofSampler {
    pub fn start(redis: &Redis, every: Duration, keep: Duration, max: Duration) -> AofSampler {
        let aof_dir = redis.aof_dir();
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(VecDeque::new()));
        let thread = {
            let (dir, stop, history) = (aof_dir.clone(), stop.clone(), history.clone());
            std::thread::spawn(move || {
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) && t0.elapsed() < max {
                    if let Some(f) = newest_incr_aof(&dir) {
                        if let Ok(m) = std::fs::metadata(&f) {
                            let now = Instant::now();
                            let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
                            h.push_back((now, f, m.len()));
                            while h.front().is_some_and(|s| now.duration_since(s.0) > keep) {
                                h.pop_front();
                            }
                        }
                    }
                    std::thread::sleep(every);
                }
            })
        };
        AofSampler {
            aof_dir,
            stop,
            history,
            thread: Some(thread),
        }
    }

    /// Samples taken so far (within the history kept).
    pub fn samples(&self) -> usize {
        self.history.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Cut the newest incremental AOF back to its size `lost` before `at` (the newest
    /// sample at or before then). Redis must not be running. If the newest file is not
    /// the one sampled then (a rewrite started a new one since), all of the new file is
    /// newer: it is cut to nothing, and the sampled one to its size then.
    pub fn cut(&self, at: Instant, lost: Duration) -> Result<AofCut, StackError> {
        let target = at.checked_sub(lost).unwrap_or(at);
        let sample = {
            let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            h.iter().rev().find(|s| s.0 <= target).cloned()
        };
        let (when, sampled, size) = sample.ok_or_else(|| {
            StackError::Process(format!(
                "no AOF size sampled {} ms before the kill (sampler started too late?)",
                lost.as_millis()
            ))
        })?;
        let newest = newest_incr_aof(&self.aof_dir).ok_or_else(|| {
            StackError::Process(format!("no incremental AOF in {}", self.aof_dir.display()))
        })?;
        let from = std::fs::metadata(&newest)?.len();
        let to = if newest == sampled { size.min(from) } else { 0 };
        if newest != sampled && sampled.exists() {
            let old = std::fs::metadata(&sampled)?.len();
            truncate(&sampled, size.min(old))?;
        }
        truncate(&newest, to)?;
        Ok(AofCut {
            file: newest,
            from,
            to,
            before_kill: at.saturating_duration_since(when),
        })
    }
}

fn truncate(file: &Path, len: u64) -> Result<(), StackError> {
    let f = std::fs::OpenOptions::new().write(true).open(file)?;
    f.set_len(len)?;
    f.sync_all()?;
    Ok(())
}

impl Drop for AofSampler {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_incremental_file_is_the_highest_seq_of_type_i() {
        let text = "file appendonly.aof.2.base.rdb seq 2 type b\n\
                    file appendonly.aof.3.incr.aof seq 3 type i\n\
                    file appendonly.aof.4.incr.aof seq 4 type i\n\
                    file appendonly.aof.1.incr.aof seq 1 type h\n";
        assert_eq!(
            newest_incr_in_manifest(text).as_deref(),
            Some("appendonly.aof.4.incr.aof")
        );
        assert_eq!(newest_incr_in_manifest("file a seq 1 type b\n"), None);
    }

    #[test]
    fn persistence_args() {
        assert!(Persistence::AppendOnly
            .args()
            .windows(2)
            .any(|w| w == ["--appendfsync", "everysec"]));
        assert!(Persistence::None
            .args()
            .windows(2)
            .any(|w| w == ["--appendonly", "no"]));
        assert_eq!(Persistence::default(), Persistence::None);
    }
}
