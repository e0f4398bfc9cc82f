//! Loupe's query engine: DataFusion SQL over the `logs`, `spans` and
//! `metrics` tables (catalog splits UNION memtable), sandboxed and bounded,
//! with the HTTP APIs that are the engine itself — SQL and log search.
//! The product APIs built on top of it (traces, services, problems, …)
//! live in `loupe-analysis`.

use std::sync::Arc;

use axum::Router;

mod aggregate_rewrite;
pub mod api;
mod count_distinct_text;
mod counted_cases;
mod deadline;
pub mod distributed;
mod engine;
mod error;
mod instance_column;
pub mod internal_sql;
mod log_template_udf;
pub mod logs_api;
mod map_key_types;
pub mod memtable_scan;
mod output;
pub mod plan_codec;
mod query_pool;
mod sandbox;
mod search;
mod short_text_eq;
mod split_reader;
mod split_routing;
mod table;
pub mod template_miner;
mod time_bounds;
pub mod time_param;
mod view_schema;

pub use engine::{QueryConfig, QueryEngine, QueryOutput};
pub use error::{QueryError, error_response};

/// Checks SQL the way the SQL endpoint does before anything is planned:
/// one read-only statement, no settings, no file access, bounded nesting.
/// Public for the fuzz targets (`fuzz/`) and tools.
pub fn check_sql(sql: &str) -> Result<(), QueryError> {
    sandbox::check(sql).map(drop)
}

/// Every route this crate serves: the SQL API and log search.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    api::routes(engine.clone()).merge(logs_api::routes(engine))
}
