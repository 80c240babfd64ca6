//! The purchase path (stock API + pipelined may Redis connections + the purchase Lua
//! script) against `redis-benchmark` running the same script, in one run.
//! `cargo run --release -p gateway --example purchase_bench [purchases=100000]`
//!
//! The reference gives every call a random token of a pre-filled keyspace (its
//! `__rand_int__`), owned by one buyer whose limit is huge; calls that draw an already
//! used token take the script's cheaper "token used" exit, so the reference's rate is
//! also reported as full purchases per second (units sold / time).

use gateway::breaker::Breaker;
use gateway::metrics::Metrics;
use gateway::redis_pipe::RedisPipe;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stock::{SaleSpec, Stock};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let stack = stackctl::ensure_up();
    let port = stack
        .redis_url
        .rsplit(':')
        .next()
        .unwrap_or("16379")
        .trim_end_matches('/')
        .to_string();
    may::config().set_workers(2).set_stack_size(128 * 1024);
    let mut admin = Stock::new(stock::connect(&stack.redis_url, Duration::from_secs(5))?);

    // Project: n buyers with issued tokens, purchased by 256 coroutines over 4 pipelined connections.
    let sale = format!("pbench_{}", now_ms());
    admin.create_sale(
        &sale,
        &SaleSpec {
            stock: n as i64,
            per_user_limit: 1,
            start_ms: now_ms() - 1000,
            end_ms: now_ms() + 3_600_000,
        },
    )?;
    let tokens: Vec<String> = (0..n)
        .map(|u| {
            admin
                .issue_token(&sale, u as u64 + 1, Duration::from_secs(3600))
                .map(|t| t.token)
        })
        .collect::<Result<_, _>>()?;
    let pipe = RedisPipe::start(
        &stack.redis_url,
        4,
        Duration::from_secs(2),
        1 << 20,
        Arc::new(Breaker::new(1000, Duration::from_millis(100))),
        Arc::new(Metrics::default()),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let (tokens, next, failed) = (
        Arc::new(tokens),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let t0 = Instant::now();
    let handles: Vec<_> = (0..256)
        .map(|_| {
            let (tokens, next, failed, pipe, sale) = (
                tokens.clone(),
                next.clone(),
                failed.clone(),
                pipe.clone(),
                sale.clone(),
            );
            may::go!(move || {
                let mut s = Stock::new(pipe);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= tokens.len() {
                        break;
                    }
                    if s.purchase(&sale, i as u64 + 1, &tokens[i]).is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let project = n as f64 / t0.elapsed().as_secs_f64();
    let sold = admin.state(&sale)?.held;

    // Reference: redis-benchmark EVALSHA of the same script, plain and 16-pipelined.
    let mut reference = Vec::new();
    for pipeline in [1, 16] {
        let rsale = format!("rbench_{}_{pipeline}", now_ms());
        admin.create_sale(
            &rsale,
            &SaleSpec {
                stock: n as i64 * 10,
                per_user_limit: i64::MAX / 2,
                start_ms: now_ms() - 1000,
                end_ms: now_ms() + 3_600_000,
            },
        )?;
        let k = stock::keys::SaleKeys::new(&rsale);
        // n tokens owned by buyer 1, named as redis-benchmark names them (12 digits).
        let exp = now_ms() + 3_600_000;
        let mut fill = String::new();
        for i in 0..n {
            let key = k.token(&format!("{i:012}"));
            let val = format!("1|{exp}|new");
            fill.push_str(&format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{val}\r\n",
                key.len(),
                val.len()
            ));
        }
        let mut cli = Command::new("redis-cli")
            .args(["-p", &port, "--pipe"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        std::io::Write::write_all(cli.stdin.as_mut().ok_or("stdin")?, fill.as_bytes())?;
        drop(cli.stdin.take());
        cli.wait()?;
        let sha = stock::scripts::PURCHASE.sha().to_string();
        let _ = admin.conn_mut().exec(
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(stock::scripts::PURCHASE.body()),
        );
        let token_key = k.token("__rand_int__");
        let t1 = Instant::now();
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                &port,
                "-c",
                "50",
                "-n",
                &n.to_string(),
                "-r",
                &n.to_string(),
                "-P",
                &pipeline.to_string(),
                "-q",
                "EVALSHA",
                &sha,
                "6",
            ])
            .args([
                &k.meta,
                &k.stock,
                &k.buyers,
                &k.reservations,
                &token_key,
                &k.seq,
                "1",
                &rsale,
            ])
            .output()?;
        let secs = t1.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // "-q" prints "<command>: <rate> requests per second, p50=…".
        let words: Vec<&str> = text.split_whitespace().collect();
        let rps: f64 = words
            .windows(2)
            .find(|w| w[1] == "requests")
            .and_then(|w| w[0].parse().ok())
            .unwrap_or(0.0);
        let full = admin.state(&rsale)?.held as f64 / secs;
        reference.push((pipeline, rps, full));
    }
    println!("{n} purchases, one run, local stack Redis");
    println!("  project purchase path (256 coroutines, 4 pipelined connections): {project:>9.0} purchases/s ({sold} sold, {} failed)", failed.load(Ordering::Relaxed));
    for (p, rps, full) in &reference {
        println!(
            "  redis-benchmark EVALSHA same script, -c 50 -P {p:<2}: {rps:>9.0} calls/s, {full:>9.0} full purchases/s -> project / calls {:.2}, project / full purchases {:.2}",
            project / rps,
            project / full
        );
    }
    Ok(())
}

use stock::Exec;
