//! Where split files live: any `object_store` — local disk by default, or
//! an S3-compatible bucket (`s3://bucket/prefix`) with a local read cache.
//! On local disk a written file is fsync'd before its catalog row commits,
//! so a committed split survives power loss even after its WAL is deleted;
//! an S3 PUT is durable once it returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use loupe_base::self_metrics::Registry;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Result, StorageError};
use crate::read_cache::CachedStore;

/// The URL under which queries find split files (`loupe://splits/<path>`).
pub const STORE_URL: &str = "loupe://splits/";

/// A stored file as a listing shows it.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub path: String,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

#[derive(Clone)]
pub struct SplitStore {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
    cached: Option<Arc<CachedStore>>,
}

impl SplitStore {
    /// The store `url` names: empty for `splits/` under `data_dir`, or
    /// `s3://bucket[/prefix]` (credentials, region and endpoint from the
    /// `AWS_*` environment variables) with a read cache of `cache_bytes`
    /// in `data_dir/cache`.
    pub fn open(
        url: &str,
        data_dir: &Path,
        cache_bytes: u64,
        registry: &Registry,
    ) -> Result<SplitStore> {
        if url.is_empty() {
            return SplitStore::local(&data_dir.join("splits"));
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(StorageError::Config(format!(
                "storage {url:?}: expected s3://bucket/prefix (or nothing for the data directory)"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::Config(format!("storage {url:?}: no bucket")));
        }
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()?;
        let inner: Arc<dyn ObjectStore> = match prefix.trim_matches('/') {
            "" => Arc::new(s3),
            prefix => Arc::new(PrefixStore::new(s3, prefix)),
        };
        let cache_dir = data_dir.join("cache");
        let cached = CachedStore::new(inner, cache_dir.clone(), cache_bytes, registry)
            .map_err(|e| StorageError::io("create read cache", &cache_dir, e))?;
        let cached = Arc::new(cached);
        Ok(SplitStore {
            store: cached.clone(),
            local_root: None,
            cached: Some(cached),
        })
    }

    /// Split files under `root` on the local file system.
    pub fn local(root: &Path) -> Result<SplitStore> {
        std::fs::create_dir_all(root).map_err(|e| StorageError::io("create directory", root, e))?;
        let store = LocalFileSystem::new_with_prefix(root)?;
        Ok(SplitStore {
            store: Arc::new(store),
            local_root: Some(root.to_path_buf()),
            cached: None,
        })
    }

    /// Where a stored file is on the local file system, for readers that
    /// cannot wait on the object store (phrase checks inside a search).
    pub fn local_path(&self, path: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| root.join(path))
    }

    /// Whether the files are on this machine's disk (only this process
    /// writes there) rather than in a shared bucket.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Stores a whole file; it is durable when this returns.
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&ObjectPath::from(path), PutPayload::from(bytes))
            .await?;
        if let Some(root) = &self.local_root {
            let full = root.join(path);
            tokio::task::spawn_blocking(move || fsync_file_and_parents(&full))
                .await
                .map_err(|e| StorageError::Internal(format!("fsync task: {e}")))??;
        }
        Ok(())
    }

    /// Reads a whole file.
    pub async fn get(&self, path: &str) -> Result<bytes::Bytes> {
        Ok(self
            .store
            .get(&ObjectPath::from(path))
            .await?
            .bytes()
            .await?)
    }

    /// Reads `range` of a file.
    pub async fn get_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
        Ok(self.store.get_range(&ObjectPath::from(path), range).await?)
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        let location = ObjectPath::from(path);
        let deleted = match &self.cached {
            Some(cached) => cached.delete_object(&location).await,
            None => self.store.delete(&location).await,
        };
        match deleted {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every stored file.
    pub async fn list(&self) -> Result<Vec<StoredFile>> {
        let items: Vec<_> = self.store.list(None).try_collect().await?;
        Ok(items
            .into_iter()
            .map(|m| StoredFile {
                path: m.location.to_string(),
                last_modified: m.last_modified,
            })
            .collect())
    }
}

fn fsync_file_and_parents(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StorageError::io("fsync", path, e))?;
    // The new directory entries (date=…/hour=…/file) must be durable too.
    let mut dir = path.parent();
    for _ in 0..3 {
        let Some(d) = dir else { break };
        crate::wal::sync_dir(d)?;
        dir = d.parent();
    }
    Ok(())
}
