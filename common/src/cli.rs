//! What every binary's `main` does: logs to stderr with `tracing` (filter from
//! `SECKILL_LOG`, else `default_filter`), runs, and on error prints it and exits 1.

pub fn main_with(name: &str, default_filter: &str, run: impl FnOnce() -> Result<(), String>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SECKILL_LOG")
        .unwrap_or_else(|_| default_filter.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run() {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}
