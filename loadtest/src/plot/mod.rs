//! The bench's charts, from a bench run's folder (`.run/bench/<time>/`), written to its
//! `plots/` as SVG, and the run set beside the previous one in the history:
//!
//! - `latency.svg`: token and order latency against percentile, from the half-peak Goose
//!   run (`half/latency.json`);
//! - `writer_vs_copy.svg`: the order-writer, its batch write alone and the two COPY
//!   references (`writer.txt`, else `summary.json`);
//! - `scaleout.svg`: purchases/s measured and predicted by master count, masters only and
//!   with a replica and WAIT (`scaleout.json`).
//!
//! A chart whose input is missing is not drawn, and the report says why.

pub mod history;
pub mod inputs;
pub mod svg;

use crate::buyer::LoadError;
use std::path::{Path, PathBuf};

/// What became of one chart.
#[derive(Debug)]
pub struct Chart {
    /// Its file name under `plots/`.
    pub file: &'static str,
    pub title: &'static str,
    /// Drawn, or why not.
    pub drawn: Result<(), String>,
}

/// Every chart of the run in `dir`, drawn into `dir/plots/` where its input is there.
/// Errors are what stops every chart (the folder cannot be written); a chart's own
/// missing or unreadable input is in its [`Chart::drawn`].
pub fn draw_all(dir: &Path) -> Result<Vec<Chart>, LoadError> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(LoadError::io(plots.display()))?;
    let mut charts = Vec::new();
    let mut one = |file: &'static str, title: &'static str, svg: Result<String, String>| {
        let drawn = match svg {
            Ok(svg) => {
                let path = plots.join(file);
                std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(why) => Err(why),
        };
        charts.push(Chart { file, title, drawn });
    };
    one(
        "latency.svg",
        "token and order latency by percentile, at half the purchase peak",
        latency_chart(dir),
    );
    one(
        "writer_vs_copy.svg",
        "order-writer vs PostgreSQL COPY, rows/s",
        writer_chart(dir),
    );
    one(
        "scaleout.svg",
        "scale-out: purchases/s by Redis Cluster masters",
        scaleout_chart(dir),
    );
    Ok(charts)
}

fn read(path: PathBuf) -> Result<String, String> {
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

fn latency_chart(dir: &Path) -> Result<String, String> {
    let path = dir.join("half").join("latency.json");
    let d =
        inputs::latency(&path.display().to_string(), &read(path)?).map_err(|e| e.to_string())?;
    let have: Vec<&str> = ["token", "order"]
        .into_iter()
        .filter(|n| d.get(*n).is_some_and(|x| !x.points.is_empty()))
        .collect();
    if have.len() < 2 {
        return Err(format!(
            "half/latency.json: no token and order requests recorded (request types: {})",
            d.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let title = format!(
        "Goose rush at half the purchase peak: {} orders, {} tokens (corrected for coordinated omission)",
        d["order"].count, d["token"].count
    );
    svg::latency(&title, &d, &have).map_err(|e| e.to_string())
}

fn writer_chart(dir: &Path) -> Result<String, String> {
    let rates = match read(dir.join("writer.txt")).map(|t| inputs::writer_txt(&t)) {
        Ok(Some(r)) => r,
        Ok(None) | Err(_) => {
            let summary = read(dir.join("summary.json"))?;
            let v: serde_json::Value = serde_json::from_str(&summary)
                .map_err(|e| format!("{}: {e}", dir.join("summary.json").display()))?;
            inputs::writer_summary(&v).ok_or_else(|| {
                "writer.txt has no \"median rows/s:\" line and summary.json no writer rates"
                    .to_string()
            })?
        }
    };
    svg::writer_vs_copy(
        "order-writer vs COPY into the same rows (median of the rounds), rows/s",
        &rates,
    )
    .map_err(|e| e.to_string())
}

fn scaleout_chart(dir: &Path) -> Result<String, String> {
    let path = dir.join("scaleout.json");
    let series =
        inputs::scaleout(&path.display().to_string(), &read(path)?).map_err(|e| e.to_string())?;
    if series.is_empty() {
        return Err("scaleout.json: no master count was measured".into());
    }
    svg::scaleout(
        "One hot sale (64 buckets): purchases/s by masters, measured and predicted",
        &series,
    )
    .map_err(|e| e.to_string())
}

/// The charts as markdown for summary.md: each embedded (paths relative to the run's
/// folder), or named with the reason it was not drawn.
pub fn markdown(charts: &[Chart]) -> String {
    let mut md = String::from("## Plots\n\n");
    for c in charts {
        match &c.drawn {
            Ok(()) => md.push_str(&format!("- {}: `plots/{}`\n", c.title, c.file)),
            Err(why) => md.push_str(&format!("- {}: not drawn: {why}\n", c.title)),
        }
    }
    md.push('\n');
    for c in charts.iter().filter(|c| c.drawn.is_ok()) {
        md.push_str(&format!("![{}](plots/{})\n\n", c.title, c.file));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bench folder of its own under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("seckill-plot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_chart_without_its_input_is_not_drawn_and_says_which_file() {
        let d = scratch("missing");
        std::fs::write(
            d.join("writer.txt"),
            "median rows/s: writer 10 write-alone 20 copy 30 copy-no-fk 40\n",
        )
        .unwrap();
        let charts = draw_all(&d).unwrap();
        let by = |f: &str| charts.iter().find(|c| c.file == f).unwrap();
        assert!(by("writer_vs_copy.svg").drawn.is_ok());
        assert!(d.join("plots/writer_vs_copy.svg").is_file());
        let why = by("latency.svg").drawn.as_ref().unwrap_err();
        assert!(why.contains("half/latency.json"), "{why}");
        assert!(by("scaleout.svg")
            .drawn
            .as_ref()
            .unwrap_err()
            .contains("scaleout.json"));
        assert!(!d.join("plots/scaleout.svg").exists());
        let md = markdown(&charts);
        assert!(md.contains("![order-writer vs PostgreSQL COPY, rows/s](plots/writer_vs_copy.svg)"));
        assert_eq!(md.matches("not drawn: ").count(), 2, "{md}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
