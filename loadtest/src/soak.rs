//! The hostile soak: thousands of hostile connections held against the gateway while a
//! rush runs, and what that costs the honest buyers and the gateway.
//!
//! One run, one gateway, one configuration:
//!
//! 1. the gateway's idle RSS (`VmRSS` of its process, sampled every 500 ms throughout);
//! 2. a baseline rush on sale A, every request timed (HdrHistogram);
//! 3. the hostile connections ([`Hostile`]) open and are held, re-opened as the gateway
//!    closes them, while the same rush runs on sale B; they stay at least `hold` long so
//!    the gateway's head, body and write timeouts are exercised;
//! 4. every hostile socket is closed; the gateway's open-connection gauge must fall back;
//! 5. the invariants of both sales ([`crate::verify`]).
//!
//! [`Summary::violations`] compares the run with [`Bounds`], all relative to what the same
//! run measured: RSS peak under the soak ≤ idle + N MB, rush p99 with the hostile load
//! ≤ K × p99 without + slack, no timed hostile kind held past the gateway's timeout plus
//! a grace, every refusal answered, connections drained, every invariant.
//!
//! Hostile kinds ([`Kind`]), each a fixed number of concurrent slots, only to the
//! gateway's (loopback) address, all on one thread of non-blocking sockets and `poll(2)`:
//! slowloris heads, slow bodies, unread pipelines, half-closed and idle sockets, garbage
//! bytes, too many headers. A slot whose connection the gateway closed is re-opened after
//! `reopen_after`, while fewer than `max_opened` connections were opened in all.

use crate::buyer::{Client, LoadError};
use crate::rush::Record;
use crate::verify;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------
// Hostile connections
// ---------------------------------------------------------------------------------

/// What a hostile connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A request head, one byte every `byte_interval`, never finished (→ 408 head_timeout).
    Slowloris,
    /// A complete head with `Content-Length: 1000`, the body one byte every
    /// `byte_interval` (→ 408 body_timeout).
    SlowBody,
    /// `pipeline_requests` pipelined `GET /metrics`, written as fast as the socket takes
    /// them, never a byte read (→ closed after the write timeout).
    Pipeline,
    /// Connect, then `shutdown(Write)` (→ closed at once, quietly).
    HalfClose,
    /// Connect and send nothing (→ closed quietly at the head timeout).
    Idle,
    /// A kilobyte of random bytes ending in CRLF CRLF (→ 400).
    Garbage,
    /// A request with 100 header fields (→ 431 too_many_headers).
    Headers,
}

pub const KINDS: [Kind; 7] = [
    Kind::Slowloris,
    Kind::SlowBody,
    Kind::Pipeline,
    Kind::HalfClose,
    Kind::Idle,
    Kind::Garbage,
    Kind::Headers,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Slowloris => "slowloris",
            Kind::SlowBody => "slow-body",
            Kind::Pipeline => "unread-pipeline",
            Kind::HalfClose => "half-close",
            Kind::Idle => "idle",
            Kind::Garbage => "garbage",
            Kind::Headers => "too-many-headers",
        }
    }

    /// The refusal status the gateway must answer with, for kinds that read answers.
    pub fn expected_status(self) -> Option<u16> {
        match self {
            Kind::Slowloris | Kind::SlowBody => Some(408),
            Kind::Garbage => Some(400),
            Kind::Headers => Some(431),
            Kind::Pipeline | Kind::HalfClose | Kind::Idle => None,
        }
    }

    /// Kinds the gateway ends only by a timeout (head, body or write): their connections
    /// must not outlive it.
    pub fn timed(self) -> bool {
        matches!(
            self,
            Kind::Slowloris | Kind::SlowBody | Kind::Pipeline | Kind::Idle
        )
    }

    fn index(self) -> usize {
        KINDS.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Concurrent slots per kind, in [`KINDS`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix(pub [usize; 7]);

impl Mix {
    /// `total` slots: 2 % unread pipelines (at least 1; each may hold up to the
    /// gateway's output cap), the rest 30 % slowloris, 20 % slow bodies, 10 % half-closed,
    /// 15 % idle, 10 % garbage, the remainder too many headers.
    pub fn split(total: usize) -> Mix {
        Mix::with_pipelines(total, (total / 50).max(1))
    }

    /// `total` slots of which `pipelines` unread pipelines, the rest split as above.
    pub fn with_pipelines(total: usize, pipelines: usize) -> Mix {
        let pipeline = pipelines.min(total);
        let rest = total - pipeline;
        let slowloris = rest * 30 / 100;
        let slow_body = rest * 20 / 100;
        let half = rest * 10 / 100;
        let idle = rest * 15 / 100;
        let garbage = rest * 10 / 100;
        let headers = rest - slowloris - slow_body - half - idle - garbage;
        Mix([slowloris, slow_body, pipeline, half, idle, garbage, headers])
    }

    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    pub fn get(&self, k: Kind) -> usize {
        self.0[k.index()]
    }

    pub fn set(&mut self, k: Kind, n: usize) {
        self.0[k.index()] = n;
    }
}

#[derive(Clone, Debug)]
pub struct HostileOptions {
    /// The gateway; must be a loopback address.
    pub addr: SocketAddr,
    pub mix: Mix,
    pub byte_interval: Duration,
    pub pipeline_requests: usize,
    /// Connections opened in all, re-opens included.
    pub max_opened: u64,
    /// Delay before a slot the gateway closed is opened again.
    pub reopen_after: Duration,
    /// Connections opened per 10 ms tick at most (the ramp).
    pub open_per_tick: usize,
}

/// What happened to one kind's connections.
#[derive(Clone, Debug, Default)]
pub struct KindStats {
    pub slots: usize,
    pub opened: u64,
    pub connect_failed: u64,
    /// First status line read, by status (kinds that read).
    pub statuses: BTreeMap<u16, u64>,
    /// The gateway closed it (EOF, reset, or a write refused) before we did.
    pub closed_by_server: u64,
    /// Closed by the server with an answer other than the expected refusal, or none.
    pub closed_without_expected: u64,
    /// Still open when the hostile phase ended (we closed them).
    pub open_at_end: u64,
    /// Longest a connection lived before the server closed it.
    pub longest_server_close: Duration,
    /// Oldest connection still open at the end.
    pub oldest_at_end: Duration,
    /// Pipelined requests written (Pipeline only).
    pub requests_written: u64,
}

#[derive(Clone, Debug, Default)]
pub struct HostileStats {
    pub kinds: BTreeMap<Kind, KindStats>,
    /// Most hostile connections open at once.
    pub peak_open: u64,
    pub ran: Duration,
}

impl HostileStats {
    fn sum(&self, f: impl Fn(&KindStats) -> u64) -> u64 {
        self.kinds.values().map(f).sum()
    }
    pub fn opened(&self) -> u64 {
        self.sum(|k| k.opened)
    }
    pub fn connect_failed(&self) -> u64 {
        self.sum(|k| k.connect_failed)
    }
    pub fn refused_with_status(&self) -> u64 {
        self.sum(|k| {
            k.statuses
                .iter()
                .filter(|(s, _)| **s >= 400)
                .map(|(_, n)| n)
                .sum()
        })
    }
    pub fn closed_by_server(&self) -> u64 {
        self.sum(|k| k.closed_by_server)
    }
    pub fn open_at_end(&self) -> u64 {
        self.sum(|k| k.open_at_end)
    }
}

/// The hostile connections, running on a thread of their own until [`Hostile::stop`].
pub struct Hostile {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicU64>,
    opened: Arc<AtomicU64>,
    handle: JoinHandle<HostileStats>,
}

impl Hostile {
    /// Start the driver; refuses a non-loopback address.
    pub fn start(opts: HostileOptions) -> Result<Hostile, LoadError> {
        if !opts.addr.ip().is_loopback() {
            return Err(LoadError::Http(format!(
                "hostile connections go only to a loopback address, not {}",
                opts.addr
            )));
        }
        raise_nofile_limit();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicU64::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let (s, o, n) = (stop.clone(), open.clone(), opened.clone());
        let handle = std::thread::Builder::new()
            .name("hostile".into())
            .spawn(move || drive(opts, s, o, n))
            .map_err(|e| LoadError::Http(e.to_string()))?;
        Ok(Hostile {
            stop,
            open,
            opened,
            handle,
        })
    }

    /// Hostile connections open now.
    pub fn open_now(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Close every hostile socket and return what happened.
    pub fn stop(self) -> HostileStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// Raise this process's soft `RLIMIT_NOFILE` to its hard limit (thousands of sockets).
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        r.rlim_cur
    }
}

struct Conn {
    sock: TcpStream,
    connected: bool,
    opened: Instant,
    next: Instant,
    /// Bytes of the pipeline written, or dribble steps taken.
    progress: usize,
    head: Vec<u8>,
    status: Option<u16>,
}

struct Slot {
    kind: Kind,
    conn: Option<Conn>,
    free_at: Instant,
    seed: u64,
}

enum Event {
    Keep,
    ServerClosed,
    ConnectFailed,
}

fn connect_nonblocking(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_nonblocking(true)?;
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

const SLOW_HEAD: &[u8] = b"GET /v1/sales/soak_hostile HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
const SLOW_BODY_HEAD: &[u8] = b"POST /v1/sales/soak_hostile/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
const PIPELINED: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

fn many_headers() -> Vec<u8> {
    let mut v = b"GET /v1/sales/soak_hostile HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..100 {
        v.extend_from_slice(format!("X-Soak-{i}: v\r\n").as_bytes());
    }
    v.extend_from_slice(b"\r\n");
    v
}

/// A kilobyte of pseudo-random bytes, never a valid request line (it starts with a
/// control byte), ending in CRLF CRLF.
fn garbage(seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut v = vec![0x01u8];
    for _ in 0..1020 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push((x >> 24) as u8);
    }
    v.extend_from_slice(b"\r\n\r\n");
    v
}

/// Parse "HTTP/1.1 NNN" from the first bytes of an answer.
fn status_of(head: &[u8]) -> Option<u16> {
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn drive(
    opts: HostileOptions,
    stop: Arc<AtomicBool>,
    open_now: Arc<AtomicU64>,
    opened_all: Arc<AtomicU64>,
) -> HostileStats {
    let t0 = Instant::now();
    let mut stats = HostileStats::default();
    let mut slots = Vec::new();
    for k in KINDS {
        let n = opts.mix.get(k);
        stats.kinds.insert(
            k,
            KindStats {
                slots: n,
                ..Default::default()
            },
        );
        for i in 0..n {
            slots.push(Slot {
                kind: k,
                conn: None,
                free_at: t0,
                seed: (k.index() as u64) << 32 | i as u64,
            });
        }
    }
    // Interleave kinds so the ramp opens a bit of each.
    slots.sort_by_key(|s| s.seed & 0xffff_ffff);
    let pipeline: Arc<[u8]> = PIPELINED.repeat(opts.pipeline_requests.max(1)).into();
    let headers = many_headers();
    let mut open: u64 = 0;
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(slots.len());
    let mut idx: Vec<usize> = Vec::with_capacity(slots.len());
    let mut buf = vec![0u8; 16 * 1024];

    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Open what is due, within the ramp and the total.
        let mut budget = opts.open_per_tick;
        for s in slots.iter_mut() {
            if budget == 0 || opened_all.load(Ordering::Relaxed) >= opts.max_opened {
                break;
            }
            if s.conn.is_some() || now < s.free_at {
                continue;
            }
            budget -= 1;
            opened_all.fetch_add(1, Ordering::Relaxed);
            let ks = stats.kinds.get_mut(&s.kind).expect("kind");
            ks.opened += 1;
            match connect_nonblocking(opts.addr) {
                Ok(sock) => {
                    s.conn = Some(Conn {
                        sock,
                        connected: false,
                        opened: now,
                        next: now,
                        progress: 0,
                        head: Vec::new(),
                        status: None,
                    });
                    open += 1;
                }
                Err(_) => {
                    ks.connect_failed += 1;
                    s.free_at = now + opts.reopen_after;
                }
            }
        }
        stats.peak_open = stats.peak_open.max(open);
        open_now.store(open, Ordering::Relaxed);

        // Poll every open socket once.
        pfds.clear();
        idx.clear();
        for (i, s) in slots.iter().enumerate() {
            if let Some(c) = &s.conn {
                let mut events = libc::POLLRDHUP;
                if !c.connected {
                    events |= libc::POLLOUT;
                } else if s.kind != Kind::Pipeline {
                    events |= libc::POLLIN;
                }
                pfds.push(libc::pollfd {
                    fd: c.sock.as_raw_fd(),
                    events,
                    revents: 0,
                });
                idx.push(i);
            }
        }
        // SAFETY: pfds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 10) };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let now = Instant::now();
        for (p, &i) in pfds.iter().zip(idx.iter()) {
            let s = &mut slots[i];
            let kind = s.kind;
            let Some(c) = s.conn.as_mut() else { continue };
            let mut ev = Event::Keep;
            let bad = p.revents & (libc::POLLERR | libc::POLLHUP) != 0;
            if !c.connected {
                if p.revents & libc::POLLOUT != 0 || bad {
                    match c.sock.take_error() {
                        Ok(None) if !bad => c.connected = true,
                        _ => ev = Event::ConnectFailed,
                    }
                }
            } else if kind == Kind::Pipeline {
                if bad || p.revents & libc::POLLRDHUP != 0 {
                    ev = Event::ServerClosed;
                }
            } else if p.revents != 0 {
                loop {
                    match c.sock.read(&mut buf) {
                        Ok(0) => {
                            ev = Event::ServerClosed;
                            break;
                        }
                        Ok(n) => {
                            if c.head.len() < 16 {
                                c.head.extend_from_slice(&buf[..n.min(16)]);
                                c.status = c.status.or_else(|| status_of(&c.head));
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            ev = Event::ServerClosed;
                            break;
                        }
                    }
                }
            }
            // Act, when connected and due.
            if matches!(ev, Event::Keep) && c.connected && now >= c.next {
                if let Err(e) = act(kind, c, &opts, &pipeline, &headers, s.seed, now) {
                    if e.kind() != ErrorKind::WouldBlock {
                        ev = Event::ServerClosed;
                    }
                }
            }
            let ks = stats.kinds.get_mut(&kind).expect("kind");
            match ev {
                Event::Keep => continue,
                Event::ConnectFailed => ks.connect_failed += 1,
                Event::ServerClosed => {
                    ks.closed_by_server += 1;
                    ks.longest_server_close = ks.longest_server_close.max(now - c.opened);
                    if let Some(st) = c.status {
                        *ks.statuses.entry(st).or_default() += 1;
                    }
                    if kind.expected_status().is_some() && c.status != kind.expected_status() {
                        ks.closed_without_expected += 1;
                    }
                }
            }
            if kind == Kind::Pipeline {
                ks.requests_written += (c.progress / PIPELINED.len()) as u64;
            }
            s.conn = None;
            s.free_at = now + opts.reopen_after;
            open -= 1;
        }
    }

    let now = Instant::now();
    for s in slots.iter_mut() {
        if let Some(c) = s.conn.take() {
            let ks = stats.kinds.get_mut(&s.kind).expect("kind");
            ks.open_at_end += 1;
            ks.oldest_at_end = ks.oldest_at_end.max(now - c.opened);
            if let Some(st) = c.status {
                *ks.statuses.entry(st).or_default() += 1;
            }
            if s.kind == Kind::Pipeline {
                ks.requests_written += (c.progress / PIPELINED.len()) as u64;
            }
        }
    }
    open_now.store(0, Ordering::Relaxed);
    stats.ran = t0.elapsed();
    stats
}

/// One step of a connection's behaviour; `Err(WouldBlock)` is not a failure.
fn act(
    kind: Kind,
    c: &mut Conn,
    opts: &HostileOptions,
    pipeline: &[u8],
    headers: &[u8],
    seed: u64,
    now: Instant,
) -> std::io::Result<()> {
    match kind {
        Kind::Slowloris | Kind::SlowBody => {
            if c.status.is_some() {
                // Answered: a client would stop here; wait for the close.
                c.next = now + Duration::from_secs(3600);
                return Ok(());
            }
            if c.progress == 0 {
                let head = if kind == Kind::Slowloris {
                    SLOW_HEAD
                } else {
                    SLOW_BODY_HEAD
                };
                write_some(&mut c.sock, head)?;
            } else {
                write_some(&mut c.sock, b"a")?;
            }
            c.progress += 1;
            c.next = now + opts.byte_interval;
        }
        Kind::Pipeline => {
            while c.progress < pipeline.len() {
                let n = c.sock.write(&pipeline[c.progress..])?;
                if n == 0 {
                    return Err(ErrorKind::WriteZero.into());
                }
                c.progress += n;
            }
            c.next = now + Duration::from_secs(3600);
        }
        Kind::HalfClose => {
            c.sock.shutdown(Shutdown::Write)?;
            c.next = now + Duration::from_secs(3600);
        }
        Kind::Idle => c.next = now + Duration::from_secs(3600),
        Kind::Garbage => {
            write_some(
                &mut c.sock,
                &garbage(seed ^ now.elapsed().as_nanos() as u64),
            )?;
            c.next = now + Duration::from_secs(3600);
        }
        Kind::Headers => {
            write_some(&mut c.sock, headers)?;
            c.next = now + Duration::from_secs(3600);
        }
    }
    Ok(())
}

/// Write what the socket takes now (small writes into an empty send buffer: all of it).
fn write_some(sock: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let mut off = 0;
    while off < bytes.len() {
        match sock.write(&bytes[off..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The gateway process: pid, RSS, metrics
// ---------------------------------------------------------------------------------

/// `VmRSS` of `pid`, in KiB.
pub fn vm_rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The process listening on TCP `port` (IPv4 or IPv6), from `/proc/net/tcp*` and the
/// processes' descriptors (same user, or root).
pub fn pid_listening_on(port: u16) -> Option<i32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

const METRICS_SERVED: &str = "seckill_http_requests_total{route=\"metrics\",status=\"200\"}";

fn metrics_text(agent: &ureq::Agent, base: &str) -> Option<String> {
    agent
        .get(&format!("{base}/metrics"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.starts_with(' ').then(|| rest.trim().parse().ok())?
    })
}

/// `seckill_http_refused_total{reason="…"}` by reason.
fn refused_by_reason(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("seckill_http_refused_total{reason=\"")?;
            let (reason, v) = rest.split_once("\"}")?;
            Some((reason.to_string(), v.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

fn short_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent()
}

/// Samples the gateway's RSS and open-connection gauge every `every`, keeping the
/// peaks per phase.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    phase: Arc<Mutex<String>>,
    peaks: Arc<Mutex<BTreeMap<String, PhasePeak>>>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Clone, Debug, Default)]
pub struct PhasePeak {
    pub rss_kib: u64,
    pub rss_kib_min: u64,
    pub connections: u64,
    pub samples: u64,
}

impl Sampler {
    pub fn start(pid: i32, base: &str, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(Mutex::new("idle".to_string()));
        let peaks: Arc<Mutex<BTreeMap<String, PhasePeak>>> = Arc::default();
        let (s, ph, pk, base) = (stop.clone(), phase.clone(), peaks.clone(), base.to_string());
        let handle = std::thread::spawn(move || {
            let agent = short_agent();
            while !s.load(Ordering::Relaxed) {
                let rss = vm_rss_kib(pid).unwrap_or(0);
                let conns = metrics_text(&agent, &base)
                    .and_then(|t| metric(&t, "seckill_http_connections"))
                    .unwrap_or(0.0) as u64;
                let name = ph.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let mut all = pk.lock().unwrap_or_else(|p| p.into_inner());
                let p = all.entry(name).or_default();
                p.rss_kib_min = if p.samples == 0 {
                    rss
                } else {
                    p.rss_kib_min.min(rss)
                };
                p.rss_kib = p.rss_kib.max(rss);
                p.connections = p.connections.max(conns);
                p.samples += 1;
                drop(all);
                let until = Instant::now() + every;
                while Instant::now() < until && !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Sampler {
            stop,
            phase,
            peaks,
            handle: Some(handle),
        }
    }

    pub fn phase(&self, name: &str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
    }

    pub fn peak(&self, name: &str) -> PhasePeak {
        self.peaks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    pub fn samples(&self, name: &str) -> u64 {
        self.peak(name).samples
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------
// The timed rush
// ---------------------------------------------------------------------------------

/// A rush with every request's latency (µs).
pub struct TimedRush {
    pub record: Record,
    pub all: Histogram<u64>,
    pub token: Histogram<u64>,
    pub order: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// Buyers `1..=buyers` on `clients` threads, as [`crate::rush::rush`] (one in four
/// double-clicks), each request timed.
pub fn timed_rush(
    gateway: &str,
    secret: &str,
    sale: &str,
    buyers: u64,
    clients: u64,
) -> Result<TimedRush, LoadError> {
    let t0 = Instant::now();
    let step = clients.max(1);
    let workers: Vec<_> = (0..step)
        .map(|c| {
            let client = Client::new(gateway, secret);
            let sale = sale.to_string();
            std::thread::spawn(
                move || -> Result<(Record, Histogram<u64>, Histogram<u64>), LoadError> {
                    let (mut rec, mut th, mut oh) = (Record::default(), histogram(), histogram());
                    for user in (c + 1..=buyers).step_by(step as usize) {
                        let t = Instant::now();
                        let tk = client.token(&sale, user)?;
                        th.saturating_record(t.elapsed().as_micros() as u64);
                        *rec.answers
                            .entry(
                                format!("token {} {}", tk.status, tk.code())
                                    .trim_end()
                                    .to_string(),
                            )
                            .or_default() += 1;
                        let Some(token) = tk.str("token") else {
                            continue;
                        };
                        for _ in 0..if user % 4 == 0 { 2 } else { 1 } {
                            let t = Instant::now();
                            let o = client.order(&sale, user, token)?;
                            oh.saturating_record(t.elapsed().as_micros() as u64);
                            *rec.answers
                                .entry(
                                    format!("order {} {}", o.status, o.code())
                                        .trim_end()
                                        .to_string(),
                                )
                                .or_default() += 1;
                            if o.status == 202 {
                                rec.acked.push((
                                    o.str("order_id").unwrap_or_default().to_string(),
                                    user,
                                ));
                                rec.tokens.push(token.to_string());
                            }
                        }
                    }
                    Ok((rec, th, oh))
                },
            )
        })
        .collect();
    let mut out = TimedRush {
        record: Record::default(),
        all: histogram(),
        token: histogram(),
        order: histogram(),
    };
    for w in workers {
        let (rec, th, oh) = w
            .join()
            .map_err(|_| LoadError::Http("a buyer thread panicked".into()))??;
        out.record.acked.extend(rec.acked);
        out.record.tokens.extend(rec.tokens);
        for (k, v) in rec.answers {
            *out.record.answers.entry(k).or_default() += v;
        }
        let _ = out.token.add(&th);
        let _ = out.order.add(&oh);
    }
    let _ = out.all.add(&out.token);
    let _ = out.all.add(&out.order);
    out.record.took = t0.elapsed();
    Ok(out)
}

// ---------------------------------------------------------------------------------
// The soak
// ---------------------------------------------------------------------------------

/// Limits the run is held to, each relative to what the same run measured.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// Peak RSS under the soak ≤ idle RSS + this.
    pub rss_growth_mb: u64,
    /// Rush p99 with the hostile load ≤ `p99_factor` × p99 without + `p99_slack_ms`.
    pub p99_factor: f64,
    pub p99_slack_ms: u64,
    /// The gateway's longest head/body/write timeout: a timed hostile connection must be
    /// closed within it plus `timeout_grace_ms` (the 2 s lingering close and scheduling).
    pub timeout_ms: u64,
    pub timeout_grace_ms: u64,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            rss_growth_mb: 256,
            p99_factor: 3.0,
            p99_slack_ms: 25,
            timeout_ms: 10_000,
            timeout_grace_ms: 5_000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The gateway's base URL (loopback).
    pub gateway: String,
    /// Its process, for RSS; found by the listening port when None.
    pub gateway_pid: Option<i32>,
    pub secret: String,
    pub admin: String,
    pub topic: String,
    pub buyers: u64,
    pub units: i64,
    pub clients: u64,
    pub mix: Mix,
    pub byte_interval: Duration,
    pub pipeline_requests: usize,
    pub max_opened: u64,
    /// A slot the gateway closed is opened again after this.
    pub reopen_after: Duration,
    /// The hostile connections are held at least this long (the rush may end sooner).
    pub hold: Duration,
    /// Idle RSS sampling before any load.
    pub idle_for: Duration,
    pub bounds: Bounds,
    /// Printed as the run goes.
    pub verbose: bool,
}

impl Options {
    pub fn new(gateway: &str, secret: &str, admin: &str, topic: &str, hostile: usize) -> Options {
        Options {
            gateway: gateway.trim_end_matches('/').to_string(),
            gateway_pid: None,
            secret: secret.into(),
            admin: admin.into(),
            topic: topic.into(),
            buyers: 3000,
            units: 1500,
            clients: 16,
            mix: Mix::split(hostile),
            byte_interval: Duration::from_millis(300),
            pipeline_requests: 5000,
            max_opened: hostile as u64 * 10,
            reopen_after: Duration::from_secs(1),
            hold: Duration::from_secs(15),
            idle_for: Duration::from_secs(2),
            bounds: Bounds::default(),
            verbose: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub requests: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub order_p99_us: u64,
    pub token_p99_us: u64,
    pub took: Duration,
    pub answers: BTreeMap<String, u64>,
}

impl Latency {
    fn of(r: &TimedRush) -> Latency {
        Latency {
            requests: r.all.len(),
            p50_us: r.all.value_at_quantile(0.50),
            p99_us: r.all.value_at_quantile(0.99),
            max_us: r.all.max(),
            order_p99_us: r.order.value_at_quantile(0.99),
            token_p99_us: r.token.value_at_quantile(0.99),
            took: r.record.took,
            answers: r.record.answers.clone(),
        }
    }
}

/// Everything one soak measured.
pub struct Summary {
    pub pid: i32,
    pub idle_rss_kib: u64,
    pub baseline_peak_rss_kib: u64,
    pub soak_peak_rss_kib: u64,
    /// RSS some seconds after the hostile sockets were closed (lowest sample).
    pub after_rss_kib: u64,
    pub baseline_connections: u64,
    pub soak_peak_connections: u64,
    pub connections_after: Option<u64>,
    pub without: Latency,
    pub with: Latency,
    pub hostile: HostileStats,
    /// The gateway's own count of edge refusals during the soak, by reason.
    pub refused_by_gateway: BTreeMap<String, u64>,
    /// `GET /metrics` the gateway answered during the soak (the unread pipelines', and
    /// the sampler's two a second).
    pub metrics_served: u64,
    pub invariants: Vec<(String, verify::Report)>,
    pub bounds: Bounds,
}

impl Summary {
    pub fn invariants_ok(&self) -> bool {
        self.invariants.iter().all(|(_, r)| r.ok())
    }

    pub fn rss_limit_kib(&self) -> u64 {
        self.idle_rss_kib + self.bounds.rss_growth_mb * 1024
    }

    pub fn p99_limit_us(&self) -> u64 {
        (self.without.p99_us as f64 * self.bounds.p99_factor) as u64
            + self.bounds.p99_slack_ms * 1000
    }

    /// Every bound exceeded and invariant broken, in words; empty when the run passed.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.soak_peak_rss_kib > self.rss_limit_kib() {
            v.push(format!(
                "RSS peak under soak {} MB > idle {} MB + {} MB",
                self.soak_peak_rss_kib / 1024,
                self.idle_rss_kib / 1024,
                self.bounds.rss_growth_mb
            ));
        }
        if self.with.p99_us > self.p99_limit_us() {
            v.push(format!(
                "rush p99 with hostile load {:.1} ms > {} × {:.1} ms + {} ms",
                self.with.p99_us as f64 / 1000.0,
                self.bounds.p99_factor,
                self.without.p99_us as f64 / 1000.0,
                self.bounds.p99_slack_ms
            ));
        }
        let limit = Duration::from_millis(self.bounds.timeout_ms + self.bounds.timeout_grace_ms);
        for (k, s) in &self.hostile.kinds {
            if k.timed() && (s.longest_server_close > limit || s.oldest_at_end > limit) {
                v.push(format!(
                    "{} connections held past the timeout: longest closed after {:.1} s, oldest still open {:.1} s (limit {:.1} s)",
                    k.name(),
                    s.longest_server_close.as_secs_f64(),
                    s.oldest_at_end.as_secs_f64(),
                    limit.as_secs_f64()
                ));
            }
            if s.closed_without_expected > 0 {
                v.push(format!(
                    "{}: {} connections closed without the {} refusal (statuses seen: {:?})",
                    k.name(),
                    s.closed_without_expected,
                    k.expected_status().unwrap_or(0),
                    s.statuses
                ));
            }
        }
        let expected = self.hostile.opened() - self.hostile.connect_failed();
        if self.hostile.opened() > 0 && self.hostile.connect_failed() * 100 > expected.max(1) {
            v.push(format!(
                "{} of {} hostile connects failed (more than 1 %)",
                self.hostile.connect_failed(),
                self.hostile.opened()
            ));
        }
        match self.connections_after {
            Some(n) if n <= self.baseline_connections.max(1) => {}
            other => v.push(format!(
                "gateway connections did not drain after the soak: {other:?} open, {} before",
                self.baseline_connections
            )),
        }
        for (sale, r) in &self.invariants {
            for c in r.checks.iter().filter(|c| !c.pass) {
                v.push(format!("invariant failed on {sale}: {}", c.name));
            }
        }
        v
    }

    pub fn print(&self) {
        let mb = |k: u64| k as f64 / 1024.0;
        let ms = |u: u64| u as f64 / 1000.0;
        println!("== hostile soak: gateway pid {} ==", self.pid);
        println!(
            "RSS: idle {:.1} MB; peak in the baseline rush {:.1} MB; peak under soak {:.1} MB (ratio {:.2} of idle, +{:.1} MB, limit +{} MB); after the soak {:.1} MB",
            mb(self.idle_rss_kib),
            mb(self.baseline_peak_rss_kib),
            mb(self.soak_peak_rss_kib),
            self.soak_peak_rss_kib as f64 / self.idle_rss_kib.max(1) as f64,
            mb(self.soak_peak_rss_kib.saturating_sub(self.idle_rss_kib)),
            self.bounds.rss_growth_mb,
            mb(self.after_rss_kib)
        );
        println!(
            "gateway connections (seckill_http_connections): baseline rush peak {}, under soak peak {}, after {:?}",
            self.baseline_connections, self.soak_peak_connections, self.connections_after
        );
        for (name, l) in [
            ("without hostile", &self.without),
            ("with hostile   ", &self.with),
        ] {
            println!(
                "rush {name}: {} requests in {:.1} s; p50 {:.2} ms, p99 {:.2} ms (token {:.2}, order {:.2}), max {:.1} ms",
                l.requests,
                l.took.as_secs_f64(),
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.token_p99_us),
                ms(l.order_p99_us),
                ms(l.max_us)
            );
        }
        for (name, l) in [
            ("without hostile", &self.without),
            ("with hostile", &self.with),
        ] {
            let faults: u64 = l
                .answers
                .iter()
                .filter(|(a, _)| a.contains(" 5"))
                .map(|(_, n)| n)
                .sum();
            if faults > 0 {
                println!("rush {name}: {faults} answers 5xx (degraded under load)");
            }
            let answers: Vec<String> = l.answers.iter().map(|(a, n)| format!("{a}: {n}")).collect();
            println!("answers {name}: {}", answers.join(", "));
        }
        println!(
            "rush p99 ratio with/without {:.2} (limit {} × p99 + {} ms = {:.2} ms)",
            self.with.p99_us as f64 / self.without.p99_us.max(1) as f64,
            self.bounds.p99_factor,
            self.bounds.p99_slack_ms,
            ms(self.p99_limit_us())
        );
        let h = &self.hostile;
        println!(
            "hostile: {} opened ({} connect failures), peak {} open at once, over {:.1} s; {} answered with a refusal status; {} closed by the server; {} still open at the end (closed by us)",
            h.opened(),
            h.connect_failed(),
            h.peak_open,
            h.ran.as_secs_f64(),
            h.refused_with_status(),
            h.closed_by_server(),
            h.open_at_end()
        );
        println!("| kind | slots | opened | statuses | closed by server | longest held before close | open at end (oldest) |");
        println!("|---|---|---|---|---|---|---|");
        for (k, s) in &h.kinds {
            let statuses: Vec<String> =
                s.statuses.iter().map(|(c, n)| format!("{c}×{n}")).collect();
            let mut extra = String::new();
            if *k == Kind::Pipeline {
                extra = format!(" ({} requests written)", s.requests_written);
            }
            println!(
                "| {}{} | {} | {} | {} | {} | {:.1} s | {} ({:.1} s) |",
                k.name(),
                extra,
                s.slots,
                s.opened,
                if statuses.is_empty() {
                    "-".into()
                } else {
                    statuses.join(" ")
                },
                s.closed_by_server,
                s.longest_server_close.as_secs_f64(),
                s.open_at_end,
                s.oldest_at_end.as_secs_f64()
            );
        }
        let refused: Vec<String> = self
            .refused_by_gateway
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        println!(
            "gateway seckill_http_refused_total during the soak: {}",
            refused.join(", ")
        );
        println!(
            "gateway answered {} GET /metrics during the soak (unread pipelines wrote {})",
            self.metrics_served,
            h.kinds
                .get(&Kind::Pipeline)
                .map_or(0, |k| k.requests_written)
        );
        for (sale, r) in &self.invariants {
            println!(
                "invariants {sale}: {}",
                if r.ok() { "PASS" } else { "FAIL" }
            );
            r.print();
        }
        let v = self.violations();
        if v.is_empty() {
            println!("SOAK PASS");
        } else {
            for x in &v {
                println!("VIOLATION {x}");
            }
            println!("SOAK FAIL");
        }
    }
}

/// Order requests answered with a Redis fault: Redis may have reserved their unit.
pub fn lost_replies(r: &Record) -> u64 {
    ["order 503 redis_unavailable", "order 503 redis_data_lost"]
        .iter()
        .map(|a| r.answers.get(*a).copied().unwrap_or(0))
        .sum()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn addr_of(base: &str) -> Result<SocketAddr, LoadError> {
    let hostport = base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    hostport
        .parse::<SocketAddr>()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            hostport
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|_| LoadError::Http(format!("cannot resolve the gateway address in {base}")))
}

/// Run the soak (see the module docs) against a running gateway whose order-writer
/// consumes `opts.topic`.
pub fn run(opts: &Options, stack: &seckill_common::stack::Stack) -> Result<Summary, LoadError> {
    let say = |s: String| {
        if opts.verbose {
            eprintln!("[soak] {s}");
        }
    };
    let addr = addr_of(&opts.gateway)?;
    if !addr.ip().is_loopback() {
        return Err(LoadError::Http(format!(
            "the soak runs against a loopback gateway only, not {addr}"
        )));
    }
    let pid = opts
        .gateway_pid
        .or_else(|| pid_listening_on(addr.port()))
        .ok_or_else(|| {
            LoadError::Http(format!(
                "no process found listening on port {} (give --gateway-pid)",
                addr.port()
            ))
        })?;
    vm_rss_kib(pid).ok_or_else(|| LoadError::Http(format!("cannot read /proc/{pid}/status")))?;
    let agent = short_agent();
    let client = Client::new(&opts.gateway, &opts.secret);
    let tag = now_ms();
    let sales = [format!("soak_base_{tag}"), format!("soak_hostile_{tag}")];
    for s in &sales {
        client.create_sale(&opts.admin, s, opts.units, tag - 1000, tag + 3_600_000)?;
    }

    let sampler = Sampler::start(pid, &opts.gateway, Duration::from_millis(500));
    sampler.phase("idle");
    let t = Instant::now();
    while t.elapsed() < opts.idle_for || sampler.samples("idle") < 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let idle = sampler.peak("idle");
    say(format!("idle RSS {} KiB", idle.rss_kib));

    sampler.phase("baseline");
    let base = timed_rush(
        &opts.gateway,
        &opts.secret,
        &sales[0],
        opts.buyers,
        opts.clients,
    )?;
    let without = Latency::of(&base);
    say(format!(
        "baseline rush: {} requests, p99 {} µs",
        without.requests, without.p99_us
    ));

    let before = metrics_text(&agent, &opts.gateway).unwrap_or_default();
    let refused_before = refused_by_reason(&before);
    let metrics_before = metric(&before, METRICS_SERVED).unwrap_or(0.0) as u64;
    sampler.phase("soak");
    let hostile = Hostile::start(HostileOptions {
        addr,
        mix: opts.mix,
        byte_interval: opts.byte_interval,
        pipeline_requests: opts.pipeline_requests,
        max_opened: opts.max_opened,
        reopen_after: opts.reopen_after,
        open_per_tick: 200,
    })?;
    let started = Instant::now();
    let want = opts.mix.total() as u64;
    while hostile.opened() < want && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    say(format!(
        "{} hostile connections opened, {} open, after {:.1} s; rush starts",
        hostile.opened(),
        hostile.open_now(),
        started.elapsed().as_secs_f64()
    ));
    let soaked = timed_rush(
        &opts.gateway,
        &opts.secret,
        &sales[1],
        opts.buyers,
        opts.clients,
    );
    say(format!(
        "soak rush done after {:.1} s; holding the hostile connections until {:.1} s",
        started.elapsed().as_secs_f64(),
        opts.hold.as_secs_f64()
    ));
    while started.elapsed() < opts.hold {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = hostile.stop();
    let soaked = soaked?;
    let with = Latency::of(&soaked);
    let soak_peak = sampler.peak("soak");

    // After: every hostile socket closed; the gateway's connections must drain.
    sampler.phase("after");
    let drain_by = Instant::now()
        + Duration::from_millis(opts.bounds.timeout_ms + opts.bounds.timeout_grace_ms);
    let baseline_conns = sampler.peak("baseline").connections;
    let mut after = None;
    while Instant::now() < drain_by {
        after = metrics_text(&agent, &opts.gateway)
            .and_then(|t| metric(&t, "seckill_http_connections"))
            .map(|v| v as u64);
        if after.is_some_and(|n| n <= baseline_conns.max(1)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let after_text = metrics_text(&agent, &opts.gateway).unwrap_or_default();
    let refused_after = refused_by_reason(&after_text);
    let metrics_served =
        (metric(&after_text, METRICS_SERVED).unwrap_or(0.0) as u64).saturating_sub(metrics_before);
    let refused_by_gateway = refused_after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(*refused_before.get(k).unwrap_or(&0)),
            )
        })
        .collect();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) || sampler.samples("after") < 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after_rss = sampler.peak("after").rss_kib_min;
    let baseline_peak = sampler.peak("baseline");
    drop(sampler);

    let mut invariants = Vec::new();
    for (sale, r) in [(&sales[0], &base), (&sales[1], &soaked)] {
        say(format!("verifying {sale}"));
        // As the drills do: a purchase answered 503 after Redis may have run it (its
        // reply overdue) may hold a unit with no order until the writer's reservation
        // sweep (payment window + grace) returns it; such units are bounded by them.
        let unanswered = verify::Unanswered {
            orders: 0,
            lost_replies: lost_replies(&r.record),
        };
        let wait = verify::Wait {
            within: Duration::from_secs(120),
            settle: Duration::from_secs(1),
        };
        let (acked, tokens) = (&r.record.acked, &r.record.tokens);
        let seen = verify::gather(stack, Some(&opts.topic), sale, acked, wait)?;
        let report = verify::check(&verify::Record { acked, tokens }, unanswered, &seen);
        invariants.push((sale.clone(), report));
    }
    Ok(Summary {
        pid,
        idle_rss_kib: idle.rss_kib,
        baseline_peak_rss_kib: baseline_peak.rss_kib,
        soak_peak_rss_kib: soak_peak.rss_kib,
        after_rss_kib: after_rss,
        baseline_connections: baseline_peak.connections,
        soak_peak_connections: soak_peak.connections,
        connections_after: after,
        without,
        with,
        hostile: stats,
        refused_by_gateway,
        metrics_served,
        invariants,
        bounds: opts.bounds.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up() {
        for n in [1, 7, 50, 300, 3000] {
            let m = Mix::split(n);
            assert_eq!(m.total(), n, "{m:?}");
            assert!(m.get(Kind::Pipeline) >= 1);
        }
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(status_of(b"HTTP/1.1 408 Request Timeout\r\n"), Some(408));
        assert_eq!(status_of(b"HTTP/1.1 4"), None);
        assert_eq!(status_of(b"garbage garbage"), None);
    }

    #[test]
    fn garbage_is_never_a_request_line() {
        let g = garbage(42);
        assert_eq!(g[0], 0x01);
        assert!(g.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn refusal_metrics_parse() {
        let t =
            "seckill_http_refused_total{reason=\"head_timeout\"} 3\nseckill_http_connections 7\n";
        assert_eq!(refused_by_reason(t).get("head_timeout"), Some(&3));
        assert_eq!(metric(t, "seckill_http_connections"), Some(7.0));
    }

    #[test]
    fn rss_of_this_process_is_read() {
        assert!(vm_rss_kib(std::process::id() as i32).unwrap() > 0);
    }
}
