//! Background load for a drill: `workers` threads of buyers (the loadtest crate's
//! client), each paced to `rate` buyers per second, spread over the given gateways,
//! until stopped or `max` has passed. Every answer is kept with its time, latency and
//! sale, every 202 with its order id, user and token, and every order request whose
//! outcome the client could not learn (connection broken, timeout).
//!
//! By default a buyer takes a token and orders. With a [`Mix`] (the campaign), each
//! buyer draws what it does from a seeded generator: buy and pay at once, double-click
//! (one token, two concurrent orders), buy and pay a few seconds later (maybe after the
//! payment window), abandon (never pay), or replay an earlier buyer's token; the buyers
//! pay through the gateway's internal listener, playing the payment provider
//! ([`Endpoint`]). The sale and a gateway's address can change while the load runs
//! ([`Load::switch_sale`], [`Load::set_gateway`]).

use loadtest::buyer::{Answer, Client, LoadError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A gateway as the load reaches it: `url` for the buyers (a gateway's public listener,
/// or a balancer in front of several), `internal` for the payment provider's callback (a
/// gateway's internal listener: a balancer fronts the buyers' listeners only).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub internal: String,
}

impl Endpoint {
    /// A gateway process's two listeners.
    pub fn of(gw: &stackctl::process::Proc) -> Endpoint {
        Endpoint {
            url: gw.url(),
            internal: gw.internal_url(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Token,
    Order,
    Pay,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub at_ms: u64,
    pub kind: Kind,
    pub sale: Arc<str>,
    /// 0 when no HTTP answer came back.
    pub status: u16,
    pub code: String,
    pub micros: u64,
}

#[derive(Default)]
struct Shared {
    samples: Vec<Sample>,
    /// (order id, user, sale) of every 202, and the token behind it.
    acked: Vec<(String, u64, Arc<str>)>,
    tokens: Vec<String>,
}

/// What the buyers do and what they send it to; changed while they run.
struct Target {
    gateways: Vec<Endpoint>,
    sale: Arc<str>,
    generation: u64,
}

pub struct Load {
    t0: Instant,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    target: Arc<RwLock<Target>>,
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
    /// The same, for payments only.
    pub pay_answers: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Window {
    /// Answers to order requests only, whose key starts with `prefix`.
    pub fn count_orders(&self, prefix: &str) -> u64 {
        count(&self.order_answers, prefix)
    }

    pub fn count(&self, prefix: &str) -> u64 {
        count(&self.answers, prefix)
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

fn count(m: &BTreeMap<String, u64>, prefix: &str) -> u64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// The buyer mix of a campaign: each worker's choices come from a generator seeded with
/// `seed` and the worker's number.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub seed: u64,
}

pub struct Spec<'a> {
    pub gateways: Vec<Endpoint>,
    pub sale: &'a str,
    pub workers: u64,
    /// Buyers per second per worker.
    pub rate: f64,
    pub max: Duration,
    /// Users are `first_user + n`, distinct per drill.
    pub first_user: u64,
    /// None: every buyer takes a token and orders.
    pub mix: Option<Mix>,
}

/// One worker's view: its clients (rebuilt when the target changes) and its record.
struct Worker {
    t0: Instant,
    shared: Arc<Mutex<Shared>>,
    target: Arc<RwLock<Target>>,
    unknown: Arc<AtomicU64>,
    generation: u64,
    clients: Vec<Client>,
    sale: Arc<str>,
}

impl Worker {
    fn refresh(&mut self) {
        let t = self.target.read().unwrap_or_else(|p| p.into_inner());
        if t.generation != self.generation || self.clients.is_empty() {
            self.generation = t.generation;
            self.clients = t
                .gateways
                .iter()
                .map(|g| Client::new(&g.url, crate::env::SECRET).with_internal(&g.internal))
                .collect();
            self.sale = t.sale.clone();
        }
    }

    fn record(&self, out: Vec<Sample>, acked: Vec<(String, u64, String)>) {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.samples.extend(out);
        for (id, user, token) in acked {
            s.acked.push((id, user, self.sale.clone()));
            s.tokens.push(token);
        }
    }

    fn sample(&self, started: Instant, kind: Kind, r: &Result<Answer, LoadError>) -> Sample {
        let (status, code) = match r {
            Ok(a) => (a.status, a.code().to_string()),
            Err(_) => (0, String::new()),
        };
        Sample {
            at_ms: started.duration_since(self.t0).as_millis() as u64,
            kind,
            sale: self.sale.clone(),
            status,
            code,
            micros: started.elapsed().as_micros() as u64,
        }
    }

    /// One order request with `token`: its sample, and the 202's order id.
    fn order(&self, client: &Client, user: u64, token: &str) -> (Sample, Option<String>) {
        let started = Instant::now();
        let o = client.order(&self.sale, user, token);
        let s = self.sample(started, Kind::Order, &o);
        let id = match &o {
            Ok(a) if a.status == 202 => Some(a.str("order_id").unwrap_or_default().to_string()),
            Ok(_) => None,
            Err(_) => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        (s, id)
    }

    /// A token for `user`, or None (its sample recorded either way).
    fn token(&self, client: &Client, user: u64, out: &mut Vec<Sample>) -> Option<String> {
        let started = Instant::now();
        let t = client.token(&self.sale, user);
        out.push(self.sample(started, Kind::Token, &t));
        t.ok()?.str("token").map(str::to_string)
    }

    fn pay(&self, client: &Client, order_id: &str, user: u64) -> Sample {
        let started = Instant::now();
        let p = client.pay(order_id, user);
        self.sample(started, Kind::Pay, &p)
    }
}

/// What a buyer of the mix does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    BuyAndPay,
    DoubleClick,
    PayLater,
    Abandon,
    Replay,
}

fn draw(rng: &mut StdRng) -> Act {
    match rng.random_range(0..100) {
        0..25 => Act::BuyAndPay,
        25..40 => Act::DoubleClick,
        40..65 => Act::PayLater,
        65..85 => Act::Abandon,
        _ => Act::Replay,
    }
}

/// One worker's share of the load: its number of `workers`, `rate` buyers per second
/// until `max`, users from `first`, and the campaign's mix if any.
struct Pace {
    w: u64,
    workers: u64,
    rate: f64,
    max: Duration,
    first: u64,
    mix: Option<Mix>,
}

/// What a worker keeps from one buyer to the next.
struct Memory {
    rng: StdRng,
    /// Payments due: (when, order id, user).
    pays: VecDeque<(Instant, String, u64)>,
    /// This sale's earlier buyers (user, token), for replays.
    history: Vec<(u64, String)>,
}

impl Worker {
    /// Buyers one after another, paced, until `stop` or the pace's end.
    fn run(mut self, p: Pace, stop: &AtomicBool) {
        let every = Duration::from_secs_f64(1.0 / p.rate.max(0.1));
        let mut mem = Memory {
            rng: StdRng::seed_from_u64(
                p.mix.map_or(0, |m| m.seed) ^ (p.w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            pays: VecDeque::new(),
            history: Vec::new(),
        };
        let mut next = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) && self.t0.elapsed() < p.max {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += every;
            let before = self.sale.clone();
            self.refresh();
            if self.sale != before {
                mem.history.clear();
            }
            let user = p.first + p.w + n * p.workers;
            let client = &self.clients[(n as usize) % self.clients.len()];
            n += 1;
            let (out, acked) = self.buyer(client, user, p.mix, &mut mem);
            self.record(out, acked);
        }
    }

    /// One buyer (`user`) on `client`, after the payments that are due: what it does is
    /// drawn from the mix (without one: a token and an order). Its samples and 202s.
    fn buyer(
        &self,
        client: &Client,
        user: u64,
        mix: Option<Mix>,
        mem: &mut Memory,
    ) -> (Vec<Sample>, Vec<(String, u64, String)>) {
        let mut out = Vec::new();
        let mut acked = Vec::new();
        // Payments that are due (for the sale they were bought in).
        while mem.pays.front().is_some_and(|p| p.0 <= Instant::now()) {
            if let Some((_, id, u)) = mem.pays.pop_front() {
                out.push(self.pay(client, &id, u));
            }
        }
        let act = match mix {
            None => Act::Abandon,
            Some(_) => draw(&mut mem.rng),
        };
        if act == Act::Replay {
            if let Some((u, token)) = (!mem.history.is_empty())
                .then(|| mem.history[mem.rng.random_range(0..mem.history.len())].clone())
            {
                let (s, id) = self.order(client, u, &token);
                out.push(s);
                acked.extend(id.map(|id| (id, u, token)));
                return (out, acked);
            }
        }
        let Some(token) = self.token(client, user, &mut out) else {
            return (out, acked);
        };
        let ids = self.orders(client, user, &token, act == Act::DoubleClick, &mut out);
        let first_id = ids.iter().flatten().next().cloned();
        for id in ids.into_iter().flatten() {
            acked.push((id, user, token.clone()));
        }
        if let Some(id) = first_id {
            if mix.is_some() {
                mem.history.push((user, token.clone()));
            }
            match act {
                Act::BuyAndPay => out.push(self.pay(client, &id, user)),
                Act::PayLater => mem.pays.push_back((
                    Instant::now() + Duration::from_millis(mem.rng.random_range(0..8000)),
                    id,
                    user,
                )),
                _ => {}
            }
        }
        (out, acked)
    }

    /// One order with `token`, or two at once (a double-click); the 202s' order ids.
    fn orders(
        &self,
        client: &Client,
        user: u64,
        token: &str,
        double_click: bool,
        out: &mut Vec<Sample>,
    ) -> Vec<Option<String>> {
        if !double_click {
            let (s, id) = self.order(client, user, token);
            out.push(s);
            return vec![id];
        }
        let (a, b) = std::thread::scope(|s| {
            let other = s.spawn(|| self.order(client, user, token));
            let mine = self.order(client, user, token);
            (mine, other.join())
        });
        let mut ids = Vec::new();
        for (s, id) in std::iter::once(a).chain(b.ok()) {
            out.push(s);
            ids.push(id);
        }
        ids
    }
}

impl Load {
    pub fn start(spec: Spec) -> Load {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let unknown = Arc::new(AtomicU64::new(0));
        let target = Arc::new(RwLock::new(Target {
            gateways: spec.gateways.clone(),
            sale: spec.sale.into(),
            generation: 0,
        }));
        let workers = (0..spec.workers.max(1))
            .map(|w| {
                let stop = stop.clone();
                let me = Worker {
                    t0,
                    shared: shared.clone(),
                    target: target.clone(),
                    unknown: unknown.clone(),
                    generation: 0,
                    clients: Vec::new(),
                    sale: spec.sale.into(),
                };
                let pace = Pace {
                    w,
                    workers: spec.workers.max(1),
                    rate: spec.rate,
                    max: spec.max,
                    first: spec.first_user,
                    mix: spec.mix,
                };
                std::thread::spawn(move || me.run(pace, &stop))
            })
            .collect();
        Load {
            t0,
            stop,
            shared,
            target,
            unknown,
            workers,
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// From now on, buyers go to `sale` (requests under way finish on the old one).
    pub fn switch_sale(&self, sale: &str) {
        let mut t = self.target.write().unwrap_or_else(|p| p.into_inner());
        t.sale = sale.into();
        t.generation += 1;
    }

    /// From now on, the `i`th gateway is at `at` (a restarted gateway's new ports).
    pub fn set_gateway(&self, i: usize, at: Endpoint) {
        let mut t = self.target.write().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = t.gateways.get_mut(i) {
            *g = at;
        }
        t.generation += 1;
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
        (
            s.acked.iter().map(|(o, u, _)| (o.clone(), *u)).collect(),
            s.tokens.clone(),
        )
    }

    /// The 202s of one sale, and the tokens behind them.
    pub fn acked_for(&self, sale: &str) -> (Vec<(String, u64)>, Vec<String>) {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.acked
            .iter()
            .zip(&s.tokens)
            .filter(|((_, _, s), _)| &**s == sale)
            .map(|((o, u, _), t)| ((o.clone(), *u), t.clone()))
            .unzip()
    }

    /// Order requests whose outcome the client never learned.
    pub fn unknown_outcomes(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// Answers between `from_ms` and `to_ms` after the start.
    pub fn window(&self, from_ms: u64, to_ms: u64) -> Window {
        self.window_where(|x| x.at_ms >= from_ms && x.at_ms < to_ms)
    }

    /// Every answer about one sale.
    pub fn window_for(&self, sale: &str) -> Window {
        self.window_where(|x| &*x.sale == sale)
    }

    fn window_where(&self, keep: impl Fn(&Sample) -> bool) -> Window {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).ok();
        let mut w = Window::default();
        for x in s.samples.iter().filter(|x| keep(x)) {
            w.requests += 1;
            let key = match (x.status, x.code.as_str()) {
                (0, _) => "io".to_string(),
                (s, "") => s.to_string(),
                (s, c) => format!("{s} {c}"),
            };
            match x.kind {
                Kind::Order => *w.order_answers.entry(key.clone()).or_default() += 1,
                Kind::Pay => *w.pay_answers.entry(key.clone()).or_default() += 1,
                Kind::Token => {}
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
