//! What every binary's `main` does once clap has parsed its command line (clap answers
//! `--help` and `--version`, and exits 2 on a command line that does not parse): logs to
//! stderr with `tracing` (filter from `SECKILL_LOG`, else `default_filter`; plain text,
//! or JSON lines with `SECKILL_LOG_FORMAT=json`), runs, and on error prints it — as a
//! log line of the same format — and exits 1.
//!
//! A JSON line is one object: `timestamp`, `level`, `target`, `message`, the event's own
//! fields beside them (`order`, `error`, … and, on a buyer request's log lines,
//! `trace_id` and `span_id`: the trace to look up in the collector), and `span` when
//! the event happened inside one.

/// What a binary's `run` stops with: any of the typed errors it meets, kept whole
/// (`main_with` prints its `Display`).
pub type MainError = Box<dyn std::error::Error>;

/// Whether logs are JSON lines (`SECKILL_LOG_FORMAT=json`), once [`init_logs`] ran.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Log to stderr as `SECKILL_LOG_FORMAT` says (`text`, the default, or `json`); any other
/// value is a usage error: said, and exit 2.
pub fn init_logs(name: &str, default_filter: &str) {
    // Progress lines (`note!`) are shown under the default filter.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SECKILL_LOG")
        .unwrap_or_else(|_| format!("{default_filter},progress=info").into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let init = match std::env::var("SECKILL_LOG_FORMAT").as_deref() {
        Ok("json") => {
            JSON.store(true, std::sync::atomic::Ordering::Relaxed);
            logs.json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .try_init()
        }
        Ok("" | "text") | Err(_) => logs.try_init(),
        Ok(other) => {
            // A setting that does not parse, refused as a usage error.
            eprintln!("{name}: SECKILL_LOG_FORMAT={other:?}: expected text or json");
            std::process::exit(2);
        }
    };
    // Already set (a second call): the first one's format stays.
    let _ = init;
}

/// Say why `name` stops — a JSON log line in the JSON format, `name: error` otherwise —
/// and exit with `code`.
pub fn fail(name: &str, error: &dyn std::fmt::Display, code: i32) -> ! {
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(program = name, error = %error, "stopped");
    } else {
        eprintln!("{name}: {error}");
    }
    std::process::exit(code);
}

pub fn main_with(name: &str, default_filter: &str, run: impl FnOnce() -> Result<(), MainError>) {
    init_logs(name, default_filter);
    if let Err(e) = run() {
        fail(name, &e, 1);
    }
}

/// A progress line for the operator (what a tool is doing, where its logs are): to
/// stderr as it is, or as an INFO log line of target `progress` in the JSON format
/// (shown unless `SECKILL_LOG` filters it out). Use through [`crate::note!`].
pub fn note(msg: std::fmt::Arguments<'_>) {
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(target: "progress", "{msg}");
    } else {
        eprintln!("{msg}");
    }
}

/// `eprintln!` for progress lines that stay one JSON object a line under
/// `SECKILL_LOG_FORMAT=json` ([`cli::note`](crate::cli::note)).
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::cli::note(format_args!($($arg)*))
    };
}
