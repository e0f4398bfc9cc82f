//! Writing, swapping and deleting split files together with their catalog
//! rows — the one place flush and maintenance both go through, so the
//! catalog, the in-memory split lists and the object store stay in step.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::catalog::{Catalog, SplitMeta, WalProgress};
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
    /// This node's recent catalog changes, so a reload that read the
    /// catalog before them does not undo them.
    pub(crate) recent: Mutex<RecentChanges>,
    /// One reload at a time: a listing read before another's must not be
    /// applied after it (the follower and a query's reload may race).
    pub(crate) reloading: tokio::sync::Mutex<()>,
}

/// Other nodes' WAL positions per signal, from a listing's `progress`.
pub(crate) fn peers_flushed(own: &str, progress: &[WalProgress]) -> [Arc<HashMap<String, u64>>; 3] {
    let mut peers: [HashMap<String, u64>; 3] = Default::default();
    for p in progress.iter().filter(|p| p.node != own) {
        peers[p.signal.index()].insert(p.node.clone(), p.flushed_seq);
    }
    peers.map(Arc::new)
}

/// Splits this node published or removed, each with the change counter
/// at the time: a reload started at counter `n` read the catalog before
/// every change numbered above `n`.
#[derive(Default)]
pub(crate) struct RecentChanges {
    counter: u64,
    published: HashMap<String, u64>,
    removed: HashMap<String, u64>,
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

    /// Records that `published` were committed and `removed` deleted by
    /// this node: call after the catalog commit, before the in-memory lists
    /// change. (Only a shared catalog is reloaded, so only there it counts.)
    pub(crate) fn note_committed(&self, published: &[SplitMeta], removed: &[SplitMeta]) {
        if self.pg.is_none() {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.counter += 1;
        let n = recent.counter;
        for split in published {
            recent.published.insert(split.id.clone(), n);
        }
        for split in removed {
            recent.removed.insert(split.id.clone(), n);
        }
    }

    /// Reloads the split list from a shared catalog. Other nodes' splits
    /// are taken as listed (one another node published shows up here, one
    /// it replaced goes); this node's own are never added (a flush adds
    /// them together with removing their rows from the memtable) but go
    /// once the catalog no longer names them — the maintenance leader
    /// compacted or expired them. Returns whether the listing predates some
    /// of this node's own changes: then it may also miss what replaced
    /// them, and the caller reloads again shortly.
    pub(crate) async fn refresh(&self) -> Result<bool> {
        let _one_at_a_time = self.reloading.lock().await;
        let since = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counter;
        let (listed, progress) = self.catalog.list_splits_and_progress().await?;
        let peers = peers_flushed(&self.node_id, &progress);
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let newer =
            |changes: &HashMap<String, u64>, id: &str| changes.get(id).is_some_and(|&n| n > since);
        let own = |s: &SplitMeta| s.node.as_deref().is_none_or(|n| n == self.node_id);
        let names: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        self.shared.with_state(|state| {
            for signal in Signal::ALL {
                let list = &mut state.splits[signal.index()];
                list.retain(|s| {
                    own(s) && (names.contains(s.id.as_str()) || newer(&recent.published, &s.id))
                });
                list.extend(
                    listed
                        .iter()
                        .filter(|s| s.signal == signal && !own(s))
                        .filter(|s| !newer(&recent.removed, &s.id))
                        .cloned()
                        .map(Arc::new),
                );
            }
            // Under the same lock as the lists: a query's snapshot pairs
            // the splits with the positions they cover.
            state.peers_flushed = peers;
        });
        drop(recent);
        // Changes this reload saw need no protection any more.
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.published.retain(|_, n| *n > since);
        recent.removed.retain(|_, n| *n > since);
        Ok(!recent.published.is_empty() || !recent.removed.is_empty())
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
        self.note_committed(&new, old);
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
