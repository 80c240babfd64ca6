//! One connection's bytes: plain TCP, or TLS (`rediss://`, rustls) over it. A served
//! connection is used by two coroutines at once — the writer and the reader — so a
//! link splits into a [`LinkWriter`] and a [`LinkReader`].
//!
//! Over TLS both halves share the rustls session (a lock held only while records are
//! made or opened, never across socket I/O) and one lock on the socket's write side: a
//! writer turns plaintext into records and sends them under it, in the order made; the
//! reader reads the socket on its own, and sends what the session owes the server
//! (rare: a key update) under the same lock. Lock order: socket write, then session.

use may::net::TcpStream;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The TLS session and the socket's write side, shared by a link's two halves.
pub(super) struct Shared {
    session: Mutex<rustls::ClientConnection>,
    socket: may::sync::Mutex<TcpStream>,
}

pub(super) enum Link {
    Plain(TcpStream),
    Tls(TcpStream, Arc<Shared>),
}

fn session_lost() -> io::Error {
    io::Error::other("TLS session lock poisoned")
}

impl Link {
    /// `stream` over TLS to `host` (its certificate must name it), the handshake done
    /// within the stream's timeouts.
    pub(super) fn tls(
        mut stream: TcpStream,
        host: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<Link> {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let mut session = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        while session.is_handshaking() {
            session.complete_io(&mut stream)?;
        }
        // Served like a plain connection from here: no write deadline, the reader's own.
        stream.set_write_timeout(None)?;
        stream.set_read_timeout(None)?;
        let socket = may::sync::Mutex::new(stream.try_clone()?);
        Ok(Link::Tls(
            stream,
            Arc::new(Shared {
                session: Mutex::new(session),
                socket,
            }),
        ))
    }

    fn stream(&self) -> &TcpStream {
        match self {
            Link::Plain(s) | Link::Tls(s, _) => s,
        }
    }

    pub(super) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream().set_read_timeout(t)
    }

    /// A handle that can shut the socket down (waking a blocked reader).
    pub(super) fn shutdown_handle(&self) -> io::Result<TcpStream> {
        self.stream().try_clone()
    }

    pub(super) fn writer(&self) -> io::Result<LinkWriter> {
        Ok(match self {
            Link::Plain(s) => LinkWriter::Plain(s.try_clone()?),
            Link::Tls(_, shared) => LinkWriter::Tls(shared.clone()),
        })
    }

    pub(super) fn reader(self) -> LinkReader {
        match self {
            Link::Plain(s) => LinkReader::Plain(s),
            Link::Tls(s, shared) => LinkReader::Tls {
                socket: s,
                shared,
                raw: vec![0; 16 * 1024],
                plain: Vec::new(),
                at: 0,
            },
        }
    }
}

impl Read for Link {
    /// Before the link is split (the AUTH/SELECT handshake).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Tls(s, shared) => {
                let mut session = shared.session.lock().map_err(|_| session_lost())?;
                rustls::Stream::new(&mut *session, s).read(buf)
            }
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Tls(s, shared) => {
                let mut session = shared.session.lock().map_err(|_| session_lost())?;
                rustls::Stream::new(&mut *session, s).write(buf)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(s) => s.flush(),
            Link::Tls(s, shared) => {
                let mut session = shared.session.lock().map_err(|_| session_lost())?;
                rustls::Stream::new(&mut *session, s).flush()
            }
        }
    }
}

pub(super) enum LinkWriter {
    Plain(TcpStream),
    Tls(Arc<Shared>),
}

impl Shared {
    /// Seal `buf` (as much as the session takes) into records and send them; the
    /// plaintext taken.
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let mut socket = self.socket.lock().map_err(|_| session_lost())?;
        let mut records = Vec::with_capacity(buf.len() + 64);
        let taken = {
            let mut session = self.session.lock().map_err(|_| session_lost())?;
            let taken = if buf.is_empty() {
                0
            } else {
                session.writer().write(buf)?
            };
            while session.wants_write() {
                session.write_tls(&mut records)?;
            }
            taken
        };
        socket.write_all(&records)?;
        if taken == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "TLS session took no plaintext",
            ));
        }
        Ok(taken)
    }
}

impl Write for LinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LinkWriter::Plain(s) => s.write(buf),
            LinkWriter::Tls(shared) => shared.send(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LinkWriter::Plain(s) => s.flush(),
            LinkWriter::Tls(_) => Ok(()),
        }
    }
}

pub(super) enum LinkReader {
    Plain(TcpStream),
    Tls {
        socket: TcpStream,
        shared: Arc<Shared>,
        /// Records as read from the socket.
        raw: Vec<u8>,
        /// Plaintext opened and not yet read, from `at`.
        plain: Vec<u8>,
        at: usize,
    },
}

impl Read for LinkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LinkReader::Plain(s) => s.read(buf),
            LinkReader::Tls {
                socket,
                shared,
                raw,
                plain,
                at,
            } => read_tls(socket, shared, raw, plain, at, buf),
        }
    }
}

/// Plaintext for `buf`: what is opened already, else records read from the socket and
/// opened (sending what the session owes the server, if anything).
fn read_tls(
    socket: &mut TcpStream,
    shared: &Shared,
    raw: &mut [u8],
    plain: &mut Vec<u8>,
    at: &mut usize,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        if *at < plain.len() {
            let n = buf.len().min(plain.len() - *at);
            buf[..n].copy_from_slice(&plain[*at..*at + n]);
            *at += n;
            return Ok(n);
        }
        plain.clear();
        *at = 0;
        // Timeouts and errors of the socket reach the caller as they are.
        let n = socket.read(raw)?;
        if n == 0 {
            return Ok(0);
        }
        let (owes, closed) = {
            let mut session = shared.session.lock().map_err(|_| session_lost())?;
            let mut records = &raw[..n];
            let mut closed = false;
            while !records.is_empty() && !closed {
                // After the peer's close_notify rustls takes nothing more: stop there.
                if session.read_tls(&mut records)? == 0 {
                    break;
                }
                let state = session
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                closed |= state.peer_has_closed();
                // Straight into `plain` (no buffer on the coroutine's small stack).
                match session.reader().read_to_end(plain) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            (session.wants_write(), closed)
        };
        if owes {
            shared.send(&[])?;
        }
        if plain.is_empty() && closed {
            return Ok(0);
        }
    }
}
