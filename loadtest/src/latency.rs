//! A request type's latency distribution in a machine-readable form: what a run writes to
//! `latency.json` beside `latency.md`, and what `seckill-plot` draws its percentile
//! curves from.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// HdrHistogram's usual resolution for a percentile distribution: five steps each time
/// the distance to 100% halves (50%, 75%, 87.5% … each cut in five).
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// One point of the percentile distribution: `quantile` (0 to 1) of the requests took at
/// most `value_us`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub quantile: f64,
    pub value_us: u64,
}

/// One request type's distribution (µs) and its usual summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Rising quantiles, the last one 1.0 (the maximum).
    pub points: Vec<Point>,
}

impl Distribution {
    pub fn of(h: &Histogram<u64>) -> Distribution {
        let points = if h.is_empty() {
            Vec::new()
        } else {
            h.iter_quantiles(TICKS_PER_HALF_DISTANCE)
                .map(|v| Point {
                    quantile: v.quantile_iterated_to(),
                    value_us: h.highest_equivalent(v.value_iterated_to()),
                })
                .collect()
        };
        Distribution {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            points,
        }
    }
}

/// `latency.json`: request type → its distribution.
pub type Distributions = BTreeMap<String, Distribution>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_distribution_rises_to_the_maximum_and_agrees_with_its_percentiles() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let d = Distribution::of(&h);
        assert_eq!(d.count, 10_000);
        assert_eq!(d.max_us, h.max());
        assert!(d.points.len() > 20, "{}", d.points.len());
        assert!(d
            .points
            .windows(2)
            .all(|w| w[0].quantile <= w[1].quantile && w[0].value_us <= w[1].value_us));
        let last = d.points.last().unwrap();
        assert_eq!((last.quantile, last.value_us), (1.0, d.max_us));
        let at_p50 = d.points.iter().find(|p| p.quantile >= 0.5).unwrap();
        assert!(
            at_p50.value_us.abs_diff(d.p50_us) <= 10,
            "{at_p50:?} vs {}",
            d.p50_us
        );
    }

    #[test]
    fn an_empty_histogram_has_no_points() {
        let h = Histogram::<u64>::new(3).unwrap();
        let d = Distribution::of(&h);
        assert_eq!((d.count, d.points.len()), (0, 0));
    }
}
