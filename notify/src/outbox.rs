//! The outbox: webhook messages waiting for delivery, in SQLite.
//!
//! A caller writes its message with [`enqueue`] inside the same transaction
//! as the state change it announces (a scale decision, an alert), so a
//! crash can lose neither without the other. The delivery worker then
//! reads due messages, and records each attempt's outcome here — which is
//! also where callers read a message's delivery state.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::Result;

/// The outbox tables in the catalog database.
pub const SCHEMA: loupe_catalog::Schema = loupe_catalog::Schema {
    component: "notify",
    migrations: &["CREATE TABLE IF NOT EXISTS webhook_outbox (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    secret          TEXT,
    event_type      TEXT NOT NULL,
    body            TEXT NOT NULL,
    supersede_key   TEXT,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_status     INTEGER,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_outbox_key ON webhook_outbox (supersede_key, state);
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    url         TEXT PRIMARY KEY,
    disabled_at INTEGER NOT NULL,
    reason      TEXT NOT NULL
);"],
};

/// Deletes delivered, failed and superseded messages created before
/// `before_ms`, except those in `keep` (ids a caller still shows the
/// delivery state of). Pending messages are never pruned.
pub fn prune(conn: &Connection, before_ms: i64, keep: &[String]) -> Result<usize> {
    let mut select = conn.prepare_cached(
        "SELECT id FROM webhook_outbox WHERE created_at < ?1 AND state != 'pending'",
    )?;
    let old: Vec<String> = select
        .query_map(params![before_ms], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut delete = conn.prepare_cached("DELETE FROM webhook_outbox WHERE id = ?1")?;
    let mut pruned = 0;
    for id in old.iter().filter(|id| !keep.contains(id)) {
        pruned += delete.execute([id])?;
    }
    Ok(pruned)
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not yet accepted by the receiver (maybe retrying).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: a 4xx, the endpoint is gone (410), or retries ran out.
    Failed,
    /// A newer message with the same key replaced it before delivery.
    Superseded,
}

impl State {
    fn parse(text: &str) -> State {
        match text {
            "delivered" => State::Delivered,
            "failed" => State::Failed,
            "superseded" => State::Superseded,
            _ => State::Pending,
        }
    }
}

/// A message to deliver.
#[derive(Debug, Clone)]
pub struct Message {
    /// The `webhook-id`: stable across retries and restarts, so receivers
    /// can deduplicate.
    pub id: String,
    pub url: String,
    /// `whsec_…`; without one the message is sent unsigned.
    pub secret: Option<String>,
    /// The body's `type`, e.g. `capacity.scale_up`.
    pub event_type: String,
    /// The exact JSON body to send (and sign).
    pub body: String,
    /// Messages sharing a key replace each other: enqueueing one marks the
    /// older undelivered ones superseded (e.g. one key per service).
    pub supersede_key: Option<String>,
}

/// Adds `msg` for delivery as soon as possible and supersedes older pending
/// messages with its key; returns the ids it superseded. Call it inside the
/// transaction that commits what the message announces.
pub fn enqueue(conn: &Connection, msg: &Message, now_ms: i64) -> Result<Vec<String>> {
    let mut superseded = Vec::new();
    if let Some(key) = &msg.supersede_key {
        let mut stmt = conn.prepare_cached(
            "UPDATE webhook_outbox SET state = 'superseded'
             WHERE supersede_key = ?1 AND state = 'pending' RETURNING id",
        )?;
        let ids = stmt.query_map(params![key], |row| row.get::<_, String>(0))?;
        for id in ids {
            superseded.push(id?);
        }
    }
    conn.execute(
        "INSERT INTO webhook_outbox (id, url, secret, event_type, body, supersede_key, state, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)",
        params![
            msg.id,
            msg.url,
            msg.secret,
            msg.event_type,
            msg.body,
            msg.supersede_key,
            now_ms
        ],
    )?;
    Ok(superseded)
}

/// What the outbox knows of one message's delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub state: State,
    pub attempts: u32,
    pub delivered_at_ms: Option<i64>,
    pub next_attempt_at_ms: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// The delivery status of message `id`, if it exists.
pub fn status(conn: &Connection, id: &str) -> Result<Option<Status>> {
    let found = conn
        .query_row(
            "SELECT state, attempts, delivered_at, next_attempt_at, last_status, last_error
             FROM webhook_outbox WHERE id = ?1",
            params![id],
            |row| {
                let state = State::parse(&row.get::<_, String>(0)?);
                Ok(Status {
                    state,
                    attempts: row.get(1)?,
                    delivered_at_ms: row.get(2)?,
                    next_attempt_at_ms: (state == State::Pending)
                        .then(|| row.get(3))
                        .transpose()?,
                    last_status: row.get(4)?,
                    last_error: row.get(5)?,
                })
            },
        )
        .optional()?;
    Ok(found)
}

/// Turns delivery back on for `url` (after a 410 disabled it), e.g. when a
/// user saves the endpoint again.
pub fn enable_endpoint(conn: &Connection, url: &str) -> Result<()> {
    conn.execute("DELETE FROM webhook_endpoints WHERE url = ?1", params![url])?;
    Ok(())
}

/// Why `url` is disabled, if it is.
pub fn endpoint_disabled(conn: &Connection, url: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT reason FROM webhook_endpoints WHERE url = ?1",
            params![url],
            |row| row.get(0),
        )
        .optional()?)
}

/// A message the worker is about to attempt.
#[derive(Debug, Clone)]
pub(crate) struct Due {
    pub id: String,
    pub url: String,
    pub secret: Option<String>,
    pub body: String,
    pub attempts: u32,
    pub created_at_ms: i64,
}

/// Up to `limit` pending messages due at `now_ms`, oldest first, skipping
/// disabled endpoints.
pub(crate) fn due(conn: &Connection, now_ms: i64, limit: usize) -> Result<Vec<Due>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, url, secret, body, attempts, created_at FROM webhook_outbox
         WHERE state = 'pending' AND next_attempt_at <= ?1
           AND url NOT IN (SELECT url FROM webhook_endpoints)
         ORDER BY created_at, id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_ms, limit as i64], |row| {
        Ok(Due {
            id: row.get(0)?,
            url: row.get(1)?,
            secret: row.get(2)?,
            body: row.get(3)?,
            attempts: row.get(4)?,
            created_at_ms: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The outcome of one attempt, as the worker records it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Delivered {
        status: u16,
    },
    /// Try again at `next_ms`.
    Retry {
        next_ms: i64,
        status: Option<u16>,
        error: String,
    },
    /// Give up on this message.
    Failed {
        status: Option<u16>,
        error: String,
    },
    /// Give up on this message and every other one for its endpoint.
    EndpointGone {
        status: u16,
    },
}

pub(crate) fn record(
    conn: &mut Connection,
    msg: &Due,
    outcome: &Outcome,
    now_ms: i64,
) -> Result<()> {
    let tx = conn.transaction()?;
    let attempts = msg.attempts + 1;
    match outcome {
        Outcome::Delivered { status } => {
            // Delivered even if superseded meanwhile: the receiver has it.
            tx.execute(
                "UPDATE webhook_outbox SET state = 'delivered', attempts = ?2, delivered_at = ?3,
                        last_status = ?4, last_error = NULL WHERE id = ?1",
                params![msg.id, attempts, now_ms, status],
            )?;
        }
        Outcome::Retry {
            next_ms,
            status,
            error,
        } => {
            tx.execute(
                "UPDATE webhook_outbox SET attempts = ?2, next_attempt_at = ?3, last_status = ?4,
                        last_error = ?5 WHERE id = ?1",
                params![msg.id, attempts, next_ms, status, error],
            )?;
        }
        Outcome::Failed { status, error } => {
            tx.execute(
                "UPDATE webhook_outbox SET state = 'failed', attempts = ?2, last_status = ?3,
                        last_error = ?4 WHERE id = ?1 AND state = 'pending'",
                params![msg.id, attempts, status, error],
            )?;
        }
        Outcome::EndpointGone { status } => {
            let reason = format!("the receiver answered {status} Gone: endpoint disabled");
            tx.execute(
                "INSERT OR REPLACE INTO webhook_endpoints (url, disabled_at, reason) VALUES (?1, ?2, ?3)",
                params![msg.url, now_ms, reason],
            )?;
            tx.execute(
                "UPDATE webhook_outbox SET attempts = attempts + (id = ?1), last_status = ?3,
                        state = 'failed', last_error = ?4 WHERE url = ?2 AND state = 'pending'",
                params![msg.id, msg.url, status, reason],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_pending_recent_and_referenced_messages() {
        let mut conn = loupe_catalog::open_in_memory(&[&SCHEMA]).unwrap();
        for id in ["old-done", "old-kept", "old-pending", "new-done"] {
            let created = if id.starts_with("old") { 1 } else { 100 };
            enqueue(&conn, &message(id, id), created).unwrap();
        }
        for due in due(&conn, 1_000, 10).unwrap() {
            if due.id != "old-pending" {
                record(&mut conn, &due, &Outcome::Delivered { status: 200 }, 1_000).unwrap();
            }
        }
        assert_eq!(prune(&conn, 50, &["old-kept".to_string()]).unwrap(), 1);
        assert!(status(&conn, "old-done").unwrap().is_none());
        for id in ["old-kept", "old-pending", "new-done"] {
            assert!(status(&conn, id).unwrap().is_some(), "{id} pruned");
        }
    }

    /// The delivery state of a message that must exist.
    fn state_of(conn: &Connection, id: &str) -> State {
        status(conn, id).unwrap().unwrap().state
    }

    fn message(id: &str, key: &str) -> Message {
        Message {
            id: id.into(),
            url: "http://127.0.0.1:9/hook".into(),
            secret: None,
            event_type: "test".into(),
            body: "{}".into(),
            supersede_key: Some(key.into()),
        }
    }

    #[test]
    fn newer_message_supersedes_only_pending_ones_with_its_key() {
        let mut conn = loupe_catalog::open_in_memory(&[&SCHEMA]).unwrap();
        enqueue(&conn, &message("a", "cart"), 1).unwrap();
        enqueue(&conn, &message("b", "payment"), 1).unwrap();
        let due_now = due(&conn, 1, 10).unwrap();
        assert_eq!(due_now.len(), 2);
        record(
            &mut conn,
            &due_now[1],
            &Outcome::Delivered { status: 200 },
            2,
        )
        .unwrap();
        assert_eq!(
            enqueue(&conn, &message("c", "cart"), 3).unwrap(),
            vec!["a".to_string()]
        );
        assert!(
            enqueue(&conn, &message("d", "payment"), 3)
                .unwrap()
                .is_empty()
        );
        assert_eq!(state_of(&conn, "a"), State::Superseded);
        assert_eq!(state_of(&conn, "b"), State::Delivered);
        let ids: Vec<String> = due(&conn, 3, 10)
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids, ["c", "d"]);
    }

    #[test]
    fn gone_endpoint_fails_its_messages_until_enabled_again() {
        let mut conn = loupe_catalog::open_in_memory(&[&SCHEMA]).unwrap();
        enqueue(&conn, &message("a", "x"), 1).unwrap();
        enqueue(&conn, &message("b", "y"), 1).unwrap();
        let first = due(&conn, 1, 1).unwrap().remove(0);
        record(&mut conn, &first, &Outcome::EndpointGone { status: 410 }, 2).unwrap();
        assert_eq!(state_of(&conn, "b"), State::Failed);
        assert!(endpoint_disabled(&conn, &first.url).unwrap().is_some());
        enqueue(&conn, &message("c", "z"), 3).unwrap();
        assert!(due(&conn, 3, 10).unwrap().is_empty());
        enable_endpoint(&conn, &first.url).unwrap();
        assert_eq!(due(&conn, 3, 10).unwrap().len(), 1);
    }
}
