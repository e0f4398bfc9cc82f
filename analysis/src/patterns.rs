//! Log patterns: log lines grouped into templates by masking their
//! variable parts (numbers, ids, durations, addresses; JSON values), so
//! thousands of lines read as a handful of shapes with counts — and a new
//! or surging shape stands out.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Json;
use axum::routing::get;
use loupe_base::sql_literal::{quote, timestamp as ts};
use loupe_query::internal_sql::rows_as;
use loupe_query::{QueryEngine, QueryError, time_param};
use serde::Deserialize;
use serde_json::{Value, json};

const VAR: &str = "<*>";

/// The template of one log line.
pub fn template(line: &str) -> String {
    let trimmed = line.trim();
    if trimmed.starts_with('{')
        && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed)
    {
        let mut keys: Vec<(&String, &Value)> = map.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let parts: Vec<String> = keys
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) if !is_variable(s) => format!("{k}={s}"),
                Value::Bool(b) => format!("{k}={b}"),
                _ => format!("{k}={VAR}"),
            })
            .collect();
        return format!("{{{}}}", parts.join(" "));
    }
    let mut out: Vec<&str> = Vec::new();
    for token in trimmed.split_whitespace() {
        let masked = if is_variable(token) { VAR } else { token };
        // Runs of variables collapse into one.
        if !(masked == VAR && out.last() == Some(&VAR)) {
            out.push(masked);
        }
    }
    out.join(" ")
}

/// Numbers, ids and anything else with a digit in it vary line to line.
fn is_variable(token: &str) -> bool {
    token.bytes().any(|b| b.is_ascii_digit()) || token.len() > 40
}

/// Counts of templates in a set of lines, with one example line each.
#[derive(Debug, Default)]
pub struct PatternCounts {
    pub counts: HashMap<(String, String, String), (u64, String)>,
}

impl PatternCounts {
    /// Adds a line of `service` at `severity`.
    pub fn add(&mut self, service: &str, severity: &str, line: &str) {
        let key = (service.to_string(), severity.to_string(), template(line));
        let entry = self
            .counts
            .entry(key)
            .or_insert_with(|| (0, line.to_string()));
        entry.0 += 1;
    }

    /// How many lines had the template `key` (0 when none).
    pub fn get(&self, key: &(String, String, String)) -> u64 {
        self.counts.get(key).map_or(0, |(n, _)| *n)
    }
}

/// The log patterns route.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/logs/patterns", get(patterns))
        .with_state(engine)
}

#[derive(Deserialize)]
struct LineRow {
    service: Option<String>,
    severity_text: Option<String>,
    body: Option<String>,
}

/// Counts the templates of a window's log lines at `min_severity` or
/// above (the newest 50000 lines), of one service or all.
pub async fn count_patterns(
    engine: &QueryEngine,
    start: i64,
    end: i64,
    service: Option<&str>,
    min_severity: i32,
) -> Result<PatternCounts, QueryError> {
    let service = service
        .map(|s| format!(" AND service = {}", quote(s)))
        .unwrap_or_default();
    let lines = rows_as::<LineRow>(
        engine,
        format!(
            "SELECT service, severity_text, body FROM logs
             WHERE time >= {} AND time <= {} AND severity_number >= {min_severity} AND body IS NOT NULL{service}
             ORDER BY time DESC LIMIT 50000",
            ts(start),
            ts(end)
        ),
    )
    .await?;
    let mut counts = PatternCounts::default();
    for l in lines {
        if let (Some(s), Some(sev), Some(body)) = (l.service, l.severity_text, l.body) {
            counts.add(&s, &sev, &body);
        }
    }
    Ok(counts)
}

/// Templates of the window's log lines with counts, marked new or surging
/// against the window of the same length just before.
async fn patterns(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<crate::WindowParams>,
) -> Result<Json<Value>, QueryError> {
    let (start, end) = time_param::window(p.start.as_deref(), p.end.as_deref(), "now-15m")?;
    if start == end {
        return Err(QueryError::Invalid("start must be before end".into()));
    }
    let service = p.service.as_deref();
    let (current, before) = futures::try_join!(
        count_patterns(&engine, start, end, service, 0),
        count_patterns(&engine, start - (end - start), start, service, 0),
    )?;
    let mut list: Vec<(u64, &str, Value)> = current
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
            let value = json!({
                "service": key.0, "severity_text": key.1, "template": key.2,
                "count": n, "previous_count": b, "trend": trend, "example": example,
            });
            (*n, key.2.as_str(), value)
        })
        .collect();
    list.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let list: Vec<Value> = list.into_iter().map(|(_, _, v)| v).collect();
    Ok(Json(json!({ "patterns": list })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_variable_parts_and_json_values() {
        assert_eq!(
            template("charged 12.50 USD to card ending 4242 in 31ms"),
            "charged <*> USD to card ending <*> in <*>"
        );
        assert_eq!(
            template("sent order confirmation o-810804 to u-7556@example.com"),
            "sent order confirmation <*> to <*>"
        );
        assert_eq!(
            template(
                r#"{"duration_ms":9.8,"event":"http_request","route":"/cart","status":200,"user_id":"u-8675"}"#
            ),
            "{duration_ms=<*> event=http_request route=/cart status=<*> user_id=<*>}"
        );
        let mut counts = PatternCounts::default();
        counts.add("a", "INFO", "took 5ms");
        counts.add("a", "INFO", "took 7ms");
        assert_eq!(
            counts.get(&("a".into(), "INFO".into(), "took <*>".into())),
            2
        );
    }
}
