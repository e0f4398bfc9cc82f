//! Where split files live: any `object_store` (local disk by default). On
//! local disk a written file is fsync'd before its catalog row commits, so
//! a committed split survives power loss even after its WAL is deleted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Result, StorageError};

/// The URL under which queries find split files (`loupe://splits/<path>`).
pub const STORE_URL: &str = "loupe://splits/";

#[derive(Clone)]
pub struct SplitStore {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

impl SplitStore {
    /// Split files under `root` on the local file system.
    pub fn local(root: &Path) -> Result<SplitStore> {
        std::fs::create_dir_all(root).map_err(|e| StorageError::io("create directory", root, e))?;
        let store = LocalFileSystem::new_with_prefix(root)?;
        Ok(SplitStore {
            store: Arc::new(store),
            local_root: Some(root.to_path_buf()),
        })
    }

    /// Where a stored file is on the local file system, for readers that
    /// cannot wait on the object store (phrase checks inside a search).
    pub fn local_path(&self, path: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| root.join(path))
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
        match self.store.delete(&ObjectPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every stored path.
    pub async fn list(&self) -> Result<Vec<String>> {
        let items: Vec<_> = self.store.list(None).try_collect().await?;
        Ok(items.into_iter().map(|m| m.location.to_string()).collect())
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
