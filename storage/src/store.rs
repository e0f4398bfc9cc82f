//! `Storage`: the durable home of telemetry. It ties together the WAL
//! writer, the memtables, the split files and the catalog, and keeps the
//! promise that an acknowledged batch is on disk and visible to queries, and
//! ends up in exactly one Parquet file.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::catalog::{Catalog, SplitMeta, SqliteCatalog};
use crate::error::{Result, StorageError};
use crate::log_index::LogIndex;
use crate::maintenance::MaintenanceConfig;
use crate::memtable::{MemBatch, Memtable};
use crate::schema::Signal;
use crate::split_store::SplitStore;
use crate::trace_index::{self, TraceIndexHead};
use crate::wal::{SyncMode, Wal};
use crate::writer::{self, Append, Command};
use crate::{ipc, split_writer};
use loupe_base::self_metrics::{Counter, Gauge, Histogram, Registry};

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

/// What a query reads for one table: committed splits plus the memtable,
/// taken together under one lock so no row is seen twice or missed.
#[derive(Clone, Default)]
pub struct TableSnapshot {
    pub splits: Vec<Arc<SplitMeta>>,
    pub batches: Vec<MemBatch>,
}

pub(crate) struct State {
    memtables: [Memtable; 3],
    splits: [Vec<Arc<SplitMeta>>; 3],
    /// Highest WAL sequence number whose batch reached a memtable.
    last_seq: u64,
}

impl State {
    pub(crate) fn insert(&mut self, signal: Signal, seq: u64, batch: RecordBatch) {
        self.memtables[signal.index()].push(seq, batch);
        self.last_seq = self.last_seq.max(seq);
    }

    fn unflushed_bytes(&self) -> usize {
        self.memtables.iter().map(Memtable::bytes).sum()
    }

    /// Every WAL record with a seq at or below this is in a committed split.
    fn wal_flushed_through(&self) -> u64 {
        self.memtables
            .iter()
            .filter_map(Memtable::first_seq)
            .map(|first| first - 1)
            .min()
            .unwrap_or(self.last_seq)
    }
}

pub(crate) struct StorageMetrics {
    pub wal_sync: Arc<Histogram>,
    pub wal_groups: Arc<Counter>,
    flushes: Arc<Counter>,
    flush_errors: Arc<Counter>,
    flush_duration: Arc<Histogram>,
    flushed_bytes: Arc<Counter>,
    unflushed_bytes: Arc<Gauge>,
}

impl StorageMetrics {
    fn new(r: &Registry) -> Self {
        StorageMetrics {
            wal_sync: r.histogram(
                "loupe_wal_fsync_seconds",
                "Time to write and fsync one WAL group commit.",
                &[],
            ),
            wal_groups: r.counter("loupe_wal_groups_total", "WAL group commits.", &[]),
            flushes: r.counter("loupe_flushes_total", "Memtable flushes to Parquet.", &[]),
            flush_errors: r.counter("loupe_flush_errors_total", "Failed memtable flushes.", &[]),
            flush_duration: r.histogram(
                "loupe_flush_duration_seconds",
                "Time to encode, store and commit one flush.",
                &[],
            ),
            flushed_bytes: r.counter(
                "loupe_flushed_parquet_bytes_total",
                "Bytes of Parquet written by flushes.",
                &[],
            ),
            unflushed_bytes: r.gauge(
                "loupe_unflushed_bytes",
                "Bytes of accepted data in memtables, not yet in Parquet.",
                &[],
            ),
        }
    }
}

/// State shared with the WAL writer thread.
pub(crate) struct Shared {
    state: RwLock<State>,
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) metrics: StorageMetrics,
    flush_wanted: Notify,
    flush_bytes: usize,
}

impl Shared {
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut state);
        self.metrics
            .unflushed_bytes
            .set(state.unflushed_bytes() as i64);
        out
    }

    fn read_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn wake_flusher_if_full(&self) {
        if self.read_state(|s| s.memtables.iter().any(|m| m.bytes() >= self.flush_bytes)) {
            self.flush_wanted.notify_one();
        }
    }
}

/// The storage engine. Create with [`Storage::open`], stop with
/// [`Storage::shutdown`].
pub struct Storage {
    config: StorageConfig,
    shared: Arc<Shared>,
    catalog: Arc<dyn Catalog>,
    splits: SplitStore,
    wal_tx: mpsc::Sender<Command>,
    wal_thread: Mutex<Option<std::thread::JoinHandle<Wal>>>,
    flush_lock: tokio::sync::Mutex<()>,
    closing: AtomicBool,
    /// Tells the background tasks (flusher, maintenance) to stop.
    stop: watch::Sender<bool>,
    ready: AtomicBool,
    index_cache: IndexCache<LogIndex>,
    trace_index_cache: IndexCache<TraceIndexHead>,
}

/// Recently used split indexes (by file path), bounded by count.
struct IndexCache<T> {
    entries: Mutex<std::collections::HashMap<String, Arc<T>>>,
    capacity: usize,
}

/// Full-text indexes are loaded whole, so few are kept.
const LOG_INDEX_CACHE_ENTRIES: usize = 64;
/// Trace index heads are 8 bytes per 1,024 spans: keep one per split.
const TRACE_INDEX_CACHE_ENTRIES: usize = 16_384;

impl<T> IndexCache<T> {
    fn new(capacity: usize) -> Self {
        IndexCache {
            entries: Mutex::default(),
            capacity,
        }
    }

    fn get(&self, path: &str) -> Option<Arc<T>> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }

    fn insert(&self, path: String, index: Arc<T>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity
            && let Some(evict) = entries.keys().next().cloned()
        {
            entries.remove(&evict);
        }
        entries.insert(path, index);
    }
}

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
        metrics.unflushed_bytes.set(state.unflushed_bytes() as i64);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            queued_bytes: AtomicUsize::new(0),
            metrics,
            flush_wanted: Notify::new(),
            flush_bytes: config.flush_bytes,
        });
        let (wal_tx, wal_rx) = mpsc::channel(config.queue_depth.max(1));
        let wal_thread = writer::spawn(wal, wal_rx, shared.clone())
            .map_err(|e| StorageError::io("start WAL thread for", &wal_dir, e))?;
        let storage = Arc::new(Storage {
            config,
            shared,
            catalog,
            splits,
            wal_tx,
            wal_thread: Mutex::new(Some(wal_thread)),
            flush_lock: tokio::sync::Mutex::new(()),
            closing: AtomicBool::new(false),
            stop: watch::channel(false).0,
            ready: AtomicBool::new(true),
            index_cache: IndexCache::new(LOG_INDEX_CACHE_ENTRIES),
            trace_index_cache: IndexCache::new(TRACE_INDEX_CACHE_ENTRIES),
        });
        tokio::spawn(storage.clone().run_flusher());
        tokio::spawn(storage.clone().run_maintenance());
        Ok(storage)
    }

    /// True once the WAL is replayed and writes are accepted.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.closing.load(Ordering::Relaxed)
    }

    /// The object store holding split files, and the URL queries use for it.
    pub fn object_store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.splits.object_store()
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
        self.shared.read_state(|state| TableSnapshot {
            splits: state.splits[signal.index()].clone(),
            batches: state.memtables[signal.index()].snapshot().0,
        })
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
            let stored = self
                .store_split(&split.meta, split.bytes, split.index)
                .await;
            if let Err(e) = stored {
                for meta in metas.iter().chain([&split.meta]) {
                    self.delete_split_files(meta).await;
                }
                return Err(e);
            }
            self.shared.metrics.flushed_bytes.inc_by(bytes);
            metas.push(split.meta);
        }
        let catalog = self.catalog.clone();
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

    pub(crate) fn maintenance_config(&self) -> &MaintenanceConfig {
        &self.config.maintenance
    }

    pub(crate) fn split_store(&self) -> &SplitStore {
        &self.splits
    }

    /// Swaps `old` splits for `new` ones in the catalog and for queries,
    /// then deletes the old files once running queries are done with them.
    pub(crate) async fn replace_splits(
        &self,
        signal: Signal,
        old: &[SplitMeta],
        new: Vec<SplitMeta>,
    ) -> Result<()> {
        let catalog = self.catalog.clone();
        let remove: Vec<String> = old.iter().map(|s| s.id.clone()).collect();
        let add = new.clone();
        tokio::task::spawn_blocking(move || catalog.replace_splits(&remove, &add))
            .await
            .map_err(|e| StorageError::Internal(format!("catalog task: {e}")))??;
        self.shared.with_state(|state| {
            let list = &mut state.splits[signal.index()];
            list.retain(|s| !old.iter().any(|o| o.id == s.id));
            list.extend(new.into_iter().map(Arc::new));
        });
        let grace = self.config.maintenance.delete_grace;
        let (store, old) = (self.splits.clone(), old.to_vec());
        let delete = async move {
            tokio::time::sleep(grace).await;
            for split in old {
                for path in std::iter::once(&split.path).chain(split.index_path.as_ref()) {
                    if let Err(e) = store.delete(path).await {
                        tracing::warn!(%path, error = %e, "could not delete a replaced split file");
                    }
                }
            }
        };
        if grace.is_zero() {
            delete.await;
        } else {
            tokio::spawn(delete);
        }
        Ok(())
    }

    async fn run_maintenance(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.maintenance.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.compact().await {
                tracing::warn!(error = %e, "compaction failed; will retry");
            }
            if let Err(e) = self.enforce_retention().await {
                tracing::warn!(error = %e, "retention failed; will retry");
            }
        }
    }

    /// Writes a split's Parquet file and, for logs, its index bundle.
    pub(crate) async fn store_split(
        &self,
        meta: &SplitMeta,
        parquet: Vec<u8>,
        index: Option<Vec<u8>>,
    ) -> Result<()> {
        self.splits.put(&meta.path, parquet).await?;
        if let (Some(path), Some(index)) = (&meta.index_path, index) {
            self.splits.put(path, index).await?;
        }
        Ok(())
    }

    pub(crate) async fn delete_split_files(&self, meta: &SplitMeta) {
        let _ = self.splits.delete(&meta.path).await;
        if let Some(path) = &meta.index_path {
            let _ = self.splits.delete(path).await;
        }
    }

    /// The full-text index of a logs split, loaded from its bundle file and
    /// kept in a small cache.
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
        let bytes = self.splits.get(path).await?;
        let index = tokio::task::spawn_blocking(move || LogIndex::open(&bytes))
            .await
            .map_err(|e| StorageError::Internal(format!("index task: {e}")))??;
        let index = Arc::new(index);
        self.index_cache.insert(path.clone(), index.clone());
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
                    .splits
                    .get_range(path, 0..trace_index::HEADER_LEN)
                    .await?;
                let header = trace_index::Header::parse(&header)?;
                let table = self.splits.get_range(path, header.table_range()).await?;
                let head = Arc::new(TraceIndexHead::new(header, &table)?);
                self.trace_index_cache.insert(path.clone(), head.clone());
                head
            }
        };
        let Some(blocks) = head.blocks_for(key) else {
            return Ok(Some(Vec::new()));
        };
        let bytes = self.splits.get_range(path, blocks.bytes.clone()).await?;
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

#[cfg(test)]
mod maintenance_tests {
    use super::*;
    use crate::test_batches::log_batch;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_merges_files_with_their_index_and_retention_drops_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StorageConfig::new(dir.path());
        config.maintenance = MaintenanceConfig {
            interval: Duration::from_secs(3600),
            min_files: 3,
            delete_grace: Duration::ZERO,
            ..MaintenanceConfig::default()
        };
        let storage = Storage::open(config.clone(), &Registry::default())
            .await
            .unwrap();
        let now = loupe_base::clock::now_nanos();
        for i in 0..4 {
            storage
                .append(
                    Signal::Logs,
                    log_batch(&[(now + i, "svc"), (now + 10 + i, "other")]),
                )
                .await
                .unwrap();
            storage.flush(Signal::Logs).await.unwrap();
        }
        assert_eq!(storage.snapshot(Signal::Logs).splits.len(), 4);
        assert_eq!(storage.compact().await.unwrap(), 1);
        let splits = storage.snapshot(Signal::Logs).splits;
        assert_eq!(splits.len(), 1);
        assert_eq!(splits[0].row_count, 8);
        let index = storage.split_index(&splits[0]).await.unwrap();
        // Rows are sorted by service, then time: "other" comes first.
        assert_eq!(
            index
                .matching_rows(&crate::log_index::parse_query("service:other").unwrap())
                .unwrap(),
            vec![0, 1, 2, 3]
        );
        // Only the merged files remain on disk.
        let files = storage.split_store().list().await.unwrap();
        assert_eq!(files.len(), 2, "{files:?}");

        // An old split goes at the next retention pass.
        storage
            .append(Signal::Logs, log_batch(&[(1_000, "ancient")]))
            .await
            .unwrap();
        storage.flush(Signal::Logs).await.unwrap();
        assert_eq!(storage.enforce_retention().await.unwrap(), 1);
        assert_eq!(storage.snapshot(Signal::Logs).splits.len(), 1);
        storage.shutdown().await.unwrap();
        drop(storage);

        // The catalog agrees after a restart.
        let storage = Storage::open(config, &Registry::default()).await.unwrap();
        let splits = storage.snapshot(Signal::Logs).splits;
        assert_eq!((splits.len(), splits[0].row_count), (1, 8));
        storage.shutdown().await.unwrap();
    }
}
