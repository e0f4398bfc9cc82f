//! The catalog database: where every piece of Loupe's state other than
//! telemetry lives (splits and WAL positions, capacity policies and tasks,
//! the webhook outbox). Each component owns a [`Schema`] — its name and an
//! ordered list of migrations — and opens the shared file through [`open`],
//! which applies the pragmas once and brings every registered schema up to
//! date. Versions are tracked per component in `schema_versions`, so
//! components evolve independently and a second implementation (PostgreSQL)
//! can keep the same bookkeeping.

pub mod db;
pub mod lease;
pub mod pg;

use std::path::Path;
use std::time::Duration;

pub use tokio_postgres;

pub use rusqlite;
use rusqlite::{Connection, OptionalExtension, params};

/// What can go wrong opening or migrating the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogDbError {
    #[error("catalog database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("catalog on PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("catalog on PostgreSQL: no answer in time")]
    Timeout,
    #[error("catalog on PostgreSQL: connection closed")]
    Closed,
    #[error("catalog row: {0}")]
    Column(String),
    #[error(
        "the catalog's {component} schema is at version {found}, newer than this Loupe knows ({known}): run a newer Loupe or restore a backup"
    )]
    TooNew {
        component: &'static str,
        found: i64,
        known: i64,
    },
}

/// A component's tables: migration `i` (0-based) takes the schema to
/// version `i + 1`. Migrations are append-only: never edit one that shipped.
#[derive(Debug)]
pub struct Schema {
    pub component: &'static str,
    pub migrations: &'static [&'static str],
}

/// Opens (creating if needed) the catalog at `path`, durable against power
/// loss (WAL journal, `synchronous = FULL`), and migrates `schemas`.
pub fn open(path: &Path, schemas: &[&Schema]) -> Result<Connection, CatalogDbError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    migrate(&conn, schemas)?;
    Ok(conn)
}

/// An in-memory catalog with `schemas` applied, for tests.
pub fn open_in_memory(schemas: &[&Schema]) -> Result<Connection, CatalogDbError> {
    let conn = Connection::open_in_memory()?;
    migrate(&conn, schemas)?;
    Ok(conn)
}

/// Brings each schema up to its latest version, one transaction per step.
pub fn migrate(conn: &Connection, schemas: &[&Schema]) -> Result<(), CatalogDbError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_versions (
            component TEXT PRIMARY KEY,
            version   INTEGER NOT NULL
        )",
    )?;
    for schema in schemas {
        let known = schema.migrations.len() as i64;
        let found = version(conn, schema.component)?;
        if found > known {
            return Err(CatalogDbError::TooNew {
                component: schema.component,
                found,
                known,
            });
        }
        for (i, sql) in schema.migrations.iter().enumerate().skip(found as usize) {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let step = conn.execute_batch(sql).and_then(|()| {
                conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES (?1, ?2)
                     ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    params![schema.component, i as i64 + 1],
                )
            });
            match step {
                Ok(_) => conn.execute_batch("COMMIT")?,
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

/// The version `component`'s schema is at (0 = never migrated).
pub fn version(conn: &Connection, component: &str) -> Result<i64, CatalogDbError> {
    Ok(conn
        .query_row(
            "SELECT version FROM schema_versions WHERE component = ?1",
            [component],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Schema = Schema {
        component: "things",
        migrations: &["CREATE TABLE things (id INTEGER PRIMARY KEY)"],
    };
    const V2: Schema = Schema {
        component: "things",
        migrations: &[
            "CREATE TABLE things (id INTEGER PRIMARY KEY)",
            "ALTER TABLE things ADD COLUMN name TEXT",
        ],
    };

    #[test]
    fn migrates_forward_once_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let conn = open(&path, &[&V1]).unwrap();
        conn.execute("INSERT INTO things (id) VALUES (1)", [])
            .unwrap();
        drop(conn);
        let conn = open(&path, &[&V2]).unwrap();
        assert_eq!(version(&conn, "things").unwrap(), 2);
        conn.execute("UPDATE things SET name = 'a' WHERE id = 1", [])
            .unwrap();
        drop(conn);
        // Reopening at the same version runs nothing again.
        let conn = open(&path, &[&V2]).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM things", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        drop(conn);
        let err = open(&path, &[&V1]).unwrap_err();
        assert!(
            matches!(
                err,
                CatalogDbError::TooNew {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_failed_migration_leaves_the_version_unchanged() {
        const BAD: Schema = Schema {
            component: "bad",
            migrations: &["CREATE TABLE ok (x)", "CREATE TABLE broken ("],
        };
        let conn = open_in_memory(&[&BAD]).unwrap_err();
        assert!(matches!(conn, CatalogDbError::Sqlite(_)));
        let conn = Connection::open_in_memory().unwrap();
        assert!(migrate(&conn, &[&BAD]).is_err());
        assert_eq!(version(&conn, "bad").unwrap(), 1);
    }
}
