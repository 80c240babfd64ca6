//! The metric names that the alert rules and the dashboard (`runbooks/alerts.yml`,
//! `runbooks/dashboard.json`) use, so that tests can check each one is really exported;
//! and the writing of one unlabelled metric in the Prometheus text format.

/// One metric of `kind` (counter, gauge) with no labels: its HELP and TYPE lines and
/// its one sample.
pub fn write_metric(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Every distinct `seckill_…` metric name in `text`.
pub fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("seckill_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].trim_end_matches('_').to_string());
        rest = &tail[end..];
    }
    out
}

/// Names in `wanted` with no sample in the Prometheus text `exposition`.
pub fn missing<'a>(wanted: impl IntoIterator<Item = &'a String>, exposition: &str) -> Vec<String> {
    wanted
        .into_iter()
        .filter(|name| {
            !exposition.lines().any(|l| {
                l.strip_prefix(name.as_str())
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            })
        })
        .cloned()
        .collect()
}

/// The alert rules and the dashboard, as shipped.
pub const ALERTS: &str = include_str!("../../runbooks/alerts.yml");
pub const DASHBOARD: &str = include_str!("../../runbooks/dashboard.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_and_checked_against_samples() {
        let names = metric_names(
            "rate(seckill_a_total[1m]) / seckill_b_bucket{le=\"1\"} seckill_common::x",
        );
        assert!(names.contains("seckill_a_total") && names.contains("seckill_b_bucket"));
        let text = "# HELP seckill_a_total x\nseckill_a_total 3\nseckill_b_bucket{le=\"1\"} 2\n";
        let want: Vec<String> = vec![
            "seckill_a_total".into(),
            "seckill_b_bucket".into(),
            "seckill_c".into(),
        ];
        assert_eq!(missing(&want, text), vec!["seckill_c".to_string()]);
        assert!(metric_names(DASHBOARD).len() > 10 && metric_names(ALERTS).len() > 5);
    }

    #[test]
    fn a_metric_is_written_with_its_help_and_type() {
        let mut out = String::new();
        write_metric(&mut out, "seckill_x_total", "counter", "Xs.", 3);
        assert_eq!(
            out,
            "# HELP seckill_x_total Xs.\n# TYPE seckill_x_total counter\nseckill_x_total 3\n"
        );
    }
}
