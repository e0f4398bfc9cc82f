//! Leader leases on PostgreSQL: of several nodes that may run a singleton
//! job (compaction, retention, capacity and alert evaluation, webhook
//! delivery), the one holding the job's lease runs it. A lease is one row
//! (`name, holder, epoch, expires_at`), taken and renewed by a single
//! atomic upsert that succeeds only for its holder or once it has expired;
//! a takeover bumps the epoch. Holders renew every [`LeaseTiming::renew`]
//! and give the lease up locally well before [`LeaseTiming::ttl`] runs out
//! without a renewal, so two nodes never believe they lead at once.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::CatalogDbError;
use crate::pg::{PgDb, PgSchema};

/// The leases table.
pub const LEASES_SCHEMA: PgSchema = PgSchema {
    component: "leases",
    migrations: &["CREATE TABLE leases (
        name        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        epoch       BIGINT NOT NULL,
        expires_at  TIMESTAMPTZ NOT NULL
    )"],
};

/// The lease of the maintenance leader (compaction, retention, orphan
/// collection, capacity, alerts, webhook delivery).
pub const MAINTENANCE: &str = "maintenance";

/// How long a lease lasts and how often its holder renews it.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// A lease not renewed for this long is free for another node.
    pub ttl: Duration,
    /// The holder renews (and others try to take it) this often.
    pub renew: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            ttl: Duration::from_secs(10),
            renew: Duration::from_secs(2),
        }
    }
}

impl LeaseTiming {
    /// How long after sending a successful renewal the holder may still
    /// act as leader: the TTL less two renewal periods (one for the next
    /// attempt, one for its answer), so it stops before the row expires.
    fn local_validity(&self) -> Duration {
        self.ttl.saturating_sub(self.renew.saturating_mul(2))
    }
}

/// Takes or renews lease `name` for `holder` for `ttl`: the epoch when
/// `holder` holds it now, `None` when another live holder does. The epoch
/// grows by one whenever the lease changes hands or lapsed in between.
pub async fn acquire(
    db: &PgDb,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<i64>, CatalogDbError> {
    let client = db.client().await?;
    let client = client.as_ref().ok_or(CatalogDbError::Closed)?;
    let row = client
        .query_opt(
            "INSERT INTO leases (name, holder, epoch, expires_at)
             VALUES ($1, $2, 1, now() + make_interval(secs => $3))
             ON CONFLICT (name) DO UPDATE SET
                 holder = excluded.holder,
                 epoch = CASE WHEN leases.holder = excluded.holder AND leases.expires_at >= now()
                              THEN leases.epoch ELSE leases.epoch + 1 END,
                 expires_at = excluded.expires_at
             WHERE leases.expires_at < now() OR leases.holder = excluded.holder
             RETURNING epoch",
            &[&name, &holder, &ttl.as_secs_f64()],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Gives lease `name` up if `holder` has it, so another node can take it
/// at its next attempt instead of waiting out the TTL.
pub async fn release(db: &PgDb, name: &str, holder: &str) -> Result<(), CatalogDbError> {
    let client = db.client().await?;
    let client = client.as_ref().ok_or(CatalogDbError::Closed)?;
    client
        .execute(
            "UPDATE leases SET expires_at = now() - interval '1 millisecond'
             WHERE name = $1 AND holder = $2",
            &[&name, &holder],
        )
        .await?;
    Ok(())
}

/// The live holder of lease `name` and its epoch, if any.
pub async fn holder(db: &PgDb, name: &str) -> Result<Option<(String, i64)>, CatalogDbError> {
    let client = db.client().await?;
    let client = client.as_ref().ok_or(CatalogDbError::Closed)?;
    let row = client
        .query_opt(
            "SELECT holder, epoch FROM leases WHERE name = $1 AND expires_at >= now()",
            &[&name],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Competes for lease `name` as `holder` until `stop`: `leading` is true
/// exactly while this node holds a live lease (as far as it can tell
/// without an answer: a renewal that fails or goes unanswered keeps it
/// only until [`LeaseTiming::local_validity`] after the last one that
/// succeeded). On `stop` the lease is released.
pub async fn hold(
    db: &PgDb,
    name: &str,
    holder: &str,
    timing: LeaseTiming,
    leading: &watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut valid_until: Option<Instant> = None;
    let mut epoch = 0;
    loop {
        let sent = Instant::now();
        if valid_until.is_some_and(|t| sent >= t) {
            valid_until = None;
            lost(leading, name, epoch, "its renewals went unanswered");
        }
        // One attempt at a time: an unanswered one is given up before the next.
        let attempt = tokio::time::timeout(timing.renew, acquire(db, name, holder, timing.ttl));
        match attempt.await {
            Ok(Ok(Some(now))) => {
                valid_until = Some(sent + timing.local_validity());
                if !*leading.borrow() || now != epoch {
                    tracing::info!(lease = name, epoch = now, "took the lease: leading");
                }
                epoch = now;
                leading.send_if_modified(|l| !std::mem::replace(l, true));
            }
            Ok(Ok(None)) => {
                if valid_until.take().is_some() {
                    lost(leading, name, epoch, "another node holds it");
                }
            }
            Ok(Err(e)) => tracing::warn!(lease = name, error = %e, "lease renewal failed"),
            Err(_) => tracing::warn!(lease = name, "lease renewal got no answer in time"),
        }
        let next = sent + timing.renew;
        let wake = valid_until.map_or(next, |t| t.min(next));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if valid_until.is_some() {
        leading.send_replace(false);
        match tokio::time::timeout(timing.renew, release(db, name, holder)).await {
            Ok(Ok(())) => tracing::info!(lease = name, "released the lease"),
            Ok(Err(e)) => tracing::warn!(lease = name, error = %e, "could not release the lease"),
            Err(_) => tracing::warn!(lease = name, "releasing the lease got no answer in time"),
        }
    }
}

fn lost(leading: &watch::Sender<bool>, name: &str, epoch: i64, why: &str) {
    if leading.send_replace(false) {
        tracing::warn!(
            lease = name,
            epoch,
            "lost the lease ({why}): no longer leading"
        );
    }
}
