//! The gateway process seen from outside: its pid, its RSS ([`Sampler`]), its metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

pub(super) const METRICS_SERVED: &str =
    "seckill_http_requests_total{route=\"metrics\",status=\"200\"}";

pub(super) fn metrics_text(agent: &ureq::Agent, base: &str) -> Option<String> {
    agent
        .get(&format!("{base}/metrics"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()
}

pub(super) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.starts_with(' ').then(|| rest.trim().parse().ok())?
    })
}

/// `seckill_http_refused_total{reason="…"}` by reason.
pub(super) fn refused_by_reason(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("seckill_http_refused_total{reason=\"")?;
            let (reason, v) = rest.split_once("\"}")?;
            Some((reason.to_string(), v.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

pub(super) fn short_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent()
}

/// Samples the gateway's RSS and open-connection gauge (`seckill_http_connections`: both
/// listeners, read from the internal one's `/metrics`) every `every`, keeping the peaks
/// per phase.
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

#[cfg(test)]
mod tests {
    use super::*;

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
