//! Background upkeep of splits: compaction merges small files of one
//! signal and hour into larger ones (Parquet and index rewritten
//! together), retention drops files older than a signal's maximum age.
//!
//! Both swap files in one catalog transaction and delete the old files only
//! after a grace period, so running queries finish reading them; a crash at
//! any step leaves either the old or the new files named by the catalog,
//! and the start-up sweep removes whichever are not.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::catalog::SplitMeta;
use crate::compaction_memory::CompactionMemory;
use crate::error::Result;
use crate::merge::{FileLimits, Input, merge_files};
use crate::merge_thread::MergeThread;
use crate::schema::Signal;
use crate::split_files::SplitFiles;
use crate::split_store::{SplitStore, StoredFile};
use crate::split_writer::EncodedSplit;

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// How compaction and retention behave.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// How often to look for work.
    pub interval: Duration,
    /// Merged files aim for this size; files at half of it are left alone.
    pub target_bytes: u64,
    /// A merge takes files holding at most this many rows in all…
    pub max_merge_rows: u64,
    /// …and at most this many bytes uncompressed: however well the data
    /// compresses, a merged file stays cheap to read and index.
    pub max_merge_raw_bytes: u64,
    /// Memory merges may hold (compaction's share of the memory budget):
    /// it bounds how many files one merge reads, and each file it writes.
    pub memory_limit: usize,
    /// Merge an hour's small files once there are this many…
    pub min_files: usize,
    /// …or, once the hour is this far in the past, as soon as there are two.
    pub settle: Duration,
    /// Old files stay this long after being replaced, for running queries.
    pub delete_grace: Duration,
    /// Maximum age per signal (logs, spans, metrics).
    pub retention: [Duration; 3],
    /// Stored files no catalog row names are deleted once this old (an
    /// upload is published within it; a crash or a lost commit leaves
    /// them behind).
    pub orphan_grace: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        MaintenanceConfig {
            interval: Duration::from_secs(60),
            target_bytes: 64 << 20,
            max_merge_rows: 8 << 20,
            max_merge_raw_bytes: 2 << 30,
            memory_limit: 256 << 20,
            min_files: 8,
            settle: Duration::from_secs(300),
            delete_grace: Duration::from_secs(120),
            retention: [
                Duration::from_secs(7 * DAY),
                Duration::from_secs(7 * DAY),
                Duration::from_secs(30 * DAY),
            ],
            orphan_grace: Duration::from_secs(3600),
        }
    }
}

/// Deletes those of `stored` that no split of `listed` names and that were
/// last modified more than `grace` ago.
pub(crate) async fn delete_orphans(
    store: &SplitStore,
    stored: Vec<StoredFile>,
    listed: &[SplitMeta],
    grace: Duration,
) -> Result<usize> {
    let known: HashSet<&str> = listed
        .iter()
        .flat_map(|s| std::iter::once(s.path.as_str()).chain(s.index_path.as_deref()))
        .collect();
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let mut deleted = 0;
    for file in stored {
        if !known.contains(file.path.as_str()) && file.last_modified <= cutoff {
            tracing::info!(path = %file.path, "removing split file with no catalog entry");
            store.delete(&file.path).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The size merged files aim for: the configured target, or an eighth of
/// compaction's share of the memory budget if less — the share also holds
/// the inputs' readers, and the index of the file being written, which for
/// lines of many distinct words takes several times the file's Parquet
/// bytes while it is built.
fn target_bytes(config: &MaintenanceConfig) -> u64 {
    config
        .target_bytes
        .min(config.memory_limit as u64 / 8)
        .max(1)
}

/// The groups of splits one compaction pass should merge, oldest first:
/// each small enough for compaction's share of the memory budget (at most
/// [`CompactionMemory::max_inputs`] files, and of at most the target size
/// in all, which is what a merge holds when it fetches them whole from a
/// remote store).
pub fn plan_merges(
    splits: &[Arc<SplitMeta>],
    config: &MaintenanceConfig,
    now_ns: i64,
) -> Vec<Vec<Arc<SplitMeta>>> {
    let target = target_bytes(config);
    let max_inputs = CompactionMemory::new(config.memory_limit).max_inputs();
    let mut by_hour: BTreeMap<i64, Vec<Arc<SplitMeta>>> = BTreeMap::new();
    for split in splits {
        if split.byte_size < target / 2 {
            by_hour
                .entry(split.min_time.div_euclid(NANOS_PER_HOUR))
                .or_default()
                .push(split.clone());
        }
    }
    let settle = config.settle.as_nanos() as i64;
    let mut merges = Vec::new();
    for (hour, mut small) in by_hour {
        let settled = (hour + 1) * NANOS_PER_HOUR + settle <= now_ns;
        if let [lone] = small.as_slice() {
            // A settled hour's only small file, if a flush wrote it, is
            // rewritten once to get compaction's encoding (a larger zstd
            // level and pages for log bodies), as files merged with others
            // get it. 50 k real log lines loaded in one flush took 1.15 MB
            // of Parquet, 0.99 MB compacted.
            if settled && !lone.compacted {
                merges.push(small);
            }
            continue;
        }
        if small.len() < config.min_files && !settled {
            continue;
        }
        small.sort_by_key(|s| (s.min_time, s.created_at));
        let mut group = Vec::new();
        let (mut bytes, mut rows, mut raw) = (0, 0, 0);
        for split in small {
            let full = bytes + split.byte_size > target
                || group.len() >= max_inputs
                || rows + split.row_count > config.max_merge_rows
                || raw + split.raw_bytes > config.max_merge_raw_bytes;
            if full && !group.is_empty() {
                if group.len() >= 2 {
                    merges.push(std::mem::take(&mut group));
                } else {
                    group.clear();
                }
                (bytes, rows, raw) = (0, 0, 0);
            }
            bytes += split.byte_size;
            rows += split.row_count;
            raw += split.raw_bytes;
            group.push(split);
        }
        if group.len() >= 2 {
            merges.push(group);
        }
    }
    merges
}

/// Compaction and retention over the splits of every signal (every
/// node's, on a shared catalog: only the maintenance leader runs them);
/// `Storage` owns one and runs it on an interval while `gate` is on (or a
/// test calls it directly).
pub(crate) struct Maintenance {
    config: MaintenanceConfig,
    files: Arc<SplitFiles>,
    gate: watch::Receiver<bool>,
    /// Compaction's share of the memory budget; one merge at a time.
    memory: Arc<CompactionMemory>,
    compacting: tokio::sync::Mutex<()>,
    thread: MergeThread,
    /// Files a merge closed at a limit (all its files but the last): full
    /// however small, so they are not merged again — a small share makes
    /// small files, and merging them would only make them again.
    full: std::sync::Mutex<HashSet<String>>,
}

impl Maintenance {
    pub(crate) fn new(
        config: MaintenanceConfig,
        files: Arc<SplitFiles>,
        gate: watch::Receiver<bool>,
    ) -> Maintenance {
        Maintenance {
            memory: Arc::new(CompactionMemory::new(config.memory_limit)),
            config,
            files,
            gate,
            compacting: tokio::sync::Mutex::new(()),
            thread: MergeThread::default(),
            full: Default::default(),
        }
    }

    /// Compaction's share of the memory budget and what it holds.
    pub(crate) fn memory(&self) -> &CompactionMemory {
        &self.memory
    }

    /// Whether this node may maintain now, checked before each merge and
    /// deletion: one that lost the lead stops at the next step. (A merge
    /// two leaders raced for is still safe: the catalog swaps a split out
    /// only once, and the loser's commit fails.)
    fn leading(&self) -> bool {
        *self.gate.borrow()
    }

    /// Compacts, then enforces retention, every `interval` while the gate
    /// is on, until `stop`.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gate = self.gate.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                led = gate.wait_for(|on| *on) => if led.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.compact().await {
                tracing::warn!(error = %e, "compaction failed; will retry");
            }
            if let Err(e) = self.enforce_retention().await {
                tracing::warn!(error = %e, "retention failed; will retry");
            }
            if let Err(e) = self.collect_orphans().await {
                tracing::warn!(error = %e, "orphan collection failed; will retry");
            }
        }
    }

    /// Deletes stored files that no catalog row names and that are older
    /// than the grace period; returns how many went.
    pub(crate) async fn collect_orphans(&self) -> Result<usize> {
        // Listing before reading the catalog: a file published in between
        // is in both, never only in the listing.
        let stored = self.files.store.list().await?;
        let listed = self.files.catalog.list_splits().await?;
        if !self.leading() {
            return Ok(0);
        }
        delete_orphans(&self.files.store, stored, &listed, self.config.orphan_grace).await
    }

    /// One compaction pass over every signal; returns the merges done.
    pub(crate) async fn compact(&self) -> Result<usize> {
        let _one_at_a_time = self.compacting.lock().await;
        let live: HashSet<String> = Signal::ALL
            .into_iter()
            .flat_map(|signal| self.files.shared.snapshot(signal).splits)
            .map(|s| s.id.clone())
            .collect();
        if let Ok(mut full) = self.full.lock() {
            full.retain(|id| live.contains(id));
        }
        let mut done = 0;
        for signal in Signal::ALL {
            let mut splits = self.files.shared.snapshot(signal).splits;
            if let Ok(full) = self.full.lock() {
                splits.retain(|s| !full.contains(&s.id));
            }
            let now = loupe_base::clock::now_nanos();
            for group in plan_merges(&splits, &self.config, now) {
                if !self.leading() {
                    return Ok(done);
                }
                if self.merge(signal, group).await? {
                    done += 1;
                }
            }
        }
        Ok(done)
    }

    /// Merges `group`; false when it would not fit in compaction's share.
    async fn merge(&self, signal: Signal, group: Vec<Arc<SplitMeta>>) -> Result<bool> {
        // Files of a remote store are fetched whole: not when the merge
        // would not fit anyway.
        let fetched: usize = match self.files.store.is_local() {
            true => 0,
            false => group.iter().map(|s| s.byte_size as usize).sum(),
        };
        if self.memory.file_memory(group.len(), fetched).is_none() {
            tracing::debug!(%signal, files = group.len(), "merge skipped: it does not fit in compaction's memory share");
            return Ok(false);
        }
        let mut inputs = Vec::with_capacity(group.len());
        for split in &group {
            inputs.push(match self.files.store.local_path(&split.path) {
                Some(path) => Input::Local(path),
                None => Input::Fetched(self.files.store.get(&split.path).await?),
            });
        }
        let fetched = inputs.iter().map(Input::fetched_bytes).sum();
        let Some(file_memory) = self.memory.file_memory(inputs.len(), fetched) else {
            tracing::debug!(%signal, files = group.len(), "merge skipped: it does not fit in compaction's memory share");
            return Ok(false);
        };
        let hour = group
            .first()
            .map_or(0, |s| s.min_time.div_euclid(NANOS_PER_HOUR));
        let limits = FileLimits {
            rows: self.config.max_merge_rows.max(1),
            bytes: target_bytes(&self.config),
            memory: file_memory,
        };
        // Decoding and encoding are CPU work: off the async workers, on
        // the one thread merges run on. Each file is stored as soon as it
        // is written, so only one is in memory at a time.
        let (runtime, files, memory) = (
            tokio::runtime::Handle::current(),
            self.files.clone(),
            self.memory.clone(),
        );
        let (merged, result) = self
            .thread
            .run(move || {
                let mut stored = Vec::new();
                let result = merge_files(
                    signal,
                    hour,
                    inputs,
                    limits,
                    &memory,
                    &mut |split: EncodedSplit| {
                        stored.push(split.meta.clone());
                        runtime.block_on(files.put(&split.meta, split.bytes, split.index))
                    },
                );
                memory.set(0);
                (stored, result)
            })
            .await?;
        if let Err(e) = result {
            for m in &merged {
                self.files.delete(m).await;
            }
            return Err(e);
        }
        if let Ok(mut full) = self.full.lock() {
            for gone in &group {
                full.remove(&gone.id);
            }
            full.extend(merged.iter().rev().skip(1).map(|m| m.id.clone()));
        }
        let old: Vec<SplitMeta> = group.iter().map(|s| SplitMeta::clone(s)).collect();
        if let Err(e) = self.files.replace(signal, &old, merged.clone()).await {
            for m in &merged {
                self.files.delete(m).await;
            }
            return Err(e);
        }
        tracing::debug!(%signal, files = old.len(), "compacted");
        Ok(true)
    }

    /// Drops every split past its signal's retention; returns how many.
    pub(crate) async fn enforce_retention(&self) -> Result<usize> {
        let now = loupe_base::clock::now_nanos();
        let mut dropped = 0;
        for signal in Signal::ALL {
            let cutoff = now
                - self.config.retention[signal.index()]
                    .as_nanos()
                    .min(i64::MAX as u128) as i64;
            let expired: Vec<SplitMeta> = self
                .files
                .shared
                .snapshot(signal)
                .splits
                .iter()
                .filter(|s| s.max_time < cutoff)
                .map(|s| SplitMeta::clone(s))
                .collect();
            if !expired.is_empty() && self.leading() {
                dropped += expired.len();
                self.files.replace(signal, &expired, Vec::new()).await?;
                tracing::info!(%signal, files = expired.len(), "dropped splits past retention");
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Storage, StorageConfig};
    use crate::test_batches::{log_batch, wordy_log_batch};
    use loupe_base::self_metrics::Registry;

    fn split(id: &str, hour: i64, minute: i64, bytes: u64) -> Arc<SplitMeta> {
        let t = hour * NANOS_PER_HOUR + minute * 60_000_000_000;
        Arc::new(SplitMeta {
            id: id.into(),
            signal: Signal::Logs,
            path: format!("{id}.parquet"),
            index_path: None,
            min_time: t,
            max_time: t + 1,
            row_count: 1,
            byte_size: bytes,
            raw_bytes: bytes,
            services: vec![],
            created_at: t,
            compacted: false,
            node: None,
        })
    }

    fn ids(merges: &[Vec<Arc<SplitMeta>>]) -> Vec<Vec<String>> {
        merges
            .iter()
            .map(|g| g.iter().map(|s| s.id.clone()).collect())
            .collect()
    }

    #[test]
    fn merges_small_files_per_hour_up_to_the_target() {
        let config = MaintenanceConfig {
            target_bytes: 100,
            min_files: 3,
            settle: Duration::from_secs(0),
            ..Default::default()
        };
        let now_in_hour_2 = 2 * NANOS_PER_HOUR + 1;
        let splits = vec![
            split("a", 1, 0, 10),
            split("b", 1, 1, 10),
            split("big", 1, 2, 80),
            split("c", 2, 0, 10),
            split("d", 2, 1, 10),
        ];
        // Hour 1 is over: its two small files merge; hour 2 is still open
        // and has fewer than three.
        assert_eq!(
            ids(&plan_merges(&splits, &config, now_in_hour_2)),
            vec![vec!["a", "b"]]
        );
        let many: Vec<_> = (0..7).map(|i| split(&format!("s{i}"), 2, i, 30)).collect();
        assert_eq!(
            ids(&plan_merges(&many, &config, now_in_hour_2)),
            vec![vec!["s0", "s1", "s2"], vec!["s3", "s4", "s5"]]
        );
    }

    #[test]
    fn a_settled_hours_lone_flushed_file_is_rewritten_once() {
        let config = MaintenanceConfig {
            target_bytes: 100,
            settle: Duration::from_secs(60),
            ..Default::default()
        };
        let hour = |h: i64| h * NANOS_PER_HOUR;
        let minute = 60_000_000_000;
        // Flushed during hour 1 (created at its time).
        let flushed = split("flushed", 1, 5, 10);
        let lone = std::slice::from_ref(&flushed);
        // Not before the hour has settled…
        assert!(plan_merges(lone, &config, hour(2) + minute / 2).is_empty());
        // …then once.
        assert_eq!(
            ids(&plan_merges(lone, &config, hour(2) + 2 * minute)),
            vec![vec!["flushed"]]
        );
        // Its rewrite is left alone, as is a lone large file.
        let mut rewritten = SplitMeta::clone(&flushed);
        rewritten.compacted = true;
        let big = split("big", 3, 0, 80);
        let later = hour(5);
        assert!(plan_merges(&[Arc::new(rewritten), big], &config, later).is_empty());
    }

    #[test]
    fn merges_are_bounded_by_rows_and_uncompressed_bytes_not_only_file_size() {
        // Tiny files that expand a thousandfold: by file size alone all
        // would go in one merge.
        let config = MaintenanceConfig {
            target_bytes: 1 << 30,
            max_merge_rows: 1_000,
            max_merge_raw_bytes: 30_000,
            min_files: 2,
            settle: Duration::from_secs(0),
            ..Default::default()
        };
        let tiny = |id: &str, minute: i64, rows: u64| {
            let mut s = SplitMeta::clone(&split(id, 1, minute, 10));
            s.row_count = rows;
            s.raw_bytes = 10_000;
            Arc::new(s)
        };
        let splits: Vec<_> = (0..7).map(|i| tiny(&format!("s{i}"), i, 100)).collect();
        assert_eq!(
            ids(&plan_merges(&splits, &config, 3 * NANOS_PER_HOUR)),
            vec![vec!["s0", "s1", "s2"], vec!["s3", "s4", "s5"]]
        );
        let rowful: Vec<_> = (0..4).map(|i| tiny(&format!("r{i}"), i, 600)).collect();
        // 600 + 600 rows is over the bound: no file has a partner.
        assert!(plan_merges(&rowful, &config, 3 * NANOS_PER_HOUR).is_empty());
    }

    #[test]
    fn merges_are_bounded_by_the_memory_share() {
        // A 64 MiB share: four inputs at a time, files of 8 MiB at most.
        let config = MaintenanceConfig {
            target_bytes: 1 << 30,
            memory_limit: 64 << 20,
            min_files: 2,
            settle: Duration::from_secs(0),
            ..Default::default()
        };
        let tiny: Vec<_> = (0..10).map(|i| split(&format!("t{i}"), 1, i, 10)).collect();
        let sizes =
            |merges: &[Vec<Arc<SplitMeta>>]| merges.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(
            sizes(&plan_merges(&tiny, &config, 3 * NANOS_PER_HOUR)),
            vec![4, 4, 2]
        );
        let mib = |id: &str, minute, n: u64| split(id, 1, minute, n << 20);
        let sized = vec![
            mib("a", 0, 3),
            mib("b", 1, 3),
            mib("c", 2, 3),
            mib("done", 3, 4),
        ];
        assert_eq!(
            ids(&plan_merges(&sized, &config, 3 * NANOS_PER_HOUR)),
            vec![vec!["a", "b"]]
        );
    }

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
        let flushed = storage.snapshot(Signal::Logs).splits;
        assert_eq!(flushed.len(), 4);
        assert!(flushed.iter().all(|s| !s.compacted));
        assert_eq!(storage.compact().await.unwrap(), 1);
        let splits = storage.snapshot(Signal::Logs).splits;
        assert_eq!(splits.len(), 1);
        assert_eq!(splits[0].row_count, 8);
        assert!(splits[0].compacted);
        let index = storage.split_index(&splits[0]).await.unwrap();
        // Rows are sorted by service, then time: "other" comes first.
        assert_eq!(
            index
                .matching_rows(&crate::log_index::parse_query("service:other").unwrap())
                .unwrap(),
            vec![0, 1, 2, 3]
        );
        // Only the merged files remain on disk.
        let files = storage.split_files().store.list().await.unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_a_small_share_cut_short_are_not_merged_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StorageConfig::new(dir.path());
        config.maintenance = MaintenanceConfig {
            interval: Duration::from_secs(3600),
            min_files: 2,
            memory_limit: 64 << 20,
            delete_grace: Duration::ZERO,
            ..MaintenanceConfig::default()
        };
        let storage = Storage::open(config, &Registry::default()).await.unwrap();
        let hour = loupe_base::clock::now_nanos().div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR;
        for (i, service) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let batch = wordy_log_batch(service, hour + i as i64, 40_000);
            storage.append(Signal::Logs, batch).await.unwrap();
            storage.flush(Signal::Logs).await.unwrap();
        }
        assert_eq!(storage.compact().await.unwrap(), 1);
        let merged = storage.snapshot(Signal::Logs).splits;
        assert!(merged.len() >= 2, "{} files", merged.len());
        assert_eq!(merged.iter().map(|s| s.row_count).sum::<u64>(), 160_000);
        // Each is far below the target size, but merging them again
        // would only cut them the same way.
        assert_eq!(storage.compact().await.unwrap(), 0);
        assert_eq!(storage.snapshot(Signal::Logs).splits.len(), merged.len());
        storage.shutdown().await.unwrap();
    }
}
