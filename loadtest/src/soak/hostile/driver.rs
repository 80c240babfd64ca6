//! The hostile connections' thread: slots of every kind opened on a ramp, one `poll(2)`
//! over every socket, each connection's next step as its kind says, and the counting of
//! what the gateway did to it.

use super::{HostileOptions, HostileStats, Kind, KindStats, KINDS};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

pub(super) fn drive(
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
        let to = if s.kind == Kind::Pipeline {
            opts.pipeline_addr
        } else {
            opts.addr
        };
        match connect_nonblocking(to) {
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
