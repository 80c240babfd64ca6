//! The bench's outputs read back as the charts need them: the half-peak run's
//! `latency.json`, the writer's `median rows/s:` line (or `summary.json`), and
//! `scaleout.json`. Each reader takes the file's text, so tests need no files.

use crate::buyer::LoadError;
use crate::latency::Distributions;
use serde_json::Value;

/// `latency.json` as seckill-load writes it.
pub fn latency(what: &str, text: &str) -> Result<Distributions, LoadError> {
    serde_json::from_str(text).map_err(|e| LoadError::BadInput {
        what: what.to_string(),
        why: e.to_string(),
    })
}

/// The writer and its references (medians of the rounds), rows/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriterRates {
    /// The order-writer, topic to PostgreSQL.
    pub writer: f64,
    /// Its batch write alone.
    pub write_alone: f64,
    /// COPY into the real `orders` schema.
    pub copy: f64,
    /// COPY into the same shape without the foreign key.
    pub copy_no_fk: f64,
}

impl WriterRates {
    /// Label and rows/s of each bar, in the order drawn.
    pub fn bars(&self) -> [(&'static str, f64); 4] {
        [
            ("order-writer", self.writer),
            ("batch write alone", self.write_alone),
            ("COPY into orders", self.copy),
            ("COPY without FK", self.copy_no_fk),
        ]
    }
}

/// write_vs_copy's last line:
/// `median rows/s: writer W write-alone S copy C copy-no-fk D`.
pub fn writer_txt(text: &str) -> Option<WriterRates> {
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("median rows/s:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| -> Option<f64> {
        let at = words.iter().position(|w| *w == name)?;
        let v: f64 = words.get(at + 1)?.parse().ok()?;
        (v.is_finite() && v > 0.0).then_some(v)
    };
    Some(WriterRates {
        writer: field("writer")?,
        write_alone: field("write-alone")?,
        copy: field("copy")?,
        copy_no_fk: field("copy-no-fk")?,
    })
}

/// The same rates from run.sh's `summary.json` (`writer_project`, `write_alone_project`,
/// `writer_reference`, `writer_vs_no_fk_reference`), for a run whose writer.txt is gone.
pub fn writer_summary(summary: &Value) -> Option<WriterRates> {
    let f = |k: &str| summary[k].as_f64().filter(|v| v.is_finite() && *v > 0.0);
    Some(WriterRates {
        writer: f("writer_project")?,
        write_alone: f("write_alone_project")?,
        copy: f("writer_reference")?,
        copy_no_fk: f("writer_vs_no_fk_reference")?,
    })
}

/// One master count of a scale-out series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalePoint {
    pub masters: u32,
    /// Measured on this machine (every process on its shared cores).
    pub measured: f64,
    /// Predicted with one machine per shard.
    pub predicted: f64,
}

/// A series of scaleout.json (`masters_only`, `replica_and_wait`), by master count.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSeries {
    pub key: String,
    pub points: Vec<ScalePoint>,
}

impl ScaleSeries {
    /// The chart's title for the series: what scaleout.sh calls its table.
    pub fn title(&self) -> &str {
        match self.key.as_str() {
            "masters_only" => "A. masters only (no replicas, no WAIT)",
            "replica_and_wait" => "B. one replica per master, WAIT 1",
            "replica_no_wait" => "C. one replica per master, no WAIT",
            other => other,
        }
    }
}

/// scaleout.json as scaleout.sh writes it:
/// `{"series": {"masters_only": [{"masters": 1, "purchases_per_s": …,
/// "predicted_purchases_per_s_one_machine_per_shard": …}, …], "replica_and_wait": […]}}`.
/// Series come masters-only first; a series with no measured master count is left out.
pub fn scaleout(what: &str, text: &str) -> Result<Vec<ScaleSeries>, LoadError> {
    let bad = |why: String| LoadError::BadInput {
        what: what.to_string(),
        why,
    };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let series = v["series"]
        .as_object()
        .ok_or_else(|| bad("no \"series\" object".into()))?;
    let mut out = Vec::new();
    for (key, runs) in series {
        let runs = runs
            .as_array()
            .ok_or_else(|| bad(format!("series {key} is not a list")))?;
        let mut points = Vec::new();
        for r in runs {
            let field = |k: &str| {
                r[k].as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(format!("series {key}: a run without a number {k:?}")))
            };
            points.push(ScalePoint {
                masters: field("masters")? as u32,
                measured: field("purchases_per_s")?,
                predicted: field("predicted_purchases_per_s_one_machine_per_shard")?,
            });
        }
        points.sort_by_key(|p| p.masters);
        if !points.is_empty() {
            out.push(ScaleSeries {
                key: key.clone(),
                points,
            });
        }
    }
    out.sort_by_key(|s| s.key != "masters_only");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_line_is_read_whatever_comes_before_it() {
        let text = "  order-writer (topic -> PostgreSQL…):  38861 rows/s\n\
                    median rows/s: writer 38861 write-alone 64742 copy 59101 copy-no-fk 117511\n";
        let r = writer_txt(text).unwrap();
        assert_eq!(
            r,
            WriterRates {
                writer: 38861.0,
                write_alone: 64742.0,
                copy: 59101.0,
                copy_no_fk: 117511.0
            }
        );
        assert_eq!(r.bars()[3], ("COPY without FK", 117511.0));
    }

    #[test]
    fn a_writer_line_missing_a_rate_or_with_a_zero_gives_nothing() {
        assert_eq!(writer_txt("write_vs_copy: kafka down\n"), None);
        assert_eq!(
            writer_txt("median rows/s: writer 1 write-alone 2 copy 3\n"),
            None
        );
        assert_eq!(
            writer_txt("median rows/s: writer 0 write-alone 2 copy 3 copy-no-fk 4\n"),
            None
        );
    }

    #[test]
    fn the_writer_rates_come_from_the_summary_too() {
        let s = serde_json::json!({"writer_project": 10.0, "write_alone_project": 20.0,
            "writer_reference": 30.0, "writer_vs_no_fk_reference": 40.0});
        assert_eq!(writer_summary(&s).unwrap().copy_no_fk, 40.0);
        let missing = serde_json::json!({"writer_project": 10.0, "writer_reference": null});
        assert_eq!(writer_summary(&missing), None);
    }

    #[test]
    fn scaleout_series_are_read_masters_only_first_and_by_master_count() {
        let text = r#"{"load_start": "1 1 1", "series": {
            "replica_and_wait": [
              {"masters": 2, "purchases_per_s": 30000, "predicted_purchases_per_s_one_machine_per_shard": 50000.0},
              {"masters": 1, "purchases_per_s": 25000, "predicted_purchases_per_s_one_machine_per_shard": 30000.0}],
            "masters_only": [
              {"masters": 1, "purchases_per_s": 50000, "predicted_purchases_per_s_one_machine_per_shard": 55000.5}]}}"#;
        let s = scaleout("scaleout.json", text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].key, "masters_only");
        assert_eq!(s[0].points[0].predicted, 55000.5);
        assert_eq!(
            s[1].points.iter().map(|p| p.masters).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(s[1].title(), "B. one replica per master, WAIT 1");
    }

    #[test]
    fn a_scaleout_file_of_another_shape_is_refused_with_the_reason() {
        let e = scaleout(
            "x.json",
            r#"{"series": {"masters_only": [{"masters": 1}]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("x.json: ") && e.contains("purchases_per_s"),
            "{e}"
        );
        assert!(scaleout("x.json", "{}").is_err());
        assert!(scaleout("x.json", "not json").is_err());
        // Every master count unmeasured: no series at all, not an error.
        assert_eq!(scaleout("x.json", r#"{"series": {}}"#).unwrap(), vec![]);
    }

    #[test]
    fn latency_json_reads_back_as_written() {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        h.record(1500).unwrap();
        let mut d = Distributions::new();
        d.insert("order".into(), crate::latency::Distribution::of(&h));
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(latency("latency.json", &text).unwrap(), d);
        assert!(latency("latency.json", "[1,2]").is_err());
    }
}
