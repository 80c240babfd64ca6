//! The bench's reference for the purchase path: `redis-benchmark` running the purchase
//! Lua script itself (EVALSHA, the keys and arguments `stock::Stock::purchase` passes),
//! plain and 16-pipelined, on the local stack's Redis.
//! `cargo run --release -p order-writer --example purchase_reference [calls=100000]`
//!
//! The command is the one `Stock::purchase` sends, recorded from a real purchase (so
//! the keys and arguments follow the script); every call gets a random token of a pre-filled keyspace (`__rand_int__`) owned by one
//! buyer with a huge limit; a call that draws an already used token takes the script's
//! cheaper "token used" exit, so full purchases per second (units sold / time) are
//! reported too. The result is read from `--csv`; a failed run (the script erroring, the
//! tool missing) prints `unmeasured: <reason>` instead of a rate. One line per run:
//! `reference P=<p>: calls/s <r> full/s <f> redis …` or `reference P=<p>: unmeasured: <reason>`,
//! for P=1, P=16 and "P=16 fresh": the same -P 16 run over ten times as many tokens as
//! calls, so about 95% of its calls are full purchases, like every project call.
//! Each line also says what Redis spent (INFO before and after: `cpu_us_per_call`, the
//! used_cpu_user + used_cpu_sys delta per call; `evalsha_usec_per_call` from
//! commandstats; `cmds_per_read`, EVALSHA calls per `total_reads_processed`), beside
//! the same figures `purchase_bench` prints for the project.
//! `--url redis://host:port` measures another Redis than the stack's.
//! (It lives here because the writer's examples already depend on `stock` and the stack;
//! `gateway/examples/purchase_bench.rs` measures the project side.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use stock::{Exec, SaleSpec, Stock, StockError};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

use seckill_common::now_ms;

/// A Redis connection that records every EVALSHA it sends.
struct Recorder {
    conn: redis::Connection,
    evalsha: Vec<Vec<String>>,
}

impl Exec for Recorder {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<redis::Value, StockError> {
        let args: Vec<String> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect();
        if args.first().is_some_and(|a| a == "EVALSHA") {
            self.evalsha.push(args);
        }
        self.conn.exec(cmd)
    }
}

/// What Redis reports about itself: CPU seconds, EVALSHA calls and µs, reads processed.
fn redis_stats(conn: &mut redis::Connection) -> Res<(f64, u64, u64, u64)> {
    let info: String = redis::cmd("INFO").arg("all").query(conn)?;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(k)?.strip_prefix(':'))
            .unwrap_or("")
            .to_string()
    };
    let f = |k: &str| field(k).parse::<f64>().unwrap_or(0.0);
    let ev = field("cmdstat_evalsha");
    let sub = |name: &str| {
        ev.split(',')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((
        f("used_cpu_user") + f("used_cpu_sys"),
        sub("calls"),
        sub("usec"),
        f("total_reads_processed") as u64,
    ))
}

/// One redis-benchmark run; Err is the reason it could not be measured.
/// Ok: (calls/s, full purchases/s, Redis's figures).
fn run(
    admin: &mut Stock<Recorder>,
    port: &str,
    n: usize,
    pipeline: usize,
    keyspace: usize,
) -> Res<(f64, f64, String)> {
    let sale = format!("rbench_{}_{pipeline}", now_ms());
    admin.create_sale(
        &sale,
        &SaleSpec {
            stock: n as i64 * 10,
            // One buyer makes every purchase: the largest limit a sale may have.
            per_user_limit: stock::MAX_UNITS,
            start_ms: now_ms() - 1000,
            end_ms: now_ms() + 3_600_000,
        },
    )?;
    let k = stock::keys::SaleKeys::new(&sale);
    // n tokens owned by buyer 1, named as redis-benchmark names them (12 digits).
    let exp = now_ms() + 3_600_000;
    let mut fill = String::new();
    for i in 0..keyspace {
        let key = k.token(&format!("{i:012}"));
        let val = format!("1|{exp}|new");
        fill.push_str(&format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{val}\r\n",
            key.len(),
            val.len()
        ));
    }
    let mut cli = Command::new("redis-cli")
        .args(["-p", port, "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-cli: {e}"))?;
    std::io::Write::write_all(
        cli.stdin.as_mut().ok_or("redis-cli stdin")?,
        fill.as_bytes(),
    )?;
    drop(cli.stdin.take());
    if !cli.wait()?.success() {
        return Err("redis-cli --pipe failed to fill the tokens".into());
    }
    // One real purchase by buyer 1, recorded; its token key becomes redis-benchmark's.
    let t = admin.issue_token(&sale, 1, Duration::from_secs(3600))?;
    admin.conn_mut().evalsha.clear();
    admin.purchase(&sale, 1, &t.token)?;
    let own = k.token(&t.token);
    let mut command = admin
        .conn_mut()
        .evalsha
        .pop()
        .ok_or("the purchase sent no EVALSHA")?;
    let at = command
        .iter()
        .position(|a| *a == own)
        .ok_or("the purchase's token key is not among its arguments")?;
    command[at] = k.token("__rand_int__");
    let before = redis_stats(&mut admin.conn_mut().conn)?;
    let t = Instant::now();
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            port,
            "-c",
            "50",
            "-n",
            &n.to_string(),
            "-r",
            &keyspace.to_string(),
        ])
        .args(["-P", &pipeline.to_string(), "--csv"])
        .args(&command)
        .output()
        .map_err(|e| format!("redis-benchmark: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    let after = redis_stats(&mut admin.conn_mut().conn)?;
    let calls = after.1.saturating_sub(before.1).max(1) as f64;
    let stats = format!(
        "cpu_us_per_call {:.2} evalsha_usec_per_call {:.2} cmds_per_read {:.1}",
        (after.0 - before.0) * 1e6 / calls,
        after.2.saturating_sub(before.2) as f64 / calls,
        calls / after.3.saturating_sub(before.3).max(1) as f64
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // --csv: a header line, then "<test>","<rps>",… per test.
    let rps = stdout
        .lines()
        .filter(|l| !l.starts_with("\"test\""))
        .find_map(|l| {
            l.split("\",\"")
                .nth(1)?
                .trim_matches('"')
                .parse::<f64>()
                .ok()
        });
    match rps {
        Some(rps) if out.status.success() && rps > 0.0 => {
            let full = (admin.state(&sale)?.held - 1) as f64 / secs;
            Ok((rps, full, stats))
        }
        _ => Err(format!(
            "redis-benchmark exited {}: {}",
            out.status,
            stderr
                .lines()
                .chain(stdout.lines())
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("no output")
        )
        .into()),
    }
}

fn main() -> Res<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let args: Vec<String> = std::env::args().collect();
    let url = match args.iter().position(|a| a == "--url") {
        Some(i) => args.get(i + 1).cloned().ok_or("--url needs a value")?,
        None => stackctl::ensure_up().redis_url,
    };
    let port = url
        .rsplit(':')
        .next()
        .unwrap_or("16379")
        .trim_end_matches('/')
        .to_string();
    let mut admin = Stock::new(Recorder {
        conn: stock::connect_single(&url, Duration::from_secs(5))?,
        evalsha: Vec::new(),
    });
    // The tokens: as many as calls (about a third of the calls draw a used token and
    // take the script's cheap replay exit), and, like for like with the project (every
    // call a full purchase), ten times as many ("fresh": about 5% replays).
    for (pipeline, keyspace, name) in [(1, n, "1"), (16, n, "16"), (16, 10 * n, "16 fresh")] {
        match run(&mut admin, &port, n, pipeline, keyspace) {
            Ok((rps, full, stats)) => {
                println!("reference P={name}: calls/s {rps:.0} full/s {full:.0} redis {stats}")
            }
            Err(e) => println!(
                "reference P={name}: unmeasured: {}",
                e.to_string().replace('\n', " ")
            ),
        }
    }
    Ok(())
}
