//! `Storage`: the durable home of telemetry. It ties together the WAL
//! writer, the memtables, the split files and the catalog, and keeps the
//! promise that an acknowledged batch is on disk and visible to queries, and
//! ends up in exactly one Parquet file.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, oneshot, watch};

use crate::catalog::{Catalog, SplitMeta, SqliteCatalog};
use crate::error::{Result, StorageError};
use crate::index_cache::IndexCache;
use crate::log_index::LogIndex;
use crate::maintenance::{Maintenance, MaintenanceConfig};
use crate::schema::Signal;
use crate::shared::{Shared, State, StorageMetrics, TableSnapshot};
use crate::split_files::SplitFiles;
use crate::split_store::SplitStore;
use crate::trace_index::{self, TraceIndexHead};
use crate::wal::{SyncMode, Wal};
use crate::writer::{self, Append, Command};
use crate::{ipc, split_writer};
use loupe_base::self_metrics::Registry;

/// How storage behaves; every field has a production default.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub wal_sync: SyncMode,
    pub wal_segment_bytes: u64,
    /// Flush a signal's memtable once it holds this many bytes…
    pub flush_bytes: usize,
    /// …or once its oldest batch is this old.
    pub flush_interval: Duration,
    /// Refuse writes (429) while unflushed plus queued data exceeds this.
    pub max_unflushed_bytes: usize,
    /// Requests waiting for the WAL writer before new ones are refused.
    pub queue_depth: usize,
    /// Compaction and retention.
    pub maintenance: MaintenanceConfig,
}

impl StorageConfig {
    /// Production defaults with data under `data_dir`: callers (config,
    /// tests) override only what they mean to change.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StorageConfig {
            data_dir: data_dir.into(),
            wal_sync: SyncMode::Always,
            wal_segment_bytes: 64 << 20,
            flush_bytes: 64 << 20,
            flush_interval: Duration::from_secs(60),
            max_unflushed_bytes: 1 << 30,
            queue_depth: 1024,
            maintenance: MaintenanceConfig::default(),
        }
    }
}

/// The storage engine. Create with [`Storage::open`], stop with
/// [`Storage::shutdown`].
pub struct Storage {
    config: StorageConfig,
    shared: Arc<Shared>,
    files: Arc<SplitFiles>,
    maintenance: Arc<Maintenance>,
    wal_tx: mpsc::Sender<Command>,
    wal_thread: Mutex<Option<std::thread::JoinHandle<Wal>>>,
    flush_lock: tokio::sync::Mutex<()>,
    closing: AtomicBool,
    /// Tells the background tasks (flusher, maintenance) to stop.
    stop: watch::Sender<bool>,
    index_cache: IndexCache<LogIndex>,
    trace_index_cache: IndexCache<TraceIndexHead>,
}

/// Full-text indexes are loaded whole (as big as their bundle files).
const LOG_INDEX_CACHE_BYTES: usize = 256 << 20;
/// Trace index heads are 8 bytes per 1,024 spans: this keeps every split's.
const TRACE_INDEX_CACHE_BYTES: usize = 16 << 20;

impl Storage {
    /// Opens (or creates) the data directory: loads the catalog, removes
    /// split files no catalog row names (left by a crash mid-flush), replays
    /// the WAL into memtables and starts the WAL writer and the flusher.
    /// Must be called inside a Tokio runtime.
    pub async fn open(config: StorageConfig, registry: &Registry) -> Result<Arc<Storage>> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
        let catalog: Arc<dyn Catalog> = Arc::new(SqliteCatalog::open(&dir.join("catalog.sqlite"))?);
        let splits = SplitStore::local(&dir.join("splits"))?;

        let mut state = State {
            memtables: Default::default(),
            splits: Default::default(),
            last_seq: 0,
        };
        let listed = catalog.list_splits()?;
        let known: HashSet<&str> = listed
            .iter()
            .flat_map(|s| std::iter::once(s.path.as_str()).chain(s.index_path.as_deref()))
            .collect();
        for path in splits.list().await? {
            if !known.contains(path.as_str()) {
                tracing::info!(%path, "removing split file with no catalog entry");
                splits.delete(&path).await?;
            }
        }
        for split in &listed {
            state.splits[split.signal.index()].push(Arc::new(split.clone()));
        }

        let mut flushed = [0u64; 3];
        for signal in Signal::ALL {
            flushed[signal.index()] = catalog.flushed_seq(signal)?;
        }
        let started = Instant::now();
        let mut replayed = 0usize;
        let wal_dir = dir.join("wal");
        let floor = flushed.iter().max().copied().unwrap_or(0) + 1;
        let segment_bytes = config.wal_segment_bytes;
        let wal_sync = config.wal_sync;
        let wal = tokio::task::block_in_place(|| {
            Wal::open(&wal_dir, wal_sync, segment_bytes, floor, |record| {
                state.last_seq = state.last_seq.max(record.seq);
                if record.seq > flushed[record.signal.index()] {
                    let batch = ipc::decode(record.signal, &record.payload)?;
                    state.insert(record.signal, record.seq, batch);
                    replayed += 1;
                }
                Ok(())
            })
        })?;
        tracing::info!(
            records = replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "WAL replayed"
        );

        let metrics = StorageMetrics::new(registry);
        let shared = Arc::new(Shared::new(state, metrics, config.flush_bytes));
        let files = Arc::new(SplitFiles {
            catalog,
            store: splits,
            shared: shared.clone(),
            delete_grace: config.maintenance.delete_grace,
        });
        let maintenance = Arc::new(Maintenance::new(config.maintenance.clone(), files.clone()));
        let (wal_tx, wal_rx) = mpsc::channel(config.queue_depth.max(1));
        let wal_thread = writer::spawn(wal, wal_rx, shared.clone())
            .map_err(|e| StorageError::io("start WAL thread for", &wal_dir, e))?;
        let storage = Arc::new(Storage {
            config,
            shared,
            files,
            maintenance: maintenance.clone(),
            wal_tx,
            wal_thread: Mutex::new(Some(wal_thread)),
            flush_lock: tokio::sync::Mutex::new(()),
            closing: AtomicBool::new(false),
            stop: watch::channel(false).0,
            index_cache: IndexCache::new(LOG_INDEX_CACHE_BYTES),
            trace_index_cache: IndexCache::new(TRACE_INDEX_CACHE_BYTES),
        });
        tokio::spawn(storage.clone().run_flusher());
        tokio::spawn(maintenance.run(storage.stop.subscribe()));
        Ok(storage)
    }

    /// Whether writes are accepted: from the moment [`Storage::open`]
    /// returns (the WAL is replayed by then) until shutdown begins.
    pub fn is_ready(&self) -> bool {
        !self.closing.load(Ordering::Relaxed)
    }

    /// The object store holding split files, and the URL queries use for it.
    pub fn object_store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.files.store.object_store()
    }

    /// Durably appends one batch: returns once it is fsync'd in the WAL and
    /// visible to queries. Refuses with [`StorageError::Overloaded`] rather
    /// than queueing without bound.
    pub async fn append(&self, signal: Signal, batch: RecordBatch) -> Result<()> {
        if self.closing.load(Ordering::Relaxed) {
            return Err(StorageError::ShuttingDown);
        }
        if batch.schema().fields() != signal.schema().fields() {
            return Err(StorageError::Schema {
                signal,
                reason: "columns differ from the table schema".into(),
            });
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let payload = ipc::encode(&batch)?;
        let pending = self.shared.queued_bytes.load(Ordering::Relaxed)
            + self.shared.read_state(State::unflushed_bytes);
        if pending + payload.len() > self.config.max_unflushed_bytes {
            self.shared.flush_wanted.notify_one();
            return Err(StorageError::Overloaded(format!(
                "{} MiB accepted but not yet flushed; retry shortly",
                pending >> 20
            )));
        }
        let (done, reply) = oneshot::channel();
        let len = payload.len();
        self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let sent = self.wal_tx.try_send(Command::Append(Append {
            signal,
            payload,
            batch,
            done,
        }));
        if let Err(e) = sent {
            self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => {
                    StorageError::Overloaded("write-ahead log queue is full; retry shortly".into())
                }
                mpsc::error::TrySendError::Closed(_) => StorageError::ShuttingDown,
            });
        }
        reply.await.map_err(|_| StorageError::ShuttingDown)?
    }

    /// The splits and memtable batches a query of `signal` should read.
    pub fn snapshot(&self, signal: Signal) -> TableSnapshot {
        self.shared.snapshot(signal)
    }

    /// Writes `signal`'s memtable to Parquet and commits it. Safe to call at
    /// any time; concurrent flushes are serialised.
    pub async fn flush(&self, signal: Signal) -> Result<()> {
        let _one_at_a_time = self.flush_lock.lock().await;
        let (batches, last_seq) = self
            .shared
            .read_state(|s| s.memtables[signal.index()].snapshot());
        let Some(last_seq) = last_seq else {
            return Ok(());
        };
        let started = Instant::now();
        let encoded = tokio::task::spawn_blocking(move || {
            let batches: Vec<RecordBatch> = batches.into_iter().map(|b| b.batch).collect();
            split_writer::encode_splits(signal, &batches)
        })
        .await
        .map_err(|e| StorageError::Internal(format!("flush task: {e}")))??;
        let mut metas = Vec::with_capacity(encoded.len());
        for split in encoded {
            let bytes = split.bytes.len() as u64;
            let stored = self.files.put(&split.meta, split.bytes, split.index).await;
            if let Err(e) = stored {
                for meta in metas.iter().chain([&split.meta]) {
                    self.files.delete(meta).await;
                }
                return Err(e);
            }
            self.shared.metrics.flushed_bytes.inc_by(bytes);
            metas.push(split.meta);
        }
        let catalog = self.files.catalog.clone();
        let committed = metas.clone();
        tokio::task::spawn_blocking(move || catalog.commit_flush(signal, &committed, last_seq))
            .await
            .map_err(|e| StorageError::Internal(format!("catalog task: {e}")))??;
        let flushed_through = self.shared.with_state(|state| {
            state.splits[signal.index()].extend(metas.into_iter().map(Arc::new));
            state.memtables[signal.index()].remove_through(last_seq);
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
        tracing::debug!(%signal, elapsed_ms = started.elapsed().as_millis() as u64, "flushed");
        Ok(())
    }

    /// One compaction pass (see [`Maintenance`]); returns the merges done.
    pub async fn compact(&self) -> Result<usize> {
        self.maintenance.compact().await
    }

    /// Drops every split past its signal's retention; returns how many.
    pub async fn enforce_retention(&self) -> Result<usize> {
        self.maintenance.enforce_retention().await
    }

    #[cfg(test)]
    pub(crate) fn split_files(&self) -> &SplitFiles {
        &self.files
    }

    /// The full-text index of a logs split, loaded from its bundle file and
    /// cached within a byte budget.
    pub async fn split_index(&self, split: &SplitMeta) -> Result<Arc<LogIndex>> {
        let Some(path) = &split.index_path else {
            return Err(StorageError::Internal(format!(
                "split {} has no index",
                split.id
            )));
        };
        if let Some(index) = self.index_cache.get(path) {
            return Ok(index);
        }
        let bytes = self.files.store.get(path).await?;
        let weight = bytes.len();
        let index = tokio::task::spawn_blocking(move || LogIndex::open(&bytes))
            .await
            .map_err(|e| StorageError::Internal(format!("index task: {e}")))??;
        let index = Arc::new(index);
        self.index_cache.insert(path.clone(), index.clone(), weight);
        Ok(index)
    }

    /// The rows of a spans split that may belong to `trace_id` (a superset:
    /// the index keys on 32 bits of the id), ascending; `None` when the
    /// split has no trace index and must be scanned.
    pub async fn trace_rows(&self, split: &SplitMeta, trace_id: &str) -> Result<Option<Vec<u32>>> {
        let Some(path) = split
            .index_path
            .as_ref()
            .filter(|_| split.signal == Signal::Spans)
        else {
            return Ok(None);
        };
        let Some(key) = trace_index::key(trace_id) else {
            return Ok(Some(Vec::new()));
        };
        let head = match self.trace_index_cache.get(path) {
            Some(head) => head,
            None => {
                let header = self
                    .files
                    .store
                    .get_range(path, 0..trace_index::HEADER_LEN)
                    .await?;
                let header = trace_index::Header::parse(&header)?;
                let table = self
                    .files
                    .store
                    .get_range(path, header.table_range())
                    .await?;
                let head = Arc::new(TraceIndexHead::new(header, &table)?);
                let weight = std::mem::size_of::<TraceIndexHead>() + table.len();
                self.trace_index_cache
                    .insert(path.clone(), head.clone(), weight);
                head
            }
        };
        let Some(blocks) = head.blocks_for(key) else {
            return Ok(Some(Vec::new()));
        };
        let bytes = self
            .files
            .store
            .get_range(path, blocks.bytes.clone())
            .await?;
        Ok(Some(head.rows_for(&blocks, &bytes, key)?))
    }

    /// Flushes every signal.
    pub async fn flush_all(&self) -> Result<()> {
        for signal in Signal::ALL {
            self.flush(signal).await?;
        }
        Ok(())
    }

    fn needs_flush(&self, signal: Signal) -> bool {
        self.shared.read_state(|s| {
            let m = &s.memtables[signal.index()];
            m.bytes() >= self.config.flush_bytes
                || m.oldest()
                    .is_some_and(|t| t.elapsed() >= self.config.flush_interval)
        })
    }

    async fn run_flusher(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut stop = self.stop.subscribe();
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shared.flush_wanted.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            for signal in Signal::ALL {
                if self.needs_flush(signal)
                    && let Err(e) = self.flush(signal).await
                {
                    self.shared.metrics.flush_errors.inc();
                    tracing::warn!(%signal, error = %e, "flush failed; will retry");
                }
            }
        }
    }

    /// Stops accepting writes, lets queued ones finish, flushes everything
    /// to Parquet and removes the WAL segments that are no longer needed.
    pub async fn shutdown(&self) -> Result<()> {
        if self.closing.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let _ = self.stop.send(true);
        let _ = self.wal_tx.send(Command::Shutdown).await;
        let thread = self
            .wal_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(thread) = thread else {
            return Ok(());
        };
        let mut wal = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| StorageError::Internal(format!("WAL thread: {e}")))?
            .map_err(|_| StorageError::Internal("WAL thread panicked".into()))?;
        self.flush_all().await?;
        let through = self.shared.read_state(State::wal_flushed_through);
        tokio::task::block_in_place(|| wal.remove_through(through))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_batches::log_batch;

    fn rows(snapshot: &TableSnapshot) -> (u64, usize) {
        let split_rows = snapshot.splits.iter().map(|s| s.row_count).sum();
        let mem_rows = snapshot.batches.iter().map(|b| b.batch.num_rows()).sum();
        (split_rows, mem_rows)
    }

    async fn open(dir: &std::path::Path) -> Arc<Storage> {
        Storage::open(StorageConfig::new(dir), &Registry::default())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_rows_are_visible_then_flushed_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path()).await;
        storage
            .append(Signal::Logs, log_batch(&[(1, "a"), (2, "b")]))
            .await
            .unwrap();
        storage
            .append(Signal::Logs, log_batch(&[(3, "a")]))
            .await
            .unwrap();
        assert_eq!(rows(&storage.snapshot(Signal::Logs)), (0, 3));
        storage.flush(Signal::Logs).await.unwrap();
        assert_eq!(rows(&storage.snapshot(Signal::Logs)), (3, 0));
        storage
            .append(Signal::Logs, log_batch(&[(4, "c")]))
            .await
            .unwrap();
        storage.shutdown().await.unwrap();
        assert!(matches!(
            storage.append(Signal::Logs, log_batch(&[(5, "c")])).await,
            Err(StorageError::ShuttingDown)
        ));
        drop(storage);

        // Everything is in splits now, and the WAL replays nothing twice.
        let storage = open(dir.path()).await;
        assert_eq!(rows(&storage.snapshot(Signal::Logs)), (4, 0));
        assert_eq!(rows(&storage.snapshot(Signal::Spans)), (0, 0));
        storage.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unflushed_rows_replay_from_the_wal_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path()).await;
        storage
            .append(Signal::Logs, log_batch(&[(1, "a")]))
            .await
            .unwrap();
        storage.flush(Signal::Logs).await.unwrap();
        storage
            .append(Signal::Logs, log_batch(&[(2, "a"), (3, "a")]))
            .await
            .unwrap();
        // A crash: no shutdown, no flush. Leak the instance so nothing runs on drop.
        std::mem::forget(storage);
        // An orphan split file as a crash mid-flush would leave.
        let orphan = dir.path().join("splits/logs/orphan.parquet");
        std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        std::fs::write(&orphan, b"partial").unwrap();

        let storage = open(dir.path()).await;
        assert_eq!(rows(&storage.snapshot(Signal::Logs)), (1, 2));
        assert!(!orphan.exists());
        storage.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_writes_beyond_the_unflushed_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StorageConfig::new(dir.path());
        config.max_unflushed_bytes = 1;
        let storage = Storage::open(config, &Registry::default()).await.unwrap();
        let err = storage
            .append(Signal::Logs, log_batch(&[(1, "a")]))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Overloaded(_)), "{err}");
        storage.shutdown().await.unwrap();
    }
}
