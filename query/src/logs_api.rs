//! Log search over HTTP: `GET /api/v1/logs/search` (hits newest first, a
//! total and a histogram over the range) and `GET /api/v1/logs/context`
//! (the lines around one line of the same service and instance).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use datafusion::functions::expr_fn::date_bin;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::scalar::ScalarValue;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::error_response;
use crate::engine::QueryEngine;
use crate::error::{QueryError, from_datafusion};
use crate::{output, search, time_param};

const HIT_COLUMNS: [&str; 9] = [
    "time",
    "service",
    "severity_text",
    "severity_number",
    "body",
    "trace_id",
    "span_id",
    "attributes",
    "resource_attributes",
];
const MAX_LIMIT: usize = 1000;
const MAX_CONTEXT: usize = 200;

pub fn router(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/logs/search", get(search_logs))
        .route("/api/v1/logs/context", get(context))
        .route("/api/v1/logs/patterns", get(patterns))
        .with_state(engine)
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    q: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
    service: Option<String>,
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

fn ts(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

fn fail(e: QueryError) -> Response {
    error_response(e.http_status(), e.to_string())
}

/// The logs matching the request's range, service and query.
async fn matching(
    ctx: &SessionContext,
    start: i64,
    end: i64,
    service: Option<&str>,
    q: Option<&str>,
) -> Result<DataFrame, QueryError> {
    let mut df = ctx
        .table("logs")
        .await
        .map_err(from_datafusion)?
        .filter(col("time").gt_eq(ts(start)).and(col("time").lt_eq(ts(end))))
        .map_err(from_datafusion)?;
    if let Some(service) = service {
        df = df
            .filter(col("service").eq(lit(service)))
            .map_err(from_datafusion)?;
    }
    if let Some(q) = q.filter(|q| !q.trim().is_empty()) {
        df = df
            .filter(search::match_all_udf().call(vec![lit(q)]))
            .map_err(from_datafusion)?;
    }
    Ok(df)
}

fn hit_columns() -> Vec<Expr> {
    HIT_COLUMNS.iter().map(|c| col(*c)).collect()
}

fn objects(out: &crate::QueryOutput) -> Result<Vec<Map<String, Value>>, QueryError> {
    output::to_objects(out).map_err(|e| QueryError::Internal(e.to_string()))
}

async fn search_logs(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<SearchParams>,
) -> Response {
    match run_search(&engine, p).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => fail(e),
    }
}

async fn run_search(engine: &QueryEngine, p: SearchParams) -> Result<Value, QueryError> {
    let started = Instant::now();
    let now = now_nanos();
    let end = time_param::parse(p.end.as_deref().unwrap_or("now"), now)?;
    let start = time_param::parse(p.start.as_deref().unwrap_or("now-1h"), now)?;
    if start > end {
        return Err(QueryError::Invalid("start is after end".into()));
    }
    let limit = p.limit.unwrap_or(100).min(MAX_LIMIT);
    let (service, q) = (p.service.as_deref(), p.q.as_deref());
    if let Some(q) = q.filter(|q| !q.trim().is_empty()) {
        loupe_storage::log_index::validate_query(q)
            .map_err(|e| QueryError::Invalid(e.to_string()))?;
    }

    let hits = engine
        .query(async |ctx| {
            matching(ctx, start, end, service, q)
                .await?
                .select(hit_columns())
                .and_then(|df| df.sort(vec![col("time").sort(false, true)]))
                .and_then(|df| df.limit(0, Some(limit)))
                .map_err(from_datafusion)
        })
        .await?;

    let width = time_param::bucket_width(end - start);
    let stride = lit(ScalarValue::IntervalMonthDayNano(Some(
        datafusion::arrow::datatypes::IntervalMonthDayNano::new(0, 0, width),
    )));
    let histogram = engine
        .query(async |ctx| {
            let bucket = date_bin(stride.clone(), col("time"), ts(0)).alias("bucket");
            matching(ctx, start, end, service, q)
                .await?
                .aggregate(vec![bucket], vec![count(lit(1)).alias("count")])
                .map_err(from_datafusion)
        })
        .await?;

    let mut counts = std::collections::BTreeMap::new();
    for batch in &histogram.batches {
        let buckets = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>();
        let n = batch
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>();
        if let (Some(buckets), Some(n)) = (buckets, n) {
            for i in 0..batch.num_rows() {
                counts.insert(buckets.value(i), n.value(i));
            }
        }
    }
    let total: i64 = counts.values().sum();
    let first = start.div_euclid(width) * width;
    let mut histogram = Vec::new();
    let mut bucket = first;
    while bucket <= end {
        let start_time = chrono::DateTime::from_timestamp_nanos(bucket)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        histogram
            .push(json!({"start": start_time, "count": counts.get(&bucket).copied().unwrap_or(0)}));
        bucket += width;
    }
    Ok(json!({
        "total": total,
        "hits": objects(&hits)?,
        "histogram": histogram,
        "bucket_ms": width as f64 / 1e6,
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
}

#[derive(Debug, Deserialize)]
struct ContextParams {
    service: String,
    /// The line's time (RFC 3339 or ns).
    time: String,
    /// `service.instance.id`; all instances when absent.
    instance: Option<String>,
    before: Option<usize>,
    after: Option<usize>,
}

async fn context(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<ContextParams>,
) -> Response {
    match run_context(&engine, p).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => fail(e),
    }
}

async fn run_context(engine: &QueryEngine, p: ContextParams) -> Result<Value, QueryError> {
    let at = time_param::parse(&p.time, now_nanos())?;
    let (before, after) = (
        p.before.unwrap_or(10).min(MAX_CONTEXT),
        p.after.unwrap_or(10).min(MAX_CONTEXT),
    );
    let side = async |cmp: Expr, ascending: bool, n: usize| {
        let (service, instance) = (p.service.clone(), p.instance.clone());
        engine
            .query(async move |ctx| {
                let mut df = ctx
                    .table("logs")
                    .await
                    .and_then(|df| df.filter(col("service").eq(lit(service))))
                    .and_then(|df| df.filter(cmp))
                    .map_err(from_datafusion)?;
                if let Some(instance) = instance {
                    let id = datafusion::functions::core::expr_fn::get_field(
                        col("resource_attributes"),
                        "service.instance.id",
                    );
                    df = df.filter(id.eq(lit(instance))).map_err(from_datafusion)?;
                }
                df.select(hit_columns())
                    .and_then(|df| df.sort(vec![col("time").sort(ascending, true)]))
                    .and_then(|df| df.limit(0, Some(n)))
                    .map_err(from_datafusion)
            })
            .await
    };
    let mut earlier = objects(&side(col("time").lt(ts(at)), false, before).await?)?;
    earlier.reverse();
    let lines = objects(&side(col("time").eq(ts(at)), true, MAX_CONTEXT).await?)?;
    let later = objects(&side(col("time").gt(ts(at)), true, after).await?)?;
    if lines.is_empty() {
        return Err(QueryError::Invalid(format!(
            "no log line of service {:?} at {}",
            p.service, p.time
        )));
    }
    Ok(json!({"before": earlier, "lines": lines, "after": later}))
}

#[derive(Debug, Deserialize)]
struct PatternParams {
    start: Option<String>,
    end: Option<String>,
    service: Option<String>,
}

async fn patterns(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<PatternParams>,
) -> Response {
    match run_patterns(&engine, p).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => fail(e),
    }
}

/// Templates of the window's log lines with counts, marked new or surging
/// against the window of the same length just before.
async fn run_patterns(engine: &QueryEngine, p: PatternParams) -> Result<Value, QueryError> {
    let now = now_nanos();
    let end = time_param::parse(p.end.as_deref().unwrap_or("now"), now)?;
    let start = time_param::parse(p.start.as_deref().unwrap_or("now-15m"), now)?;
    if start >= end {
        return Err(QueryError::Invalid("start must be before end".into()));
    }
    let service = p.service.as_deref();
    let current = crate::problems::warn_patterns(engine, start, end, service, 0).await?;
    let before =
        crate::problems::warn_patterns(engine, start - (end - start), start, service, 0).await?;
    let mut list: Vec<Value> = current
        .counts
        .iter()
        .map(|(key, (n, example))| {
            let b = before.get(key);
            let trend = if b == 0 {
                "new"
            } else if *n >= 3 * b {
                "surging"
            } else {
                "steady"
            };
            json!({
                "service": key.0, "severity_text": key.1, "template": key.2,
                "count": n, "previous_count": b, "trend": trend, "example": example,
            })
        })
        .collect();
    list.sort_by(|a, b| {
        b["count"]
            .as_u64()
            .cmp(&a["count"].as_u64())
            .then_with(|| a["template"].as_str().cmp(&b["template"].as_str()))
    });
    Ok(json!({ "patterns": list }))
}
