//! The WAL writer: one thread that owns the log, appends every queued
//! request, fsyncs once per group (group commit), moves the batches into the
//! memtables and only then acknowledges them.
//!
//! A failed write or fsync (a full disk, an I/O error, no file handles)
//! refuses that group and abandons the segment, whose tail is now unknown.
//! Requests are then refused at once while a backoff runs; the first group
//! after it goes to a new segment, and once its write and fsync succeed the
//! log is healthy again, with no restart.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StorageError};
use crate::schema::Signal;
use crate::shared::Shared;
use crate::wal::Wal;

/// Stop adding to a group once it holds this many bytes.
const MAX_GROUP_BYTES: usize = 16 << 20;
/// The first wait after a WAL failure; it doubles per failure up to the max.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One request: its batch in one or more parts (one WAL record each),
/// acknowledged together.
pub(crate) struct Append {
    pub signal: Signal,
    pub parts: Vec<Part>,
    pub done: oneshot::Sender<Result<()>>,
}

/// One WAL record: the encoded payload and the batch it decodes to.
pub(crate) struct Part {
    pub payload: Vec<u8>,
    pub batch: RecordBatch,
}

impl Append {
    /// What it reserves of the unflushed share while queued: its batches
    /// and their WAL payloads.
    pub(crate) fn bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.payload.len() + p.batch.get_array_memory_size())
            .sum()
    }

    fn payload_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.payload.len()).sum()
    }
}

pub(crate) enum Command {
    Append(Append),
    /// Delete WAL segments whose records are all flushed through this seq.
    RemoveThrough(u64),
    /// Finish what is queued before this and stop, handing back the log.
    Shutdown,
}

pub(crate) fn spawn(
    wal: Wal,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
) -> std::io::Result<std::thread::JoinHandle<Wal>> {
    std::thread::Builder::new()
        .name("loupe-wal".into())
        .spawn(move || run(wal, rx, shared))
}

/// Why the log refuses writes, and when it tries again.
struct Failure {
    reason: String,
    backoff: Duration,
    retry_at: Instant,
}

fn run(mut wal: Wal, mut rx: mpsc::Receiver<Command>, shared: Arc<Shared>) -> Wal {
    let mut failed: Option<Failure> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut group = Vec::new();
        let mut group_bytes = 0;
        let mut removals = Vec::new();
        let mut shutdown = false;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Append(a) => {
                    group_bytes += a.payload_bytes();
                    group.push(a);
                }
                Command::RemoveThrough(seq) => removals.push(seq),
                Command::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if group_bytes < MAX_GROUP_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !group.is_empty() {
            commit_group(&mut wal, group, &shared, &mut failed);
        }
        for seq in removals {
            if let Err(e) = wal.remove_through(seq) {
                tracing::warn!(error = %e, "could not delete flushed WAL segments; will retry");
            }
        }
        if shutdown {
            break;
        }
    }
    // Anything still queued is refused: its sender learns through the dropped reply.
    rx.close();
    wal
}

/// Refuses `group`, giving back what it reserved.
fn refuse(group: Vec<Append>, reason: &str, shared: &Shared) {
    for a in group {
        shared.reserved_bytes.fetch_sub(a.bytes(), Ordering::AcqRel);
        let _ = a
            .done
            .send(Err(StorageError::WalFailed(reason.to_string())));
    }
}

fn commit_group(wal: &mut Wal, group: Vec<Append>, shared: &Shared, failed: &mut Option<Failure>) {
    if let Some(f) = failed.as_ref() {
        let now = Instant::now();
        if now < f.retry_at {
            let wait = f.retry_at - now;
            refuse(
                group,
                &format!("{} (next try in {} ms)", f.reason, wait.as_millis()),
                shared,
            );
            return;
        }
    }
    let started = Instant::now();
    let written = wal.reopen().and_then(|()| {
        let mut seqs = Vec::new();
        for a in &group {
            for part in &a.parts {
                seqs.push(wal.append(a.signal, &part.payload)?);
            }
        }
        wal.sync().map(|()| seqs)
    });
    shared.metrics.wal_sync.observe(started.elapsed());
    match written {
        Ok(seqs) => {
            if let Some(f) = failed.take() {
                tracing::warn!(was = %f.reason, "WAL writes succeed again; accepting writes");
                shared.metrics.wal_unavailable.set(0);
            }
            let mut replies = Vec::with_capacity(group.len());
            let mut seqs = seqs.into_iter();
            // The batches stay reserved in the memtable until flushed;
            // the payloads are written and go.
            let payloads: usize = group.iter().map(Append::payload_bytes).sum();
            shared.with_state(|state| {
                for a in group {
                    for (part, seq) in a.parts.into_iter().zip(seqs.by_ref()) {
                        state.insert(a.signal, seq, part.batch);
                    }
                    replies.push(a.done);
                }
            });
            shared.reserved_bytes.fetch_sub(payloads, Ordering::AcqRel);
            shared.metrics.wal_groups.inc();
            for done in replies {
                let _ = done.send(Ok(()));
            }
            shared.wake_flusher_if_full();
        }
        Err(e) => {
            // The segment's tail is now unknown: cut it off and refuse
            // writes until a later group succeeds in a fresh segment.
            wal.abandon();
            let backoff = failed
                .as_ref()
                .map_or(FIRST_BACKOFF, |f| (f.backoff * 2).min(MAX_BACKOFF));
            let reason = e.to_string();
            tracing::error!(error = %reason, retry_in_ms = backoff.as_millis() as u64, "WAL write failed; refusing writes until a retry succeeds");
            shared.metrics.wal_errors.inc();
            shared.metrics.wal_unavailable.set(1);
            refuse(group, &reason, shared);
            *failed = Some(Failure {
                reason,
                backoff,
                retry_at: Instant::now() + backoff,
            });
        }
    }
}
