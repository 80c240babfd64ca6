//! The metric names that the alert rules and the dashboard (`runbooks/alerts.yml`,
//! `runbooks/dashboard.json`) use, so that tests can check each one is really exported;
//! the writing of one unlabelled metric in the Prometheus text format; and what every
//! component exports beside its own metrics: `seckill_build_info` and the standard
//! `process_*` metrics.

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

/// `seckill_build_info{component, version, revision} 1`: which build answers (the
/// revision is `SECKILL_REVISION` at build time — `./dev` and the image build set the
/// commit — else "unknown").
pub fn write_build_info(out: &mut String, component: &str) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP seckill_build_info The build of this process (always 1).
# TYPE seckill_build_info gauge
seckill_build_info{{component=\"{component}\",version=\"{}\",revision=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        option_env!("SECKILL_REVISION").unwrap_or("unknown")
    );
}

/// The standard process metrics (Prometheus client conventions), from `/proc/self`:
/// CPU seconds, resident and virtual memory, open and maximum file descriptors, start
/// time. A figure that cannot be read is left out.
pub fn write_process_metrics(out: &mut String) {
    // SAFETY: sysconf has no memory effects.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as f64,
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After "pid (comm) ": state is field 3; utime 14, stime 15, starttime 22, vsize 23, rss 24.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(u), Some(s)) = (field(14), field(15)) {
        write_metric(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (u + s) / ticks,
        );
    }
    if let Some(rss) = field(24) {
        write_metric(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss * page,
        );
    }
    if let Some(vsize) = field(23) {
        write_metric(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            vsize,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
    });
    if let (Some(start), Some(boot)) = (field(22), boot) {
        write_metric(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + start / ticks,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        write_metric(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count(),
        );
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        });
    if let Some(max) = max_fds {
        write_metric(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
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
    fn the_process_and_build_metrics_are_read_from_this_process() {
        let mut out = String::new();
        write_build_info(&mut out, "test");
        write_process_metrics(&mut out);
        assert!(
            out.contains("seckill_build_info{component=\"test\",version=\""),
            "{out}"
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            let v: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {out}"));
            assert!(v >= 0.0, "{name} {v}");
        }
        let rss: f64 = out
            .lines()
            .find_map(|l| {
                l.strip_prefix("process_resident_memory_bytes ")?
                    .parse()
                    .ok()
            })
            .unwrap_or_default();
        assert!(rss > 1e5, "a live process holds some memory: {rss}");
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
