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

use order_writer::config::Config;
use order_writer::metrics::Metrics;
use seckill_common::cli::{ArgError, MainError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn main() {
    seckill_common::cli::main_with("order-writer", env!("CARGO_PKG_VERSION"), "info", run);
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

fn run() -> Result<(), MainError> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    let mut rebuild: Option<Vec<String>> = None;
    let mut show = false;
    let mut migrate_only = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => {
                config =
                    Some(std::path::PathBuf::from(args.next().ok_or_else(|| {
                        ArgError::Usage("--config needs a file".into())
                    })?))
            }
            "-h" | "--help" => {
                println!("usage: order-writer [--config FILE] [rebuild-stock [SALE...] | config | migrate]");
                return Ok(());
            }
            "rebuild-stock" => rebuild = Some(Vec::new()),
            "config" if rebuild.is_none() => show = true,
            "migrate" if rebuild.is_none() => migrate_only = true,
            sale if rebuild.is_some() => {
                rebuild.get_or_insert_with(Vec::new).push(sale.to_string())
            }
            _ => return Err(ArgError::UnknownArgument(a).into()),
        }
    }
    let mut cfg: Config = seckill_common::load_config(config.as_deref())?;
    if show {
        cfg.validate()
            .map_err(|e| order_writer::WriterError::Config(e.to_string()))?;
        // The passwords (settings and URLs') are redacted.
        print!(
            "{}",
            seckill_common::config::redacted(&cfg, order_writer::config::SECRETS)?
        );
        cfg.prepare()?;
        return Ok(());
    }
    cfg.prepare()?;
    if migrate_only {
        let mut db = order_writer::db::connect(&cfg)?;
        order_writer::db::migrate(&mut db)?;
        println!("schema up to date");
        return Ok(());
    }
    if let Some(only) = rebuild {
        let done = order_writer::rebuild::rebuild(&cfg, &only, std::time::Duration::from_secs(60))?;
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
        return Ok(());
    }
    let metrics = Arc::new(Metrics::default());
    if !cfg.metrics_listen.is_empty() {
        order_writer::metrics::serve(&cfg.metrics_listen, metrics.clone()).map_err(|source| {
            Stopped::Metrics {
                listen: cfg.metrics_listen.clone(),
                source,
            }
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
