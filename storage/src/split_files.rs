//! Writing, swapping and deleting split files together with their catalog
//! rows — the one place flush and maintenance both go through, so the
//! catalog, the in-memory split lists and the object store stay in step.

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Catalog, SplitMeta};
use crate::error::Result;
use crate::schema::Signal;
use crate::shared::Shared;
use crate::split_store::SplitStore;

/// Split files and the catalog that names them.
pub(crate) struct SplitFiles {
    pub(crate) catalog: Arc<dyn Catalog>,
    /// The PostgreSQL catalog behind `catalog`, if that is where it lives.
    pub(crate) pg: Option<Arc<loupe_catalog::pg::PgDb>>,
    pub(crate) node_id: String,
    pub(crate) store: SplitStore,
    pub(crate) shared: Arc<Shared>,
    /// Replaced files stay this long, for queries still reading them.
    pub(crate) delete_grace: Duration,
}

impl SplitFiles {
    /// Writes a split's Parquet file and, when it has one, its index.
    pub(crate) async fn put(
        &self,
        meta: &SplitMeta,
        parquet: Vec<u8>,
        index: Option<Vec<u8>>,
    ) -> Result<()> {
        self.store.put(&meta.path, parquet).await?;
        if let (Some(path), Some(index)) = (&meta.index_path, index) {
            self.store.put(path, index).await?;
        }
        Ok(())
    }

    /// Reloads other nodes' splits from a shared catalog (this node's own
    /// stay as this node keeps them): a split another node published shows
    /// up here, one it replaced goes.
    pub(crate) async fn refresh_foreign(&self) -> Result<()> {
        let own = |s: &SplitMeta| s.node.as_deref().is_none_or(|n| n == self.node_id);
        let foreign: Vec<SplitMeta> = self
            .catalog
            .list_splits()
            .await?
            .into_iter()
            .filter(|s| !own(s))
            .collect();
        self.shared.with_state(|state| {
            for signal in Signal::ALL {
                let list = &mut state.splits[signal.index()];
                list.retain(|s| own(s));
                list.extend(
                    foreign
                        .iter()
                        .filter(|s| s.signal == signal)
                        .cloned()
                        .map(Arc::new),
                );
            }
        });
        Ok(())
    }

    /// Best-effort removal of files no catalog row names (yet): whatever
    /// stays is swept at the next start.
    pub(crate) async fn delete(&self, meta: &SplitMeta) {
        let _ = self.store.delete(&meta.path).await;
        if let Some(path) = &meta.index_path {
            let _ = self.store.delete(path).await;
        }
    }

    /// Swaps `old` splits for `new` ones in the catalog and for queries,
    /// then deletes the old files once running queries are done with them.
    pub(crate) async fn replace(
        &self,
        signal: Signal,
        old: &[SplitMeta],
        new: Vec<SplitMeta>,
    ) -> Result<()> {
        let remove: Vec<String> = old.iter().map(|s| s.id.clone()).collect();
        self.catalog.replace_splits(&remove, &new).await?;
        self.shared.with_state(|state| {
            let list = &mut state.splits[signal.index()];
            list.retain(|s| !old.iter().any(|o| o.id == s.id));
            list.extend(new.into_iter().map(Arc::new));
        });
        let grace = self.delete_grace;
        let (store, old) = (self.store.clone(), old.to_vec());
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
}
