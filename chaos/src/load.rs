//! Background load for a drill: `workers` threads of buyers (the loadtest crate's
//! client), each paced to `rate` buyers per second, spread over the given gateways,
//! until stopped or `max` has passed. Every answer is kept with its time and latency,
//! every 202 with its order id, user and token, and every order request whose outcome
//! the client could not learn (connection broken, timeout).

use loadtest::buyer::Client;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Sample {
    pub at_ms: u64,
    pub order: bool,
    /// 0 when no HTTP answer came back.
    pub status: u16,
    pub code: String,
    pub micros: u64,
}

#[derive(Default)]
struct Shared {
    samples: Vec<Sample>,
    acked: Vec<(String, u64)>,
    tokens: Vec<String>,
}

pub struct Load {
    t0: Instant,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    unknown: Arc<AtomicU64>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// What the load saw in a window of time.
#[derive(Debug, Default)]
pub struct Window {
    pub requests: u64,
    /// "201", "503 redis_unavailable", "io", … → count.
    pub answers: BTreeMap<String, u64>,
    /// The same, for order requests only.
    pub order_answers: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Window {
    /// Answers to order requests only, whose key starts with `prefix`.
    pub fn count_orders(&self, prefix: &str) -> u64 {
        self.order_answers
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn count(&self, prefix: &str) -> u64 {
        self.answers
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
    pub fn summary(&self) -> String {
        let answers: Vec<String> = self
            .answers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!(
            "{} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms [{}]",
            self.requests,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            answers.join(", ")
        )
    }
}

pub struct Spec<'a> {
    pub gateways: Vec<String>,
    pub sale: &'a str,
    pub workers: u64,
    /// Buyers per second per worker.
    pub rate: f64,
    pub max: Duration,
    /// Users are `first_user + n`, distinct per drill.
    pub first_user: u64,
}

impl Load {
    pub fn start(spec: Spec) -> Load {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let unknown = Arc::new(AtomicU64::new(0));
        let workers = (0..spec.workers.max(1))
            .map(|w| {
                let (stop, shared, unknown) = (stop.clone(), shared.clone(), unknown.clone());
                let clients: Vec<Client> = spec
                    .gateways
                    .iter()
                    .map(|g| Client::new(g, crate::env::SECRET))
                    .collect();
                let (sale, workers, rate, max, first) = (
                    spec.sale.to_string(),
                    spec.workers.max(1),
                    spec.rate,
                    spec.max,
                    spec.first_user,
                );
                std::thread::spawn(move || {
                    let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
                    let mut next = Instant::now();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && t0.elapsed() < max {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += every;
                        let user = first + w + n * workers;
                        let client = &clients[(n as usize) % clients.len()];
                        n += 1;
                        let started = Instant::now();
                        let t = client.token(&sale, user);
                        let mut out = vec![sample(t0, started, false, &t)];
                        let mut acked = None;
                        if let Ok(t) = &t {
                            if let Some(token) = t.str("token") {
                                let started = Instant::now();
                                let o = client.order(&sale, user, token);
                                out.push(sample(t0, started, true, &o));
                                match &o {
                                    Ok(a) if a.status == 202 => {
                                        acked = Some((
                                            a.str("order_id").unwrap_or_default().to_string(),
                                            user,
                                            token.to_string(),
                                        ))
                                    }
                                    Ok(_) => {}
                                    Err(_) => {
                                        unknown.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                        s.samples.extend(out);
                        if let Some((id, user, token)) = acked {
                            s.acked.push((id, user));
                            s.tokens.push(token);
                        }
                    }
                })
            })
            .collect();
        Load {
            t0,
            stop,
            shared,
            unknown,
            workers,
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Stop and wait for the workers.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    pub fn acked(&self) -> (Vec<(String, u64)>, Vec<String>) {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        (s.acked.clone(), s.tokens.clone())
    }

    /// Order requests whose outcome the client never learned.
    pub fn unknown_outcomes(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// Answers between `from_ms` and `to_ms` after the start.
    pub fn window(&self, from_ms: u64, to_ms: u64) -> Window {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).ok();
        let mut w = Window::default();
        for x in s
            .samples
            .iter()
            .filter(|x| x.at_ms >= from_ms && x.at_ms < to_ms)
        {
            w.requests += 1;
            let key = match (x.status, x.code.as_str()) {
                (0, _) => "io".to_string(),
                (s, "") => s.to_string(),
                (s, c) => format!("{s} {c}"),
            };
            if x.order {
                *w.order_answers.entry(key.clone()).or_default() += 1;
            }
            *w.answers.entry(key).or_default() += 1;
            if let Some(h) = h.as_mut() {
                let _ = h.record(x.micros.max(1));
            }
        }
        if let Some(h) = h.filter(|h| !h.is_empty()) {
            w.p50_ms = h.value_at_quantile(0.5) as f64 / 1000.0;
            w.p99_ms = h.value_at_quantile(0.99) as f64 / 1000.0;
            w.max_ms = h.max() as f64 / 1000.0;
        }
        w
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sample(
    t0: Instant,
    started: Instant,
    order: bool,
    r: &Result<loadtest::buyer::Answer, loadtest::buyer::LoadError>,
) -> Sample {
    let (status, code) = match r {
        Ok(a) => (a.status, a.code().to_string()),
        Err(_) => (0, String::new()),
    };
    Sample {
        at_ms: started.duration_since(t0).as_millis() as u64,
        order,
        status,
        code,
        micros: started.elapsed().as_micros() as u64,
    }
}
