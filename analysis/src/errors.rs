//! Error grouping: exceptions recorded as span events and ERROR log lines,
//! grouped by exception type, normalised message and top stack frames, so
//! a burst of one failure reads as one group with a count.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Json;
use axum::routing::get;
use loupe_base::sql_literal::quote;
use loupe_query::internal_sql::rows_as;
use loupe_query::{QueryEngine, QueryError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::WindowParams;
use crate::patterns::template;

const SAMPLE: usize = 50_000;
const TOP_FRAMES: usize = 2;

/// The error groups route.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/errors", get(groups))
        .with_state(engine)
}

/// The first frames of a stack trace (`at …` lines), without line numbers.
pub fn top_frames(stack: &str) -> Vec<String> {
    stack
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("at "))
        .take(TOP_FRAMES)
        .map(|f| f.split('(').next().unwrap_or(f).trim().to_string())
        .collect()
}

#[derive(Default)]
struct Group {
    count: u64,
    services: BTreeSet<String>,
    first: Option<String>,
    last: Option<String>,
    traces: Vec<String>,
    example: String,
}

/// A span that recorded exceptions, as events in JSON.
#[derive(Deserialize)]
struct SpanRow {
    service: Option<String>,
    start_time: Option<String>,
    trace_id: Option<String>,
    events: Option<String>,
}

/// An ERROR (or worse) log line.
#[derive(Deserialize)]
struct LogRow {
    service: Option<String>,
    time: Option<String>,
    trace_id: Option<String>,
    body: Option<String>,
    exception_type: Option<String>,
    stacktrace: Option<String>,
}

/// What groups errors: type, normalised message, top frames and source.
type Key = (String, String, Vec<String>, &'static str);

/// One occurrence of an error, wherever it was recorded.
struct Occurrence<'a> {
    kind: &'a str,
    message: &'a str,
    stack: &'a str,
    source: &'static str,
    service: &'a Option<String>,
    time: &'a Option<String>,
    trace: &'a Option<String>,
}

impl Occurrence<'_> {
    fn record(self, groups: &mut BTreeMap<Key, Group>) {
        let key = (
            self.kind.to_string(),
            template(self.message),
            top_frames(self.stack),
            self.source,
        );
        groups.entry(key).or_default().add(
            self.service.as_deref().unwrap_or_default(),
            self.time.as_deref().unwrap_or_default(),
            self.trace.as_deref(),
            self.message,
        );
    }
}

impl Group {
    fn add(&mut self, service: &str, time: &str, trace: Option<&str>, example: &str) {
        self.count += 1;
        self.services.insert(service.to_string());
        if self.first.as_deref().is_none_or(|f| time < f) {
            self.first = Some(time.to_string());
        }
        if self.last.as_deref().is_none_or(|l| time > l) {
            self.last = Some(time.to_string());
        }
        if let Some(t) = trace
            && self.traces.len() < 3
            && !self.traces.iter().any(|x| x == t)
        {
            self.traces.push(t.to_string());
        }
        if self.example.is_empty() {
            self.example = example.to_string();
        }
    }
}

async fn groups(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<WindowParams>,
) -> Result<Json<Value>, QueryError> {
    let engine = engine.as_ref();
    let (start, end) = crate::last_hour(p.start.as_deref(), p.end.as_deref())?;
    let service = p
        .service
        .as_deref()
        .map(|s| format!(" AND service = {}", quote(s)))
        .unwrap_or_default();
    let window = |col: &str| {
        format!("{col} >= to_timestamp_nanos({start}) AND {col} <= to_timestamp_nanos({end})")
    };
    let (spans, logs) = futures::try_join!(
        rows_as::<SpanRow>(
            engine,
            format!(
                "SELECT service, start_time, trace_id, events FROM spans
                 WHERE {} AND events LIKE '%\"exception\"%'{service} ORDER BY start_time DESC LIMIT {SAMPLE}",
                window("start_time")
            ),
        ),
        rows_as::<LogRow>(
            engine,
            format!(
                "SELECT service, time, trace_id, body, attributes['exception.type'] AS exception_type,
                        attributes['exception.stacktrace'] AS stacktrace
                 FROM logs WHERE {} AND severity_number >= 17{service} ORDER BY time DESC LIMIT {SAMPLE}",
                window("time")
            ),
        ),
    )?;

    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    for span in &spans {
        let events: Value = span
            .events
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or(Value::Null);
        for event in events
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["name"] == "exception")
        {
            let attrs = &event["attributes"];
            Occurrence {
                kind: attrs["exception.type"].as_str().unwrap_or("exception"),
                message: attrs["exception.message"].as_str().unwrap_or_default(),
                stack: attrs["exception.stacktrace"].as_str().unwrap_or_default(),
                source: "span_event",
                service: &span.service,
                time: &span.start_time,
                trace: &span.trace_id,
            }
            .record(&mut groups);
        }
    }
    for log in &logs {
        Occurrence {
            kind: log.exception_type.as_deref().unwrap_or("error log"),
            message: log.body.as_deref().unwrap_or_default(),
            stack: log.stacktrace.as_deref().unwrap_or_default(),
            source: "log",
            service: &log.service,
            time: &log.time,
            trace: &log.trace_id,
        }
        .record(&mut groups);
    }
    let mut list: Vec<(u64, Value)> = groups
        .into_iter()
        .map(|((kind, message, frames, source), g)| {
            let value = json!({
                "type": kind, "message": message, "top_frames": frames, "source": source,
                "count": g.count, "services": g.services, "first_seen": g.first, "last_seen": g.last,
                "example": g.example, "example_trace_ids": g.traces,
            });
            (g.count, value)
        })
        .collect();
    list.sort_by_key(|(count, _)| std::cmp::Reverse(*count));
    let list: Vec<Value> = list.into_iter().map(|(_, v)| v).collect();
    Ok(Json(
        json!({ "groups": list, "sampled": spans.len() >= SAMPLE || logs.len() >= SAMPLE }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_drop_line_numbers() {
        let stack = "PaymentGatewayError: timeout\n    at com.shop.Gateway.charge(Gateway.java:142)\n    at com.shop.Handler.handle(Handler.java:88)\n    at x.y(z:1)";
        assert_eq!(
            top_frames(stack),
            vec!["com.shop.Gateway.charge", "com.shop.Handler.handle"]
        );
    }
}
