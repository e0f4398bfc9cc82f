//! Error grouping: exceptions recorded as span events and ERROR log lines,
//! grouped by exception type, normalised message and top stack frames, so
//! a burst of one failure reads as one group with a count.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::error_response;
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::internal_sql::rows;
use crate::patterns::template;
use crate::time_param;
use loupe_base::sql_literal::quote;

const SAMPLE: usize = 50_000;
const TOP_FRAMES: usize = 2;

#[derive(Debug, Deserialize)]
pub struct ErrorParams {
    start: Option<String>,
    end: Option<String>,
    service: Option<String>,
}

pub async fn handler(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<ErrorParams>,
) -> Response {
    match groups(&engine, &p).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(e.http_status(), e.to_string()),
    }
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
    services: std::collections::BTreeSet<String>,
    first: Option<String>,
    last: Option<String>,
    traces: Vec<String>,
    example: String,
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

async fn groups(engine: &QueryEngine, p: &ErrorParams) -> Result<Value, QueryError> {
    let (start, end) = time_param::window(p.start.as_deref(), p.end.as_deref(), "now-1h")?;
    let service = p
        .service
        .as_deref()
        .map(|s| format!(" AND service = {}", quote(s)))
        .unwrap_or_default();
    let window = |col: &str| {
        format!("{col} >= to_timestamp_nanos({start}) AND {col} <= to_timestamp_nanos({end})")
    };
    let spans = rows(
        engine,
        format!(
            "SELECT service, start_time, trace_id, events FROM spans
             WHERE {} AND events LIKE '%\"exception\"%'{service} ORDER BY start_time DESC LIMIT {SAMPLE}",
            window("start_time")
        ),
    )
    .await?;
    let logs = rows(
        engine,
        format!(
            "SELECT service, time, trace_id, body, attributes['exception.type'] AS exception_type,
                    attributes['exception.stacktrace'] AS stacktrace
             FROM logs WHERE {} AND severity_number >= 17{service} ORDER BY time DESC LIMIT {SAMPLE}",
            window("time")
        ),
    )
    .await?;

    let mut groups: BTreeMap<(String, String, Vec<String>, &'static str), Group> = BTreeMap::new();
    for span in &spans {
        let events: Value = span["events"]
            .as_str()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or(Value::Null);
        for event in events
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["name"] == "exception")
        {
            let attrs = &event["attributes"];
            let kind = attrs["exception.type"]
                .as_str()
                .unwrap_or("exception")
                .to_string();
            let message = attrs["exception.message"].as_str().unwrap_or_default();
            let frames = top_frames(attrs["exception.stacktrace"].as_str().unwrap_or_default());
            groups
                .entry((kind, template(message), frames, "span_event"))
                .or_default()
                .add(
                    span["service"].as_str().unwrap_or_default(),
                    span["start_time"].as_str().unwrap_or_default(),
                    span["trace_id"].as_str(),
                    message,
                );
        }
    }
    for log in &logs {
        let body = log["body"].as_str().unwrap_or_default();
        let kind = log["exception_type"]
            .as_str()
            .unwrap_or("error log")
            .to_string();
        let frames = top_frames(log["stacktrace"].as_str().unwrap_or_default());
        groups
            .entry((kind, template(body), frames, "log"))
            .or_default()
            .add(
                log["service"].as_str().unwrap_or_default(),
                log["time"].as_str().unwrap_or_default(),
                log["trace_id"].as_str(),
                body,
            );
    }
    let mut list: Vec<Value> = groups
        .into_iter()
        .map(|((kind, message, frames, source), g)| {
            json!({
                "type": kind, "message": message, "top_frames": frames, "source": source,
                "count": g.count, "services": g.services, "first_seen": g.first, "last_seen": g.last,
                "example": g.example, "example_trace_ids": g.traces,
            })
        })
        .collect();
    list.sort_by(|a, b| b["count"].as_u64().cmp(&a["count"].as_u64()));
    Ok(json!({ "groups": list, "sampled": spans.len() >= SAMPLE || logs.len() >= SAMPLE }))
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
