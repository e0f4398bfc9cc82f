//! Helpers for the APIs that answer with SQL they assemble themselves:
//! results as JSON objects to pass through, or decoded into small typed
//! rows to compute with. These queries skip the sandbox (they are ours)
//! but keep every other limit.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::engine::{QueryEngine, QueryOutput};
use crate::error::{QueryError, from_datafusion};
use crate::output;

/// Runs SQL that came from a user (e.g. a capacity policy's signal)
/// through the SQL API's sandbox and limits; one JSON object per row.
pub async fn sandboxed_rows(
    engine: &QueryEngine,
    sql: &str,
) -> Result<Vec<Map<String, Value>>, QueryError> {
    let out = engine.sql(sql).await?;
    objects(&out)
}

/// Runs `sql` under the engine's limits; one JSON object per row, for
/// results an API passes through as they are.
pub async fn rows(
    engine: &QueryEngine,
    sql: String,
) -> Result<Vec<Map<String, Value>>, QueryError> {
    objects(&run(engine, sql).await?)
}

/// Runs `sql` under the engine's limits and decodes each row into `T`
/// by column name (serde: a nullable column is an `Option`, an integer
/// column may be read as `f64`), so callers compute with typed fields
/// instead of probing JSON values.
pub async fn rows_as<T: DeserializeOwned>(
    engine: &QueryEngine,
    sql: String,
) -> Result<Vec<T>, QueryError> {
    decode(&run(engine, sql).await?)
}

/// [`rows_as`], with each join's sides kept as `sql` writes them: the left
/// side is the one a hash join holds in memory. DataFusion swaps the sides
/// by its estimates of their sizes, and an estimate it cannot make well
/// (the rows of an aggregate over a time window, against a scan of a wider
/// window) can put millions of rows on the held side.
pub async fn rows_as_written<T: DeserializeOwned>(
    engine: &QueryEngine,
    sql: String,
) -> Result<Vec<T>, QueryError> {
    let out = engine
        .query(async |ctx| {
            let state = ctx.state_ref();
            state
                .write()
                .config_mut()
                .options_mut()
                .optimizer
                .join_reordering = false;
            ctx.sql(&sql).await.map_err(from_datafusion)
        })
        .await?;
    decode(&out)
}

async fn run(engine: &QueryEngine, sql: String) -> Result<QueryOutput, QueryError> {
    engine
        .query(async |ctx| ctx.sql(&sql).await.map_err(from_datafusion))
        .await
}

/// Each row as a JSON object keyed by column name (nulls included); for
/// internal queries, whose column names are distinct.
pub fn objects(out: &QueryOutput) -> Result<Vec<Map<String, Value>>, QueryError> {
    let names: Vec<&String> = out.schema.fields().iter().map(|f| f.name()).collect();
    Ok(output::to_rows(out)
        .map_err(|e| QueryError::Internal(e.to_string()))?
        .into_iter()
        .map(|row| names.iter().map(|n| n.to_string()).zip(row).collect())
        .collect())
}

/// Each row decoded into `T` by column name.
pub fn decode<T: DeserializeOwned>(out: &QueryOutput) -> Result<Vec<T>, QueryError> {
    objects(out)?
        .into_iter()
        .map(|row| {
            serde_json::from_value(Value::Object(row))
                .map_err(|e| QueryError::Internal(format!("decoding a result row: {e}")))
        })
        .collect()
}
