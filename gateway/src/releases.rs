//! Releases that did not happen: the unit of an order that was never acknowledged (its
//! hand-off certainly failed, or the Redis topology moved during its purchase) whose
//! release failed too — typically a master killed under the purchase. Without a retry
//! the unit stays held by nobody until the order-writer's reservation sweep (payment
//! window + grace, ~16 min at the defaults), stock a sold-out sale cannot sell. A
//! background thread retries each release every second while Redis is unreachable, for
//! at most `GIVE_UP`; the release is `Stock::release_unacknowledged`, which Redis refuses
//! for an order a retry of its token was answered with meanwhile (it may stand), and an
//! order Redis does not know (lost with a failover) needs no release. Bounded: at most
//! `MAX_PENDING` waiting; past that the sweep is left to return the unit (counted).

use crate::metrics::Metrics;
use crate::redis_pipe::RedisPipe;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stock::{Stock, StockError};

/// Releases waiting at once.
pub const MAX_PENDING: usize = 100_000;
/// How long a release is retried before it is left to the writer's reservation sweep.
pub const GIVE_UP: Duration = Duration::from_secs(600);
/// The retry cadence.
const EVERY: Duration = Duration::from_secs(1);
/// Faults in a row after which a round stops trying.
const FAULTS_PER_ROUND: usize = 3;

/// A release waiting: order id, token, reservation time (ms), queued at.
type Pending = (String, String, i64, Instant);

#[derive(Default)]
pub struct PendingReleases {
    /// (order id, its token, its reservation time, since when).
    q: Mutex<VecDeque<Pending>>,
    /// Not queued (full) or given up: left to the reservation sweep.
    pub left_to_sweep: AtomicU64,
    /// Released by a retry.
    pub released: AtomicU64,
}

/// What one retry of a release ended in.
#[derive(Debug, PartialEq, Eq)]
pub enum Retried {
    /// Done: released, or nothing to release (already settled, unknown, replayed).
    Done,
    /// Redis did not answer: try again later.
    Again,
}

/// How a release attempt's outcome is handled.
pub fn judge(outcome: Result<u64, StockError>) -> Retried {
    match outcome {
        Ok(_) => Retried::Done,
        Err(e) if e.is_fault() => Retried::Again,
        // Already released or paid, unknown to Redis, or a retry may have acknowledged it.
        Err(_) => Retried::Done,
    }
}

impl PendingReleases {
    /// Queue the release of `order_id` (bought with `token`, reserved at
    /// `reserved_at_ms`) for a retry; false (counted) when full.
    pub fn push(&self, order_id: &str, token: &str, reserved_at_ms: i64) -> bool {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_PENDING {
            self.left_to_sweep.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        q.push_back((
            order_id.to_string(),
            token.to_string(),
            reserved_at_ms,
            Instant::now(),
        ));
        true
    }

    pub fn len(&self) -> usize {
        self.q.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One round: try every waiting release with `release`; keep those to try again
    /// (unless older than `GIVE_UP`, which are left to the sweep), behind the others. A
    /// round stops trying after `FAULTS_PER_ROUND` faults in a row (Redis is down; one
    /// sick master does not hold back the releases of the others). Returns those done.
    pub fn round(
        &self,
        mut release: impl FnMut(&str, &str, i64) -> Result<u64, StockError>,
    ) -> usize {
        let now = Instant::now();
        let batch: Vec<Pending> = {
            let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
            q.drain(..).collect()
        };
        let mut again = Vec::new();
        let (mut done, mut faults) = (0, 0);
        for (id, token, at, since) in batch {
            let verdict = if faults >= FAULTS_PER_ROUND {
                Retried::Again
            } else {
                let outcome = release(&id, &token, at);
                if outcome.is_ok() {
                    self.released.fetch_add(1, Ordering::Relaxed);
                }
                judge(outcome)
            };
            match verdict {
                Retried::Done => {
                    done += 1;
                    faults = 0;
                }
                Retried::Again if now.duration_since(since) >= GIVE_UP => {
                    tracing::warn!(order = %id, "release still failing after 10 minutes; the reservation sweep returns this unit");
                    self.left_to_sweep.fetch_add(1, Ordering::Relaxed);
                }
                Retried::Again => {
                    faults += 1;
                    again.push((id, token, at, since));
                }
            }
        }
        if !again.is_empty() {
            self.q
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(again);
        }
        done
    }
}

/// The retry thread: every second, the waiting releases through the pipe.
pub fn run(pending: Arc<PendingReleases>, pipe: RedisPipe, metrics: Arc<Metrics>) -> impl FnOnce() {
    move || loop {
        std::thread::sleep(EVERY);
        if pending.is_empty() {
            continue;
        }
        let mut stock = Stock::new(pipe.clone());
        let before = pending.released.load(Ordering::Relaxed);
        let done = pending.round(|id, token, at| stock.release_unacknowledged(id, token, at));
        if done > 0 {
            tracing::info!(
                done,
                left = pending.len(),
                "retried releases of unacknowledged orders"
            );
            metrics.released_on_retry(pending.released.load(Ordering::Relaxed) - before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_retried_until_redis_answers_and_refusals_end_them() {
        let p = PendingReleases::default();
        for id in ["s-1", "s-2", "s-3"] {
            assert!(p.push(id, "t", 1));
        }
        // Redis down: nothing done, everything kept, in order.
        assert_eq!(p.round(|_, _, _| Err(StockError::Timeout)), 0);
        assert_eq!(p.len(), 3);
        // Redis back: a release, one already settled, one a retry may have acknowledged.
        let mut seen = Vec::new();
        let done = p.round(|id, _, _| {
            seen.push(id.to_string());
            match id {
                "s-1" => Ok(7),
                "s-2" => Err(StockError::AlreadyReleased),
                _ => Err(StockError::Replayed),
            }
        });
        assert_eq!((done, p.len()), (3, 0));
        assert_eq!(seen, ["s-1", "s-2", "s-3"]);
        assert_eq!(p.released.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_queue_is_bounded_and_what_does_not_fit_is_counted() {
        let p = PendingReleases::default();
        for i in 0..MAX_PENDING {
            assert!(p.push(&format!("s-{i}"), "t", 1));
        }
        assert!(!p.push("s-x", "t", 1));
        assert_eq!(p.left_to_sweep.load(Ordering::Relaxed), 1);
    }
}
