//! Live load, read from the telemetry Loupe stores: request rate (from
//! SERVER/CONSUMER spans or from the counts of `http.server.request.duration`
//! histograms), ready instances, CPU, in-flight requests, or any SQL.
//!
//! The capacity crate does not run SQL itself; the server hands it a
//! [`Telemetry`] backed by the query engine, with its limits.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::error::{CapacityError, Result};
use crate::policy::{RateSource, SignalSpec};

pub use loupe_base::telemetry_port::{BoxFuture, Row, Telemetry};

use loupe_base::sql_literal::{quote, timestamp as ts};

/// What is being measured: a service, or one region of it.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub service: &'a str,
    pub region: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// `region` empty means the service as a whole.
    pub fn of(service: &'a str, region: &'a str) -> Scope<'a> {
        Scope {
            service,
            region: (!region.is_empty()).then_some(region),
        }
    }

    fn filter(&self) -> String {
        let mut f = format!("service = {}", quote(self.service));
        if let Some(region) = self.region {
            f.push_str(&format!(
                " AND resource_attributes['cloud.region'] = {}",
                quote(region)
            ));
        }
        f
    }
}

pub(crate) async fn query(t: &dyn Telemetry, sql: String) -> Result<Vec<Row>> {
    t.rows(sql).await.map_err(CapacityError::Query)
}

/// A JSON value as a number: query results carry numbers as JSON numbers
/// or (wide integers, decimals) as text.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Typed reads of a result row's columns, so callers name a column once
/// and get a number or text back.
pub trait Columns {
    /// The column as a number; `None` when absent, null or not numeric.
    fn number(&self, column: &str) -> Option<f64>;
    /// The column as text; `None` when absent or not a string.
    fn text(&self, column: &str) -> Option<&str>;
}

impl Columns for Row {
    fn number(&self, column: &str) -> Option<f64> {
        self.get(column).and_then(number)
    }

    fn text(&self, column: &str) -> Option<&str> {
        self.get(column).and_then(Value::as_str)
    }
}

/// The first row's `column` as a number (aggregates return one row).
fn first_number(rows: &[Row], column: &str) -> Option<f64> {
    rows.first().and_then(|r| r.number(column))
}

/// The window of live data: `[end − window, end)` in ns.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub end_ns: i64,
    pub length: Duration,
}

impl Window {
    fn start_ns(&self) -> i64 {
        self.end_ns - self.length.as_nanos() as i64
    }

    fn secs(&self) -> f64 {
        self.length.as_secs_f64()
    }

    fn spans(&self) -> String {
        format!(
            "start_time >= {} AND start_time < {}",
            ts(self.start_ns()),
            ts(self.end_ns)
        )
    }
}

const REQUEST_SPANS: &str = "kind IN ('server', 'consumer')";

/// `aggregate` over the scope's request spans in the window (0 for none).
async fn over_request_spans(
    t: &dyn Telemetry,
    aggregate: &str,
    scope: Scope<'_>,
    w: Window,
) -> Result<f64> {
    let rows = query(
        t,
        format!(
            "SELECT {aggregate} AS v FROM spans WHERE {} AND {REQUEST_SPANS} AND {}",
            scope.filter(),
            w.spans()
        ),
    )
    .await?;
    Ok(first_number(&rows, "v").unwrap_or(0.0))
}

/// Requests per second handled by the scope, from its spans.
pub async fn rate_from_spans(t: &dyn Telemetry, scope: Scope<'_>, w: Window) -> Result<f64> {
    Ok(over_request_spans(t, "count(*)", scope, w).await? / w.secs())
}

/// One cumulative count of a histogram series at a point in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterPoint {
    pub time_ns: i64,
    /// The series' start time: a new one means the counter restarted.
    pub start_ns: Option<i64>,
    pub count: f64,
}

impl CounterPoint {
    /// A histogram row's series key (instance × attributes) and point;
    /// `None` without a time or a count.
    fn from_row(row: &Row) -> Option<(String, CounterPoint)> {
        let column = |name| row.get(name).unwrap_or(&Value::Null);
        let key = format!("{}|{}", column("instance"), column("attributes"));
        let point = CounterPoint {
            time_ns: row.number("time_ns")? as i64,
            start_ns: row.number("start_ns").map(|s| s as i64),
            count: row.number("count")?,
        };
        Some((key, point))
    }
}

/// Per second increase of one cumulative counter series, handling resets
/// (the value dropping, or the start time changing, restarts from zero as
/// Prometheus does). `None` with fewer than two points.
pub fn counter_rate(points: &mut [CounterPoint]) -> Option<f64> {
    points.sort_by_key(|p| p.time_ns);
    let (first, last) = (points.first()?, points.last()?);
    let span = (last.time_ns - first.time_ns) as f64 / 1e9;
    if span <= 0.0 {
        return None;
    }
    let increase: f64 = points
        .windows(2)
        .map(|pair| {
            let (prev, cur) = (pair[0], pair[1]);
            let restarted = cur.count < prev.count || cur.start_ns != prev.start_ns;
            if restarted {
                cur.count
            } else {
                cur.count - prev.count
            }
        })
        .sum();
    Some(increase / span)
}

/// Requests per second from the `http.server.request.duration` histograms'
/// counts: each series' rate (instance × attributes), summed.
pub async fn rate_from_metrics(t: &dyn Telemetry, scope: Scope<'_>, w: Window) -> Result<f64> {
    let rows = query(
        t,
        format!(
            "SELECT instance, attributes,
                    CAST(start_time AS BIGINT) AS start_ns, CAST(time AS BIGINT) AS time_ns, count
             FROM metrics
             WHERE {} AND name = 'http.server.request.duration' AND count IS NOT NULL
               AND time >= {} AND time < {}
             LIMIT 100000",
            scope.filter(),
            ts(w.start_ns()),
            ts(w.end_ns)
        ),
    )
    .await?;
    let mut series: HashMap<String, Vec<CounterPoint>> = HashMap::new();
    for (key, point) in rows.iter().filter_map(CounterPoint::from_row) {
        series.entry(key).or_default().push(point);
    }
    if series.is_empty() {
        return Err(CapacityError::Unprocessable(format!(
            "no http.server.request.duration points for {} in the last {}s",
            scope.service,
            w.secs()
        )));
    }
    Ok(series
        .values_mut()
        .filter_map(|points| counter_rate(points))
        .sum())
}

/// Instances of the scope that sent spans or metrics within `window` of `now_ns`.
pub async fn ready_instances(
    t: &dyn Telemetry,
    scope: Scope<'_>,
    now_ns: i64,
    window: Duration,
) -> Result<u32> {
    let since = ts(now_ns - window.as_nanos() as i64);
    let filter = scope.filter();
    let rows = query(
        t,
        format!(
            "SELECT count(DISTINCT instance) AS n FROM (
                SELECT instance FROM spans
                WHERE {filter} AND start_time >= {since}
                UNION ALL
                SELECT instance FROM metrics
                WHERE {filter} AND time >= {since})"
        ),
    )
    .await?;
    Ok(first_number(&rows, "n").unwrap_or(0.0) as u32)
}

/// Regions the service sent spans from within the window.
pub async fn regions(t: &dyn Telemetry, service: &str, w: Window) -> Result<Vec<String>> {
    let rows = query(
        t,
        format!(
            "SELECT DISTINCT resource_attributes['cloud.region'] AS region FROM spans
             WHERE service = {} AND {} ORDER BY region",
            quote(service),
            w.spans()
        ),
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.text("region").map(String::from))
        .collect())
}

/// A signal's current total for the scope, in the unit of its target.
pub async fn read_signal(
    t: &dyn Telemetry,
    signal: &SignalSpec,
    scope: Scope<'_>,
    w: Window,
) -> Result<f64> {
    match signal {
        SignalSpec::Rps {
            source: RateSource::Spans,
        } => rate_from_spans(t, scope, w).await,
        SignalSpec::Rps {
            source: RateSource::Metrics,
        } => rate_from_metrics(t, scope, w).await,
        SignalSpec::Cpu { metric, .. } => {
            let rows = query(
                t,
                format!(
                    "SELECT instance, avg(value) AS v
                     FROM metrics WHERE {} AND name = {} AND time >= {} AND time < {}
                     GROUP BY 1",
                    scope.filter(),
                    quote(metric),
                    ts(w.start_ns()),
                    ts(w.end_ns)
                ),
            )
            .await?;
            if rows.is_empty() {
                return Err(CapacityError::Unprocessable(format!(
                    "no {metric} points for {}",
                    scope.service
                )));
            }
            Ok(rows.iter().filter_map(|r| r.number("v")).sum())
        }
        SignalSpec::Concurrency { .. } => {
            // Little's law: in flight = arrival rate × time in system
            // = (n / T) × (Σ duration / n) = Σ duration / T.
            let busy_ns = over_request_spans(t, "sum(duration_ns)", scope, w).await?;
            Ok(busy_ns / 1e9 / w.secs())
        }
        SignalSpec::Sql { sql, name, .. } => {
            let sql = sql
                .replace("$service", &quote(scope.service))
                .replace("$region", &scope.region.map(quote).unwrap_or("NULL".into()));
            let rows = query(t, sql).await?;
            rows.first()
                .and_then(|r| r.values().next())
                .and_then(number)
                .ok_or_else(|| {
                    CapacityError::Unprocessable(format!(
                        "signal {name}: the SQL returned no number"
                    ))
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(secs: i64, start: i64, count: f64) -> CounterPoint {
        CounterPoint {
            time_ns: secs * 1_000_000_000,
            start_ns: Some(start),
            count,
        }
    }

    #[test]
    fn counter_rate_handles_resets() {
        // 100 → 160 → 220 over 20 s: 6/s.
        let mut steady = vec![p(20, 0, 220.0), p(0, 0, 100.0), p(10, 0, 160.0)];
        assert_eq!(counter_rate(&mut steady), Some(6.0));
        // Restart between 10 s and 20 s: the counter drops to 50.
        let mut dropped = vec![p(0, 0, 100.0), p(10, 0, 160.0), p(20, 0, 50.0)];
        assert_eq!(counter_rate(&mut dropped), Some((60.0 + 50.0) / 20.0));
        // Restart seen through a new start time even though the value is higher.
        let mut restarted = vec![p(0, 0, 100.0), p(10, 5, 170.0)];
        assert_eq!(counter_rate(&mut restarted), Some(17.0));
        assert_eq!(counter_rate(&mut [p(0, 0, 1.0)]), None);
    }
}
