//! One server's connections: each a coroutine that connects (resolving names off the
//! may workers, then AUTH/SELECT), serves until the socket breaks, fails what is
//! pending, and reconnects with capped backoff.

use super::link::Link;
use super::reply::Reply;
use super::serve::serve;
use super::WaitPolicy;
use crate::metrics::Metrics;
use may::sync::mpsc;
use redis::Value;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stock::StockError;

pub(super) struct Job {
    /// One or more packed commands (ASKING + command), answered by `count` replies.
    pub(super) packed: Vec<u8>,
    pub(super) count: usize,
    /// A purchase: answered after the write's WAIT.
    pub(super) wait: bool,
    pub(super) deadline: Instant,
    pub(super) reply: Reply,
}

pub(super) struct Slot {
    pub(super) queue: mpsc::Sender<Job>,
    pub(super) depth: Arc<AtomicUsize>,
}

/// One server's pipelined connections.
pub(super) struct Node {
    pub(super) addr: String,
    pub(super) conns: Vec<Slot>,
    pub(super) next: AtomicUsize,
    /// The purchases' own round robin (one counter for both would lock each kind onto
    /// one parity when they alternate, token then order).
    pub(super) next_wait: AtomicUsize,
    /// Connections `..waiting` carry the purchases (each write of them ends with a
    /// `WAIT`), the rest every other command, which a WAIT would otherwise hold up: Redis
    /// blocks a connection while its WAIT waits. All of them share when there is no
    /// WAIT or only one connection.
    pub(super) waiting: usize,
}

impl Node {
    pub(super) fn start(
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
        let n = connections.max(1);
        Node {
            addr: format!("{host}:{port}"),
            conns,
            next: AtomicUsize::new(0),
            next_wait: AtomicUsize::new(0),
            waiting: if wait.is_some() && n >= 2 {
                n.div_ceil(2)
            } else {
                n
            },
        }
    }

    /// The connection for the next command: a purchase (`wait`) on one that carries
    /// WAITs, anything else on one that does not (round robin within each).
    pub(super) fn slot(&self, wait: bool) -> &Slot {
        let counter = if wait { &self.next_wait } else { &self.next };
        let i = counter.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        let (from, len) = if wait || self.waiting >= n {
            (0, self.waiting.clamp(1, n))
        } else {
            (self.waiting, n - self.waiting)
        };
        &self.conns[from + i % len]
    }
}

/// What a new connection does before serving: TLS (`rediss://`), then AUTH (from the
/// URL's user and password) and SELECT (its database).
pub(super) struct Handshake {
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) db: i64,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Handshake {
    pub(super) fn commands(&self) -> Vec<redis::Cmd> {
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

fn connect(host: &str, port: u16, hello: &Handshake, timeout: Duration) -> std::io::Result<Link> {
    let addr = resolve(host, port, timeout)?;
    let s = may::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    let mut s = match &hello.tls {
        None => Link::Plain(s),
        Some(config) => {
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            let link = Link::tls(s, host, config.clone())?;
            link.set_read_timeout(None)?;
            link
        }
    };
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
