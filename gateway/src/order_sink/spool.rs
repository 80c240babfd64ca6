//! The durable local spool: one writer thread appending JSON lines with group commit,
//! files of at most `SPOOL_FILE_LINES` lines, the directory lock, and the `.acked`
//! checkpoints a replay leaves beside a file.

use super::{SinkError, SpoolEntry, SpoolLine};
use crate::metrics::Metrics;
use may::sync::mpsc;
use seckill_common::order::OrderMessage;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Lines per spool file before the writer starts a new one, so an outage never grows
/// one file without bound and each file replays in a few steps.
const SPOOL_FILE_LINES: u64 = 50_000;

pub(super) fn acked_path(file: &Path) -> PathBuf {
    sidecar(file, "acked")
}

/// `<file>.<ext>`: a spool file's checkpoint (`acked`) or last good length (`valid`).
pub(super) fn sidecar(file: &Path, ext: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// Lines of a spool file already acknowledged by an interrupted replay (0 if none).
pub(super) fn read_acked(checkpoint: &Path) -> usize {
    std::fs::read_to_string(checkpoint)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `SinkError::SpoolFile` for `what` (open, create, read, remove) on `path`.
fn file_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SinkError {
    let path = path.to_path_buf();
    move |source| SinkError::SpoolFile { what, path, source }
}

/// The orders of a spool file, each with its partition key and trace context.
pub(super) fn read_lines(path: &Path) -> Result<Vec<SpoolEntry>, SinkError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(file_error("open", path))?;
    // A file whose failed append could not be cut back is read only up to its last
    // good length (`<file>.valid`): the lines after it belong to refused orders.
    let valid = std::fs::read_to_string(sidecar(path, "valid"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f.take(valid)).split(b'\n') {
        let line = line.map_err(|e| SinkError::SpoolIo(Arc::new(e)))?;
        // A torn last line (a crash mid-append, never acknowledged) is not an order.
        if let Ok(m) = serde_json::from_slice::<OrderMessage>(&line) {
            out.push(SpoolEntry {
                key: m.key(),
                payload: line,
                traceparent: None,
            });
        } else if let Ok(l) = serde_json::from_slice::<SpoolLine>(&line) {
            out.push(SpoolEntry {
                key: l.order.key(),
                payload: serde_json::to_vec(&l.order).map_err(SinkError::Encode)?,
                traceparent: l.traceparent,
            });
        }
    }
    Ok(out)
}

/// A queued spool line: `PENDING` until the writer takes it (`TAKEN`) or its waiter
/// gives up first (`ABANDONED`, and the writer skips it). Whoever moves it first wins,
/// so a waiter that gives up knows the line will never be written.
const PENDING: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// Why a batch is not certainly in the spool, told to each of its orders.
#[derive(Debug, Clone)]
enum BatchFailed {
    /// The write failed and its lines could not be undone: they may be in the file.
    Unknown,
    /// Not written (the file was cut back to its length before the batch).
    Io(Arc<std::io::Error>),
}

/// Where the spool writer answers an order whose line it took.
type SpoolWaiter = mpsc::Sender<Result<(), BatchFailed>>;

enum SpoolCmd {
    Append(Vec<u8>, Arc<AtomicU8>, SpoolWaiter),
    /// Close the active file; answer with every closed file, oldest first.
    Seal(std::sync::mpsc::Sender<Result<Vec<PathBuf>, SinkError>>),
}

/// The durable local spool: one writer thread, group commit.
pub(super) struct Spool {
    pub(super) dir: PathBuf,
    tx: std::sync::mpsc::Sender<SpoolCmd>,
    pub(super) pending: Arc<AtomicU64>,
    /// Orders the spool may hold before it refuses more (`SpoolFull`: certainly not
    /// stored, so the caller returns the unit and says so).
    max_pending: u64,
    metrics: Arc<Metrics>,
    /// An exclusive lock on the directory, held while this gateway runs: two gateways on
    /// one spool would replay each other's files.
    _lock: std::fs::File,
}

/// Lock `dir` for this process (`flock` on `dir/.lock`), or say who must be stopped.
fn lock_dir(dir: &Path) -> Result<std::fs::File, SinkError> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(file_error("open", &path))?;
    // SAFETY: flock on a descriptor we own; released when the file closes (or we die).
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(SinkError::Spool(format!(
            "spool directory {} is in use by another gateway (set spool_dir to a directory of this instance's own)",
            dir.display()
        )));
    }
    Ok(f)
}

impl Spool {
    pub(super) fn open(
        dir: &Path,
        max_pending: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Spool, SinkError> {
        std::fs::create_dir_all(dir).map_err(file_error("create", dir))?;
        let lock = lock_dir(dir)?;
        let pending = Arc::new(AtomicU64::new(0));
        // Files left by an earlier run are replayed like any other.
        for f in spool_files(dir)? {
            let left = read_lines(&f)?
                .len()
                .saturating_sub(read_acked(&acked_path(&f)));
            pending.fetch_add(left as u64, Ordering::Relaxed);
        }
        let (tx, rx) = std::sync::mpsc::channel::<SpoolCmd>();
        let (d, p) = (dir.to_path_buf(), pending.clone());
        std::thread::Builder::new()
            .name("spool".into())
            .spawn(move || spool_writer(d, rx, p))
            .map_err(|e| SinkError::SpoolIo(Arc::new(e)))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            tx,
            pending,
            max_pending: max_pending.max(1),
            metrics,
            _lock: lock,
        })
    }

    /// Append one line and wait for its fsync. `Err` only when the line certainly is not
    /// (and will not be) in the spool.
    pub(super) fn append(&self, line: Vec<u8>) -> Result<(), SinkError> {
        let pending = self.pending.load(Ordering::Relaxed);
        if pending >= self.max_pending {
            self.metrics.spool_full();
            return Err(SinkError::SpoolFull(pending));
        }
        let (tx, rx) = mpsc::channel();
        let state = Arc::new(AtomicU8::new(PENDING));
        self.tx
            .send(SpoolCmd::Append(line, state.clone(), tx))
            .map_err(|_| SinkError::Spool("spool writer stopped".into()))?;
        let result = match rx.recv_timeout(SPOOL_WAIT) {
            Ok(r) => r,
            Err(_) => {
                if state
                    .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Err(SinkError::Spool(format!(
                        "the spool writer did not take the order within {SPOOL_WAIT:?}"
                    )));
                }
                // Taken: it is being written; its fsync decides. Only a disk that hangs
                // for a minute more leaves the outcome unknown (the reservation then
                // stays for the writer's sweep; no refusal is sent for an order that may
                // yet land).
                rx.recv_timeout(Duration::from_secs(60))
                    .map_err(|_| SinkError::Timeout)?
            }
        };
        match result {
            Ok(()) => {
                self.metrics.spooled();
                Ok(())
            }
            Err(BatchFailed::Unknown) => Err(SinkError::Timeout),
            Err(BatchFailed::Io(e)) => Err(SinkError::SpoolIo(e)),
        }
    }

    pub(super) fn seal(&self) -> Result<Vec<PathBuf>, SinkError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.tx
            .send(SpoolCmd::Seal(tx))
            .map_err(|_| SinkError::Spool("spool writer did not answer".into()))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| SinkError::Spool("spool writer did not answer".into()))?
    }
}

/// How long an order waits for the spool writer to take it.
const SPOOL_WAIT: Duration = Duration::from_secs(5);

pub(super) fn spool_files(dir: &Path) -> Result<Vec<PathBuf>, SinkError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(file_error("read", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    // Names are `spool-<ms>-<n>.jsonl`, zero-padded: name order is age order.
    files.sort();
    Ok(files)
}

fn spool_writer(dir: PathBuf, rx: std::sync::mpsc::Receiver<SpoolCmd>, pending: Arc<AtomicU64>) {
    let mut active: Option<(std::fs::File, PathBuf, u64)> = None;
    let mut n = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut seals = Vec::new();
        let mut cmd = Some(first);
        while let Some(c) = cmd.take() {
            match c {
                // A line whose waiter already gave up is not written.
                SpoolCmd::Append(line, state, w) => {
                    if state
                        .compare_exchange(PENDING, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        batch.push((line, w))
                    }
                }
                SpoolCmd::Seal(s) => seals.push(s),
            }
            if batch.len() < 4096 {
                cmd = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let result = append_batch(&dir, &mut active, &mut n, &batch);
            if result.is_ok() {
                pending.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            let answer = result.map_err(|e| {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    BatchFailed::Unknown
                } else {
                    BatchFailed::Io(Arc::new(e))
                }
            });
            for (_, w) in batch {
                let _ = w.send(answer.clone());
            }
        }
        for s in seals {
            active = None;
            let _ = s.send(spool_files(&dir));
        }
    }
}

/// Write and fsync `batch` to the active file (a new one when none is open or it is
/// full). On failure the file is cut back to its length before the batch, so no line
/// of a refused order can be replayed later; if that fails, its good length is written
/// beside it (`<file>.valid`, read by `read_lines`); if even that fails, the batch's
/// outcome is unknown (an error of kind `TimedOut`).
fn append_batch(
    dir: &Path,
    active: &mut Option<(std::fs::File, PathBuf, u64)>,
    n: &mut u64,
    batch: &[(Vec<u8>, SpoolWaiter)],
) -> std::io::Result<()> {
    if active
        .as_ref()
        .is_some_and(|(_, _, lines)| *lines >= SPOOL_FILE_LINES)
    {
        *active = None;
    }
    if active.is_none() {
        let ms = seckill_common::now_ms();
        *n += 1;
        let path = dir.join(format!("spool-{ms:015}-{n:06}.jsonl"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        *active = Some((f, path, 0));
    }
    let (f, path, lines) = active
        .as_mut()
        .ok_or_else(|| std::io::Error::other("no spool file"))?;
    let before = f.metadata()?.len();
    let mut buf = Vec::with_capacity(batch.iter().map(|(l, _)| l.len() + 1).sum());
    for (l, _) in batch {
        buf.extend_from_slice(l);
        buf.push(b'\n');
    }
    let written = f.write_all(&buf).and_then(|_| f.sync_data());
    match written {
        Ok(()) => {
            *lines += batch.len() as u64;
            Ok(())
        }
        Err(e) => {
            let undone = f.set_len(before).and_then(|_| f.sync_data());
            if undone.is_err() {
                // Keep every acknowledged line: mark where they end instead. If even
                // that fails, the outcome of this batch is unknown (not "refused").
                let marked = std::fs::write(sidecar(path, "valid"), before.to_string())
                    .and_then(|_| std::fs::File::open(sidecar(path, "valid"))?.sync_all());
                if let Err(m) = marked {
                    tracing::error!(error = %e, mark = %m, file = %path.display(), "spool write failed and could be neither undone nor marked");
                    *active = None;
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "spool state unknown",
                    ));
                }
            }
            *active = None;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spool-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn line(id: u32) -> Vec<u8> {
        format!(r#"{{"event":"reserved","order_id":"s-{id}","sale":"s","user":{id},"units":1,"per_user_limit":1,"at_ms":1}}"#).into_bytes()
    }

    #[test]
    fn a_full_spool_refuses_an_order_at_once() {
        let dir = scratch("full");
        let (tx, _rx) = std::sync::mpsc::channel();
        let spool = Spool {
            dir: dir.clone(),
            tx,
            pending: Arc::new(AtomicU64::new(3)),
            max_pending: 3,
            metrics: Arc::new(Metrics::default()),
            _lock: lock_dir(&dir).unwrap(),
        };
        let r = spool.append(line(1));
        assert!(matches!(r, Err(SinkError::SpoolFull(3))), "{r:?}");
    }

    #[test]
    fn a_line_whose_waiter_gave_up_is_never_written() {
        let dir = scratch("abandon");
        let (tx, rx) = std::sync::mpsc::channel();
        let spool = Spool {
            dir: dir.clone(),
            tx,
            pending: Arc::new(AtomicU64::new(0)),
            max_pending: 1_000,
            metrics: Arc::new(Metrics::default()),
            _lock: lock_dir(&dir).unwrap(),
        };
        // No writer runs yet: the waiter gives up, and says the line is not stored.
        let r = spool.append(line(1));
        assert!(matches!(r, Err(SinkError::Spool(_))), "{r:?}");
        // The writer starts late and must skip the abandoned line.
        let p = spool.pending.clone();
        let d = dir.clone();
        std::thread::spawn(move || spool_writer(d, rx, p));
        spool.append(line(2)).unwrap();
        let files = spool.seal().unwrap();
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert!(!text.contains("\"s-1\""), "{text}");
        assert!(text.contains("\"s-2\""), "{text}");
        assert_eq!(spool.pending.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_spool_directory_is_held_by_one_gateway() {
        let dir = scratch("lock");
        let first = lock_dir(&dir).unwrap();
        assert!(lock_dir(&dir).is_err(), "a second holder is refused");
        drop(first);
        assert!(lock_dir(&dir).is_ok(), "free again once the first is gone");
    }

    #[test]
    fn spool_files_are_bounded_and_a_replay_checkpoint_is_read_back() {
        let dir = scratch("rotate");
        let mut active = None;
        let mut n = 0;
        let (w, _r) = mpsc::channel();
        let batch: Vec<(Vec<u8>, SpoolWaiter)> = (0..1000).map(|i| (line(i), w.clone())).collect();
        for _ in 0..(SPOOL_FILE_LINES / 1000 + 1) {
            append_batch(&dir, &mut active, &mut n, &batch).unwrap();
        }
        let files = spool_files(&dir).unwrap();
        assert_eq!(
            files.len(),
            2,
            "a full file is closed and a new one started"
        );
        assert_eq!(
            read_lines(&files[0]).unwrap().len() as u64,
            SPOOL_FILE_LINES
        );
        std::fs::write(acked_path(&files[0]), "12345").unwrap();
        assert_eq!(read_acked(&acked_path(&files[0])), 12345);
        assert_eq!(read_acked(&acked_path(&files[1])), 0);
    }

    /// A traced order's spool line carries its `traceparent` beside the order; the
    /// replay gets the header back and sends the order's own JSON, which the writer
    /// (refusing unknown fields) takes; plain lines read as they always did.
    #[test]
    fn a_traced_spool_line_replays_with_its_header_and_the_plain_order() {
        let dir = scratch("traced");
        let order: OrderMessage = serde_json::from_slice(&line(7)).unwrap();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let traced = serde_json::to_vec(&SpoolLine {
            traceparent: Some(tp.into()),
            order: order.clone(),
        })
        .unwrap();
        let file = dir.join("spool-1.jsonl");
        let mut text = line(6);
        text.push(b'\n');
        text.extend_from_slice(&traced);
        text.push(b'\n');
        std::fs::write(&file, text).unwrap();
        let entries = read_lines(&file).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[0].traceparent.as_deref(), &entries[0].payload),
            (None, &line(6))
        );
        assert_eq!(entries[1].traceparent.as_deref(), Some(tp));
        assert_eq!(entries[1].key, order.key());
        let sent: OrderMessage = serde_json::from_slice(&entries[1].payload).unwrap();
        assert_eq!(sent, order);
        assert!(!String::from_utf8_lossy(&entries[1].payload).contains("traceparent"));
    }
}
