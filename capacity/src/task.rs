//! Scale tasks as values: what a task is, where it came from and where it
//! stands. States and origins are enums with stable serde names so the API,
//! the webhook and the store cannot drift apart by a typo in a string.

use serde::de::value::{Error as NameError, StrDeserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use loupe_notify::outbox;

/// Where a task stands: pending → sent → acknowledged | failed |
/// superseded. Derived on read from the outbox and the executor's ack, so
/// it is never stored and cannot go stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Sent,
    Acknowledged,
    Failed,
    Superseded,
}

impl TaskState {
    /// The state from the executor's ack (`succeeded` or `failed`), if
    /// any, else from the webhook's delivery: the ack is the later word.
    pub fn derive(ack: Option<AckStatus>, delivery: Option<outbox::State>) -> TaskState {
        match (ack, delivery) {
            (Some(AckStatus::Failed), _) => TaskState::Failed,
            (Some(AckStatus::Succeeded), _) => TaskState::Acknowledged,
            (None, Some(outbox::State::Delivered)) => TaskState::Sent,
            (None, Some(outbox::State::Failed)) => TaskState::Failed,
            (None, Some(outbox::State::Superseded)) => TaskState::Superseded,
            (None, _) => TaskState::Pending,
        }
    }

    /// The state named `text` (its serde name), if there is one.
    pub fn parse(text: &str) -> Option<TaskState> {
        parse_name(text)
    }
}

/// What the executor reported back for a task; stored as its serde name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// It carried the task out.
    Succeeded,
    /// It could not: the count stays where it was, so the next decision
    /// asks again.
    Failed,
}

impl AckStatus {
    /// The serde name, for the SQL column.
    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Succeeded => "succeeded",
            AckStatus::Failed => "failed",
        }
    }

    /// The status named `text` (its serde name), if there is one.
    pub fn parse(text: &str) -> Option<AckStatus> {
        parse_name(text)
    }
}

/// What created a task; stored as its serde name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOrigin {
    /// The HPA decision of an evaluation.
    Decision,
    /// An operator's `POST /api/v1/capacity/tasks`.
    Manual,
    /// The policy's fallback after repeated failed evaluations.
    Fallback,
}

impl TaskOrigin {
    /// The serde name, for the SQL column.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskOrigin::Decision => "decision",
            TaskOrigin::Manual => "manual",
            TaskOrigin::Fallback => "fallback",
        }
    }

    /// The origin named `text` (its serde name), if there is one.
    pub fn parse(text: &str) -> Option<TaskOrigin> {
        parse_name(text)
    }
}

/// A unit enum's value from its serde name: one source for the names.
fn parse_name<'de, T: Deserialize<'de>>(text: &'de str) -> Option<T> {
    T::deserialize(StrDeserializer::<NameError>::new(text)).ok()
}

/// A scale task as the API and the webhook show it: what was asked
/// ([`NewTask`], flattened into the same JSON object) and what creation,
/// delivery and the executor's ack added.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: String,
    pub sequence: i64,
    #[serde(flatten)]
    pub spec: NewTask,
    pub state: TaskState,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<outbox::Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
}

/// The executor's report on a task, as the task shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    pub status: AckStatus,
    /// When it was reported (RFC 3339).
    pub time: Option<String>,
    pub message: Option<String>,
}

/// A task to create with a decision (or by hand).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewTask {
    pub service: String,
    /// Empty when the policy decides for the service as a whole.
    pub region: String,
    pub from: u32,
    pub to: u32,
    /// The decision's reason, or an operator's free text for manual tasks.
    pub reason: String,
    pub evidence: Value,
    pub origin: TaskOrigin,
    /// Shown as the task's `hold_until` time.
    #[serde(skip)]
    pub hold_until_ms: Option<i64>,
}

/// Where the task's webhook goes.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub secret: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_one_flat_json_object() {
        let task = Task {
            id: "task_1".into(),
            sequence: 1,
            spec: NewTask {
                service: "cart".into(),
                region: String::new(),
                from: 2,
                to: 4,
                reason: "ScaleUpLimit".into(),
                evidence: serde_json::json!({}),
                origin: TaskOrigin::Decision,
                hold_until_ms: Some(1),
            },
            state: TaskState::Pending,
            created_at: "1970-01-01T00:00:00.000Z".into(),
            hold_until: None,
            delivery: None,
            ack: None,
        };
        let value = serde_json::to_value(&task).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "created_at",
                "evidence",
                "from",
                "id",
                "origin",
                "reason",
                "region",
                "sequence",
                "service",
                "state",
                "to"
            ]
        );
        assert_eq!(
            (value["origin"].as_str(), value["state"].as_str()),
            (Some("decision"), Some("pending"))
        );
    }

    #[test]
    fn names_are_stable() {
        for (state, name) in [
            (TaskState::Pending, "pending"),
            (TaskState::Sent, "sent"),
            (TaskState::Acknowledged, "acknowledged"),
            (TaskState::Failed, "failed"),
            (TaskState::Superseded, "superseded"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert_eq!(TaskState::parse(name), Some(state));
        }
        for origin in [
            TaskOrigin::Decision,
            TaskOrigin::Manual,
            TaskOrigin::Fallback,
        ] {
            assert_eq!(serde_json::to_value(origin).unwrap(), origin.as_str());
            assert_eq!(TaskOrigin::parse(origin.as_str()), Some(origin));
        }
        assert_eq!(TaskState::parse("done"), None);
        for ack in [AckStatus::Succeeded, AckStatus::Failed] {
            assert_eq!(serde_json::to_value(ack).unwrap(), ack.as_str());
            assert_eq!(AckStatus::parse(ack.as_str()), Some(ack));
        }
    }
}
