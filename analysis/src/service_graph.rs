//! The service dependency graph (`GET /api/v1/service-graph`): edges from
//! client and producer spans to the server or consumer spans they caused,
//! with nodes inferred for uninstrumented databases and brokers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Json;
use axum::routing::get;
use loupe_base::sql_literal::timestamp as ts;
use loupe_query::internal_sql::rows_as;
use loupe_query::{QueryEngine, QueryError};
use serde::Deserialize;
use serde_json::{Value, json};

/// The service graph route.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/service-graph", get(graph))
        .with_state(engine)
}

#[derive(Debug, Deserialize)]
struct GraphParams {
    start: Option<String>,
    end: Option<String>,
}

/// Calls from one caller to one callee.
#[derive(Deserialize)]
struct EdgeRow {
    caller: Option<String>,
    callee: Option<String>,
    inferred: Option<bool>,
    calls: i64,
    errors: Option<i64>,
    p95_ns: Option<f64>,
}

async fn graph(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<GraphParams>,
) -> Result<Json<Value>, QueryError> {
    let engine = engine.as_ref();
    let (start, end) = crate::last_hour(p.start.as_deref(), p.end.as_deref())?;
    let (lo, hi) = (start - 60_000_000_000, end + 60_000_000_000);
    let edges = rows_as::<EdgeRow>(
        engine,
        format!(
            "SELECT c.service AS caller,
                    COALESCE(s.service,
                             c.attributes['peer.service'],
                             CASE WHEN c.attributes['db.system'] IS NOT NULL
                                      THEN concat(c.attributes['db.system'], ' ', COALESCE(c.attributes['server.address'], ''))
                                  WHEN c.attributes['messaging.system'] IS NOT NULL
                                      THEN concat(c.attributes['messaging.system'], ' ', COALESCE(c.attributes['messaging.destination.name'], ''))
                                  ELSE COALESCE(c.attributes['server.address'], 'unknown') END) AS callee,
                    s.service IS NULL AS inferred,
                    count(*) AS calls,
                    sum(CASE WHEN c.status_code = 'error' OR s.status_code = 'error' THEN 1 ELSE 0 END) AS errors,
                    approx_percentile_cont(c.duration_ns, 0.95) AS p95_ns
             FROM spans c
             LEFT JOIN spans s
               ON s.trace_id = c.trace_id AND s.parent_span_id = c.span_id
              AND s.kind IN ('server', 'consumer') AND s.start_time >= {} AND s.start_time <= {}
             WHERE c.kind IN ('client', 'producer') AND c.start_time >= {} AND c.start_time <= {}
             GROUP BY 1, 2, 3 ORDER BY 1, 2",
            ts(lo),
            ts(hi),
            ts(start),
            ts(end)
        ),
    )
    .await?;
    let mut nodes: BTreeMap<String, bool> = BTreeMap::new();
    let edges: Vec<Value> = edges
        .into_iter()
        .map(|e| {
            let inferred = e.inferred.unwrap_or(false);
            let caller = e.caller.unwrap_or_default();
            let callee = e.callee.unwrap_or_default();
            nodes.entry(caller.clone()).or_insert(false);
            let entry = nodes.entry(callee.clone()).or_insert(inferred);
            *entry = *entry && inferred;
            json!({
                "caller": caller,
                "callee": callee,
                "inferred": inferred,
                "calls": e.calls,
                "errors": e.errors.unwrap_or(0),
                "p95_ms": e.p95_ns.unwrap_or(0.0) / 1e6,
            })
        })
        .collect();
    let nodes: Vec<Value> = nodes
        .into_iter()
        .map(|(name, inferred)| json!({"name": name, "inferred": inferred}))
        .collect();
    Ok(Json(json!({ "nodes": nodes, "edges": edges })))
}
