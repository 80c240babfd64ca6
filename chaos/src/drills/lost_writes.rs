//! Redis forgetting acknowledged orders: what drills 13 and 14 watch (the gateways'
//! hold, the writer's reconcile) and check (nothing resold); a Redis losing its AOF's
//! last second (14).

use super::{observe, open_sale, sleep, start_load};
use crate::drill::{wait_for, Drill};
use crate::env::{Env, Proc};
use crate::load::Load;
use crate::verify::invariants;
use crate::ChaosError;
use std::time::Duration;

/// The gauge a gateway holds at 1 while some Redis master is not known to hold every
/// acknowledged order (restarted or promoted, not yet reconciled).
const UNCONFIRMED: &str = "seckill_redis_store_unconfirmed";
/// The writer's reconcile counters: passes, orders put back into Redis, conflicts.
const RECONCILE: [&str; 3] = [
    "seckill_writer_reconciles_total",
    "seckill_writer_reconciled_orders_total",
    "seckill_writer_reconcile_conflicts_total",
];

/// A process's `/metrics` text (one request for several metrics), from its internal
/// listener.
fn metrics_text(p: &Proc) -> Option<String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent();
    agent
        .get(&format!("{}/metrics", p.internal_url()))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()
}

/// The store's recovery as the gateways and the writer report it, polled by the drill:
/// when every gateway was seen holding purchases (`seckill_redis_store_unconfirmed` 1),
/// when all were confirmed again, when the writer's reconcile counter moved. Times are
/// milliseconds since the load's start.
pub(super) struct StoreWatch {
    held: Vec<bool>,
    held_at: Option<u64>,
    confirmed_at: Option<u64>,
    reconciled_at: Option<u64>,
    /// The writer's reconcile counters when the watch started, and now (None: not exported).
    base: [Option<f64>; 3],
    now: [Option<f64>; 3],
    /// Whether the gateways export the gauge at all.
    gauge_seen: bool,
    /// The writer's log, and its length when the watch started.
    log: (std::path::PathBuf, u64),
}

impl StoreWatch {
    pub(super) fn start(env: &Env, gws: &[Proc], writer: &Proc) -> StoreWatch {
        let base = Self::counters(writer);
        let log = env
            .stack
            .run
            .join("logs")
            .join(format!("{}.log", writer.name));
        let len = std::fs::metadata(&log).map_or(0, |m| m.len());
        StoreWatch {
            held: vec![false; gws.len()],
            held_at: None,
            confirmed_at: None,
            reconciled_at: None,
            base,
            now: base,
            gauge_seen: false,
            log: (log, len),
        }
    }

    fn counters(writer: &Proc) -> [Option<f64>; 3] {
        let text = metrics_text(writer).unwrap_or_default();
        RECONCILE.map(|m| stackctl::process::parse_metric(&text, m))
    }

    pub(super) fn poll(&mut self, load: &Load, gws: &[Proc], writer: &Proc) {
        let now = load.elapsed_ms();
        let gauges: Vec<Option<f64>> = gws
            .iter()
            .map(|g| {
                stackctl::process::parse_metric(&metrics_text(g).unwrap_or_default(), UNCONFIRMED)
            })
            .collect();
        self.gauge_seen |= gauges.iter().any(Option::is_some);
        for (h, g) in self.held.iter_mut().zip(&gauges) {
            *h |= *g == Some(1.0);
        }
        if self.held_at.is_none() && self.held.iter().all(|h| *h) {
            self.held_at = Some(now);
        }
        if self.held_at.is_some()
            && self.confirmed_at.is_none()
            && gauges.iter().all(|g| *g == Some(0.0))
        {
            self.confirmed_at = Some(now);
        }
        self.now = Self::counters(writer);
        if self.reconciled_at.is_none() && self.delta(0) > 0.0 {
            self.reconciled_at = Some(now);
        }
    }

    /// How much counter `i` of [`RECONCILE`] grew since the start.
    fn delta(&self, i: usize) -> f64 {
        self.now[i].unwrap_or(0.0) - self.base[i].unwrap_or(0.0)
    }

    fn counter_text(&self, i: usize) -> String {
        match self.now[i] {
            Some(_) => format!("+{}", self.delta(i)),
            None => "not exported".into(),
        }
    }
}

/// Orders acknowledged (id, user) that the Redis node at `port` does not hold for that
/// user: no reservation (`res`: order → user) and no settlement (`settled`: order →
/// `paid|user` or `released|user`). An order id the store handed out again to another
/// buyer counts as missing too.
pub(super) fn missing_in_redis(
    port: u16,
    sale: &str,
    acked: &[(String, u64)],
) -> Result<Vec<(String, u64)>, ChaosError> {
    missing_in_buckets(port, sale, 1, &[0], acked)
}

/// [`missing_in_redis`] for a sale of `buckets` buckets, over the buckets `on` (those the
/// node at `port` holds): only orders whose sequence names one of them are looked at.
pub(super) fn missing_in_buckets(
    port: u16,
    sale: &str,
    buckets: u32,
    on: &[u32],
    acked: &[(String, u64)],
) -> Result<Vec<(String, u64)>, ChaosError> {
    let hash = |key: &str| -> Result<std::collections::HashMap<String, String>, ChaosError> {
        let text = stackctl::redis_cluster::query(port, &["HGETALL", key], Duration::from_secs(5))
            .map_err(ChaosError::io(format!("HGETALL {key} on port {port}")))?;
        let lines: Vec<&str> = text.lines().collect();
        Ok(lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect())
    };
    let (mut res, mut settled) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    for b in on {
        let keys = match buckets {
            1 => stock::keys::SaleKeys::new(sale),
            _ => stock::keys::SaleKeys::bucket(sale, *b),
        };
        res.extend(hash(&keys.reservations)?);
        settled.extend(hash(&keys.settled)?);
    }
    let here = |id: &str| {
        buckets == 1
            || stock::keys::split_order_id(id)
                .is_some_and(|(_, seq)| on.contains(&stock::keys::order_bucket(seq, buckets)))
    };
    let mut seen = std::collections::HashSet::new();
    Ok(acked
        .iter()
        .filter(|(id, u)| seen.insert((id.as_str(), *u)))
        .filter(|(id, _)| here(id))
        .filter(|(id, u)| {
            let user = u.to_string();
            let held = res.get(id).is_some_and(|x| *x == user);
            let done = settled
                .get(id)
                .is_some_and(|x| x.rsplit('|').next() == Some(user.as_str()));
            !(held || done)
        })
        .cloned()
        .collect())
}

pub(super) fn distinct(acked: &[(String, u64)]) -> usize {
    acked.iter().collect::<std::collections::HashSet<_>>().len()
}

pub(super) fn sample_ids(missing: &[(String, u64)]) -> String {
    if missing.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = missing
        .iter()
        .take(3)
        .map(|(id, u)| format!("{id} (user {u})"))
        .collect();
    format!(", e.g. {}", ids.join(", "))
}

/// What [`recover`] saw: the first 202 (request start, ms since the load's start).
pub(super) struct Recovered {
    pub(super) first_ok: Option<u64>,
}

/// After Redis forgot `lost` acknowledged orders (from `f0`, the fault; `back`, the time a
/// Redis serves the sale again): watch the gateways hold purchases and the writer
/// reconcile until purchases are accepted again, and check that they were held until the
/// reconcile, that the writer put back at least the lost orders, and how long it took.
#[allow(clippy::too_many_arguments)]
pub(super) fn recover(
    d: &mut Drill,
    load: &Load,
    gws: &[Proc],
    writer: &Proc,
    watch: &mut StoreWatch,
    f0: u64,
    back: u64,
    lost: usize,
) -> Recovered {
    // Until a 202 came (request started after the fault) and the writer reconciled, or
    // 3 s after that 202 without a reconcile (no reconcile is coming), at most 40 s.
    let t0 = std::time::Instant::now();
    let mut ok_seen: Option<std::time::Instant> = None;
    wait_for(Duration::from_secs(40), || {
        watch.poll(load, gws, writer);
        if ok_seen.is_none() && load.window(f0, u64::MAX).count("202") > 0 {
            ok_seen = Some(std::time::Instant::now());
        }
        ok_seen
            .is_some_and(|t| watch.reconciled_at.is_some() || t.elapsed() > Duration::from_secs(3))
    });
    // A little longer for the gauges to drop everywhere.
    wait_for(Duration::from_secs(3), || {
        watch.poll(load, gws, writer);
        watch.confirmed_at.is_some() || watch.held_at.is_none()
    });
    let now = load.elapsed_ms();
    let first_ok = first_slice(load, f0, now, |w| w.count("202") > 0);
    let rel = |t: Option<u64>| {
        t.map_or("never".to_string(), |t| {
            format!("{:.2} s", (t as f64 - back as f64) / 1000.0)
        })
    };
    let held = observe(
        d,
        load,
        "from the fault to the first 202",
        f0,
        first_ok.unwrap_or(now),
    );
    d.log(format!(
        "recovery timeline: gateways all holding {} after the fault; after the store was back ({:.2} s after the fault): writer reconcile seen {}, gateways all confirmed {}, first 202 {}; writer: reconciles {}, orders re-applied {}, conflicts {} (watched {:.1} s)",
        watch.held_at.map_or("never".into(), |t| format!("{:.2} s", (t as f64 - f0 as f64) / 1000.0)),
        (back as f64 - f0 as f64) / 1000.0,
        rel(watch.reconciled_at),
        rel(watch.confirmed_at),
        rel(first_ok),
        watch.counter_text(0),
        watch.counter_text(1),
        watch.counter_text(2),
        t0.elapsed().as_secs_f64()
    ));
    for line in reconcile_log_lines(watch, 6) {
        d.log(format!("  writer: {line}"));
    }
    d.check(
        format!(
            "purchases held while the store was unconfirmed: {} answered 503 store_recovering, seckill_redis_store_unconfirmed 1 on {} of {} gateways{}",
            held.count_orders("503 store_recovering"),
            watch.held.iter().filter(|h| **h).count(),
            gws.len(),
            if watch.gauge_seen { "" } else { " (gauge not exported)" }
        ),
        watch.held_at.is_some() && held.count_orders("503 store_recovering") > 0,
    );
    d.check(
        format!(
            "the writer reconciled: reconciles {}, orders re-applied {} (lost: {lost}), conflicts {}",
            watch.counter_text(0),
            watch.counter_text(1),
            watch.counter_text(2)
        ),
        watch.reconciled_at.is_some() && watch.delta(1) >= lost as f64,
    );
    // The first 202 after the fault comes from a store the writer has reconciled: no
    // purchase started before the reconcile was accepted (250 ms: the polling's grain).
    d.check(
        format!(
            "no purchase accepted before the reconcile: first 202 {} after the store was back, reconcile seen {}",
            rel(first_ok),
            rel(watch.reconciled_at)
        ),
        match (first_ok, watch.reconciled_at) {
            (Some(ok), Some(r)) => ok + 250 >= r,
            _ => false,
        },
    );
    d.check(
        format!(
            "purchases resumed: first 202 {} after the store was back, {} after the fault (within 30 s)",
            rel(first_ok),
            first_ok.map_or("never".into(), |t| format!("{:.2} s", (t as f64 - f0 as f64) / 1000.0))
        ),
        first_ok.is_some_and(|t| t.saturating_sub(back) <= 30_000),
    );
    Recovered { first_ok }
}

/// The last `n` lines the writer logged since the watch started that mention its
/// reconcile (colour codes removed).
fn reconcile_log_lines(watch: &StoreWatch, n: usize) -> Vec<String> {
    use std::io::{Read, Seek};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(&watch.log.0) {
        if f.seek(std::io::SeekFrom::Start(watch.log.1)).is_ok() {
            let _ = f.take(4 << 20).read_to_string(&mut text);
        }
    }
    let lines: Vec<String> = text
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains("reconcil") && !l.contains("canceller"))
        .map(|l| l.chars().take(300).collect())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Wait (bounded) until the sale is sold out, and say what Redis holds.
pub(super) fn sell_out(d: &mut Drill, url: &str, sale: &str, units: i64) -> Result<(), ChaosError> {
    let mut st = stock::Stock::new(stock::connect(url, Duration::from_secs(2))?);
    let sold_out = wait_for(Duration::from_secs(40), || {
        st.state(sale).is_ok_and(|s| s.remaining == 0)
    });
    let state = st.state(sale)?;
    d.log(format!(
        "Redis after the sale: remaining {}, held {}, sold {} of {units}",
        state.remaining, state.held, state.sold
    ));
    d.check(format!("the sale sold out ({units} units)"), sold_out);
    Ok(())
}

/// From the buyers' side: no more buyers told 202 than units, no order id told to two.
pub(super) fn resold_check(d: &mut Drill, load: &Load, units: i64) {
    let (acked, _) = load.acked();
    let buyers: std::collections::HashSet<u64> = acked.iter().map(|(_, u)| *u).collect();
    let mut owner: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let twice = acked
        .iter()
        .filter(|(id, u)| *owner.entry(id.as_str()).or_insert(*u) != *u)
        .count();
    d.check(
        format!(
            "no unit sold twice: {} buyers acknowledged for {units} units, {twice} order ids acknowledged to a second buyer",
            buyers.len()
        ),
        buyers.len() as i64 <= units && twice == 0,
    );
}

/// The end drills 13 and 14 share: orders accepted again after the recovery, then the
/// load stopped, nothing resold and the invariants.
pub(super) fn sold_again_then_checked(
    env: &Env,
    d: &mut Drill,
    sale: &str,
    mut load: Load,
    rec: &Recovered,
    units: i64,
) -> Result<(), ChaosError> {
    let after = observe(
        d,
        &load,
        "after the recovery",
        rec.first_ok.unwrap_or(u64::MAX),
        u64::MAX,
    );
    d.check(
        format!("after the recovery: {} orders accepted", after.count("202")),
        after.count("202") > 0,
    );
    load.stop();
    resold_check(d, &load, units);
    invariants(env, d, sale, &load)
}

pub(super) fn redis_aof_tail_lost(env: &Env, d: &mut Drill) -> Result<(), ChaosError> {
    use stackctl::redis::{AofSampler, Persistence};
    let url = env.use_aof_redis()?;
    let r = &env.aof_redis;
    d.log(format!(
        "Redis with an append-only file on {url}: appendonly yes, appendfsync everysec, aof-load-truncated yes ({}), run_id {}",
        r.aof_dir().display(),
        r.run_id().unwrap_or("?".into())
    ));
    let gws = (0..2)
        .map(|i| env.gateway(&format!("d14-gw-{i}"), "d14", None, &[]))
        .collect::<Result<Vec<_>, _>>()?;
    let writer = env.writer("d14-writer")?;
    // About 5 s of selling before the fault: the sale sells out after the recovery, so a
    // unit sold twice would show as an oversell.
    let units = 2000;
    let sale = open_sale(d, &gws[0], units)?;
    // The AOF's size every 50 ms, the last 5 s kept: what the OS may lose is known.
    let mut sampler = AofSampler::start(
        r,
        Duration::from_millis(50),
        Duration::from_secs(5),
        Duration::from_secs(300),
    );
    let gw_refs: Vec<&Proc> = gws.iter().collect();
    let load = start_load(d, &gw_refs, &sale, 8, 25.0, 80);
    sleep(5.0);
    let before = observe(d, &load, "before", 0, load.elapsed_ms());
    d.check(
        format!(
            "selling with the AOF on: {} orders accepted",
            before.count("202")
        ),
        before.count("202") > 0,
    );
    let mut watch = StoreWatch::start(env, &gws, &writer);
    let old_run = r.run_id().unwrap_or("?".into());
    d.log("FAULT: kill -9 Redis; then the OS loses its unsynced page cache: the newest incremental AOF is cut back to its size 1 s before the kill (appendfsync everysec may lose that much)");
    let cut = r.crash_losing_tail(&sampler, Duration::from_secs(1));
    let f0 = load.elapsed_ms();
    sampler.stop();
    let cut = cut?;
    d.check(
        format!(
            "the AOF lost its tail: {} cut from {} to {} bytes ({} bytes written in the {:.2} s before the kill)",
            cut.file.display(),
            cut.from,
            cut.to,
            cut.bytes_lost(),
            cut.before_kill.as_secs_f64()
        ),
        cut.bytes_lost() > 0,
    );
    r.up_with(Persistence::AppendOnly)?;
    let back = load.elapsed_ms();
    // What the restarted Redis knows, read at once (the writer's reconcile waits its grace
    // period before putting anything back).
    let (acked, _) = load.acked();
    let mut read = Err(ChaosError::Setup("not read yet".into()));
    wait_for(Duration::from_secs(5), || {
        // An error: LOADING while it replays the file.
        read = missing_in_redis(r.port, &sale, &acked);
        read.is_ok()
    });
    let missing = read.map_err(|e| ChaosError::GaveUp {
        what: "could not read the restarted Redis".into(),
        source: Box::new(e),
    })?;
    let state = stock::Stock::new(stock::connect(&url, Duration::from_secs(2))?).state(&sale)?;
    d.log(format!(
        "REMOVED: Redis restarted from what is left of its AOF, {} ms after the kill; run_id {old_run} → {}; it holds {} reserved or sold, remaining {}",
        back - f0,
        r.run_id().unwrap_or("?".into()),
        state.held + state.sold,
        state.remaining
    ));
    d.check(
        format!(
            "acknowledged orders lost with the AOF's tail: {} of {} 202s are not in the restarted Redis (their orders are in Kafka){}",
            missing.len(),
            distinct(&acked),
            sample_ids(&missing)
        ),
        !missing.is_empty(),
    );
    let rec = recover(d, &load, &gws, &writer, &mut watch, f0, back, missing.len());
    sell_out(d, &url, &sale, units)?;
    sold_again_then_checked(env, d, &sale, load, &rec, units)
}

/// Start of the first 50 ms slice from `from_ms` on (ms since the load's start) in which
/// `hit` holds.
fn first_slice(
    load: &Load,
    from_ms: u64,
    to_ms: u64,
    hit: impl Fn(&crate::load::Window) -> bool,
) -> Option<u64> {
    (from_ms..to_ms)
        .step_by(50)
        .find(|&t| hit(&load.window(t, t + 50)))
}
