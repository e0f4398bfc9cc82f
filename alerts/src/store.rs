//! Alerting state in the catalog database: rules and receivers (as JSON
//! bodies), each rule's last evaluation, alert instances, their history,
//! and each notification group's pacing state. Everything a restart needs
//! to carry on without re-notifying.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use loupe_catalog::db::{Db, Location, Row};
use loupe_catalog::values;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{AlertError, Result};
use crate::grouping::GroupState;
use crate::lifecycle::{AlertState, Life};
use crate::receiver::ReceiverSpec;
use crate::rule::RuleSpec;
use loupe_notify::outbox;

/// The alerting tables in the catalog database.
pub const SCHEMA: loupe_catalog::Schema = loupe_catalog::Schema {
    component: "alerts",
    migrations: &["
CREATE TABLE alert_rules (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE alert_receivers (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE alert_rule_status (
    name TEXT PRIMARY KEY, health TEXT NOT NULL, last_eval_at INTEGER NOT NULL,
    duration_ms REAL NOT NULL, last_error TEXT);
CREATE TABLE alert_instances (
    rule TEXT NOT NULL, fingerprint TEXT NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,
    value REAL NOT NULL, state TEXT NOT NULL, active_at INTEGER NOT NULL, fired_at INTEGER,
    resolved_at INTEGER, quiet_since INTEGER,
    PRIMARY KEY (rule, fingerprint));
CREATE TABLE alert_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, fingerprint TEXT NOT NULL,
    labels TEXT NOT NULL, state TEXT NOT NULL, value REAL NOT NULL, at INTEGER NOT NULL);
CREATE INDEX alert_history_by_time ON alert_history (at);
CREATE TABLE alert_groups (
    receiver TEXT NOT NULL, group_key TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (receiver, group_key));
"],
};

/// The alerting tables on PostgreSQL: the same as [`SCHEMA`].
pub const PG_SCHEMA: loupe_catalog::pg::PgSchema = loupe_catalog::pg::PgSchema {
    component: "alerts",
    migrations: &["
CREATE TABLE alert_rules (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE alert_receivers (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE alert_rule_status (
    name TEXT PRIMARY KEY, health TEXT NOT NULL, last_eval_at BIGINT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL, last_error TEXT);
CREATE TABLE alert_instances (
    rule TEXT NOT NULL, fingerprint TEXT NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, active_at BIGINT NOT NULL, fired_at BIGINT,
    resolved_at BIGINT, quiet_since BIGINT,
    PRIMARY KEY (rule, fingerprint));
CREATE TABLE alert_history (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, rule TEXT NOT NULL, fingerprint TEXT NOT NULL,
    labels TEXT NOT NULL, state TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, at BIGINT NOT NULL);
CREATE INDEX alert_history_by_time ON alert_history (at);
CREATE TABLE alert_groups (
    receiver TEXT NOT NULL, group_key TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (receiver, group_key));
"],
};

/// History older than this is deleted as new entries arrive.
const KEEP_HISTORY_MS: i64 = 7 * 24 * 3600 * 1000;

/// A table of JSON bodies by name, typed by what it holds.
pub struct Named<T> {
    table: &'static str,
    _body: PhantomData<fn() -> T>,
}

/// Alert rules by name.
pub const RULES: Named<RuleSpec> = Named {
    table: "alert_rules",
    _body: PhantomData,
};

/// Receivers by name.
pub const RECEIVERS: Named<ReceiverSpec> = Named {
    table: "alert_receivers",
    _body: PhantomData,
};

/// One alert instance with its life.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub rule: String,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    pub life: Life,
}

/// A rule's health after its last evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleStatus {
    /// `ok` or `error`.
    pub health: &'static str,
    pub last_eval_at_ms: i64,
    pub duration_ms: f64,
    pub last_error: Option<String>,
}

/// A notification to commit with its group's new state.
pub struct Outgoing {
    pub message: outbox::Message,
}

/// Alerting state in the catalog: the node's SQLite file, or PostgreSQL
/// shared by every node (so any node's API shows the same rules and
/// states, and a new leader carries on where the old one stopped).
pub struct AlertStore {
    db: Db,
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| AlertError::Internal(e.to_string()))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| AlertError::Internal(format!("stored JSON: {e}")))
}

fn instance_from_row(r: &Row) -> Result<Instance> {
    let state = r.text(5)?;
    let state = AlertState::parse(&state)
        .ok_or_else(|| AlertError::Internal(format!("stored alert state {state:?}")))?;
    Ok(Instance {
        rule: r.text(0)?,
        fingerprint: r.text(1)?,
        labels: from_json(&r.text(2)?)?,
        annotations: from_json(&r.text(3)?)?,
        value: r.real(4)?,
        life: Life {
            state,
            active_at: r.int(6)?,
            fired_at: r.opt_int(7)?,
            resolved_at: r.opt_int(8)?,
            quiet_since: r.opt_int(9)?,
        },
    })
}

impl AlertStore {
    /// Opens the catalog at `location`, migrating the alert and outbox
    /// schemas (notifications are enqueued in the same transaction as
    /// group state).
    pub async fn open(location: &Location) -> Result<AlertStore> {
        let db = Db::open(
            location,
            &[&SCHEMA, &outbox::SCHEMA],
            &[&PG_SCHEMA, &outbox::PG_SCHEMA],
        )
        .await?;
        Ok(AlertStore { db })
    }

    /// Saves `body` as `name` in `table`.
    pub async fn put<T: Serialize>(
        &self,
        table: &Named<T>,
        name: &str,
        body: &T,
        now: i64,
    ) -> Result<()> {
        self.db
            .execute(
                &format!(
                    "INSERT INTO {} (name, body, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                    table.table
                ),
                values![name, to_json(body)?, now],
            )
            .await?;
        Ok(())
    }

    /// `name` in `table`, if it exists.
    pub async fn get<T: DeserializeOwned>(
        &self,
        table: &Named<T>,
        name: &str,
    ) -> Result<Option<T>> {
        let row = self
            .db
            .query_opt(
                &format!("SELECT body FROM {} WHERE name = ?1", table.table),
                values![name],
            )
            .await?;
        row.map(|r| from_json(&r.text(0)?)).transpose()
    }

    /// Everything in `table`, by name.
    pub async fn list<T: DeserializeOwned>(&self, table: &Named<T>) -> Result<Vec<(String, T)>> {
        let rows = self
            .db
            .query(
                &format!("SELECT name, body FROM {} ORDER BY name", table.table),
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, from_json(&r.text(1)?)?)))
            .collect()
    }

    /// Deletes a rule with its instances and status; whether it existed.
    pub async fn delete_rule(&self, name: &str) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute("DELETE FROM alert_rules WHERE name = ?1", values![name])
            .await?;
        tx.execute("DELETE FROM alert_instances WHERE rule = ?1", values![name])
            .await?;
        tx.execute(
            "DELETE FROM alert_rule_status WHERE name = ?1",
            values![name],
        )
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    pub async fn delete_receiver(&self, name: &str) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute("DELETE FROM alert_receivers WHERE name = ?1", values![name])
            .await?;
        tx.execute(
            "DELETE FROM alert_groups WHERE receiver = ?1",
            values![name],
        )
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    pub async fn status(&self, name: &str) -> Result<Option<RuleStatus>> {
        let row = self
            .db
            .query_opt(
                "SELECT health, last_eval_at, duration_ms, last_error FROM alert_rule_status WHERE name = ?1",
                values![name],
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(RuleStatus {
            health: if r.text(0)? == "ok" { "ok" } else { "error" },
            last_eval_at_ms: r.int(1)?,
            duration_ms: r.real(2)?,
            last_error: r.opt_text(3)?,
        }))
    }

    /// Records a failed evaluation; the rule's instances stay as they were.
    pub async fn record_error(
        &self,
        rule: &str,
        now: i64,
        duration_ms: f64,
        error: &str,
    ) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO alert_rule_status (name, health, last_eval_at, duration_ms, last_error)
                 VALUES (?1, 'error', ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET health = 'error', last_eval_at = excluded.last_eval_at,
                     duration_ms = excluded.duration_ms, last_error = excluded.last_error",
                values![rule, now, duration_ms, error],
            )
            .await?;
        Ok(())
    }

    /// Every instance of `rule` (or of every rule).
    pub async fn instances(&self, rule: Option<&str>) -> Result<Vec<Instance>> {
        const COLUMNS: &str = "rule, fingerprint, labels, annotations, value, state, active_at, fired_at, resolved_at, quiet_since";
        let rows = match rule {
            Some(rule) => {
                self.db
                    .query(
                        &format!("SELECT {COLUMNS} FROM alert_instances WHERE rule = ?1 ORDER BY rule, fingerprint"),
                        values![rule],
                    )
                    .await?
            }
            None => {
                self.db
                    .query(
                        &format!("SELECT {COLUMNS} FROM alert_instances ORDER BY rule, fingerprint"),
                        &[],
                    )
                    .await?
            }
        };
        rows.iter().map(instance_from_row).collect()
    }

    /// Replaces `rule`'s instances with `instances` after a successful
    /// evaluation, appending state changes to the history, in one
    /// transaction.
    pub async fn record_evaluation(
        &self,
        rule: &str,
        instances: &[Instance],
        changes: &[&Instance],
        now: i64,
        duration_ms: f64,
    ) -> Result<()> {
        let mut tx = self.db.begin().await?;
        tx.execute("DELETE FROM alert_instances WHERE rule = ?1", values![rule])
            .await?;
        for i in instances {
            tx.execute(
                "INSERT INTO alert_instances (rule, fingerprint, labels, annotations, value, state, active_at, fired_at, resolved_at, quiet_since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                values![
                    rule,
                    &i.fingerprint,
                    to_json(&i.labels)?,
                    to_json(&i.annotations)?,
                    i.value,
                    i.life.state.as_str(),
                    i.life.active_at,
                    i.life.fired_at,
                    i.life.resolved_at,
                    i.life.quiet_since,
                ],
            )
            .await?;
        }
        for i in changes {
            tx.execute(
                "INSERT INTO alert_history (rule, fingerprint, labels, state, value, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                values![
                    rule,
                    &i.fingerprint,
                    to_json(&i.labels)?,
                    i.life.state.as_str(),
                    i.value,
                    now
                ],
            )
            .await?;
        }
        tx.execute(
            "DELETE FROM alert_history WHERE at < ?1",
            values![now - KEEP_HISTORY_MS],
        )
        .await?;
        tx.execute(
            "INSERT INTO alert_rule_status (name, health, last_eval_at, duration_ms, last_error)
             VALUES (?1, 'ok', ?2, ?3, NULL)
             ON CONFLICT (name) DO UPDATE SET health = 'ok', last_eval_at = excluded.last_eval_at,
                 duration_ms = excluded.duration_ms, last_error = NULL",
            values![rule, now, duration_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` history entries: `(rule, fingerprint, labels, state, value, at_ms)`.
    pub async fn history(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        let rows = self
            .db
            .query(
                "SELECT rule, fingerprint, labels, state, value, at FROM alert_history ORDER BY seq DESC LIMIT ?1",
                values![limit as i64],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let labels: serde_json::Value = from_json(&r.text(2)?)?;
            out.push(serde_json::json!({
                "rule": r.text(0)?, "fingerprint": r.text(1)?, "labels": labels, "state": r.text(3)?,
                "value": r.real(4)?, "time": loupe_base::clock::rfc3339_ms(r.int(5)?),
            }));
        }
        Ok(out)
    }

    /// Every group state of `receiver`, by group key.
    pub async fn groups(&self, receiver: &str) -> Result<BTreeMap<String, GroupState>> {
        let rows = self
            .db
            .query(
                "SELECT group_key, body FROM alert_groups WHERE receiver = ?1",
                values![receiver],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, from_json(&r.text(1)?)?)))
            .collect()
    }

    /// Saves a group's state (or deletes it, with `None`) and enqueues its
    /// notification, in one transaction: a crash loses neither without the other.
    pub async fn commit_group(
        &self,
        receiver: &str,
        key: &str,
        state: Option<&GroupState>,
        outgoing: Option<&Outgoing>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.db.begin().await?;
        match state {
            Some(state) => {
                tx.execute(
                    "INSERT INTO alert_groups (receiver, group_key, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (receiver, group_key) DO UPDATE SET body = excluded.body",
                    values![receiver, key, to_json(state)?],
                )
                .await?
            }
            None => {
                tx.execute(
                    "DELETE FROM alert_groups WHERE receiver = ?1 AND group_key = ?2",
                    values![receiver, key],
                )
                .await?
            }
        };
        if let Some(out) = outgoing {
            outbox::enqueue(&mut tx, &out.message, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
