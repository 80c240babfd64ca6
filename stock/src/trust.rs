//! Which Redis processes the store trusts to hold every acknowledged order.
//!
//! A Redis process that lost recent writes while its data survived — restarted from an
//! append-only file synced every second, or a replica promoted before it received the
//! master's last writes — still has the store epoch, so the epoch check cannot see the
//! loss, yet it could sell the lost units again. Every process has its own `run_id`
//! (`INFO server`, new on every start; a replica's differs from its master's) and a
//! replication id (`master_replid`, new when a replica is promoted); a master is known
//! by the two. The hash `{sk:epoch}:trust` lists the masters known to hold every acknowledged
//! order: written by the
//! order-writer after it re-applied what Redis lacked (`Stock::reapply`), by
//! `rebuild-stock`, and by a gateway when the store has no epoch (nothing to lose yet).
//! A process that started empty (no append-only file, nothing loaded from a snapshot)
//! and was never a replica holds only what was written to it, so it is trusted as it is
//! (the default local stack; a total loss shows as a missing epoch instead) — unless it
//! is a cluster node the store has seen before under another run: a master restarted
//! empty inside the node timeout keeps its node id (`nodes.conf`) and its slots, and has
//! lost every key it held, while the epoch on another master survives. The cluster's
//! own identity tells the two apart: `{sk:epoch}:trust` also maps `node:<node id>` to the run it
//! last trusted, and a clean run of a known node under a new run id is a loss.
//! Gateways sell only while every master's run id is trusted.

use crate::cluster::{self, ClusterUrl};
use crate::keys;
use crate::{connect_single, map_redis_error, Conn, StockError};
use std::collections::HashMap;
use std::time::Duration;

/// A master process: its address and its identity (`run_id/master_replid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub addr: String,
    pub run_id: String,
    /// Started empty and never a replica: cannot have lost anything.
    pub born_clean: bool,
    /// It says it is a master (a node listed as one may have been demoted meanwhile).
    pub master: bool,
    /// It was a replica once and took over (`second_repl_offset` set).
    pub promoted: bool,
    /// Its cluster node id (`CLUSTER MYID`), on a Redis Cluster.
    pub node_id: Option<String>,
}

/// `addr run_id/replid`, as logs and the gateway's store view name a master.
impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.addr, self.run_id)
    }
}

/// The `INFO` sections a run is read from.
const SECTIONS: [&str; 3] = ["server", "persistence", "replication"];

/// Most entries kept in `{sk:epoch}:trust` (each restart or failover adds one per master).
const TRUST_MAX: usize = 256;

/// Reads the masters' run ids: on one Redis through the caller's connection; on a
/// cluster through a plain connection per master (kept between reads).
pub struct RunWatch {
    cluster: Option<ClusterUrl>,
    timeout: Duration,
    conns: HashMap<String, redis::Connection>,
}

impl RunWatch {
    pub fn new(url: &str, timeout: Duration) -> Result<RunWatch, StockError> {
        let cluster = if cluster::is_cluster_url(url) {
            Some(cluster::parse_url(url)?)
        } else {
            None
        };
        Ok(RunWatch {
            cluster,
            timeout,
            conns: HashMap::new(),
        })
    }

    /// Every master serving slots (one Redis: that one), with its run id.
    pub fn runs(&mut self, conn: &mut Conn) -> Result<Vec<Run>, StockError> {
        let Some(url) = &self.cluster else {
            let info: String = redis::cmd("INFO")
                .arg(&SECTIONS[..])
                .query(conn)
                .map_err(map_redis_error)?;
            return Ok(vec![run_of("redis".into(), &info)?]);
        };
        let _ = conn;
        // The map from a node we name (a master known from the last read, else a seed),
        // so that an empty or `?` endpoint can be read as that node's host.
        let mut asked: Vec<String> = self.conns.keys().cloned().collect();
        asked.extend(url.nodes.iter().map(|(h, p)| format!("{h}:{p}")));
        let mut masters = Vec::new();
        for addr in asked {
            if let Ok(slots) = self.query::<redis::Value>(&addr, redis::cmd("CLUSTER").arg("SLOTS"))
            {
                let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                masters = masters_of(&slots, host);
                if !masters.is_empty() {
                    break;
                }
            }
        }
        masters.sort();
        masters.dedup();
        if masters.is_empty() {
            return Err(StockError::Redis(
                "CLUSTER SLOTS: no node named a master serving slots".into(),
            ));
        }
        self.conns.retain(|a, _| masters.contains(a));
        let mut out = Vec::with_capacity(masters.len());
        for addr in masters {
            let info: String = self.query(&addr, redis::cmd("INFO").arg(&SECTIONS[..]))?;
            let id: String = self.query(&addr, redis::cmd("CLUSTER").arg("MYID"))?;
            let mut run = run_of(addr, &info)?;
            run.node_id = Some(id).filter(|i| !i.is_empty());
            out.push(run);
        }
        Ok(out)
    }

    /// `cmd` on the node at `addr` (cluster only), on its kept connection, made if
    /// missing; a failed call drops the connection.
    fn query<T: redis::FromRedisValue>(
        &mut self,
        addr: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, StockError> {
        if !self.conns.contains_key(addr) {
            let url = match &self.cluster {
                Some(u) => u.node_url(addr),
                None => return Err(StockError::Invalid("not a cluster".into())),
            };
            let c = connect_single(&url, self.timeout)?;
            self.conns.insert(addr.to_string(), c);
        }
        let Some(c) = self.conns.get_mut(addr) else {
            return Err(StockError::Redis(format!("{addr}: no connection")));
        };
        cmd.query(c).map_err(|e| {
            self.conns.remove(addr);
            map_redis_error(e)
        })
    }
}

/// A field of an `INFO` reply.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

/// A master's run from its `INFO server persistence replication`.
pub fn run_of(addr: String, info: &str) -> Result<Run, StockError> {
    let run = field(info, "run_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| StockError::BadReply("INFO server without run_id".into()))?;
    // The process, and its replication history: a restart changes the run id, a
    // promotion the replication id (a demoted and re-promoted master keeps its run id).
    let run_id = match field(info, "master_replid") {
        Some(replid) => format!("{run}/{replid}"),
        None => run.to_string(),
    };
    // Every field must say so; a missing one (another version) means "not known".
    let master = field(info, "role") == Some("master");
    let promoted = field(info, "second_repl_offset") != Some("-1");
    let born_clean = master
        && !promoted
        && field(info, "aof_enabled") == Some("0")
        && field(info, "rdb_last_load_keys_loaded") == Some("0")
        && field(info, "loading") == Some("0");
    Ok(Run {
        addr,
        run_id,
        born_clean,
        master,
        promoted,
        node_id: None,
    })
}

/// The masters' `host:port` in a `CLUSTER SLOTS` reply from a node on `asked_host` (an
/// empty or `?` endpoint means that host, as Redis documents).
fn masters_of(v: &redis::Value, asked_host: &str) -> Vec<String> {
    use redis::Value;
    let Value::Array(ranges) = v else {
        return Vec::new();
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    ranges
        .iter()
        .filter_map(|r| match r {
            Value::Array(items) => match items.get(2) {
                Some(Value::Array(m)) => match (m.first().and_then(text), m.get(1)) {
                    (Some(h), Some(Value::Int(p))) if h.is_empty() || h == "?" => {
                        Some(format!("{asked_host}:{p}"))
                    }
                    (Some(h), Some(Value::Int(p))) => Some(format!("{h}:{p}")),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The field of `{sk:epoch}:trust` naming the run a cluster node was last trusted as.
fn node_field(id: &str) -> String {
    format!("node:{id}")
}

/// The runs among `runs` neither born clean nor listed in `{sk:epoch}:trust`, any that is not a
/// master (a node listed as one but demoted meanwhile: the view is stale), and any born
/// clean under a cluster node id `{sk:epoch}:trust` knows as another run (restarted empty). A
/// clean node seen for the first time is recorded as it is.
pub fn untrusted(conn: &mut Conn, runs: &[Run]) -> Result<Vec<Run>, StockError> {
    let mut out: Vec<Run> = runs.iter().filter(|r| !r.master).cloned().collect();
    out.extend(restarted_empty(conn, runs)?);
    let runs: Vec<&Run> = runs.iter().filter(|r| r.master && !r.born_clean).collect();
    if runs.is_empty() {
        return Ok(out);
    }
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(keys::TRUST);
    for r in &runs {
        cmd.arg(&r.run_id);
    }
    let known: Vec<Option<String>> = cmd.query(conn).map_err(map_redis_error)?;
    out.extend(
        runs.into_iter()
            .zip(known)
            .filter(|(_, k)| k.is_none())
            .map(|(r, _)| r.clone()),
    );
    Ok(out)
}

/// Born-clean masters whose cluster node `{sk:epoch}:trust` knows under another run: restarted
/// empty, every key they held lost. A node not known yet is recorded (`HSETNX`).
fn restarted_empty(conn: &mut Conn, runs: &[Run]) -> Result<Vec<Run>, StockError> {
    let clean: Vec<(&Run, &str)> = runs
        .iter()
        .filter(|r| r.master && r.born_clean)
        .filter_map(|r| r.node_id.as_deref().map(|id| (r, id)))
        .collect();
    if clean.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(keys::TRUST);
    for (_, id) in &clean {
        cmd.arg(node_field(id));
    }
    let known: Vec<Option<String>> = cmd.query(conn).map_err(map_redis_error)?;
    let mut out = Vec::new();
    for ((r, id), k) in clean.into_iter().zip(known) {
        match k {
            Some(run) if run == r.run_id => {}
            Some(_) => out.push(r.clone()),
            None => {
                let _: i64 = redis::cmd("HSETNX")
                    .arg(keys::TRUST)
                    .arg(node_field(id))
                    .arg(&r.run_id)
                    .query(conn)
                    .map_err(map_redis_error)?;
            }
        }
    }
    Ok(out)
}

/// Trust `runs` (they hold every acknowledged order; a run that is not a master is
/// skipped). Keeps the hash bounded: when it grows past `TRUST_MAX`, it is rewritten with
/// just these runs, so pass every current master.
pub fn trust(conn: &mut Conn, runs: &[Run]) -> Result<(), StockError> {
    let runs: Vec<&Run> = runs.iter().filter(|r| r.master).collect();
    if runs.is_empty() {
        return Ok(());
    }
    let now = seckill_common::now_ms();
    let len: usize = redis::cmd("HLEN")
        .arg(keys::TRUST)
        .query(conn)
        .map_err(map_redis_error)?;
    let mut p = redis::pipe();
    p.atomic();
    if len + runs.len() > TRUST_MAX {
        p.cmd("DEL").arg(keys::TRUST).ignore();
    }
    for r in &runs {
        p.cmd("HSET")
            .arg(keys::TRUST)
            .arg(&r.run_id)
            .arg(format!("{now} {}", r.addr))
            .ignore();
        if let Some(id) = &r.node_id {
            p.cmd("HSET")
                .arg(keys::TRUST)
                .arg(node_field(id))
                .arg(&r.run_id)
                .ignore();
        }
    }
    p.query::<()>(conn).map_err(map_redis_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn a_run_is_read_from_info() {
        let clean = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:6379\r\n# Persistence\r\nloading:0\r\nrdb_last_load_keys_loaded:0\r\naof_enabled:0\r\n# Replication\r\nrole:master\r\nmaster_replid:f00d\r\nmaster_replid2:0000\r\nsecond_repl_offset:-1\r\n";
        let r = run_of("a".into(), clean).unwrap();
        assert_eq!(r.run_id, "abc123/f00d");
        assert!(r.born_clean);
        // Persistence on, something loaded, promoted, a replica, a field missing: not clean.
        for (from, to) in [
            ("aof_enabled:0", "aof_enabled:1"),
            ("keys_loaded:0", "keys_loaded:12"),
            ("second_repl_offset:-1", "second_repl_offset:4242"),
            ("role:master", "role:slave"),
            ("loading:0\r\n", ""),
        ] {
            let info = clean.replace(from, to);
            assert!(!run_of("a".into(), &info).unwrap().born_clean, "{to}");
        }
        assert!(run_of("a".into(), "# Server\r\nredis_version:7\r\n").is_err());
    }

    #[test]
    fn masters_are_read_from_cluster_slots() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range =
            |a, b, m: Value, r: Value| Value::Array(vec![Value::Int(a), Value::Int(b), m, r]);
        let v = Value::Array(vec![
            range(0, 5460, node("127.0.0.1", 17001), node("127.0.0.1", 17004)),
            range(
                5461,
                10922,
                node("127.0.0.1", 17002),
                node("127.0.0.1", 17005),
            ),
        ]);
        assert_eq!(
            masters_of(&v, "h"),
            vec!["127.0.0.1:17001", "127.0.0.1:17002"]
        );
        assert!(masters_of(&Value::Nil, "h").is_empty());
        let v = Value::Array(vec![range(0, 16383, node("", 21601), Value::Nil)]);
        assert_eq!(masters_of(&v, "10.0.0.5"), vec!["10.0.0.5:21601"]);
    }
}
