//! Built-in rules a user enables with one call: error rate of a service's
//! SERVER spans, p99 latency, no data from a service, and a new or surging
//! ERROR log pattern (through the `log_template` SQL function), and a
//! capacity fallback (from Loupe's own `capacity.fallback` log events).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use loupe_base::sql_literal::quote;

use crate::rule::{Condition, Op, RuleSpec};

/// Builds `(name, rule)` from a template request; the message says what is
/// missing or wrong.
pub fn build(request: &Value) -> Result<(String, RuleSpec), String> {
    let template = request["template"].as_str().ok_or(
        "template is required: error_rate, p99_latency, no_data, log_pattern or capacity_fallback",
    )?;
    let service = request["service"].as_str();
    let window = match request["window"].as_str() {
        Some(w) => loupe_base::duration::parse(w).map_err(|e| e.to_string())?,
        None => Duration::from_secs(300),
    };
    let window_sql = format!("INTERVAL '{} seconds'", window.as_secs().max(1));
    let service_filter = service
        .map(|s| format!(" AND service = {}", quote(s)))
        .unwrap_or_default();
    let number = |key: &str, default: f64| request[key].as_f64().unwrap_or(default);
    let (default_name, sql, condition, summary) = match template {
        "error_rate" => {
            let threshold = number("threshold", 0.05);
            (
                "error_rate",
                format!(
                    "SELECT service, avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate \
                     FROM spans WHERE kind = 'server' AND start_time > now() - {window_sql}{service_filter} \
                     GROUP BY service"
                ),
                Condition {
                    column: "error_rate".into(),
                    op: Op::Gt,
                    threshold,
                },
                "{{ $labels.service }}: {{ $value }} of server requests fail".to_string(),
            )
        }
        "p99_latency" => {
            let threshold = number("threshold_ms", 500.0);
            (
                "p99_latency",
                format!(
                    "SELECT service, approx_percentile_cont(duration_ns, 0.99) / 1e6 AS p99_ms \
                     FROM spans WHERE kind = 'server' AND start_time > now() - {window_sql}{service_filter} \
                     GROUP BY service"
                ),
                Condition {
                    column: "p99_ms".into(),
                    op: Op::Gt,
                    threshold,
                },
                "{{ $labels.service }}: p99 latency {{ $value }} ms".to_string(),
            )
        }
        "no_data" => {
            let service = service.ok_or("no_data needs a service")?;
            (
                "no_data",
                format!(
                    "SELECT count(*) AS records FROM spans WHERE service = {} AND start_time > now() - {window_sql}",
                    quote(service)
                ),
                Condition {
                    column: "records".into(),
                    op: Op::Eq,
                    threshold: 0.0,
                },
                format!(
                    "no spans from {service} in {}",
                    loupe_base::duration::format(window)
                ),
            )
        }
        "log_pattern" => {
            // ERROR lines per template now against the twelve windows before:
            // `surge` is the recent count over the usual count per window + 1,
            // so a template never seen before surges by its own count.
            let threshold = number("threshold", 3.0);
            let min_lines = number("min_lines", 5.0).max(1.0) as i64;
            let earlier_sql = format!("INTERVAL '{} seconds'", window.as_secs().max(1) * 13);
            let per_template = |range: &str| {
                format!(
                    "SELECT service, log_template(body) AS template, count(*) AS lines FROM logs \
                     WHERE severity_number >= 17 AND {range}{service_filter} GROUP BY 1, 2"
                )
            };
            (
                "log_pattern",
                format!(
                    "WITH recent AS ({}), earlier AS ({}) \
                     SELECT r.service, r.template, r.lines, \
                            CAST(r.lines AS DOUBLE) / (COALESCE(e.lines, 0) / 12.0 + 1.0) AS surge \
                     FROM recent r LEFT JOIN earlier e ON r.service = e.service AND r.template = e.template \
                     WHERE r.lines >= {min_lines}",
                    per_template(&format!("time > now() - {window_sql}")),
                    per_template(&format!(
                        "time > now() - {earlier_sql} AND time <= now() - {window_sql}"
                    )),
                ),
                Condition { column: "surge".into(), op: Op::Ge, threshold },
                "{{ $labels.service }}: new or surging ERROR log pattern \"{{ $labels.template }}\" (x{{ $value }})"
                    .to_string(),
            )
        }
        "capacity_fallback" => {
            // Capacity writes each fallback as a `capacity.fallback` event of
            // the service `loupe` (see the capacity README section).
            let service_filter = service
                .map(|s| format!(" AND attributes['capacity.service'] = {}", quote(s)))
                .unwrap_or_default();
            (
                "capacity_fallback",
                format!(
                    "SELECT attributes['capacity.service'] AS service, attributes['cloud.region'] AS region, \
                     count(*) AS fallbacks FROM logs WHERE service = 'loupe' AND event_name = 'capacity.fallback' \
                     AND time > now() - {window_sql}{service_filter} GROUP BY 1, 2"
                ),
                Condition { column: "fallbacks".into(), op: Op::Gt, threshold: 0.0 },
                "{{ $labels.service }}: capacity fell back ({{ $value }} times): its load signals could not be read"
                    .to_string(),
            )
        }
        other => {
            return Err(format!(
                "unknown template {other:?}: use error_rate, p99_latency, no_data, log_pattern or capacity_fallback"
            ));
        }
    };
    let mut labels = BTreeMap::new();
    if let (Some(s), "no_data") = (service, template) {
        labels.insert("service".to_string(), s.to_string());
    }
    let rule = RuleSpec {
        sql,
        every: match request["every"].as_str() {
            Some(e) => loupe_base::duration::parse(e).map_err(|e| e.to_string())?,
            None => Duration::from_secs(60),
        },
        pending_for: match request["for"].as_str() {
            Some(f) => loupe_base::duration::parse(f).map_err(|e| e.to_string())?,
            None => Duration::from_secs(120),
        },
        keep_firing_for: Duration::ZERO,
        condition: Some(condition),
        labels,
        annotations: [("summary".to_string(), summary)].into(),
        receivers: match &request["receivers"] {
            Value::Array(list) => list
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        },
        attach_suspects: true,
    };
    let name = request["name"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| match service {
            Some(s) => format!(
                "{default_name}_{}",
                s.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            ),
            None => default_name.to_string(),
        });
    Ok((name, rule))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn templates_build_checked_rules() {
        let (name, rule) =
            build(&json!({"template": "error_rate", "service": "pay-ment", "threshold": 0.1}))
                .unwrap();
        assert_eq!(name, "error_rate_pay_ment");
        assert!(rule.sql.contains("service = 'pay-ment'"), "{}", rule.sql);
        assert_eq!(rule.condition.as_ref().map(|c| c.threshold), Some(0.1));
        assert!(rule.problems().is_none());
        let (_, rule) =
            build(&json!({"template": "no_data", "service": "cart", "window": "10m"})).unwrap();
        assert!(rule.sql.contains("INTERVAL '600 seconds'"));
        assert_eq!(rule.labels["service"], "cart");
        assert!(build(&json!({"template": "no_data"})).is_err());
        let (name, rule) = build(&json!({"template": "log_pattern", "every": "10s"})).unwrap();
        assert_eq!(name, "log_pattern");
        assert!(rule.sql.contains("log_template(body)"), "{}", rule.sql);
        assert_eq!(rule.every, Duration::from_secs(10));
        assert_eq!(
            rule.condition.as_ref().map(|c| c.column.as_str()),
            Some("surge")
        );
        assert!(build(&json!({"template": "nope"})).is_err());
    }
}
