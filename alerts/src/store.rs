//! Alerting state in the catalog database: rules and receivers (as JSON
//! bodies), each rule's last evaluation, alert instances, their history,
//! and each notification group's pacing state. Everything a restart needs
//! to carry on without re-notifying.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
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

pub struct AlertStore {
    conn: Mutex<Connection>,
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| AlertError::Internal(e.to_string()))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| AlertError::Internal(format!("stored JSON: {e}")))
}

impl AlertStore {
    /// Opens the catalog at `path`, migrating the alert and outbox schemas
    /// (notifications are enqueued in the same transaction as group state).
    pub fn open(path: &Path) -> Result<AlertStore> {
        let conn = loupe_catalog::open(path, &[&SCHEMA, &outbox::SCHEMA])?;
        Ok(AlertStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves `body` as `name` in `table`.
    pub fn put<T: Serialize>(
        &self,
        table: &Named<T>,
        name: &str,
        body: &T,
        now: i64,
    ) -> Result<()> {
        self.conn().execute(
            &format!(
                "INSERT INTO {} (name, body, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                table.table
            ),
            params![name, to_json(body)?, now],
        )?;
        Ok(())
    }

    /// `name` in `table`, if it exists.
    pub fn get<T: DeserializeOwned>(&self, table: &Named<T>, name: &str) -> Result<Option<T>> {
        let body: Option<String> = self
            .conn()
            .query_row(
                &format!("SELECT body FROM {} WHERE name = ?1", table.table),
                [name],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| from_json(&b)).transpose()
    }

    /// Everything in `table`, by name.
    pub fn list<T: DeserializeOwned>(&self, table: &Named<T>) -> Result<Vec<(String, T)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT name, body FROM {} ORDER BY name",
            table.table
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, body) = row?;
            out.push((name, from_json(&body)?));
        }
        Ok(out)
    }

    /// Deletes a rule with its instances and status; whether it existed.
    pub fn delete_rule(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM alert_rules WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM alert_instances WHERE rule = ?1", [name])?;
        tx.execute("DELETE FROM alert_rule_status WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(n > 0)
    }

    pub fn delete_receiver(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM alert_receivers WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM alert_groups WHERE receiver = ?1", [name])?;
        tx.commit()?;
        Ok(n > 0)
    }

    pub fn status(&self, name: &str) -> Result<Option<RuleStatus>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT health, last_eval_at, duration_ms, last_error FROM alert_rule_status WHERE name = ?1",
                [name],
                |r| {
                    Ok(RuleStatus {
                        health: if r.get::<_, String>(0)? == "ok" { "ok" } else { "error" },
                        last_eval_at_ms: r.get(1)?,
                        duration_ms: r.get(2)?,
                        last_error: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records a failed evaluation; the rule's instances stay as they were.
    pub fn record_error(&self, rule: &str, now: i64, duration_ms: f64, error: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO alert_rule_status (name, health, last_eval_at, duration_ms, last_error)
             VALUES (?1, 'error', ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET health = 'error', last_eval_at = ?2, duration_ms = ?3, last_error = ?4",
            params![rule, now, duration_ms, error],
        )?;
        Ok(())
    }

    /// Every instance of `rule` (or of every rule).
    pub fn instances(&self, rule: Option<&str>) -> Result<Vec<Instance>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT rule, fingerprint, labels, annotations, value, state, active_at, fired_at, resolved_at, quiet_since
             FROM alert_instances WHERE ?1 IS NULL OR rule = ?1 ORDER BY rule, fingerprint",
        )?;
        let rows = stmt.query_map([rule], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, f64>(4)?,
                r.get::<_, String>(5)?,
                (
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<i64>>(9)?,
                ),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                rule,
                fingerprint,
                labels,
                annotations,
                value,
                state,
                (active_at, fired_at, resolved_at, quiet_since),
            ) = row?;
            let state = AlertState::parse(&state)
                .ok_or_else(|| AlertError::Internal(format!("stored alert state {state:?}")))?;
            out.push(Instance {
                rule,
                fingerprint,
                labels: from_json(&labels)?,
                annotations: from_json(&annotations)?,
                value,
                life: Life {
                    state,
                    active_at,
                    fired_at,
                    resolved_at,
                    quiet_since,
                },
            });
        }
        Ok(out)
    }

    /// Replaces `rule`'s instances with `instances` after a successful
    /// evaluation, appending state changes to the history, in one
    /// transaction.
    pub fn record_evaluation(
        &self,
        rule: &str,
        instances: &[Instance],
        changes: &[&Instance],
        now: i64,
        duration_ms: f64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM alert_instances WHERE rule = ?1", [rule])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO alert_instances (rule, fingerprint, labels, annotations, value, state, active_at, fired_at, resolved_at, quiet_since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for i in instances {
                insert.execute(params![
                    rule,
                    i.fingerprint,
                    to_json(&i.labels)?,
                    to_json(&i.annotations)?,
                    i.value,
                    i.life.state.as_str(),
                    i.life.active_at,
                    i.life.fired_at,
                    i.life.resolved_at,
                    i.life.quiet_since,
                ])?;
            }
            let mut history = tx.prepare_cached(
                "INSERT INTO alert_history (rule, fingerprint, labels, state, value, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for i in changes {
                history.execute(params![
                    rule,
                    i.fingerprint,
                    to_json(&i.labels)?,
                    i.life.state.as_str(),
                    i.value,
                    now
                ])?;
            }
        }
        tx.execute(
            "DELETE FROM alert_history WHERE at < ?1",
            [now - KEEP_HISTORY_MS],
        )?;
        tx.execute(
            "INSERT INTO alert_rule_status (name, health, last_eval_at, duration_ms, last_error)
             VALUES (?1, 'ok', ?2, ?3, NULL)
             ON CONFLICT (name) DO UPDATE SET health = 'ok', last_eval_at = ?2, duration_ms = ?3, last_error = NULL",
            params![rule, now, duration_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The newest `limit` history entries: `(rule, fingerprint, labels, state, value, at_ms)`.
    pub fn history(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT rule, fingerprint, labels, state, value, at FROM alert_history ORDER BY seq DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, f64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rule, fingerprint, labels, state, value, at) = row?;
            let labels: serde_json::Value = from_json(&labels)?;
            out.push(serde_json::json!({
                "rule": rule, "fingerprint": fingerprint, "labels": labels, "state": state,
                "value": value, "time": loupe_base::clock::rfc3339_ms(at),
            }));
        }
        Ok(out)
    }

    /// Every group state of `receiver`, by group key.
    pub fn groups(&self, receiver: &str) -> Result<BTreeMap<String, GroupState>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT group_key, body FROM alert_groups WHERE receiver = ?1")?;
        let rows = stmt.query_map([receiver], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (key, body) = row?;
            out.insert(key, from_json(&body)?);
        }
        Ok(out)
    }

    /// Saves a group's state (or deletes it, with `None`) and enqueues its
    /// notification, in one transaction: a crash loses neither without the other.
    pub fn commit_group(
        &self,
        receiver: &str,
        key: &str,
        state: Option<&GroupState>,
        outgoing: Option<&Outgoing>,
        now: i64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        match state {
            Some(state) => tx.execute(
                "INSERT INTO alert_groups (receiver, group_key, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (receiver, group_key) DO UPDATE SET body = excluded.body",
                params![receiver, key, to_json(state)?],
            )?,
            None => tx.execute(
                "DELETE FROM alert_groups WHERE receiver = ?1 AND group_key = ?2",
                params![receiver, key],
            )?,
        };
        if let Some(out) = outgoing {
            outbox::enqueue(&tx, &out.message, now)?;
        }
        tx.commit()?;
        Ok(())
    }
}
