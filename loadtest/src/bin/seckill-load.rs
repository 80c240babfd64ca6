//! Goose load runs against the gateway, each ending with the invariant check.
//!
//! ```text
//! seckill-load <rush|click-storm|bots|browse|mix> [--host URL] [--admin-url URL]
//!              [--units N] [--out DIR] [--expected-interval-us N] [--topic T]
//!              [-- GOOSE FLAGS…]
//! seckill-load verify --sale SALE --acked FILE [--topic T]
//! ```
//! Goose flags (after `--`) set users, `--increase-rate`, `--run-time`, `--co-mitigation`…;
//! without `--run-time`/`--iterations` a run lasts 30 s. The run's folder (default
//! `.run/load/<scenario>-<time>`) receives Goose's HTML and JSON reports, `acked.csv`
//! (every 202), `answers.json`, `latency.md` (HdrHistogram per request type),
//! `latency.json` (each request type's whole percentile distribution, for `seckill-plot`)
//! and `summary.md`. The run's sale is created through the gateway's internal listener
//! (`--admin-url`, or `GATEWAY_ADMIN_URL` as `stackctl with-services` sets it). Secrets:
//! `SECKILL_TICKET_SECRET`, `SECKILL_ADMIN_TOKEN`; `--topic` may also come from
//! `SECKILL_ORDERS_TOPIC`. `seckill-load --help` describes every flag.

use clap::{Args, Parser, Subcommand};
use goose::config::GooseConfiguration;
use goose::GooseAttack;
use loadtest::buyer::{Client, LoadError};
use loadtest::{scenarios, verify};
use std::path::{Path, PathBuf};

/// Goose load runs against the gateway, each ending with the invariant check (exit
/// status 1 if one fails, 2 if the run could not be made)
#[derive(Debug, Parser)]
#[command(name = "seckill-load", version, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Each iteration is a new buyer: token, then order
    Rush(RunArgs),
    /// Four users share each buyer and click order repeatedly, same token and fresh ones
    ClickStorm(RunArgs),
    /// Forged tickets, orders without tokens, replayed and foreign tokens (all must be refused)
    Bots(RunArgs),
    /// Sale-state and order-status polling
    Browse(RunArgs),
    /// The four, weighted 5 : 2 : 1 : 2
    Mix(RunArgs),
    /// Check a past run's invariants again, from its acked.csv
    Verify(VerifyArgs),
}

/// A run of one scenario on a sale of its own.
#[derive(Debug, Args)]
struct RunArgs {
    /// The gateway's base URL (its public listener, the buyers')
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:18080")]
    host: String,
    /// The gateway's internal listener, where the run's sale is created
    #[arg(
        long,
        value_name = "URL",
        env = "GATEWAY_ADMIN_URL",
        default_value = loadtest::buyer::DEFAULT_INTERNAL_URL
    )]
    admin_url: String,
    /// Units of the run's sale
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(i64).range(0..))]
    units: i64,
    /// The run's folder [default: .run/load/<scenario>-<time>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The pacing the latencies are corrected against for coordinated omission, in µs (0: none)
    #[arg(long, value_name = "N", default_value_t = 0)]
    expected_interval_us: u64,
    /// The order topic checked after the run
    #[arg(
        long,
        value_name = "T",
        env = "SECKILL_ORDERS_TOPIC",
        default_value = "orders"
    )]
    topic: String,
    /// rush: the share of buyers (0 to 1) whose accepted order is paid through a simulated payment provider (the buyer starts the payment, the provider's signed callback pays it on the internal listener, secret SECKILL_PAYMENT_WEBHOOK_SECRET)
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pay_share: f64,
    /// rush: how long after its 202 a paying buyer pays, in ms
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pay_delay_ms: u64,
    /// Goose's own flags, after `--` (--users, --increase-rate, --run-time [default: 30s], --iterations, --co-mitigation, …)
    #[arg(last = true, value_name = "GOOSE FLAGS")]
    goose: Vec<String>,
}

/// What `verify` checks.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// The run's sale
    #[arg(long)]
    sale: String,
    /// The run's acked.csv (order_id,user,token of every 202)
    #[arg(long, value_name = "FILE")]
    acked: PathBuf,
    /// The order topic
    #[arg(
        long,
        value_name = "T",
        env = "SECKILL_ORDERS_TOPIC",
        default_value = "orders"
    )]
    topic: String,
}

fn main() {
    let cli = Cli::parse();
    seckill_common::cli::init_logs("seckill-load", "warn");
    let result = match cli.command {
        Command::Rush(a) => run("rush", a),
        Command::ClickStorm(a) => run("click-storm", a),
        Command::Bots(a) => run("bots", a),
        Command::Browse(a) => run("browse", a),
        Command::Mix(a) => run("mix", a),
        Command::Verify(a) => verify_only(&a),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => seckill_common::cli::fail("seckill-load", &e, 2),
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A Goose run of `scenario`, then its invariants; whether they all hold.
fn run(scenario: &str, a: RunArgs) -> Result<bool, LoadError> {
    let secret = env_or("SECKILL_TICKET_SECRET", "dev-ticket-secret-change-me");
    let admin = env_or("SECKILL_ADMIN_TOKEN", "dev-admin-token-change-me");
    let now = seckill_common::now_ms();
    let sale = format!("load_{}_{now}", scenario.replace('-', "_"));
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!(".run/load/{}-{now}", scenario)));
    std::fs::create_dir_all(&out).map_err(LoadError::io(out.display()))?;
    let scenarios = scenarios::scenarios(scenario)?;
    if !(0.0..=1.0).contains(&a.pay_share) {
        return Err(LoadError::Setup(format!(
            "--pay-share {}: expected a share from 0 to 1",
            a.pay_share
        )));
    }
    Client::new(&a.host, &secret)
        .with_internal(&a.admin_url)
        .create_sale(&admin, &sale, a.units, now - 1000, now + 24 * 3_600_000)?;
    scenarios::init(&sale, &secret, 1, a.expected_interval_us);
    if a.pay_share > 0.0 {
        scenarios::set_provider(scenarios::Provider {
            webhook_base: a.admin_url.clone(),
            secret: env_or(
                "SECKILL_PAYMENT_WEBHOOK_SECRET",
                "dev-webhook-secret-change-me",
            )
            .into_bytes(),
            share_permille: (a.pay_share * 1000.0).round() as u64,
            delay: std::time::Duration::from_millis(a.pay_delay_ms),
        });
    }
    println!(
        "sale {sale}: {} units; scenario {}; gateway {}; run folder {}",
        a.units,
        scenario,
        a.host,
        out.display()
    );

    let given = a.goose.clone();
    let has = |f: &[&str]| {
        given
            .iter()
            .any(|g| f.iter().any(|x| g == x || g.starts_with(&format!("{x}="))))
    };
    let mut goose_args = a.goose.clone();
    if !has(&["--run-time", "-t", "--iterations", "--test-plan"]) {
        goose_args.extend(["--run-time".into(), "30s".into()]);
    }
    if !has(&["--host", "-H"]) {
        goose_args.extend(["--host".into(), a.host.clone()]);
    }
    if !has(&["--running-metrics"]) {
        goose_args.extend(["--running-metrics".into(), "5".into()]);
    }
    for ext in ["html", "json"] {
        goose_args.extend([
            "--report-file".into(),
            out.join(format!("report.{ext}")).display().to_string(),
        ]);
    }
    let config = GooseConfiguration::parse_args_default(&goose_args).map_err(LoadError::Goose)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LoadError::io("the tokio runtime"))?;
    runtime
        .block_on(async move {
            let mut attack = GooseAttack::initialize_with_config(config)?;
            for s in scenarios {
                attack = attack.register_scenario(s);
            }
            attack.execute().await
        })
        .map_err(LoadError::Goose)?;

    let s = scenarios::shared();
    let acked = s.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let tokens = s
        .acked_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let answers = s.answers.lock().unwrap_or_else(|p| p.into_inner()).clone();
    write_acked(&out.join("acked.csv"), &acked, &tokens)?;
    write(
        &out.join("answers.json"),
        &serde_json::to_string_pretty(&answers).unwrap_or_default(),
    )?;
    let latency = scenarios::latency_table();
    write(&out.join("latency.md"), &latency)?;
    write(
        &out.join("latency.json"),
        &serde_json::to_string_pretty(&scenarios::latency_distributions()).unwrap_or_default(),
    )?;

    let mut report = check(&sale, &acked, &tokens, &a.topic)?;
    if a.pay_share > 0.0 {
        report.checks.extend(payment_checks(&sale, &answers)?);
    }
    let mut summary = format!(
        "# {} run: sale {sale}, {} units\n\n## Answers\n\n",
        scenario, a.units
    );
    for (k, v) in &answers {
        summary.push_str(&format!("- {k}: {v}\n"));
    }
    summary.push_str(&format!(
        "\n## Latency (HdrHistogram, µs)\n\n{latency}\n## Invariants\n\n"
    ));
    for c in &report.checks {
        summary.push_str(&format!(
            "- {} {}\n",
            if c.pass { "PASS" } else { "FAIL" },
            c.name
        ));
    }
    write(&out.join("summary.md"), &summary)?;
    println!("{summary}");
    println!("reports: {}", out.display());
    Ok(report.ok())
}

/// With the simulated provider: every payment started was answered, every callback was
/// answered 200 (paid), and Redis sold exactly the units paid (none cancelled meanwhile:
/// the payment window is far longer than a run).
fn payment_checks(
    sale: &str,
    answers: &std::collections::BTreeMap<String, u64>,
) -> Result<Vec<loadtest::verify::Check>, LoadError> {
    let count = |pred: &dyn Fn(&str) -> bool| -> u64 {
        answers
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, n)| n)
            .sum()
    };
    let callbacks = count(&|k| k.starts_with("payment callback "));
    let paid = count(&|k| k == "payment callback 200");
    let unanswered = count(&|k| k == "pay 0");
    let stack = seckill_common::stack::Stack::discover();
    let sold = stock::Stock::new(stock::connect(
        &stack.redis_url,
        std::time::Duration::from_secs(2),
    )?)
    .state(sale)?
    .sold;
    Ok(vec![
        loadtest::verify::Check {
            name: format!("every payment started was answered: {unanswered} unanswered"),
            pass: unanswered == 0,
        },
        loadtest::verify::Check {
            name: format!(
                "every provider callback paid its order: {paid} of {callbacks} answered 200"
            ),
            pass: paid == callbacks && callbacks > 0,
        },
        loadtest::verify::Check {
            name: format!("units sold in Redis are the payments made: sold {sold}, paid {paid}"),
            pass: sold == paid as i64,
        },
    ])
}

fn verify_only(a: &VerifyArgs) -> Result<bool, LoadError> {
    let (sale, path) = (&a.sale, &a.acked);
    let text = std::fs::read_to_string(path).map_err(LoadError::io(path.display()))?;
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::trim).collect())
        .collect();
    let acked: Vec<(String, u64)> = rows
        .iter()
        .filter_map(|r| Some((r.first()?.to_string(), r.get(1)?.parse().ok()?)))
        .collect();
    let tokens: Vec<String> = rows
        .iter()
        .filter_map(|r| r.get(2).map(|t| t.to_string()))
        .collect();
    let report = check(sale, &acked, &tokens, &a.topic)?;
    report.print();
    Ok(report.ok())
}

/// The invariants of `sale` against the client's record.
fn check(
    sale: &str,
    acked: &[(String, u64)],
    tokens: &[String],
    topic: &str,
) -> Result<verify::Report, LoadError> {
    let v = verify::verify_sale(
        &seckill_common::stack::Stack::discover(),
        topic,
        sale,
        acked,
        tokens,
    )?;
    println!(
        "verify {sale}: {} acknowledged, {} in topic, {} in PostgreSQL",
        acked.len(),
        v.in_topic,
        v.in_db
    );
    Ok(v.report)
}

fn write(path: &Path, text: &str) -> Result<(), LoadError> {
    std::fs::write(path, text).map_err(LoadError::io(path.display()))
}

fn write_acked(path: &Path, acked: &[(String, u64)], tokens: &[String]) -> Result<(), LoadError> {
    let mut text = String::from("order_id,user,token\n");
    for ((id, u), t) in acked.iter().zip(tokens) {
        text.push_str(&format!("{id},{u},{t}\n"));
    }
    write(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `./dev load` and the bench run it: flags before `--`, Goose's after.
    #[test]
    fn goose_flags_after_the_separator_are_passed_on_whole() {
        let cli = Cli::try_parse_from([
            "seckill-load",
            "click-storm",
            "--host",
            "http://127.0.0.1:1",
            "--units",
            "500",
            "--out",
            "/tmp/x",
            "--",
            "--users",
            "8",
            "--run-time",
            "3s",
            "--quiet",
        ])
        .unwrap();
        let Command::ClickStorm(a) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!((a.host.as_str(), a.units), ("http://127.0.0.1:1", 500));
        assert_eq!(a.out, Some(PathBuf::from("/tmp/x")));
        assert_eq!(a.goose, ["--users", "8", "--run-time", "3s", "--quiet"]);
        assert!(Cli::try_parse_from(["seckill-load", "rush", "--users", "8"]).is_err());
        assert!(Cli::try_parse_from(["seckill-load", "stampede"]).is_err());
    }
}
