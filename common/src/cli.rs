//! What every binary's `main` does once clap has parsed its command line (clap answers
//! `--help` and `--version`, and exits 2 on a command line that does not parse): logs to
//! stderr with `tracing` (filter from `SECKILL_LOG`, else `default_filter`; plain text,
//! or JSON lines with `SECKILL_LOG_FORMAT=json`), runs, and on error prints it and
//! exits 1.

/// What a binary's `run` stops with: any of the typed errors it meets, kept whole
/// (`main_with` prints its `Display`).
pub type MainError = Box<dyn std::error::Error>;

pub fn main_with(name: &str, default_filter: &str, run: impl FnOnce() -> Result<(), MainError>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SECKILL_LOG")
        .unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("SECKILL_LOG_FORMAT").as_deref() {
        // One JSON object a line (timestamp, level, target, fields with the message, the
        // current span), for a log pipeline.
        Ok("json") => logs.json().with_current_span(true).init(),
        Ok("" | "text") | Err(_) => logs.init(),
        Ok(other) => {
            // A setting that does not parse, refused as a usage error.
            eprintln!("{name}: SECKILL_LOG_FORMAT={other:?}: expected text or json");
            std::process::exit(2);
        }
    }
    if let Err(e) = run() {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}
