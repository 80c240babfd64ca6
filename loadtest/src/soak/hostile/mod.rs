//! Hostile connections: the kinds ([`Kind`]), their mix ([`Mix`]), what happened to
//! them ([`HostileStats`]), and [`Hostile`], one thread of non-blocking sockets and
//! `poll(2)` holding them against the gateway; that thread's loop is in `driver.rs`.

mod driver;

use crate::buyer::LoadError;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What a hostile connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A request head, one byte every `byte_interval`, never finished (→ 408 head_timeout).
    Slowloris,
    /// A complete head with `Content-Length: 1000`, the body one byte every
    /// `byte_interval` (→ 408 body_timeout).
    SlowBody,
    /// `pipeline_requests` pipelined `GET /metrics` to the internal listener
    /// (`HostileOptions::pipeline_addr`), written as fast as the socket takes them, never
    /// a byte read (→ closed after the write timeout).
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
    /// The gateway's public listener; must be a loopback address.
    pub addr: SocketAddr,
    /// Where the unread pipelines of `GET /metrics` go: the gateway's internal listener,
    /// whose metrics page is the largest answer it gives (the same edge limits as the
    /// public one); must be a loopback address.
    pub pipeline_addr: SocketAddr,
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
        if let Some(a) = [opts.addr, opts.pipeline_addr]
            .into_iter()
            .find(|a| !a.ip().is_loopback())
        {
            return Err(LoadError::Setup(format!(
                "hostile connections go only to a loopback address, not {a}"
            )));
        }
        raise_nofile_limit();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicU64::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let (s, o, n) = (stop.clone(), open.clone(), opened.clone());
        let handle = std::thread::Builder::new()
            .name("hostile".into())
            .spawn(move || driver::drive(opts, s, o, n))
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
}
