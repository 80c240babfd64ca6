//! The standard command line every workspace binary must have (clap's behaviour): run a
//! built binary with `--help`, each subcommand's `--help`, `--version` and an unknown
//! flag, and check what it printed and how it exited.

use std::process::{Command, Output};

/// `bin` run with `args`, its environment without `SECKILL_*` variables (so that a
/// developer's settings never change what a test sees).
pub fn run(bin: &str, args: &[&str]) -> Output {
    run_with(bin, args, &[])
}

/// [`run`] with the variables `env` set.
pub fn run_with(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SECKILL_")) {
        cmd.env_remove(k);
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// Standard error of `out`, as text.
pub fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `args` exit 0 and print a usage on standard output that contains every one of `words`
/// (each a whole word, so `ci` is not found inside `clients`).
pub fn assert_help(bin: &str, args: &[&str], words: &[&str]) {
    let out = run(bin, args);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("Usage:"),
        "{args:?} printed no usage:\n{stdout}"
    );
    for w in words {
        let whole = stdout
            .split(|c: char| c.is_whitespace() || ",[]<>():=".contains(c))
            .any(|t| t == *w);
        assert!(whole, "{args:?} does not mention {w}:\n{stdout}");
    }
}

/// The standard behaviour of the binary `bin` named `name`:
/// - `--help` exits 0 and names every one of `subcommands` and `flags`;
/// - `SUB --help` exits 0 for every subcommand;
/// - `--version` and `-V` print `<name> <version>`;
/// - an unknown flag is a usage error: exit status 2 and clap's message naming it.
pub fn assert_standard(bin: &str, name: &str, version: &str, subcommands: &[&str], flags: &[&str]) {
    let words: Vec<&str> = subcommands.iter().chain(flags).copied().collect();
    assert_help(bin, &["--help"], &words);
    assert_help(bin, &["-h"], &words);
    for sub in subcommands {
        assert_help(bin, &[sub, "--help"], &[]);
    }
    for flag in ["--version", "-V"] {
        let out = run(bin, &[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert_eq!(text(&out.stdout), format!("{name} {version}\n"), "{flag}");
    }
    assert_usage_error(bin, &["--no-such-flag"], "'--no-such-flag'");
}

/// `args` are refused as a usage error: exit status 2, nothing on standard output, and
/// clap's message on standard error containing `says` and pointing at `--help`.
pub fn assert_usage_error(bin: &str, args: &[&str], says: &str) {
    let out = run(bin, args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(stderr.contains("--help"), "{args:?}: {stderr}");
}
