//! Following other nodes' splits in a shared PostgreSQL catalog: every
//! change of the split list is announced (`NOTIFY loupe_splits`), and each
//! node reloads the split list as soon as one arrives — so a query on
//! any node sees a split about as soon as it commits — and every few
//! seconds besides, in case a notification was lost with its connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::catalog_pg::SPLITS_CHANNEL;
use crate::split_files::SplitFiles;

/// Reload this soon when a listing was older than this node's own latest
/// changes (its files may have been replaced meanwhile).
const RELOAD_AGAIN: Duration = Duration::from_millis(250);

/// Reload without a notification this often.
const FALLBACK_RELOAD: Duration = Duration::from_secs(10);

/// Runs until `stop`.
pub(crate) async fn follow(files: Arc<SplitFiles>, url: String, mut stop: watch::Receiver<bool>) {
    loop {
        let mut listener = match loupe_catalog::pg::listen(&url, SPLITS_CHANNEL).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for split announcements; reloading every {}s", FALLBACK_RELOAD.as_secs());
                None
            }
        };
        loop {
            let again = match files.refresh().await {
                Ok(stale) => stale,
                Err(e) => {
                    tracing::warn!(error = %e, "reloading the split list failed; will retry");
                    false
                }
            };
            let announced = async {
                match listener.as_mut() {
                    Some(l) => {
                        let first = l.notifications.recv().await;
                        // Coalesce a burst into one reload.
                        while l.notifications.try_recv().is_ok() {}
                        first.is_some()
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                // The listing predated this node's own last changes.
                _ = tokio::time::sleep(RELOAD_AGAIN), if again => {}
                open = announced => if !open { break },
                _ = tokio::time::sleep(FALLBACK_RELOAD) => if listener.is_none() { break },
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
