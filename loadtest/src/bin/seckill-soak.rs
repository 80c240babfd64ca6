//! The hostile soak against a running gateway (see `loadtest::soak`).
//!
//! ```text
//! seckill-soak [--gateway URL] [--gateway-pid PID] [--hostile N] [--buyers N] [--units N]
//!              [--clients N] [--pipelines N] [--pipeline-requests N] [--byte-interval-ms N]
//!              [--hold-secs N] [--max-opened N] [--reopen-after-ms N] [--topic T]
//!              [--max-rss-growth-mb N] [--p99-factor K] [--p99-slack-ms N]
//!              [--timeout-ms N] [--timeout-grace-ms N]
//! ```
//! `--gateway` defaults to `$GATEWAY_URL` (set by `stackctl with-services`), else
//! `http://127.0.0.1:18080`; the pid defaults to the process listening on its port.
//! Secrets: `SECKILL_TICKET_SECRET`, `SECKILL_ADMIN_TOKEN` (the development ones by
//! default, as `stackctl with-services` runs the gateway). Prints the summary; exits 1
//! when an invariant fails or a bound is exceeded, 2 when the run could not be made.

use loadtest::soak::{self, Mix, Options};
use seckill_common::cli::{self, ArgError};
use std::time::Duration;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn parse() -> Result<Options, ArgError> {
    let gateway = env_or("GATEWAY_URL", "http://127.0.0.1:18080");
    let mut o = Options::new(
        &gateway,
        &env_or("SECKILL_TICKET_SECRET", "dev-ticket-secret-change-me"),
        &env_or("SECKILL_ADMIN_TOKEN", "dev-admin-token-change-me"),
        &env_or("SECKILL_ORDERS_TOPIC", "orders"),
        3000,
    );
    o.verbose = true;
    let mut hostile = None;
    let mut pipelines = None;
    let mut max_opened = None;
    let mut units = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(ArgError::Usage(
                "see the flags at the top of loadtest/src/bin/seckill-soak.rs".into(),
            ));
        }
        let v = cli::value(&flag, it.next())?;
        let num = || cli::number::<u64>(&flag, &v);
        let float = || cli::number::<f64>(&flag, &v);
        match flag.as_str() {
            "--gateway" => o.gateway = v.trim_end_matches('/').to_string(),
            "--gateway-pid" => o.gateway_pid = Some(num()? as i32),
            "--hostile" => hostile = Some(num()? as usize),
            "--pipelines" => pipelines = Some(num()? as usize),
            "--buyers" => o.buyers = num()?,
            "--units" => units = Some(num()? as i64),
            "--clients" => o.clients = num()?,
            "--pipeline-requests" => o.pipeline_requests = num()? as usize,
            "--byte-interval-ms" => o.byte_interval = Duration::from_millis(num()?),
            "--hold-secs" => o.hold = Duration::from_secs(num()?),
            "--max-opened" => max_opened = Some(num()?),
            "--reopen-after-ms" => o.reopen_after = Duration::from_millis(num()?),
            "--topic" => o.topic = v.clone(),
            "--max-rss-growth-mb" => o.bounds.rss_growth_mb = num()?,
            "--p99-factor" => o.bounds.p99_factor = float()?,
            "--p99-slack-ms" => o.bounds.p99_slack_ms = num()?,
            "--timeout-ms" => o.bounds.timeout_ms = num()?,
            "--timeout-grace-ms" => o.bounds.timeout_grace_ms = num()?,
            _ => return Err(ArgError::UnknownFlag(flag)),
        }
    }
    let n = hostile.unwrap_or(3000);
    o.mix = match pipelines {
        Some(p) => Mix::with_pipelines(n, p),
        None => Mix::split(n),
    };
    o.max_opened = max_opened.unwrap_or(o.mix.total() as u64 * 10);
    o.units = units.unwrap_or(o.buyers as i64 / 2);
    Ok(o)
}

fn main() {
    let opts = cli::parsed_or_exit("seckill-soak", "", parse());
    eprintln!(
        "[soak] gateway {}; {} buyers ({} units) on {} clients; hostile mix {:?} ({} in all), held {} s",
        opts.gateway,
        opts.buyers,
        opts.units,
        opts.clients,
        soak::KINDS
            .iter()
            .map(|k| format!("{} {}", k.name(), opts.mix.get(*k)))
            .collect::<Vec<_>>(),
        opts.mix.total(),
        opts.hold.as_secs()
    );
    let stack = seckill_common::stack::Stack::discover();
    match soak::run(&opts, &stack) {
        Ok(summary) => {
            summary.print();
            if !summary.violations().is_empty() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("seckill-soak: {e}");
            std::process::exit(2);
        }
    }
}
