//! `SECKILL_LOG_FORMAT=json`: every binary's stderr is one JSON object a line —
//! timestamp, level, target, message — including the line that says why it stopped and
//! its progress lines. Each is run into a quick failure (nothing of the stack is needed
//! or touched) and one runs as a service for a moment (the gateway, in `edge_http.rs`).

use serde_json::Value;
use std::process::{Command, Stdio};

/// A binary, its arguments, its environment, the exit status it stops with.
type Case = (&'static str, Vec<String>, Vec<(&'static str, String)>, i32);

fn cases(scratch: &str) -> Vec<Case> {
    let dead = "http://127.0.0.1:1".to_string();
    vec![
        ("gateway", vec![], vec![("SECKILL_WORKERS", "-1".into())], 1),
        (
            "order-writer",
            vec![],
            vec![("SECKILL_BATCH_MAX", "0".into())],
            1,
        ),
        (
            "stackctl",
            vec!["kill".into(), "redis".into()],
            vec![("SECKILL_RUN_DIR", scratch.into())],
            1,
        ),
        ("chaos", vec!["list".into()], vec![], 0),
        (
            "seckill-load",
            vec![
                "verify".into(),
                "--sale".into(),
                "s".into(),
                "--acked".into(),
                format!("{scratch}/none.csv"),
            ],
            vec![],
            2,
        ),
        (
            "seckill-demo",
            vec![
                "--gateway".into(),
                dead.clone(),
                "--admin-url".into(),
                dead.clone(),
            ],
            vec![],
            1,
        ),
        (
            "seckill-soak",
            vec!["--gateway".into(), dead.clone(), "--admin-url".into(), dead],
            vec![],
            2,
        ),
        ("seckill-plot", vec![format!("{scratch}/none")], vec![], 1),
        (
            "stock-demo",
            vec![],
            vec![("SECKILL_REDIS_URL", "redis://127.0.0.1:1".into())],
            1,
        ),
    ]
}

#[test]
fn every_binary_logs_one_json_object_a_line() {
    let scratch = std::env::temp_dir().join(format!("seckill-json-logs-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let scratch = scratch.display().to_string();
    let mut failed = vec![];
    for (bin, args, env, status) in cases(&scratch) {
        let path = stackctl::bin(bin).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(path)
            .args(&args)
            .envs(env)
            .env("SECKILL_LOG_FORMAT", "json")
            .env_remove("SECKILL_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run it");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        if out.status.code() != Some(status) {
            failed.push(format!(
                "{bin}: exit {:?}, expected {status}: {stderr}",
                out.status.code()
            ));
        }
        if status != 0 && lines.is_empty() {
            failed.push(format!("{bin}: stopped without a line saying why"));
        }
        for l in lines {
            match serde_json::from_str::<Value>(l) {
                Ok(v)
                    if ["timestamp", "level", "target", "message"]
                        .iter()
                        .all(|k| v[k].is_string()) => {}
                Ok(v) => failed.push(format!(
                    "{bin}: a JSON line without timestamp/level/target/message: {v}"
                )),
                Err(e) => failed.push(format!("{bin}: not JSON ({e}): {l}")),
            }
        }
        if status != 0 && !stderr.contains(&format!("\"program\":\"{bin}\"")) {
            failed.push(format!("{bin}: no line names it: {stderr}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
