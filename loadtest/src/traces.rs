//! An order's journey in the trace collector: the spans of one trace, read back from
//! Jaeger's query API (`/api/traces/{id}`), for the demo to show and check.

use crate::buyer::LoadError;
use std::time::{Duration, Instant};

/// One span of the trace: its service, name, and the index of its parent in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub service: String,
    pub name: String,
    pub parent: Option<usize>,
}

/// The spans an order's journey must hold, in order: the gateway's hand-off, the
/// writer's consumption under it, and the database write under that.
pub const JOURNEY: [(&str, &str); 4] = [
    ("seckill-gateway", "POST /v1/sales/{sale}/orders"),
    ("seckill-gateway", "kafka.produce"),
    ("seckill-order-writer", "order.consume"),
    ("seckill-order-writer", "postgres.write_batch"),
];

/// The trace's spans once it holds the whole [`JOURNEY`] (each of its steps a child of
/// the one before, the first the root), waiting up to `within`; the spans seen so far
/// in the error otherwise.
pub fn journey(jaeger: &str, trace: &str, within: Duration) -> Result<Vec<Hop>, LoadError> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let url = format!("{}/api/traces/{trace}", jaeger.trim_end_matches('/'));
    let end = Instant::now() + within;
    loop {
        let mut r = agent.get(&url).call()?;
        let hops = if r.status() == 200 {
            hops(&r.body_mut().read_json::<serde_json::Value>()?)
        } else {
            vec![]
        };
        if complete(&hops) {
            return Ok(hops);
        }
        if Instant::now() >= end {
            return Err(LoadError::Unexpected {
                status: r.status().as_u16(),
                body: format!("trace {trace} incomplete after {within:?}: {hops:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn hops(doc: &serde_json::Value) -> Vec<Hop> {
    let Some(t) = doc["data"].as_array().and_then(|d| d.first()) else {
        return vec![];
    };
    let spans = t["spans"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = spans
        .iter()
        .map(|s| s["spanID"].as_str().unwrap_or_default())
        .collect();
    spans
        .iter()
        .map(|s| {
            let pid = s["processID"].as_str().unwrap_or_default();
            let parent = s["references"]
                .as_array()
                .and_then(|r| r.first())
                .and_then(|r| r["spanID"].as_str())
                .and_then(|p| ids.iter().position(|i| *i == p));
            Hop {
                service: t["processes"][pid]["serviceName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name: s["operationName"].as_str().unwrap_or_default().to_string(),
                parent,
            }
        })
        .collect()
}

/// Whether `hops` hold the journey, each step under the one before.
pub fn complete(hops: &[Hop]) -> bool {
    let find = |(service, name): (&str, &str)| {
        hops.iter()
            .position(|h| h.service == service && h.name == name)
    };
    let Some(steps) = JOURNEY
        .iter()
        .map(|s| find(*s))
        .collect::<Option<Vec<usize>>>()
    else {
        return false;
    };
    hops[steps[0]].parent.is_none() && steps.windows(2).all(|w| hops[w[1]].parent == Some(w[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(service: &str, name: &str, parent: Option<usize>) -> Hop {
        Hop {
            service: service.into(),
            name: name.into(),
            parent,
        }
    }

    #[test]
    fn a_journey_is_complete_only_when_each_step_hangs_under_the_last() {
        let mut hops = vec![
            hop(JOURNEY[0].0, JOURNEY[0].1, None),
            hop(JOURNEY[1].0, JOURNEY[1].1, Some(0)),
            hop(JOURNEY[2].0, JOURNEY[2].1, Some(1)),
            hop(JOURNEY[3].0, JOURNEY[3].1, Some(2)),
            hop("seckill-gateway", "ticket", Some(0)),
        ];
        assert!(complete(&hops));
        hops[2].parent = Some(0);
        assert!(!complete(&hops), "the writer must hang under the hand-off");
        hops[2].parent = Some(1);
        hops.remove(3);
        assert!(!complete(&hops), "no database write");
        assert!(!complete(&[]));
    }
}
