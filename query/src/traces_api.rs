//! Trace and service APIs: one trace as a tree with its critical path and
//! logs; trace search; per-service rate, errors and latency (RED); and the
//! service dependency graph, with nodes inferred for uninstrumented
//! databases and brokers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::error_response;
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::internal_sql::rows;
use crate::time_param;
use crate::trace_tree::{SpanTiming, TraceTree};
use loupe_base::sql_literal::{quote, timestamp as ts};

pub fn router(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/traces", get(search_traces))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/services", get(services))
        .route("/api/v1/service-graph", get(service_graph))
        .route("/api/v1/problems", get(crate::problems::handler))
        .route("/api/v1/errors", get(crate::errors::handler))
        .with_state(engine)
}

fn reply(result: Result<Value, QueryError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(e.http_status(), e.to_string()),
    }
}

/// The `[start, end]` window of a request, defaulting to the last hour.
fn window(start: Option<&str>, end: Option<&str>) -> Result<(i64, i64), QueryError> {
    time_param::window(start, end, "now-1h")
}

fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .unwrap_or(0)
}

// ---- one trace -------------------------------------------------------------

async fn trace(State(engine): State<Arc<QueryEngine>>, Path(trace_id): Path<String>) -> Response {
    reply(get_trace(&engine, &trace_id).await)
}

async fn get_trace(engine: &QueryEngine, trace_id: &str) -> Result<Value, QueryError> {
    let id = trace_id.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(QueryError::Invalid(format!(
            "{trace_id:?} is not a trace id (32 hex digits)"
        )));
    }
    // Spans and logs are looked up at the same time.
    let (spans, logs) = tokio::join!(
        rows(
            engine,
            format!(
                "SELECT span_id, parent_span_id, service, name, kind, start_time,
                        CAST(start_time AS BIGINT) AS start_ns, CAST(end_time AS BIGINT) AS end_ns, duration_ns,
                        status_code, status_message, attributes, resource_attributes, events, links
                 FROM spans WHERE trace_id = '{id}'"
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
    let (spans, logs) = (spans?, logs?);
    if spans.is_empty() {
        return Err(QueryError::NotFound(format!("no trace {id}")));
    }
    let timings = spans
        .iter()
        .map(|s| SpanTiming {
            span_id: s["span_id"].as_str().unwrap_or_default().to_string(),
            parent_span_id: s["parent_span_id"].as_str().map(String::from),
            start: int(&s["start_ns"]),
            end: int(&s["end_ns"]),
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
    let root = tree.roots.first().copied().unwrap_or(0);
    let trace_start = tree.spans.iter().map(|s| s.start).min().unwrap_or(0);
    let mut services: Vec<&str> = spans.iter().filter_map(|s| s["service"].as_str()).collect();
    services.sort_unstable();
    services.dedup();
    let out_spans: Vec<Value> = order
        .iter()
        .map(|&i| {
            let mut s = spans[i].clone();
            s.remove("start_ns");
            s.remove("end_ns");
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
                "service": spans[seg.span]["service"],
                "name": spans[seg.span]["name"],
                "offset_ns": seg.start - trace_start,
                "duration_ns": seg.end - seg.start,
            })
        })
        .collect();
    let errors = spans.iter().filter(|s| s["status_code"] == "error").count();
    Ok(json!({
        "trace_id": id,
        "root_service": spans[root]["service"],
        "root_operation": spans[root]["name"],
        "start_time": spans[root]["start_time"],
        "duration_ns": tree.spans[root].end - tree.spans[root].start,
        "span_count": spans.len(),
        "error_count": errors,
        "services": services,
        "spans": out_spans,
        "critical_path": critical_path,
        "logs": logs,
    }))
}

// ---- trace search ----------------------------------------------------------

async fn search_traces(
    State(engine): State<Arc<QueryEngine>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    reply(find_traces(&engine, &params).await)
}

async fn find_traces(
    engine: &QueryEngine,
    p: &HashMap<String, String>,
) -> Result<Value, QueryError> {
    let (start, end) = window(
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
    for (key, value) in p {
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
    Ok(json!({ "traces": traces }))
}

// ---- RED per service -------------------------------------------------------

#[derive(Debug, Deserialize)]
struct WindowParams {
    start: Option<String>,
    end: Option<String>,
    step: Option<String>,
}

async fn services(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<WindowParams>,
) -> Response {
    reply(red(&engine, &p).await)
}

/// Rate, errors and latency from SERVER and CONSUMER spans.
async fn red(engine: &QueryEngine, p: &WindowParams) -> Result<Value, QueryError> {
    let (start, end) = window(p.start.as_deref(), p.end.as_deref())?;
    let secs = ((end - start) as f64 / 1e9).max(1e-9);
    let filter = format!(
        "kind IN ('server', 'consumer') AND start_time >= {} AND start_time <= {}",
        ts(start),
        ts(end)
    );
    let stats = "count(*) AS requests,
                 sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors,
                 approx_percentile_cont(duration_ns, 0.5) AS p50_ns,
                 approx_percentile_cont(duration_ns, 0.95) AS p95_ns,
                 approx_percentile_cont(duration_ns, 0.99) AS p99_ns,
                 count(DISTINCT resource_attributes['service.instance.id']) AS instances";
    let per_service = rows(
        engine,
        format!(
            "SELECT service, {stats} FROM spans WHERE {filter} GROUP BY service ORDER BY service"
        ),
    )
    .await?;
    let per_operation = rows(
        engine,
        format!("SELECT service, name AS operation, {stats} FROM spans WHERE {filter} GROUP BY service, name ORDER BY service, name"),
    )
    .await?;
    let shape = |r: &Map<String, Value>| -> Map<String, Value> {
        let requests = int(&r["requests"]);
        let errors = int(&r["errors"]);
        let mut m = Map::new();
        m.insert("requests".into(), json!(requests));
        m.insert("rate_per_sec".into(), json!(requests as f64 / secs));
        m.insert("errors".into(), json!(errors));
        m.insert(
            "error_rate".into(),
            json!(if requests > 0 {
                errors as f64 / requests as f64
            } else {
                0.0
            }),
        );
        for q in ["p50", "p95", "p99"] {
            m.insert(
                format!("{q}_ms"),
                json!(r[&format!("{q}_ns")].as_f64().unwrap_or(0.0) / 1e6),
            );
        }
        m.insert("instances".into(), r["instances"].clone());
        m
    };
    let mut operations: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in &per_operation {
        let mut m = shape(r);
        m.insert("operation".into(), r["operation"].clone());
        operations
            .entry(r["service"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(Value::Object(m));
    }
    let mut series: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if let Some(step) = &p.step {
        let step_ns = time_param::duration_nanos("step", step)?;
        if step_ns <= 0 {
            return Err(QueryError::Invalid("step must be positive".into()));
        }
        if (end - start) / step_ns > 10_000 {
            return Err(QueryError::Invalid(
                "step is too small for the window (over 10000 points)".into(),
            ));
        }
        let points = rows(
            engine,
            format!(
                "SELECT service, date_bin(INTERVAL '{step_ns} nanoseconds', start_time, to_timestamp_nanos(0)) AS t,
                        count(*) AS requests, sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors,
                        approx_percentile_cont(duration_ns, 0.95) AS p95_ns
                 FROM spans WHERE {filter} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        )
        .await?;
        for r in points {
            let requests = int(&r["requests"]);
            series.entry(r["service"].as_str().unwrap_or_default().to_string()).or_default().push(json!({
                "time": r["t"],
                "rate_per_sec": requests as f64 / (step_ns as f64 / 1e9),
                "error_rate": if requests > 0 { int(&r["errors"]) as f64 / requests as f64 } else { 0.0 },
                "p95_ms": r["p95_ns"].as_f64().unwrap_or(0.0) / 1e6,
            }));
        }
    }
    let services: Vec<Value> = per_service
        .iter()
        .map(|r| {
            let name = r["service"].as_str().unwrap_or_default().to_string();
            let mut m = shape(r);
            m.insert("service".into(), json!(name));
            m.insert(
                "operations".into(),
                json!(operations.remove(&name).unwrap_or_default()),
            );
            if p.step.is_some() {
                m.insert(
                    "series".into(),
                    json!(series.remove(&name).unwrap_or_default()),
                );
            }
            Value::Object(m)
        })
        .collect();
    Ok(json!({ "start_unix_nano": start, "end_unix_nano": end, "services": services }))
}

// ---- service graph ---------------------------------------------------------

async fn service_graph(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<WindowParams>,
) -> Response {
    reply(graph(&engine, &p).await)
}

async fn graph(engine: &QueryEngine, p: &WindowParams) -> Result<Value, QueryError> {
    let (start, end) = window(p.start.as_deref(), p.end.as_deref())?;
    let (lo, hi) = (start - 60_000_000_000, end + 60_000_000_000);
    let edges = rows(
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
            let inferred = e["inferred"].as_bool().unwrap_or(false);
            let caller = e["caller"].as_str().unwrap_or_default().to_string();
            let callee = e["callee"].as_str().unwrap_or_default().to_string();
            nodes.entry(caller.clone()).or_insert(false);
            let entry = nodes.entry(callee.clone()).or_insert(inferred);
            *entry = *entry && inferred;
            json!({
                "caller": caller,
                "callee": callee,
                "inferred": inferred,
                "calls": int(&e["calls"]),
                "errors": int(&e["errors"]),
                "p95_ms": e["p95_ns"].as_f64().unwrap_or(0.0) / 1e6,
            })
        })
        .collect();
    let nodes: Vec<Value> = nodes
        .into_iter()
        .map(|(name, inferred)| json!({"name": name, "inferred": inferred}))
        .collect();
    Ok(json!({ "nodes": nodes, "edges": edges }))
}
