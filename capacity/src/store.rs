//! Capacity state in the catalog (the SQLite file, or PostgreSQL shared by
//! every node): baselines, policies,
//! schedules, each decision and the scale tasks (the latest of which is the
//! service's current count). A decision that changes the count commits its
//! task and the task's webhook (in the notify outbox) in one transaction.

use std::marker::PhantomData;

use loupe_catalog::db::{Conn, Db, Location, Row};
use loupe_catalog::values;
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

/// The capacity tables on PostgreSQL: the same as [`SCHEMA`].
pub const PG_SCHEMA: loupe_catalog::pg::PgSchema = loupe_catalog::pg::PgSchema {
    component: "capacity",
    migrations: &["CREATE TABLE capacity_baselines (
    service TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE capacity_policies (
    service TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE capacity_schedules (
    name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE capacity_decisions (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service  TEXT NOT NULL,
    region   TEXT NOT NULL,
    at       BIGINT NOT NULL,
    desired  BIGINT NOT NULL,
    replicas BIGINT NOT NULL,
    body     TEXT NOT NULL);
CREATE INDEX capacity_decisions_by_service ON capacity_decisions (service, region, at);
CREATE TABLE capacity_tasks (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    service     TEXT NOT NULL,
    region      TEXT NOT NULL,
    from_count  BIGINT NOT NULL,
    to_count    BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    evidence    TEXT NOT NULL,
    origin      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    hold_until  BIGINT,
    acked_at    BIGINT,
    ack_status  TEXT,
    ack_message TEXT);
CREATE INDEX capacity_tasks_by_service ON capacity_tasks (service, region, created_at);
CREATE INDEX capacity_tasks_by_time ON capacity_tasks (created_at);
CREATE INDEX capacity_decisions_by_time ON capacity_decisions (at);
CREATE TABLE capacity_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, service TEXT NOT NULL, region TEXT NOT NULL,
    at BIGINT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);"],
};

/// Decisions and events older than this are deleted as new ones arrive.
const KEEP_HISTORY_MS: i64 = 7 * 24 * 3600 * 1000;

/// Capacity's state in the catalog database, behind one connection so a
/// decision, its task and its webhook commit together.
pub struct CapacityStore {
    db: Db,
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
    /// Opens (and migrates) the catalog at `location`.
    pub async fn open(location: &Location) -> Result<CapacityStore> {
        // Decisions write their webhook into notify's outbox in the same
        // transaction, so this connection migrates both schemas.
        let db = Db::open(
            location,
            &[&SCHEMA, &outbox::SCHEMA],
            &[&PG_SCHEMA, &outbox::PG_SCHEMA],
        )
        .await?;
        Ok(CapacityStore { db })
    }

    /// Inserts or replaces the body under `key`.
    pub async fn put<T: Serialize>(
        &self,
        t: &Bodies<T>,
        key: &str,
        body: &T,
        now_ms: i64,
    ) -> Result<()> {
        let (table, key_col) = (t.table, t.key);
        self.db
            .execute(
                &format!(
                    "INSERT INTO {table} ({key_col}, body, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT ({key_col}) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at"
                ),
                values![key, to_json(body)?, now_ms],
            )
            .await?;
        Ok(())
    }

    /// The body under `key`, if any.
    pub async fn get<T: DeserializeOwned>(&self, t: &Bodies<T>, key: &str) -> Result<Option<T>> {
        let row = self
            .db
            .query_opt(
                &format!("SELECT body FROM {} WHERE {} = ?1", t.table, t.key),
                values![key],
            )
            .await?;
        row.map(|r| from_json(&r.text(0)?)).transpose()
    }

    /// Deletes the body under `key`; false if there was none.
    pub async fn delete<T>(&self, t: &Bodies<T>, key: &str) -> Result<bool> {
        let n = self
            .db
            .execute(
                &format!("DELETE FROM {} WHERE {} = ?1", t.table, t.key),
                values![key],
            )
            .await?;
        Ok(n > 0)
    }

    /// Every (key, body), by key.
    pub async fn list<T: DeserializeOwned>(&self, t: &Bodies<T>) -> Result<Vec<(String, T)>> {
        let rows = self
            .db
            .query(
                &format!(
                    "SELECT {key}, body FROM {table} ORDER BY {key}",
                    key = t.key,
                    table = t.table
                ),
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, from_json(&r.text(1)?)?)))
            .collect()
    }

    /// Saves a policy and re-enables its webhook endpoint (a 410 may have
    /// disabled it).
    pub async fn put_policy(&self, service: &str, policy: &PolicySpec, now_ms: i64) -> Result<()> {
        self.put(&POLICIES, service, policy, now_ms).await?;
        outbox::enable_endpoint(&mut self.db.conn().await?, &policy.webhook_url).await?;
        Ok(())
    }

    /// Why the webhook endpoint at `url` is disabled (a 410), if it is.
    pub async fn webhook_disabled(&self, url: &str) -> Result<Option<String>> {
        Ok(outbox::endpoint_disabled(&mut self.db.conn().await?, url).await?)
    }

    /// Every schedule, by name (the evaluator checks them all each pass).
    pub async fn schedules(&self) -> Result<Vec<Schedule>> {
        Ok(self
            .list(&SCHEDULES)
            .await?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    /// The count (service, region) is at as far as Loupe knows: its latest
    /// task's target — or, when that task failed (undeliverable, or the
    /// executor acknowledged a failure), the count it started from, so the
    /// next decision asks again.
    pub async fn current(&self, service: &str, region: &str) -> Result<Option<u32>> {
        let mut conn = self.db.conn().await?;
        let row = conn
            .query_opt(
                &format!(
                    "{TASK_SELECT} WHERE service = ?1 AND region = ?2 ORDER BY seq DESC LIMIT 1"
                ),
                values![service, region],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let latest = task_from_row(&mut conn, &row).await?;
        Ok(Some(if latest.state == TaskState::Failed {
            latest.spec.from
        } else {
            latest.spec.to
        }))
    }

    /// Regions (service, region) units were decided for before: a region
    /// that went quiet still gets evaluated (and can scale down).
    pub async fn known_regions(&self, service: &str) -> Result<Vec<String>> {
        let rows = self
            .db
            .query(
                "SELECT DISTINCT region FROM capacity_tasks WHERE service = ?1 AND region != ''",
                values![service],
            )
            .await?;
        Ok(rows.iter().map(|r| r.text(0)).collect::<Result<_, _>>()?)
    }

    /// Records a decision and, when it changes the count, its task, the new
    /// count and the task's webhook — atomically. Returns the task.
    pub async fn commit_decision(
        &self,
        decision: &DecisionRow<'_>,
        task: Option<(NewTask, Endpoint)>,
        now_ms: i64,
    ) -> Result<Option<Task>> {
        let mut tx = self.db.begin().await?;
        let created = match task {
            Some((task, endpoint)) => Some(insert_task(&mut tx, &task, &endpoint, now_ms).await?),
            None => None,
        };
        let mut body = decision.body.clone();
        if let (Some(t), Some(obj)) = (&created, body.as_object_mut()) {
            obj.insert("task_id".into(), Value::String(t.id.clone()));
        }
        tx.execute(
            "INSERT INTO capacity_decisions (service, region, at, desired, replicas, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            values![
                decision.service,
                decision.region,
                now_ms,
                decision.desired,
                decision.replicas,
                to_json(&body)?
            ],
        )
        .await?;
        tx.execute(
            "DELETE FROM capacity_decisions WHERE at < ?1",
            values![now_ms - KEEP_HISTORY_MS],
        )
        .await?;
        if created.is_some() {
            // Old tasks go, except each unit's latest (its current count),
            // and with them their delivered or failed webhooks.
            tx.execute(
                "DELETE FROM capacity_tasks WHERE created_at < ?1
                   AND seq NOT IN (SELECT max(seq) FROM capacity_tasks GROUP BY service, region)",
                values![now_ms - KEEP_HISTORY_MS],
            )
            .await?;
            let old_kept: Vec<String> = tx
                .query(
                    "SELECT id FROM capacity_tasks WHERE created_at < ?1",
                    values![now_ms - KEEP_HISTORY_MS],
                )
                .await?
                .iter()
                .map(|r| r.text(0))
                .collect::<Result<_, _>>()?;
            outbox::prune(&mut tx, now_ms - KEEP_HISTORY_MS, &old_kept).await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    /// A manual task (an operator's override): sets the count now and,
    /// with `hold_until_ms`, keeps the evaluator from changing it until then.
    pub async fn commit_manual_task(
        &self,
        task: &NewTask,
        endpoint: &Endpoint,
        now_ms: i64,
    ) -> Result<Task> {
        let mut tx = self.db.begin().await?;
        let created = insert_task(&mut tx, task, endpoint, now_ms).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// The latest manual hold on (service, region) still in force.
    pub async fn hold_until(
        &self,
        service: &str,
        region: &str,
        now_ms: i64,
    ) -> Result<Option<i64>> {
        let row = self
            .db
            .query_opt(
                "SELECT max(hold_until) FROM capacity_tasks
                 WHERE service = ?1 AND region = ?2 AND hold_until > ?3",
                values![service, region, now_ms],
            )
            .await?;
        Ok(row.map(|r| r.opt_int(0)).transpose()?.flatten())
    }

    /// (time ms, desired) of the decisions since `since_ms`, oldest first:
    /// the stabilisation window's memory across restarts.
    pub async fn recommendations(
        &self,
        service: &str,
        region: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, u32)>> {
        let rows = self
            .db
            .query(
                "SELECT at, desired FROM capacity_decisions
                 WHERE service = ?1 AND region = ?2 AND at >= ?3 ORDER BY at",
                values![service, region, since_ms],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.int(0)?, r.int_as(1)?)))
            .collect::<Result<_, loupe_catalog::CatalogDbError>>()?)
    }

    /// (time ms, change) of the scale tasks since `since_ms`: the rate
    /// policies' memory across restarts.
    pub async fn scale_events(
        &self,
        service: &str,
        region: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64)>> {
        let rows = self
            .db
            .query(
                "SELECT created_at, to_count - from_count FROM capacity_tasks
                 WHERE service = ?1 AND region = ?2 AND created_at >= ?3 ORDER BY created_at",
                values![service, region, since_ms],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.int(0)?, r.int(1)?)))
            .collect::<Result<_, loupe_catalog::CatalogDbError>>()?)
    }

    /// The latest decisions (of one service), newest first, each with its
    /// `sequence`.
    pub async fn decisions(&self, service: Option<&str>, limit: usize) -> Result<Vec<Value>> {
        let rows = match service {
            Some(service) => {
                self.db
                    .query(
                        "SELECT seq, body FROM capacity_decisions
                         WHERE service = ?1 ORDER BY seq DESC LIMIT ?2",
                        values![service, limit as i64],
                    )
                    .await?
            }
            None => {
                self.db
                    .query(
                        "SELECT seq, body FROM capacity_decisions ORDER BY seq DESC LIMIT ?1",
                        values![limit as i64],
                    )
                    .await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut value: Value = from_json(&row.text(1)?)?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("sequence".into(), row.int(0)?.into());
            }
            out.push(value);
        }
        Ok(out)
    }

    /// The latest tasks (of one service, in one state), newest first.
    pub async fn tasks(
        &self,
        service: Option<&str>,
        state: Option<TaskState>,
        limit: usize,
    ) -> Result<Vec<Task>> {
        // A task's state depends on its webhook's, so the filter runs
        // here, over pages of tasks, newest first, until `limit` match.
        const PAGE: i64 = 256;
        let mut conn = self.db.conn().await?;
        let mut out = Vec::new();
        let mut before = i64::MAX;
        while out.len() < limit {
            let rows = conn
                .query(
                    &format!(
                        "{TASK_SELECT} WHERE seq < ?1 AND (CAST(?2 AS TEXT) IS NULL OR service = ?2)
                         ORDER BY seq DESC LIMIT ?3"
                    ),
                    values![before, service, PAGE],
                )
                .await?;
            for row in &rows {
                before = row.int(0)?;
                let task = task_from_row(&mut conn, row).await?;
                if state.is_none_or(|s| s == task.state) && out.len() < limit {
                    out.push(task);
                }
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        Ok(out)
    }

    /// One task by id, with its delivery and ack.
    pub async fn task(&self, id: &str) -> Result<Option<Task>> {
        let mut conn = self.db.conn().await?;
        let row = conn
            .query_opt(&format!("{TASK_SELECT} WHERE id = ?1"), values![id])
            .await?;
        match row {
            Some(row) => Ok(Some(task_from_row(&mut conn, &row).await?)),
            None => Ok(None),
        }
    }

    /// The executor's callback: the task was carried out (`succeeded`) or
    /// not (`failed`). Returns the updated task, `None` if unknown.
    pub async fn ack_task(
        &self,
        id: &str,
        status: AckStatus,
        message: &str,
        now_ms: i64,
    ) -> Result<Option<Task>> {
        let n = self
            .db
            .execute(
                "UPDATE capacity_tasks SET acked_at = ?2, ack_status = ?3, ack_message = ?4 WHERE id = ?1",
                values![id, now_ms, status.as_str(), message],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        self.task(id).await
    }

    /// Records an alert event and sends it to the policy's webhook as
    /// `capacity.<kind>`, atomically.
    pub async fn raise_alert(
        &self,
        alert: &Alert<'_>,
        endpoint: &Endpoint,
        now_ms: i64,
    ) -> Result<()> {
        let Alert {
            service,
            region,
            kind,
            message,
            evidence,
        } = *alert;
        let mut tx = self.db.begin().await?;
        tx.execute(
            "INSERT INTO capacity_events (service, region, at, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            values![service, region, now_ms, kind, message],
        )
        .await?;
        let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        let event_type = format!("capacity.{kind}");
        let body = serde_json::json!({
            "type": event_type,
            "timestamp": rfc3339(now_ms),
            "data": {"id": id, "service": service, "region": region, "message": message, "evidence": evidence},
        });
        outbox::enqueue(
            &mut tx,
            &webhook(endpoint, id, event_type, &body, None)?,
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The latest alert events, newest first.
    pub async fn events(&self, limit: usize) -> Result<Vec<Event>> {
        let rows = self
            .db
            .query(
                "SELECT seq, service, region, at, kind, message FROM capacity_events ORDER BY seq DESC LIMIT ?1",
                values![limit as i64],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(Event {
                sequence: row.int(0)?,
                service: row.text(1)?,
                region: row.text(2)?,
                time: rfc3339(row.int(3)?),
                kind: row.text(4)?,
                message: row.text(5)?,
            });
        }
        Ok(out)
    }
}

const TASK_SELECT: &str =
    "SELECT seq, id, service, region, from_count, to_count, reason, evidence, origin,
        created_at, hold_until, acked_at, ack_status, ack_message FROM capacity_tasks";

async fn task_from_row(conn: &mut Conn<'_>, row: &Row) -> Result<Task> {
    let id = row.text(1)?;
    let delivery = outbox::status(conn, &id).await?;
    let ack_status = row
        .opt_text(12)?
        .map(|s| {
            AckStatus::parse(&s)
                .ok_or_else(|| CapacityError::Internal(format!("stored ack status {s:?}")))
        })
        .transpose()?;
    let state = TaskState::derive(ack_status, delivery.as_ref().map(|d| d.state));
    let origin = row.text(8)?;
    let origin = TaskOrigin::parse(&origin)
        .ok_or_else(|| CapacityError::Internal(format!("stored task origin {origin:?}")))?;
    let acked_at = row.opt_int(11)?;
    let spec = NewTask {
        service: row.text(2)?,
        region: row.text(3)?,
        from: row.int_as(4)?,
        to: row.int_as(5)?,
        reason: row.text(6)?,
        evidence: from_json(&row.text(7)?)?,
        origin,
        hold_until_ms: row.opt_int(10)?,
    };
    Ok(Task {
        sequence: row.int(0)?,
        id,
        state,
        created_at: rfc3339(row.int(9)?),
        hold_until: spec.hold_until_ms.map(rfc3339),
        spec,
        delivery,
        ack: ack_status.map(|status| Ack {
            status,
            time: acked_at.map(rfc3339),
            message: row.opt_text(13).ok().flatten(),
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
async fn insert_task(
    tx: &mut Conn<'_>,
    task: &NewTask,
    endpoint: &Endpoint,
    now_ms: i64,
) -> Result<Task> {
    let id = format!("task_{}", uuid::Uuid::new_v4().simple());
    let sequence = tx
        .query_opt(
            "INSERT INTO capacity_tasks (id, service, region, from_count, to_count, reason, evidence, origin, created_at, hold_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING seq",
            values![
                &id,
                &task.service,
                &task.region,
                task.from,
                task.to,
                &task.reason,
                to_json(&task.evidence)?,
                task.origin.as_str(),
                now_ms,
                task.hold_until_ms
            ],
        )
        .await?
        .ok_or_else(|| CapacityError::Internal("an insert returned no sequence".into()))?
        .int(0)?;
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
    outbox::enqueue(tx, &message, now_ms).await?;
    Ok(created)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
