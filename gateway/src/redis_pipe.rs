//! Redis I/O that fits may's coroutines: a few shared connections, each with automatic
//! pipelining.
//!
//! Each connection runs a writer and a reader coroutine. A caller packs its command,
//! queues it on the connection's may channel with a reply slot, and waits on that slot
//! with a timeout (the worker thread runs other coroutines meanwhile). The writer drains
//! everything queued into one `write` (many requests in flight on one socket), hands the
//! reply slots to the reader in the same order, and the reader completes them as replies
//! arrive (Redis answers in order). A broken socket fails every waiting caller at once
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

use crate::breaker::Breaker;
use crate::metrics::Metrics;
use may::sync::mpsc;
use redis::Value;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stock::StockError;

const BATCH: usize = 512;

/// A caller's reply slot. Dropping it (answered or not) releases its place in the
/// connection's in-flight bound, so no path can leak capacity.
struct Reply {
    tx: mpsc::Sender<Result<Value, StockError>>,
    depth: Arc<AtomicUsize>,
}

impl Reply {
    fn complete(self, r: Result<Value, StockError>) {
        let _ = self.tx.send(r);
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.depth.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Job {
    packed: Vec<u8>,
    deadline: Instant,
    reply: Reply,
}

struct Slot {
    queue: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
}

/// Shared handle; clone freely (one per coroutine is fine).
#[derive(Clone)]
pub struct RedisPipe {
    inner: Arc<Inner>,
}

struct Inner {
    slots: Vec<Slot>,
    next: AtomicUsize,
    timeout: Duration,
    max_in_flight: usize,
    breaker: Arc<Breaker>,
    metrics: Arc<Metrics>,
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
        let slots = (0..connections.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Job>();
                let depth = Arc::new(AtomicUsize::new(0));
                let (host, m, hello) = (host.clone(), metrics.clone(), hello.clone());
                may::go!(move || connection_loop(&host, port, &hello, timeout, rx, m));
                Slot { queue: tx, depth }
            })
            .collect();
        Ok(RedisPipe {
            inner: Arc::new(Inner {
                slots,
                next: AtomicUsize::new(0),
                timeout,
                max_in_flight,
                breaker,
                metrics,
            }),
        })
    }

    pub fn breaker(&self) -> &Breaker {
        &self.inner.breaker
    }

    /// One command, with the pipe's timeout and the breaker.
    pub fn call(&self, cmd: &redis::Cmd) -> Result<Value, StockError> {
        let inner = &*self.inner;
        if !inner.breaker.allow() {
            inner.metrics.redis_call(Duration::ZERO, false);
            return Err(StockError::Redis("circuit breaker open".into()));
        }
        let started = Instant::now();
        let result = self.send(cmd, started);
        let ok = !matches!(&result, Err(e) if e.is_fault());
        inner.breaker.record(ok);
        inner.metrics.redis_call(started.elapsed(), ok);
        result
    }

    fn send(&self, cmd: &redis::Cmd, started: Instant) -> Result<Value, StockError> {
        let inner = &*self.inner;
        let slot = &inner.slots[inner.next.fetch_add(1, Ordering::Relaxed) % inner.slots.len()];
        if slot.depth.fetch_add(1, Ordering::AcqRel) >= inner.max_in_flight {
            slot.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(StockError::Redis(
                "too many redis commands in flight".into(),
            ));
        }
        let (tx, rx) = mpsc::channel();
        let reply = Reply {
            tx,
            depth: slot.depth.clone(),
        };
        let deadline = started + inner.timeout;
        let job = Job {
            packed: cmd.get_packed_command(),
            deadline,
            reply,
        };
        if slot.queue.send(job).is_err() {
            return Err(StockError::Redis("redis connection task is gone".into()));
        }
        // The place in the bound is released when the connection drops the reply slot,
        // so a timed-out caller still counts until Redis has answered.
        match rx.recv_timeout(inner.timeout) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(StockError::Timeout),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(StockError::Redis("connection lost".into()))
            }
        }
    }
}

impl stock::Exec for RedisPipe {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<Value, StockError> {
        self.call(cmd)
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
    rx: mpsc::Receiver<Job>,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect(host, port, hello, timeout) {
            Ok(stream) => {
                backoff = Duration::from_millis(50);
                metrics.redis_connected(true);
                if let Err(e) = serve(stream, &rx, timeout) {
                    tracing::warn!(error = %e, "redis connection lost; reconnecting");
                }
                metrics.redis_connected(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis connect failed");
                // Nobody is writing: fail the waiting callers now instead of at their timeout.
                while let Ok(job) = rx.try_recv() {
                    job.reply
                        .complete(Err(StockError::Redis(format!("connect: {e}"))));
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
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(|mut a| a.next()));
        })?;
    match rx.recv_timeout(timeout.max(Duration::from_secs(1))) {
        Ok(Ok(Some(addr))) => Ok(addr),
        Ok(Ok(None)) => Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: no address"))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("resolving {host} took too long"))),
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
                return Err(std::io::Error::other(format!("redis refused the handshake: {e:?}")));
            }
        }
        s.set_read_timeout(None)?;
    }
    Ok(s)
}

/// Run one connection until it breaks.
fn serve(
    stream: may::net::TcpStream,
    rx: &mpsc::Receiver<Job>,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let reader = stream;
    reader.set_read_timeout(Some(timeout.max(Duration::from_millis(100))))?;
    let (pending_tx, pending_rx) = mpsc::channel::<Reply>();
    let broken = Arc::new(AtomicBool::new(false));
    // Requests written and not yet answered.
    let outstanding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader_task = {
        let broken = broken.clone();
        let outstanding = outstanding.clone();
        let shutdown = reader.try_clone()?;
        may::go!(move || {
            let mut reader = reader;
            let mut parser = redis::Parser::new();
            // Read timeouts in a row with requests outstanding: two mean a request went
            // unanswered for at least a whole timeout (one may be a request that was
            // written just before the timer fired).
            let mut silent = 0;
            loop {
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
                let Ok(reply) = pending_rx.recv() else { break };
                outstanding.fetch_sub(1, Ordering::AcqRel);
                reply.complete(Ok(value));
            }
            broken.store(true, Ordering::Release);
            let _ = shutdown.shutdown(std::net::Shutdown::Both);
            // Fail whatever was written but not answered.
            while let Ok(reply) = pending_rx.try_recv() {
                reply.complete(Err(StockError::Redis("connection lost".into())));
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
        let mut n = 0;
        while let Some(j) = job.take() {
            if j.deadline <= now {
                // Its caller has given up: never run a command nobody will see answered.
                drop(j);
            } else {
                buf.extend_from_slice(&j.packed);
                if pending_tx.send(j.reply).is_err() {
                    break;
                }
                outstanding.fetch_add(1, Ordering::AcqRel);
                n += 1;
            }
            if n < BATCH {
                job = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if let Err(e) = writer.write_all(&buf) {
                break Err(e);
            }
        }
    };
    let _ = writer.shutdown(std::net::Shutdown::Both);
    drop(pending_tx);
    let _ = reader_task.join();
    result
}
