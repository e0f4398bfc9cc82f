//! The catalog on PostgreSQL, for several Loupe processes sharing one
//! object store: a reconnecting client ([`PgDb`]), the same per-component
//! versioned migrations as the SQLite catalog (`schema_versions`), and node
//! membership (each process beats its row in `nodes`).
//!
//! Connections are plain TCP (`NoTls`): keep PostgreSQL on a private
//! network or loopback, or put a TLS-terminating proxy in front of it.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use crate::CatalogDbError;

/// A component's PostgreSQL tables: migration `i` (0-based) takes the
/// schema to version `i + 1`. Append-only, like [`crate::Schema`].
#[derive(Debug)]
pub struct PgSchema {
    pub component: &'static str,
    pub migrations: &'static [&'static str],
}

/// Time limit for connecting and for any one statement.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const STATEMENT_TIMEOUT_MS: u32 = 30_000;

/// One PostgreSQL connection, re-established on the next use after it
/// breaks (a restarted server or a dropped connection heals by itself).
pub struct PgDb {
    url: String,
    client: Mutex<Option<Client>>,
}

impl PgDb {
    /// Connects to `url` (`postgres://user:pass@host:port/db`) and migrates
    /// `schemas`.
    pub async fn open(url: &str, schemas: &[&PgSchema]) -> Result<PgDb, CatalogDbError> {
        let db = PgDb {
            url: url.to_string(),
            client: Mutex::new(None),
        };
        {
            let mut client = db.client().await?;
            let client = client.as_mut().ok_or(CatalogDbError::Closed)?;
            migrate(client, schemas).await?;
        }
        Ok(db)
    }

    /// The connection, reconnecting if it is closed. Holding the guard
    /// serialises users of this connection (transactions need `&mut`).
    pub async fn client(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, CatalogDbError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(connect(&self.url).await?);
        }
        Ok(guard)
    }
}

async fn connect(url: &str) -> Result<Client, CatalogDbError> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("loupe");
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| CatalogDbError::Timeout)??;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "catalog connection to PostgreSQL closed");
        }
    });
    client
        .batch_execute(&format!(
            "SET statement_timeout = {STATEMENT_TIMEOUT_MS}; SET lock_timeout = {STATEMENT_TIMEOUT_MS}"
        ))
        .await?;
    Ok(client)
}

/// A connection listening on one channel: each notification's payload
/// arrives on `notifications`, which closes when the connection does (the
/// holder reconnects). Beyond a small backlog notifications are dropped —
/// listeners reload state, so one pending wake-up is enough.
pub struct Listener {
    pub notifications: tokio::sync::mpsc::Receiver<String>,
    _client: Client,
}

/// Opens a connection of its own and listens on `channel`.
pub async fn listen(url: &str, channel: &str) -> Result<Listener, CatalogDbError> {
    use futures::StreamExt;
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("loupe-listen");
    let (client, mut connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| CatalogDbError::Timeout)??;
    let (tx, notifications) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.try_send(n.payload().to_string());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "catalog listen connection closed");
                    break;
                }
            }
        }
    });
    let quoted = channel.replace('"', "\"\"");
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.batch_execute(&format!("LISTEN \"{quoted}\"")),
    )
    .await
    .map_err(|_| CatalogDbError::Timeout)??;
    Ok(Listener {
        notifications,
        _client: client,
    })
}

/// Brings each schema up to date, one transaction per step. Nodes starting
/// together take turns on an advisory lock, so each step runs once.
pub async fn migrate(client: &mut Client, schemas: &[&PgSchema]) -> Result<(), CatalogDbError> {
    const MIGRATION_LOCK: i64 = 0x6c6f_7570_655f_6d67; // "loupe_mg"
    for schema in schemas {
        let known = schema.migrations.len() as i64;
        loop {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_versions (
                    component TEXT PRIMARY KEY,
                    version   BIGINT NOT NULL
                )",
            )
            .await?;
            let found: i64 = tx
                .query_opt(
                    "SELECT version FROM schema_versions WHERE component = $1",
                    &[&schema.component],
                )
                .await?
                .map(|row| row.get(0))
                .unwrap_or(0);
            if found > known {
                return Err(CatalogDbError::TooNew {
                    component: schema.component,
                    found,
                    known,
                });
            }
            if found == known {
                tx.commit().await?;
                break;
            }
            tx.batch_execute(schema.migrations[found as usize]).await?;
            tx.execute(
                "INSERT INTO schema_versions (component, version) VALUES ($1, $2)
                 ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                &[&schema.component, &(found + 1)],
            )
            .await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Node membership: one row per Loupe process, its heartbeat refreshed
/// every few seconds; a node whose heartbeat is older than a few intervals
/// is gone.
pub const NODES_SCHEMA: PgSchema = PgSchema {
    component: "nodes",
    migrations: &[
        "CREATE TABLE nodes (
            id            TEXT PRIMARY KEY,
            http_addr     TEXT NOT NULL,
            started_at    TIMESTAMPTZ NOT NULL,
            heartbeat_at  TIMESTAMPTZ NOT NULL
        )",
        "ALTER TABLE nodes ADD COLUMN roles TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE nodes ADD COLUMN grpc_addr TEXT NOT NULL DEFAULT ''",
    ],
};

/// A node as its heartbeat row describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    pub http_addr: String,
    /// Its roles, comma-separated (`ingest,query,compact`).
    pub roles: String,
    /// Its gRPC listener (OTLP, and the distributed-query worker), empty
    /// when it has none.
    pub grpc_addr: String,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
}

/// What a node's heartbeat row says about it besides its id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeAddrs {
    pub http_addr: String,
    pub grpc_addr: String,
    pub roles: String,
}

/// Records that node `id` (serving as `addrs` says) is alive now.
pub async fn heartbeat(db: &PgDb, id: &str, addrs: &NodeAddrs) -> Result<(), CatalogDbError> {
    let client = db.client().await?;
    let client = client.as_ref().ok_or(CatalogDbError::Closed)?;
    client
        .execute(
            "INSERT INTO nodes (id, http_addr, roles, grpc_addr, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, now(), now())
             ON CONFLICT (id) DO UPDATE SET http_addr = excluded.http_addr, roles = excluded.roles,
                 grpc_addr = excluded.grpc_addr, heartbeat_at = now()",
            &[&id, &addrs.http_addr, &addrs.roles, &addrs.grpc_addr],
        )
        .await?;
    Ok(())
}

/// Nodes whose heartbeat is at most `within` old, by id.
pub async fn live_nodes(db: &PgDb, within: Duration) -> Result<Vec<NodeInfo>, CatalogDbError> {
    let client = db.client().await?;
    let client = client.as_ref().ok_or(CatalogDbError::Closed)?;
    let rows = client
        .query(
            "SELECT id, http_addr, roles, extract(epoch FROM now() - heartbeat_at)::float8, grpc_addr
             FROM nodes WHERE heartbeat_at > now() - make_interval(secs => $1) ORDER BY id",
            &[&within.as_secs_f64()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| NodeInfo {
            id: row.get(0),
            http_addr: row.get(1),
            roles: row.get(2),
            heartbeat_age_secs: row.get(3),
            grpc_addr: row.get(4),
        })
        .collect())
}
