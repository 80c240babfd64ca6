//! `order-writer [--config FILE]` — consume the order topic into PostgreSQL and run the
//! payment-window canceller, until SIGTERM/SIGINT.
//! `order-writer [--config FILE] rebuild-stock [SALE...]` — after Redis lost its data
//! (all of it, or recent writes), restore the lost sales and put back the orders the
//! kept ones lack, from PostgreSQL and the topic; trust the Redis processes; print what
//! was done, and exit. The running writer's reconciler does the same by itself when a
//! Redis master restarted or was replaced while the store kept its epoch.
//! `order-writer [--config FILE] config` — check the effective configuration and print
//! it (a database URL's password redacted).
//! `order-writer [--config FILE] migrate` — apply the schema migrations and exit (as the
//! schema's owner, when the writer's own role may not: `migrate = false`).
//!
//! `--config` may also come from `SECKILL_CONFIG`; `order-writer --help` describes it all.

use clap::{Parser, Subcommand};
use order_writer::config::Config;
use order_writer::metrics::Metrics;
use seckill_common::cli::MainError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Consumes the order topic into PostgreSQL exactly once and cancels orders left unpaid
/// past the payment window, until SIGTERM/SIGINT (with no command).
#[derive(Debug, Parser)]
#[command(name = "order-writer", version, args_override_self = true)]
struct Cli {
    /// TOML configuration file, read over the defaults; SECKILL_* variables override it [default: none]
    #[arg(long, global = true, value_name = "FILE", env = "SECKILL_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Restore the sales Redis lost, and the orders the kept ones lack, from PostgreSQL and the topic; then exit
    RebuildStock {
        /// Only these sales [default: every sale]
        #[arg(value_name = "SALE")]
        sales: Vec<String>,
    },
    /// Check the effective configuration (defaults, file, environment) and print it, passwords redacted
    Config,
    /// Apply the schema migrations and exit (as the schema's owner, for a writer whose role may not: migrate = false)
    Migrate,
}

fn main() {
    let cli = Cli::parse();
    seckill_common::cli::main_with("order-writer", "info", || run(cli));
}

/// What the writer's own start-up and `rebuild-stock` stop with (the rest is the
/// parts' own errors).
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error("metrics on {listen}: {source}")]
    Metrics {
        listen: String,
        source: std::io::Error,
    },
    #[error("{0} sale(s) not reconciled (paused or not restored): see above")]
    NotReconciled(usize),
}

fn run(cli: Cli) -> Result<(), MainError> {
    let mut cfg: Config = seckill_common::load_config(cli.config.as_deref())?;
    if let Some(Command::Config) = cli.command {
        cfg.validate()
            .map_err(|e| order_writer::WriterError::Config(e.to_string()))?;
        // The passwords (settings and URLs') are redacted.
        print!(
            "{}",
            seckill_common::config::redacted(&cfg, order_writer::config::SECRETS)?
        );
        // What the other commands would refuse (TLS material), refused here too.
        cfg.prepare()?;
        return Ok(());
    }
    cfg.prepare()?;
    match cli.command {
        None => write(cfg),
        Some(Command::Config) => Ok(()),
        Some(Command::Migrate) => {
            let mut db = order_writer::db::connect(&cfg)?;
            order_writer::db::migrate(&mut db)?;
            println!("schema up to date");
            Ok(())
        }
        Some(Command::RebuildStock { sales }) => rebuild_stock(&cfg, &sales),
    }
}

/// `rebuild-stock`: what was done to each sale; an error if one is left paused or not
/// restored.
fn rebuild_stock(cfg: &Config, only: &[String]) -> Result<(), MainError> {
    let done = order_writer::rebuild::rebuild(cfg, only, std::time::Duration::from_secs(60))?;
    let mut failed = 0;
    for (sale, outcome) in &done {
        println!("{sale}: {outcome:?}");
        failed += matches!(
            outcome,
            order_writer::rebuild::Outcome::Paused(_)
                | order_writer::rebuild::Outcome::NotRestored(_)
        ) as usize;
    }
    if failed > 0 {
        return Err(Stopped::NotReconciled(failed).into());
    }
    Ok(())
}

/// Consume the order topic into PostgreSQL, with the canceller and the reconciler
/// beside it, until SIGTERM/SIGINT.
fn write(cfg: Config) -> Result<(), MainError> {
    let tracer =
        seckill_common::telemetry::Tracer::start("seckill-order-writer", &cfg.trace_settings())
            .map_err(order_writer::WriterError::from)?;
    let metrics = Arc::new(Metrics::with_tracer(tracer));
    if !cfg.metrics_listen.is_empty() {
        order_writer::metrics::serve(
            &cfg.metrics_listen,
            metrics.clone(),
            // Silent longer than the group allows a member: not consuming.
            cfg.max_poll_interval_ms.max(10_000),
        )
        .map_err(|source| Stopped::Metrics {
            listen: cfg.metrics_listen.clone(),
            source,
        })?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    // Set while a Redis master is not trusted or cannot be read: the canceller settles
    // nothing meanwhile. Held from the start until the reconciler's first read (if on).
    let held = Arc::new(AtomicBool::new(cfg.reconcile_poll_ms > 0));
    let canceller = {
        let (cfg, metrics, stop, held) = (cfg.clone(), metrics.clone(), stop.clone(), held.clone());
        std::thread::Builder::new()
            .name("canceller".into())
            .spawn(move || order_writer::canceller::run(cfg, metrics, stop, held))?
    };
    let reconciler = {
        let (cfg, metrics, stop) = (cfg.clone(), metrics.clone(), stop.clone());
        std::thread::Builder::new()
            .name("reconciler".into())
            .spawn(move || order_writer::reconciler::run(cfg, metrics, stop, held))?
    };
    let writer = order_writer::consumer::Writer::new(cfg, metrics)?;
    tracing::info!("order-writer running");
    let result = writer.run(&stop);
    stop.store(true, Ordering::Relaxed);
    let _ = canceller.join();
    let _ = reconciler.join();
    Ok(result?)
}
