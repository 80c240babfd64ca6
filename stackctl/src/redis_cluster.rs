//! A Redis Cluster on one machine: three masters and three replicas, `redis-server`
//! processes with `cluster-enabled yes` on ports `base..base+5` (cluster bus on
//! port + 10000), each with its `nodes.conf`, pid file and log under `dir/node-N`.
//! Nothing persisted but `nodes.conf` (like the single Redis).
//!
//! `up` is idempotent: it starts the nodes that are down, creates the cluster with
//! `redis-cli --cluster create … --cluster-replicas 1 --cluster-yes` when none exists
//! yet, and returns once every node reports `cluster_state:ok`, knows every other node,
//! and every replica's link to its master is up. `cluster-node-timeout` is short (2 s by
//! default) so a killed master's replica is promoted within seconds, and
//! `cluster-require-full-coverage no` lets the other masters serve meanwhile.
//!
//! For drills: [`RedisCluster::signal`] (kill, pause, resume) and
//! [`RedisCluster::start_node`] per node, [`RedisCluster::topology`] (who masters which
//! slots now), and a tiny RESP client ([`RedisCluster::query`]) with timeouts, so a
//! paused node never hangs the controller.

use crate::process::{self, port_open, wait_until};
use crate::StackError;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The stack's default first port of the cluster profile (`SECKILL_REDIS_CLUSTER_PORT`).
pub const DEFAULT_BASE_PORT: u16 = 17001;

pub struct RedisCluster {
    pub dir: PathBuf,
    /// Node `i` listens on `base_port + i`.
    pub base_port: u16,
    pub masters: usize,
    /// Replicas per master.
    pub replicas: usize,
    /// `cluster-node-timeout`: how long a master may be silent before its replica takes over.
    pub node_timeout_ms: u64,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// `fail` or `fail?` flagged.
    pub failed: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    /// Slot ranges served (inclusive), for a master.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Three masters with one replica each, 2 s node timeout.
    pub fn new(dir: impl Into<PathBuf>, base_port: u16) -> RedisCluster {
        RedisCluster {
            dir: dir.into(),
            base_port,
            masters: 3,
            replicas: 1,
            node_timeout_ms: 2000,
        }
    }

    /// `masters` masters (1 or more) with `replicas` replicas each, 2 s node timeout,
    /// e.g. for measuring how one hot sale scales with the masters (the bench's
    /// scale-out step). `redis-cli --cluster create` wants three masters at least, so
    /// fewer are formed by hand (see [`RedisCluster::up`]).
    pub fn with_masters(
        dir: impl Into<PathBuf>,
        base_port: u16,
        masters: usize,
        replicas: usize,
    ) -> RedisCluster {
        RedisCluster {
            masters: masters.max(1),
            replicas,
            ..RedisCluster::new(dir, base_port)
        }
    }

    /// The stack's cluster profile: `Some` when `SECKILL_REDIS_CLUSTER=1`, under
    /// `<run>/redis-cluster` on `SECKILL_REDIS_CLUSTER_PORT` (default 17001) and up.
    pub fn from_env(run: &Path) -> Option<RedisCluster> {
        let on = std::env::var("SECKILL_REDIS_CLUSTER")
            .map(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        on.then(|| {
            let base = std::env::var("SECKILL_REDIS_CLUSTER_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(DEFAULT_BASE_PORT);
            RedisCluster::new(run.join("redis-cluster"), base)
        })
    }

    pub fn nodes(&self) -> usize {
        self.masters * (1 + self.replicas)
    }

    pub fn port(&self, node: usize) -> u16 {
        self.base_port + node as u16
    }

    /// `redis+cluster://127.0.0.1:p0,…` (every node: any of them is a seed).
    pub fn url(&self) -> String {
        let nodes: Vec<String> = (0..self.nodes())
            .map(|i| format!("127.0.0.1:{}", self.port(i)))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    fn node_dir(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node-{node}"))
    }

    fn pidfile(&self, node: usize) -> PathBuf {
        self.node_dir(node).join("redis.pid")
    }

    pub fn log(&self, node: usize) -> PathBuf {
        self.node_dir(node).join("redis.log")
    }

    pub fn pid(&self, node: usize) -> Option<i32> {
        process::running_as(&self.pidfile(node), "redis-server")
    }

    /// The process runs and its port accepts connections (it may still be paused).
    pub fn node_up(&self, node: usize) -> bool {
        self.pid(node).is_some() && port_open(self.port(node))
    }

    /// Every node up and serving with the cluster healthy.
    pub fn is_up(&self) -> bool {
        (0..self.nodes()).all(|i| self.node_up(i)) && self.ready()
    }

    /// Start the nodes that are down, create the cluster if there is none, wait until
    /// it is healthy (idempotent; serialised by a lock file in `dir`).
    pub fn up(&self) -> Result<(), StackError> {
        std::fs::create_dir_all(&self.dir)?;
        let _lock = flock(&self.dir.join("cluster.lock"))?;
        if self.is_up() {
            return Ok(());
        }
        for i in 0..self.nodes() {
            self.start_node(i)?;
        }
        if self.unformed() && self.masters < 3 {
            self.form_by_hand()?;
        } else if self.unformed() {
            let mut cmd = Command::new("redis-cli");
            cmd.arg("--cluster").arg("create");
            for i in 0..self.nodes() {
                cmd.arg(format!("127.0.0.1:{}", self.port(i)));
            }
            cmd.args([
                "--cluster-replicas",
                &self.replicas.to_string(),
                "--cluster-yes",
            ]);
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .map_err(StackError::tool("redis-cli"))?;
            if !out.status.success() {
                return Err(StackError::Process(format!(
                    "redis-cli --cluster create failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        if !wait_until(Duration::from_secs(60), || self.ready()) {
            return Err(StackError::Process(format!(
                "redis cluster not healthy within 60 s: {}",
                self.why_not_ready()
            )));
        }
        Ok(())
    }

    /// What `redis-cli --cluster create` does, for fewer than three masters: a config
    /// epoch per node, every node meets node 0, the slots split evenly over the
    /// masters (nodes 0..masters), then each replica (node masters + r·masters + m)
    /// follows master m once it knows it.
    fn form_by_hand(&self) -> Result<(), StackError> {
        let fail = |what: &str, e: std::io::Error| {
            StackError::failed(format!("forming the cluster: {what}"))(e)
        };
        for i in 0..self.nodes() {
            // Refused once a node has an epoch (a retried formation): harmless.
            let _ = self.query(
                self.port(i),
                &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()],
            );
        }
        let slots = SLOTS;
        for m in 0..self.masters {
            let (a, b) = (m * slots / self.masters, (m + 1) * slots / self.masters - 1);
            self.query(
                self.port(m),
                &["CLUSTER", "ADDSLOTSRANGE", &a.to_string(), &b.to_string()],
            )
            .map_err(|e| fail("ADDSLOTSRANGE", e))?;
        }
        let first = self.port(0).to_string();
        for i in 1..self.nodes() {
            self.query(self.port(i), &["CLUSTER", "MEET", "127.0.0.1", &first])
                .map_err(|e| fail("MEET", e))?;
        }
        let n = self.nodes().to_string();
        if !wait_until(Duration::from_secs(30), || {
            (0..self.nodes())
                .all(|i| self.info_field(i, "cluster_known_nodes").as_deref() == Some(n.as_str()))
        }) {
            return Err(StackError::Process(
                "forming the cluster: nodes did not meet within 30 s".into(),
            ));
        }
        for r in 0..self.replicas {
            for m in 0..self.masters {
                let replica = self.masters + r * self.masters + m;
                let id = self
                    .query(self.port(m), &["CLUSTER", "MYID"])
                    .map_err(|e| fail("MYID", e))?;
                if !wait_until(Duration::from_secs(30), || {
                    self.query(self.port(replica), &["CLUSTER", "REPLICATE", &id])
                        .is_ok()
                }) {
                    return Err(StackError::Process(format!(
                        "forming the cluster: node {replica} would not replicate node {m}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Start node `node` unless it runs (again after a kill: it rejoins from its
    /// `nodes.conf`, as a replica if its replica took over meanwhile). Empty: the nodes
    /// have no persistence, and the RDB file a replica's full sync or a [`Self::snapshot`]
    /// left behind is removed first, never loaded.
    pub fn start_node(&self, node: usize) -> Result<(), StackError> {
        if self.node_up(node) {
            return Ok(());
        }
        match std::fs::remove_file(self.node_dir(node).join(SNAPSHOT)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.start_from_snapshot(node)
    }

    /// `BGSAVE` on node `node`: its keys as of now in its RDB file, for
    /// [`Self::start_from_snapshot`] (a master whose persistence is a periodic snapshot).
    pub fn snapshot(&self, node: usize) -> std::io::Result<String> {
        self.query(self.port(node), &["BGSAVE"])
    }

    /// Start node `node` unless it runs, loading its last RDB file if it has one (a
    /// [`Self::snapshot`], or a replica's last full sync): back with its keys as of then.
    pub fn start_from_snapshot(&self, node: usize) -> Result<(), StackError> {
        if self.node_up(node) {
            return Ok(());
        }
        let port = self.port(node);
        if port_open(port) {
            return Err(StackError::PortTaken(port, "redis cluster node"));
        }
        let dir = self.node_dir(node);
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &self.node_timeout_ms.to_string()])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--cluster-allow-replica-migration", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .args(["--maxclients", "10000"])
            .arg("--dir")
            .arg(&dir)
            .arg("--pidfile")
            .arg(self.pidfile(node))
            .arg("--logfile")
            .arg(self.log(node))
            .stdout(Stdio::null())
            .status()
            .map_err(StackError::tool("redis-server"))?;
        // Up once it answers (a node loading its snapshot answers `LOADING` until then).
        if !status.success()
            || !wait_until(Duration::from_secs(10), || self.node_up(node))
            || !wait_until(Duration::from_secs(30), || crate::redis::answers(port))
        {
            return Err(StackError::Start(
                "redis cluster node",
                self.log(node).display().to_string(),
            ));
        }
        Ok(())
    }

    /// Stop every node.
    pub fn down(&self) {
        for i in 0..self.nodes() {
            self.stop_node(i);
        }
    }

    /// Stop one node cleanly.
    pub fn stop_node(&self, node: usize) {
        if let Some(pid) = self.pid(node) {
            let _ = process::signal(pid, libc::SIGCONT);
            process::terminate(pid, Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(self.pidfile(node));
    }

    /// SIGKILL, SIGSTOP or SIGCONT to one node.
    pub fn signal(&self, node: usize, sig: i32) -> Result<(), StackError> {
        let pid = self.pid(node).ok_or_else(|| {
            StackError::Process(format!("redis cluster node {node} is not running"))
        })?;
        process::signal(pid, sig)
    }

    /// No node knows another and no slot is assigned: the cluster was never created.
    fn unformed(&self) -> bool {
        (0..self.nodes()).all(|i| {
            self.info_field(i, "cluster_known_nodes").as_deref() == Some("1")
                && self.info_field(i, "cluster_slots_assigned").as_deref() == Some("0")
        })
    }

    /// Every node: `cluster_state:ok`, all nodes known, replicas linked to their master.
    pub fn ready(&self) -> bool {
        self.why_not_ready().is_empty()
    }

    fn why_not_ready(&self) -> String {
        let n = self.nodes().to_string();
        let mut why = Vec::new();
        for i in 0..self.nodes() {
            let state = self.info_field(i, "cluster_state");
            let known = self.info_field(i, "cluster_known_nodes");
            if state.as_deref() != Some("ok") || known.as_deref() != Some(n.as_str()) {
                why.push(format!("node {i}: state {state:?}, knows {known:?}"));
                continue;
            }
            let repl = self
                .query(self.port(i), &["INFO", "replication"])
                .unwrap_or_default();
            if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                why.push(format!("node {i}: replica not linked"));
            }
        }
        why.join("; ")
    }

    /// One field of `CLUSTER INFO` on node `node`.
    pub fn info_field(&self, node: usize, field: &str) -> Option<String> {
        let info = self.query(self.port(node), &["CLUSTER", "INFO"]).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    }

    /// The cluster as node `from`'s `CLUSTER NODES` says (the first node answering
    /// when `from` is None).
    pub fn topology_from(&self, from: Option<usize>) -> Result<Vec<NodeInfo>, StackError> {
        let candidates: Vec<usize> = match from {
            Some(n) => vec![n],
            None => (0..self.nodes()).collect(),
        };
        let mut last = String::from("no node");
        for i in candidates {
            match self.query(self.port(i), &["CLUSTER", "NODES"]) {
                Ok(text) => return Ok(parse_nodes(&text)),
                Err(e) => last = e.to_string(),
            }
        }
        Err(StackError::Process(format!("CLUSTER NODES: {last}")))
    }

    pub fn topology(&self) -> Result<Vec<NodeInfo>, StackError> {
        self.topology_from(None)
    }

    /// The node index (0-based, by port) mastering `slot` now, per `CLUSTER NODES`.
    pub fn master_of(&self, slot: u16) -> Result<usize, StackError> {
        self.topology()?
            .into_iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| (n.port - self.base_port) as usize)
            .ok_or_else(|| StackError::Process(format!("no live master serves slot {slot}")))
    }

    /// The node indexes of the live masters that serve slots.
    pub fn masters_now(&self) -> Result<Vec<usize>, StackError> {
        let mut m: Vec<usize> = self
            .topology()?
            .into_iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .map(|n| (n.port - self.base_port) as usize)
            .collect();
        m.sort();
        Ok(m)
    }

    /// One command on the node at `port`, with a 2 s timeout; the reply as text
    /// (bulk and simple strings, integers; an error reply is an `Err`).
    pub fn query(&self, port: u16, args: &[&str]) -> std::io::Result<String> {
        query(port, args, Duration::from_secs(2))
    }
}

/// A node's RDB file (in its directory).
const SNAPSHOT: &str = "dump.rdb";

/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// One command over RESP with timeouts; arrays are answered with their elements'
/// texts joined by newlines (enough for the replies used here).
pub fn query(port: u16, args: &[&str], timeout: Duration) -> std::io::Result<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    (&s).write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    read_reply(&mut r)
}

fn read_reply(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = |m: String| std::io::Error::other(m);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Err(bad(rest.to_string())),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad(format!("bad reply {line}")))?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            String::from_utf8(buf).map_err(|_| bad("not utf-8".into()))
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad(format!("bad reply {line}")))?;
            let mut parts = Vec::new();
            for _ in 0..n.max(0) {
                parts.push(read_reply(r)?);
            }
            Ok(parts.join("\n"))
        }
        _ => Err(bad(format!("unexpected reply {line:?}"))),
    }
}

/// Parse `CLUSTER NODES` output.
pub fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1]
                .split(['@', ','])
                .next()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()?;
            let flags: Vec<&str> = f[2].split(',').collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(NodeInfo {
                id: f[0].to_string(),
                port,
                master: flags.contains(&"master"),
                failed: flags.iter().any(|x| x.starts_with("fail")),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
            })
        })
        .collect()
}

/// An exclusive `flock` held until the file is dropped.
pub(crate) fn flock(path: &Path) -> Result<std::fs::File, StackError> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a descriptor we own; released when the file closes.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(f)
}

/// Wait until `f` holds, polling every 50 ms; how long it took, or None.
pub fn measure_until(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_output_parses() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master,fail - 0 0 2 connected 5461-10922 [5461->-c3]
c3 127.0.0.1:7005@17005,host slave a1 0 0 1 connected
";
        let n = parse_nodes(text);
        assert_eq!(n.len(), 3);
        assert_eq!((n[0].port, n[0].master, n[0].failed), (7001, true, false));
        assert_eq!(n[0].slots, vec![(0, 5460)]);
        assert!(n[1].failed && n[1].slots == vec![(5461, 10922)]);
        assert_eq!(
            (n[2].port, n[2].master, n[2].master_id.as_deref()),
            (7005, false, Some("a1"))
        );
    }

    #[test]
    fn the_profile_url_lists_every_node() {
        let c = RedisCluster::new("/tmp/x", 17001);
        assert_eq!(c.nodes(), 6);
        assert!(c
            .url()
            .starts_with("redis+cluster://127.0.0.1:17001,127.0.0.1:17002,"));
        assert!(c.url().ends_with("127.0.0.1:17006"));
    }

    #[test]
    fn fewer_masters_have_their_own_node_count() {
        let c = RedisCluster::with_masters("/tmp/x", 21601, 1, 1);
        assert_eq!((c.masters, c.nodes()), (1, 2));
        assert!(c.url().ends_with("127.0.0.1:21601,127.0.0.1:21602"));
        let c = RedisCluster::with_masters("/tmp/x", 21611, 2, 0);
        assert_eq!(c.nodes(), 2);
    }
}
