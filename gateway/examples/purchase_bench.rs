//! The purchase path as a gateway request takes it — `stock::Stock::purchase` over the
//! gateway's pipelined may Redis client (`RedisPipe`), running the purchase Lua script —
//! at full speed, with what Redis spent on it.
//! `cargo run --release -p gateway --example purchase_bench [purchases=100000] [options]`
//!
//! Options: `--url URL` (default: the local stack's Redis; a `redis+cluster://…` URL
//! measures a Redis Cluster), `--buckets B` (the sale's stock buckets, default 1),
//! `--wait R` (WAIT R replicas after purchases; default the gateway's, 1 on a cluster),
//! `--workers N` (may worker threads, default 1: one client thread, as redis-benchmark
//! has, so that on a 2-core machine Redis keeps a core as it has its own machine in
//! production; two workers sharing the cores with Redis measured 36k against 50-55k
//! purchases/s, see loadtest/bench/PROFILE.md), `--coroutines N` (buyers, default 256), `--connections N` (pipe connections, per
//! master on a cluster; default the gateway's `redis_connections`, 4). The pipe is
//! configured as the gateway configures it by default (timeout 200 ms, in-flight
//! bound, breaker; on a cluster WAIT 1 after the purchases of each write).
//!
//! Every purchase is a different buyer (users spread over the home buckets) with a
//! token issued beforehand; the sale holds twice the purchases, so it never sells out
//! while measured. Redis's side is read from `INFO` on every node before and after:
//! CPU (used_cpu_user + used_cpu_sys) per purchase, `EVALSHA` µs per call
//! (commandstats), and commands per read (EVALSHA calls per `total_reads_processed`:
//! how many purchases each of Redis's reads carried, i.e. the batching the client
//! achieved). The redis-benchmark reference is
//! `order-writer/examples/purchase_reference.rs`.
//!
//! **Scale-out** (`--scaleout 1,2,3 [--replicas 1] [--port 21601] [--buckets 64]`): for
//! each master count M, a fresh Redis Cluster of its own (`stackctl::redis_cluster`, M
//! masters with R = `--replicas` replicas each, ports `port + 100·R + 10·(M-1)` and up,
//! under `.run/bench-cluster/mM-rR`, stopped afterwards unless it was up before), one
//! hot sale with `--buckets` buckets, the same purchases; no replicas, no WAIT.
//!
//! Output lines (parsed by `loadtest/bench/run.sh`):
//! `project purchase path (…): <rate> purchases/s (<sold> sold, <failed> failed)`,
//! `redis: masters <m> cpu_us_per_purchase <c> evalsha_usec_per_call <u> cmds_per_read <r>
//! cpu_us_per_master <a,b,…> client_cpu_us_per_purchase <p>` (the last: this process's
//! own CPU per purchase, the client side of the path), and in scale-out mode one
//! `scaleout masters=<M> …` line per master count (fields named in `scaleout_line`).

use gateway::breaker::Breaker;
use gateway::metrics::Metrics;
use gateway::redis_pipe::{Options, RedisPipe, WaitPolicy};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stock::{SaleSpec, Stock};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

use seckill_common::now_ms;

/// What one Redis reports about itself (the fields used here).
#[derive(Default, Clone, Copy)]
struct RedisStats {
    cpu_s: f64,
    evalsha_calls: u64,
    evalsha_usec: u64,
    reads: u64,
}

/// `addr`: a cluster node's `host:port`, or the one Redis's URL (`rediss://` too).
fn redis_stats(addr: &str) -> Res<RedisStats> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("redis://{addr}")
    };
    let mut c = stock::connect_single(&url, Duration::from_secs(5))?;
    let info: String = redis::cmd("INFO").arg("all").query(&mut c)?;
    let mut f: HashMap<&str, &str> = HashMap::new();
    for line in info.lines() {
        if let Some((k, v)) = line.trim().split_once(':') {
            f.insert(k, v);
        }
    }
    let num = |k: &str| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let ev = f.get("cmdstat_evalsha").copied().unwrap_or("");
    let field = |name: &str| {
        ev.split(',')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(RedisStats {
        cpu_s: num("used_cpu_user") + num("used_cpu_sys"),
        reads: num("total_reads_processed") as u64,
        evalsha_calls: field("calls"),
        evalsha_usec: field("usec"),
    })
}

/// The masters serving slots and the replicas (`host:port` each), or the one Redis (its
/// URL, which may be `rediss://` with credentials).
fn nodes(url: &str) -> Res<(Vec<String>, Vec<String>)> {
    if !stock::cluster::is_cluster_url(url) {
        return Ok((vec![url.to_string()], Vec::new()));
    }
    let u = stock::cluster::parse_url(url)?;
    let (h, p) = u.nodes.first().ok_or("no seed")?;
    let mut c = stock::connect_single(&format!("redis://{h}:{p}"), Duration::from_secs(5))?;
    let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c)?;
    let (mut masters, mut replicas) = (Vec::new(), Vec::new());
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[2].contains("fail") {
            continue;
        }
        let addr = f[1].split('@').next().unwrap_or(f[1]);
        // A node that never met another does not know its own address.
        let addr = if addr.starts_with(':') {
            format!("{h}{addr}")
        } else {
            addr.to_string()
        };
        if f[2].split(',').any(|x| x == "master") {
            if f.len() > 8 {
                masters.push(addr);
            }
        } else {
            replicas.push(addr);
        }
    }
    masters.sort();
    replicas.sort();
    Ok((masters, replicas))
}

/// CPU seconds (user + system) this process has used.
fn own_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[derive(Clone, Copy)]
struct Setup {
    n: usize,
    /// `WAIT` replicas after purchases; None: the gateway's default (1 on a cluster).
    wait: Option<u32>,
    workers: usize,
    buckets: u32,
    coroutines: usize,
    connections: usize,
}

/// What a buyer coroutine does for purchase `i`; false: it failed.
type Work = Arc<dyn Fn(&mut Stock<RedisPipe>, usize) -> bool + Send + Sync>;

/// One measurement of the purchase path on `url`.
struct Measured {
    rate: f64,
    sold: i64,
    failed: usize,
    wait_replicas: u32,
    masters: usize,
    /// Per master: Redis CPU µs per purchase (of all purchases) and its EVALSHA calls.
    master_cpu_us: Vec<f64>,
    master_calls: Vec<u64>,
    replica_cpu_us: f64,
    replica_nodes: usize,
    evalsha_usec_per_call: f64,
    cmds_per_read: f64,
    client_cpu_us: f64,
}

/// The pipe as the gateway builds it from its default configuration (server.rs):
/// timeout, in-flight bound, breaker, and WAIT after purchases (1 on a cluster unless
/// `--wait` says); the replicas it waits for.
fn gateway_pipe(url: &str, s: &Setup) -> Res<(RedisPipe, u32)> {
    let cfg = gateway::config::Config::default();
    let timeout = Duration::from_millis(cfg.redis_timeout_ms.max(1) as u64);
    let replicas = match (s.wait, cfg.redis_wait_replicas) {
        (Some(w), _) => w,
        (None, r) if r < 0 => stock::cluster::is_cluster_url(url) as u32,
        (None, r) => r.min(16) as u32,
    };
    let pipe = RedisPipe::start_with(
        url,
        &Options {
            connections: s.connections,
            timeout,
            max_in_flight: cfg.redis_max_in_flight.max(1) as usize,
            wait: (replicas > 0).then(|| WaitPolicy {
                replicas,
                timeout_ms: (cfg.redis_wait_timeout_ms.max(1) as u64)
                    .min((timeout.as_millis() as u64 / 3).max(1)),
            }),
        },
        Arc::new(Breaker::new(
            cfg.breaker_threshold.max(1) as u32,
            Duration::from_millis(cfg.breaker_cool_off_ms.max(1) as u64),
        )),
        Arc::new(Metrics::default()),
    )?;
    Ok((pipe, replicas))
}

/// `work(i)` for i in 0..n by `coroutines` coroutines on `pipe`; how many failed.
fn run_all(pipe: &RedisPipe, coroutines: usize, n: usize, work: Work) -> usize {
    let (next, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handles: Vec<_> = (0..coroutines)
        .map(|_| {
            let (next, failed, pipe, work) =
                (next.clone(), failed.clone(), pipe.clone(), work.clone());
            may::go!(move || {
                let mut s = Stock::new(pipe);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    if !work(&mut s, i) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    failed.load(Ordering::Relaxed)
}

/// Buyers 1..=n of `sale` with a token each, issued through the pipe too (setup, not
/// measured); a token call that timed out is tried again (a busy machine).
fn issue_tokens(pipe: &RedisPipe, s: &Setup, sale: &str) -> Res<Tokens> {
    let tokens: Tokens = Arc::new((0..s.n).map(|_| std::sync::OnceLock::new()).collect());
    let issue = {
        let (tokens, sale) = (tokens.clone(), sale.to_string());
        Arc::new(move |s: &mut Stock<RedisPipe>, i: usize| {
            if tokens[i].get().is_some() {
                return true;
            }
            match s.issue_token(&sale, i as u64 + 1, Duration::from_secs(3600)) {
                Ok(t) => tokens[i].set(t.token).is_ok(),
                Err(_) => false,
            }
        })
    };
    for _ in 0..3 {
        run_all(pipe, s.coroutines, s.n, issue.clone());
        if tokens.iter().all(|t| t.get().is_some()) {
            break;
        }
    }
    let missing = tokens.iter().filter(|t| t.get().is_none()).count();
    if missing > 0 {
        return Err(format!("{missing} tokens could not be issued").into());
    }
    Ok(tokens)
}

/// Each buyer's token, set once.
type Tokens = Arc<Vec<std::sync::OnceLock<String>>>;

fn measure(url: &str, s: &Setup) -> Res<Measured> {
    let n = s.n;
    let mut admin = Stock::new(stock::connect(url, Duration::from_secs(5))?);
    let sale = format!("pbench_{}", now_ms());
    admin.create_sale_with_buckets(
        &sale,
        &SaleSpec {
            stock: 2 * n as i64,
            per_user_limit: 1,
            start_ms: now_ms() - 1000,
            end_ms: now_ms() + 3_600_000,
        },
        s.buckets,
    )?;
    let (pipe, replicas) = gateway_pipe(url, s)?;
    std::thread::sleep(Duration::from_millis(300));
    let tokens = issue_tokens(&pipe, s, &sale)?;

    let (masters, replica_nodes) = nodes(url)?;
    let stats =
        |list: &[String]| -> Res<Vec<RedisStats>> { list.iter().map(|m| redis_stats(m)).collect() };
    let (before, rbefore) = (stats(&masters)?, stats(&replica_nodes)?);
    let buy = {
        let (tokens, sale) = (tokens.clone(), sale.clone());
        Arc::new(move |s: &mut Stock<RedisPipe>, i: usize| {
            let token = tokens[i].get().map(String::as_str).unwrap_or("");
            s.purchase(&sale, i as u64 + 1, token).is_ok()
        })
    };
    eprintln!("measuring");
    let (t0, cpu0) = (Instant::now(), own_cpu_s());
    let failed = run_all(&pipe, s.coroutines, n, buy);
    let secs = t0.elapsed().as_secs_f64();
    let client_cpu_us = (own_cpu_s() - cpu0) * 1e6 / n as f64;
    let (after, rafter) = (stats(&masters)?, stats(&replica_nodes)?);
    let sold = admin.state(&sale)?.held;

    let per = |b: &RedisStats, a: &RedisStats| (a.cpu_s - b.cpu_s) * 1e6 / n as f64;
    let sum = |f: fn(&RedisStats) -> u64| -> u64 {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| f(a).saturating_sub(f(b)))
            .sum()
    };
    let (calls, usec, reads) = (
        sum(|s| s.evalsha_calls),
        sum(|s| s.evalsha_usec),
        sum(|s| s.reads),
    );
    Ok(Measured {
        // Purchases answered (a failed one is not a purchase).
        rate: (n - failed) as f64 / secs,
        sold,
        failed,
        wait_replicas: replicas,
        masters: masters.len(),
        master_cpu_us: before.iter().zip(&after).map(|(b, a)| per(b, a)).collect(),
        master_calls: before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.evalsha_calls.saturating_sub(b.evalsha_calls))
            .collect(),
        replica_cpu_us: rbefore.iter().zip(&rafter).map(|(b, a)| per(b, a)).sum(),
        replica_nodes: replica_nodes.len(),
        evalsha_usec_per_call: usec as f64 / calls.max(1) as f64,
        cmds_per_read: calls as f64 / reads.max(1) as f64,
        client_cpu_us,
    })
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|c| format!("{c:.2}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One master count's line: rate, Redis CPU per purchase (masters summed; replicas),
/// the client's CPU per purchase, each master's share of the purchases and its CPU per
/// purchase it served, and the capacity that predicts with one machine per shard (the
/// busiest master saturating its own core: n / max(master CPU)).
fn scaleout_line(m: &Measured) -> String {
    let total: u64 = m.master_calls.iter().sum::<u64>().max(1);
    let share: Vec<f64> = m
        .master_calls
        .iter()
        .map(|c| *c as f64 / total as f64)
        .collect();
    let served: Vec<f64> = m
        .master_cpu_us
        .iter()
        .zip(&share)
        .map(|(c, s)| if *s > 0.0 { c / s } else { 0.0 })
        .collect();
    let busiest = m.master_cpu_us.iter().cloned().fold(0.0, f64::max);
    format!(
        "scaleout masters={}: purchases/s {:.0} cpu_us_per_purchase {:.2} replica_cpu_us_per_purchase {:.2} client_cpu_us_per_purchase {:.2} evalsha_usec_per_call {:.2} cmds_per_read {:.1} share {} cpu_us_per_served {} predicted_per_machine_per_shard {:.0} sold {} failed {} wait {} replicas {}",
        m.masters,
        m.rate,
        m.master_cpu_us.iter().sum::<f64>(),
        m.replica_cpu_us,
        m.client_cpu_us,
        m.evalsha_usec_per_call,
        m.cmds_per_read,
        list(&share),
        list(&served),
        if busiest > 0.0 { 1e6 / busiest } else { 0.0 },
        m.sold,
        m.failed,
        m.wait_replicas,
        m.replica_nodes,
    )
}

fn scaleout(args: &[String], s: &Setup, counts: &str) -> Res<()> {
    use stackctl::redis_cluster::RedisCluster;
    let replicas: usize = arg(args, "--replicas")
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    // No replicas, nothing to WAIT for.
    let s = &Setup {
        wait: if replicas == 0 { Some(0) } else { s.wait },
        ..*s
    };
    let port: u16 = arg(args, "--port")
        .and_then(|a| a.parse().ok())
        .unwrap_or(21601);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.run/bench-cluster");
    println!(
        "scale-out: one hot sale, {} buckets, {} purchases per master count, {replicas} replica(s) per master",
        s.buckets, s.n
    );
    for m in counts
        .split(',')
        .filter_map(|c| c.trim().parse::<usize>().ok())
    {
        let c = RedisCluster::with_masters(
            root.join(format!("m{m}-r{replicas}")),
            port + 100 * replicas as u16 + 10 * (m as u16 - 1),
            m,
            replicas,
        );
        let was_up = c.is_up();
        if !was_up {
            // A fresh cluster: nothing left of an earlier run (its nodes.conf).
            c.down();
            let _ = std::fs::remove_dir_all(&c.dir);
        }
        if let Err(e) = c.up() {
            println!("scaleout masters={m}: unmeasured: cluster: {e}");
            c.down();
            continue;
        }
        // A run where more than 1% of the purchases failed (timeouts and the breaker
        // on a machine busy with other work) is run again, at most twice.
        for attempt in 1..=3 {
            match measure(&c.url(), s) {
                Ok(r) if r.failed * 100 > s.n && attempt < 3 => {
                    eprintln!(
                        "masters={m}: {} purchases failed; measuring again",
                        r.failed
                    )
                }
                Ok(r) => {
                    println!("{}", scaleout_line(&r));
                    break;
                }
                Err(e) => {
                    println!(
                        "scaleout masters={m}: unmeasured: {}",
                        e.to_string().replace('\n', " ")
                    );
                    break;
                }
            }
        }
        if !was_up {
            c.down();
        }
    }
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |name: &str, default: usize| {
        arg(&args, name)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    may::config()
        .set_workers(num("--workers", 1).max(1))
        .set_stack_size(128 * 1024);
    let mut s = Setup {
        n: args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000),
        wait: arg(&args, "--wait").and_then(|a| a.parse().ok()),
        workers: num("--workers", 1),
        buckets: num("--buckets", 1) as u32,
        coroutines: num("--coroutines", 256),
        connections: num(
            "--connections",
            gateway::config::Config::default().redis_connections.max(1) as usize,
        ),
    };
    if let Some(counts) = arg(&args, "--scaleout") {
        s.buckets = num("--buckets", 64) as u32;
        return scaleout(&args, &s, &counts);
    }
    let url = match arg(&args, "--url") {
        Some(u) => u,
        None => stackctl::ensure_up().redis_url,
    };
    let m = measure(&url, &s)?;
    // The URL without its password (the TLS profile's carries the administrator's).
    let shown = match url.split_once('@') {
        Some((auth, host)) => match auth.rsplit_once(':') {
            Some((user, _)) if user.contains("://") => format!("{user}:***@{host}"),
            _ => url.clone(),
        },
        None => url.clone(),
    };
    println!(
        "{} purchases, one run, {} master(s), {} bucket(s), {shown}",
        s.n, m.masters, s.buckets
    );
    let wait = if m.wait_replicas > 0 {
        format!(", WAIT {}", m.wait_replicas)
    } else {
        String::new()
    };
    println!(
        "  project purchase path ({} worker thread(s), {} coroutines, {} pipelined connections{}{wait}): {:.0} purchases/s ({} sold, {} failed)",
        s.workers,
        s.coroutines,
        s.connections,
        if m.masters > 1 { " per master" } else { "" },
        m.rate,
        m.sold,
        m.failed
    );
    println!(
        "redis: masters {} cpu_us_per_purchase {:.2} evalsha_usec_per_call {:.2} cmds_per_read {:.1} cpu_us_per_master {} client_cpu_us_per_purchase {:.2}",
        m.masters,
        m.master_cpu_us.iter().sum::<f64>(),
        m.evalsha_usec_per_call,
        m.cmds_per_read,
        list(&m.master_cpu_us),
        m.client_cpu_us
    );
    Ok(())
}
