//! What every binary's `main` does: answers `--version`, logs to stderr with `tracing`
//! (filter from `SECKILL_LOG`, else `default_filter`; plain text, or JSON lines with
//! `SECKILL_LOG_FORMAT=json`), runs, and on error prints it and
//! exits 2 for a command line that does not parse, 1 for anything else.
//! And the one error a command line that does not parse gives ([`ArgError`]).

use std::str::FromStr;

/// What a binary's `run` stops with: any of the typed errors it meets, kept whole
/// (`main_with` prints its `Display`).
pub type MainError = Box<dyn std::error::Error>;

pub fn main_with(
    name: &str,
    version: &str,
    default_filter: &str,
    run: impl FnOnce() -> Result<(), MainError>,
) {
    if matches!(std::env::args().nth(1).as_deref(), Some("--version" | "-V")) {
        println!("{name} {version}");
        return;
    }
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
            eprintln!("{name}: SECKILL_LOG_FORMAT={other:?}: expected text or json");
            std::process::exit(2);
        }
    }
    if let Err(e) = run() {
        eprintln!("{name}: {e}");
        // A command line that does not parse is a usage error (2), as with every
        // standard tool; anything else that stops the run is 1.
        if e.downcast_ref::<ArgError>().is_some() {
            eprintln!("(see `{name} --help`)");
            std::process::exit(2);
        }
        std::process::exit(1);
    }
}

/// A command line that does not parse; the message is what the user is shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("{0} needs a value")]
    NoValue(String),
    #[error("{0} needs a number")]
    NotANumber(String),
    #[error("unknown flag {0}")]
    UnknownFlag(String),
    #[error("unknown argument {0}")]
    UnknownArgument(String),
    /// Anything else, said as it stands (a usage hint, a value out of its range).
    #[error("{0}")]
    Usage(String),
}

/// The parsed command line; or its error printed as `name: error` (then `usage: …`
/// when `usage` is given) and exit status 2.
pub fn parsed_or_exit<A>(name: &str, usage: &str, parsed: Result<A, ArgError>) -> A {
    parsed.unwrap_or_else(|e| {
        if usage.is_empty() {
            eprintln!("{name}: {e}");
        } else {
            eprintln!("{name}: {e}\nusage: {usage}");
        }
        std::process::exit(2)
    })
}

/// The value that follows `flag`.
pub fn value(flag: &str, next: Option<String>) -> Result<String, ArgError> {
    next.ok_or_else(|| ArgError::NoValue(flag.to_string()))
}

/// `v`, the value of `flag`, as a number.
pub fn number<T: FromStr>(flag: &str, v: &str) -> Result<T, ArgError> {
    v.parse()
        .map_err(|_| ArgError::NotANumber(flag.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_errors_say_what_the_binaries_said() {
        assert_eq!(
            value("--units", None).unwrap_err().to_string(),
            "--units needs a value"
        );
        assert_eq!(
            number::<u64>("--units", "x").unwrap_err().to_string(),
            "--units needs a number"
        );
        assert_eq!(number::<u64>("--units", "7"), Ok(7));
        assert_eq!(
            ArgError::UnknownFlag("--x".into()).to_string(),
            "unknown flag --x"
        );
    }
}
