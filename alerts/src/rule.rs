//! Alert rules: SQL whose result rows are alert instances, an optional
//! condition on one column, and the timing, labels and annotations of the
//! alerts it raises.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use loupe_base::telemetry_port::Row;

fn one_minute() -> Duration {
    Duration::from_secs(60)
}

fn yes() -> bool {
    true
}

/// A rule as the API takes and returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Read-only SQL; each result row is one alert instance.
    pub sql: String,
    /// How often the SQL runs.
    #[serde(default = "one_minute", with = "loupe_base::duration")]
    pub every: Duration,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for", with = "loupe_base::duration")]
    pub pending_for: Duration,
    /// How long a firing alert stays firing after the condition stops.
    #[serde(default, with = "loupe_base::duration")]
    pub keep_firing_for: Duration,
    /// Absent: every returned row fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Templates over `{{ $labels.x }}` and `{{ $value }}`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Names of receivers to notify.
    #[serde(default)]
    pub receivers: Vec<String>,
    /// Whether firing alerts carry Loupe's ranked suspects.
    #[serde(default = "yes")]
    pub attach_suspects: bool,
}

/// `column op threshold`, on the value of each result row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub column: String,
    pub op: Op,
    pub threshold: f64,
}

/// A comparison, written as in PromQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

impl RuleSpec {
    /// What is wrong with the rule apart from its SQL (which is checked by
    /// running it), if anything.
    pub fn problems(&self) -> Option<String> {
        if self.sql.trim().is_empty() {
            return Some("sql is required".into());
        }
        if self.every < Duration::from_secs(1) {
            return Some("every must be at least 1s".into());
        }
        if let Some(bad) = self
            .labels
            .keys()
            .chain(self.annotations.keys())
            .find(|k| !valid_label_name(k))
        {
            return Some(format!(
                "{bad:?} is not a label name: use letters, digits and underscores"
            ));
        }
        None
    }
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One alert instance found by an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The rule's labels, `alertname`, and the row's non-numeric columns.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Whether the condition holds for it.
    pub holds: bool,
}

/// The instances in a result: each row's non-numeric columns identify it,
/// its value is the condition's column (or its first numeric column).
/// Rows whose value column is missing or not a number are errors.
pub fn observe(rule_name: &str, rule: &RuleSpec, rows: &[Row]) -> Result<Vec<Observed>, String> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let value_column = match &rule.condition {
            Some(c) => c.column.clone(),
            None => row
                .iter()
                .find(|(_, v)| v.is_number())
                .map(|(k, _)| k.clone())
                .unwrap_or_default(),
        };
        let value = match row.get(&value_column) {
            Some(v) => v.as_f64(),
            None if rule.condition.is_none() => Some(1.0),
            None => None,
        }
        .ok_or_else(|| {
            format!("the result has no numeric column {value_column:?} for the condition")
        })?;
        let mut labels: BTreeMap<String, String> = rule.labels.clone();
        for (column, v) in row {
            if column == &value_column || v.is_number() || v.is_null() {
                continue;
            }
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            labels.insert(column.clone(), text);
        }
        labels.insert("alertname".into(), rule_name.to_string());
        let holds = rule
            .condition
            .as_ref()
            .is_none_or(|c| c.op.holds(value, c.threshold));
        out.push(Observed {
            labels,
            value,
            holds,
        });
    }
    Ok(out)
}

/// Expands `{{ $labels.name }}` and `{{ $value }}` in an annotation.
pub fn expand(template: &str, labels: &BTreeMap<String, String>, value: f64) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let expr = rest[start + 2..start + len].trim();
        if expr == "$value" {
            out.push_str(&format_value(value));
        } else if let Some(name) = expr.strip_prefix("$labels.") {
            out.push_str(labels.get(name.trim()).map(String::as_str).unwrap_or(""));
        } else {
            out.push_str(&rest[start..start + len + 2]);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// A value as people read it: integers without a fraction.
pub fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// The Alertmanager-style fingerprint of a label set: FNV-1a 64 over
/// `name \xff value \xff` in name order, as 16 hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for byte in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(body: Value) -> RuleSpec {
        serde_json::from_value(body).unwrap()
    }

    fn rows(v: Value) -> Vec<Row> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_and_refusals() {
        let r = rule(json!({"sql": "SELECT 1"}));
        assert_eq!(r.every, Duration::from_secs(60));
        assert_eq!(r.pending_for, Duration::ZERO);
        assert!(r.attach_suspects);
        assert!(r.problems().is_none());
        assert!(serde_json::from_value::<RuleSpec>(json!({"sql": "x", "nope": 1})).is_err());
        assert!(
            serde_json::from_value::<RuleSpec>(
                json!({"sql": "x", "condition": {"column": "n", "op": "=>", "threshold": 1}})
            )
            .is_err()
        );
        assert!(
            rule(json!({"sql": "x", "every": "100ms"}))
                .problems()
                .is_some()
        );
        assert!(
            rule(json!({"sql": "x", "labels": {"bad-name": "x"}}))
                .problems()
                .is_some()
        );
    }

    #[test]
    fn rows_become_instances_identified_by_their_text_columns() {
        let r = rule(json!({
            "sql": "…", "labels": {"severity": "page"},
            "condition": {"column": "errors", "op": ">", "threshold": 5}
        }));
        let found = observe(
            "errors",
            &r,
            &rows(json!([{"service": "cart", "errors": 9}, {"service": "pay", "errors": 2}])),
        )
        .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].labels["service"], "cart");
        assert_eq!(found[0].labels["alertname"], "errors");
        assert_eq!(found[0].labels["severity"], "page");
        assert!(!found[0].labels.contains_key("errors"));
        assert_eq!((found[0].value, found[0].holds), (9.0, true));
        assert_eq!((found[1].value, found[1].holds), (2.0, false));
        assert_ne!(fingerprint(&found[0].labels), fingerprint(&found[1].labels));
        let err = observe("e", &r, &rows(json!([{"service": "cart"}]))).unwrap_err();
        assert!(err.contains("errors"), "{err}");
    }

    #[test]
    fn without_a_condition_every_row_fires() {
        let r = rule(json!({"sql": "…"}));
        let found = observe(
            "x",
            &r,
            &rows(json!([{"service": "a"}, {"service": "b", "n": 0}])),
        )
        .unwrap();
        assert!(found.iter().all(|o| o.holds));
        assert_eq!(found[1].value, 0.0);
    }

    #[test]
    fn templates_expand_labels_and_value() {
        let labels: BTreeMap<String, String> = [("service".to_string(), "cart".to_string())].into();
        assert_eq!(
            expand(
                "{{ $labels.service }} has {{$value}} errors {{ $labels.none }}!",
                &labels,
                12.0
            ),
            "cart has 12 errors !"
        );
        assert_eq!(
            expand("{{ $other }} {{ open", &labels, 0.5),
            "{{ $other }} {{ open"
        );
        assert_eq!(format_value(0.25), "0.25");
    }
}
