//! Traces: one trace as a tree with its critical path and logs
//! (`GET /api/v1/traces/{trace_id}`), and trace search
//! (`GET /api/v1/traces`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Json;
use axum::routing::get;
use loupe_base::sql_literal::{quote, timestamp as ts};
use loupe_query::internal_sql::{rows, rows_as};
use loupe_query::{QueryEngine, QueryError, time_param};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::trace_tree::{SpanTiming, TraceTree};

/// The trace routes.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/traces", get(search_traces))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .with_state(engine)
}

// ---- one trace -------------------------------------------------------------

/// A span row: the times the tree needs, typed; every other column passed
/// through to the answer as it is.
#[derive(Deserialize)]
struct SpanRow {
    start_ns: Option<i64>,
    end_ns: Option<i64>,
    #[serde(flatten)]
    fields: Map<String, Value>,
}

impl SpanRow {
    fn text(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }
}

/// Spans of one trace shown at most (the earliest ones); the answer says
/// `truncated` when a trace has more, so one enormous trace cannot exhaust
/// memory.
const MAX_TRACE_SPANS: usize = 100_000;

async fn trace(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
) -> Result<Json<Value>, QueryError> {
    let engine = engine.as_ref();
    let id = trace_id.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(QueryError::Invalid(format!(
            "{trace_id:?} is not a trace id (32 hex digits)"
        )));
    }
    // Spans and logs are looked up at the same time.
    let (spans, logs) = tokio::join!(
        rows_as::<SpanRow>(
            engine,
            format!(
                "SELECT span_id, parent_span_id, service, name, kind, start_time,
                        CAST(start_time AS BIGINT) AS start_ns, CAST(end_time AS BIGINT) AS end_ns, duration_ns,
                        status_code, status_message, attributes, resource_attributes, events, links
                 FROM spans WHERE trace_id = '{id}' ORDER BY start_time LIMIT {}",
                MAX_TRACE_SPANS + 1
            ),
        ),
        rows(
            engine,
            format!(
                "SELECT time, service, severity_text, body, span_id, attributes FROM logs
                 WHERE trace_id = '{id}' ORDER BY time LIMIT 1000"
            ),
        ),
    );
    let (mut spans, logs) = (spans?, logs?);
    let truncated = spans.len() > MAX_TRACE_SPANS;
    spans.truncate(MAX_TRACE_SPANS);
    if spans.is_empty() {
        return Err(QueryError::NotFound(format!("no trace {id}")));
    }
    let timings = spans
        .iter()
        .map(|s| SpanTiming {
            span_id: s.text("span_id").unwrap_or_default().to_string(),
            parent_span_id: s.text("parent_span_id").map(String::from),
            start: s.start_ns.unwrap_or(0),
            end: s.end_ns.unwrap_or(0),
        })
        .collect();
    let tree = TraceTree::new(timings);
    let self_times = tree.self_times();
    let (depth, order) = tree.depth_first();
    let path = tree.critical_path();
    let mut on_path = vec![0i64; spans.len()];
    for seg in &path {
        on_path[seg.span] += seg.end - seg.start;
    }
    let root_index = tree.roots.first().copied().unwrap_or(0);
    let trace_start = tree.spans.iter().map(|s| s.start).min().unwrap_or(0);
    let mut services: Vec<&str> = spans.iter().filter_map(|s| s.text("service")).collect();
    services.sort_unstable();
    services.dedup();
    let out_spans: Vec<Value> = order
        .iter()
        .map(|&i| {
            let mut s = spans[i].fields.clone();
            s.insert("depth".into(), json!(depth[i]));
            s.insert("offset_ns".into(), json!(tree.spans[i].start - trace_start));
            s.insert("self_time_ns".into(), json!(self_times[i]));
            s.insert("critical_path_ns".into(), json!(on_path[i]));
            for field in ["events", "links"] {
                if let Some(text) = s.get(field).and_then(Value::as_str) {
                    let parsed = serde_json::from_str(text).unwrap_or(Value::Null);
                    s.insert(field.into(), parsed);
                }
            }
            Value::Object(s)
        })
        .collect();
    let critical_path: Vec<Value> = path
        .iter()
        .map(|seg| {
            json!({
                "span_id": tree.spans[seg.span].span_id,
                "service": spans[seg.span].fields["service"],
                "name": spans[seg.span].fields["name"],
                "offset_ns": seg.start - trace_start,
                "duration_ns": seg.end - seg.start,
            })
        })
        .collect();
    let errors = spans
        .iter()
        .filter(|s| s.text("status_code") == Some("error"))
        .count();
    let root = &spans[root_index].fields;
    Ok(Json(json!({
        "trace_id": id,
        "root_service": root["service"],
        "root_operation": root["name"],
        "start_time": root["start_time"],
        "duration_ns": tree.spans[root_index].end - tree.spans[root_index].start,
        "span_count": spans.len(),
        "truncated": truncated,
        "error_count": errors,
        "services": services,
        "spans": out_spans,
        "critical_path": critical_path,
        "logs": logs,
    })))
}

// ---- trace search ----------------------------------------------------------

/// `attr.KEY=VALUE` filters one trace search takes at most: each is a
/// condition in the SQL, and thousands would nest too deep to plan.
const MAX_ATTRIBUTE_FILTERS: usize = 32;

async fn search_traces(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, QueryError> {
    let engine = engine.as_ref();
    let (start, end) = crate::last_hour(
        p.get("start").map(String::as_str),
        p.get("end").map(String::as_str),
    )?;
    let limit = p
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20)
        .min(200);
    let mut conditions = vec![format!(
        "start_time >= {} AND start_time <= {}",
        ts(start),
        ts(end)
    )];
    if let Some(service) = p.get("service") {
        conditions.push(format!("service = {}", quote(service)));
    }
    if let Some(operation) = p.get("operation") {
        conditions.push(format!("name = {}", quote(operation)));
    }
    for (key, op) in [("min_duration", ">="), ("max_duration", "<=")] {
        if let Some(d) = p.get(key) {
            let ns = time_param::duration_nanos(key, d)?;
            conditions.push(format!("duration_ns {op} {ns}"));
        }
    }
    match p.get("status").map(String::as_str) {
        None => {}
        Some(s @ ("error" | "ok" | "unset")) => conditions.push(format!("status_code = '{s}'")),
        Some(other) => {
            return Err(QueryError::Invalid(format!(
                "status={other:?}: use error, ok or unset"
            )));
        }
    }
    let attribute_filters = p.keys().filter(|k| k.starts_with("attr.")).count();
    if attribute_filters > MAX_ATTRIBUTE_FILTERS {
        return Err(QueryError::Invalid(format!(
            "{attribute_filters} attr.* filters; at most {MAX_ATTRIBUTE_FILTERS} are allowed"
        )));
    }
    for (key, value) in &p {
        if let Some(attr) = key.strip_prefix("attr.") {
            conditions.push(format!(
                "(attributes[{k}] = {v} OR resource_attributes[{k}] = {v})",
                k = quote(attr),
                v = quote(value)
            ));
        }
    }
    if let Some(q) = p.get("q").filter(|q| !q.trim().is_empty()) {
        loupe_storage::log_index::validate_query(q)
            .map_err(|e| QueryError::Invalid(e.to_string()))?;
        conditions.push(format!(
            "trace_id IN (SELECT trace_id FROM logs WHERE match_all({}) AND time >= {} AND time <= {} AND trace_id IS NOT NULL)",
            quote(q),
            ts(start),
            ts(end)
        ));
    }
    // Spans of a trace may start a little outside the window.
    let (lo, hi) = (start - 3_600_000_000_000, end + 3_600_000_000_000);
    let sql = format!(
        "WITH matched AS (
             SELECT trace_id, max(start_time) AS last FROM spans WHERE {}
             GROUP BY trace_id ORDER BY last DESC LIMIT {limit}
         )
         SELECT trace_id, to_timestamp_nanos(start_ns) AS start_time, end_ns - start_ns AS duration_ns,
                span_count, error_count, services, root_service, root_operation
         FROM (
             SELECT s.trace_id,
                    min(CAST(s.start_time AS BIGINT)) AS start_ns,
                    max(CAST(s.end_time AS BIGINT)) AS end_ns,
                    count(*) AS span_count,
                    sum(CASE WHEN s.status_code = 'error' THEN 1 ELSE 0 END) AS error_count,
                    array_agg(DISTINCT s.service) AS services,
                    first_value(s.service ORDER BY s.parent_span_id IS NULL DESC, s.start_time) AS root_service,
                    first_value(s.name ORDER BY s.parent_span_id IS NULL DESC, s.start_time) AS root_operation
             FROM spans s JOIN matched m ON s.trace_id = m.trace_id
             WHERE s.start_time >= {} AND s.start_time <= {}
             GROUP BY s.trace_id
         ) ORDER BY start_ns DESC",
        conditions.join(" AND "),
        ts(lo),
        ts(hi),
    );
    let traces = rows(engine, sql).await?;
    Ok(Json(json!({ "traces": traces })))
}
