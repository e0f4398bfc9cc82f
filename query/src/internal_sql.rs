//! Helpers for the APIs that answer with SQL they assemble themselves:
//! literals quoted safely, times as SQL, results as JSON objects. These
//! queries skip the sandbox (they are ours) but keep every other limit.

use serde_json::{Map, Value};

use crate::engine::QueryEngine;
use crate::error::{QueryError, from_datafusion};
use crate::output;

/// Runs SQL that came from a user (e.g. a capacity policy's signal)
/// through the SQL API's sandbox and limits; one JSON object per row.
pub async fn sandboxed_rows(
    engine: &QueryEngine,
    sql: &str,
) -> Result<Vec<Map<String, Value>>, QueryError> {
    let out = engine.sql(sql).await?;
    output::to_objects(&out).map_err(|e| QueryError::Internal(e.to_string()))
}

/// Runs `sql` under the engine's limits; one JSON object per row.
pub async fn rows(
    engine: &QueryEngine,
    sql: String,
) -> Result<Vec<Map<String, Value>>, QueryError> {
    let out = engine
        .query(async |ctx| ctx.sql(&sql).await.map_err(from_datafusion))
        .await?;
    output::to_objects(&out).map_err(|e| QueryError::Internal(e.to_string()))
}
