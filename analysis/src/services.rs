//! Per-service rate, errors and latency (RED) from SERVER and CONSUMER
//! spans, per operation too, optionally as a time series, and optionally
//! split by operation, instance, version or region
//! (`GET /api/v1/services`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Json;
use axum::routing::get;
use loupe_base::sql_literal::{quote, timestamp as ts};
use loupe_query::internal_sql::rows_as;
use loupe_query::{QueryEngine, QueryError, time_param};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Points a series may have (per service, or per group when split).
const MAX_POINTS: i64 = 10_000;
/// Points a split series may have: each point of each group keeps three
/// percentile sketches while the query runs.
const MAX_SPLIT_POINTS: i64 = 500;
/// Groups of a split: the busiest ones.
const MAX_GROUPS: usize = 20;

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
    /// Only this service.
    service: Option<String>,
    /// Split the service's RED (and series) by this dimension; needs `service`.
    by: Option<String>,
}

/// The SQL expression of a `by` dimension.
fn dimension(by: &str) -> Result<&'static str, QueryError> {
    Ok(match by {
        "operation" => "name",
        "instance" => "instance",
        "version" => "resource_attributes['service.version']",
        "region" => "resource_attributes['cloud.region']",
        other => {
            return Err(QueryError::Invalid(format!(
                "by must be operation, instance, version or region, not {other:?}"
            )));
        }
    })
}

/// One service's (or operation's, or group's) RED over the window.
#[derive(Deserialize)]
struct RedRow {
    service: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    grp: Option<String>,
    /// 1 on a service's row over all its operations, from `grouping(name)`.
    #[serde(default)]
    all_operations: i32,
    requests: i64,
    errors: Option<i64>,
    p50_ns: Option<f64>,
    p95_ns: Option<f64>,
    p99_ns: Option<f64>,
    instances: Option<i64>,
}

/// One service's (or group's) RED in one step of the series.
#[derive(Deserialize)]
struct PointRow {
    service: Option<String>,
    #[serde(default)]
    grp: Option<String>,
    t: Value,
    requests: i64,
    errors: Option<i64>,
    p50_ns: Option<f64>,
    p95_ns: Option<f64>,
    p99_ns: Option<f64>,
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

const STATS: &str = "count(*) AS requests,
    sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors,
    approx_percentile_cont(duration_ns, 0.5) AS p50_ns,
    approx_percentile_cont(duration_ns, 0.95) AS p95_ns,
    approx_percentile_cont(duration_ns, 0.99) AS p99_ns";

/// The step in ns, checked against the window and the points allowed.
fn step_nanos(step: &str, start: i64, end: i64, max_points: i64) -> Result<i64, QueryError> {
    let step_ns = time_param::duration_nanos("step", step)?;
    if step_ns <= 0 {
        return Err(QueryError::Invalid("step must be positive".into()));
    }
    if (end - start) / step_ns > max_points {
        return Err(QueryError::Invalid(format!(
            "step is too small for the window (over {max_points} points)"
        )));
    }
    Ok(step_ns)
}

/// RED per step, keyed by service and group (`group` is a SQL expression,
/// or none for the whole service).
async fn series(
    engine: &QueryEngine,
    filter: &str,
    step_ns: i64,
    group: Option<&str>,
) -> Result<BTreeMap<(String, Option<String>), Vec<Value>>, QueryError> {
    let (grp, by) = match group {
        Some(g) => (format!("{g} AS grp,"), "1, 2, 3"),
        None => (String::new(), "1, 2"),
    };
    let points = rows_as::<PointRow>(
        engine,
        format!(
            "SELECT service, {grp} date_bin(INTERVAL '{step_ns} nanoseconds', start_time, to_timestamp_nanos(0)) AS t, {STATS}
             FROM spans WHERE {filter} GROUP BY {by} ORDER BY {by}"
        ),
    )
    .await?;
    let mut out: BTreeMap<(String, Option<String>), Vec<Value>> = BTreeMap::new();
    for r in points {
        out.entry((r.service.unwrap_or_default(), r.grp))
            .or_default()
            .push(json!({
                "time": r.t,
                "requests": r.requests,
                "rate_per_sec": r.requests as f64 / (step_ns as f64 / 1e9),
                "error_rate": error_rate(r.requests, r.errors),
                "p50_ms": ms(r.p50_ns),
                "p95_ms": ms(r.p95_ns),
                "p99_ms": ms(r.p99_ns),
            }));
    }
    Ok(out)
}

/// Rate, errors and latency from SERVER and CONSUMER spans.
async fn red(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<ServicesParams>,
) -> Result<Json<Value>, QueryError> {
    let engine = engine.as_ref();
    let (start, end) = crate::last_hour(p.start.as_deref(), p.end.as_deref())?;
    let secs = ((end - start) as f64 / 1e9).max(1e-9);
    let group = p.by.as_deref().map(dimension).transpose()?;
    if group.is_some() && p.service.is_none() {
        return Err(QueryError::Invalid("by needs a service".into()));
    }
    let mut filter = format!(
        "kind IN ('server', 'consumer') AND start_time >= {} AND start_time <= {}",
        ts(start),
        ts(end)
    );
    if let Some(service) = &p.service {
        filter.push_str(&format!(" AND service = {}", quote(service)));
    }
    let instances = "count(DISTINCT instance) AS instances";
    // Each service's row and each of its operations' in one scan: reading
    // the resource attributes for the instance count is most of the work,
    // and this was two queries, each reading them (at 2.2 M spans the
    // endpoint took 596 ms with two, 355 with one).
    let (per_service, per_operation): (Vec<RedRow>, Vec<RedRow>) = rows_as::<RedRow>(
        engine,
        format!(
            "SELECT service, name AS operation, grouping(name) AS all_operations, {STATS}, {instances}
             FROM spans WHERE {filter}
             GROUP BY GROUPING SETS ((service), (service, name)) ORDER BY service, operation"
        ),
    )
    .await?
    .into_iter()
    .partition(|r| r.all_operations == 1);
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
    let mut series_of = match &p.step {
        Some(step) => {
            let step_ns = step_nanos(step, start, end, MAX_POINTS)?;
            series(engine, &filter, step_ns, None).await?
        }
        None => BTreeMap::new(),
    };
    let groups = match group {
        Some(g) => Some(split(engine, &filter, g, p.step.as_deref(), start, end, &shape).await?),
        None => None,
    };
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
                    json!(series_of.remove(&(name.clone(), None)).unwrap_or_default()),
                );
            }
            if let Some(groups) = &groups {
                m.insert("by".into(), json!(p.by));
                m.insert("groups".into(), json!(groups));
            }
            m.insert("service".into(), json!(name));
            Value::Object(m)
        })
        .collect();
    Ok(Json(
        json!({ "start_unix_nano": start, "end_unix_nano": end, "services": services }),
    ))
}

/// The busiest groups of `group` (one service's filter), each with its RED
/// and, with a step, its series.
async fn split(
    engine: &QueryEngine,
    filter: &str,
    group: &str,
    step: Option<&str>,
    start: i64,
    end: i64,
    shape: &impl Fn(&RedRow) -> Map<String, Value>,
) -> Result<Vec<Value>, QueryError> {
    let step_ns = step
        .map(|s| step_nanos(s, start, end, MAX_SPLIT_POINTS))
        .transpose()?;
    let rows = rows_as::<RedRow>(
        engine,
        format!(
            "SELECT service, {group} AS grp, {STATS},
                    count(DISTINCT instance) AS instances
             FROM spans WHERE {filter} GROUP BY 1, 2 ORDER BY requests DESC, grp LIMIT {MAX_GROUPS}"
        ),
    )
    .await?;
    let mut series_of = match step_ns {
        Some(step_ns) if !rows.is_empty() => {
            // Only the groups listed: the series' memory stays bounded.
            let values: Vec<String> = rows
                .iter()
                .filter_map(|r| r.grp.as_deref().map(quote))
                .collect();
            let mut only = Vec::new();
            if !values.is_empty() {
                only.push(format!("{group} IN ({})", values.join(", ")));
            }
            if rows.iter().any(|r| r.grp.is_none()) {
                only.push(format!("{group} IS NULL"));
            }
            let filter = format!("{filter} AND ({})", only.join(" OR "));
            series(engine, &filter, step_ns, Some(group)).await?
        }
        _ => BTreeMap::new(),
    };
    Ok(rows
        .iter()
        .map(|r| {
            let mut m = shape(r);
            m.insert("value".into(), json!(r.grp));
            if step_ns.is_some() {
                let key = (r.service.clone().unwrap_or_default(), r.grp.clone());
                m.insert(
                    "series".into(),
                    json!(series_of.remove(&key).unwrap_or_default()),
                );
            }
            Value::Object(m)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_are_a_fixed_list() {
        assert_eq!(dimension("operation").ok(), Some("name"));
        assert!(dimension("region").is_ok_and(|d| d.contains("cloud.region")));
        assert!(matches!(
            dimension("name'); DROP"),
            Err(QueryError::Invalid(_))
        ));
    }

    #[test]
    fn steps_are_bounded() {
        let hour = 3_600_000_000_000;
        assert_eq!(step_nanos("1m", 0, hour, 500).ok(), Some(60_000_000_000));
        assert!(step_nanos("1s", 0, hour, 500).is_err());
        assert!(step_nanos("0s", 0, hour, 500).is_err());
    }
}
