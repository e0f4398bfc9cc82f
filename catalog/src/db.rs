//! One small database interface over both catalogs, for the components
//! whose state must be shared by every node when the catalog is on
//! PostgreSQL (alerts, capacity, the webhook outbox): statements are
//! written once, with SQLite's numbered placeholders (`?1`), in the SQL the
//! two dialects share, and run on either backend. Values cross the
//! boundary as [`Value`] — integers, reals, text, bytes and NULL — so a
//! PostgreSQL table uses `BIGINT`, `DOUBLE PRECISION`, `TEXT` and `BYTEA`
//! where SQLite has `INTEGER`, `REAL`, `TEXT` and `BLOB`.
//!
//! SQLite statements run on the caller's thread, as they always have; each
//! PostgreSQL statement is bounded by [`PG_DEADLINE`] on top of the
//! server-side statement timeout, and a transaction dropped uncommitted
//! (an error, a cancelled request) closes its connection, so the server
//! rolls it back and the next use reconnects.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::Client;
use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::pg::{PgDb, PgSchema};
use crate::{CatalogDbError, Schema};

/// Where a component's shared state lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// The SQLite file in the data directory (one node).
    Sqlite(PathBuf),
    /// `postgres://…`, shared by every node.
    Postgres(String),
}

/// The longest any one PostgreSQL statement may take, client side.
pub const PG_DEADLINE: Duration = Duration::from_secs(35);

/// A value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(v.into())
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Value {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// Parameters for a statement: `values![a, b]` converts each into a [`Value`].
#[macro_export]
macro_rules! values {
    ($($v:expr),* $(,)?) => { &[$($crate::db::Value::from($v)),*] as &[$crate::db::Value] };
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Real(v) => ValueRef::Real(*v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Text(v) => v.to_sql(ty, out),
            Value::Blob(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

fn column_error(i: usize, expected: &'static str, found: &Value) -> CatalogDbError {
    CatalogDbError::Column(format!("column {i}: expected {expected}, found {found:?}"))
}

impl Row {
    fn at(&self, i: usize) -> Result<&Value, CatalogDbError> {
        self.0
            .get(i)
            .ok_or_else(|| CatalogDbError::Column(format!("no column {i}")))
    }

    /// Column `i` as text (NULL is an error).
    pub fn text(&self, i: usize) -> Result<String, CatalogDbError> {
        self.opt_text(i)?
            .ok_or_else(|| column_error(i, "text", &Value::Null))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, CatalogDbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => Err(column_error(i, "text", other)),
        }
    }

    /// Column `i` as an integer (NULL is an error).
    pub fn int(&self, i: usize) -> Result<i64, CatalogDbError> {
        self.opt_int(i)?
            .ok_or_else(|| column_error(i, "integer", &Value::Null))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, CatalogDbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            other => Err(column_error(i, "integer", other)),
        }
    }

    /// Column `i` as an integer of a narrower type.
    pub fn int_as<T: TryFrom<i64>>(&self, i: usize) -> Result<T, CatalogDbError> {
        let v = self.int(i)?;
        T::try_from(v).map_err(|_| column_error(i, "a smaller integer", &Value::Int(v)))
    }

    pub fn opt_int_as<T: TryFrom<i64>>(&self, i: usize) -> Result<Option<T>, CatalogDbError> {
        self.opt_int(i)?
            .map(|v| {
                T::try_from(v).map_err(|_| column_error(i, "a smaller integer", &Value::Int(v)))
            })
            .transpose()
    }

    /// Column `i` as a real (an integer converts; NULL is an error).
    pub fn real(&self, i: usize) -> Result<f64, CatalogDbError> {
        match self.at(i)? {
            Value::Real(v) => Ok(*v),
            Value::Int(v) => Ok(*v as f64),
            other => Err(column_error(i, "real", other)),
        }
    }

    pub fn blob(&self, i: usize) -> Result<Vec<u8>, CatalogDbError> {
        match self.at(i)? {
            Value::Blob(v) => Ok(v.clone()),
            other => Err(column_error(i, "bytes", other)),
        }
    }
}

/// A component's connection to the catalog: SQLite or PostgreSQL.
pub enum Db {
    Sqlite(Mutex<Connection>),
    Postgres(PgDb),
}

impl Db {
    /// Opens the catalog at `location` and migrates the schemas of its
    /// backend (`sqlite` or `pg`, the same tables in each dialect).
    pub async fn open(
        location: &Location,
        sqlite: &[&Schema],
        pg: &[&PgSchema],
    ) -> Result<Db, CatalogDbError> {
        match location {
            Location::Sqlite(path) => Ok(Db::Sqlite(Mutex::new(crate::open(path, sqlite)?))),
            Location::Postgres(url) => Ok(Db::Postgres(PgDb::open(url, pg).await?)),
        }
    }

    /// An in-memory SQLite catalog with `schemas`, for tests.
    pub fn in_memory(schemas: &[&Schema]) -> Result<Db, CatalogDbError> {
        Ok(Db::Sqlite(Mutex::new(crate::open_in_memory(schemas)?)))
    }

    /// The connection, outside any transaction.
    pub async fn conn(&self) -> Result<Conn<'_>, CatalogDbError> {
        Ok(Conn {
            inner: match self {
                Db::Sqlite(conn) => Inner::Sqlite(conn.lock().await),
                Db::Postgres(db) => Inner::Postgres(db.client().await?),
            },
            open_tx: false,
        })
    }

    /// The connection inside a new transaction: [`Conn::commit`] it;
    /// dropping it rolls back.
    pub async fn begin(&self) -> Result<Conn<'_>, CatalogDbError> {
        let mut conn = self.conn().await?;
        conn.batch("BEGIN").await?;
        conn.open_tx = true;
        Ok(conn)
    }

    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, CatalogDbError> {
        self.conn().await?.execute(sql, params).await
    }

    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, CatalogDbError> {
        self.conn().await?.query(sql, params).await
    }

    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Row>, CatalogDbError> {
        self.conn().await?.query_opt(sql, params).await
    }
}

enum Inner<'a> {
    Sqlite(MutexGuard<'a, Connection>),
    Postgres(MutexGuard<'a, Option<Client>>),
}

/// A locked connection, perhaps inside a transaction.
pub struct Conn<'a> {
    inner: Inner<'a>,
    open_tx: bool,
}

/// `?N` placeholders as PostgreSQL's `$N`.
fn pg_sql(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn pg_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

fn pg_row(row: &tokio_postgres::Row) -> Result<Row, CatalogDbError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(|b| Value::Int(b.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            _ => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        out.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

fn sqlite_row(row: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<Row> {
    let mut out = Vec::with_capacity(columns);
    for i in 0..columns {
        out.push(match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            ValueRef::Real(v) => Value::Real(v),
            ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
            ValueRef::Blob(v) => Value::Blob(v.to_vec()),
        });
    }
    Ok(Row(out))
}

/// Bounds one PostgreSQL call by [`PG_DEADLINE`].
async fn deadline<T>(
    call: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, CatalogDbError> {
    match tokio::time::timeout(PG_DEADLINE, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(CatalogDbError::Timeout),
    }
}

impl Conn<'_> {
    /// The PostgreSQL client (reconnected by [`Db::conn`] if it broke).
    fn client(&self) -> Result<&Client, CatalogDbError> {
        match &self.inner {
            Inner::Postgres(guard) => guard.as_ref().ok_or(CatalogDbError::Closed),
            Inner::Sqlite(_) => Err(CatalogDbError::Closed),
        }
    }

    /// After a PostgreSQL call: a failure inside a transaction, or a
    /// timeout anywhere, drops the connection (the server rolls back).
    fn settle<T>(&mut self, result: Result<T, CatalogDbError>) -> Result<T, CatalogDbError> {
        if result.is_err()
            && (self.open_tx || matches!(result, Err(CatalogDbError::Timeout)))
            && let Inner::Postgres(guard) = &mut self.inner
        {
            **guard = None;
            self.open_tx = false;
        }
        result
    }

    async fn batch(&mut self, sql: &'static str) -> Result<(), CatalogDbError> {
        if let Inner::Sqlite(conn) = &self.inner {
            return Ok(conn.execute_batch(sql)?);
        }
        let result = deadline(self.client()?.batch_execute(sql)).await;
        self.settle(result)
    }

    /// Runs one statement; the number of rows it changed.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, CatalogDbError> {
        if let Inner::Sqlite(conn) = &self.inner {
            let mut stmt = conn.prepare_cached(sql)?;
            return Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64);
        }
        let (sql, params) = (pg_sql(sql), pg_params(params));
        let result = deadline(self.client()?.execute(sql.as_ref(), &params)).await;
        self.settle(result)
    }

    /// Runs one statement and returns all its rows.
    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, CatalogDbError> {
        if let Inner::Sqlite(conn) = &self.inner {
            let mut stmt = conn.prepare_cached(sql)?;
            let columns = stmt.column_count();
            let rows = stmt.query_map(rusqlite::params_from_iter(params), |row| {
                sqlite_row(row, columns)
            })?;
            return Ok(rows.collect::<rusqlite::Result<_>>()?);
        }
        let (sql, params) = (pg_sql(sql), pg_params(params));
        let result = deadline(self.client()?.query(sql.as_ref(), &params)).await;
        let rows = self.settle(result)?;
        rows.iter().map(pg_row).collect()
    }

    /// The first row of a statement's result, if any.
    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Row>, CatalogDbError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Commits the transaction [`Db::begin`] opened.
    pub async fn commit(mut self) -> Result<(), CatalogDbError> {
        self.batch("COMMIT").await?;
        self.open_tx = false;
        Ok(())
    }

    /// Whether this is PostgreSQL (for the few statements the dialects
    /// spell differently).
    pub fn is_postgres(&self) -> bool {
        matches!(self.inner, Inner::Postgres(_))
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if !self.open_tx {
            return;
        }
        match &mut self.inner {
            Inner::Sqlite(conn) => {
                let _ = conn.execute_batch("ROLLBACK");
            }
            // Closing the connection rolls the transaction back on the
            // server; the next user reconnects.
            Inner::Postgres(client) => **client = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THINGS: Schema = Schema {
        component: "things",
        migrations: &["CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT, score REAL)"],
    };

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND (?2 IS NULL OR c = ?2) AND d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND ($2 IS NULL OR c = $2) AND d = '?'"
        );
    }

    #[tokio::test]
    async fn a_dropped_transaction_rolls_back_and_a_committed_one_stays() {
        let db = Db::in_memory(&[&THINGS]).unwrap();
        {
            let mut tx = db.begin().await.unwrap();
            tx.execute(
                "INSERT INTO things (id, name, score) VALUES (?1, ?2, ?3)",
                values![1i64, "a", 0.5],
            )
            .await
            .unwrap();
        }
        let mut tx = db.begin().await.unwrap();
        tx.execute(
            "INSERT INTO things (id, name, score) VALUES (?1, ?2, ?3)",
            values![2i64, Some("b"), None::<f64>],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let rows = db
            .query("SELECT id, name, score FROM things ORDER BY id", &[])
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![Row(vec![
                Value::Int(2),
                Value::Text("b".into()),
                Value::Null
            ])]
        );
        assert_eq!(rows[0].int(0).unwrap(), 2);
        assert!(rows[0].int(2).is_err());
        assert_eq!(rows[0].opt_text(1).unwrap().as_deref(), Some("b"));
    }
}
