//! A demo sale through the gateway's HTTP API: create a sale, send simulated buyers
//! (ticket → token → order, a quarter of them double-clicking), then print what
//! happened and check the invariants against Redis and the order topic.
//!
//! `seckill-demo [--gateway URL] [--units N] [--buyers N] [--clients N]`
//! Secrets and addresses: `SECKILL_TICKET_SECRET`, `SECKILL_ADMIN_TOKEN`, the local
//! stack's `stack.env` (or `SECKILL_REDIS_URL`, `SECKILL_KAFKA_BROKERS`), `SECKILL_ORDERS_TOPIC`.

use loadtest::buyer::{Client, LoadError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    gateway: String,
    units: i64,
    buyers: u64,
    clients: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { gateway: "http://127.0.0.1:18080".into(), units: 500, buyers: 3000, clients: 32 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || v.parse::<u64>().map_err(|_| format!("{flag} needs a number"));
        match flag.as_str() {
            "--gateway" => a.gateway = v.clone(),
            "--units" => a.units = num()? as i64,
            "--buyers" => a.buyers = num()?,
            "--clients" => a.clients = num()?.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("seckill-demo: {e}\nusage: seckill-demo [--gateway URL] [--units N] [--buyers N] [--clients N]");
            std::process::exit(2);
        }
    };
    match run(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("seckill-demo: {e}");
            std::process::exit(1);
        }
    }
}

#[derive(Default)]
struct Record {
    acked: Vec<(String, u64)>,
    answers: BTreeMap<String, u64>,
}

fn run(args: Args) -> Result<bool, LoadError> {
    let stack = seckill_common::stack::Stack::discover();
    let secret = env_or("SECKILL_TICKET_SECRET", "dev-ticket-secret-change-me");
    let admin = env_or("SECKILL_ADMIN_TOKEN", "dev-admin-token-change-me");
    let topic = env_or("SECKILL_ORDERS_TOPIC", "orders");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let sale = format!("demo_{now}");
    let admin_client = Client::new(&args.gateway, &secret);
    admin_client.create_sale(&admin, &sale, args.units, now - 1000, now + 3_600_000)?;
    println!("sale {sale}: {} units, {} buyers on {} clients, gateway {}", args.units, args.buyers, args.clients, args.gateway);

    let record = Arc::new(Mutex::new(Record::default()));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|c| {
            let (record, done, sale) = (record.clone(), done.clone(), sale.clone());
            let client = Client::new(&args.gateway, &secret);
            let (buyers, clients) = (args.buyers, args.clients);
            std::thread::spawn(move || -> Result<(), LoadError> {
                for user in (c + 1..=buyers).step_by(clients as usize) {
                    let t = client.token(&sale, user)?;
                    let mut answers = vec![format!("token {} {}", t.status, t.code())];
                    if let Some(token) = t.str("token") {
                        let clicks = if user % 4 == 0 { 2 } else { 1 };
                        for _ in 0..clicks {
                            let o = client.order(&sale, user, token)?;
                            answers.push(format!("order {} {}", o.status, o.code()));
                            if o.status == 202 {
                                let id = o.str("order_id").unwrap_or_default().to_string();
                                record.lock().unwrap_or_else(|p| p.into_inner()).acked.push((id, user));
                            }
                        }
                    }
                    let mut r = record.lock().unwrap_or_else(|p| p.into_inner());
                    for a in answers {
                        *r.answers.entry(a).or_default() += 1;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    // Progress while the buyers run.
    while done.load(Ordering::Relaxed) < args.buyers && !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(500));
        eprintln!("  ... {} of {} buyers done", done.load(Ordering::Relaxed), args.buyers);
    }
    for w in workers {
        w.join().map_err(|_| LoadError::Http("a buyer thread panicked".into()))??;
    }
    let took = t0.elapsed();
    let record = std::mem::take(&mut *record.lock().unwrap_or_else(|p| p.into_inner()));
    let requests: u64 = record.answers.values().sum();
    println!("{} buyers, {requests} requests in {:.2?} ({:.0} requests/s)", args.buyers, took, requests as f64 / took.as_secs_f64());
    for (what, n) in &record.answers {
        println!("  {n:>7}  {what}");
    }
    let sale_view = admin_client.sale(&sale)?;
    println!("sale state over HTTP: {}", sale_view.body);

    let mut redis = stock::Stock::new(stock::connect(&stack.redis_url, Duration::from_secs(2))?);
    let state = redis.state(&sale)?;
    let buyers = redis.buyers(&sale)?;
    let in_topic = loadtest::verify::orders_in_topic(&stack.kafka_brokers, &topic, &sale, record.acked.len(), Duration::from_secs(30))?;
    println!("invariants ({} acknowledged orders, {} in topic `{topic}`):", record.acked.len(), in_topic.len());
    let report = loadtest::verify::check(&record.acked, &state, &buyers, &in_topic);
    report.print();
    Ok(report.ok())
}
