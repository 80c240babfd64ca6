//! http server implementation on top of `MAY`

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::limits::{Hangup, Limits, Refusal};
use crate::per_ip::{IpSlot, PerIp};
use crate::request::{self, Request};
use crate::response::{self, Response};

use bytes::{BufMut, BytesMut};
use may::net::{TcpListener, TcpStream};
use may::{coroutine, go};

macro_rules! t_c {
    ($e: expr) => {
        match $e {
            Ok(val) => val,
            Err(err) => {
                error!("call = {:?}\nerr = {:?}", stringify!($e), err);
                continue;
            }
        }
    };
}

/// the http service trait
/// user code should supply a type that impl the `call` method for the http server
///
pub trait HttpService {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()>;

    /// Answer a request (or a connection) the server refuses by itself; the connection
    /// is closed after this response. Default: [`Refusal::write_default`].
    fn refused(&mut self, why: Refusal, rsp: &mut Response) {
        why.write_default(rsp)
    }

    /// The client's address, from the PROXY header a trusted balancer sent at the start
    /// of this connection (`Limits::trusted_proxies`), before any request is served.
    /// Not called when the header keeps the socket's own address (v2 `LOCAL`, as in a
    /// health check). Default: ignored.
    fn proxied_peer(&mut self, _client: std::net::SocketAddr) {}

    /// The server dropped this connection without an answer: its client does not take
    /// its output (`write_timeout`, `min_send_rate`). Default: ignored.
    fn hung_up(&mut self, _why: Hangup) {}
}

pub trait HttpServiceFactory: Send + Sized + 'static {
    type Service: HttpService + Send;
    // create a new http service for each connection
    fn new_service(&self, id: usize) -> Self::Service;

    /// Like `new_service`, with the peer's address (when the socket still has one).
    fn new_service_for_peer(&self, id: usize, _peer: Option<std::net::SocketAddr>) -> Self::Service {
        self.new_service(id)
    }

    /// The bounds every connection is served within (asked once, by `start`).
    fn limits(&self) -> Limits {
        Limits::default()
    }

    /// Spawns the http service, binding to the given address
    /// return a coroutine that you can cancel it when need to stop the service
    fn start<L: ToSocketAddrs>(self, addr: L) -> io::Result<coroutine::JoinHandle<()>> {
        let limits = Arc::new(self.limits());
        let listener = bind(addr, limits.share_port)?;
        let live = Arc::new(AtomicUsize::new(0));
        let per_ip = PerIp::new(limits.max_connections_per_ip);
        go!(
            coroutine::Builder::new().name("TcpServerFac".to_owned()),
            move || {
                #[cfg(unix)]
                use std::os::fd::AsRawFd;
                #[cfg(windows)]
                use std::os::windows::io::AsRawSocket;
                for stream in listener.incoming() {
                    let stream = t_c!(stream);
                    #[cfg(unix)]
                    let id = stream.as_raw_fd() as usize;
                    #[cfg(windows)]
                    let id = stream.as_raw_socket() as usize;
                    let service = self.new_service_for_peer(id, stream.peer_addr().ok());
                    spawn_connection(stream, service, Some(id), &limits, &live, &per_ip);
                }
            }
        )
    }
}

/// Counts a connection as open while alive.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serve an accepted connection on a coroutine of its own, or, when `max_connections`
/// are open or its address has `max_connections_per_ip`, answer it 503 / 429 and close
/// it at once (on a coroutine too: the write must not hold up the accept loop). A
/// trusted balancer's connection is counted under the client's address once its PROXY
/// header is read (`each_connection_loop`).
fn spawn_connection<T: HttpService + Send + 'static>(
    mut stream: TcpStream,
    mut service: T,
    id: Option<usize>,
    limits: &Arc<Limits>,
    live: &Arc<AtomicUsize>,
    per_ip: &Arc<PerIp>,
) {
    let limits = limits.clone();
    let per_ip = per_ip.clone();
    let refuse_on_own = |mut stream: TcpStream, mut service: T, why: Refusal| {
        go!(move || refuse_at_once(&mut stream, &mut service, why));
    };
    if live.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
        live.fetch_sub(1, Ordering::AcqRel);
        return refuse_on_own(stream, service, Refusal::TooManyConnections);
    }
    let open = Live(live.clone());
    let peer = stream.peer_addr().ok().map(|p| p.ip());
    let trusted = peer.is_some_and(|ip| limits.trusts(ip));
    let slot = match peer {
        Some(ip) if !trusted => match per_ip.acquire(ip) {
            Ok(slot) => slot,
            Err(()) => {
                drop(open);
                return refuse_on_own(stream, service, Refusal::TooManyConnectionsPerIp);
            }
        },
        _ => None,
    };
    let mut builder = coroutine::Builder::new();
    if let Some(id) = id {
        builder = builder.id(id);
    }
    let spawned = go!(builder, move || {
        let _open = open;
        let _slot = slot;
        let per_ip = if trusted { Some(&per_ip) } else { None };
        if let Err(e) = each_connection_loop(&mut stream, &mut service, &limits, per_ip) {
            if let Some(why) = hangup_of(&e) {
                service.hung_up(why);
            }
            log_conn_end(&e);
            stream.shutdown(Shutdown::Both).ok();
        }
    });
    if let Err(e) = spawned {
        error!("cannot start a connection coroutine: {e}");
    }
}

const BUF_LEN: usize = 4096 * 8;
#[inline]
pub(crate) fn reserve_buf(buf: &mut BytesMut) {
    let rem = buf.capacity() - buf.len();
    if rem < 1024 {
        buf.reserve(BUF_LEN - rem);
    }
}

/// A peer hanging up, or one that stopped reading, is the normal end of a connection,
/// not an error.
fn log_conn_end(e: &io::Error) {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::TimedOut => debug!("connection ended: {e}"),
        _ => warn!("connection ended: {e:?}"),
    }
}

/// Read, waiting at most `wait` (may's I/O timer; at least `MIN_WAIT`).
pub(crate) fn read_within(stream: &mut TcpStream, buf: &mut [u8], wait: Duration) -> io::Result<usize> {
    stream.set_read_timeout(Some(wait.max(MIN_WAIT)))?;
    stream.read(buf)
}

/// Shortest read timeout used. With may 0.3.51 a read timeout under a millisecond (the
/// rest of a deadline that was nearly reached) was seen never to fire, and a zero one is
/// refused by the socket API: shorter waits are rounded up to this.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// How long, and how much of the rest of a refused request, is read and dropped after
/// the answer (see `finish`).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// Write what is pending and close without losing it. Closing a socket with unread
/// request bytes makes the kernel send a reset, which can destroy the answer before
/// the client reads it; so after the answer and our FIN, the rest of the request is
/// read and dropped, for at most `LINGER` / `LINGER_BYTES` (a "lingering close").
fn finish(stream: &mut TcpStream, rsp_buf: &mut BytesMut, limits: &Limits, meter: &mut SendMeter) -> io::Result<()> {
    send(stream, rsp_buf, limits, meter)?;
    rsp_buf.clear();
    stream.shutdown(Shutdown::Write).ok();
    let until = Instant::now() + LINGER;
    let mut sink = vec![0u8; 4096];
    let mut left = LINGER_BYTES;
    while left > 0 {
        let wait = until.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            break;
        }
        match read_within(stream, &mut sink, wait) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

/// Answer `why` after the responses already pending, then close.
fn refuse<T: HttpService>(
    stream: &mut TcpStream,
    service: &mut T,
    why: Refusal,
    rsp_buf: &mut BytesMut,
    limits: &Limits,
    meter: &mut SendMeter,
) -> io::Result<()> {
    encode_refusal(service, why, rsp_buf);
    finish(stream, rsp_buf, limits, meter)
}

fn encode_refusal<T: HttpService>(service: &mut T, why: Refusal, rsp_buf: &mut BytesMut) {
    debug!("refused: {why:?}");
    let mut body_buf = BytesMut::new();
    let mut rsp = Response::new(&mut body_buf);
    service.refused(why, &mut rsp);
    rsp.close();
    response::encode(rsp, rsp_buf);
}

/// How long a connection refused for a cap (`max_connections`, `max_connections_per_ip`)
/// is kept: its answer goes into an empty socket buffer at once, then what it already
/// sent is read and dropped for at most `CAP_LINGER`, and at most `CAP_QUIET` after the
/// last bytes came (closing with unread input would reset the answer), instead of the
/// 2 s `LINGER` of other refusals.
const CAP_LINGER: Duration = Duration::from_millis(100);
const CAP_QUIET: Duration = Duration::from_millis(10);

/// Answer a connection refused for a cap and close it at once (see `CAP_LINGER`).
fn refuse_at_once<T: HttpService>(stream: &mut TcpStream, service: &mut T, why: Refusal) {
    let mut rsp_buf = BytesMut::new();
    encode_refusal(service, why, &mut rsp_buf);
    let sent = stream
        .set_write_timeout(Some(CAP_LINGER))
        .and_then(|()| stream.write_all(&rsp_buf));
    if let Err(e) = sent {
        log_conn_end(&e);
        return;
    }
    stream.shutdown(Shutdown::Write).ok();
    let until = Instant::now() + CAP_LINGER;
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let mut wait_more = CAP_LINGER;
    while left > 0 {
        let wait = until.saturating_duration_since(Instant::now()).min(wait_more);
        if wait.is_zero() {
            break;
        }
        match read_within(stream, &mut sink, wait) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                left = left.saturating_sub(n);
                wait_more = CAP_QUIET;
            }
        }
    }
}

/// What a connection's client took while the server waited to write to it (patch 10),
/// kept over the connection's life: time spent in writes that had to wait, and the
/// bytes written meanwhile, since the last `send_window` was checked.
#[derive(Default)]
pub(crate) struct SendMeter {
    waited: Duration,
    moved: usize,
    /// The write timeout last set on the socket (setting it is a system call).
    timeout: Option<Duration>,
}

/// The error a write ends with when its client takes its output too slowly.
#[derive(Debug)]
struct SlowReader(Hangup);

impl std::fmt::Display for SlowReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Hangup::WriteTimeout => f.write_str("the client took no output within write_timeout"),
            Hangup::MinSendRate => f.write_str("the client takes its output slower than min_send_rate"),
        }
    }
}

impl std::error::Error for SlowReader {}

fn slow(why: Hangup) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, SlowReader(why))
}

/// Whether `e` ended a connection whose client did not take its output.
fn hangup_of(e: &io::Error) -> Option<Hangup> {
    e.get_ref()?.downcast_ref::<SlowReader>().map(|s| s.0)
}

/// Write all of `buf`, within `write_timeout` without progress and `min_send_rate` over
/// each `send_window` of waiting (`SendMeter`); else `TimedOut` (`hangup_of` says why).
/// Time is measured around each write: one that completes at once adds next to nothing.
fn send(stream: &mut TcpStream, mut buf: &[u8], limits: &Limits, meter: &mut SendMeter) -> io::Result<()> {
    let window = limits.send_window;
    let need = if limits.min_send_rate == 0 {
        0
    } else {
        ((limits.min_send_rate as u128 * window.as_millis()) / 1000).clamp(1, usize::MAX as u128) as usize
    };
    let mut stalled = Duration::ZERO;
    while !buf.is_empty() {
        let mut wait = limits.write_timeout.saturating_sub(stalled);
        if need > 0 {
            wait = wait.min(window.saturating_sub(meter.waited));
        }
        let wait = wait.max(MIN_WAIT);
        // Lower the socket's timeout when it would outlast this wait; raise it when it
        // is much shorter (a shorter one only wakes this loop early).
        if meter.timeout.is_none_or(|t| t > wait || t < wait / 2) {
            stream.set_write_timeout(Some(wait))?;
            meter.timeout = Some(wait);
        }
        let began = Instant::now();
        let wrote = stream.write(buf);
        let took = began.elapsed();
        meter.waited += took;
        match wrote {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                meter.moved = meter.moved.saturating_add(n);
                stalled = Duration::ZERO;
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                stalled += took;
                if stalled >= limits.write_timeout {
                    return Err(slow(Hangup::WriteTimeout));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if need > 0 && meter.waited >= window {
            if meter.moved < need {
                return Err(slow(Hangup::MinSendRate));
            }
            meter.waited = Duration::ZERO;
            meter.moved = 0;
        }
    }
    Ok(())
}

/// this is the generic type http server
/// with a type parameter that impl `HttpService` trait
///
pub struct HttpServer<T>(pub T);

/// One connection: serve the requests it sends, within `limits`.
///
/// The socket is read only when every response has been written: a client that does
/// not take its responses gets nothing more read or served (its coroutine waits in
/// `write_all`, at most `write_timeout` without progress), and requests already
/// received are served only while less than `max_pending_output` waits to be written.
/// So what a connection holds is bounded by that cap, one response, and its socket's
/// buffers, however many requests it pipelines.
///
/// `per_ip` is given for a trusted balancer's connection: the client its PROXY header
/// names is counted there (refused 429 over `max_connections_per_ip`) for as long as
/// the connection lasts.
fn each_connection_loop<T: HttpService>(
    stream: &mut TcpStream,
    service: &mut T,
    limits: &Limits,
    per_ip: Option<&Arc<PerIp>>,
) -> io::Result<()> {
    let mut req_buf = BytesMut::with_capacity(BUF_LEN);
    let mut rsp_buf = BytesMut::with_capacity(BUF_LEN);
    let mut body_buf = BytesMut::with_capacity(4096);
    let mut meter = SendMeter::default();
    let mut _slot: Option<IpSlot> = None;
    // When the head being received must be complete; None between requests (idle).
    // A new connection's first request is on the head clock from accept.
    let mut head_deadline = Some(Instant::now() + limits.head_timeout);
    // PROXY protocol (patch 9): a trusted balancer's connection starts with a header
    // naming the client; anyone else's must not start with one.
    let trusted = !limits.trusted_proxies.is_empty()
        && stream.peer_addr().is_ok_and(|p| limits.trusts(p.ip()));
    let mut sniff = !trusted;
    if trusted {
        let deadline = head_deadline.unwrap_or_else(Instant::now);
        loop {
            match crate::proxy::parse(&req_buf) {
                crate::proxy::Header::Valid { len, source } => {
                    bytes::Buf::advance(&mut req_buf, len);
                    if let Some(client) = source {
                        service.proxied_peer(client);
                        if let Some(per_ip) = per_ip {
                            match per_ip.acquire(client.ip()) {
                                Ok(slot) => _slot = slot,
                                Err(()) => {
                                    refuse_at_once(stream, service, Refusal::TooManyConnectionsPerIp);
                                    return Ok(());
                                }
                            }
                        }
                    }
                    break;
                }
                crate::proxy::Header::Invalid => {
                    debug!("a trusted peer's connection without a valid PROXY header");
                    return refuse(stream, service, Refusal::Malformed, &mut rsp_buf, limits, &mut meter);
                }
                crate::proxy::Header::Incomplete => {}
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            let timed_out = wait.is_zero();
            let read = if timed_out {
                Err(io::Error::new(io::ErrorKind::TimedOut, "head timeout"))
            } else {
                reserve_buf(&mut req_buf);
                let read_buf: &mut [u8] = unsafe { std::mem::transmute(req_buf.chunk_mut()) };
                read_within(stream, read_buf, wait)
            };
            match read {
                Ok(0) => return Ok(()),
                Ok(n) => unsafe { req_buf.advance_mut(n) },
                Err(e) if e.kind() == io::ErrorKind::TimedOut && req_buf.is_empty() => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return refuse(stream, service, Refusal::HeadTimeout, &mut rsp_buf, limits, &mut meter)
                }
                Err(e) => return Err(e),
            }
        }
    }

    loop {
        while rsp_buf.len() <= limits.max_pending_output {
            if sniff {
                match crate::proxy::sniff(&req_buf) {
                    Some(true) => {
                        debug!("a PROXY header from an untrusted peer");
                        return refuse(stream, service, Refusal::Malformed, &mut rsp_buf, limits, &mut meter);
                    }
                    Some(false) => sniff = false,
                    None => break,
                }
            }
            let mut headers = vec![MaybeUninit::uninit(); limits.max_headers];
            let req = match request::decode(&mut headers, &mut req_buf, stream, limits) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(why) => return refuse(stream, service, why, &mut rsp_buf, limits, &mut meter),
            };
            head_deadline = None;
            reserve_buf(&mut rsp_buf);
            let mut rsp = Response::new(&mut body_buf);
            if req.wants_close() {
                rsp.close();
            }
            let result = service.call(req, &mut rsp);
            let close = rsp.closing();
            match result {
                Ok(()) => response::encode(rsp, &mut rsp_buf),
                // The body read ran past `body_timeout`.
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    drop(rsp);
                    return refuse(stream, service, Refusal::BodyTimeout, &mut rsp_buf, limits, &mut meter);
                }
                Err(e) => {
                    warn!("service err = {:?}", e);
                    drop(rsp);
                    response::encode_error(e, &mut rsp_buf);
                }
            }
            if close {
                return finish(stream, &mut rsp_buf, limits, &mut meter);
            }
        }

        if !rsp_buf.is_empty() {
            send(stream, &rsp_buf, limits, &mut meter)?;
            rsp_buf.clear();
            continue;
        }

        // Nothing to write, no complete request: read, within the head or idle timeout.
        // "Idle" is a connection with no byte of a next request: its timeout ends it
        // quietly (that includes a new connection that never sent a byte, bounded by
        // `head_timeout`); a head begun and not finished in time is answered 408.
        let now = Instant::now();
        let idle = req_buf.is_empty();
        let (wait, idle) = match head_deadline {
            Some(d) => (d.saturating_duration_since(now), idle),
            None if idle => (limits.idle_timeout, true),
            None => {
                head_deadline = Some(now + limits.head_timeout);
                (limits.head_timeout, false)
            }
        };
        if wait.is_zero() && idle {
            return Ok(());
        }
        if wait.is_zero() {
            return refuse(stream, service, Refusal::HeadTimeout, &mut rsp_buf, limits, &mut meter);
        }
        reserve_buf(&mut req_buf);
        let read_buf: &mut [u8] = unsafe { std::mem::transmute(req_buf.chunk_mut()) };
        match read_within(stream, read_buf, wait) {
            // The peer closed its side: nothing more will come.
            Ok(0) => return Ok(()),
            Ok(n) => unsafe { req_buf.advance_mut(n) },
            // An idle keep-alive connection ends quietly; that is normal HTTP.
            Err(e) if e.kind() == io::ErrorKind::TimedOut && idle => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return refuse(stream, service, Refusal::HeadTimeout, &mut rsp_buf, limits, &mut meter)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Listen on `addr`. may's own `bind` always sets `SO_REUSEPORT`, which lets a second
/// process bind an address in use and take part of its traffic; here that is opt-in.
pub fn bind<L: ToSocketAddrs>(addr: L, share_port: bool) -> io::Result<TcpListener> {
    if share_port {
        return TcpListener::bind(addr);
    }
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on"))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    // SO_REUSEADDR only allows a restart over TIME_WAIT connections; on Linux it does not
    // let two sockets listen on one address.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let std: std::net::TcpListener = socket.into();
    #[cfg(unix)]
    {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the descriptor was just taken out of a listening socket we own.
        Ok(unsafe { TcpListener::from_raw_fd(std.into_raw_fd()) })
    }
    #[cfg(not(unix))]
    {
        drop(std);
        TcpListener::bind(addr)
    }
}


impl<T: HttpService + Clone + Send + Sync + 'static> HttpServer<T> {
    /// Spawns the http service, binding to the given address, with the default `Limits`
    /// return a coroutine that you can cancel it when need to stop the service
    pub fn start<L: ToSocketAddrs>(self, addr: L) -> io::Result<coroutine::JoinHandle<()>> {
        let limits = Arc::new(Limits::default());
        let listener = bind(addr, limits.share_port)?;
        let service = self.0;
        let live = Arc::new(AtomicUsize::new(0));
        let per_ip = PerIp::new(limits.max_connections_per_ip);
        go!(
            coroutine::Builder::new().name("TcpServer".to_owned()),
            move || {
                for stream in listener.incoming() {
                    let stream = t_c!(stream);
                    spawn_connection(stream, service.clone(), None, &limits, &live, &per_ip);
                }
            }
        )
    }
}
