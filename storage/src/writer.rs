//! The WAL writer: one thread that owns the log, appends every queued
//! request, fsyncs once per group (group commit), moves the batches into the
//! memtables and only then acknowledges them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StorageError};
use crate::schema::Signal;
use crate::shared::Shared;
use crate::wal::Wal;

/// Stop adding to a group once it holds this many bytes.
const MAX_GROUP_BYTES: usize = 16 << 20;

pub(crate) struct Append {
    pub signal: Signal,
    pub payload: Vec<u8>,
    pub batch: RecordBatch,
    pub done: oneshot::Sender<Result<()>>,
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

fn run(mut wal: Wal, mut rx: mpsc::Receiver<Command>, shared: Arc<Shared>) -> Wal {
    let mut failed: Option<String> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut group = Vec::new();
        let mut group_bytes = 0;
        let mut removals = Vec::new();
        let mut shutdown = false;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Append(a) => {
                    group_bytes += a.payload.len();
                    shared
                        .queued_bytes
                        .fetch_sub(a.payload.len(), Ordering::Relaxed);
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

fn commit_group(wal: &mut Wal, group: Vec<Append>, shared: &Shared, failed: &mut Option<String>) {
    if let Some(reason) = failed {
        for a in group {
            let _ = a.done.send(Err(StorageError::WalFailed(reason.clone())));
        }
        return;
    }
    let started = Instant::now();
    let written = group
        .iter()
        .map(|a| wal.append(a.signal, &a.payload))
        .collect::<Result<Vec<u64>>>()
        .and_then(|seqs| wal.sync().map(|()| seqs));
    shared.metrics.wal_sync.observe(started.elapsed());
    match written {
        Ok(seqs) => {
            let mut replies = Vec::with_capacity(group.len());
            shared.with_state(|state| {
                for (a, seq) in group.into_iter().zip(seqs) {
                    state.insert(a.signal, seq, a.batch);
                    replies.push(a.done);
                }
            });
            shared.metrics.wal_groups.inc();
            for done in replies {
                let _ = done.send(Ok(()));
            }
            shared.wake_flusher_if_full();
        }
        Err(e) => {
            // The log's tail is now unknown: refuse writes rather than risk
            // acknowledging data behind a hole. A restart truncates the tail.
            tracing::error!(error = %e, "WAL write failed; refusing further writes");
            let reason = e.to_string();
            *failed = Some(reason.clone());
            for a in group {
                let _ = a.done.send(Err(StorageError::WalFailed(reason.clone())));
            }
        }
    }
}
