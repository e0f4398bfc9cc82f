//! How `Storage` moves its memtables into Parquet: a flush writes a
//! signal's unflushed batches as split files and commits them to the
//! catalog, then lets the WAL drop what they hold; the flusher task runs
//! flushes on size, age and memory pressure, backs off after failures and,
//! after [`QUARANTINE_AFTER_FAILURES`] of them, sets aside the batches that
//! cannot be written.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;

use super::Storage;
use crate::catalog::SplitMeta;
use crate::error::{Result, StorageError};
use crate::schema::Signal;
use crate::writer::Command;
use crate::{ipc, split_writer};

/// Consecutive failed flushes of a signal after which each batch is tried
/// alone and those that cannot be written are quarantined.
pub(super) const QUARANTINE_AFTER_FAILURES: u32 = 3;
const FLUSH_FIRST_BACKOFF: Duration = Duration::from_millis(500);
const FLUSH_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A signal's failed flushes in a row and when to try again.
#[derive(Default)]
struct FlushRetry {
    failures: u32,
    next: Option<Instant>,
}

impl FlushRetry {
    fn due(&self) -> bool {
        self.next.is_none_or(|t| Instant::now() >= t)
    }

    /// Records a failure; returns the wait before the next try.
    fn failed(&mut self) -> Duration {
        self.failures += 1;
        let wait = FLUSH_FIRST_BACKOFF
            .saturating_mul(1 << self.failures.min(8).saturating_sub(1))
            .min(FLUSH_MAX_BACKOFF);
        self.next = Some(Instant::now() + wait);
        wait
    }
}

impl Storage {
    /// Writes `signal`'s memtable to Parquet and commits it — at most
    /// `max_files_per_flush` files at a time, so a memtable spread over many
    /// hours goes out over several calls. Safe to call at any time;
    /// concurrent flushes of one signal are serialised.
    pub async fn flush(&self, signal: Signal) -> Result<()> {
        while self.flush_some(signal, false).await? {}
        Ok(())
    }

    /// One bounded flush of `signal`; returns whether batches were left for
    /// another. With `isolate`, each batch is first encoded on its own and
    /// any that cannot be is quarantined instead of failing the flush.
    pub(super) async fn flush_some(&self, signal: Signal, isolate: bool) -> Result<bool> {
        let _one_at_a_time = self.flush_locks[signal.index()].lock().await;
        let max_files = self.config.max_files_per_flush.max(1);
        let input = self
            .shared
            .read_state(|s| s.memtables[signal.index()].flush_input(max_files));
        let Some(input) = input else {
            return Ok(false);
        };
        let (last_seq, more) = (input.last_seq, input.more);
        let started = Instant::now();
        let mut batches = input.batches;
        if isolate {
            batches = self.quarantine_unwritable(signal, batches).await?;
        }
        let encoded = tokio::task::spawn_blocking(move || {
            let batches: Vec<RecordBatch> = batches.into_iter().map(|(_, b)| b).collect();
            split_writer::encode_splits(signal, &batches)
        })
        .await
        .map_err(|e| StorageError::Internal(format!("flush task: {e}")))??;
        let mut metas = Vec::with_capacity(encoded.len());
        for split in encoded {
            let bytes = split.bytes.len() as u64;
            let stored = self.files.put(&split.meta, split.bytes, split.index).await;
            metas.push(split.meta);
            if let Err(e) = stored {
                self.delete_uncommitted(&metas).await;
                return Err(e);
            }
            self.shared.metrics.flushed_bytes.inc_by(bytes);
        }
        let commit = self
            .files
            .catalog
            .commit_flush(signal, &metas, last_seq)
            .await;
        if let Err(e) = commit {
            if self.files.catalog.failed_commits_are_certain() {
                // Not in the catalog: nothing names these files, so they
                // go now rather than waiting for the next sweep.
                self.delete_uncommitted(&metas).await;
                return Err(e);
            }
            // A remote catalog may have committed before the connection
            // broke: flushing these rows again would duplicate them. If it
            // did not, orphan collection removes the files.
            if !self.committed_after_all(&metas).await {
                return Err(e);
            }
            tracing::warn!(error = %e, "flush commit reported an error but is in the catalog");
        }
        self.files.note_committed(&metas, &[]);
        let flushed_through = self.shared.with_state(|state| {
            state.splits[signal.index()].extend(metas.into_iter().map(Arc::new));
            let freed = state.memtables[signal.index()].remove_through(last_seq);
            self.shared
                .reserved_bytes
                .fetch_sub(freed, Ordering::AcqRel);
            state.wal_flushed_through()
        });
        // Best effort: if the writer is gone the next start removes them.
        let _ = self
            .wal_tx
            .send(Command::RemoveThrough(flushed_through))
            .await;
        self.shared.metrics.flushes.inc();
        self.shared
            .metrics
            .flush_duration
            .observe(started.elapsed());
        tracing::debug!(%signal, more, elapsed_ms = started.elapsed().as_millis() as u64, "flushed");
        Ok(more)
    }

    async fn delete_uncommitted(&self, metas: &[SplitMeta]) {
        for meta in metas {
            self.files.delete(meta).await;
        }
    }

    /// Encodes each batch on its own and moves those that cannot be
    /// encoded to `<data-dir>/quarantine/<signal>-<seq>.arrows` (an Arrow
    /// IPC stream), so one bad batch cannot hold every later one (and the
    /// WAL behind them) forever. Returns the batches that can be written.
    async fn quarantine_unwritable(
        &self,
        signal: Signal,
        batches: Vec<(u64, RecordBatch)>,
    ) -> Result<Vec<(u64, RecordBatch)>> {
        let dir = self.config.data_dir.join("quarantine");
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut good = Vec::with_capacity(batches.len());
            for (seq, batch) in batches {
                let error = match split_writer::encode_splits(signal, std::slice::from_ref(&batch))
                {
                    Ok(_) => {
                        good.push((seq, batch));
                        continue;
                    }
                    Err(e) => e,
                };
                std::fs::create_dir_all(&dir)
                    .map_err(|e| StorageError::io("create directory", &dir, e))?;
                let path = dir.join(format!("{}-{seq:020}.arrows", signal.name()));
                let bytes = ipc::encode(&batch)?;
                std::fs::write(&path, &bytes)
                    .and_then(|()| std::fs::File::open(&path)?.sync_all())
                    .map_err(|e| StorageError::io("write", &path, e))?;
                crate::wal::sync_dir(&dir)?;
                shared.metrics.quarantined.inc();
                tracing::error!(
                    %signal,
                    seq,
                    rows = batch.num_rows(),
                    path = %path.display(),
                    error = %error,
                    "a batch keeps failing to flush; moved it to quarantine so later data can flush"
                );
            }
            Ok(good)
        })
        .await
        .map_err(|e| StorageError::Internal(format!("quarantine task: {e}")))?
    }

    /// Flushes every signal.
    pub async fn flush_all(&self) -> Result<()> {
        for signal in Signal::ALL {
            self.flush(signal).await?;
        }
        Ok(())
    }

    fn memtable_is_empty(&self, signal: Signal) -> bool {
        self.shared
            .read_state(|s| s.memtables[signal.index()].bytes() == 0)
    }

    fn needs_flush(&self, signal: Signal) -> bool {
        self.shared.read_state(|s| {
            let m = &s.memtables[signal.index()];
            m.bytes() >= self.config.flush_bytes
                || m.oldest()
                    .is_some_and(|t| t.elapsed() >= self.config.flush_interval)
        })
    }

    pub(super) async fn run_flusher(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retries: [FlushRetry; 3] = Default::default();
        let mut more = [false; 3];
        loop {
            let mut stop = self.stop.subscribe();
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shared.flush_wanted.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            for signal in Signal::ALL {
                let i = signal.index();
                let pressure = self.shared.under_pressure() && !self.memtable_is_empty(signal);
                if !retries[i].due() || !(more[i] || pressure || self.needs_flush(signal)) {
                    continue;
                }
                let isolate = retries[i].failures >= QUARANTINE_AFTER_FAILURES;
                match self.flush_some(signal, isolate).await {
                    Ok(left) => {
                        more[i] = left;
                        retries[i] = FlushRetry::default();
                    }
                    Err(e) => {
                        self.shared.metrics.flush_errors.inc();
                        let wait = retries[i].failed();
                        tracing::warn!(%signal, error = %e, retry_in_ms = wait.as_millis() as u64, "flush failed; will retry");
                    }
                }
            }
            // Still over half the unflushed budget (data kept arriving
            // while flushing): go again at once rather than at the tick.
            if self.shared.under_pressure() && retries.iter().all(FlushRetry::due) {
                self.shared.flush_wanted.notify_one();
            }
        }
    }
}
