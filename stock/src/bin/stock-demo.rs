//! A demo sale straight on the stock engine: buyers rush a sale from many clients,
//! some click twice, some cancel, the cancelled units sell again, and the result is
//! checked against the invariants.
//!
//! `stock-demo [--units N] [--buyers N] [--clients N] [--cancel-percent P]`
//! (`stock-demo --help` says what each is and its default).

use clap::Parser;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stock::{SaleSpec, Settlement, Stock, StockError};

/// A demo sale straight on the stock engine (the local stack's Redis): a rush from many
/// clients, double clicks, cancelled orders sold again, then the invariants (exit
/// status 1 if one fails)
#[derive(Debug, Parser)]
#[command(name = "stock-demo", version, args_override_self = true)]
struct Args {
    /// Units of the sale
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(i64).range(0..))]
    units: i64,
    /// Buyers in the rush
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    buyers: u64,
    /// Client threads, each with its own connection (at least 1)
    #[arg(long, value_name = "N", default_value_t = 32)]
    clients: u64,
    /// Percent of the orders never paid (their units are released and sold again), at most 100
    #[arg(long, value_name = "P", default_value_t = 5)]
    cancel_percent: u64,
}

#[derive(Default)]
struct Tally {
    orders: Vec<(String, u64)>,
    rejected: std::collections::BTreeMap<String, u64>,
}

fn main() {
    let mut args = Args::parse();
    // Out-of-range counts are brought within range, as they always were.
    args.clients = args.clients.max(1);
    args.cancel_percent = args.cancel_percent.min(100);
    seckill_common::cli::init_logs("stock-demo", "warn");
    if let Err(e) = run(args) {
        seckill_common::cli::fail("stock-demo", &e, 1);
    }
}

fn run(args: Args) -> Result<(), StockError> {
    // The local stack must be up (`./dev up`); its addresses come from stack.env.
    let stack = seckill_common::stack::Stack::discover();
    let connect = || stock::connect(&stack.redis_url, Duration::from_secs(2)).map(Stock::new);
    let now = seckill_common::now_ms();
    let sale = format!("demo_{}", now);
    connect()?.create_sale(
        &sale,
        &SaleSpec {
            stock: args.units,
            per_user_limit: 1,
            start_ms: now - 1_000,
            end_ms: now + 3_600_000,
        },
    )?;
    println!(
        "sale {sale}: {} units, {} buyers on {} clients, redis {}",
        args.units, args.buyers, args.clients, stack.redis_url
    );
    let (tally, rush_took) = rush(&args, &sale, connect)?;
    let mut s = connect()?;
    let resold = cancel_resell_and_pay(&mut s, &args, &sale, &tally)?;
    check(&mut s, &args, &sale, &tally, &resold, rush_took)
}

/// Every buyer, on `args.clients` threads of their own connection: a token, then one
/// purchase (two for one buyer in four, who double-clicks). What sold and what was
/// refused, and how long it took.
fn rush(
    args: &Args,
    sale: &str,
    connect: impl Fn() -> Result<Stock<stock::Conn>, StockError>,
) -> Result<(Tally, Duration), StockError> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..args.clients)
        .map(|c| {
            let (sale, tally, mut s) = (sale.to_string(), tally.clone(), connect());
            let (buyers, clients) = (args.buyers, args.clients);
            std::thread::spawn(move || -> Result<(), StockError> {
                let s = s.as_mut().map_err(|e| e.clone())?;
                for user in (c + 1..=buyers).step_by(clients as usize) {
                    buy(s, &sale, user, &tally)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| StockError::BadReply("a client thread panicked".into()))??;
    }
    let took = t0.elapsed();
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    println!(
        "rush: {} orders accepted in {:.2?}",
        tally.orders.len(),
        took
    );
    for (why, n) in &tally.rejected {
        println!("  rejected {n:>6}  {why}");
    }
    Ok((tally, took))
}

/// One buyer: a token, then one purchase, or two with the same token (one buyer in
/// four double-clicks). Refusals are counted; a fault ends the rush.
fn buy(
    s: &mut Stock<stock::Conn>,
    sale: &str,
    user: u64,
    tally: &Mutex<Tally>,
) -> Result<(), StockError> {
    let clicks = if user.is_multiple_of(4) { 2 } else { 1 };
    let token = match s.issue_token(sale, user, Duration::from_secs(1800)) {
        Ok(t) => t.token,
        Err(e) if e.is_fault() => return Err(e),
        Err(e) => {
            *tally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rejected
                .entry(format!("token: {e}"))
                .or_default() += 1;
            return Ok(());
        }
    };
    for _ in 0..clicks {
        let r = s.purchase(sale, user, &token);
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(p) => t.orders.push((p.order_id, user)),
            Err(e) if e.is_fault() => return Err(e),
            Err(e) => *t.rejected.entry(format!("order: {e}")).or_default() += 1,
        }
    }
    Ok(())
}

/// Some buyers never pay (`cancel_percent`): their reservations are released and sell
/// again to late buyers; every other order, and the resold ones, are paid. The resold
/// orders.
fn cancel_resell_and_pay(
    s: &mut Stock<stock::Conn>,
    args: &Args,
    sale: &str,
    tally: &Tally,
) -> Result<Vec<(String, u64)>, StockError> {
    let mut released = 0u64;
    for (order, _) in tally
        .orders
        .iter()
        .filter(|(_, u)| u % 100 < args.cancel_percent)
    {
        s.settle(order, Settlement::Released)?;
        released += 1;
    }
    let mut resold = Vec::new();
    for user in args.buyers + 1..=args.buyers + released {
        let t = s.issue_token(sale, user, Duration::from_secs(60))?;
        resold.push((s.purchase(sale, user, &t.token)?.order_id, user));
    }
    let mut paid = 0u64;
    for (order, _) in tally
        .orders
        .iter()
        .filter(|(_, u)| u % 100 >= args.cancel_percent)
        .chain(&resold)
    {
        s.settle(order, Settlement::Paid)?;
        paid += 1;
    }
    println!(
        "cancelled {released} unpaid orders, resold {} units to late buyers, {paid} orders paid",
        resold.len()
    );
    Ok(resold)
}

/// The invariants against the sale's state in Redis, printed; an error if one failed.
fn check(
    s: &mut Stock<stock::Conn>,
    args: &Args,
    sale: &str,
    tally: &Tally,
    resold: &[(String, u64)],
    rush: Duration,
) -> Result<(), StockError> {
    let st = s.state(sale)?;
    let buyers = s.buyers(sale)?;
    let all_orders: HashSet<&String> = tally.orders.iter().chain(resold).map(|(o, _)| o).collect();
    let checks = [
        (
            "no oversell (sold + held <= initial)",
            st.sold + st.held <= st.initial,
        ),
        (
            "per-user limit (every buyer holds <= 1)",
            buyers.iter().all(|(_, n)| *n <= st.per_user_limit),
        ),
        (
            "order ids unique",
            all_orders.len() == tally.orders.len() + resold.len(),
        ),
        (
            "conservation (remaining + held + sold = initial)",
            st.conserved(),
        ),
    ];
    println!(
        "result: initial {} = remaining {} + held {} + sold {}; {} buyers; {:.0} attempts/s during the rush",
        st.initial,
        st.remaining,
        st.held,
        st.sold,
        buyers.len(),
        (args.buyers as f64) / rush.as_secs_f64()
    );
    let mut ok = true;
    for (name, pass) in checks {
        println!("  {} {name}", if pass { "PASS" } else { "FAIL" });
        ok &= pass;
    }
    if !ok {
        return Err(StockError::BadReply("an invariant failed".into()));
    }
    Ok(())
}
