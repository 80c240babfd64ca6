//! The hostile soak: thousands of hostile connections held against the gateway while a
//! rush runs, and what that costs the honest buyers and the gateway.
//!
//! One run, one gateway, one configuration:
//!
//! 1. the gateway's idle RSS (`VmRSS` of its process, sampled every 500 ms throughout);
//! 2. a baseline rush on sale A, every request timed (HdrHistogram);
//! 3. the hostile connections ([`Hostile`]) open and are held, re-opened as the gateway
//!    closes them, while the same rush runs on sale B; they stay at least `hold` long so
//!    the gateway's head, body and write timeouts are exercised;
//! 4. every hostile socket is closed; the gateway's open-connection gauge must fall back;
//! 5. the invariants of both sales ([`crate::verify`]).
//!
//! [`Summary::violations`] compares the run with [`Bounds`], all relative to what the same
//! run measured: RSS peak under the soak ≤ idle + N MB, rush p99 with the hostile load
//! ≤ K × p99 without + slack, no timed hostile kind held past the gateway's timeout plus
//! a grace, every refusal answered, connections drained, every invariant.
//!
//! Hostile kinds ([`Kind`]), each a fixed number of concurrent slots, only to the
//! gateway's (loopback) addresses, all on one thread of non-blocking sockets and `poll(2)`:
//! slowloris heads, slow bodies, unread pipelines, half-closed and idle sockets, garbage
//! bytes, too many headers. The unread pipelines ask for `GET /metrics` on the internal
//! listener, the gateway's largest answer (the public listener's are a few hundred bytes
//! and run through the same edge); the others go to the public listener. A slot whose connection the gateway closed is re-opened after
//! `reopen_after`, while fewer than `max_opened` connections were opened in all.

//!
//! Files: [`hostile`] (the hostile connections: kinds, mix, stats, and in
//! `hostile/driver.rs` their poll loop), [`process`] (the gateway's pid, RSS and
//! metrics), [`timed_rush`] (the rush, every request timed); this file runs the soak.

mod hostile;
mod process;
mod timed_rush;

pub use hostile::{
    raise_nofile_limit, Hostile, HostileOptions, HostileStats, Kind, KindStats, Mix, KINDS,
};
use process::{metric, metrics_text, refused_by_reason, short_agent, METRICS_SERVED};
pub use process::{pid_listening_on, vm_rss_kib, PhasePeak, Sampler};
pub use timed_rush::{timed_rush, TimedRush};

use crate::buyer::{Client, LoadError};
use crate::rush::Record;
use crate::verify;
use seckill_common::now_ms;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Limits the run is held to, each relative to what the same run measured.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// Peak RSS under the soak ≤ idle RSS + this.
    pub rss_growth_mb: u64,
    /// Rush p99 with the hostile load ≤ `p99_factor` × p99 without + `p99_slack_ms`.
    pub p99_factor: f64,
    pub p99_slack_ms: u64,
    /// The gateway's longest head/body/write timeout: a timed hostile connection must be
    /// closed within it plus `timeout_grace_ms` (the 2 s lingering close and scheduling).
    pub timeout_ms: u64,
    pub timeout_grace_ms: u64,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            rss_growth_mb: 256,
            p99_factor: 3.0,
            p99_slack_ms: 25,
            timeout_ms: 10_000,
            timeout_grace_ms: 5_000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The gateway's base URL (loopback): its public listener.
    pub gateway: String,
    /// Its internal listener (loopback): the sales are created and the metrics read there,
    /// and the unread pipelines sent there.
    pub internal: String,
    /// Its process, for RSS; found by the listening port when None.
    pub gateway_pid: Option<i32>,
    pub secret: String,
    pub admin: String,
    pub topic: String,
    pub buyers: u64,
    pub units: i64,
    pub clients: u64,
    pub mix: Mix,
    pub byte_interval: Duration,
    pub pipeline_requests: usize,
    pub max_opened: u64,
    /// A slot the gateway closed is opened again after this.
    pub reopen_after: Duration,
    /// The hostile connections are held at least this long (the rush may end sooner).
    pub hold: Duration,
    /// Idle RSS sampling before any load.
    pub idle_for: Duration,
    pub bounds: Bounds,
    /// Printed as the run goes.
    pub verbose: bool,
}

impl Options {
    pub fn new(
        gateway: &str,
        internal: &str,
        secret: &str,
        admin: &str,
        topic: &str,
        hostile: usize,
    ) -> Options {
        Options {
            gateway: gateway.trim_end_matches('/').to_string(),
            internal: internal.trim_end_matches('/').to_string(),
            gateway_pid: None,
            secret: secret.into(),
            admin: admin.into(),
            topic: topic.into(),
            buyers: 3000,
            units: 1500,
            clients: 16,
            mix: Mix::split(hostile),
            byte_interval: Duration::from_millis(300),
            pipeline_requests: 5000,
            max_opened: hostile as u64 * 10,
            reopen_after: Duration::from_secs(1),
            hold: Duration::from_secs(15),
            idle_for: Duration::from_secs(2),
            bounds: Bounds::default(),
            verbose: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub requests: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub order_p99_us: u64,
    pub token_p99_us: u64,
    pub took: Duration,
    pub answers: BTreeMap<String, u64>,
}

impl Latency {
    fn of(r: &TimedRush) -> Latency {
        Latency {
            requests: r.all.len(),
            p50_us: r.all.value_at_quantile(0.50),
            p99_us: r.all.value_at_quantile(0.99),
            max_us: r.all.max(),
            order_p99_us: r.order.value_at_quantile(0.99),
            token_p99_us: r.token.value_at_quantile(0.99),
            took: r.record.took,
            answers: r.record.answers.clone(),
        }
    }
}

/// Everything one soak measured.
pub struct Summary {
    pub pid: i32,
    pub idle_rss_kib: u64,
    pub baseline_peak_rss_kib: u64,
    pub soak_peak_rss_kib: u64,
    /// RSS some seconds after the hostile sockets were closed (lowest sample).
    pub after_rss_kib: u64,
    pub baseline_connections: u64,
    pub soak_peak_connections: u64,
    pub connections_after: Option<u64>,
    pub without: Latency,
    pub with: Latency,
    pub hostile: HostileStats,
    /// The gateway's own count of edge refusals during the soak, by reason.
    pub refused_by_gateway: BTreeMap<String, u64>,
    /// `GET /metrics` the gateway answered during the soak (the unread pipelines', and
    /// the sampler's two a second).
    pub metrics_served: u64,
    pub invariants: Vec<(String, verify::Report)>,
    pub bounds: Bounds,
}

impl Summary {
    pub fn invariants_ok(&self) -> bool {
        self.invariants.iter().all(|(_, r)| r.ok())
    }

    pub fn rss_limit_kib(&self) -> u64 {
        self.idle_rss_kib + self.bounds.rss_growth_mb * 1024
    }

    pub fn p99_limit_us(&self) -> u64 {
        (self.without.p99_us as f64 * self.bounds.p99_factor) as u64
            + self.bounds.p99_slack_ms * 1000
    }

    /// Every bound exceeded and invariant broken, in words; empty when the run passed.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.soak_peak_rss_kib > self.rss_limit_kib() {
            v.push(format!(
                "RSS peak under soak {} MB > idle {} MB + {} MB",
                self.soak_peak_rss_kib / 1024,
                self.idle_rss_kib / 1024,
                self.bounds.rss_growth_mb
            ));
        }
        if self.with.p99_us > self.p99_limit_us() {
            v.push(format!(
                "rush p99 with hostile load {:.1} ms > {} × {:.1} ms + {} ms",
                self.with.p99_us as f64 / 1000.0,
                self.bounds.p99_factor,
                self.without.p99_us as f64 / 1000.0,
                self.bounds.p99_slack_ms
            ));
        }
        let limit = Duration::from_millis(self.bounds.timeout_ms + self.bounds.timeout_grace_ms);
        for (k, s) in &self.hostile.kinds {
            if k.timed() && (s.longest_server_close > limit || s.oldest_at_end > limit) {
                v.push(format!(
                    "{} connections held past the timeout: longest closed after {:.1} s, oldest still open {:.1} s (limit {:.1} s)",
                    k.name(),
                    s.longest_server_close.as_secs_f64(),
                    s.oldest_at_end.as_secs_f64(),
                    limit.as_secs_f64()
                ));
            }
            if s.closed_without_expected > 0 {
                v.push(format!(
                    "{}: {} connections closed without the {} refusal (statuses seen: {:?})",
                    k.name(),
                    s.closed_without_expected,
                    k.expected_status().unwrap_or(0),
                    s.statuses
                ));
            }
        }
        let expected = self.hostile.opened() - self.hostile.connect_failed();
        if self.hostile.opened() > 0 && self.hostile.connect_failed() * 100 > expected.max(1) {
            v.push(format!(
                "{} of {} hostile connects failed (more than 1 %)",
                self.hostile.connect_failed(),
                self.hostile.opened()
            ));
        }
        match self.connections_after {
            Some(n) if n <= self.baseline_connections.max(1) => {}
            other => v.push(format!(
                "gateway connections did not drain after the soak: {other:?} open, {} before",
                self.baseline_connections
            )),
        }
        for (sale, r) in &self.invariants {
            for c in r.checks.iter().filter(|c| !c.pass) {
                v.push(format!("invariant failed on {sale}: {}", c.name));
            }
        }
        v
    }

    /// The hostile connections: totals, then a table row per kind.
    fn print_hostile(&self) {
        let h = &self.hostile;
        println!(
            "hostile: {} opened ({} connect failures), peak {} open at once, over {:.1} s; {} answered with a refusal status; {} closed by the server; {} still open at the end (closed by us)",
            h.opened(),
            h.connect_failed(),
            h.peak_open,
            h.ran.as_secs_f64(),
            h.refused_with_status(),
            h.closed_by_server(),
            h.open_at_end()
        );
        println!("| kind | slots | opened | statuses | closed by server | longest held before close | open at end (oldest) |");
        println!("|---|---|---|---|---|---|---|");
        for (k, s) in &h.kinds {
            let statuses: Vec<String> =
                s.statuses.iter().map(|(c, n)| format!("{c}×{n}")).collect();
            let mut extra = String::new();
            if *k == Kind::Pipeline {
                extra = format!(" ({} requests written)", s.requests_written);
            }
            println!(
                "| {}{} | {} | {} | {} | {} | {:.1} s | {} ({:.1} s) |",
                k.name(),
                extra,
                s.slots,
                s.opened,
                if statuses.is_empty() {
                    "-".into()
                } else {
                    statuses.join(" ")
                },
                s.closed_by_server,
                s.longest_server_close.as_secs_f64(),
                s.open_at_end,
                s.oldest_at_end.as_secs_f64()
            );
        }
    }

    pub fn print(&self) {
        let mb = |k: u64| k as f64 / 1024.0;
        let ms = |u: u64| u as f64 / 1000.0;
        println!("== hostile soak: gateway pid {} ==", self.pid);
        println!(
            "RSS: idle {:.1} MB; peak in the baseline rush {:.1} MB; peak under soak {:.1} MB (ratio {:.2} of idle, +{:.1} MB, limit +{} MB); after the soak {:.1} MB",
            mb(self.idle_rss_kib),
            mb(self.baseline_peak_rss_kib),
            mb(self.soak_peak_rss_kib),
            self.soak_peak_rss_kib as f64 / self.idle_rss_kib.max(1) as f64,
            mb(self.soak_peak_rss_kib.saturating_sub(self.idle_rss_kib)),
            self.bounds.rss_growth_mb,
            mb(self.after_rss_kib)
        );
        println!(
            "gateway connections (seckill_http_connections): baseline rush peak {}, under soak peak {}, after {:?}",
            self.baseline_connections, self.soak_peak_connections, self.connections_after
        );
        for (name, l) in [
            ("without hostile", &self.without),
            ("with hostile   ", &self.with),
        ] {
            println!(
                "rush {name}: {} requests in {:.1} s; p50 {:.2} ms, p99 {:.2} ms (token {:.2}, order {:.2}), max {:.1} ms",
                l.requests,
                l.took.as_secs_f64(),
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.token_p99_us),
                ms(l.order_p99_us),
                ms(l.max_us)
            );
        }
        for (name, l) in [
            ("without hostile", &self.without),
            ("with hostile", &self.with),
        ] {
            let faults: u64 = l
                .answers
                .iter()
                .filter(|(a, _)| a.contains(" 5"))
                .map(|(_, n)| n)
                .sum();
            if faults > 0 {
                println!("rush {name}: {faults} answers 5xx (degraded under load)");
            }
            let answers: Vec<String> = l.answers.iter().map(|(a, n)| format!("{a}: {n}")).collect();
            println!("answers {name}: {}", answers.join(", "));
        }
        println!(
            "rush p99 ratio with/without {:.2} (limit {} × p99 + {} ms = {:.2} ms)",
            self.with.p99_us as f64 / self.without.p99_us.max(1) as f64,
            self.bounds.p99_factor,
            self.bounds.p99_slack_ms,
            ms(self.p99_limit_us())
        );
        self.print_hostile();
        let refused: Vec<String> = self
            .refused_by_gateway
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        println!(
            "gateway seckill_http_refused_total during the soak: {}",
            refused.join(", ")
        );
        println!(
            "gateway answered {} GET /metrics during the soak (unread pipelines wrote {})",
            self.metrics_served,
            self.hostile
                .kinds
                .get(&Kind::Pipeline)
                .map_or(0, |k| k.requests_written)
        );
        for (sale, r) in &self.invariants {
            println!(
                "invariants {sale}: {}",
                if r.ok() { "PASS" } else { "FAIL" }
            );
            r.print();
        }
        let v = self.violations();
        if v.is_empty() {
            println!("SOAK PASS");
        } else {
            for x in &v {
                println!("VIOLATION {x}");
            }
            println!("SOAK FAIL");
        }
    }
}

/// Order requests answered with a Redis fault: Redis may have reserved their unit.
pub fn lost_replies(r: &Record) -> u64 {
    ["order 503 redis_unavailable", "order 503 redis_data_lost"]
        .iter()
        .map(|a| r.answers.get(*a).copied().unwrap_or(0))
        .sum()
}

fn addr_of(base: &str) -> Result<SocketAddr, LoadError> {
    let hostport = base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    hostport
        .parse::<SocketAddr>()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            hostport
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|_| LoadError::Setup(format!("cannot resolve the gateway address in {base}")))
}

/// Run the soak (see the module docs) against a running gateway whose order-writer
/// consumes `opts.topic`.
pub fn run(opts: &Options, stack: &seckill_common::stack::Stack) -> Result<Summary, LoadError> {
    let say = |s: String| {
        if opts.verbose {
            seckill_common::note!("[soak] {s}");
        }
    };
    let (addr, pid) = gateway_process(opts)?;
    let pipeline_addr = addr_of(&opts.internal)?;
    let agent = short_agent();
    let client = Client::new(&opts.gateway, &opts.secret).with_internal(&opts.internal);
    let tag = now_ms();
    let sales = [format!("soak_base_{tag}"), format!("soak_hostile_{tag}")];
    for s in &sales {
        client.create_sale(&opts.admin, s, opts.units, tag - 1000, tag + 3_600_000)?;
    }

    let sampler = Sampler::start(pid, &opts.internal, Duration::from_millis(500));
    sampler.phase("idle");
    let t = Instant::now();
    while t.elapsed() < opts.idle_for || sampler.samples("idle") < 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let idle = sampler.peak("idle");
    say(format!("idle RSS {} KiB", idle.rss_kib));

    sampler.phase("baseline");
    let base = timed_rush(
        &opts.gateway,
        &opts.secret,
        &sales[0],
        opts.buyers,
        opts.clients,
    )?;
    let without = Latency::of(&base);
    say(format!(
        "baseline rush: {} requests, p99 {} µs",
        without.requests, without.p99_us
    ));

    let before = metrics_text(&agent, &opts.internal).unwrap_or_default();
    let refused_before = refused_by_reason(&before);
    let metrics_before = metric(&before, METRICS_SERVED).unwrap_or(0.0) as u64;
    sampler.phase("soak");
    let (stats, soaked) = rush_under_hostile_load(opts, (addr, pipeline_addr), &sales[1], &say)?;
    let soaked = soaked?;
    let with = Latency::of(&soaked);
    let soak_peak = sampler.peak("soak");

    // After: every hostile socket closed; the gateway's connections must drain.
    sampler.phase("after");
    let drain_by = Instant::now()
        + Duration::from_millis(opts.bounds.timeout_ms + opts.bounds.timeout_grace_ms);
    let baseline_conns = sampler.peak("baseline").connections;
    let after = drained(&agent, &opts.internal, drain_by, baseline_conns);
    let after_text = metrics_text(&agent, &opts.internal).unwrap_or_default();
    let refused_after = refused_by_reason(&after_text);
    let metrics_served =
        (metric(&after_text, METRICS_SERVED).unwrap_or(0.0) as u64).saturating_sub(metrics_before);
    let refused_by_gateway = refused_after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(*refused_before.get(k).unwrap_or(&0)),
            )
        })
        .collect();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) || sampler.samples("after") < 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after_rss = sampler.peak("after").rss_kib_min;
    let baseline_peak = sampler.peak("baseline");
    drop(sampler);

    let runs = [(&sales[0], &base), (&sales[1], &soaked)];
    let invariants = verify_sales(opts, stack, runs, &say)?;
    Ok(Summary {
        pid,
        idle_rss_kib: idle.rss_kib,
        baseline_peak_rss_kib: baseline_peak.rss_kib,
        soak_peak_rss_kib: soak_peak.rss_kib,
        after_rss_kib: after_rss,
        baseline_connections: baseline_peak.connections,
        soak_peak_connections: soak_peak.connections,
        connections_after: after,
        without,
        with,
        hostile: stats,
        refused_by_gateway,
        metrics_served,
        invariants,
        bounds: opts.bounds.clone(),
    })
}

/// The hostile connections opened and held at least `opts.hold` (to the public listener
/// `addr`, the pipelines to the internal one), while the rush runs on `sale`; their stats,
/// and the rush (its error kept for after they are closed).
fn rush_under_hostile_load(
    opts: &Options,
    (addr, pipeline_addr): (SocketAddr, SocketAddr),
    sale: &str,
    say: &impl Fn(String),
) -> Result<(HostileStats, Result<TimedRush, LoadError>), LoadError> {
    let hostile = Hostile::start(HostileOptions {
        addr,
        pipeline_addr,
        mix: opts.mix,
        byte_interval: opts.byte_interval,
        pipeline_requests: opts.pipeline_requests,
        max_opened: opts.max_opened,
        reopen_after: opts.reopen_after,
        open_per_tick: 200,
    })?;
    let started = Instant::now();
    let want = opts.mix.total() as u64;
    while hostile.opened() < want && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    say(format!(
        "{} hostile connections opened, {} open, after {:.1} s; rush starts",
        hostile.opened(),
        hostile.open_now(),
        started.elapsed().as_secs_f64()
    ));
    let soaked = timed_rush(&opts.gateway, &opts.secret, sale, opts.buyers, opts.clients);
    say(format!(
        "soak rush done after {:.1} s; holding the hostile connections until {:.1} s",
        started.elapsed().as_secs_f64(),
        opts.hold.as_secs_f64()
    ));
    while started.elapsed() < opts.hold {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = hostile.stop();
    Ok((stats, soaked))
}

/// The gateway's address (loopback only) and the pid of its process, whose RSS must be
/// readable.
fn gateway_process(opts: &Options) -> Result<(SocketAddr, i32), LoadError> {
    let addr = addr_of(&opts.gateway)?;
    if !addr.ip().is_loopback() {
        return Err(LoadError::Setup(format!(
            "the soak runs against a loopback gateway only, not {addr}"
        )));
    }
    let pid = opts
        .gateway_pid
        .or_else(|| pid_listening_on(addr.port()))
        .ok_or_else(|| {
            LoadError::Setup(format!(
                "no process found listening on port {} (give --gateway-pid)",
                addr.port()
            ))
        })?;
    vm_rss_kib(pid).ok_or_else(|| LoadError::Setup(format!("cannot read /proc/{pid}/status")))?;
    Ok((addr, pid))
}

/// The gateway's open connections (both listeners) once they fell back to
/// `baseline_conns` (at least one: the reading's own), or the last reading at `drain_by`;
/// read from its internal listener `internal`.
fn drained(
    agent: &ureq::Agent,
    internal: &str,
    drain_by: Instant,
    baseline_conns: u64,
) -> Option<u64> {
    let mut after = None;
    while Instant::now() < drain_by {
        after = metrics_text(agent, internal)
            .and_then(|t| metric(&t, "seckill_http_connections"))
            .map(|v| v as u64);
        if after.is_some_and(|n| n <= baseline_conns.max(1)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    after
}

/// The invariants of each sale's rush.
fn verify_sales(
    opts: &Options,
    stack: &seckill_common::stack::Stack,
    runs: [(&String, &TimedRush); 2],
    say: &impl Fn(String),
) -> Result<Vec<(String, verify::Report)>, LoadError> {
    let mut invariants = Vec::new();
    for (sale, r) in runs {
        say(format!("verifying {sale}"));
        // As the drills do: a purchase answered 503 after Redis may have run it (its
        // reply overdue) may hold a unit with no order until the writer's reservation
        // sweep (payment window + grace) returns it; such units are bounded by them.
        let unanswered = verify::Unanswered {
            orders: 0,
            lost_replies: lost_replies(&r.record),
        };
        let wait = verify::Wait {
            within: Duration::from_secs(120),
            settle: Duration::from_secs(1),
        };
        let (acked, tokens) = (&r.record.acked, &r.record.tokens);
        let seen = verify::gather(stack, Some(&opts.topic), sale, acked, wait)?;
        let report = verify::check(&verify::Record { acked, tokens }, unanswered, &seen);
        invariants.push((sale.clone(), report));
    }
    Ok(invariants)
}
