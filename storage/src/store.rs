//! `Storage`: the durable home of telemetry. It ties together the WAL
//! writer, the memtables, the split files and the catalog, and keeps the
//! promise that an acknowledged batch is on disk and visible to queries, and
//! ends up in exactly one Parquet file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, oneshot, watch};

use crate::catalog::{Catalog, SplitMeta, SqliteCatalog};
use crate::catalog_pg::PgCatalog;
use crate::error::{Result, StorageError};
use crate::index_cache::IndexCache;
use crate::log_bodies::Bodies;
use crate::log_index::LogIndex;
use crate::maintenance::{Maintenance, MaintenanceConfig};
use crate::schema::Signal;
use crate::shared::{Shared, State, StorageMetrics, TableSnapshot};
use crate::split_files::SplitFiles;
use crate::split_store::SplitStore;
use crate::trace_index::{self, TraceIndexHead};
use crate::wal::{SyncMode, Wal};
use crate::writer::{self, Append, Command, Part};
use crate::{split_writer, wal_payload};
use loupe_base::self_metrics::Registry;
use loupe_catalog::pg::PgDb;

/// Flushes and the flusher task (an `impl Storage` of their own).
#[path = "store_flush.rs"]
mod flush;

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
    /// Refuse writes (429) while unflushed plus queued data exceeds this;
    /// from half of it on, every signal is flushed whatever its size, so
    /// flushing catches up by itself.
    pub max_unflushed_bytes: usize,
    /// Requests waiting for the WAL writer before new ones are refused.
    pub queue_depth: usize,
    /// Files one flush writes at most (one per hour of data); the rest of
    /// the memtable waits for the next flush.
    pub max_files_per_flush: usize,
    /// Largest encoded batch one WAL record takes; larger requests are
    /// refused before anything is written (at most the WAL frame limit).
    pub max_record_bytes: usize,
    /// Bytes of full-text indexes kept loaded (they are loaded whole).
    pub log_index_cache_bytes: usize,
    /// Compaction and retention.
    pub maintenance: MaintenanceConfig,
    /// Where split files go: empty for `splits/` in the data directory, or
    /// `s3://bucket/prefix`.
    pub storage_url: String,
    /// The catalog: empty for `catalog.sqlite` in the data directory, or
    /// `postgres://…`.
    pub catalog_url: String,
    /// Bytes the local read cache of a remote store holds at most.
    pub read_cache_bytes: u64,
    /// Whether this node may compact, expire and collect orphans at all
    /// (the `compact` role); on a shared catalog it also needs the lead
    /// ([`Storage::set_maintaining`]).
    pub may_maintain: bool,
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
            max_files_per_flush: 64,
            max_record_bytes: crate::wal::MAX_PAYLOAD_LEN,
            log_index_cache_bytes: 256 << 20,
            maintenance: MaintenanceConfig::default(),
            storage_url: String::new(),
            catalog_url: String::new(),
            read_cache_bytes: 1 << 30,
            may_maintain: true,
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
    /// One flush per signal at a time; signals flush independently.
    flush_locks: [tokio::sync::Mutex<()>; 3],
    closing: AtomicBool,
    /// Tells the background tasks (flusher, maintenance) to stop.
    stop: watch::Sender<bool>,
    /// Whether this node compacts, expires and collects orphans now.
    maintaining: watch::Sender<bool>,
    index_cache: IndexCache<LogIndex>,
    trace_index_cache: IndexCache<TraceIndexHead>,
}

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
        let node_id = node_id(dir)?;
        let (catalog, pg): (Arc<dyn Catalog>, _) = if config.catalog_url.is_empty() {
            (
                Arc::new(SqliteCatalog::open(&dir.join("catalog.sqlite"))?),
                None,
            )
        } else if config.catalog_url.starts_with("postgres://")
            || config.catalog_url.starts_with("postgresql://")
        {
            let db = Arc::new(
                PgDb::open(
                    &config.catalog_url,
                    &[
                        &crate::catalog_pg::PG_SCHEMA,
                        &loupe_catalog::pg::NODES_SCHEMA,
                        &loupe_catalog::lease::LEASES_SCHEMA,
                    ],
                )
                .await?,
            );
            (
                Arc::new(PgCatalog::new(db.clone(), node_id.clone())),
                Some(db),
            )
        } else {
            return Err(StorageError::Config(
                "catalog: expected postgres://… (or nothing for the SQLite file in the data directory)"
                    .into(),
            ));
        };
        let splits = SplitStore::open(&config.storage_url, dir, config.read_cache_bytes, registry)?;

        // Files first, then the catalog: a file published in between is
        // named by the listing and not taken for an orphan.
        let stored = splits.list().await?;
        let (listed, progress) = catalog.list_splits_and_progress().await?;
        let mut state = State {
            memtables: Default::default(),
            splits: Default::default(),
            peers_flushed: crate::split_files::peers_flushed(&node_id, &progress),
            last_seq: 0,
        };
        // Only this process writes a local directory, so whatever no
        // catalog row names is a leftover of a crash; a shared bucket may
        // hold other nodes' uploads about to be published, so there only
        // files older than the grace period go.
        let grace = if splits.is_local() {
            Duration::ZERO
        } else {
            config.maintenance.orphan_grace
        };
        crate::maintenance::delete_orphans(&splits, stored, &listed, grace).await?;
        for split in &listed {
            state.splits[split.signal.index()].push(Arc::new(split.clone()));
        }

        let mut flushed = [0u64; 3];
        for signal in Signal::ALL {
            flushed[signal.index()] = catalog.flushed_seq(signal).await?;
            state.memtables[signal.index()].set_flushed_before_start(flushed[signal.index()]);
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
                    let batch = wal_payload::decode(record.signal, &record.payload)?;
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
        let shared = Arc::new(Shared::new(
            state,
            metrics,
            config.flush_bytes,
            config.max_unflushed_bytes,
        ));
        let files = Arc::new(SplitFiles {
            catalog,
            pg,
            node_id,
            store: splits,
            shared: shared.clone(),
            delete_grace: config.maintenance.delete_grace,
            recent: Default::default(),
            reloading: Default::default(),
        });
        // A node on its own SQLite catalog is the only one: it maintains
        // from the start. On a shared catalog the lease holder does, once
        // told so through [`Storage::set_maintaining`].
        let (maintaining, gate) = watch::channel(config.may_maintain && files.pg.is_none());
        let maintenance = Arc::new(Maintenance::new(
            config.maintenance.clone(),
            files.clone(),
            gate,
        ));
        let (wal_tx, wal_rx) = mpsc::channel(config.queue_depth.max(1));
        let wal_thread = writer::spawn(wal, wal_rx, shared.clone())
            .map_err(|e| StorageError::io("start WAL thread for", &wal_dir, e))?;
        let log_index_cache_bytes = config.log_index_cache_bytes;
        let storage = Arc::new(Storage {
            config,
            shared,
            files,
            maintenance: maintenance.clone(),
            wal_tx,
            wal_thread: Mutex::new(Some(wal_thread)),
            flush_locks: Default::default(),
            closing: AtomicBool::new(false),
            stop: watch::channel(false).0,
            maintaining,
            index_cache: IndexCache::new(log_index_cache_bytes),
            trace_index_cache: IndexCache::new(TRACE_INDEX_CACHE_BYTES),
        });
        tokio::spawn(storage.clone().run_flusher());
        tokio::spawn(maintenance.run(storage.stop.subscribe()));
        if storage.files.pg.is_some() {
            tokio::spawn(crate::split_follow::follow(
                storage.files.clone(),
                storage.config.catalog_url.clone(),
                storage.stop.subscribe(),
            ));
        }
        Ok(storage)
    }

    /// Whether `metas` are in the catalog (asked again after a commit
    /// whose outcome is unknown); `false` when that cannot be told either.
    async fn committed_after_all(&self, metas: &[SplitMeta]) -> bool {
        let Some(first) = metas.first() else {
            return false;
        };
        for _ in 0..3 {
            match self.files.catalog.list_splits().await {
                Ok(all) => return all.iter().any(|s| s.id == first.id),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        false
    }

    /// This process's stable id (kept in the data directory): its WAL
    /// positions in a shared catalog and its row in `nodes`.
    pub fn node_id(&self) -> &str {
        &self.files.node_id
    }

    /// Turns compaction, retention and orphan collection on or off: on a
    /// shared catalog only the maintenance leader runs them (it maintains
    /// every node's files); a pass in progress stops before its next merge
    /// or deletion once turned off. On by default with a SQLite catalog.
    pub fn set_maintaining(&self, on: bool) {
        self.maintaining.send_replace(on);
    }

    /// The PostgreSQL catalog, when `--catalog` names one.
    pub fn postgres(&self) -> Option<Arc<PgDb>> {
        self.files.pg.clone()
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
        let mut parts = Vec::new();
        let max_hours = self.config.max_files_per_flush;
        let limit = self
            .config
            .max_record_bytes
            .min(crate::wal::MAX_PAYLOAD_LEN);
        for part in split_writer::split_by_hours(signal, &batch, max_hours)? {
            let payload = wal_payload::encode(signal, &part)?;
            if payload.len() > limit {
                return Err(StorageError::RecordTooLarge {
                    bytes: payload.len(),
                    limit,
                });
            }
            parts.push(Part {
                payload,
                batch: part,
            });
        }
        drop(batch);
        let (done, reply) = oneshot::channel();
        let append = Append {
            signal,
            parts,
            done,
        };
        let len = append.bytes();
        let max = self.config.max_unflushed_bytes;
        // Flushed batches kept for peers give up their room before the
        // reservation is visible, so the share never reads over its bound
        // while this append waits for the state lock.
        self.shared.make_room(len);
        // A batch larger than the whole share is admitted only when
        // nothing else is held, so the largest request can always get in.
        let reserved =
            self.shared
                .reserved_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    (used == 0 || used + len <= max).then_some(used + len)
                });
        if let Err(used) = reserved {
            self.shared.flush_wanted.notify_one();
            return Err(StorageError::Overloaded(format!(
                "{} MiB accepted but not yet flushed; retry shortly",
                used >> 20
            )));
        }
        // Another append may have reserved in between: trim again if so.
        self.shared.make_room(0);
        let sent = self.wal_tx.try_send(Command::Append(append));
        if let Err(e) = sent {
            self.shared.reserved_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => {
                    StorageError::Overloaded("write-ahead log queue is full; retry shortly".into())
                }
                mpsc::error::TrySendError::Closed(_) => StorageError::ShuttingDown,
            });
        }
        reply.await.map_err(|_| StorageError::ShuttingDown)?
    }

    /// Bytes of accepted data not yet in Parquet (memtables and the WAL
    /// queue): what `max_unflushed_bytes` limits.
    pub fn unflushed_bytes(&self) -> usize {
        self.shared.reserved_bytes.load(Ordering::Acquire)
    }

    /// What the unflushed share of the memory budget holds: unflushed data
    /// and the flushed batches kept in the room it leaves for peers'
    /// readers (see [`crate::FLUSHED_GRACE`]); at most `max_unflushed_bytes`
    /// but for a moment while appends race to make room.
    pub fn unflushed_share_bytes(&self) -> usize {
        self.unflushed_bytes() + self.shared.retained_bytes.load(Ordering::Acquire)
    }

    /// Bytes the running merge holds of compaction's memory share
    /// (`maintenance.memory_limit`); 0 between merges.
    pub fn compaction_bytes(&self) -> usize {
        self.maintenance.memory().used()
    }

    /// Bytes of loaded full-text indexes kept in the cache.
    pub fn log_index_cache_bytes(&self) -> usize {
        self.index_cache.bytes()
    }

    /// The splits and memtable batches a query of `signal` should read.
    pub fn snapshot(&self, signal: Signal) -> TableSnapshot {
        self.shared.snapshot(signal)
    }

    /// This node's rows of `signal` with a WAL sequence number above
    /// `after`, flushed or not: what a query coordinated on another node
    /// lacks when its split list covers this node's WAL up to `after` (see
    /// [`TableSnapshot::peers_flushed`]). Rows flushed within
    /// [`crate::FLUSHED_GRACE`] are still here, so a split list a little
    /// older than this node's last flush still reads each row exactly
    /// once; an older one gets [`StorageError::RowsGone`].
    pub fn unflushed_after(&self, signal: Signal, after: u64) -> Result<Vec<crate::MemBatch>> {
        self.shared.read_state(|state| {
            state.memtables[signal.index()]
                .rows_after(after)
                .map_err(|gone| StorageError::RowsGone {
                    signal,
                    after,
                    gone_through: gone.gone_through,
                })
        })
    }

    /// Every WAL record of `signal` up to this is in a committed split.
    pub fn flushed_through(&self, signal: Signal) -> u64 {
        self.shared
            .read_state(|state| state.memtables[signal.index()].flushed_through())
    }

    /// Reads the split list of a shared catalog again now (it is followed
    /// anyway; a query whose snapshot proved too old calls this before
    /// planning again). Nothing to do on a single node's catalog.
    pub async fn reload_splits(&self) -> Result<()> {
        if self.files.pg.is_some() {
            self.files.refresh().await?;
        }
        Ok(())
    }

    /// Records that the splits in this node's list cover `node`'s WAL of
    /// `signal` up to `flushed_seq`, as a reload of a shared catalog does.
    /// For tests of several nodes over single-node catalogs.
    #[doc(hidden)]
    pub fn set_peer_flushed(&self, node: &str, signal: Signal, flushed_seq: u64) {
        self.shared.with_state(|state| {
            let mut peers = state.peers_flushed[signal.index()].as_ref().clone();
            peers.insert(node.to_string(), flushed_seq);
            state.peers_flushed[signal.index()] = Arc::new(peers);
        });
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

    /// A crash, for tests: stops the background tasks and the WAL thread
    /// (after what is queued to it, as a process dying after its last
    /// acknowledged write would) without flushing or removing anything, so
    /// a new instance on the same directory finds what a crash would leave
    /// and nothing of this one still runs. (Leaking the instance instead
    /// left its flusher and WAL thread racing the new instance's replay.)
    #[cfg(test)]
    pub(crate) async fn crash(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let thread = self.stop_background().await;
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // A flush under way finishes first; then the locks stay held for
        // good, so no flush of this instance starts after the crash.
        for lock in &self.flush_locks {
            std::mem::forget(lock.lock().await);
        }
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
        let bodies = match self.files.store.local_path(&split.path) {
            Some(file) => Bodies::File(file),
            None => Bodies::Remote {
                store: self.files.store.object_store(),
                path: object_store::path::Path::from(split.path.as_str()),
                size: split.byte_size,
                runtime: tokio::runtime::Handle::current(),
            },
        };
        let index = tokio::task::spawn_blocking(move || LogIndex::open_with(&bytes, bodies))
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

    /// Tells the background tasks and the WAL thread to stop, and hands
    /// back the WAL thread to join (`None` once already taken).
    async fn stop_background(&self) -> Option<std::thread::JoinHandle<Wal>> {
        let _ = self.stop.send(true);
        let _ = self.wal_tx.send(Command::Shutdown).await;
        self.wal_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Stops accepting writes, lets queued ones finish, flushes everything
    /// to Parquet and removes the WAL segments that are no longer needed.
    pub async fn shutdown(&self) -> Result<()> {
        if self.closing.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let thread = self.stop_background().await;
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

/// The id in `dir/node_id`, created on first start.
fn node_id(dir: &Path) -> Result<String> {
    let path = dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("read", &path, e)),
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = dir.join("node_id.tmp");
    std::fs::write(&tmp, &id)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| StorageError::io("write", &path, e))?;
    crate::wal::sync_dir(dir)?;
    Ok(id)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
