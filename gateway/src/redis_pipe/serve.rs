//! Serving one connection: the writer packs every queued command into one write, the
//! reader completes the reply slots in order as replies arrive.

use super::connection::Job;
use super::link::{Link, LinkReader, LinkWriter};
use super::reply::Reply;
use super::WaitPolicy;
use crate::metrics::Metrics;
use may::sync::mpsc;
use redis::Value;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stock::StockError;

/// Most commands in one write.
const BATCH: usize = 512;

/// What the reader expects next: a job's replies, or the WAIT closing a write.
enum Pending {
    Job {
        reply: Reply,
        count: usize,
        wait: bool,
    },
    Wait,
}

/// A purchase that reserved a unit (its script answered `OK`).
fn reserved(v: &[Value]) -> bool {
    matches!(v.last(), Some(Value::Array(items))
        if matches!(items.first(), Some(Value::BulkString(b)) if b == b"OK"))
}

/// Run one connection until it breaks (`Err`) or every sender is gone (`Ok`).
pub(super) fn serve(
    link: Link,
    rx: &mpsc::Receiver<Job>,
    timeout: Duration,
    wait: Option<WaitPolicy>,
    metrics: &Arc<Metrics>,
) -> std::io::Result<()> {
    let mut writer = link.writer()?;
    let socket = link.shutdown_handle()?;
    link.set_read_timeout(Some(timeout.max(Duration::from_millis(100))))?;
    let stream_in = link.reader();
    // The writer hands the reader each write's reply slots in one message, in order,
    // before the write (one channel message per write, not per command).
    let (pending_tx, pending_rx) = mpsc::channel::<Vec<Pending>>();
    // The reader tells the writer each time a WAIT is answered: at most one is
    // outstanding per connection (see `write_loop`).
    let (waited_tx, waited_rx) = mpsc::channel::<()>();
    let broken = Arc::new(AtomicBool::new(false));
    // Requests written and not yet answered.
    let outstanding = Arc::new(AtomicUsize::new(0));
    let reader_task = {
        let broken = broken.clone();
        let shutdown = socket.try_clone()?;
        let mut reader = Reader::new(
            pending_rx,
            waited_tx,
            outstanding.clone(),
            wait,
            metrics.clone(),
        );
        may::go!(move || {
            reader.run(stream_in);
            broken.store(true, Ordering::Release);
            let _ = shutdown.shutdown(std::net::Shutdown::Both);
            reader.fail_unanswered();
        })
    };
    let lanes = Lanes {
        pending: &pending_tx,
        waited: &waited_rx,
        outstanding: &outstanding,
        broken: &broken,
    };
    let result = write_loop(&mut writer, rx, &lanes, wait);
    let _ = socket.shutdown(std::net::Shutdown::Both);
    drop(pending_tx);
    let _ = reader_task.join();
    result
}

/// What the writer shares with its reader.
struct Lanes<'a> {
    /// Each write's reply slots, handed over before the write.
    pending: &'a mpsc::Sender<Vec<Pending>>,
    /// One message per `WAIT` answered.
    waited: &'a mpsc::Receiver<()>,
    /// Requests written and not yet answered.
    outstanding: &'a AtomicUsize,
    broken: &'a AtomicBool,
}

impl Lanes<'_> {
    fn reader_stopped(&self) -> std::io::Error {
        std::io::Error::other("reader stopped")
    }

    /// Park until `rx` yields, waking now and then to notice a broken reader.
    fn next<T>(&self, rx: &mpsc::Receiver<T>) -> std::io::Result<Option<T>> {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(v) => return Ok(Some(v)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if self.broken.load(Ordering::Acquire) {
                        return Err(self.reader_stopped());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}

/// The writer: take every queued job (up to [`BATCH`]) into one write, until the socket
/// or the reader breaks (`Err`) or every sender is gone (`Ok`).
///
/// With a WAIT policy at most one `WAIT` is outstanding on the connection: Redis blocks
/// a connection for its WAIT, so a write sent behind it would only sit in Redis's input
/// buffer. The writer holds back instead, and what queued meanwhile goes out in one
/// write behind one `WAIT` when the last one is answered: one WAIT per batch, and the
/// batch grows with the load (a purchase per WAIT only when purchases come one at a
/// time). Commands that need no WAIT are routed to connections that carry none
/// ([`super::connection::Node::slot`]).
fn write_loop(
    writer: &mut LinkWriter,
    rx: &mpsc::Receiver<Job>,
    lanes: &Lanes<'_>,
    wait: Option<WaitPolicy>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut waiting = false;
    loop {
        if waiting {
            if lanes.next(lanes.waited)?.is_none() {
                return Err(lanes.reader_stopped());
            }
            waiting = false;
        }
        let Some(first) = lanes.next(rx)? else {
            return Ok(());
        };
        if lanes.broken.load(Ordering::Acquire) {
            first
                .reply
                .complete(Err(StockError::Redis("connection lost".into())));
            return Err(lanes.reader_stopped());
        }
        buf.clear();
        let batch = gather(first, rx, wait, &mut buf);
        if batch.is_empty() {
            continue;
        }
        waiting = matches!(batch.last(), Some(Pending::Wait));
        let n = batch.len();
        // A reader gone fails the batch's callers (their reply slots are dropped).
        if lanes.pending.send(batch).is_err() {
            return Err(lanes.reader_stopped());
        }
        // Before the write: no reply can come before it.
        lanes.outstanding.fetch_add(n, Ordering::AcqRel);
        writer.write_all(&buf)?;
    }
}

/// One write: `first` and whatever else is queued (at most [`BATCH`] reply slots),
/// packed into `buf`, with one `WAIT` behind the write's purchases; its reply slots in
/// order.
fn gather(
    first: Job,
    rx: &mpsc::Receiver<Job>,
    wait: Option<WaitPolicy>,
    buf: &mut Vec<u8>,
) -> Vec<Pending> {
    let now = Instant::now();
    let mut job = Some(first);
    let mut batch: Vec<Pending> = Vec::new();
    let mut waiting = false;
    while let Some(j) = job.take() {
        if j.deadline <= now || j.reply.abandoned() {
            // Its caller has given up: never run a command nobody will see answered.
            drop(j);
        } else {
            buf.extend_from_slice(&j.packed);
            waiting |= j.wait;
            batch.push(Pending::Job {
                reply: j.reply,
                count: j.count.max(1),
                wait: j.wait,
            });
        }
        if batch.len() < BATCH {
            job = rx.try_recv().ok();
        }
    }
    // One WAIT for every purchase of this write, right behind them.
    if let (true, Some(w)) = (waiting, wait) {
        buf.extend_from_slice(
            &redis::cmd("WAIT")
                .arg(w.replicas)
                .arg(w.timeout_ms)
                .get_packed_command(),
        );
        batch.push(Pending::Wait);
    }
    batch
}

/// The job being answered: its reply slot, how many replies it expects, whether it
/// waits for its write's `WAIT`, and the replies so far.
struct Answering {
    reply: Reply,
    count: usize,
    wait: bool,
    values: Vec<Value>,
}

/// The reader: parses replies and completes the reply slots the writer handed over,
/// in order.
struct Reader {
    parser: redis::Parser,
    pending_rx: mpsc::Receiver<Vec<Pending>>,
    waited_tx: mpsc::Sender<()>,
    outstanding: Arc<AtomicUsize>,
    wait: Option<WaitPolicy>,
    metrics: Arc<Metrics>,
    /// Read timeouts in a row with requests outstanding: two mean a request went
    /// unanswered for at least a whole timeout (one may be a request that was
    /// written just before the timer fired).
    silent: u32,
    current: Option<Answering>,
    /// Purchases answered by Redis that wait for their write's WAIT.
    held: Vec<(Reply, Vec<Value>)>,
    /// Reply slots of the writes so far, not yet answered.
    queued: VecDeque<Pending>,
}

impl Reader {
    fn new(
        pending_rx: mpsc::Receiver<Vec<Pending>>,
        waited_tx: mpsc::Sender<()>,
        outstanding: Arc<AtomicUsize>,
        wait: Option<WaitPolicy>,
        metrics: Arc<Metrics>,
    ) -> Reader {
        Reader {
            parser: redis::Parser::new(),
            pending_rx,
            waited_tx,
            outstanding,
            wait,
            metrics,
            silent: 0,
            current: None,
            held: Vec::new(),
            queued: VecDeque::new(),
        }
    }

    /// Read and answer until the socket fails, a reply is overdue, or the writer is
    /// gone.
    fn run(&mut self, mut stream: LinkReader) {
        while let Some(value) = self.next_value(&mut stream) {
            if !self.answer(value) {
                break;
            }
        }
    }

    /// The next reply; `None` when the socket failed or a reply is overdue.
    fn next_value(&mut self, stream: &mut LinkReader) -> Option<Value> {
        loop {
            match self.parser.parse_value(&mut *stream) {
                Ok(v) => {
                    self.silent = 0;
                    return Some(v);
                }
                Err(e) if e.is_timeout() => {
                    self.silent = if self.outstanding.load(Ordering::Acquire) == 0 {
                        0
                    } else {
                        self.silent + 1
                    };
                    if self.silent < 2 {
                        continue;
                    }
                    tracing::warn!("redis reply overdue; closing the connection so later replies cannot go to the wrong caller");
                    return None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "redis read failed or a reply is overdue; closing the connection");
                    return None;
                }
            }
        }
    }

    /// Give `value` to the reply slot it answers; `false` when there is none (the
    /// writer is gone).
    fn answer(&mut self, value: Value) -> bool {
        if self.current.is_none() {
            if self.queued.is_empty() {
                match self.pending_rx.recv() {
                    Ok(batch) => self.queued.extend(batch),
                    Err(_) => return false,
                }
            }
            match self.queued.pop_front() {
                Some(Pending::Job { reply, count, wait }) => {
                    self.current = Some(Answering {
                        reply,
                        count,
                        wait,
                        values: Vec::with_capacity(count),
                    })
                }
                Some(Pending::Wait) => {
                    self.waited(value);
                    return true;
                }
                None => return false,
            }
        }
        let Some(job) = self.current.as_mut() else {
            return false;
        };
        job.values.push(value);
        if job.values.len() >= job.count {
            let job = self.current.take().expect("current job");
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            if job.wait {
                self.held.push((job.reply, job.values));
            } else {
                job.reply.complete(Ok(job.values));
            }
        }
        true
    }

    /// The write's `WAIT` answered (`value`: replicas reached): answer the purchases
    /// held for it, counting a reservation short of its replicas.
    fn waited(&mut self, value: Value) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        let acked = match value {
            Value::Int(n) => n,
            _ => 0,
        };
        let want = self.wait.map_or(0, |w| w.replicas as i64);
        for (reply, values) in self.held.drain(..) {
            if acked < want && reserved(&values) {
                self.metrics.redis_unreplicated();
            }
            reply.complete(Ok(values));
        }
        // The writer may send its next batch (it parks while a WAIT is outstanding).
        let _ = self.waited_tx.send(());
    }

    /// Fail whatever was written but not answered.
    fn fail_unanswered(&mut self) {
        let lost = || Err(StockError::Redis("connection lost".into()));
        if let Some(job) = self.current.take() {
            job.reply.complete(lost());
        }
        for (reply, _) in self.held.drain(..) {
            reply.complete(lost());
        }
        while let Ok(batch) = self.pending_rx.try_recv() {
            self.queued.extend(batch);
        }
        for p in self.queued.drain(..) {
            if let Pending::Job { reply, .. } = p {
                reply.complete(lost());
            }
        }
    }
}
