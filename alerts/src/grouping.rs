//! Grouping and pacing of notifications, as Alertmanager does it: alerts of
//! a receiver are grouped by its `group_by` labels; a new group waits
//! `group_wait` before its first notification; later changes go out at the
//! next `group_interval`; an unchanged group is re-sent after
//! `repeat_interval`; a group whose alerts all resolved before anything was
//! sent sends nothing. Pure: the notifier stores [`GroupState`] between
//! passes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::receiver::{ReceiverKind, ReceiverSpec};

/// An alert as notifications show it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub firing: bool,
    pub starts_at_ms: i64,
    pub ends_at_ms: Option<i64>,
    pub generator_url: String,
}

/// What a group remembers between passes (persisted, so a restart neither
/// re-sends nor forgets).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub first_seen_ms: i64,
    pub last_flush_ms: Option<i64>,
    pub last_sent_ms: Option<i64>,
    pub sent_firing: BTreeSet<String>,
    pub sent_resolved: BTreeSet<String>,
}

/// The label values that place an alert in a group of `receiver`.
pub fn group_labels(
    receiver: &ReceiverSpec,
    labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    receiver
        .group_by
        .iter()
        .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
}

/// Alertmanager's group key text: `{}:{name="value",…}`.
pub fn group_key(group_labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = group_labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{{}}:{{{}}}", inner.join(","))
}

/// Decides whether the group (whose current alerts are `alerts`: firing
/// ones and resolved ones not yet dropped) notifies at `now`, updates its
/// state, and returns the alerts to send.
pub fn flush(
    receiver: &ReceiverSpec,
    state: &mut GroupState,
    alerts: &[AlertView],
    now: i64,
) -> Option<Vec<AlertView>> {
    let ms = |d: std::time::Duration| d.as_millis() as i64;
    let (wait, interval, repeat) = match receiver.kind {
        // Alertmanager groups by itself: send changes at once and re-send
        // what fires every minute, as Prometheus does.
        ReceiverKind::Alertmanager => (0, 0, 60_000),
        ReceiverKind::Webhook => (
            ms(receiver.group_wait),
            ms(receiver.group_interval),
            ms(receiver.repeat_interval),
        ),
    };
    let due = match state.last_flush_ms {
        None => now >= state.first_seen_ms + wait,
        Some(last) => now >= last + interval,
    };
    if !due {
        return None;
    }
    state.last_flush_ms = Some(now);
    let firing: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a.firing)
        .map(|a| a.fingerprint.clone())
        .collect();
    let resolved: BTreeSet<String> = alerts
        .iter()
        .filter(|a| !a.firing && state.sent_firing.contains(&a.fingerprint))
        .map(|a| a.fingerprint.clone())
        .collect();
    let new_resolved = resolved.iter().any(|f| !state.sent_resolved.contains(f));
    let repeat_due = state.last_sent_ms.is_none_or(|t| now >= t + repeat);
    let changed = firing != state.sent_firing;
    let send = if firing.is_empty() {
        // Nothing fires: only a resolution of something notified as firing.
        new_resolved && receiver.send_resolved
    } else {
        changed || (new_resolved && receiver.send_resolved) || repeat_due
    };
    if !send {
        if firing.is_empty() {
            // Forget what resolved quietly so it is not announced later.
            state.sent_firing = firing;
        }
        return None;
    }
    let out: Vec<AlertView> = alerts
        .iter()
        .filter(|a| a.firing || (receiver.send_resolved && resolved.contains(&a.fingerprint)))
        .cloned()
        .collect();
    state.sent_firing = firing;
    state.sent_resolved = resolved;
    state.last_sent_ms = Some(now);
    Some(out)
}

fn rfc3339(ms: i64) -> String {
    loupe_base::clock::rfc3339_ms(ms)
}

/// Labels (or annotations) every alert has with the same value.
fn common(maps: &[&BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = maps.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The body a `webhook` receiver gets: Alertmanager's webhook payload,
/// version 4, field for field.
pub fn webhook_body(
    receiver_name: &str,
    receiver: &ReceiverSpec,
    group_labels: &BTreeMap<String, String>,
    alerts: &[AlertView],
    external_url: &str,
) -> Value {
    let limit = if receiver.max_alerts == 0 {
        alerts.len()
    } else {
        receiver.max_alerts.min(alerts.len())
    };
    let shown = &alerts[..limit];
    let labels: Vec<&BTreeMap<String, String>> = alerts.iter().map(|a| &a.labels).collect();
    let annotations: Vec<&BTreeMap<String, String>> =
        alerts.iter().map(|a| &a.annotations).collect();
    let status = if alerts.iter().any(|a| a.firing) {
        "firing"
    } else {
        "resolved"
    };
    json!({
        "version": "4",
        "groupKey": group_key(group_labels),
        "truncatedAlerts": alerts.len() - limit,
        "status": status,
        "receiver": receiver_name,
        "groupLabels": group_labels,
        "commonLabels": common(&labels),
        "commonAnnotations": common(&annotations),
        "externalURL": external_url,
        "alerts": shown.iter().map(|a| json!({
            "status": if a.firing { "firing" } else { "resolved" },
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": rfc3339(a.starts_at_ms),
            "endsAt": a.ends_at_ms.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "generatorURL": a.generator_url,
            "fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
    })
}

/// The body an `alertmanager` receiver gets: the alerts as its
/// `/api/v2/alerts` takes them. Firing ones say they end in four minutes
/// unless re-sent, so Alertmanager resolves them if Loupe goes away.
pub fn alertmanager_body(alerts: &[AlertView], now: i64) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at_ms),
                    "endsAt": rfc3339(a.ends_at_ms.unwrap_or(now + 240_000)),
                    "generatorURL": a.generator_url,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn receiver() -> ReceiverSpec {
        serde_json::from_value(json!({
            "type": "webhook", "url": "http://127.0.0.1:9/", "group_by": ["service"],
            "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"
        }))
        .unwrap()
    }

    fn alert(id: &str, firing: bool) -> AlertView {
        AlertView {
            fingerprint: id.into(),
            labels: [
                ("alertname".to_string(), "a".to_string()),
                ("id".to_string(), id.to_string()),
            ]
            .into(),
            annotations: BTreeMap::new(),
            firing,
            starts_at_ms: 0,
            ends_at_ms: (!firing).then_some(1_000),
            generator_url: "http://loupe/".into(),
        }
    }

    fn ids(sent: Option<Vec<AlertView>>) -> Option<Vec<String>> {
        sent.map(|v| {
            v.into_iter()
                .map(|a| format!("{}{}", a.fingerprint, if a.firing { "" } else { "-" }))
                .collect()
        })
    }

    const S: i64 = 1_000;

    #[test]
    fn waits_then_sends_changes_at_group_interval_and_repeats() {
        let r = receiver();
        let mut g = GroupState {
            first_seen_ms: 0,
            ..Default::default()
        };
        assert_eq!(ids(flush(&r, &mut g, &[alert("a", true)], 29 * S)), None);
        assert_eq!(
            ids(flush(&r, &mut g, &[alert("a", true)], 30 * S)),
            Some(vec!["a".into()])
        );
        // A new alert joins: not before the group interval.
        let both = [alert("a", true), alert("b", true)];
        assert_eq!(ids(flush(&r, &mut g, &both, 60 * S)), None);
        assert_eq!(
            ids(flush(&r, &mut g, &both, 330 * S)),
            Some(vec!["a".into(), "b".into()])
        );
        // Nothing changes: quiet until the repeat interval.
        assert_eq!(ids(flush(&r, &mut g, &both, 630 * S)), None);
        assert_eq!(
            ids(flush(&r, &mut g, &both, (330 + 14_400) * S)),
            Some(vec!["a".into(), "b".into()])
        );
        // One resolves: sent with the next flush, as resolved.
        let one_resolved = [alert("a", true), alert("b", false)];
        let t = (330 + 14_400 + 300) * S;
        assert_eq!(
            ids(flush(&r, &mut g, &one_resolved, t)),
            Some(vec!["a".into(), "b-".into()])
        );
        // All resolved: one last resolved notification, then nothing.
        let none_firing = [alert("a", false), alert("b", false)];
        assert_eq!(
            ids(flush(&r, &mut g, &none_firing, t + 300 * S)),
            Some(vec!["a-".into()])
        );
        assert_eq!(ids(flush(&r, &mut g, &none_firing, t + 600 * S)), None);
    }

    #[test]
    fn an_alert_resolved_within_group_wait_sends_nothing() {
        let r = receiver();
        let mut g = GroupState {
            first_seen_ms: 0,
            ..Default::default()
        };
        assert_eq!(ids(flush(&r, &mut g, &[alert("a", false)], 30 * S)), None);
        assert_eq!(ids(flush(&r, &mut g, &[alert("a", false)], 400 * S)), None);
    }

    #[test]
    fn resolved_is_not_sent_when_send_resolved_is_off() {
        let mut r = receiver();
        r.send_resolved = false;
        let mut g = GroupState {
            first_seen_ms: 0,
            ..Default::default()
        };
        assert!(flush(&r, &mut g, &[alert("a", true)], 30 * S).is_some());
        assert_eq!(ids(flush(&r, &mut g, &[alert("a", false)], 330 * S)), None);
    }

    #[test]
    fn webhook_body_is_alertmanagers_version_4() {
        let mut r = receiver();
        r.max_alerts = 1;
        let group: BTreeMap<String, String> = [("service".to_string(), "cart".to_string())].into();
        let body = webhook_body(
            "ops",
            &r,
            &group,
            &[alert("a", true), alert("b", false)],
            "http://loupe:7080",
        );
        assert_eq!(body["version"], "4");
        assert_eq!(body["groupKey"], "{}:{service=\"cart\"}");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["receiver"], "ops");
        assert_eq!(body["truncatedAlerts"], 1);
        assert_eq!(body["commonLabels"], json!({"alertname": "a"}));
        assert_eq!(body["alerts"].as_array().unwrap().len(), 1);
        let a = &body["alerts"][0];
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a["startsAt"], "1970-01-01T00:00:00.000Z");
        for key in [
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "fingerprint",
        ] {
            assert!(a.get(key).is_some(), "{key}");
        }
        let am = alertmanager_body(&[alert("b", false)], 0);
        assert_eq!(am[0]["endsAt"], "1970-01-01T00:00:01.000Z");
    }
}
