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
//! "Redis Cluster"). One WAIT per batch: a connection has at most one WAIT outstanding
//! (Redis blocks the connection meanwhile), and the purchases queued behind it go out
//! together, behind one WAIT, when it is answered. Purchases use half of a master's
//! connections (rounded up) and every other command the other half, so a WAIT that
//! waits (a slow replica) never holds a token or a read on its socket (with two
//! connections or more; purchase timeouts still count toward the shared breaker).
//!
//! Files: [`reply`] (reply slots and the deadline watcher), [`connection`] (connect,
//! handshake, reconnect), [`serve`] (one connection's writer and reader), [`cluster`]
//! (slot map, refresher, `MOVED`/`ASK`); this file is the pipe's API.

mod cluster;
mod connection;
mod link;
mod reply;
mod serve;

use crate::breaker::Breaker;
use crate::metrics::Metrics;
use cluster::Cluster;
use connection::{Handshake, Job, Node};
use redis::Value;
use reply::{Deadlines, Reply, Shot};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stock::StockError;

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
                tls: None,
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
            let (host, port, tls) = match info.addr() {
                redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p, None),
                redis::ConnectionAddr::TcpTls { host, port, .. } => {
                    (host.clone(), *port, Some(stock::tls::tls()?.config.clone()))
                }
                other => {
                    return Err(StockError::Invalid(format!(
                        "only TCP redis (redis://, rediss://) is supported, got {other:?}"
                    )))
                }
            };
            let settings = info.redis_settings();
            let hello = Arc::new(Handshake {
                username: settings.username().map(str::to_string),
                password: settings.password().map(str::to_string),
                db: settings.db(),
                tls,
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
            Target::Cluster(c) => c.send(inner, cmd, key, &packed, wait, deadline),
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
        let slot = node.slot(wait);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

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
}
