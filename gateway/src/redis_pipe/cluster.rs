//! The Redis Cluster side of the pipe: the slot map (from `CLUSTER SLOTS`), one
//! [`Node`] per master, the refresher thread, and the redirects (`MOVED`, `ASK`).

use super::connection::{Handshake, Node};
use super::{first_key, Inner, WaitPolicy};
use crate::metrics::Metrics;
use redis::Value;
use std::collections::HashMap;
use std::io::Write;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use stock::StockError;

/// Which master serves each slot.
struct SlotMap {
    /// Index into `nodes` per slot; `u16::MAX`: nobody.
    owner: Vec<u16>,
    nodes: Vec<Arc<Node>>,
}

impl SlotMap {
    fn empty() -> SlotMap {
        SlotMap {
            owner: vec![u16::MAX; stock::cluster::SLOTS as usize],
            nodes: Vec::new(),
        }
    }
}

/// A Redis Cluster: the slot map, the nodes' connections, the refresher.
pub(super) struct Cluster {
    seeds: Vec<(String, u16)>,
    hello: Arc<Handshake>,
    connections: usize,
    timeout: Duration,
    wait: Option<WaitPolicy>,
    metrics: Arc<Metrics>,
    map: RwLock<Arc<SlotMap>>,
    /// Every node with connections, by `host:port`.
    pool: Mutex<HashMap<String, Arc<Node>>>,
    refresh: std::sync::mpsc::SyncSender<()>,
    next_any: AtomicUsize,
}

/// Periodic map refresh; and the shortest interval between two refreshes.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
const REFRESH_MIN_GAP: Duration = Duration::from_millis(100);

impl Cluster {
    pub(super) fn start(
        u: stock::cluster::ClusterUrl,
        hello: Arc<Handshake>,
        connections: usize,
        timeout: Duration,
        wait: Option<WaitPolicy>,
        metrics: Arc<Metrics>,
    ) -> Arc<Cluster> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let c = Arc::new(Cluster {
            seeds: u.nodes,
            hello,
            connections,
            timeout,
            wait,
            metrics,
            map: RwLock::new(Arc::new(SlotMap::empty())),
            pool: Mutex::new(HashMap::new()),
            refresh: tx,
            next_any: AtomicUsize::new(0),
        });
        // The first map before serving (a plain thread: the caller may be a coroutine).
        c.clone().refresh_now();
        let weak = Arc::downgrade(&c);
        let spawned = std::thread::Builder::new()
            .name("redis-slots".into())
            .spawn(move || {
                let mut last = Instant::now();
                loop {
                    let woken = rx.recv_timeout(REFRESH_EVERY);
                    if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = woken {
                        return;
                    }
                    let gap = last.elapsed();
                    if gap < REFRESH_MIN_GAP {
                        std::thread::sleep(REFRESH_MIN_GAP - gap);
                    }
                    let Some(c) = weak.upgrade() else { return };
                    c.refresh_now();
                    last = Instant::now();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the redis slot-map refresher");
        }
        c
    }

    /// Ask the refresher for a new map (never blocks).
    pub(super) fn trigger(&self) {
        let _ = self.refresh.try_send(());
    }

    pub(super) fn lock_pool(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Node>>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connections to `addr`, started on first use.
    fn node(&self, addr: &str) -> Arc<Node> {
        let mut pool = self.lock_pool();
        if let Some(n) = pool.get(addr) {
            return n.clone();
        }
        let (host, port) = split_addr(addr).unwrap_or((addr.to_string(), 6379));
        let n = Arc::new(Node::start(
            &host,
            port,
            self.connections,
            &self.hello,
            self.timeout,
            self.wait,
            &self.metrics,
        ));
        pool.insert(n.addr.clone(), n.clone());
        n
    }

    fn current(&self) -> Arc<SlotMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The master of `slot`; for a keyless command, the masters in turn.
    pub(super) fn node_for(&self, slot: Option<u16>) -> Option<Arc<Node>> {
        let map = self.current();
        match slot {
            Some(s) => map.nodes.get(map.owner[s as usize] as usize).cloned(),
            None if map.nodes.is_empty() => None,
            None => Some(
                map.nodes[self.next_any.fetch_add(1, Ordering::Relaxed) % map.nodes.len()].clone(),
            ),
        }
    }

    /// One call on the cluster: to the master of `key`'s slot (else the command's first
    /// key), following `MOVED` (the map is updated) and `ASK` (`ASKING` and the command,
    /// back to back on one connection of the target).
    pub(super) fn send(
        &self,
        inner: &Inner,
        cmd: &redis::Cmd,
        key: Option<&[u8]>,
        packed: &[u8],
        wait: bool,
        deadline: Instant,
    ) -> Result<Value, StockError> {
        let key = key.map(<[u8]>::to_vec).or_else(|| first_key(cmd));
        let slot = key.as_deref().map(stock::cluster::slot);
        let mut node = self.node_for(slot).ok_or_else(|| {
            self.trigger();
            StockError::Redis("redis cluster slot map not loaded yet".into())
        })?;
        let mut asking = false;
        // The first try, and at most two redirections.
        for _ in 0..3 {
            let (bytes, count) = if asking {
                let mut b = redis::cmd("ASKING").get_packed_command();
                b.extend_from_slice(packed);
                (b, 2)
            } else {
                (packed.to_vec(), 1)
            };
            let v = match inner.submit(&node, bytes, count, wait, deadline) {
                Ok(mut v) => v.pop().unwrap_or(Value::Nil),
                Err(e) => {
                    if e.is_fault() {
                        self.trigger();
                    }
                    return Err(e);
                }
            };
            let Value::ServerError(e) = &v else {
                return Ok(v);
            };
            match (e.code(), e.details().and_then(redirect)) {
                ("MOVED", Some((moved, addr))) => {
                    node = self.moved(moved, &addr);
                    asking = false;
                }
                ("ASK", Some((_, addr))) => {
                    node = self.node(&addr);
                    asking = true;
                }
                ("CLUSTERDOWN" | "TRYAGAIN", _) => {
                    self.trigger();
                    return Ok(v);
                }
                _ => return Ok(v),
            }
        }
        Err(StockError::Redis(
            "redis cluster: too many redirections".into(),
        ))
    }

    /// `MOVED slot addr`: the slot is `addr`'s now; the rest of the map is reloaded.
    fn moved(&self, slot: u16, addr: &str) -> Arc<Node> {
        let node = self.node(addr);
        {
            let mut guard = self.map.write().unwrap_or_else(|p| p.into_inner());
            let cur = &**guard;
            let same = cur
                .nodes
                .get(cur.owner[slot as usize] as usize)
                .is_some_and(|n| n.addr == node.addr);
            if !same {
                // A slot moving between masters already checked is no loss; a master
                // new to the map may be a promoted replica.
                let known = cur.nodes.iter().any(|n| n.addr == node.addr);
                let mut nodes = cur.nodes.clone();
                let i = match nodes.iter().position(|n| n.addr == node.addr) {
                    Some(i) => i,
                    None => {
                        nodes.push(node.clone());
                        nodes.len() - 1
                    }
                };
                let mut owner = cur.owner.clone();
                owner[slot as usize] = i as u16;
                *guard = Arc::new(SlotMap { owner, nodes });
                if !known {
                    self.metrics.redis_topology_changed();
                }
            }
        }
        self.trigger();
        node
    }

    /// Fetch `CLUSTER SLOTS` (from a known master, else a seed) and install it. Blocking:
    /// called on plain threads only.
    fn refresh_now(self: Arc<Self>) {
        let known: Vec<String> = self
            .current()
            .nodes
            .iter()
            .map(|n| n.addr.clone())
            .collect();
        let seeds = self.seeds.iter().map(|(h, p)| format!("{h}:{p}"));
        let mut tried = std::collections::HashSet::new();
        for addr in known.into_iter().chain(seeds) {
            if !tried.insert(addr.clone()) {
                continue;
            }
            match fetch_slots(
                &addr,
                &self.hello,
                self.timeout.max(Duration::from_millis(300)),
            ) {
                Ok(ranges) if !ranges.is_empty() => {
                    self.install(&ranges);
                    return;
                }
                Ok(_) => tracing::debug!(%addr, "CLUSTER SLOTS: no slots"),
                Err(e) => tracing::debug!(%addr, error = %e, "CLUSTER SLOTS failed"),
            }
        }
        tracing::warn!("redis cluster: no node answered CLUSTER SLOTS");
    }

    fn install(&self, ranges: &[(u16, u16, String)]) {
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        let mut owner = vec![u16::MAX; stock::cluster::SLOTS as usize];
        for (a, b, addr) in ranges {
            let i = match nodes.iter().position(|n| &n.addr == addr) {
                Some(i) => i,
                None => {
                    nodes.push(self.node(addr));
                    nodes.len() - 1
                }
            };
            for s in *a..=(*b).min(stock::cluster::SLOTS - 1) {
                owner[s as usize] = i as u16;
            }
        }
        let changed = {
            let mut guard = self.map.write().unwrap_or_else(|p| p.into_inner());
            let changed = guard.owner != owner
                || guard
                    .nodes
                    .iter()
                    .map(|n| &n.addr)
                    .ne(nodes.iter().map(|n| &n.addr));
            let new_master = nodes
                .iter()
                .any(|n| !guard.nodes.iter().any(|o| o.addr == n.addr));
            *guard = Arc::new(SlotMap { owner, nodes });
            if new_master {
                // A master new to the map may be a promoted replica. Inside the lock: no
                // purchase can route by the new map before the bump.
                self.metrics.redis_topology_changed();
            }
            changed
        };
        if changed {
            let map = self.current();
            let masters: Vec<&str> = map.nodes.iter().map(|n| n.addr.as_str()).collect();
            tracing::info!(?masters, "redis cluster slot map loaded");
            // Nodes no longer serving slots: their connections end when the last caller
            // holding them lets go.
            self.lock_pool()
                .retain(|addr, _| masters.contains(&addr.as_str()));
        }
    }
}

/// Why a node gave no slot map.
#[derive(Debug, thiserror::Error)]
enum SlotsError {
    #[error("bad address {0}")]
    BadAddress(String),
    #[error("{0}: no address")]
    NoAddress(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Reply(#[from] redis::RedisError),
    #[error("{0:?}")]
    Refused(redis::ServerError),
    #[error("no reply to CLUSTER SLOTS")]
    NoReply,
}

/// `CLUSTER SLOTS` of the node at `addr`: (first, last, master `host:port`).
fn fetch_slots(
    addr: &str,
    hello: &Handshake,
    timeout: Duration,
) -> Result<Vec<(u16, u16, String)>, SlotsError> {
    let (host, port) = split_addr(addr).ok_or_else(|| SlotsError::BadAddress(addr.into()))?;
    let sa = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| SlotsError::NoAddress(addr.into()))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut p = redis::Parser::new();
    for cmd in hello
        .commands()
        .into_iter()
        .chain([redis::cmd("CLUSTER").arg("SLOTS").clone()])
    {
        s.write_all(&cmd.get_packed_command())?;
        let v = p.parse_value(&mut s)?;
        if let Value::ServerError(e) = v {
            return Err(SlotsError::Refused(e));
        }
        if let Value::Array(items) = v {
            return Ok(items
                .iter()
                .filter_map(|r| {
                    let Value::Array(r) = r else { return None };
                    let (a, b) = (int(r.first()?)?, int(r.get(1)?)?);
                    let Value::Array(m) = r.get(2)? else {
                        return None;
                    };
                    let ip = text(m.first()?)?;
                    // An empty or `?` endpoint means "the address you reached me on".
                    let ip = if ip.is_empty() || ip == "?" {
                        host.clone()
                    } else {
                        ip
                    };
                    Some((a as u16, b as u16, format!("{ip}:{}", int(m.get(1)?)?)))
                })
                .collect());
        }
    }
    Err(SlotsError::NoReply)
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `MOVED`/`ASK` details: `<slot> <host>:<port>`.
fn redirect(details: &str) -> Option<(u16, String)> {
    let (slot, addr) = details.trim().split_once(' ')?;
    Some((slot.parse().ok()?, addr.trim().to_string()))
}

fn split_addr(addr: &str) -> Option<(String, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?))
}
