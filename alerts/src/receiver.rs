//! Receivers: where notifications go and how alerts are grouped and
//! paced on the way, with Alertmanager's settings and defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `webhook`: Alertmanager's webhook body (version 4) to any URL.
/// `alertmanager`: the alerts themselves to a real Alertmanager's
/// `/api/v2/alerts`, which does its own grouping and routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    Webhook,
    Alertmanager,
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn four_hours() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn yes() -> bool {
    true
}

/// A receiver as stored (the API never shows `secret`, only whether it is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverSpec {
    #[serde(rename = "type")]
    pub kind: ReceiverKind,
    pub url: String,
    /// `whsec_…`: notifications are signed (Standard Webhooks) when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Labels whose values split alerts into groups (empty: one group).
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default = "thirty_seconds", with = "loupe_base::duration")]
    pub group_wait: Duration,
    #[serde(default = "five_minutes", with = "loupe_base::duration")]
    pub group_interval: Duration,
    #[serde(default = "four_hours", with = "loupe_base::duration")]
    pub repeat_interval: Duration,
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Alerts per notification at most (0: no limit); the rest are counted
    /// in `truncatedAlerts`.
    #[serde(default)]
    pub max_alerts: usize,
}

impl ReceiverSpec {
    /// What is wrong with the receiver, if anything.
    pub fn problems(&self) -> Option<String> {
        let url = self.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Some(format!("url {url:?} must be an http:// or https:// URL"));
        }
        if let Some(secret) = &self.secret
            && let Err(e) = loupe_notify::signing::secret_key(secret)
        {
            return Some(e.to_string());
        }
        if let Some(bad) = self
            .group_by
            .iter()
            .find(|l| !crate::rule::valid_label_name(l))
        {
            return Some(format!("group_by {bad:?} is not a label name"));
        }
        None
    }

    /// The receiver as the API shows it: the secret replaced by whether
    /// one is set.
    pub fn public_view(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.remove("secret");
            map.insert("secret_set".into(), Value::Bool(self.secret.is_some()));
        }
        v
    }

    /// Where notifications are POSTed.
    pub fn endpoint(&self) -> String {
        match self.kind {
            ReceiverKind::Webhook => self.url.clone(),
            ReceiverKind::Alertmanager => {
                format!("{}/api/v2/alerts", self.url.trim_end_matches('/'))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_are_alertmanagers_and_secrets_stay_hidden() {
        let r: ReceiverSpec = serde_json::from_value(json!({
            "type": "webhook", "url": "http://127.0.0.1:9/hook",
            "secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
        }))
        .unwrap();
        assert_eq!(r.group_wait, Duration::from_secs(30));
        assert_eq!(r.group_interval, Duration::from_secs(300));
        assert_eq!(r.repeat_interval, Duration::from_secs(14_400));
        assert!(r.send_resolved);
        assert!(r.problems().is_none());
        let view = r.public_view();
        assert_eq!(view["secret_set"], true);
        assert!(view.get("secret").is_none());
        let am: ReceiverSpec =
            serde_json::from_value(json!({"type": "alertmanager", "url": "http://am:9093/"}))
                .unwrap();
        assert_eq!(am.endpoint(), "http://am:9093/api/v2/alerts");
        let bad: ReceiverSpec =
            serde_json::from_value(json!({"type": "webhook", "url": "ftp://x"})).unwrap();
        assert!(bad.problems().is_some());
    }
}
