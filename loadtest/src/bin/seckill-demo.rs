//! A demo sale through the gateway's HTTP API: create a sale, send simulated buyers
//! (ticket → token → order, a quarter of them double-clicking), then print what
//! happened and check the invariants against Redis, the order topic and PostgreSQL
//! (the order-writer must be running).
//!
//! `seckill-demo [--gateway URL] [--units N] [--buyers N] [--clients N]`
//! Secrets and addresses: `SECKILL_TICKET_SECRET`, `SECKILL_ADMIN_TOKEN`, the local
//! stack's `stack.env` (or `SECKILL_REDIS_URL`, `SECKILL_KAFKA_BROKERS`), `SECKILL_ORDERS_TOPIC`.
//! On a Redis Cluster (`redis+cluster://…`, e.g. `stackctl with-services --cluster`) it
//! also says which slot the sale's keys share and, given `SECKILL_REDIS_CLUSTER_MASTERS`
//! (`host:port=first-last+… …`), which master serves it.

use loadtest::buyer::{Client, LoadError};
use loadtest::verify;
use std::time::{SystemTime, UNIX_EPOCH};

struct Args {
    gateway: String,
    units: i64,
    buyers: u64,
    clients: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        gateway: "http://127.0.0.1:18080".into(),
        units: 500,
        buyers: 3000,
        clients: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} needs a number"))
        };
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

/// Where a sale lives on a Redis Cluster: the slot of its hash tag and the master serving
/// that slot (from `SECKILL_REDIS_CLUSTER_MASTERS`, as `stackctl with-services --cluster`
/// exports it).
fn cluster_line(sale: &str) -> String {
    let slot = stock::cluster::slot(stock::keys::SaleKeys::new(sale).meta.as_bytes());
    let masters = std::env::var("SECKILL_REDIS_CLUSTER_MASTERS").unwrap_or_default();
    let owner = masters.split_whitespace().find_map(|m| {
        let (addr, ranges) = m.split_once('=')?;
        ranges
            .split('+')
            .filter_map(|r| {
                let (a, b) = r.split_once('-')?;
                Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))
            })
            .any(|(a, b)| (a..=b).contains(&slot))
            .then(|| addr.to_string())
    });
    format!(
        "Redis Cluster: every key of the sale carries {{{sale}}}, slot {slot}, held by master {} ({} masters)",
        owner.as_deref().unwrap_or("(unknown: SECKILL_REDIS_CLUSTER_MASTERS not set)"),
        masters.split_whitespace().count()
    )
}

fn run(args: Args) -> Result<bool, LoadError> {
    let stack = seckill_common::stack::Stack::discover();
    let secret = env_or("SECKILL_TICKET_SECRET", "dev-ticket-secret-change-me");
    let admin = env_or("SECKILL_ADMIN_TOKEN", "dev-admin-token-change-me");
    let topic = env_or("SECKILL_ORDERS_TOPIC", "orders");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let sale = format!("demo_{now}");
    let client = Client::new(&args.gateway, &secret);
    client.create_sale(&admin, &sale, args.units, now - 1000, now + 3_600_000)?;
    println!(
        "sale {sale}: {} units, {} buyers on {} clients, gateway {}",
        args.units, args.buyers, args.clients, args.gateway
    );
    if stock::cluster::is_cluster_url(&stack.redis_url) {
        println!("{}", cluster_line(&sale));
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
