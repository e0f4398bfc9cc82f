//! Log patterns: log lines grouped into templates by masking their
//! variable parts (numbers, ids, durations, addresses; JSON values), so
//! thousands of lines read as a handful of shapes with counts — and a new
//! or surging shape stands out.

use std::collections::HashMap;

use serde_json::Value;

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

    pub fn get(&self, key: &(String, String, String)) -> u64 {
        self.counts.get(key).map_or(0, |(n, _)| *n)
    }
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
