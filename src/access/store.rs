//! Tokens created through the API, in the catalog: their digests only.

use std::path::Path;

use loupe_catalog::Schema;
use loupe_catalog::rusqlite::{Connection, params};
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

/// A token as the API lists it: never its secret nor its digest.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: String,
}

pub fn open(path: &Path) -> anyhow::Result<Connection> {
    Ok(loupe_catalog::open(path, &[&SCHEMA])?)
}

pub fn digests(conn: &Connection) -> anyhow::Result<Vec<(Scope, [u8; 32])>> {
    let mut stmt = conn.prepare("SELECT scope, digest FROM access_tokens")?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (scope, digest) = row?;
        // A row this Loupe cannot read grants nothing.
        if let (Ok(scope), Ok(digest)) = (scope.parse(), <[u8; 32]>::try_from(digest)) {
            out.push((scope, digest));
        }
    }
    Ok(out)
}

pub fn insert(
    conn: &Connection,
    name: &str,
    scope: Scope,
    digest: &[u8; 32],
) -> anyhow::Result<TokenInfo> {
    let now = loupe_base::clock::now_ms();
    let id = format!("tok_{}", hex::encode(rand::random::<[u8; 8]>()));
    conn.execute(
        "INSERT INTO access_tokens (id, name, scope, digest, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, name, scope.as_str(), digest.as_slice(), now],
    )?;
    Ok(TokenInfo {
        id,
        name: name.to_string(),
        scope,
        created_at: loupe_base::clock::rfc3339_ms(now),
    })
}

pub fn list(conn: &Connection) -> anyhow::Result<Vec<TokenInfo>> {
    let mut stmt = conn.prepare(
        "SELECT id, name, scope, created_at_ms FROM access_tokens ORDER BY created_at_ms, id",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, scope, at) = row?;
        if let Ok(scope) = scope.parse() {
            out.push(TokenInfo {
                id,
                name,
                scope,
                created_at: loupe_base::clock::rfc3339_ms(at),
            });
        }
    }
    Ok(out)
}

pub fn delete(conn: &Connection, id: &str) -> anyhow::Result<bool> {
    Ok(conn.execute("DELETE FROM access_tokens WHERE id = ?1", params![id])? > 0)
}
