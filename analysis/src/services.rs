//! Per-service rate, errors and latency (RED) from SERVER and CONSUMER
//! spans, per operation too, and optionally as a time series
//! (`GET /api/v1/services`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Json;
use axum::routing::get;
use loupe_base::sql_literal::timestamp as ts;
use loupe_query::internal_sql::rows_as;
use loupe_query::{QueryEngine, QueryError, time_param};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The services route.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/services", get(red))
        .with_state(engine)
}

#[derive(Debug, Deserialize)]
struct ServicesParams {
    start: Option<String>,
    end: Option<String>,
    step: Option<String>,
}

/// One service's (or operation's) RED over the window.
#[derive(Deserialize)]
struct RedRow {
    service: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    requests: i64,
    errors: Option<i64>,
    p50_ns: Option<f64>,
    p95_ns: Option<f64>,
    p99_ns: Option<f64>,
    instances: Option<i64>,
}

/// One service's RED in one step of the series.
#[derive(Deserialize)]
struct PointRow {
    service: Option<String>,
    t: Value,
    requests: i64,
    errors: Option<i64>,
    p95_ns: Option<f64>,
}

fn error_rate(requests: i64, errors: Option<i64>) -> f64 {
    if requests > 0 {
        errors.unwrap_or(0) as f64 / requests as f64
    } else {
        0.0
    }
}

fn ms(ns: Option<f64>) -> f64 {
    ns.unwrap_or(0.0) / 1e6
}

/// Rate, errors and latency from SERVER and CONSUMER spans.
async fn red(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<ServicesParams>,
) -> Result<Json<Value>, QueryError> {
    let engine = engine.as_ref();
    let (start, end) = crate::last_hour(p.start.as_deref(), p.end.as_deref())?;
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
    let (per_service, per_operation) = futures::try_join!(
        rows_as::<RedRow>(
            engine,
            format!(
                "SELECT service, {stats} FROM spans WHERE {filter} GROUP BY service ORDER BY service"
            ),
        ),
        rows_as::<RedRow>(
            engine,
            format!(
                "SELECT service, name AS operation, {stats} FROM spans WHERE {filter} GROUP BY service, name ORDER BY service, name"
            ),
        ),
    )?;
    let shape = |r: &RedRow| -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("requests".into(), json!(r.requests));
        m.insert("rate_per_sec".into(), json!(r.requests as f64 / secs));
        m.insert("errors".into(), json!(r.errors.unwrap_or(0)));
        m.insert("error_rate".into(), json!(error_rate(r.requests, r.errors)));
        m.insert("p50_ms".into(), json!(ms(r.p50_ns)));
        m.insert("p95_ms".into(), json!(ms(r.p95_ns)));
        m.insert("p99_ms".into(), json!(ms(r.p99_ns)));
        m.insert("instances".into(), json!(r.instances));
        m
    };
    let mut operations: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in &per_operation {
        let mut m = shape(r);
        m.insert("operation".into(), json!(r.operation));
        operations
            .entry(r.service.clone().unwrap_or_default())
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
        let points = rows_as::<PointRow>(
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
            series
                .entry(r.service.unwrap_or_default())
                .or_default()
                .push(json!({
                    "time": r.t,
                    "rate_per_sec": r.requests as f64 / (step_ns as f64 / 1e9),
                    "error_rate": error_rate(r.requests, r.errors),
                    "p95_ms": ms(r.p95_ns),
                }));
        }
    }
    let services: Vec<Value> = per_service
        .iter()
        .map(|r| {
            let name = r.service.clone().unwrap_or_default();
            let mut m = shape(r);
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
            m.insert("service".into(), json!(name));
            Value::Object(m)
        })
        .collect();
    Ok(Json(
        json!({ "start_unix_nano": start, "end_unix_nano": end, "services": services }),
    ))
}
