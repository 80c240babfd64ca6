//! A fault-injecting TCP proxy in the Toxiproxy model, for the path gateway → Redis:
//! `pass`, `latency` (every chunk from upstream delivered `d` later, without
//! serialising the stream: a pipelined connection keeps its throughput) and
//! `blackhole` (connections stay open, every byte is dropped). The toxic can change
//! while connections are open.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toxic {
    Pass,
    Latency(Duration),
    Blackhole,
}

pub struct Proxy {
    pub port: u16,
    toxic: Arc<RwLock<Toxic>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let toxic = Arc::new(RwLock::new(Toxic::Pass));
        let t = toxic.clone();
        std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || {
                for client in listener.incoming().flatten() {
                    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(1))
                    else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    for (from, to, down) in [
                        (client.try_clone(), server.try_clone(), false),
                        (server.try_clone(), client.try_clone(), true),
                    ] {
                        if let (Ok(from), Ok(to)) = (from, to) {
                            let t = t.clone();
                            let _ = std::thread::Builder::new()
                                .name("proxy-pipe".into())
                                .spawn(move || pipe(from, to, t, down));
                        }
                    }
                }
            })?;
        Ok(Proxy { port, toxic })
    }

    pub fn set(&self, toxic: Toxic) {
        *self.toxic.write().unwrap_or_else(|p| p.into_inner()) = toxic;
    }
}

/// Read from `from`, apply the toxic, write to `to` (latency only downstream, as
/// Toxiproxy's default; a blackhole drops both ways).
fn pipe(mut from: TcpStream, to: TcpStream, toxic: Arc<RwLock<Toxic>>, downstream: bool) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        let mut to = to;
        for (due, bytes) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        let due = match *toxic.read().unwrap_or_else(|p| p.into_inner()) {
            Toxic::Blackhole => continue,
            Toxic::Latency(d) if downstream => now + d,
            _ => now,
        };
        if tx.send((due, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 || s.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(c: &mut TcpStream) -> std::io::Result<Duration> {
        let t0 = Instant::now();
        c.write_all(b"ping")?;
        let mut b = [0u8; 4];
        c.read_exact(&mut b)?;
        assert_eq!(&b, b"ping");
        Ok(t0.elapsed())
    }

    #[test]
    fn latency_delays_and_a_blackhole_swallows() {
        let p = Proxy::start(echo_server()).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        assert!(round_trip(&mut c).unwrap() < Duration::from_millis(40));
        p.set(Toxic::Latency(Duration::from_millis(60)));
        assert!(round_trip(&mut c).unwrap() >= Duration::from_millis(60));
        p.set(Toxic::Blackhole);
        assert!(
            round_trip(&mut c).is_err(),
            "nothing comes back from a black hole"
        );
        p.set(Toxic::Pass);
        let mut fresh = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        fresh
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        assert!(round_trip(&mut fresh).is_ok());
    }
}
