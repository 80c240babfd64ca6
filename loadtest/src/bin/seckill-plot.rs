//! The bench's charts and its comparison with the previous run.
//!
//! ```text
//! seckill-plot DIR [--history FILE] [--strict]
//! ```
//! Reads a bench run's folder (`loadtest/bench/run.sh` writes `.run/bench/<time>/`),
//! writes `DIR/plots/{latency,writer_vs_copy,scaleout}.svg` and prints markdown for its
//! summary: the charts (or why one was not drawn) and the key ratios beside those of the
//! previous non-smoke run in the history (`DIR/../history.jsonl` by default). `--strict`
//! (the bench's smoke run): exit 1 when a chart was not drawn.

use clap::Parser;
use loadtest::buyer::LoadError;
use loadtest::plot;
use std::path::PathBuf;

/// Draws a bench run's charts (SVG, into DIR/plots/) and compares its key ratios with the
/// previous non-smoke run; prints markdown for the run's summary
#[derive(Debug, Parser)]
#[command(name = "seckill-plot", version, args_override_self = true)]
struct Cli {
    /// The bench run's folder (.run/bench/<time>: summary.json, writer.txt, half/latency.json, scaleout.json)
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The run history, one summary.json a line [default: DIR/../history.jsonl]
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Exit 1 when a chart could not be drawn (its input missing)
    #[arg(long)]
    strict: bool,
}

fn main() {
    let cli = Cli::parse();
    seckill_common::cli::main_with("seckill-plot", "warn", || Ok(run(&cli)?));
}

fn run(cli: &Cli) -> Result<(), LoadError> {
    if !cli.dir.is_dir() {
        return Err(LoadError::Setup(format!(
            "{}: not a bench run's folder",
            cli.dir.display()
        )));
    }
    let charts = plot::draw_all(&cli.dir)?;
    let mut md = plot::markdown(&charts);
    let summary_path = cli.dir.join("summary.json");
    let history_path = cli
        .history
        .clone()
        .unwrap_or_else(|| cli.dir.join("..").join("history.jsonl"));
    match std::fs::read_to_string(&summary_path) {
        Ok(text) => {
            let current: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| LoadError::BadInput {
                    what: summary_path.display().to_string(),
                    why: e.to_string(),
                })?;
            // No history yet is the first run, not an error.
            let history = std::fs::read_to_string(&history_path).unwrap_or_default();
            let prev = plot::history::previous(&history, &current);
            md.push_str(&plot::history::compare(&current, prev.as_ref()));
        }
        Err(e) => md.push_str(&format!(
            "## Against the previous run\n\nNot compared: {}: {e}\n",
            summary_path.display()
        )),
    }
    print!("{md}");
    let missing: Vec<&str> = charts
        .iter()
        .filter(|c| c.drawn.is_err())
        .map(|c| c.file)
        .collect();
    if cli.strict && !missing.is_empty() {
        return Err(LoadError::Setup(format!(
            "not drawn: {} (see the reasons above)",
            missing.join(", ")
        )));
    }
    Ok(())
}
