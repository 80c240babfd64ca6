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
    if init.is_ok() && JSON.load(std::sync::atomic::Ordering::Relaxed) {
        // A panic says so in one JSON line too (Rust's default is several lines of text).
        let program = name.to_string();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            json_line("ERROR", "panic", &program, &format!("{what}{at}"));
        }));
    }
}

/// One JSON log line written directly (not through the filter): what a process must say
/// whatever `SECKILL_LOG` keeps.
fn json_line(level: &str, message: &str, program: &str, error: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "{{\"timestamp\":\"{}\",\"level\":\"{level}\",\"message\":{},\"program\":{},\"error\":{},\"target\":\"seckill_common::cli\"}}",
        rfc3339(now),
        quote(message),
        quote(program),
        quote(error)
    );
}

/// `s` as a JSON string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// UTC time since the epoch as RFC 3339 with microseconds (as the JSON logs write it).
fn rfc3339(since_epoch: std::time::Duration) -> String {
    let secs = since_epoch.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_micros()
    )
}

/// Say why `name` stops — a JSON log line in the JSON format, `name: error` otherwise —
/// and exit with `code`.
pub fn fail(name: &str, error: &dyn std::fmt::Display, code: i32) -> ! {
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        json_line("ERROR", "stopped", name, &error.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        let t = std::time::Duration::from_micros(1_796_690_138_025_123);
        assert_eq!(rfc3339(t), "2026-12-08T00:35:38.025123Z");
        assert_eq!(
            rfc3339(std::time::Duration::ZERO),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(std::time::Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn strings_are_quoted_as_json() {
        assert_eq!(quote("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }
}
