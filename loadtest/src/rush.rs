//! The rush: buyers arrive on `clients` threads, each gets a token and buys; one in
//! four double-clicks. Every answer is tallied and every 202 recorded.

use crate::buyer::{Client, LoadError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default, Debug)]
pub struct Record {
    /// Acknowledged orders: (order id, user).
    pub acked: Vec<(String, u64)>,
    /// The token behind each 202, in the same order.
    pub tokens: Vec<String>,
    /// "token 201", "order 409 token_used", … → count.
    pub answers: BTreeMap<String, u64>,
    /// Traced orders (the 202 carried a `trace_id`): (trace id, order id), the first
    /// few.
    pub traced: Vec<(String, String)>,
    pub took: Duration,
}

impl Record {
    pub fn requests(&self) -> u64 {
        self.answers.values().sum()
    }
}

/// Run buyers `1..=buyers` against `sale`; `progress` is called about twice a second.
pub fn rush(
    gateway: &str,
    secret: &str,
    sale: &str,
    buyers: u64,
    clients: u64,
    progress: impl Fn(u64),
) -> Result<Record, LoadError> {
    let record = Arc::new(Mutex::new(Record::default()));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..clients.max(1))
        .map(|c| {
            let (record, done, sale) = (record.clone(), done.clone(), sale.to_string());
            let client = Client::new(gateway, secret);
            let step = clients.max(1) as usize;
            std::thread::spawn(move || -> Result<(), LoadError> {
                for user in (c + 1..=buyers).step_by(step) {
                    let t = client.token(&sale, user)?;
                    let mut answers = vec![format!("token {} {}", t.status, t.code())];
                    let mut acked = Vec::new();
                    let mut tokens = Vec::new();
                    let mut traced = Vec::new();
                    if let Some(token) = t.str("token") {
                        for _ in 0..if user % 4 == 0 { 2 } else { 1 } {
                            let o = client.order(&sale, user, token)?;
                            answers.push(format!("order {} {}", o.status, o.code()));
                            if o.status == 202 {
                                acked.push((
                                    o.str("order_id").unwrap_or_default().to_string(),
                                    user,
                                ));
                                tokens.push(token.to_string());
                                if let Some(trace) = o.str("trace_id") {
                                    traced.push((
                                        trace.to_string(),
                                        o.str("order_id").unwrap_or_default().to_string(),
                                    ));
                                }
                            }
                        }
                    }
                    let mut r = record.lock().unwrap_or_else(|p| p.into_inner());
                    r.acked.extend(acked);
                    r.tokens.extend(tokens);
                    if r.traced.len() < 16 {
                        r.traced.extend(traced);
                    }
                    for a in answers {
                        *r.answers.entry(a.trim_end().to_string()).or_default() += 1;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    while !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(500));
        progress(done.load(Ordering::Relaxed));
    }
    for w in workers {
        w.join()
            .map_err(|_| LoadError::Setup("a buyer thread panicked".into()))??;
    }
    let mut r = std::mem::take(&mut *record.lock().unwrap_or_else(|p| p.into_inner()));
    r.took = t0.elapsed();
    Ok(r)
}
