//! Tokens created through the API, in the catalog: their digests only.
//! On a PostgreSQL catalog every node reads the same table.

use loupe_catalog::Schema;
use loupe_catalog::db::{Db, Location};
use loupe_catalog::pg::PgSchema;
use loupe_catalog::values;
use serde::Serialize;

use super::Scope;

/// The `access` component's tables.
pub static SCHEMA: Schema = Schema {
    component: "access",
    migrations: &["CREATE TABLE access_tokens (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        scope         TEXT NOT NULL,
        digest        BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL
    )"],
};

/// The same table on PostgreSQL.
pub static PG_SCHEMA: PgSchema = PgSchema {
    component: "access",
    migrations: &["CREATE TABLE access_tokens (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        scope         TEXT NOT NULL,
        digest        BYTEA NOT NULL,
        created_at_ms BIGINT NOT NULL
    )"],
};

/// A token as the API lists it: never its secret nor its digest.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: String,
}

pub async fn open(location: &Location) -> anyhow::Result<Db> {
    Ok(Db::open(location, &[&SCHEMA], &[&PG_SCHEMA]).await?)
}

pub async fn digests(db: &Db) -> anyhow::Result<Vec<(Scope, [u8; 32])>> {
    let rows = db
        .query("SELECT scope, digest FROM access_tokens", &[])
        .await?;
    let mut out = Vec::new();
    for row in rows {
        // A row this Loupe cannot read grants nothing.
        if let (Ok(scope), Ok(digest)) = (
            row.text(0).map(|s| s.parse()),
            row.blob(1).map(<[u8; 32]>::try_from),
        ) && let (Ok(scope), Ok(digest)) = (scope, digest)
        {
            out.push((scope, digest));
        }
    }
    Ok(out)
}

pub async fn insert(
    db: &Db,
    name: &str,
    scope: Scope,
    digest: &[u8; 32],
) -> anyhow::Result<TokenInfo> {
    let now = loupe_base::clock::now_ms();
    let id = format!("tok_{}", hex::encode(rand::random::<[u8; 8]>()));
    db.execute(
        "INSERT INTO access_tokens (id, name, scope, digest, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        values![&id, name, scope.as_str(), digest.as_slice(), now],
    )
    .await?;
    Ok(TokenInfo {
        id,
        name: name.to_string(),
        scope,
        created_at: loupe_base::clock::rfc3339_ms(now),
    })
}

pub async fn list(db: &Db) -> anyhow::Result<Vec<TokenInfo>> {
    let rows = db
        .query(
            "SELECT id, name, scope, created_at_ms FROM access_tokens ORDER BY created_at_ms, id",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(scope) = row.text(2)?.parse() {
            out.push(TokenInfo {
                id: row.text(0)?,
                name: row.text(1)?,
                scope,
                created_at: loupe_base::clock::rfc3339_ms(row.int(3)?),
            });
        }
    }
    Ok(out)
}

pub async fn delete(db: &Db, id: &str) -> anyhow::Result<bool> {
    Ok(db
        .execute("DELETE FROM access_tokens WHERE id = ?1", values![id])
        .await?
        > 0)
}
