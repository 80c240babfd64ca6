//! `.run/bench/history.jsonl`: one line per bench run (its `summary.json`, commit and
//! date included), so runs compare over time. The previous non-smoke run's key ratios
//! are set beside this run's.

use serde_json::Value;

/// The measures compared, each a label and where it is in `summary.json`
/// (a key, or a path through the scale-out series).
const KEYS: [(&str, &[&str]); 10] = [
    ("sold-out path / hello-world", &["sold_out_ratio"]),
    ("order-writer / COPY into orders", &["writer_ratio"]),
    (
        "batch write alone / COPY into orders",
        &["write_alone_ratio"],
    ),
    (
        "order-writer / COPY without the FK",
        &["writer_vs_no_fk_ratio"],
    ),
    (
        "purchase path / redis-benchmark -c 50",
        &["purchase_p1_ratio"],
    ),
    (
        "purchase path / redis-benchmark -P 16",
        &["purchase_p16_ratio"],
    ),
    (
        "purchase path / redis-benchmark -P 16, fresh tokens",
        &["purchase_p16_fresh_ratio"],
    ),
    (
        "order p99 at half the peak, ms",
        &["order_p99_us_at_half_peak"],
    ),
    (
        "scale-out, masters only: 3 masters / 1",
        &["scaleout", "series", "masters_only"],
    ),
    (
        "scale-out, replica and WAIT: 3 masters / 1",
        &["scaleout", "series", "replica_and_wait"],
    ),
];

/// The last run in `history` (JSON lines, oldest first) that was not a smoke run and is
/// not `current` itself (same date and commit). Lines that do not parse are skipped.
pub fn previous(history: &str, current: &Value) -> Option<Value> {
    history
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|r| {
            r.is_object()
                && r["smoke"] != Value::Bool(true)
                && !(r["date"] == current["date"] && r["commit"] == current["commit"])
        })
}

/// The value of one compared measure in a summary (latencies in ms).
fn measure(summary: &Value, path: &[&str]) -> Option<f64> {
    match path {
        [key] if key.ends_with("_us_at_half_peak") => Some(summary[*key].as_f64()? / 1000.0),
        [key] => summary[*key].as_f64(),
        ["scaleout", "series", series] => summary["scaleout"]["series"][*series]
            .as_array()?
            .iter()
            .find(|r| r["masters"].as_u64() == Some(3))?["ratio_to_1_master"]
            .as_f64(),
        _ => None,
    }
}

fn describe(run: &Value) -> String {
    let commit = run["commit"].as_str().unwrap_or("unknown commit");
    let short = commit.get(..10).unwrap_or(commit);
    let dirty = if run["dirty"] == Value::Bool(true) {
        ", uncommitted changes"
    } else {
        ""
    };
    let date = run["date"].as_str().unwrap_or("undated");
    format!("commit {short}{dirty}, {date}")
}

/// Markdown: this run's key measures beside the previous run's, or why there is no
/// comparison.
pub fn compare(current: &Value, previous: Option<&Value>) -> String {
    let mut md = String::from("## Against the previous run\n\n");
    let Some(prev) = previous else {
        md.push_str("No earlier non-smoke run in history.jsonl to compare with.\n");
        return md;
    };
    md.push_str(&format!(
        "This run: {}; previous non-smoke run: {} (load average at its start {}). Ratios \
         from two runs on a shared machine move by ten percent or more without any change.\n\n\
         | measure | this run | previous | change |\n|---|---|---|---|\n",
        describe(current),
        describe(prev),
        prev["load_start"].as_str().unwrap_or("unknown"),
    ));
    for (label, path) in KEYS {
        let (now, then) = (measure(current, path), measure(prev, path));
        if now.is_none() && then.is_none() {
            continue;
        }
        md.push_str(&row(label, now, then));
    }
    // The targets run.sh states (`targets`: measure, value), matched by measure.
    let targets = |run: &Value| -> Vec<(String, Option<f64>)> {
        run["targets"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| Some((t["measure"].as_str()?.to_string(), t["value"].as_f64())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = targets(prev);
    for (name, now) in targets(current) {
        let then = before
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v);
        md.push_str(&row(&format!("target: {name}"), now, then));
    }
    md
}

/// One comparison row: this run, the previous, and the change.
fn row(label: &str, now: Option<f64>, then: Option<f64>) -> String {
    let show = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
    let change = match (now, then) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:+.0}%", (a / b - 1.0) * 100.0),
        _ => "—".to_string(),
    };
    format!("| {label} | {} | {} | {change} |\n", show(now), show(then))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_targets_are_compared_by_measure() {
        let now = json!({"commit": "b", "date": "2", "targets": [
            {"measure": "sold-out path ÷ hello-world", "value": 0.96},
            {"measure": "new one", "value": 2.0}]});
        let then = json!({"commit": "a", "date": "1", "load_start": "1 1 1", "targets": [
            {"measure": "sold-out path ÷ hello-world", "value": 0.8}]});
        let md = compare(&now, Some(&then));
        assert!(
            md.contains("| target: sold-out path ÷ hello-world | 0.96 | 0.80 | +20% |"),
            "{md}"
        );
        assert!(md.contains("| target: new one | 2.00 | — | — |"), "{md}");
    }

    fn run(commit: &str, date: &str, smoke: bool, writer_ratio: f64) -> Value {
        json!({"commit": commit, "dirty": false, "date": date, "smoke": smoke,
               "writer_ratio": writer_ratio, "order_p99_us_at_half_peak": 15000,
               "load_start": "1.00 1.00 1.00",
               "scaleout": {"series": {"masters_only": [
                   {"masters": 1, "ratio_to_1_master": 1.0},
                   {"masters": 3, "ratio_to_1_master": 1.2}]}}})
    }

    fn lines(runs: &[Value]) -> String {
        runs.iter().map(|r| format!("{r}\n")).collect()
    }

    #[test]
    fn the_previous_run_is_the_last_one_not_a_smoke_and_not_this_one() {
        let current = run("ccc", "2026-12-07T20:00:00Z", false, 0.7);
        let history = lines(&[
            run("aaa", "2026-12-06T10:00:00Z", false, 0.6),
            run("bbb", "2026-12-07T09:00:00Z", false, 0.5),
            run("bbb", "2026-12-07T10:00:00Z", true, 0.1),
            current.clone(),
        ]) + "not json\n";
        let prev = previous(&history, &current).unwrap();
        assert_eq!(prev["commit"], "bbb");
        assert_eq!(prev["smoke"], false);
        assert_eq!(previous("", &current), None);
        assert_eq!(
            previous(&lines(std::slice::from_ref(&current)), &current),
            None
        );
    }

    #[test]
    fn the_comparison_shows_both_values_and_the_change() {
        let current = run("c0ffee1234567", "2026-12-07T20:00:00Z", false, 0.75);
        let prev = run("beef", "2026-12-06T10:00:00Z", false, 0.6);
        let md = compare(&current, Some(&prev));
        assert!(md.contains("commit c0ffee1234,"), "{md}");
        assert!(
            md.contains("| order-writer / COPY into orders | 0.75 | 0.60 | +25% |"),
            "{md}"
        );
        assert!(
            md.contains("| order p99 at half the peak, ms | 15.00 | 15.00 | +0% |"),
            "{md}"
        );
        assert!(
            md.contains("| scale-out, masters only: 3 masters / 1 | 1.20 | 1.20 | +0% |"),
            "{md}"
        );
        // Measures neither run has are left out.
        assert!(!md.contains("sold-out path"), "{md}");
        assert!(compare(&current, None).contains("No earlier non-smoke run"));
    }
}
