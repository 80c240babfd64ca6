//! The gateway's architecture invariants, checked on its source (ARCHITECTURE.md):
//! - only the `stock` crate builds Redis commands (the gateway's pipe only carries
//!   them, and builds its own transport commands: AUTH/SELECT when it connects,
//!   CLUSTER SLOTS and ASKING on a cluster, WAIT after purchases, SCRIPT LOAD);
//! - HTTP statuses are chosen only in `error.rs` (handlers answer 2xx or an `ApiError`);
//! - no import cycle between the handlers (`app` and its route modules) and the may
//!   glue (`http`): both use `request`, the handlers never `http`.

use std::path::{Path, PathBuf};

fn sources() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    assert!(out.len() > 10, "found the gateway's sources");
    out
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The code of a file without its `#[cfg(test)]` module and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or(text);
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The commands the pipe (`src/redis_pipe/`) builds itself, to carry the stock crate's:
/// the handshake (AUTH, SELECT), routing on a cluster (CLUSTER SLOTS, ASKING), a
/// purchase's replication (WAIT) and loading a script where it is missing (SCRIPT LOAD).
const PIPE_TRANSPORT: [&str; 6] = ["AUTH", "SELECT", "CLUSTER", "ASKING", "WAIT", "SCRIPT"];

fn in_pipe(p: &Path) -> bool {
    p.parent().is_some_and(|d| d.ends_with("redis_pipe"))
}

#[test]
fn only_stock_builds_redis_commands() {
    let mut offenders = Vec::new();
    for (p, text) in sources() {
        let mut code = code(&text);
        if in_pipe(&p) {
            for c in PIPE_TRANSPORT {
                code = code.replace(&format!("redis::cmd(\"{c}\")"), "");
            }
        }
        for needle in ["redis::cmd(", "redis::pipe(", ".cmd(\"", "redis::Cmd::new("] {
            if code.contains(needle) {
                offenders.push(format!("{}: {needle}", name(&p)));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "Redis commands built outside stock: {offenders:?}"
    );
}

#[test]
fn only_error_rs_chooses_an_error_status() {
    let mut offenders = Vec::new();
    for (p, text) in sources() {
        if ["error.rs", "request.rs"].contains(&name(&p).as_str()) {
            continue;
        }
        let code = code(&text);
        for (i, line) in code.lines().enumerate() {
            // A reply built with a 4xx/5xx literal, or a status set by hand.
            let l = line.replace(' ', "");
            let literal_error_status = [
                "Reply::json(4",
                "Reply::json(5",
                "Reply::text(4",
                "Reply::text(5",
                "status=4",
                "status=5",
            ]
            .iter()
            .any(|n| l.contains(n));
            if literal_error_status {
                offenders.push(format!("{}:{}: {}", name(&p), i + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "statuses chosen outside error.rs: {offenders:?}"
    );
}

#[test]
fn the_handlers_never_import_the_http_glue() {
    for (p, text) in sources() {
        let n = name(&p);
        if [
            "app.rs",
            "buyer.rs",
            "admin.rs",
            "audit.rs",
            "caches.rs",
            "request.rs",
            "error.rs",
        ]
        .contains(&n.as_str())
        {
            assert!(
                !code(&text).contains("crate::http"),
                "{n} imports crate::http: the handlers use crate::request"
            );
        }
    }
}
