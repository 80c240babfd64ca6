//! The charts, each drawn to an SVG string: latency percentile curves, the writer
//! against COPY (bars), and the scale-out (measured and predicted purchases/s by master
//! count). Text is left to the SVG viewer's fonts (no font is linked in).

use super::inputs::{ScaleSeries, WriterRates};
use crate::buyer::LoadError;
use crate::latency::Distributions;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const SIZE: (u32, u32) = (900, 500);
/// Series colours, in the order the series come.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
/// x of quantile `q` among `count` requests on HdrHistogram's percentile axis:
/// 1 / (1 - q), so 90% is 10, 99% 100, 99.9% 1,000. The maximum (q = 1) is one request
/// in `count`: x = `count`.
pub fn percentile_x(q: f64, count: u64) -> f64 {
    let count = count.max(1) as f64;
    let rest = 1.0 - q.clamp(0.0, 1.0);
    if rest * count <= 1.0 {
        count
    } else {
        1.0 / rest
    }
}

/// The axis's end: the next power of ten at or above `x`, 100 (99%) at least.
fn axis_end(x: f64) -> f64 {
    10f64.powf(x.max(100.0).log10().ceil())
}

/// The label of x on that axis: the percentile it stands for.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let s = format!("{p:.4}");
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

fn err(chart: &'static str) -> impl Fn(DrawingAreaErrorKind<std::io::Error>) -> LoadError {
    move |source| LoadError::Chart { chart, source }
}

/// Latency (ms) against percentile, one curve per request type in `names` (those
/// present in `d`), on a log axis of 1 / (1 - q).
pub fn latency(title: &str, d: &Distributions, names: &[&str]) -> Result<String, LoadError> {
    let e = err("latency");
    let curves: Vec<(&str, Vec<(f64, f64)>)> = names
        .iter()
        .filter_map(|n| d.get(*n).map(|x| (*n, x)))
        .map(|(n, x)| {
            let pts = x
                .points
                .iter()
                .map(|p| {
                    (
                        percentile_x(p.quantile, x.count),
                        p.value_us as f64 / 1000.0,
                    )
                })
                .collect();
            (n, pts)
        })
        .collect();
    let top = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.05;
    let end = axis_end(
        curves
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
            .fold(1.0, f64::max),
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(25)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d((1f64..end).log_scale(), 0f64..top)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("percentile (axis: 1 / (1 - q))")
            .y_desc("latency, ms")
            .x_label_formatter(&|x| percentile_label(*x))
            .draw()
            .map_err(&e)?;
        for (i, (name, pts)) in curves.into_iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)).point_size(2))
                .map_err(&e)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft).map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// The writer, its batch write alone and the two COPY references, rows/s, as bars with
/// their values on top.
pub fn writer_vs_copy(title: &str, r: &WriterRates) -> Result<String, LoadError> {
    let e = err("writer_vs_copy");
    let bars = r.bars();
    let top = bars.iter().map(|(_, v)| *v).fold(1.0f64, f64::max) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(75)
            .build_cartesian_2d((0u32..bars.len() as u32).into_segmented(), 0f64..top)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc("rows/s")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => bars
                    .get(*i as usize)
                    .map(|(n, _)| n.to_string())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(&e)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let c = COLOURS[if i < 2 { 0 } else { 2 }];
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i as u32), 0.0),
                        (SegmentValue::Exact(i as u32 + 1), *v),
                    ],
                    c.filled(),
                );
                bar.set_margin(0, 0, 25, 25);
                bar
            }))
            .map_err(&e)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                Text::new(
                    format!("{v:.0}"),
                    (SegmentValue::CenterOf(i as u32), v + top * 0.02),
                    ("sans-serif", 15)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

/// Purchases/s by master count, measured and predicted, one panel per series.
pub fn scaleout(title: &str, series: &[ScaleSeries]) -> Result<String, LoadError> {
    let e = err("scaleout");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(&e)?;
        let panels = root.split_evenly((1, series.len().max(1)));
        for (panel, s) in panels.iter().zip(series) {
            scale_panel(panel, s).map_err(&e)?;
        }
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

fn scale_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    s: &ScaleSeries,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let most = s.points.iter().map(|p| p.masters).max().unwrap_or(1).max(2);
    let top = s
        .points
        .iter()
        .map(|p| p.measured.max(p.predicted))
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(s.title(), ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1u32..most, 0f64..top)?;
    chart
        .configure_mesh()
        .x_labels(most as usize)
        .x_desc("Redis Cluster masters")
        .y_desc("purchases/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let lines = [
        (
            "measured (this machine)",
            s.points.iter().map(|p| p.measured).collect::<Vec<_>>(),
        ),
        (
            "predicted (one machine per shard)",
            s.points.iter().map(|p| p.predicted).collect(),
        ),
    ];
    for (i, (name, values)) in lines.into_iter().enumerate() {
        let c = COLOURS[i];
        chart
            .draw_series(
                LineSeries::new(
                    s.points.iter().map(|p| p.masters).zip(values),
                    c.stroke_width(2),
                )
                .point_size(4),
            )?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::{Distribution, Point};
    use crate::plot::inputs::ScalePoint;

    /// The points of every `<polyline>` drawn in `colour`, in order.
    fn polylines(svg: &str, colour: RGBColor) -> Vec<Vec<(f64, f64)>> {
        let stroke = format!(
            "stroke=\"#{:02X}{:02X}{:02X}\"",
            colour.0, colour.1, colour.2
        );
        svg.split("<polyline")
            .skip(1)
            .filter(|p| {
                p.split("/>")
                    .next()
                    .is_some_and(|tag| tag.contains(&stroke))
            })
            .filter_map(|p| p.split("points=\"").nth(1)?.split('"').next())
            .map(|pts| {
                pts.split_whitespace()
                    .filter_map(|xy| {
                        let (x, y) = xy.split_once(',')?;
                        Some((x.parse().ok()?, y.parse().ok()?))
                    })
                    .collect()
            })
            .collect()
    }

    /// The text of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>')?.1.split("</text>").next())
            .map(|t| t.trim().to_string())
            .collect()
    }

    fn dist(values: &[(f64, u64)]) -> Distribution {
        Distribution {
            count: 10_000,
            p50_us: values[0].1,
            p90_us: 0,
            p99_us: 0,
            p999_us: 0,
            max_us: values[values.len() - 1].1,
            points: values
                .iter()
                .map(|&(quantile, value_us)| Point { quantile, value_us })
                .collect(),
        }
    }

    #[test]
    fn the_percentile_axis_is_hdrhistograms() {
        assert_eq!(percentile_x(0.0, 1000), 1.0);
        assert!((percentile_x(0.99, 1000) - 100.0).abs() < 1e-6);
        // The maximum, and any quantile past one request in the count, is at the count.
        assert_eq!(percentile_x(1.0, 2762), 2762.0);
        assert_eq!(percentile_x(0.9999, 2762), 2762.0);
        assert_eq!(percentile_x(1.0, 0), 1.0);
        assert_eq!(axis_end(2762.0), 10_000.0);
        assert_eq!(axis_end(3.0), 100.0);
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(1.0), "0%");
    }

    #[test]
    fn the_latency_chart_draws_each_request_type_through_its_points() {
        let mut d = Distributions::new();
        d.insert(
            "token".into(),
            dist(&[(0.5, 1000), (0.9, 2000), (0.99, 5000), (1.0, 9000)]),
        );
        d.insert(
            "order".into(),
            dist(&[(0.5, 4000), (0.99, 20000), (1.0, 40000)]),
        );
        d.insert("pay".into(), dist(&[(0.5, 1), (1.0, 2)]));
        let svg = latency("half the peak", &d, &["token", "order", "absent"]).unwrap();
        assert!(svg.starts_with("<svg"));
        let t = texts(&svg);
        for want in ["half the peak", "token", "order", "99.9%", "latency, ms"] {
            assert!(t.iter().any(|x| x == want), "{want} not in {t:?}");
        }
        assert!(!t.iter().any(|x| x == "pay" || x == "absent"), "{t:?}");
        // One curve per request type, in the order asked, through each of its points
        // (the legend's sample line has two).
        let token = polylines(&svg, COLOURS[0]);
        let order = polylines(&svg, COLOURS[1]);
        assert_eq!(token.iter().map(Vec::len).max(), Some(4), "{token:?}");
        assert_eq!(order.iter().map(Vec::len).max(), Some(3), "{order:?}");
        // The order curve goes right and up (SVG's y grows downwards).
        let order = order.iter().find(|l| l.len() == 3).unwrap();
        assert!(
            order.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 > w[1].1),
            "{order:?}"
        );
    }

    #[test]
    fn the_writer_chart_shows_each_bar_with_its_value() {
        let r = WriterRates {
            writer: 38861.0,
            write_alone: 64742.0,
            copy: 59101.0,
            copy_no_fk: 117511.0,
        };
        let svg = writer_vs_copy("writer vs COPY", &r).unwrap();
        let t = texts(&svg);
        for want in [
            "order-writer",
            "COPY into orders",
            "COPY without FK",
            "38861",
            "117511",
        ] {
            assert!(t.iter().any(|x| x == want), "{want} not in {t:?}");
        }
        // Taller bars for more rows/s: the heights of the four filled rectangles (the
        // first rectangle is the background).
        let heights: Vec<f64> = svg
            .split("<rect")
            .skip(2)
            .filter_map(|r| r.split("height=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect();
        assert_eq!(heights.len(), 4, "{heights:?}");
        assert!(heights[3] > heights[1] && heights[1] > heights[2] && heights[2] > heights[0]);
    }

    #[test]
    fn the_scaleout_chart_has_a_panel_per_series_with_both_lines() {
        let pts = |k: f64| {
            (1..=3)
                .map(|m| ScalePoint {
                    masters: m,
                    measured: 50000.0 * k,
                    predicted: 50000.0 * k * m as f64,
                })
                .collect()
        };
        let series = vec![
            ScaleSeries {
                key: "masters_only".into(),
                points: pts(1.0),
            },
            ScaleSeries {
                key: "replica_and_wait".into(),
                points: pts(0.5),
            },
        ];
        let svg = scaleout("scale-out", &series).unwrap();
        let t = texts(&svg);
        let count = |want: &str| t.iter().filter(|x| *x == want).count();
        assert_eq!(count("A. masters only (no replicas, no WAIT)"), 1, "{t:?}");
        assert_eq!(count("B. one replica per master, WAIT 1"), 1, "{t:?}");
        assert_eq!(count("measured (this machine)"), 2);
        assert_eq!(count("predicted (one machine per shard)"), 2);
        // In each panel, measured flat and predicted rising, through the three counts.
        let measured = polylines(&svg, COLOURS[0]);
        let predicted = polylines(&svg, COLOURS[1]);
        let three = |l: &Vec<Vec<(f64, f64)>>| {
            l.iter()
                .filter(|p| p.len() == 3)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(three(&measured).len(), 2, "{measured:?}");
        assert!(three(&measured).iter().all(|p| p[0].1 == p[2].1));
        assert_eq!(three(&predicted).len(), 2, "{predicted:?}");
        assert!(three(&predicted)
            .iter()
            .all(|p| p[0].1 > p[1].1 && p[1].1 > p[2].1));
    }
}
