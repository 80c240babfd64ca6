//! The writer's Prometheus metrics, served on `metrics_listen` by a tiny HTTP loop.

use seckill_common::observability::write_metric;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    lag: AtomicI64,
    assigned: AtomicI64,
    oversold: AtomicI64,
    held: AtomicI64,
    swept: AtomicU64,
    batches: AtomicU64,
    batch_messages: AtomicU64,
    batch_max: AtomicU64,
    rows_written: AtomicU64,
    write_us: AtomicU64,
    db_errors: AtomicU64,
    dead_letters: AtomicU64,
    collisions_settled: AtomicU64,
    cancelled: AtomicU64,
    paid_by_scan: AtomicU64,
    unsettled: AtomicU64,
    reconciles: AtomicU64,
    reconciled_orders: AtomicU64,
    reconcile_conflicts: AtomicU64,
    reconcile_ms: AtomicU64,
    late_put_back: AtomicU64,
    /// When the fetch loop last polled (ms since the epoch; 0 never).
    polled_ms: AtomicI64,
    /// 1 while the database answers (set on a connection or a written batch, cleared on
    /// a database error).
    db_up: AtomicI64,
    /// The writer's spans (its consumption and writes of traced orders, the canceller's
    /// scans and the reconciles); its counts are rendered here too.
    pub tracer: seckill_common::telemetry::Tracer,
}

impl Metrics {
    pub fn with_tracer(tracer: seckill_common::telemetry::Tracer) -> Metrics {
        Metrics {
            tracer,
            ..Metrics::default()
        }
    }
    pub fn set_lag(&self, lag: i64) {
        self.lag.store(lag, Ordering::Relaxed);
    }
    pub fn set_assigned(&self, partitions: i64) {
        self.assigned.store(partitions, Ordering::Relaxed);
    }
    /// The fetch loop polled the topic (it does at least every `batch_wait_ms`).
    pub fn polled(&self) {
        self.polled_ms
            .store(seckill_common::now_ms(), Ordering::Relaxed);
    }
    /// The database answered (a connection made or a batch committed).
    pub fn db_ok(&self) {
        self.db_up.store(1, Ordering::Relaxed);
    }

    /// `/readyz`: ready while the fetch loop polls (within `stale_ms`) and the database
    /// answers; `consuming` says whether the group gave this writer partitions (a writer
    /// beyond the partition count is ready and idle, a standby).
    pub fn readiness(&self, stale_ms: i64) -> (bool, String) {
        let polled = self.polled_ms.load(Ordering::Relaxed);
        let polling = polled > 0 && seckill_common::now_ms() - polled <= stale_ms;
        let db = self.db_up.load(Ordering::Relaxed) == 1;
        let assigned = self.assigned.load(Ordering::Relaxed);
        let ready = polling && db;
        let body = format!(
            "{{\"ready\":{ready},\"consuming\":{},\"assigned_partitions\":{assigned},\"polling\":{polling},\"database\":{db}}}\n",
            assigned > 0
        );
        (ready, body)
    }
    pub fn swept(&self, released: u64) {
        self.swept.fetch_add(released, Ordering::Relaxed);
    }
    /// Whether the canceller holds settlements (a Redis master untrusted or unreadable).
    pub fn set_held(&self, held: bool) {
        self.held.store(held as i64, Ordering::Relaxed);
    }
    pub fn set_oversold(&self, sales: i64) {
        self.oversold.store(sales, Ordering::Relaxed);
    }
    pub fn batch(&self, messages: usize, rows: u64, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_messages
            .fetch_add(messages as u64, Ordering::Relaxed);
        self.batch_max.fetch_max(messages as u64, Ordering::Relaxed);
        self.rows_written.fetch_add(rows, Ordering::Relaxed);
        self.db_up.store(1, Ordering::Relaxed);
        self.write_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
    /// A database error: counted, and the database is down for `/readyz` until it
    /// answers again.
    pub fn db_error(&self) {
        self.db_up.store(0, Ordering::Relaxed);
        self.db_errors.fetch_add(1, Ordering::Relaxed);
    }
    /// The database did not answer the canceller (which asks it every `cancel_scan_ms`,
    /// so an idle writer notices too): down for `/readyz`, not counted as a write error.
    pub fn db_down(&self) {
        self.db_up.store(0, Ordering::Relaxed);
    }
    /// A Redis error while writing (settling collisions, putting back late orders):
    /// counted with the store's errors, the database's state untouched.
    pub fn store_error(&self) {
        self.db_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dead_letter(&self) {
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
    }
    /// Orders released in Redis that collided with a buyer's live order, written cancelled.
    pub fn collisions_settled(&self, n: u64) {
        self.collisions_settled.fetch_add(n, Ordering::Relaxed);
    }
    /// Orders that reached the writer after a reconcile of their sale, put back into
    /// Redis (`late`); their conflicts count as the reconcile's.
    pub fn late_put_back(&self, applied: u64, conflicts: u64) {
        self.late_put_back.fetch_add(applied, Ordering::Relaxed);
        self.reconcile_conflicts
            .fetch_add(conflicts, Ordering::Relaxed);
    }
    pub fn expired(&self, e: &crate::db::Expired) {
        self.cancelled.fetch_add(e.cancelled, Ordering::Relaxed);
        self.paid_by_scan.fetch_add(e.paid, Ordering::Relaxed);
        self.unsettled.fetch_add(e.unsettled, Ordering::Relaxed);
    }

    /// One reconcile of the store with PostgreSQL and the topic: orders put back into
    /// Redis, lost orders whose unit had been sold again, how long it took.
    pub fn reconciled(&self, orders: u64, conflicts: u64, took: Duration) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        self.reconciled_orders.fetch_add(orders, Ordering::Relaxed);
        self.reconcile_conflicts
            .fetch_add(conflicts, Ordering::Relaxed);
        self.reconcile_ms
            .store(took.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_state(&mut out);
        self.render_writes(&mut out);
        self.render_window(&mut out);
        self.render_reconciles(&mut out);
        self.tracer.write_metrics(&mut out);
        seckill_common::observability::write_build_info(&mut out, "order-writer");
        seckill_common::observability::write_process_metrics(&mut out);
        out
    }

    /// The writer's state: consumer lag, partitions, settlements held, oversold sales.
    fn render_state(&self, out: &mut String) {
        write_metric(
            out,
            "seckill_writer_consumer_lag",
            "gauge",
            "Messages of the order topic not yet written, over assigned partitions.",
            self.lag.load(Ordering::Relaxed),
        );
        write_metric(
            out,
            "seckill_writer_assigned_partitions",
            "gauge",
            "Partitions of the order topic assigned to this writer by the consumer group.",
            self.assigned.load(Ordering::Relaxed),
        );
        write_metric(
            out,
            "seckill_writer_settlements_held",
            "gauge",
            "1 while the payment window and the reservation sweep settle nothing: a Redis master is not trusted yet, or the masters cannot be read.",
            self.held.load(Ordering::Relaxed),
        );
        write_metric(
            out,
            "seckill_writer_oversold_sales",
            "gauge",
            "Sales with more live orders in PostgreSQL than their initial stock (must be 0; checked every 30 s).",
            self.oversold.load(Ordering::Relaxed),
        );
    }

    /// The batch writes: batches, their sizes, rows, time, failures, dead letters, collisions.
    fn render_writes(&self, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        write_metric(
            out,
            "seckill_writer_batches_total",
            "counter",
            "Batches written.",
            get(&self.batches),
        );
        write_metric(
            out,
            "seckill_writer_batch_messages_total",
            "counter",
            "Messages in written batches (divide by batches for the mean size).",
            get(&self.batch_messages),
        );
        write_metric(
            out,
            "seckill_writer_batch_max_messages",
            "gauge",
            "Largest batch so far.",
            get(&self.batch_max),
        );
        write_metric(
            out,
            "seckill_writer_rows_written_total",
            "counter",
            "Order rows inserted (redeliveries insert nothing).",
            get(&self.rows_written),
        );
        write_metric(
            out,
            "seckill_writer_write_seconds_total",
            "counter",
            "Time spent writing batches, including retries.",
            get(&self.write_us) as f64 / 1e6,
        );
        write_metric(
            out,
            "seckill_writer_db_errors_total",
            "counter",
            "Database failures (each retried).",
            get(&self.db_errors),
        );
        write_metric(
            out,
            "seckill_writer_dead_letters_total",
            "counter",
            "Messages sent to the dead-letter topic.",
            get(&self.dead_letters),
        );
        write_metric(
            out,
            "seckill_writer_collisions_settled_total",
            "counter",
            "Orders Redis had released that collided with a buyer's live order, written cancelled instead of dead-lettered.",
            get(&self.collisions_settled),
        );
    }

    /// The payment window: reservations swept, orders cancelled, paid, set aside.
    fn render_window(&self, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        write_metric(
            out,
            "seckill_writer_reservations_swept_total",
            "counter",
            "Reservations released by the Redis sweep after the payment window (orders without a row included).",
            get(&self.swept),
        );
        write_metric(
            out,
            "seckill_writer_cancelled_total",
            "counter",
            "Unpaid orders cancelled after the payment window, stock returned.",
            get(&self.cancelled),
        );
        write_metric(
            out,
            "seckill_writer_paid_by_scan_total",
            "counter",
            "Orders the payment-window scan found paid in Redis.",
            get(&self.paid_by_scan),
        );
        write_metric(
            out,
            "seckill_writer_unsettled_total",
            "counter",
            "Expired orders Redis did not know, set aside for reconciliation.",
            get(&self.unsettled),
        );
    }

    /// The reconciles after a Redis process lost orders.
    fn render_reconciles(&self, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        write_metric(
            out,
            "seckill_writer_reconciles_total",
            "counter",
            "Reconciles run because a Redis master was a process the store did not trust yet (restarted or promoted).",
            get(&self.reconciles),
        );
        write_metric(
            out,
            "seckill_writer_reconciled_orders_total",
            "counter",
            "Orders (or their settlement) a Redis process had lost, put back from PostgreSQL and the topic.",
            get(&self.reconciled_orders),
        );
        write_metric(
            out,
            "seckill_writer_reconcile_conflicts_total",
            "counter",
            "Lost orders whose unit had been sold again before the reconcile (an oversell; must be 0).",
            get(&self.reconcile_conflicts),
        );
        write_metric(
            out,
            "seckill_writer_late_orders_put_back_total",
            "counter",
            "Orders accepted before a reconcile that reached the writer after it (a spool replayed late) and that Redis lacked, put back.",
            get(&self.late_put_back),
        );
        write_metric(
            out,
            "seckill_writer_reconcile_last_seconds",
            "gauge",
            "How long the last reconcile took.",
            get(&self.reconcile_ms) as f64 / 1e3,
        );
    }
}

/// Serve `GET /metrics`, `/healthz` and `/readyz` on `addr` from a background thread;
/// `/readyz` counts a fetch loop silent for `stale_ms` as not ready.
pub fn serve(addr: &str, metrics: Arc<Metrics>, stale_ms: i64) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
            let mut stream = stream;
            // The request line may come in pieces: read up to the end of the head, at
            // most 2 KiB and 2 s for all of it (one listener thread: a slow client must
            // not hold it).
            let mut buf = [0u8; 2048];
            let mut n = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                    break;
                }
                match stream.read(&mut buf[n..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics") {
                ("200 OK", metrics.render())
            } else if head.starts_with("GET /healthz") {
                ("200 OK", "ok\n".to_string())
            } else if head.starts_with("GET /readyz") {
                match metrics.readiness(stale_ms) {
                    (true, body) => ("200 OK", body),
                    (false, body) => ("503 Service Unavailable", body),
                }
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    })?;
    Ok(())
}
