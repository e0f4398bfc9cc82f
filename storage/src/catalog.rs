//! The catalog: which Parquet files ("splits") exist, what they hold, and
//! how far each signal's WAL has been flushed into them.
//!
//! A split becomes visible to queries only once its catalog row commits, and
//! the row commits in the same transaction as the signal's new flushed WAL
//! sequence number, so a crash anywhere leaves either the old state (the WAL
//! still replays the rows) or the new one (the replay skips them).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::schema::Signal;

/// One Parquet file and the facts that let a query skip it unopened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMeta {
    pub id: String,
    pub signal: Signal,
    /// Object-store path relative to the data root.
    pub path: String,
    /// The full-text index bundle beside it (logs only).
    pub index_path: Option<String>,
    /// Smallest and largest value of the signal's time column, in ns since the epoch.
    pub min_time: i64,
    pub max_time: i64,
    pub row_count: u64,
    pub byte_size: u64,
    /// Uncompressed size of the data (Parquet's row-group total), which
    /// bounds what merging the file costs in memory; 0 for files written
    /// before it was recorded.
    #[serde(default)]
    pub raw_bytes: u64,
    /// Distinct `service` values in the file, sorted.
    pub services: Vec<String>,
    pub created_at: i64,
    /// Written by compaction, in its encoding; a flushed file is not.
    /// Compaction rewrites an hour's lone flushed file once it settles, so
    /// quiet hours get the encoding busy hours get by merging. Files
    /// recorded before this was read as flushed (rewritten once).
    #[serde(default)]
    pub compacted: bool,
    /// The node that wrote it, in a catalog several nodes share (`None`:
    /// this node's own catalog). A split a compaction wrote names the
    /// maintenance leader that wrote it, whoever wrote its inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl SplitMeta {
    /// Whether the file may hold rows in `[start, end]` (inclusive ns).
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.min_time <= end && self.max_time >= start
    }
}

/// How far one node's WAL of one signal is in committed splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalProgress {
    pub node: String,
    pub signal: Signal,
    /// Every record of `signal` in `node`'s WAL up to this is in a split.
    pub flushed_seq: u64,
}

/// Persistent metadata: the embedded SQLite file by default
/// ([`SqliteCatalog`]), PostgreSQL for several nodes sharing one object
/// store ([`crate::PgCatalog`]).
#[async_trait::async_trait]
pub trait Catalog: Send + Sync {
    /// Adds `splits` of `signal` and records that every WAL record of that
    /// signal up to `flushed_seq` is now in Parquet, atomically.
    async fn commit_flush(
        &self,
        signal: Signal,
        splits: &[SplitMeta],
        flushed_seq: u64,
    ) -> Result<()>;
    /// Removes the splits `remove` and adds `add`, atomically (compaction
    /// and retention).
    async fn replace_splits(&self, remove: &[String], add: &[SplitMeta]) -> Result<()>;
    /// Every split of every signal.
    async fn list_splits(&self) -> Result<Vec<SplitMeta>>;
    /// Every split, and every node's WAL positions as of the same instant
    /// (one snapshot of a shared catalog), so a reader knows which of each
    /// node's acknowledged rows the listed splits hold. A single node's
    /// catalog has no other nodes: its own positions are not listed.
    async fn list_splits_and_progress(&self) -> Result<(Vec<SplitMeta>, Vec<WalProgress>)> {
        Ok((self.list_splits().await?, Vec::new()))
    }
    /// The highest WAL sequence number of `signal` (of this node's WAL)
    /// already in Parquet (0: none).
    async fn flushed_seq(&self, signal: Signal) -> Result<u64>;
    /// Whether a failed commit surely did not happen (a local database), so
    /// its files may go at once; a remote one may have committed before
    /// the connection broke, and leaves them to orphan collection.
    fn failed_commits_are_certain(&self) -> bool {
        true
    }
}

/// The embedded catalog: one SQLite file in the data directory.
pub struct SqliteCatalog {
    conn: Arc<Mutex<Connection>>,
}

/// The storage component's tables in the catalog database.
pub const SCHEMA: loupe_catalog::Schema = loupe_catalog::Schema {
    component: "storage",
    migrations: &[
        "
    CREATE TABLE IF NOT EXISTS splits (
        id          TEXT PRIMARY KEY,
        signal      TEXT NOT NULL,
        path        TEXT NOT NULL UNIQUE,
        index_path  TEXT,
        min_time    INTEGER NOT NULL,
        max_time    INTEGER NOT NULL,
        row_count   INTEGER NOT NULL,
        byte_size   INTEGER NOT NULL,
        services    TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS splits_by_time ON splits (signal, min_time, max_time);
    CREATE TABLE IF NOT EXISTS wal_progress (
        signal       TEXT PRIMARY KEY,
        flushed_seq  INTEGER NOT NULL
    );",
        "ALTER TABLE splits ADD COLUMN raw_bytes INTEGER NOT NULL DEFAULT 0;",
        "ALTER TABLE splits ADD COLUMN compacted INTEGER NOT NULL DEFAULT 0;",
    ],
};

impl SqliteCatalog {
    pub fn open(path: &Path) -> Result<SqliteCatalog> {
        // WAL journal + FULL sync: a committed flush survives power loss.
        let conn = loupe_catalog::open(path, &[&SCHEMA])?;
        Ok(SqliteCatalog {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the async threads (SQLite blocks).
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StorageError::Internal(format!("catalog task: {e}")))?
    }
}

fn insert_splits(tx: &rusqlite::Transaction<'_>, splits: &[SplitMeta]) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO splits (id, signal, path, index_path, min_time, max_time, row_count, byte_size, services, created_at, raw_bytes, compacted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for split in splits {
        let services = serde_json::to_string(&split.services)
            .map_err(|e| StorageError::Internal(format!("encode services: {e}")))?;
        insert.execute(params![
            split.id,
            split.signal.name(),
            split.path,
            split.index_path,
            split.min_time,
            split.max_time,
            split.row_count as i64,
            split.byte_size as i64,
            services,
            split.created_at,
            split.raw_bytes as i64,
            split.compacted,
        ])?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Catalog for SqliteCatalog {
    async fn replace_splits(&self, remove: &[String], add: &[SplitMeta]) -> Result<()> {
        let (remove, add) = (remove.to_vec(), add.to_vec());
        self.with_conn(move |conn| replace_splits(conn, &remove, &add))
            .await
    }

    async fn commit_flush(
        &self,
        signal: Signal,
        splits: &[SplitMeta],
        flushed_seq: u64,
    ) -> Result<()> {
        let splits = splits.to_vec();
        self.with_conn(move |conn| commit_flush(conn, signal, &splits, flushed_seq))
            .await
    }

    async fn list_splits(&self) -> Result<Vec<SplitMeta>> {
        self.with_conn(list_splits).await
    }

    async fn flushed_seq(&self, signal: Signal) -> Result<u64> {
        self.with_conn(move |conn| flushed_seq(conn, signal)).await
    }
}

fn replace_splits(conn: &mut Connection, remove: &[String], add: &[SplitMeta]) -> Result<()> {
    {
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM splits WHERE id = ?1")?;
            for id in remove {
                if delete.execute([id])? != 1 {
                    return Err(StorageError::Internal(format!(
                        "split {id} is not in the catalog"
                    )));
                }
            }
        }
        insert_splits(&tx, add)?;
        tx.commit()?;
        Ok(())
    }
}

fn commit_flush(
    conn: &mut Connection,
    signal: Signal,
    splits: &[SplitMeta],
    flushed_seq: u64,
) -> Result<()> {
    {
        let tx = conn.transaction()?;
        insert_splits(&tx, splits)?;
        tx.execute(
            "INSERT INTO wal_progress (signal, flushed_seq) VALUES (?1, ?2)
             ON CONFLICT (signal) DO UPDATE SET flushed_seq = max(flushed_seq, excluded.flushed_seq)",
            params![signal.name(), flushed_seq as i64],
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn list_splits(conn: &mut Connection) -> Result<Vec<SplitMeta>> {
    {
        let mut stmt = conn.prepare(
            "SELECT id, signal, path, index_path, min_time, max_time, row_count, byte_size, services, created_at, raw_bytes, compacted
             FROM splits ORDER BY min_time",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                (
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ),
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, i64>(6)?,
                row.get::<_, i64>(7)?,
                row.get::<_, String>(8)?,
                (
                    row.get::<_, i64>(9)?,
                    row.get::<_, i64>(10)?,
                    row.get::<_, bool>(11)?,
                ),
            ))
        })?;
        let mut splits = Vec::new();
        for row in rows {
            let (
                (id, signal, path, index_path),
                min_time,
                max_time,
                rows,
                bytes,
                services,
                (created_at, raw_bytes, compacted),
            ) = row?;
            let signal = signal
                .parse::<Signal>()
                .map_err(|e| StorageError::Internal(format!("catalog row {id}: {e}")))?;
            let services = serde_json::from_str(&services)
                .map_err(|e| StorageError::Internal(format!("catalog row {id}: services: {e}")))?;
            splits.push(SplitMeta {
                id,
                signal,
                path,
                index_path,
                min_time,
                max_time,
                row_count: rows as u64,
                byte_size: bytes as u64,
                raw_bytes: raw_bytes as u64,
                services,
                created_at,
                compacted,
                node: None,
            });
        }
        Ok(splits)
    }
}

fn flushed_seq(conn: &mut Connection, signal: Signal) -> Result<u64> {
    {
        let seq: Option<i64> = conn
            .query_row(
                "SELECT flushed_seq FROM wal_progress WHERE signal = ?1",
                [signal.name()],
                |row| row.get(0),
            )
            .optional()?;
        Ok(seq.unwrap_or(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(id: &str, min: i64, max: i64) -> SplitMeta {
        SplitMeta {
            id: id.into(),
            signal: Signal::Logs,
            path: format!("logs/{id}.parquet"),
            index_path: Some(format!("logs/{id}.idx")),
            min_time: min,
            max_time: max,
            row_count: 10,
            byte_size: 100,
            raw_bytes: 1000,
            services: vec!["a".into(), "b".into()],
            created_at: 1,
            compacted: false,
            node: None,
        }
    }

    fn compacted(id: &str, min: i64, max: i64) -> SplitMeta {
        SplitMeta {
            compacted: true,
            ..split(id, min, max)
        }
    }

    #[tokio::test]
    async fn flush_commits_splits_and_progress_together_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        {
            let catalog = SqliteCatalog::open(&path).unwrap();
            assert_eq!(catalog.flushed_seq(Signal::Logs).await.unwrap(), 0);
            catalog
                .commit_flush(Signal::Logs, &[split("x", 5, 9), compacted("y", 1, 3)], 17)
                .await
                .unwrap();
            // A duplicate path aborts the whole transaction: progress stays.
            assert!(
                catalog
                    .commit_flush(Signal::Logs, &[split("x", 5, 9)], 30)
                    .await
                    .is_err()
            );
        }
        let catalog = SqliteCatalog::open(&path).unwrap();
        assert_eq!(catalog.flushed_seq(Signal::Logs).await.unwrap(), 17);
        assert_eq!(catalog.flushed_seq(Signal::Spans).await.unwrap(), 0);
        let splits = catalog.list_splits().await.unwrap();
        assert_eq!(splits, vec![compacted("y", 1, 3), split("x", 5, 9)]);
        assert!(splits[0].overlaps(3, 4));
        assert!(!splits[0].overlaps(4, 5));
    }
}
