//! A demo sale through the gateway's HTTP API: create a sale, send simulated buyers
//! (ticket → token → order, a quarter of them double-clicking), then print what
//! happened and check the invariants against Redis, the order topic and PostgreSQL
//! (the order-writer must be running).
//!
//! `seckill-demo [--gateway URL] [--admin-url URL] [--units N] [--buyers N] [--clients N]
//! [--buckets B]` (`seckill-demo --help` says what each is and its default); the sale is
//! created through the gateway's internal listener (`--admin-url`, else
//! `GATEWAY_ADMIN_URL` as `stackctl with-services` sets it).
//! Secrets and addresses: `SECKILL_TICKET_SECRET`, `SECKILL_ADMIN_TOKEN`, the local
//! stack's `stack.env` (or `SECKILL_REDIS_URL`, `SECKILL_KAFKA_BROKERS`), `SECKILL_ORDERS_TOPIC`.
//! On a Redis Cluster (`redis+cluster://…`, e.g. `stackctl with-services --cluster`) the
//! sale is split into stock buckets (`--buckets`, default 8 there, 1 on one Redis), each
//! under its own hash tag, and, given `SECKILL_REDIS_CLUSTER_MASTERS`
//! (`host:port=first-last+… …`), it prints which master holds which buckets and each
//! master's share of the units sold.

use clap::Parser;
use loadtest::buyer::{Client, LoadError};
use loadtest::verify;

/// A demo sale through the gateway's HTTP API: simulated buyers (a quarter of them
/// double-click), then the invariants against Redis, the order topic and PostgreSQL
/// (the order-writer must be running); exit status 1 if one fails
#[derive(Debug, Parser)]
#[command(name = "seckill-demo", version, args_override_self = true)]
struct Args {
    /// The gateway's base URL (its public listener, the buyers')
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:18080")]
    gateway: String,
    /// The gateway's internal listener, where the sale is created
    #[arg(
        long,
        value_name = "URL",
        env = "GATEWAY_ADMIN_URL",
        default_value = loadtest::buyer::DEFAULT_INTERNAL_URL
    )]
    admin_url: String,
    /// Units of the sale
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(i64).range(0..))]
    units: i64,
    /// Simulated buyers, each with a ticket of their own
    #[arg(long, value_name = "N", default_value_t = 3000)]
    buyers: u64,
    /// Client threads the buyers are spread over (at least 1)
    #[arg(long, value_name = "N", default_value_t = 32)]
    clients: u64,
    /// Stock buckets of the sale, 1 to 64 [default: 8 on a Redis Cluster, 1 on one Redis]
    #[arg(long, value_name = "B")]
    buckets: Option<u32>,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    let mut args = Args::parse();
    seckill_common::cli::init_logs("seckill-demo", "warn");
    // Out-of-range counts are brought within range, as they always were.
    args.clients = args.clients.max(1);
    args.buckets = args.buckets.map(|b| b.clamp(1, 64));
    match run(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => seckill_common::cli::fail("seckill-demo", &e, 1),
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
    let client = Client::new(&args.gateway, &secret).with_internal(&args.admin_url);
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
        |done| seckill_common::note!("  ... {done} of {} buyers done", args.buyers),
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
    let traced = show_trace(&stack.jaeger_url, &record.traced);
    Ok(report.ok() && traced)
}

/// With a trace collector on the stack: one acknowledged order's trace id, and its
/// journey from the gateway to PostgreSQL as Jaeger holds it. False when no 202 carried
/// a trace id or the journey is not complete within 30 s.
fn show_trace(jaeger: &str, traced: &[(String, String)]) -> bool {
    if jaeger.is_empty() {
        return true;
    }
    let Some((trace, order)) = traced.first() else {
        println!("trace: FAIL no 202 carried a trace id (is tracing_sample_ratio 0?)");
        return false;
    };
    println!("trace of order {order}: {trace}  ({jaeger}/api/traces/{trace})");
    match loadtest::traces::journey(jaeger, trace, std::time::Duration::from_secs(30)) {
        Ok(hops) => {
            let path: Vec<String> = loadtest::traces::JOURNEY
                .iter()
                .map(|(service, name)| format!("{service} {name}"))
                .collect();
            println!("  ok  {} spans: {}", hops.len(), path.join(" -> "));
            true
        }
        Err(e) => {
            println!("  FAIL {e}");
            false
        }
    }
}
