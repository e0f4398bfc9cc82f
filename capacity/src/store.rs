//! Capacity state in the catalog's SQLite file: baselines, policies,
//! schedules, each decision and the scale tasks (the latest of which is the
//! service's current count). A decision that changes the count commits its
//! task and the task's webhook (in the notify outbox) in one transaction.

use std::marker::PhantomData;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::baseline::Baseline;
use crate::error::{CapacityError, Result};
use crate::policy::PolicySpec;
use crate::schedule::Schedule;
use loupe_base::clock::rfc3339_ms as rfc3339;
use loupe_notify::outbox;

pub use crate::task::{Ack, AckStatus, Endpoint, NewTask, Task, TaskOrigin, TaskState};

/// The capacity tables in the catalog database.
pub const SCHEMA: loupe_catalog::Schema = loupe_catalog::Schema {
    component: "capacity",
    migrations: &["CREATE TABLE IF NOT EXISTS capacity_baselines (
    service TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS capacity_policies (
    service TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS capacity_schedules (
    name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS capacity_decisions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    service  TEXT NOT NULL,
    region   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    desired  INTEGER NOT NULL,
    replicas INTEGER NOT NULL,
    body     TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS capacity_decisions_by_service ON capacity_decisions (service, region, at);
CREATE TABLE IF NOT EXISTS capacity_tasks (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    service     TEXT NOT NULL,
    region      TEXT NOT NULL,
    from_count  INTEGER NOT NULL,
    to_count    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    evidence    TEXT NOT NULL,
    origin      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    hold_until  INTEGER,
    acked_at    INTEGER,
    ack_status  TEXT,
    ack_message TEXT);
CREATE INDEX IF NOT EXISTS capacity_tasks_by_service ON capacity_tasks (service, region, created_at);
CREATE INDEX IF NOT EXISTS capacity_tasks_by_time ON capacity_tasks (created_at);
CREATE INDEX IF NOT EXISTS capacity_decisions_by_time ON capacity_decisions (at);
CREATE TABLE IF NOT EXISTS capacity_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, region TEXT NOT NULL,
    at INTEGER NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);"],
};

/// Decisions and events older than this are deleted as new ones arrive.
const KEEP_HISTORY_MS: i64 = 7 * 24 * 3600 * 1000;

/// Capacity's state in the catalog database, behind one connection so a
/// decision, its task and its webhook commit together.
pub struct CapacityStore {
    conn: Mutex<Connection>,
}

/// A table of JSON bodies of `T` keyed by one text column: policies,
/// baselines and schedules share one set of accessors through it.
pub struct Bodies<T> {
    table: &'static str,
    key: &'static str,
    /// How a missing row is named in a 404 (`no {what} {key}`).
    pub what: &'static str,
    _body: PhantomData<fn() -> T>,
}

impl<T> Bodies<T> {
    const fn new(table: &'static str, key: &'static str, what: &'static str) -> Bodies<T> {
        Bodies {
            table,
            key,
            what,
            _body: PhantomData,
        }
    }
}

/// Policies by service.
pub const POLICIES: Bodies<PolicySpec> = Bodies::new("capacity_policies", "service", "policy for");
/// Baselines by service.
pub const BASELINES: Bodies<Baseline> =
    Bodies::new("capacity_baselines", "service", "baseline for");
/// Schedules by name.
pub const SCHEDULES: Bodies<Schedule> = Bodies::new("capacity_schedules", "name", "schedule");

/// A decision to record: its JSON body and the counts kept in columns
/// (the stabilisation window reads them back after a restart).
pub struct DecisionRow<'a> {
    pub service: &'a str,
    pub region: &'a str,
    pub body: &'a Value,
    pub desired: u32,
    pub replicas: u32,
}

/// An alert event as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub sequence: i64,
    pub service: String,
    pub region: String,
    /// RFC 3339.
    pub time: String,
    /// What happened, e.g. `fallback` (the webhook's type is
    /// `capacity.<kind>`).
    pub kind: String,
    pub message: String,
}

/// An alert: an event in `capacity_events` that also goes to the policy's
/// webhook as `capacity.<kind>`.
pub struct Alert<'a> {
    pub service: &'a str,
    pub region: &'a str,
    pub kind: &'a str,
    pub message: &'a str,
    pub evidence: &'a Value,
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| CapacityError::Internal(e.to_string()))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| CapacityError::Internal(format!("stored JSON: {e}")))
}

impl CapacityStore {
    /// Opens (and migrates) the catalog database at `path`.
    pub fn open(path: &Path) -> Result<CapacityStore> {
        // Decisions write their webhook into notify's outbox in the same
        // transaction, so this connection migrates both schemas.
        let conn = loupe_catalog::open(path, &[&SCHEMA, &outbox::SCHEMA])?;
        Ok(CapacityStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts or replaces the body under `key`.
    pub fn put<T: Serialize>(&self, t: &Bodies<T>, key: &str, body: &T, now_ms: i64) -> Result<()> {
        let (table, key_col) = (t.table, t.key);
        self.conn().execute(
            &format!(
                "INSERT INTO {table} ({key_col}, body, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT ({key_col}) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at"
            ),
            params![key, to_json(body)?, now_ms],
        )?;
        Ok(())
    }

    /// The body under `key`, if any.
    pub fn get<T: DeserializeOwned>(&self, t: &Bodies<T>, key: &str) -> Result<Option<T>> {
        let body: Option<String> = self
            .conn()
            .query_row(
                &format!("SELECT body FROM {} WHERE {} = ?1", t.table, t.key),
                params![key],
                |row| row.get(0),
            )
            .optional()?;
        body.map(|b| from_json(&b)).transpose()
    }

    /// Deletes the body under `key`; false if there was none.
    pub fn delete<T>(&self, t: &Bodies<T>, key: &str) -> Result<bool> {
        let n = self.conn().execute(
            &format!("DELETE FROM {} WHERE {} = ?1", t.table, t.key),
            params![key],
        )?;
        Ok(n > 0)
    }

    /// Every (key, body), by key.
    pub fn list<T: DeserializeOwned>(&self, t: &Bodies<T>) -> Result<Vec<(String, T)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {key}, body FROM {table} ORDER BY {key}",
            key = t.key,
            table = t.table
        ))?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, body) = row?;
            out.push((key, from_json(&body)?));
        }
        Ok(out)
    }

    /// Saves a policy and re-enables its webhook endpoint (a 410 may have
    /// disabled it).
    pub fn put_policy(&self, service: &str, policy: &PolicySpec, now_ms: i64) -> Result<()> {
        self.put(&POLICIES, service, policy, now_ms)?;
        outbox::enable_endpoint(&self.conn(), &policy.webhook_url)?;
        Ok(())
    }

    /// Why the webhook endpoint at `url` is disabled (a 410), if it is.
    pub fn webhook_disabled(&self, url: &str) -> Result<Option<String>> {
        Ok(outbox::endpoint_disabled(&self.conn(), url)?)
    }

    /// Every schedule, by name (the evaluator checks them all each pass).
    pub fn schedules(&self) -> Result<Vec<Schedule>> {
        Ok(self.list(&SCHEDULES)?.into_iter().map(|(_, s)| s).collect())
    }

    /// The count (service, region) is at as far as Loupe knows: its latest
    /// task's target — or, when that task failed (undeliverable, or the
    /// executor acknowledged a failure), the count it started from, so the
    /// next decision asks again.
    pub fn current(&self, service: &str, region: &str) -> Result<Option<u32>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{TASK_SELECT} WHERE service = ?1 AND region = ?2 ORDER BY seq DESC LIMIT 1"
        ))?;
        let mut rows = stmt.query(params![service, region])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let latest = task_from_row(&conn, row)?;
        Ok(Some(if latest.state == TaskState::Failed {
            latest.spec.from
        } else {
            latest.spec.to
        }))
    }

    /// Regions (service, region) units were decided for before: a region
    /// that went quiet still gets evaluated (and can scale down).
    pub fn known_regions(&self, service: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT region FROM capacity_tasks WHERE service = ?1 AND region != ''",
        )?;
        let rows = stmt.query_map(params![service], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records a decision and, when it changes the count, its task, the new
    /// count and the task's webhook — atomically. Returns the task.
    pub fn commit_decision(
        &self,
        decision: &DecisionRow<'_>,
        task: Option<(NewTask, Endpoint)>,
        now_ms: i64,
    ) -> Result<Option<Task>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let created = match task {
            Some((task, endpoint)) => Some(insert_task(&tx, &task, &endpoint, now_ms)?),
            None => None,
        };
        let mut body = decision.body.clone();
        if let (Some(t), Some(obj)) = (&created, body.as_object_mut()) {
            obj.insert("task_id".into(), Value::String(t.id.clone()));
        }
        tx.execute(
            "INSERT INTO capacity_decisions (service, region, at, desired, replicas, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                decision.service,
                decision.region,
                now_ms,
                decision.desired,
                decision.replicas,
                to_json(&body)?
            ],
        )?;
        tx.execute(
            "DELETE FROM capacity_decisions WHERE at < ?1",
            params![now_ms - KEEP_HISTORY_MS],
        )?;
        if created.is_some() {
            // Old tasks go, except each unit's latest (its current count),
            // and with them their delivered or failed webhooks.
            tx.execute(
                "DELETE FROM capacity_tasks WHERE created_at < ?1
                   AND seq NOT IN (SELECT max(seq) FROM capacity_tasks GROUP BY service, region)",
                params![now_ms - KEEP_HISTORY_MS],
            )?;
            let old_kept: Vec<String> = tx
                .prepare("SELECT id FROM capacity_tasks WHERE created_at < ?1")?
                .query_map(params![now_ms - KEEP_HISTORY_MS], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            outbox::prune(&tx, now_ms - KEEP_HISTORY_MS, &old_kept)?;
        }
        tx.commit()?;
        Ok(created)
    }

    /// A manual task (an operator's override): sets the count now and,
    /// with `hold_until_ms`, keeps the evaluator from changing it until then.
    pub fn commit_manual_task(
        &self,
        task: &NewTask,
        endpoint: &Endpoint,
        now_ms: i64,
    ) -> Result<Task> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let created = insert_task(&tx, task, endpoint, now_ms)?;
        tx.commit()?;
        Ok(created)
    }

    /// The latest manual hold on (service, region) still in force.
    pub fn hold_until(&self, service: &str, region: &str, now_ms: i64) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT max(hold_until) FROM capacity_tasks
                 WHERE service = ?1 AND region = ?2 AND hold_until > ?3",
                params![service, region, now_ms],
                |row| row.get(0),
            )
            .optional()?
            .flatten())
    }

    /// (time ms, desired) of the decisions since `since_ms`, oldest first:
    /// the stabilisation window's memory across restarts.
    pub fn recommendations(
        &self,
        service: &str,
        region: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, u32)>> {
        self.history_pairs(
            "SELECT at, desired FROM capacity_decisions
             WHERE service = ?1 AND region = ?2 AND at >= ?3 ORDER BY at",
            (service, region, since_ms),
        )
    }

    /// (time ms, change) of the scale tasks since `since_ms`: the rate
    /// policies' memory across restarts.
    pub fn scale_events(
        &self,
        service: &str,
        region: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64)>> {
        self.history_pairs(
            "SELECT created_at, to_count - from_count FROM capacity_tasks
             WHERE service = ?1 AND region = ?2 AND created_at >= ?3 ORDER BY created_at",
            (service, region, since_ms),
        )
    }

    /// (time, value) pairs of one unit since a time, by `sql` taking
    /// (service, region, since_ms).
    fn history_pairs<V: rusqlite::types::FromSql>(
        &self,
        sql: &str,
        (service, region, since_ms): (&str, &str, i64),
    ) -> Result<Vec<(i64, V)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![service, region, since_ms], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The latest decisions (of one service), newest first, each with its
    /// `sequence`.
    pub fn decisions(&self, service: Option<&str>, limit: usize) -> Result<Vec<Value>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, body FROM capacity_decisions
             WHERE ?1 IS NULL OR service = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![service, limit as i64], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, body) = row?;
            let mut value: Value = from_json(&body)?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("sequence".into(), seq.into());
            }
            out.push(value);
        }
        Ok(out)
    }

    /// The latest tasks (of one service, in one state), newest first.
    pub fn tasks(
        &self,
        service: Option<&str>,
        state: Option<TaskState>,
        limit: usize,
    ) -> Result<Vec<Task>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{TASK_SELECT} WHERE ?1 IS NULL OR service = ?1 ORDER BY seq DESC"
        ))?;
        let mut out = Vec::new();
        let mut rows = stmt.query(params![service])?;
        while let Some(row) = rows.next()? {
            let task = task_from_row(&conn, row)?;
            if state.is_none_or(|s| s == task.state) {
                out.push(task);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// One task by id, with its delivery and ack.
    pub fn task(&self, id: &str) -> Result<Option<Task>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{TASK_SELECT} WHERE id = ?1"))?;
        let mut rows = stmt.query(params![id])?;
        match rows.next()? {
            Some(row) => Ok(Some(task_from_row(&conn, row)?)),
            None => Ok(None),
        }
    }

    /// The executor's callback: the task was carried out (`succeeded`) or
    /// not (`failed`). Returns the updated task, `None` if unknown.
    pub fn ack_task(
        &self,
        id: &str,
        status: AckStatus,
        message: &str,
        now_ms: i64,
    ) -> Result<Option<Task>> {
        let n = self.conn().execute(
            "UPDATE capacity_tasks SET acked_at = ?2, ack_status = ?3, ack_message = ?4 WHERE id = ?1",
            params![
                id,
                now_ms,
                status.as_str(),
                message
            ],
        )?;
        if n == 0 {
            return Ok(None);
        }
        self.task(id)
    }

    /// Records an alert event and sends it to the policy's webhook as
    /// `capacity.<kind>`, atomically.
    pub fn raise_alert(&self, alert: &Alert<'_>, endpoint: &Endpoint, now_ms: i64) -> Result<()> {
        let Alert {
            service,
            region,
            kind,
            message,
            evidence,
        } = *alert;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO capacity_events (service, region, at, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![service, region, now_ms, kind, message],
        )?;
        let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        let event_type = format!("capacity.{kind}");
        let body = serde_json::json!({
            "type": event_type,
            "timestamp": rfc3339(now_ms),
            "data": {"id": id, "service": service, "region": region, "message": message, "evidence": evidence},
        });
        outbox::enqueue(
            &tx,
            &webhook(endpoint, id, event_type, &body, None)?,
            now_ms,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The latest alert events, newest first.
    pub fn events(&self, limit: usize) -> Result<Vec<Event>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, service, region, at, kind, message FROM capacity_events ORDER BY seq DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], |row| {
            Ok(Event {
                sequence: row.get(0)?,
                service: row.get(1)?,
                region: row.get(2)?,
                time: rfc3339(row.get(3)?),
                kind: row.get(4)?,
                message: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

const TASK_SELECT: &str =
    "SELECT seq, id, service, region, from_count, to_count, reason, evidence, origin,
        created_at, hold_until, acked_at, ack_status, ack_message FROM capacity_tasks";

fn task_from_row(conn: &Connection, row: &rusqlite::Row<'_>) -> Result<Task> {
    let id: String = row.get(1)?;
    let delivery = outbox::status(conn, &id)?;
    let ack_status: Option<String> = row.get(12)?;
    let ack_status = ack_status
        .map(|s| {
            AckStatus::parse(&s)
                .ok_or_else(|| CapacityError::Internal(format!("stored ack status {s:?}")))
        })
        .transpose()?;
    let state = TaskState::derive(ack_status, delivery.as_ref().map(|d| d.state));
    let origin: String = row.get(8)?;
    let origin = TaskOrigin::parse(&origin)
        .ok_or_else(|| CapacityError::Internal(format!("stored task origin {origin:?}")))?;
    let evidence: String = row.get(7)?;
    let acked_at: Option<i64> = row.get(11)?;
    let spec = NewTask {
        service: row.get(2)?,
        region: row.get(3)?,
        from: row.get(4)?,
        to: row.get(5)?,
        reason: row.get(6)?,
        evidence: from_json(&evidence)?,
        origin,
        hold_until_ms: row.get(10)?,
    };
    Ok(Task {
        sequence: row.get(0)?,
        id,
        state,
        created_at: rfc3339(row.get(9)?),
        hold_until: spec.hold_until_ms.map(rfc3339),
        spec,
        delivery,
        ack: ack_status.map(|status| Ack {
            status,
            time: acked_at.map(rfc3339),
            message: row.get::<_, Option<String>>(13).ok().flatten(),
        }),
    })
}

/// The outbox message carrying `body` to the endpoint.
fn webhook(
    endpoint: &Endpoint,
    id: String,
    event_type: String,
    body: &Value,
    supersede_key: Option<String>,
) -> Result<outbox::Message> {
    Ok(outbox::Message {
        id,
        url: endpoint.url.clone(),
        secret: endpoint.secret.clone(),
        event_type,
        body: to_json(body)?,
        supersede_key,
    })
}

/// Inserts a task, sets the current count and enqueues its webhook
/// (superseding the service's undelivered older ones), inside `tx`.
fn insert_task(
    tx: &rusqlite::Transaction<'_>,
    task: &NewTask,
    endpoint: &Endpoint,
    now_ms: i64,
) -> Result<Task> {
    let id = format!("task_{}", uuid::Uuid::new_v4().simple());
    tx.execute(
        "INSERT INTO capacity_tasks (id, service, region, from_count, to_count, reason, evidence, origin, created_at, hold_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id,
            task.service,
            task.region,
            task.from,
            task.to,
            task.reason,
            to_json(&task.evidence)?,
            task.origin.as_str(),
            now_ms,
            task.hold_until_ms
        ],
    )?;
    let sequence = tx.last_insert_rowid();
    let created = Task {
        id: id.clone(),
        sequence,
        spec: task.clone(),
        state: TaskState::Pending,
        created_at: rfc3339(now_ms),
        hold_until: task.hold_until_ms.map(rfc3339),
        delivery: None,
        ack: None,
    };
    let event_type = if task.to > task.from {
        "capacity.scale_up"
    } else if task.to < task.from {
        "capacity.scale_down"
    } else {
        "capacity.hold"
    };
    let body = serde_json::json!({
        "type": event_type,
        "timestamp": rfc3339(now_ms),
        "data": created,
    });
    let key = format!("capacity:{}:{}", task.service, task.region);
    let message = webhook(endpoint, id, event_type.into(), &body, Some(key))?;
    outbox::enqueue(tx, &message, now_ms)?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(to: u32) -> (NewTask, Endpoint) {
        (
            NewTask {
                service: "cart".into(),
                region: String::new(),
                from: 2,
                to,
                reason: "DesiredWithinRange".into(),
                evidence: serde_json::json!({"rps": 10}),
                origin: TaskOrigin::Decision,
                hold_until_ms: None,
            },
            Endpoint {
                url: "http://127.0.0.1:9/hook".into(),
                secret: None,
            },
        )
    }

    /// Commits a decision from `from` to `to` at `at` ms, with its task.
    fn decide(store: &CapacityStore, from: u32, to: u32, at: i64) -> Task {
        let (mut new, endpoint) = task(to);
        new.from = from;
        store
            .commit_decision(
                &DecisionRow {
                    service: "cart",
                    region: "",
                    body: &serde_json::json!({}),
                    desired: to,
                    replicas: to,
                },
                Some((new, endpoint)),
                at,
            )
            .unwrap()
            .unwrap()
    }

    #[test]
    fn decision_task_count_and_webhook_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = CapacityStore::open(&dir.path().join("catalog.sqlite")).unwrap();
        assert_eq!(store.current("cart", "").unwrap(), None);
        let first = decide(&store, 2, 5, 1_000);
        assert_eq!(store.current("cart", "").unwrap(), Some(5));
        let second = decide(&store, 2, 3, 2_000);
        assert!(second.sequence > first.sequence);
        assert_eq!(
            store.task(&first.id).unwrap().unwrap().state,
            TaskState::Superseded
        );
        assert_eq!(
            store.task(&second.id).unwrap().unwrap().state,
            TaskState::Pending
        );
        let acked = store
            .ack_task(&second.id, AckStatus::Succeeded, "done", 3_000)
            .unwrap()
            .unwrap();
        assert_eq!(acked.state, TaskState::Acknowledged);
        assert_eq!(
            store.recommendations("cart", "", 0).unwrap(),
            vec![(1_000, 5), (2_000, 3)]
        );
        assert_eq!(
            store.scale_events("cart", "", 0).unwrap(),
            vec![(1_000, 3), (2_000, 1)]
        );
        assert_eq!(
            store
                .tasks(Some("cart"), Some(TaskState::Superseded), 10)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(store.decisions(None, 10).unwrap().len(), 2);
        // Reopening finds everything (it is the same SQLite file).
        drop(store);
        let store = CapacityStore::open(&dir.path().join("catalog.sqlite")).unwrap();
        assert_eq!(store.current("cart", "").unwrap(), Some(3));
        assert_eq!(store.tasks(None, None, 10).unwrap().len(), 2);
        // A task the executor could not carry out leaves the count where
        // it was, so the next decision asks again.
        let third = decide(&store, 3, 7, 4_000);
        assert_eq!(store.current("cart", "").unwrap(), Some(7));
        store
            .ack_task(&third.id, AckStatus::Failed, "quota exceeded", 5_000)
            .unwrap();
        assert_eq!(store.current("cart", "").unwrap(), Some(3));
        assert_eq!(
            store.task(&third.id).unwrap().unwrap().state,
            TaskState::Failed
        );
    }
}
