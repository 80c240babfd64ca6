//! http server implementation on top of `MAY`

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::limits::{Limits, Refusal};
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
                    spawn_connection(stream, service, Some(id), &limits, &live);
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
/// are open, answer it 503 and close it (on a coroutine too: the write and the
/// lingering close must not hold up the accept loop).
fn spawn_connection<T: HttpService + Send + 'static>(
    mut stream: TcpStream,
    mut service: T,
    id: Option<usize>,
    limits: &Arc<Limits>,
    live: &Arc<AtomicUsize>,
) {
    let limits = limits.clone();
    if live.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
        live.fetch_sub(1, Ordering::AcqRel);
        go!(move || {
            let mut rsp_buf = BytesMut::new();
            if let Err(e) = refuse(&mut stream, &mut service, Refusal::TooManyConnections, &mut rsp_buf, &limits) {
                log_conn_end(&e);
            }
        });
        return;
    }
    let open = Live(live.clone());
    let mut builder = coroutine::Builder::new();
    if let Some(id) = id {
        builder = builder.id(id);
    }
    let spawned = go!(builder, move || {
        let _open = open;
        if let Err(e) = each_connection_loop(&mut stream, &mut service, &limits) {
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
fn finish(stream: &mut TcpStream, rsp_buf: &mut BytesMut, limits: &Limits) -> io::Result<()> {
    stream.set_write_timeout(Some(limits.write_timeout))?;
    stream.write_all(rsp_buf)?;
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
) -> io::Result<()> {
    debug!("refused: {why:?}");
    let mut body_buf = BytesMut::new();
    let mut rsp = Response::new(&mut body_buf);
    service.refused(why, &mut rsp);
    rsp.close();
    response::encode(rsp, rsp_buf);
    finish(stream, rsp_buf, limits)
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
fn each_connection_loop<T: HttpService>(stream: &mut TcpStream, service: &mut T, limits: &Limits) -> io::Result<()> {
    let mut req_buf = BytesMut::with_capacity(BUF_LEN);
    let mut rsp_buf = BytesMut::with_capacity(BUF_LEN);
    let mut body_buf = BytesMut::with_capacity(4096);
    stream.set_write_timeout(Some(limits.write_timeout))?;
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
                    }
                    break;
                }
                crate::proxy::Header::Invalid => {
                    debug!("a trusted peer's connection without a valid PROXY header");
                    return refuse(stream, service, Refusal::Malformed, &mut rsp_buf, limits);
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
                    return refuse(stream, service, Refusal::HeadTimeout, &mut rsp_buf, limits)
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
                        return refuse(stream, service, Refusal::Malformed, &mut rsp_buf, limits);
                    }
                    Some(false) => sniff = false,
                    None => break,
                }
            }
            let mut headers = vec![MaybeUninit::uninit(); limits.max_headers];
            let req = match request::decode(&mut headers, &mut req_buf, stream, limits) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(why) => return refuse(stream, service, why, &mut rsp_buf, limits),
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
                    return refuse(stream, service, Refusal::BodyTimeout, &mut rsp_buf, limits);
                }
                Err(e) => {
                    warn!("service err = {:?}", e);
                    drop(rsp);
                    response::encode_error(e, &mut rsp_buf);
                }
            }
            if close {
                return finish(stream, &mut rsp_buf, limits);
            }
        }

        if !rsp_buf.is_empty() {
            stream.write_all(&rsp_buf)?;
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
            return refuse(stream, service, Refusal::HeadTimeout, &mut rsp_buf, limits);
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
                return refuse(stream, service, Refusal::HeadTimeout, &mut rsp_buf, limits)
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
        go!(
            coroutine::Builder::new().name("TcpServer".to_owned()),
            move || {
                for stream in listener.incoming() {
                    let stream = t_c!(stream);
                    spawn_connection(stream, service.clone(), None, &limits, &live);
                }
            }
        )
    }
}
