//! Hostile connections: the kinds ([`Kind`]), their mix ([`Mix`]), and [`Hostile`],
//! one thread of non-blocking sockets and `poll(2)` holding them against the gateway.

use crate::buyer::LoadError;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
            return Err(LoadError::Setup(format!(
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
            .map_err(LoadError::io("start the hostile driver"))?;
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

/// What every connection's step reads and does not change.
struct Shared<'a> {
    opts: &'a HostileOptions,
    pipeline: &'a [u8],
    headers: &'a [u8],
}

fn drive(
    opts: HostileOptions,
    stop: Arc<AtomicBool>,
    open_now: Arc<AtomicU64>,
    opened_all: Arc<AtomicU64>,
) -> HostileStats {
    let t0 = Instant::now();
    let mut stats = HostileStats::default();
    let mut slots = make_slots(&opts, t0, &mut stats);
    let pipeline: Arc<[u8]> = PIPELINED.repeat(opts.pipeline_requests.max(1)).into();
    let headers = many_headers();
    let shared = Shared {
        opts: &opts,
        pipeline: &pipeline,
        headers: &headers,
    };
    let mut open: u64 = 0;
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(slots.len());
    let mut idx: Vec<usize> = Vec::with_capacity(slots.len());
    let mut buf = vec![0u8; 16 * 1024];

    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        open_due(&mut slots, &opts, &mut stats, &opened_all, now, &mut open);
        stats.peak_open = stats.peak_open.max(open);
        open_now.store(open, Ordering::Relaxed);

        // Poll every open socket once.
        poll_set(&slots, &mut pfds, &mut idx);
        // SAFETY: pfds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 10) };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let now = Instant::now();
        for (p, &i) in pfds.iter().zip(idx.iter()) {
            let s = &mut slots[i];
            let Some(ev) = step(s, p.revents, &shared, &mut buf, now) else {
                continue;
            };
            if matches!(ev, Event::Keep) {
                continue;
            }
            close(s, ev, &mut stats, &opts, now);
            open -= 1;
        }
    }

    finish(&mut slots, &mut stats, Instant::now());
    open_now.store(0, Ordering::Relaxed);
    stats.ran = t0.elapsed();
    stats
}

/// Every kind's slots, interleaved so the ramp opens a bit of each; `stats` gets a
/// [`KindStats`] per kind.
fn make_slots(opts: &HostileOptions, t0: Instant, stats: &mut HostileStats) -> Vec<Slot> {
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
    slots
}

/// Open what is due, within the ramp and the total.
fn open_due(
    slots: &mut [Slot],
    opts: &HostileOptions,
    stats: &mut HostileStats,
    opened_all: &AtomicU64,
    now: Instant,
    open: &mut u64,
) {
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
                *open += 1;
            }
            Err(_) => {
                ks.connect_failed += 1;
                s.free_at = now + opts.reopen_after;
            }
        }
    }
}

/// The `pollfd` of every open socket, and the slot each belongs to.
fn poll_set(slots: &[Slot], pfds: &mut Vec<libc::pollfd>, idx: &mut Vec<usize>) {
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
}

/// One slot after a poll: what its socket reported, then its next action when connected
/// and due. `None` when the slot has no connection.
fn step(
    s: &mut Slot,
    revents: libc::c_short,
    shared: &Shared,
    buf: &mut [u8],
    now: Instant,
) -> Option<Event> {
    let kind = s.kind;
    let c = s.conn.as_mut()?;
    let mut ev = Event::Keep;
    let bad = revents & (libc::POLLERR | libc::POLLHUP) != 0;
    if !c.connected {
        if revents & libc::POLLOUT != 0 || bad {
            match c.sock.take_error() {
                Ok(None) if !bad => c.connected = true,
                _ => ev = Event::ConnectFailed,
            }
        }
    } else if kind == Kind::Pipeline {
        if bad || revents & libc::POLLRDHUP != 0 {
            ev = Event::ServerClosed;
        }
    } else if revents != 0 {
        ev = read_answer(c, buf);
    }
    // Act, when connected and due.
    if matches!(ev, Event::Keep) && c.connected && now >= c.next {
        if let Err(e) = act(
            kind,
            c,
            shared.opts,
            shared.pipeline,
            shared.headers,
            s.seed,
            now,
        ) {
            if e.kind() != ErrorKind::WouldBlock {
                ev = Event::ServerClosed;
            }
        }
    }
    Some(ev)
}

/// Read everything the socket has, keeping the first bytes (the status line).
fn read_answer(c: &mut Conn, buf: &mut [u8]) -> Event {
    loop {
        match c.sock.read(buf) {
            Ok(0) => return Event::ServerClosed,
            Ok(n) => {
                if c.head.len() < 16 {
                    c.head.extend_from_slice(&buf[..n.min(16)]);
                    c.status = c.status.or_else(|| status_of(&c.head));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Event::Keep,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Event::ServerClosed,
        }
    }
}

/// Count a connection that failed or that the server closed, and free its slot.
fn close(s: &mut Slot, ev: Event, stats: &mut HostileStats, opts: &HostileOptions, now: Instant) {
    let kind = s.kind;
    let Some(c) = s.conn.as_ref() else { return };
    let ks = stats.kinds.get_mut(&kind).expect("kind");
    match ev {
        Event::Keep => return,
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
}

/// Close what is still open at the end, counting it.
fn finish(slots: &mut [Slot], stats: &mut HostileStats, now: Instant) {
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
}
