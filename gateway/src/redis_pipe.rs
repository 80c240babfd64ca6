//! Redis I/O that fits may's coroutines: a few shared connections, each with automatic
//! pipelining.
//!
//! Each connection runs a writer and a reader coroutine. A caller packs its command,
//! queues it on the connection's may channel with a reply slot, and parks on that slot
//! (the worker thread runs other coroutines meanwhile). The writer drains everything
//! queued into one `write` (many requests in flight on one socket), hands the write's
//! reply slots to the reader in one message, in the same order, and the reader
//! completes them as replies arrive (Redis answers in order). The call's deadline is
//! kept by one watcher thread per pipe ([`Deadlines`]) that answers `Timeout` to a slot
//! still empty at its deadline: no may timer per call (each cost two wake-ups of may's
//! timer thread). A broken socket fails every waiting caller at once
//! and the connection reconnects with backoff. The [`Breaker`] in front fails fast while
//! Redis is sick.
//!
//! A reply that does not come within the timeout poisons the connection: replies are
//! matched to requests by order alone, so after a lost request (a network black hole)
//! every later reply would go to the wrong caller. The reader therefore reads with the
//! timeout, and silence while requests are outstanding closes the connection (failing
//! them) and reconnects.
//!
//! Bounds: at most `max_in_flight` commands queued or in flight per connection (over it:
//! an immediate error, a 503 upstream); at most `BATCH` commands per write; every call
//! has a deadline, and a command whose caller has already given up is not sent.
//!
//! **Redis Cluster** (`redis+cluster://host:port,…`): the pipe keeps the slot map (from
//! `CLUSTER SLOTS`) and one set of `connections` pipelined connections per master, and
//! sends each command to the master of its first key's slot ([`stock::cluster::slot`]).
//! `MOVED` updates the map and retries on the new owner; `ASK` sends `ASKING` and the
//! command, back to back on one connection of the target. A refresher thread (blocking
//! I/O off the may workers) reloads the map at start, every 2 s, and at once (at most
//! every 100 ms) when a call met `MOVED`, `CLUSTERDOWN` or a connection failure, so a
//! promoted replica is found within a refresh of the cluster promoting it.
//!
//! **WAIT** (`wait.replicas` > 0): each write that carries purchase scripts ends with one
//! `WAIT replicas timeout_ms` on the same connection; those purchases are answered only
//! after it, so a reservation answered here reached `replicas` replicas, or the WAIT's
//! timeout passed and the reservation counts in `seckill_redis_unreplicated_total` (the
//! gateway still answers it: the order is in Kafka before the 202, see the README,
//! "Redis Cluster").

use crate::breaker::Breaker;
use crate::metrics::Metrics;
use may::sync::mpsc;
use redis::Value;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use stock::StockError;

const BATCH: usize = 512;

/// Replies of one job: `count` values, in order.
type Replies = Result<Vec<Value>, StockError>;

/// A caller's answer: set once, by the connection (the replies, or the connection's
/// loss) or by the deadline watcher (a timeout), whichever comes first; later ones are
/// dropped. The caller parks on it without a timer of its own (see [`Deadlines`]).
struct Shot {
    done: AtomicBool,
    value: Mutex<Option<Replies>>,
    blocker: may::sync::Blocker,
}

impl Shot {
    /// Made by the caller that will wait on it (a coroutine or a plain thread).
    fn new() -> Shot {
        Shot {
            done: AtomicBool::new(false),
            value: Mutex::new(None),
            blocker: may::sync::Blocker::new(false),
        }
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn complete(&self, r: Replies) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.blocker.unpark();
    }

    /// The answer, once set (an unpark before the park is not lost: `Blocker` keeps it).
    fn wait(&self) -> Replies {
        loop {
            if let Some(r) = self.value.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return r;
            }
            let _ = self.blocker.park(None);
        }
    }
}

/// The connection's end of a caller's answer. Dropping it (answered or not) releases
/// its place in the connection's in-flight bound, so no path can leak capacity; one
/// dropped unanswered answers "connection lost" (a caller whose deadline passed has
/// its timeout already).
struct Reply {
    shot: Arc<Shot>,
    depth: Arc<AtomicUsize>,
}

impl Reply {
    fn complete(self, r: Replies) {
        self.shot.complete(r);
    }

    /// The caller already has its answer (its deadline passed).
    fn abandoned(&self) -> bool {
        self.shot.is_done()
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.shot.is_done() {
            self.shot
                .complete(Err(StockError::Redis("connection lost".into())));
        }
        self.depth.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every call's deadline, in call order, watched by one plain thread per pipe that
/// answers a call whose deadline passed with `Timeout`. A may timer per call
/// (`recv_timeout`) cost two wake-ups of may's timer thread per call (adding a timer
/// of a new length, and deleting it when the reply came first): about a third of the
/// client's CPU on the purchase path (`loadtest/bench/PROFILE.md`).
/// Answered calls leave the queue from its front, and the whole queue is swept of
/// them once it holds more than [`DEADLINES_SWEEP`] entries, so it holds at most the
/// calls in flight plus one tick's calls.
struct Deadlines {
    queue: Mutex<VecDeque<(Instant, Weak<Shot>)>>,
}

const DEADLINES_SWEEP: usize = 4096;

impl Deadlines {
    /// The watcher lives while the pipe does; it wakes at the earliest deadline, and at
    /// least every `tick` (a call is answered at most one tick late when its timeout
    /// is shorter than a tick, never early).
    fn start(timeout: Duration) -> Arc<Deadlines> {
        let d = Arc::new(Deadlines {
            queue: Mutex::new(VecDeque::new()),
        });
        let tick = (timeout / 2).clamp(Duration::from_millis(1), Duration::from_millis(20));
        let weak = Arc::downgrade(&d);
        let spawned = std::thread::Builder::new()
            .name("redis-deadlines".into())
            .spawn(move || loop {
                let Some(d) = weak.upgrade() else { return };
                let now = Instant::now();
                let (expired, next) = d.expire(now);
                drop(d);
                for shot in expired {
                    shot.complete(Err(StockError::Timeout));
                }
                let until = next.map_or(now + tick, |n| n.min(now + tick));
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            });
        if let Err(e) = spawned {
            // Without the watcher a call whose reply never comes waits until the
            // connection gives up on the silence (its read timeout) and fails it.
            tracing::error!(error = %e, "cannot start the redis deadline watcher");
        }
        d
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Weak<Shot>)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watch(&self, deadline: Instant, shot: &Arc<Shot>) {
        self.lock().push_back((deadline, Arc::downgrade(shot)));
    }

    /// Take the unanswered calls whose deadline passed; drop answered ones from the
    /// front; the earliest deadline left.
    fn expire(&self, now: Instant) -> (Vec<Arc<Shot>>, Option<Instant>) {
        let mut q = self.lock();
        let mut expired = Vec::new();
        while let Some((at, weak)) = q.front() {
            match weak.upgrade() {
                Some(s) if !s.is_done() => {
                    if *at > now {
                        break;
                    }
                    expired.push(s);
                }
                _ => {}
            }
            q.pop_front();
        }
        if q.len() > DEADLINES_SWEEP {
            q.retain(|(_, w)| w.upgrade().is_some_and(|s| !s.is_done()));
        }
        (expired, q.front().map(|(at, _)| *at))
    }
}

struct Job {
    /// One or more packed commands (ASKING + command), answered by `count` replies.
    packed: Vec<u8>,
    count: usize,
    /// A purchase: answered after the write's WAIT.
    wait: bool,
    deadline: Instant,
    reply: Reply,
}

struct Slot {
    queue: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
}

/// After a purchase, wait for this many replicas, at most this long (`WAIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    pub replicas: u32,
    pub timeout_ms: u64,
}

/// Settings of a pipe.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections (per master on a cluster).
    pub connections: usize,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub wait: Option<WaitPolicy>,
}

/// One server's pipelined connections.
struct Node {
    addr: String,
    conns: Vec<Slot>,
    next: AtomicUsize,
}

/// Shared handle; clone freely (one per coroutine is fine).
#[derive(Clone)]
pub struct RedisPipe {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    timeout: Duration,
    max_in_flight: usize,
    wait: Option<WaitPolicy>,
    breaker: Arc<Breaker>,
    metrics: Arc<Metrics>,
    deadlines: Arc<Deadlines>,
}

enum Target {
    Single(Node),
    Cluster(Arc<Cluster>),
}

impl RedisPipe {
    /// Start `connections` connections to `url` (`redis://host:port[/db]`). Connecting is
    /// lazy and retried forever in the background; calls fail fast until it succeeds.
    pub fn start(
        url: &str,
        connections: usize,
        timeout: Duration,
        max_in_flight: usize,
        breaker: Arc<Breaker>,
        metrics: Arc<Metrics>,
    ) -> Result<RedisPipe, StockError> {
        let o = Options {
            connections,
            timeout,
            max_in_flight,
            wait: None,
        };
        RedisPipe::start_with(url, &o, breaker, metrics)
    }

    /// A pipe to one Redis (`redis://…`) or to a Redis Cluster (`redis+cluster://…`).
    pub fn start_with(
        url: &str,
        o: &Options,
        breaker: Arc<Breaker>,
        metrics: Arc<Metrics>,
    ) -> Result<RedisPipe, StockError> {
        let connections = o.connections.max(1);
        let wait = o.wait.filter(|w| w.replicas > 0);
        let target = if stock::cluster::is_cluster_url(url) {
            let u = stock::cluster::parse_url(url)?;
            let hello = Arc::new(Handshake {
                username: u.username.clone(),
                password: u.password.clone(),
                db: 0,
            });
            Target::Cluster(Cluster::start(
                u,
                hello,
                connections,
                o.timeout,
                wait,
                metrics.clone(),
            ))
        } else {
            let info = redis::Client::open(url)
                .map_err(stock::map_redis_error)?
                .get_connection_info()
                .clone();
            let (host, port) = match info.addr() {
                redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
                other => {
                    return Err(StockError::Invalid(format!(
                        "only plain TCP redis is supported, got {other:?}"
                    )))
                }
            };
            let settings = info.redis_settings();
            let hello = Arc::new(Handshake {
                username: settings.username().map(str::to_string),
                password: settings.password().map(str::to_string),
                db: settings.db(),
            });
            Target::Single(Node::start(
                &host,
                port,
                connections,
                &hello,
                o.timeout,
                wait,
                &metrics,
            ))
        };
        Ok(RedisPipe {
            inner: Arc::new(Inner {
                target,
                timeout: o.timeout,
                max_in_flight: o.max_in_flight,
                wait,
                breaker,
                metrics,
                deadlines: Deadlines::start(o.timeout),
            }),
        })
    }

    pub fn breaker(&self) -> &Breaker {
        &self.inner.breaker
    }

    /// Bumped before any reconnect and on every slot-map change: a purchase whose
    /// generation is unchanged from a check of the store ran on a process that check saw.
    pub fn generation(&self) -> u64 {
        self.inner.metrics.redis_topology_generation()
    }

    /// Whether this pipe talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.target, Target::Cluster(_))
    }

    /// Reload the cluster's slot map now (no-op on one Redis); for tests and operators.
    pub fn refresh_slots(&self) {
        if let Target::Cluster(c) = &self.inner.target {
            c.trigger();
        }
    }

    /// One command, with the pipe's timeout and the breaker.
    pub fn call(&self, cmd: &redis::Cmd) -> Result<Value, StockError> {
        self.call_keyed(cmd, None)
    }

    /// `call`, routed on a cluster by `key` instead of the command's first key.
    fn call_keyed(&self, cmd: &redis::Cmd, key: Option<&[u8]>) -> Result<Value, StockError> {
        let inner = &*self.inner;
        if !inner.breaker.allow() {
            inner.metrics.redis_call(Duration::ZERO, false);
            return Err(StockError::Redis("circuit breaker open".into()));
        }
        let started = Instant::now();
        let result = self.send(cmd, key, started);
        let ok = !matches!(&result, Err(e) if e.is_fault());
        inner.breaker.record(ok);
        inner.metrics.redis_call(started.elapsed(), ok);
        result
    }

    fn send(
        &self,
        cmd: &redis::Cmd,
        key: Option<&[u8]>,
        started: Instant,
    ) -> Result<Value, StockError> {
        let inner = &*self.inner;
        let deadline = started + inner.timeout;
        let wait = inner.wait.is_some() && is_purchase(cmd);
        let packed = cmd.get_packed_command();
        match &inner.target {
            Target::Single(node) => {
                let mut v = inner.submit(node, packed, 1, wait, deadline)?;
                Ok(v.pop().unwrap_or(Value::Nil))
            }
            Target::Cluster(c) => {
                let key = key.map(<[u8]>::to_vec).or_else(|| first_key(cmd));
                let slot = key.as_deref().map(stock::cluster::slot);
                let mut node = c.node_for(slot).ok_or_else(|| {
                    c.trigger();
                    StockError::Redis("redis cluster slot map not loaded yet".into())
                })?;
                let mut asking = false;
                // The first try, and at most two redirections.
                for _ in 0..3 {
                    let (bytes, count) = if asking {
                        let mut b = redis::cmd("ASKING").get_packed_command();
                        b.extend_from_slice(&packed);
                        (b, 2)
                    } else {
                        (packed.clone(), 1)
                    };
                    let v = match inner.submit(&node, bytes, count, wait, deadline) {
                        Ok(mut v) => v.pop().unwrap_or(Value::Nil),
                        Err(e) => {
                            if e.is_fault() {
                                c.trigger();
                            }
                            return Err(e);
                        }
                    };
                    let Value::ServerError(e) = &v else {
                        return Ok(v);
                    };
                    match (e.code(), e.details().and_then(redirect)) {
                        ("MOVED", Some((moved, addr))) => {
                            node = c.moved(moved, &addr);
                            asking = false;
                        }
                        ("ASK", Some((_, addr))) => {
                            node = c.node(&addr);
                            asking = true;
                        }
                        ("CLUSTERDOWN" | "TRYAGAIN", _) => {
                            c.trigger();
                            return Ok(v);
                        }
                        _ => return Ok(v),
                    }
                }
                Err(StockError::Redis(
                    "redis cluster: too many redirections".into(),
                ))
            }
        }
    }
}

impl Inner {
    /// Queue one job on one of `node`'s connections and wait for its replies.
    fn submit(
        &self,
        node: &Node,
        packed: Vec<u8>,
        count: usize,
        wait: bool,
        deadline: Instant,
    ) -> Result<Vec<Value>, StockError> {
        let slot = &node.conns[node.next.fetch_add(1, Ordering::Relaxed) % node.conns.len()];
        if slot.depth.fetch_add(1, Ordering::AcqRel) >= self.max_in_flight {
            slot.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(StockError::Redis(
                "too many redis commands in flight".into(),
            ));
        }
        let shot = Arc::new(Shot::new());
        let reply = Reply {
            shot: shot.clone(),
            depth: slot.depth.clone(),
        };
        let job = Job {
            packed,
            count,
            wait,
            deadline,
            reply,
        };
        // Watched before it is queued: its deadline holds from here on.
        self.deadlines.watch(deadline, &shot);
        if slot.queue.send(job).is_err() {
            return Err(StockError::Redis("redis connection task is gone".into()));
        }
        // The place in the bound is released when the connection drops the reply slot,
        // so a timed-out caller still counts until Redis has answered.
        shot.wait()
    }
}

impl stock::Exec for RedisPipe {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<Value, StockError> {
        self.call(cmd)
    }

    /// On a cluster, on the master of `key`'s slot (the answer), and on every other
    /// node the pipe talks to (best effort): the EVALSHA that answered NOSCRIPT may have
    /// run on an `ASK` target, which is not the slot's master yet.
    fn load_script(&mut self, body: &str, key: Option<&str>) -> Result<Value, StockError> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(body);
        if let Target::Cluster(c) = &self.inner.target {
            let owner = key.and_then(|k| c.node_for(Some(stock::cluster::slot(k.as_bytes()))));
            let others: Vec<Arc<Node>> = c
                .lock_pool()
                .values()
                .filter(|n| owner.as_ref().is_none_or(|o| o.addr != n.addr))
                .cloned()
                .collect();
            let deadline = Instant::now() + self.inner.timeout;
            for n in others {
                let _ = self
                    .inner
                    .submit(&n, load.get_packed_command(), 1, false, deadline);
            }
        }
        self.call_keyed(&load, key.map(str::as_bytes))
    }
}

/// An EVALSHA of the purchase script (the only command WAIT follows).
fn is_purchase(cmd: &redis::Cmd) -> bool {
    let mut args = cmd.args_iter();
    matches!(args.next(), Some(redis::Arg::Simple(n)) if n.eq_ignore_ascii_case(b"EVALSHA"))
        && matches!(args.next(), Some(redis::Arg::Simple(sha))
            if sha == stock::scripts::PURCHASE.sha().as_bytes())
}

/// The key a command is routed by: the first key of EVAL/EVALSHA (none with 0 keys),
/// nothing for commands without keys, else the first argument.
pub fn first_key(cmd: &redis::Cmd) -> Option<Vec<u8>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let n: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            (n > 0).then(|| args.get(3).map(|k| k.to_vec())).flatten()
        }
        b"PING" | b"ECHO" | b"SCRIPT" | b"INFO" | b"CLUSTER" | b"WAIT" | b"TIME" | b"DBSIZE"
        | b"HELLO" | b"AUTH" | b"SELECT" | b"MULTI" | b"EXEC" | b"DISCARD" | b"ASKING"
        | b"READONLY" | b"CONFIG" | b"CLIENT" | b"COMMAND" | b"FLUSHALL" | b"FLUSHDB"
        | b"FUNCTION" | b"ROLE" | b"LASTSAVE" | b"MEMORY" | b"SLOWLOG" | b"LATENCY" => None,
        _ => args.get(1).map(|k| k.to_vec()),
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

impl Node {
    fn start(
        host: &str,
        port: u16,
        connections: usize,
        hello: &Arc<Handshake>,
        timeout: Duration,
        wait: Option<WaitPolicy>,
        metrics: &Arc<Metrics>,
    ) -> Node {
        let conns = (0..connections.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Job>();
                let depth = Arc::new(AtomicUsize::new(0));
                let (host, m, hello) = (host.to_string(), metrics.clone(), hello.clone());
                may::go!(move || connection_loop(&host, port, &hello, timeout, wait, rx, m));
                Slot { queue: tx, depth }
            })
            .collect();
        Node {
            addr: format!("{host}:{port}"),
            conns,
            next: AtomicUsize::new(0),
        }
    }
}

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
struct Cluster {
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
    fn start(
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
    fn trigger(&self) {
        let _ = self.refresh.try_send(());
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Node>>> {
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
    fn node_for(&self, slot: Option<u16>) -> Option<Arc<Node>> {
        let map = self.current();
        match slot {
            Some(s) => map.nodes.get(map.owner[s as usize] as usize).cloned(),
            None if map.nodes.is_empty() => None,
            None => Some(
                map.nodes[self.next_any.fetch_add(1, Ordering::Relaxed) % map.nodes.len()].clone(),
            ),
        }
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

/// `CLUSTER SLOTS` of the node at `addr`: (first, last, master `host:port`).
fn fetch_slots(
    addr: &str,
    hello: &Handshake,
    timeout: Duration,
) -> Result<Vec<(u16, u16, String)>, String> {
    let (host, port) = split_addr(addr).ok_or_else(|| format!("bad address {addr}"))?;
    let sa = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut p = redis::Parser::new();
    for cmd in hello
        .commands()
        .into_iter()
        .chain([redis::cmd("CLUSTER").arg("SLOTS").clone()])
    {
        s.write_all(&cmd.get_packed_command())
            .map_err(|e| e.to_string())?;
        let v = p.parse_value(&mut s).map_err(|e| e.to_string())?;
        if let Value::ServerError(e) = &v {
            return Err(format!("{e:?}"));
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
    Err("no reply to CLUSTER SLOTS".into())
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

/// What a new connection says before serving: AUTH (from the URL's user and password)
/// and SELECT (its database).
struct Handshake {
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

impl Handshake {
    fn commands(&self) -> Vec<redis::Cmd> {
        let mut cmds = Vec::new();
        if let Some(pw) = &self.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &self.username {
                auth.arg(user);
            }
            cmds.push(auth.arg(pw).clone());
        }
        if self.db != 0 {
            cmds.push(redis::cmd("SELECT").arg(self.db).clone());
        }
        cmds
    }
}

/// Connect, run the writer here and the reader in its own coroutine; on any failure
/// fail what is pending and reconnect with capped backoff.
fn connection_loop(
    host: &str,
    port: u16,
    hello: &Handshake,
    timeout: Duration,
    wait: Option<WaitPolicy>,
    rx: mpsc::Receiver<Job>,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect(host, port, hello, timeout) {
            Ok(stream) => {
                backoff = Duration::from_millis(50);
                // A new connection may reach a process no store check has seen yet.
                metrics.redis_topology_changed();
                metrics.redis_connected(true);
                let served = serve(stream, &rx, timeout, wait, &metrics);
                metrics.redis_connected(false);
                match served {
                    // Every sender is gone (a cluster node no longer in the map): done.
                    Ok(()) => return,
                    Err(e) => {
                        // Before any reconnect: the next connection may reach a process
                        // that lost writes (restarted, or a promoted replica).
                        metrics.redis_topology_changed();
                        tracing::warn!(error = %e, %host, port, "redis connection lost; reconnecting")
                    }
                }
            }
            Err(e) => {
                metrics.redis_topology_changed();
                tracing::warn!(error = %e, %host, port, "redis connect failed");
                // Nobody is writing: fail the waiting callers now instead of at their timeout.
                loop {
                    match rx.try_recv() {
                        Ok(job) => job
                            .reply
                            .complete(Err(StockError::Redis(format!("connect: {e}")))),
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                    }
                }
            }
        }
        may::coroutine::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// The first address of `host`: an IP literal at once; a name is resolved on a plain
/// thread (the system resolver blocks, and must never block a may worker), waited for
/// at most `timeout`.
fn resolve(host: &str, port: u16, timeout: Duration) -> std::io::Result<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let (tx, rx) = may::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("redis-dns".into())
        .spawn(move || {
            let _ = tx.send(
                (name.as_str(), port)
                    .to_socket_addrs()
                    .map(|mut a| a.next()),
            );
        })?;
    match rx.recv_timeout(timeout.max(Duration::from_secs(1))) {
        Ok(Ok(Some(addr))) => Ok(addr),
        Ok(Ok(None)) => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host}: no address"),
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("resolving {host} took too long"),
        )),
    }
}

fn connect(
    host: &str,
    port: u16,
    hello: &Handshake,
    timeout: Duration,
) -> std::io::Result<may::net::TcpStream> {
    let addr = resolve(host, port, timeout)?;
    let mut s = may::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    let cmds = hello.commands();
    if !cmds.is_empty() {
        s.set_read_timeout(Some(timeout))?;
        let mut p = redis::Parser::new();
        for cmd in cmds {
            s.write_all(&cmd.get_packed_command())?;
            // A refused AUTH or SELECT is an error reply: fail the connection with it.
            if let Value::ServerError(e) = p.parse_value(&mut s).map_err(std::io::Error::other)? {
                return Err(std::io::Error::other(format!(
                    "redis refused the handshake: {e:?}"
                )));
            }
        }
        s.set_read_timeout(None)?;
    }
    Ok(s)
}

/// What the reader expects next: a job's replies, or the WAIT closing a write.
enum Pending {
    Job {
        reply: Reply,
        count: usize,
        wait: bool,
    },
    Wait,
}

/// A purchase that reserved a unit (its script answered `OK`).
fn reserved(v: &[Value]) -> bool {
    matches!(v.last(), Some(Value::Array(items))
        if matches!(items.first(), Some(Value::BulkString(b)) if b == b"OK"))
}

/// Run one connection until it breaks (`Err`) or every sender is gone (`Ok`).
fn serve(
    stream: may::net::TcpStream,
    rx: &mpsc::Receiver<Job>,
    timeout: Duration,
    wait: Option<WaitPolicy>,
    metrics: &Arc<Metrics>,
) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let reader = stream;
    reader.set_read_timeout(Some(timeout.max(Duration::from_millis(100))))?;
    // The writer hands the reader each write's reply slots in one message, in order,
    // before the write (one channel message per write, not per command).
    let (pending_tx, pending_rx) = mpsc::channel::<Vec<Pending>>();
    let broken = Arc::new(AtomicBool::new(false));
    // Requests written and not yet answered.
    let outstanding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader_task = {
        let broken = broken.clone();
        let outstanding = outstanding.clone();
        let shutdown = reader.try_clone()?;
        let metrics = metrics.clone();
        may::go!(move || {
            let mut reader = reader;
            let mut parser = redis::Parser::new();
            // Read timeouts in a row with requests outstanding: two mean a request went
            // unanswered for at least a whole timeout (one may be a request that was
            // written just before the timer fired).
            let mut silent = 0;
            // The job being answered (replies so far), and purchases answered by Redis
            // that wait for their write's WAIT.
            let mut current: Option<(Reply, usize, bool, Vec<Value>)> = None;
            let mut held: Vec<(Reply, Vec<Value>)> = Vec::new();
            // Reply slots of the writes so far, not yet answered.
            let mut queued: VecDeque<Pending> = VecDeque::new();
            'read: loop {
                let value = match parser.parse_value(&mut reader) {
                    Ok(v) => v,
                    Err(e) if e.is_timeout() => {
                        silent = if outstanding.load(Ordering::Acquire) == 0 {
                            0
                        } else {
                            silent + 1
                        };
                        if silent < 2 {
                            continue;
                        }
                        tracing::warn!("redis reply overdue; closing the connection so later replies cannot go to the wrong caller");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "redis read failed or a reply is overdue; closing the connection");
                        break;
                    }
                };
                silent = 0;
                if current.is_none() {
                    if queued.is_empty() {
                        match pending_rx.recv() {
                            Ok(batch) => queued.extend(batch),
                            Err(_) => break 'read,
                        }
                    }
                    match queued.pop_front() {
                        Some(Pending::Job { reply, count, wait }) => {
                            current = Some((reply, count, wait, Vec::with_capacity(count)))
                        }
                        Some(Pending::Wait) => {
                            outstanding.fetch_sub(1, Ordering::AcqRel);
                            let acked = match value {
                                Value::Int(n) => n,
                                _ => 0,
                            };
                            let want = wait.map_or(0, |w| w.replicas as i64);
                            for (reply, values) in held.drain(..) {
                                if acked < want && reserved(&values) {
                                    metrics.redis_unreplicated();
                                }
                                reply.complete(Ok(values));
                            }
                            continue 'read;
                        }
                        None => break 'read,
                    }
                }
                let Some((_, count, _, values)) = current.as_mut() else {
                    break;
                };
                values.push(value);
                if values.len() >= *count {
                    let (reply, _, wait, values) = current.take().expect("current job");
                    outstanding.fetch_sub(1, Ordering::AcqRel);
                    if wait {
                        held.push((reply, values));
                    } else {
                        reply.complete(Ok(values));
                    }
                }
            }
            broken.store(true, Ordering::Release);
            let _ = shutdown.shutdown(std::net::Shutdown::Both);
            // Fail whatever was written but not answered.
            let lost = || Err(StockError::Redis("connection lost".into()));
            if let Some((reply, ..)) = current.take() {
                reply.complete(lost());
            }
            for (reply, _) in held.drain(..) {
                reply.complete(lost());
            }
            while let Ok(batch) = pending_rx.try_recv() {
                queued.extend(batch);
            }
            for p in queued.drain(..) {
                if let Pending::Job { reply, .. } = p {
                    reply.complete(lost());
                }
            }
        })
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    let result = loop {
        // Wait for work, waking now and then to notice a broken reader.
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(j) => j,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if broken.load(Ordering::Acquire) {
                    break Err(std::io::Error::other("reader stopped"));
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        };
        if broken.load(Ordering::Acquire) {
            first
                .reply
                .complete(Err(StockError::Redis("connection lost".into())));
            break Err(std::io::Error::other("reader stopped"));
        }
        buf.clear();
        let now = Instant::now();
        let mut job = Some(first);
        let mut batch: Vec<Pending> = Vec::new();
        let mut waiting = false;
        while let Some(j) = job.take() {
            if j.deadline <= now || j.reply.abandoned() {
                // Its caller has given up: never run a command nobody will see answered.
                drop(j);
            } else {
                buf.extend_from_slice(&j.packed);
                waiting |= j.wait;
                batch.push(Pending::Job {
                    reply: j.reply,
                    count: j.count.max(1),
                    wait: j.wait,
                });
            }
            if batch.len() < BATCH {
                job = rx.try_recv().ok();
            }
        }
        // One WAIT for every purchase of this write, right behind them.
        if let (true, Some(w)) = (waiting, wait) {
            buf.extend_from_slice(
                &redis::cmd("WAIT")
                    .arg(w.replicas)
                    .arg(w.timeout_ms)
                    .get_packed_command(),
            );
            batch.push(Pending::Wait);
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        // A reader gone fails the batch's callers (their reply slots are dropped).
        if pending_tx.send(batch).is_err() {
            break Err(std::io::Error::other("reader stopped"));
        }
        // Before the write: no reply can come before it.
        outstanding.fetch_add(n, Ordering::AcqRel);
        if let Err(e) = writer.write_all(&buf) {
            break Err(e);
        }
    };
    let _ = writer.shutdown(std::net::Shutdown::Both);
    drop(pending_tx);
    let _ = reader_task.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A server that reads every command and answers `+PONG` to each `PING`, or
    /// (silent) never answers.
    fn fake_redis(silent: bool) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut carry = Vec::new();
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        carry.extend_from_slice(&buf[..n]);
                        let pings = carry.windows(4).filter(|w| w == b"PING").count();
                        let keep = carry.len().saturating_sub(3);
                        carry.drain(..keep);
                        if !silent && s.write_all(&b"+PONG\r\n".repeat(pings)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    fn pipe(port: u16, timeout: Duration) -> RedisPipe {
        let p = RedisPipe::start(
            &format!("redis://127.0.0.1:{port}"),
            2,
            timeout,
            1000,
            Arc::new(Breaker::new(100_000, Duration::from_millis(100))),
            Arc::new(Metrics::default()),
        )
        .expect("pipe");
        std::thread::sleep(Duration::from_millis(100));
        p
    }

    #[test]
    fn calls_are_answered_in_order_from_coroutines_and_threads() {
        let p = pipe(fake_redis(false), Duration::from_secs(2));
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let p = p.clone();
                may::go!(move || (0..20).all(|_| {
                    matches!(p.call(&redis::cmd("PING")), Ok(Value::SimpleString(s)) if s == "PONG")
                }))
            })
            .collect();
        assert!(handles.into_iter().all(|h| h.join().unwrap_or(false)));
        // A plain thread waits on its answer too.
        assert!(matches!(
            p.call(&redis::cmd("PING")),
            Ok(Value::SimpleString(_))
        ));
    }

    #[test]
    fn an_unanswered_call_times_out_at_its_deadline_without_a_timer_of_its_own() {
        let timeout = Duration::from_millis(150);
        let p = pipe(fake_redis(true), timeout);
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let p = p.clone();
                may::go!(move || {
                    let t = Instant::now();
                    (p.call(&redis::cmd("PING")), t.elapsed())
                })
            })
            .collect();
        for h in handles {
            let (r, took) = h.join().expect("caller");
            assert!(matches!(r, Err(StockError::Timeout)), "{r:?}");
            assert!(
                took >= timeout && took < timeout * 3,
                "answered after {took:?}"
            );
        }
        // A plain thread's call ends by its deadline too (a timeout, or the connection
        // closed on the silence and failing it).
        let t = Instant::now();
        assert!(p.call(&redis::cmd("PING")).is_err());
        assert!(
            t.elapsed() < timeout * 3,
            "answered after {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn the_deadline_queue_keeps_only_unanswered_calls() {
        let d = Deadlines::start(Duration::from_secs(60));
        let now = Instant::now();
        let shots: Vec<Arc<Shot>> = (0..DEADLINES_SWEEP + 10)
            .map(|_| Arc::new(Shot::new()))
            .collect();
        for s in &shots {
            d.watch(now + Duration::from_secs(60), s);
        }
        // The first call stays unanswered; every other is answered.
        for s in &shots[1..] {
            s.complete(Ok(Vec::new()));
        }
        let (expired, next) = d.expire(now);
        assert!(expired.is_empty() && next.is_some());
        assert_eq!(d.lock().len(), 1, "answered calls swept");
        let (expired, _) = d.expire(now + Duration::from_secs(61));
        assert_eq!(expired.len(), 1);
        expired[0].complete(Err(StockError::Timeout));
        assert!(matches!(shots[0].wait(), Err(StockError::Timeout)));
        assert!(d.lock().is_empty());
    }
}
