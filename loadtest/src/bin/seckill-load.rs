//! Goose load runs against the gateway, each ending with the invariant check.
//!
//! ```text
//! seckill-load <rush|click-storm|bots|browse|mix> [--host URL] [--units N] [--out DIR]
//!              [--expected-interval-us N] [-- GOOSE FLAGS…]
//! seckill-load verify --sale SALE --acked FILE [--topic T]
//! ```
//! Goose flags (after `--`) set users, `--increase-rate`, `--run-time`, `--co-mitigation`…;
//! without `--run-time`/`--iterations` a run lasts 30 s. The run's folder (default
//! `.run/load/<scenario>-<time>`) receives Goose's HTML and JSON reports, `acked.csv`
//! (every 202), `answers.json`, `latency.md` (HdrHistogram per request type) and
//! `summary.md`. Secrets: `SECKILL_TICKET_SECRET`, `SECKILL_ADMIN_TOKEN`.

use goose::config::GooseConfiguration;
use goose::GooseAttack;
use loadtest::buyer::{Client, LoadError};
use loadtest::{scenarios, verify};
use seckill_common::cli::{self, ArgError};
use std::path::{Path, PathBuf};

struct Args {
    scenario: String,
    host: String,
    units: i64,
    out: Option<PathBuf>,
    expected_interval_us: u64,
    sale: Option<String>,
    acked: Option<PathBuf>,
    topic: String,
    goose: Vec<String>,
}

fn parse() -> Result<Args, ArgError> {
    let mut it = std::env::args().skip(1);
    let scenario = it.next().ok_or_else(|| {
        ArgError::Usage("name a scenario: rush, click-storm, bots, browse, mix, or verify".into())
    })?;
    let mut a = Args {
        scenario,
        host: "http://127.0.0.1:18080".into(),
        units: 1000,
        out: None,
        expected_interval_us: 0,
        sale: None,
        acked: None,
        topic: std::env::var("SECKILL_ORDERS_TOPIC").unwrap_or_else(|_| "orders".into()),
        goose: Vec::new(),
    };
    while let Some(flag) = it.next() {
        if flag == "--" {
            a.goose = it.by_ref().collect();
            break;
        }
        let v = cli::value(&flag, it.next())?;
        let num = || cli::number::<u64>(&flag, &v);
        match flag.as_str() {
            "--host" => a.host = v.clone(),
            "--units" => a.units = num()? as i64,
            "--out" => a.out = Some(PathBuf::from(&v)),
            "--expected-interval-us" => a.expected_interval_us = num()?,
            "--sale" => a.sale = Some(v.clone()),
            "--acked" => a.acked = Some(PathBuf::from(&v)),
            "--topic" => a.topic = v.clone(),
            _ => return Err(ArgError::UnknownFlag(flag)),
        }
    }
    Ok(a)
}

fn main() {
    let a = cli::parsed_or_exit("seckill-load", "", parse());
    let result = if a.scenario == "verify" {
        verify_only(&a)
    } else {
        run(a)
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("seckill-load: {e}");
            std::process::exit(2);
        }
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn run(a: Args) -> Result<bool, LoadError> {
    let secret = env_or("SECKILL_TICKET_SECRET", "dev-ticket-secret-change-me");
    let admin = env_or("SECKILL_ADMIN_TOKEN", "dev-admin-token-change-me");
    let now = seckill_common::now_ms();
    let sale = format!("load_{}_{now}", a.scenario.replace('-', "_"));
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!(".run/load/{}-{now}", a.scenario)));
    std::fs::create_dir_all(&out).map_err(LoadError::io(out.display()))?;
    let scenarios = scenarios::scenarios(&a.scenario)?;
    Client::new(&a.host, &secret).create_sale(
        &admin,
        &sale,
        a.units,
        now - 1000,
        now + 24 * 3_600_000,
    )?;
    scenarios::init(&sale, &secret, 1, a.expected_interval_us);
    println!(
        "sale {sale}: {} units; scenario {}; gateway {}; run folder {}",
        a.units,
        a.scenario,
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

    let report = check(&sale, &acked, &tokens, &a.topic)?;
    let mut summary = format!(
        "# {} run: sale {sale}, {} units\n\n## Answers\n\n",
        a.scenario, a.units
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

fn verify_only(a: &Args) -> Result<bool, LoadError> {
    let sale = a
        .sale
        .clone()
        .ok_or_else(|| LoadError::Setup("verify needs --sale".into()))?;
    let path = a
        .acked
        .clone()
        .ok_or_else(|| LoadError::Setup("verify needs --acked FILE".into()))?;
    let text = std::fs::read_to_string(&path).map_err(LoadError::io(path.display()))?;
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
    let report = check(&sale, &acked, &tokens, &a.topic)?;
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
