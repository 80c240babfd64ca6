//! The timed rush: [`crate::rush::rush`]'s buyers with every request's latency.

use crate::buyer::{Client, LoadError};
use crate::rush::Record;
use hdrhistogram::Histogram;
use std::time::Instant;

/// A rush with every request's latency (µs).
pub struct TimedRush {
    pub record: Record,
    pub all: Histogram<u64>,
    pub token: Histogram<u64>,
    pub order: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// Buyers `1..=buyers` on `clients` threads, as [`crate::rush::rush`] (one in four
/// double-clicks), each request timed.
pub fn timed_rush(
    gateway: &str,
    secret: &str,
    sale: &str,
    buyers: u64,
    clients: u64,
) -> Result<TimedRush, LoadError> {
    let t0 = Instant::now();
    let step = clients.max(1);
    let workers: Vec<_> = (0..step)
        .map(|c| {
            let client = Client::new(gateway, secret);
            let sale = sale.to_string();
            std::thread::spawn(
                move || -> Result<(Record, Histogram<u64>, Histogram<u64>), LoadError> {
                    let (mut rec, mut th, mut oh) = (Record::default(), histogram(), histogram());
                    for user in (c + 1..=buyers).step_by(step as usize) {
                        let t = Instant::now();
                        let tk = client.token(&sale, user)?;
                        th.saturating_record(t.elapsed().as_micros() as u64);
                        *rec.answers
                            .entry(
                                format!("token {} {}", tk.status, tk.code())
                                    .trim_end()
                                    .to_string(),
                            )
                            .or_default() += 1;
                        let Some(token) = tk.str("token") else {
                            continue;
                        };
                        for _ in 0..if user % 4 == 0 { 2 } else { 1 } {
                            let t = Instant::now();
                            let o = client.order(&sale, user, token)?;
                            oh.saturating_record(t.elapsed().as_micros() as u64);
                            *rec.answers
                                .entry(
                                    format!("order {} {}", o.status, o.code())
                                        .trim_end()
                                        .to_string(),
                                )
                                .or_default() += 1;
                            if o.status == 202 {
                                rec.acked.push((
                                    o.str("order_id").unwrap_or_default().to_string(),
                                    user,
                                ));
                                rec.tokens.push(token.to_string());
                            }
                        }
                    }
                    Ok((rec, th, oh))
                },
            )
        })
        .collect();
    let mut out = TimedRush {
        record: Record::default(),
        all: histogram(),
        token: histogram(),
        order: histogram(),
    };
    for w in workers {
        let (rec, th, oh) = w
            .join()
            .map_err(|_| LoadError::Setup("a buyer thread panicked".into()))??;
        out.record.acked.extend(rec.acked);
        out.record.tokens.extend(rec.tokens);
        for (k, v) in rec.answers {
            *out.record.answers.entry(k).or_default() += v;
        }
        let _ = out.token.add(&th);
        let _ = out.order.add(&oh);
    }
    let _ = out.all.add(&out.token);
    let _ = out.all.add(&out.order);
    out.record.took = t0.elapsed();
    Ok(out)
}
