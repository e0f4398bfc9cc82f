//! The outbox: webhook messages waiting for delivery, in the catalog
//! (SQLite, or PostgreSQL shared by every node: whichever node leads
//! delivers what any other node enqueued, and a new leader continues the
//! old one's retries).
//!
//! A caller writes its message with [`enqueue`] inside the same transaction
//! as the state change it announces (a scale decision, an alert), so a
//! crash can lose neither without the other. The delivery worker then
//! reads due messages, and records each attempt's outcome here — which is
//! also where callers read a message's delivery state.

use loupe_catalog::db::Conn;
use loupe_catalog::values;
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

/// The outbox tables on PostgreSQL: the same as [`SCHEMA`].
pub const PG_SCHEMA: loupe_catalog::pg::PgSchema = loupe_catalog::pg::PgSchema {
    component: "notify",
    migrations: &["CREATE TABLE webhook_outbox (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    secret          TEXT,
    event_type      TEXT NOT NULL,
    body            TEXT NOT NULL,
    supersede_key   TEXT,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    last_status     BIGINT,
    last_error      TEXT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt_at);
CREATE INDEX webhook_outbox_key ON webhook_outbox (supersede_key, state);
CREATE TABLE webhook_endpoints (
    url         TEXT PRIMARY KEY,
    disabled_at BIGINT NOT NULL,
    reason      TEXT NOT NULL
);"],
};

/// Deletes delivered, failed and superseded messages created before
/// `before_ms`, except those in `keep` (ids a caller still shows the
/// delivery state of). Pending messages are never pruned.
pub async fn prune(conn: &mut Conn<'_>, before_ms: i64, keep: &[String]) -> Result<usize> {
    let old = conn
        .query(
            "SELECT id FROM webhook_outbox WHERE created_at < ?1 AND state != 'pending'",
            values![before_ms],
        )
        .await?;
    let mut pruned = 0;
    for row in old {
        let id = row.text(0)?;
        if !keep.contains(&id) {
            pruned += conn
                .execute("DELETE FROM webhook_outbox WHERE id = ?1", values![id])
                .await? as usize;
        }
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
pub async fn enqueue(conn: &mut Conn<'_>, msg: &Message, now_ms: i64) -> Result<Vec<String>> {
    let mut superseded = Vec::new();
    if let Some(key) = &msg.supersede_key {
        let rows = conn
            .query(
                "UPDATE webhook_outbox SET state = 'superseded'
                 WHERE supersede_key = ?1 AND state = 'pending' RETURNING id",
                values![key],
            )
            .await?;
        for row in rows {
            superseded.push(row.text(0)?);
        }
    }
    conn.execute(
        "INSERT INTO webhook_outbox (id, url, secret, event_type, body, supersede_key, state, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)",
        values![
            &msg.id,
            &msg.url,
            msg.secret.as_deref(),
            &msg.event_type,
            &msg.body,
            msg.supersede_key.as_deref(),
            now_ms
        ],
    )
    .await?;
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
pub async fn status(conn: &mut Conn<'_>, id: &str) -> Result<Option<Status>> {
    let row = conn
        .query_opt(
            "SELECT state, attempts, delivered_at, next_attempt_at, last_status, last_error
             FROM webhook_outbox WHERE id = ?1",
            values![id],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let state = State::parse(&row.text(0)?);
    Ok(Some(Status {
        state,
        attempts: row.int_as(1)?,
        delivered_at_ms: row.opt_int(2)?,
        next_attempt_at_ms: (state == State::Pending).then(|| row.int(3)).transpose()?,
        last_status: row.opt_int_as(4)?,
        last_error: row.opt_text(5)?,
    }))
}

/// Turns delivery back on for `url` (after a 410 disabled it), e.g. when a
/// user saves the endpoint again.
pub async fn enable_endpoint(conn: &mut Conn<'_>, url: &str) -> Result<()> {
    conn.execute("DELETE FROM webhook_endpoints WHERE url = ?1", values![url])
        .await?;
    Ok(())
}

/// Why `url` is disabled, if it is.
pub async fn endpoint_disabled(conn: &mut Conn<'_>, url: &str) -> Result<Option<String>> {
    let row = conn
        .query_opt(
            "SELECT reason FROM webhook_endpoints WHERE url = ?1",
            values![url],
        )
        .await?;
    Ok(row.map(|r| r.text(0)).transpose()?)
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
pub(crate) async fn due(conn: &mut Conn<'_>, now_ms: i64, limit: usize) -> Result<Vec<Due>> {
    let rows = conn
        .query(
            "SELECT id, url, secret, body, attempts, created_at FROM webhook_outbox
             WHERE state = 'pending' AND next_attempt_at <= ?1
               AND url NOT IN (SELECT url FROM webhook_endpoints)
             ORDER BY created_at, id LIMIT ?2",
            values![now_ms, limit as i64],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(Due {
            id: row.text(0)?,
            url: row.text(1)?,
            secret: row.opt_text(2)?,
            body: row.text(3)?,
            attempts: row.int_as(4)?,
            created_at_ms: row.int(5)?,
        });
    }
    Ok(out)
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

/// Records an attempt's outcome, in a transaction of its own.
pub(crate) async fn record(
    db: &loupe_catalog::db::Db,
    msg: &Due,
    outcome: &Outcome,
    now_ms: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let attempts = msg.attempts + 1;
    match outcome {
        Outcome::Delivered { status } => {
            // Delivered even if superseded meanwhile: the receiver has it.
            tx.execute(
                "UPDATE webhook_outbox SET state = 'delivered', attempts = ?2, delivered_at = ?3,
                        last_status = ?4, last_error = NULL WHERE id = ?1",
                values![&msg.id, attempts, now_ms, *status],
            )
            .await?;
        }
        Outcome::Retry {
            next_ms,
            status,
            error,
        } => {
            tx.execute(
                "UPDATE webhook_outbox SET attempts = ?2, next_attempt_at = ?3, last_status = ?4,
                        last_error = ?5 WHERE id = ?1",
                values![&msg.id, attempts, *next_ms, *status, error],
            )
            .await?;
        }
        Outcome::Failed { status, error } => {
            tx.execute(
                "UPDATE webhook_outbox SET state = 'failed', attempts = ?2, last_status = ?3,
                        last_error = ?4 WHERE id = ?1 AND state = 'pending'",
                values![&msg.id, attempts, *status, error],
            )
            .await?;
        }
        Outcome::EndpointGone { status } => {
            let reason = format!("the receiver answered {status} Gone: endpoint disabled");
            tx.execute(
                "INSERT INTO webhook_endpoints (url, disabled_at, reason) VALUES (?1, ?2, ?3)
                 ON CONFLICT (url) DO UPDATE SET disabled_at = excluded.disabled_at, reason = excluded.reason",
                values![&msg.url, now_ms, &reason],
            )
            .await?;
            tx.execute(
                "UPDATE webhook_outbox SET attempts = attempts + CASE WHEN id = ?1 THEN 1 ELSE 0 END,
                        last_status = ?3, state = 'failed', last_error = ?4
                 WHERE url = ?2 AND state = 'pending'",
                values![&msg.id, &msg.url, *status, &reason],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use loupe_catalog::db::Db;

    fn db() -> Db {
        Db::in_memory(&[&SCHEMA]).unwrap()
    }

    #[tokio::test]
    async fn prune_keeps_pending_recent_and_referenced_messages() {
        let db = db();
        let mut conn = db.conn().await.unwrap();
        for id in ["old-done", "old-kept", "old-pending", "new-done"] {
            let created = if id.starts_with("old") { 1 } else { 100 };
            enqueue(&mut conn, &message(id, id), created).await.unwrap();
        }
        let due_now = due(&mut conn, 1_000, 10).await.unwrap();
        drop(conn);
        for due in due_now {
            if due.id != "old-pending" {
                record(&db, &due, &Outcome::Delivered { status: 200 }, 1_000)
                    .await
                    .unwrap();
            }
        }
        let mut conn = db.conn().await.unwrap();
        assert_eq!(
            prune(&mut conn, 50, &["old-kept".to_string()])
                .await
                .unwrap(),
            1
        );
        assert!(status(&mut conn, "old-done").await.unwrap().is_none());
        for id in ["old-kept", "old-pending", "new-done"] {
            assert!(
                status(&mut conn, id).await.unwrap().is_some(),
                "{id} pruned"
            );
        }
    }

    /// The delivery state of a message that must exist.
    async fn state_of(db: &Db, id: &str) -> State {
        let mut conn = db.conn().await.unwrap();
        status(&mut conn, id).await.unwrap().unwrap().state
    }

    async fn enqueue_in(db: &Db, msg: &Message, now_ms: i64) -> Vec<String> {
        enqueue(&mut db.conn().await.unwrap(), msg, now_ms)
            .await
            .unwrap()
    }

    async fn due_in(db: &Db, now_ms: i64, limit: usize) -> Vec<Due> {
        due(&mut db.conn().await.unwrap(), now_ms, limit)
            .await
            .unwrap()
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

    #[tokio::test]
    async fn newer_message_supersedes_only_pending_ones_with_its_key() {
        let db = db();
        enqueue_in(&db, &message("a", "cart"), 1).await;
        enqueue_in(&db, &message("b", "payment"), 1).await;
        let due_now = due_in(&db, 1, 10).await;
        assert_eq!(due_now.len(), 2);
        record(&db, &due_now[1], &Outcome::Delivered { status: 200 }, 2)
            .await
            .unwrap();
        assert_eq!(
            enqueue_in(&db, &message("c", "cart"), 3).await,
            vec!["a".to_string()]
        );
        assert!(
            enqueue_in(&db, &message("d", "payment"), 3)
                .await
                .is_empty()
        );
        assert_eq!(state_of(&db, "a").await, State::Superseded);
        assert_eq!(state_of(&db, "b").await, State::Delivered);
        let ids: Vec<String> = due_in(&db, 3, 10).await.into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["c", "d"]);
    }

    #[tokio::test]
    async fn gone_endpoint_fails_its_messages_until_enabled_again() {
        let db = db();
        enqueue_in(&db, &message("a", "x"), 1).await;
        enqueue_in(&db, &message("b", "y"), 1).await;
        let first = due_in(&db, 1, 1).await.remove(0);
        record(&db, &first, &Outcome::EndpointGone { status: 410 }, 2)
            .await
            .unwrap();
        assert_eq!(state_of(&db, "b").await, State::Failed);
        let mut conn = db.conn().await.unwrap();
        assert!(
            endpoint_disabled(&mut conn, &first.url)
                .await
                .unwrap()
                .is_some()
        );
        drop(conn);
        enqueue_in(&db, &message("c", "z"), 3).await;
        assert!(due_in(&db, 3, 10).await.is_empty());
        enable_endpoint(&mut db.conn().await.unwrap(), &first.url)
            .await
            .unwrap();
        assert_eq!(due_in(&db, 3, 10).await.len(), 1);
    }
}
