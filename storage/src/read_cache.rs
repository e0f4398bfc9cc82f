//! A local read cache in front of a remote object store: Parquet footers,
//! trace-id index blocks and full-text index bundles are kept as files in
//! the data directory, within a byte budget, so repeated queries read them
//! from disk instead of downloading them again. Split files never change
//! once written (every write gets a new name), so an entry never goes
//! stale; it is dropped when its object is deleted or evicted by age of
//! last use.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use loupe_base::self_metrics::{Counter, Registry};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Ranged reads up to this size are cached (footers, index blocks);
/// larger ones (column chunks of big files) go straight to the store.
const MAX_CACHED_RANGE: u64 = 1 << 20;

/// An object store whose small reads and whole index files are served
/// from a local cache directory after the first time.
pub(crate) struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    cache: Mutex<Entries>,
    dir: PathBuf,
    budget: u64,
    gets: Arc<Counter>,
    hits: Arc<Counter>,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<String, Entry>,
    bytes: u64,
    clock: u64,
    next_file: u64,
}

struct Entry {
    file: PathBuf,
    meta: ObjectMeta,
    range: Range<u64>,
    size: u64,
    used: u64,
}

impl CachedStore {
    /// A cache of at most `budget` bytes in `dir` (emptied first: what a
    /// previous run cached is not accounted for).
    pub(crate) fn new(
        inner: Arc<dyn ObjectStore>,
        dir: PathBuf,
        budget: u64,
        registry: &Registry,
    ) -> std::io::Result<CachedStore> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(CachedStore {
            inner,
            cache: Mutex::default(),
            dir,
            budget,
            gets: registry.counter(
                "loupe_object_store_gets_total",
                "GET requests sent to the object store (cache misses included).",
                &[],
            ),
            hits: registry.counter(
                "loupe_read_cache_hits_total",
                "Object reads served from the local read cache.",
                &[],
            ),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache key of a read, if the read is one to cache: a whole index
    /// file, or a small range of any file.
    fn key(location: &Path, options: &GetOptions) -> Option<String> {
        if options.head
            || options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some()
        {
            return None;
        }
        match &options.range {
            None if !location.as_ref().ends_with(".parquet") => Some(location.to_string()),
            Some(GetRange::Bounded(r)) if r.end.saturating_sub(r.start) <= MAX_CACHED_RANGE => {
                Some(format!("{location}#{}-{}", r.start, r.end))
            }
            _ => None,
        }
    }

    fn lookup(&self, key: &str) -> Option<(PathBuf, ObjectMeta, Range<u64>)> {
        let mut entries = self.entries();
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.by_key.get_mut(key)?;
        entry.used = now;
        Some((entry.file.clone(), entry.meta.clone(), entry.range.clone()))
    }

    fn forget(&self, key: &str) {
        let mut entries = self.entries();
        if let Some(gone) = entries.by_key.remove(key) {
            entries.bytes -= gone.size;
            let _ = std::fs::remove_file(gone.file);
        }
    }

    /// Writes `bytes` to the cache (best effort: a failure only means the
    /// next read downloads again) and evicts the least recently used
    /// entries over the budget.
    async fn keep(&self, key: String, meta: ObjectMeta, range: Range<u64>, bytes: Bytes) {
        let size = bytes.len() as u64;
        if size > self.budget / 4 {
            return;
        }
        let file = {
            let mut entries = self.entries();
            entries.next_file += 1;
            self.dir.join(format!("{}.bin", entries.next_file))
        };
        let tmp = file.with_extension("tmp");
        let written = async {
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &file).await
        }
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "read cache: could not write an entry");
            let _ = tokio::fs::remove_file(&tmp).await;
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut entries = self.entries();
            entries.clock += 1;
            let used = entries.clock;
            let entry = Entry {
                file,
                meta,
                range,
                size,
                used,
            };
            if let Some(old) = entries.by_key.insert(key, entry) {
                entries.bytes -= old.size;
                evicted.push(old.file);
            }
            entries.bytes += size;
            while entries.bytes > self.budget {
                let Some(oldest) = entries
                    .by_key
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(gone) = entries.by_key.remove(&oldest) {
                    entries.bytes -= gone.size;
                    evicted.push(gone.file);
                }
            }
        }
        for file in evicted {
            let _ = tokio::fs::remove_file(file).await;
        }
    }

    fn forget_object(&self, location: &Path) {
        let prefix = location.to_string();
        let keys: Vec<String> = self
            .entries()
            .by_key
            .keys()
            .filter(|k| {
                k.strip_prefix(&prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('#'))
            })
            .cloned()
            .collect();
        for key in keys {
            self.forget(&key);
        }
    }
}

fn one_chunk(bytes: Bytes) -> GetResultPayload {
    GetResultPayload::Stream(futures::stream::once(async move { Ok(bytes) }).boxed())
}

impl fmt::Display for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedStore({})", self.inner)
    }
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedStore({:?})", self.dir)
    }
}

#[async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let Some(key) = Self::key(location, &options) else {
            self.gets.inc();
            return self.inner.get_opts(location, options).await;
        };
        if let Some((file, meta, range)) = self.lookup(&key) {
            match tokio::fs::read(&file).await {
                Ok(bytes) if bytes.len() as u64 == range.end - range.start => {
                    self.hits.inc();
                    return Ok(GetResult {
                        payload: one_chunk(Bytes::from(bytes)),
                        meta,
                        range,
                        attributes: Default::default(),
                    });
                }
                _ => self.forget(&key),
            }
        }
        self.gets.inc();
        let result = self.inner.get_opts(location, options).await?;
        let (meta, range, attributes) = (
            result.meta.clone(),
            result.range.clone(),
            result.attributes.clone(),
        );
        let bytes = result.bytes().await?;
        self.keep(key, meta.clone(), range.clone(), bytes.clone())
            .await;
        Ok(GetResult {
            payload: one_chunk(bytes),
            meta,
            range,
            attributes,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // Loupe deletes through `delete_object`, which also drops the
        // cached copies; nothing else deletes through this store.
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

impl CachedStore {
    /// Deletes `location` from the store and the cache.
    pub(crate) async fn delete_object(&self, location: &Path) -> object_store::Result<()> {
        self.forget_object(location);
        object_store::ObjectStoreExt::delete(self.inner.as_ref(), location).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::local::LocalFileSystem;

    #[tokio::test]
    async fn serves_repeated_reads_from_disk_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let registry = Registry::default();
        let store =
            CachedStore::new(inner.clone(), dir.path().join("cache"), 1000, &registry).unwrap();
        let (idx, parquet) = (Path::from("logs/a.idx"), Path::from("logs/a.parquet"));
        inner
            .put(&idx, PutPayload::from(vec![7u8; 100]))
            .await
            .unwrap();
        inner
            .put(&parquet, PutPayload::from(vec![9u8; 2000]))
            .await
            .unwrap();

        for _ in 0..2 {
            let whole = store.get(&idx).await.unwrap().bytes().await.unwrap();
            assert_eq!(whole.len(), 100);
            let footer = store.get_range(&parquet, 1990..2000).await.unwrap();
            assert_eq!(&footer[..], &[9u8; 10]);
        }
        assert_eq!((store.gets.get(), store.hits.get()), (2, 2));
        // Whole Parquet files (compaction reads them) are not kept.
        store.get(&parquet).await.unwrap().bytes().await.unwrap();
        store.get(&parquet).await.unwrap().bytes().await.unwrap();
        assert_eq!(store.gets.get(), 4);

        // Deleting drops the cached copies; the next read misses.
        store.delete_object(&idx).await.unwrap();
        assert!(store.get(&idx).await.is_err());
        assert_eq!(store.entries().by_key.len(), 1);

        // Over the budget, the least recently used entries go.
        for start in 0..10u64 {
            store
                .get_range(&parquet, start * 200..start * 200 + 200)
                .await
                .unwrap();
        }
        let entries = store.entries();
        assert!(entries.bytes <= 1000);
        assert!(!entries.by_key.contains_key("logs/a.parquet#0-200"));
        assert!(entries.by_key.contains_key("logs/a.parquet#1800-2000"));
    }
}
