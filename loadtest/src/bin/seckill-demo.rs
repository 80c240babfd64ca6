//! A demo sale through the gateway's HTTP API: create a sale, send simulated buyers
//! (ticket → token → order, a quarter of them double-clicking), then print what
//! happened and check the invariants against Redis, the order topic and PostgreSQL
//! (the order-writer must be running).
//!
//! `seckill-demo [--gateway URL] [--units N] [--buyers N] [--clients N] [--buckets B]`
//! Secrets and addresses: `SECKILL_TICKET_SECRET`, `SECKILL_ADMIN_TOKEN`, the local
//! stack's `stack.env` (or `SECKILL_REDIS_URL`, `SECKILL_KAFKA_BROKERS`), `SECKILL_ORDERS_TOPIC`.
//! On a Redis Cluster (`redis+cluster://…`, e.g. `stackctl with-services --cluster`) the
//! sale is split into stock buckets (`--buckets`, default 8 there, 1 on one Redis), each
//! under its own hash tag, and, given `SECKILL_REDIS_CLUSTER_MASTERS`
//! (`host:port=first-last+… …`), it prints which master holds which buckets and each
//! master's share of the units sold.

use loadtest::buyer::{Client, LoadError};
use loadtest::verify;
use seckill_common::cli::{self, ArgError};

struct Args {
    gateway: String,
    units: i64,
    buyers: u64,
    clients: u64,
    /// None: 8 on a Redis Cluster, 1 on one Redis.
    buckets: Option<u32>,
}

fn parse_args() -> Result<Args, ArgError> {
    let mut a = Args {
        gateway: "http://127.0.0.1:18080".into(),
        units: 500,
        buyers: 3000,
        clients: 32,
        buckets: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = cli::value(&flag, it.next())?;
        let num = || cli::number::<u64>(&flag, &v);
        match flag.as_str() {
            "--gateway" => a.gateway = v.clone(),
            "--units" => a.units = num()? as i64,
            "--buyers" => a.buyers = num()?,
            "--clients" => a.clients = num()?.max(1),
            "--buckets" => a.buckets = Some(num()?.clamp(1, 64) as u32),
            _ => return Err(ArgError::UnknownFlag(flag)),
        }
    }
    Ok(a)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    let args = cli::parsed_or_exit(
        "seckill-demo",
        "seckill-demo [--gateway URL] [--units N] [--buyers N] [--clients N] [--buckets B]",
        parse_args(),
    );
    match run(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("seckill-demo: {e}");
            std::process::exit(1);
        }
    }
}

/// The cluster's masters and their slot ranges, from `SECKILL_REDIS_CLUSTER_MASTERS`
/// (as `stackctl with-services --cluster` exports it: `host:port=first-last+… …`).
fn masters() -> Vec<(String, Vec<(u16, u16)>)> {
    std::env::var("SECKILL_REDIS_CLUSTER_MASTERS")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|m| {
            let (addr, ranges) = m.split_once('=')?;
            let ranges = ranges
                .split('+')
                .filter_map(|r| {
                    let (a, b) = r.split_once('-')?;
                    Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))
                })
                .collect();
            Some((addr.to_string(), ranges))
        })
        .collect()
}

/// The master serving `key`'s slot, if known.
fn master_of(masters: &[(String, Vec<(u16, u16)>)], key: &str) -> Option<String> {
    let slot = stock::cluster::slot(key.as_bytes());
    masters
        .iter()
        .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .map(|(addr, _)| addr.clone())
}

/// Where the sale's buckets live, and after the rush each master's share of the units
/// sold or held (read bucket by bucket from Redis).
fn print_spread(redis_url: &str, sale: &str, buckets: u32, after: bool) {
    let masters = masters();
    if masters.is_empty() {
        println!("Redis Cluster: SECKILL_REDIS_CLUSTER_MASTERS not set; cannot say which master holds what");
        return;
    }
    let spread = if after {
        let read = stock::connect(redis_url, std::time::Duration::from_secs(2))
            .map(stock::Stock::new)
            .and_then(|mut s| s.spread(sale, buckets));
        match read {
            Ok(s) => Some(s),
            Err(e) => {
                println!("Redis Cluster: could not read the buckets: {e}");
                return;
            }
        }
    } else {
        None
    };
    let mut per: std::collections::BTreeMap<String, (Vec<u32>, i64)> = Default::default();
    for b in 0..buckets {
        let key = if buckets > 1 {
            stock::keys::SaleKeys::bucket(sale, b).meta
        } else {
            stock::keys::SaleKeys::new(sale).meta
        };
        let owner = master_of(&masters, &key).unwrap_or_else(|| "(unknown)".into());
        let e = per.entry(owner).or_default();
        e.0.push(b);
        if let Some(v) = spread.as_ref().and_then(|s| s.buckets.get(b as usize)) {
            e.1 += v.sold + v.held;
        }
    }
    let total: i64 = per.values().map(|(_, n)| n).sum();
    println!(
        "Redis Cluster: {buckets} stock bucket(s) over {} of {} masters",
        per.len(),
        masters.len()
    );
    for (master, (bs, n)) in &per {
        if after {
            let share = if total > 0 {
                100.0 * *n as f64 / total as f64
            } else {
                0.0
            };
            println!("  master {master}: buckets {bs:?}, {n} units sold or held ({share:.0}%)");
        } else {
            println!("  master {master}: buckets {bs:?}");
        }
    }
}

fn run(args: Args) -> Result<bool, LoadError> {
    let stack = seckill_common::stack::Stack::discover();
    let secret = env_or("SECKILL_TICKET_SECRET", "dev-ticket-secret-change-me");
    let admin = env_or("SECKILL_ADMIN_TOKEN", "dev-admin-token-change-me");
    let topic = env_or("SECKILL_ORDERS_TOPIC", "orders");
    let now = seckill_common::now_ms();
    let sale = format!("demo_{now}");
    let client = Client::new(&args.gateway, &secret);
    let cluster = stock::cluster::is_cluster_url(&stack.redis_url);
    let buckets = args.buckets.unwrap_or(if cluster { 8 } else { 1 });
    client.create_bucketed_sale(
        &admin,
        &sale,
        args.units,
        now - 1000,
        now + 3_600_000,
        buckets,
    )?;
    println!(
        "sale {sale}: {} units in {buckets} bucket(s), {} buyers on {} clients, gateway {}",
        args.units, args.buyers, args.clients, args.gateway
    );
    if cluster {
        print_spread(&stack.redis_url, &sale, buckets, false);
    }

    let record = loadtest::rush::rush(
        &args.gateway,
        &secret,
        &sale,
        args.buyers,
        args.clients,
        |done| eprintln!("  ... {done} of {} buyers done", args.buyers),
    )?;
    println!(
        "{} buyers, {} requests in {:.2?} ({:.0} requests/s)",
        args.buyers,
        record.requests(),
        record.took,
        record.requests() as f64 / record.took.as_secs_f64()
    );
    for (what, n) in &record.answers {
        println!("  {n:>7}  {what}");
    }
    println!("sale state over HTTP: {}", client.sale(&sale)?.body);
    if cluster {
        print_spread(&stack.redis_url, &sale, buckets, true);
    }

    let v = verify::verify_sale(&stack, &topic, &sale, &record.acked, &record.tokens)?;
    // A double-click retried with its token is answered with the same order again.
    let orders: std::collections::HashSet<&str> =
        record.acked.iter().map(|(o, _)| o.as_str()).collect();
    println!(
        "invariants ({} acknowledged orders in {} 202 answers, {} messages in topic `{topic}`, {} in PostgreSQL):",
        orders.len(),
        record.acked.len(),
        v.in_topic,
        v.in_db
    );
    let report = v.report;
    report.print();
    Ok(report.ok())
}
