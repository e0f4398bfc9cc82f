//! Loupe's analysis APIs: what the product answers about a system, built
//! on the query engine's SQL — one trace as a tree with its critical path,
//! trace search, per-service RED, the service graph, problem location,
//! error groups and log patterns. Each module registers its own routes;
//! [`routes`] merges them. Errors are the engine's [`QueryError`], so a
//! failure maps to the same HTTP status here as in the SQL API.
//!
//! [`QueryError`]: loupe_query::QueryError

use std::sync::Arc;

use axum::Router;
use loupe_query::QueryEngine;

mod dependency_errors;
pub mod errors;
mod evidence;
pub mod patterns;
mod problem_ranking;
mod problem_windows;
pub mod problems;
pub mod service_graph;
pub mod services;
mod subject;
#[cfg(test)]
mod test_fixtures;
pub mod trace_tree;
pub mod traces;

/// Every analysis route.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    traces::routes(engine.clone())
        .merge(services::routes(engine.clone()))
        .merge(service_graph::routes(engine.clone()))
        .merge(problems::routes(engine.clone()))
        .merge(errors::routes(engine.clone()))
        .merge(patterns::routes(engine))
}

/// The parameters of an API over one time window, optionally of one
/// service; times in the grammar of [`loupe_query::time_param`].
#[derive(Debug, serde::Deserialize)]
struct WindowParams {
    start: Option<String>,
    end: Option<String>,
    service: Option<String>,
}

/// The `[start, end]` window of a request, defaulting to the last hour.
fn last_hour(
    start: Option<&str>,
    end: Option<&str>,
) -> Result<(i64, i64), loupe_query::QueryError> {
    loupe_query::time_param::window(start, end, "now-1h")
}
