//! The splits catalog on PostgreSQL, shared by every node over one object
//! store. Splits are global; WAL positions are per node (each node has its
//! own WAL), keyed by the node's id.

use std::sync::Arc;

use loupe_catalog::pg::{PgDb, PgSchema};
use loupe_catalog::{CatalogDbError, tokio_postgres};

use crate::catalog::{Catalog, SplitMeta, WalProgress};
use crate::error::{Result, StorageError};
use crate::schema::Signal;

/// The channel every change of the split list is announced on (payload:
/// the writing node's id), so other nodes reload it at once.
pub const SPLITS_CHANNEL: &str = "loupe_splits";

/// The storage component's tables on PostgreSQL.
pub const PG_SCHEMA: PgSchema = PgSchema {
    component: "storage",
    migrations: &[
        "
    CREATE TABLE splits (
        id          TEXT PRIMARY KEY,
        signal      TEXT NOT NULL,
        path        TEXT NOT NULL UNIQUE,
        index_path  TEXT,
        min_time    BIGINT NOT NULL,
        max_time    BIGINT NOT NULL,
        row_count   BIGINT NOT NULL,
        byte_size   BIGINT NOT NULL,
        raw_bytes   BIGINT NOT NULL,
        services    TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        node        TEXT NOT NULL
    );
    CREATE INDEX splits_by_time ON splits (signal, min_time, max_time);
    CREATE TABLE wal_progress (
        node         TEXT NOT NULL,
        signal       TEXT NOT NULL,
        flushed_seq  BIGINT NOT NULL,
        PRIMARY KEY (node, signal)
    );",
        "ALTER TABLE splits ADD COLUMN compacted BOOLEAN NOT NULL DEFAULT false;",
    ],
};

const LIST_SPLITS: &str = "SELECT id, signal, path, index_path, min_time, max_time, row_count, byte_size, raw_bytes, services, created_at, node, compacted
     FROM splits ORDER BY min_time, id";

fn splits_from_rows(rows: Vec<tokio_postgres::Row>) -> Result<Vec<SplitMeta>> {
    let mut splits = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        let signal = row
            .get::<_, String>(1)
            .parse::<Signal>()
            .map_err(|e| StorageError::Internal(format!("catalog row {id}: {e}")))?;
        let services = serde_json::from_str(row.get::<_, &str>(9))
            .map_err(|e| StorageError::Internal(format!("catalog row {id}: services: {e}")))?;
        splits.push(SplitMeta {
            signal,
            path: row.get(2),
            index_path: row.get(3),
            min_time: row.get(4),
            max_time: row.get(5),
            row_count: row.get::<_, i64>(6) as u64,
            byte_size: row.get::<_, i64>(7) as u64,
            raw_bytes: row.get::<_, i64>(8) as u64,
            services,
            created_at: row.get(10),
            node: Some(row.get(11)),
            compacted: row.get(12),
            id,
        });
    }
    Ok(splits)
}

/// Splits and WAL positions in PostgreSQL.
pub struct PgCatalog {
    db: Arc<PgDb>,
    node: String,
}

impl PgCatalog {
    /// The catalog in `db` (migrated with [`PG_SCHEMA`]), keeping WAL
    /// positions under `node` (this process's stable id).
    pub fn new(db: Arc<PgDb>, node: String) -> PgCatalog {
        PgCatalog { db, node }
    }
}

fn pg(e: tokio_postgres::Error) -> StorageError {
    StorageError::CatalogDb(CatalogDbError::Postgres(e))
}

/// Announces a split-list change, delivered when `tx` commits.
async fn announce(tx: &tokio_postgres::Transaction<'_>, node: &str) -> Result<()> {
    tx.execute("SELECT pg_notify($1, $2)", &[&SPLITS_CHANNEL, &node])
        .await
        .map_err(pg)?;
    Ok(())
}

async fn insert_splits(
    tx: &tokio_postgres::Transaction<'_>,
    node: &str,
    splits: &[SplitMeta],
) -> Result<()> {
    if splits.is_empty() {
        return Ok(());
    }
    let insert = tx
        .prepare(
            "INSERT INTO splits (id, signal, path, index_path, min_time, max_time, row_count, byte_size, raw_bytes, services, created_at, node, compacted)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .await
        .map_err(pg)?;
    for split in splits {
        let services = serde_json::to_string(&split.services)
            .map_err(|e| StorageError::Internal(format!("encode services: {e}")))?;
        tx.execute(
            &insert,
            &[
                &split.id,
                &split.signal.name(),
                &split.path,
                &split.index_path,
                &split.min_time,
                &split.max_time,
                &(split.row_count as i64),
                &(split.byte_size as i64),
                &(split.raw_bytes as i64),
                &services,
                &split.created_at,
                &node,
                &split.compacted,
            ],
        )
        .await
        .map_err(pg)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Catalog for PgCatalog {
    async fn commit_flush(
        &self,
        signal: Signal,
        splits: &[SplitMeta],
        flushed_seq: u64,
    ) -> Result<()> {
        let mut client = self.db.client().await?;
        let client = client.as_mut().ok_or(CatalogDbError::Closed)?;
        let tx = client.transaction().await.map_err(pg)?;
        insert_splits(&tx, &self.node, splits).await?;
        tx.execute(
            "INSERT INTO wal_progress (node, signal, flushed_seq) VALUES ($1, $2, $3)
             ON CONFLICT (node, signal) DO UPDATE
             SET flushed_seq = greatest(wal_progress.flushed_seq, excluded.flushed_seq)",
            &[&self.node, &signal.name(), &(flushed_seq as i64)],
        )
        .await
        .map_err(pg)?;
        if !splits.is_empty() {
            announce(&tx, &self.node).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    async fn replace_splits(&self, remove: &[String], add: &[SplitMeta]) -> Result<()> {
        let mut client = self.db.client().await?;
        let client = client.as_mut().ok_or(CatalogDbError::Closed)?;
        let tx = client.transaction().await.map_err(pg)?;
        // Only compaction and retention swap splits, and only the
        // maintenance leader runs them: fence out a deposed one. Sharing
        // the lease row's lock also holds off a takeover until this commits.
        let leading = tx
            .query_opt(
                "SELECT epoch FROM leases WHERE name = $1 AND holder = $2 AND expires_at > now() FOR SHARE",
                &[&loupe_catalog::lease::MAINTENANCE, &self.node],
            )
            .await
            .map_err(pg)?;
        if leading.is_none() {
            return Err(StorageError::Internal(
                "not the maintenance leader (its lease expired or passed on): split swap refused"
                    .into(),
            ));
        }
        for id in remove {
            if tx
                .execute("DELETE FROM splits WHERE id = $1", &[id])
                .await
                .map_err(pg)?
                != 1
            {
                return Err(StorageError::Internal(format!(
                    "split {id} is not in the catalog"
                )));
            }
        }
        insert_splits(&tx, &self.node, add).await?;
        announce(&tx, &self.node).await?;
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    async fn list_splits(&self) -> Result<Vec<SplitMeta>> {
        let client = self.db.client().await?;
        let client = client.as_ref().ok_or(CatalogDbError::Closed)?;
        let rows = client.query(LIST_SPLITS, &[]).await.map_err(pg)?;
        splits_from_rows(rows)
    }

    async fn list_splits_and_progress(&self) -> Result<(Vec<SplitMeta>, Vec<WalProgress>)> {
        let mut client = self.db.client().await?;
        let client = client.as_mut().ok_or(CatalogDbError::Closed)?;
        // One snapshot for both reads: a flush commits its splits and its
        // WAL position together, so they agree.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let splits = splits_from_rows(tx.query(LIST_SPLITS, &[]).await.map_err(pg)?)?;
        let rows = tx
            .query("SELECT node, signal, flushed_seq FROM wal_progress", &[])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        let mut progress = Vec::with_capacity(rows.len());
        for row in rows {
            let node: String = row.get(0);
            let signal = row
                .get::<_, String>(1)
                .parse::<Signal>()
                .map_err(|e| StorageError::Internal(format!("wal_progress of {node}: {e}")))?;
            progress.push(WalProgress {
                node,
                signal,
                flushed_seq: row.get::<_, i64>(2).max(0) as u64,
            });
        }
        Ok((splits, progress))
    }

    async fn flushed_seq(&self, signal: Signal) -> Result<u64> {
        let client = self.db.client().await?;
        let client = client.as_ref().ok_or(CatalogDbError::Closed)?;
        let seq: Option<i64> = client
            .query_opt(
                "SELECT flushed_seq FROM wal_progress WHERE node = $1 AND signal = $2",
                &[&self.node, &signal.name()],
            )
            .await
            .map_err(pg)?
            .map(|row| row.get(0));
        Ok(seq.unwrap_or(0) as u64)
    }

    fn failed_commits_are_certain(&self) -> bool {
        false
    }
}
