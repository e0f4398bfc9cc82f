//! The maintenance leader: of the nodes with the `compact` role, the one
//! holding the `maintenance` lease in PostgreSQL runs compaction,
//! retention, orphan collection, capacity evaluation, alert rules and
//! webhook delivery, so none of them runs twice. A node on its own SQLite
//! catalog is the only one and always leads (if it has the role).

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use loupe_base::self_metrics::Registry;
use loupe_catalog::lease::{self, LeaseTiming};
use loupe_catalog::pg::PgDb;
use loupe_storage::Storage;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts leading or competing for the lead: the receiver is true while
/// this node leads. Also turns storage maintenance on and off with it and
/// exposes it as `loupe_leader{job="maintenance"}`.
pub async fn start(
    storage: &Arc<Storage>,
    compact: bool,
    catalog_url: &str,
    registry: &Registry,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(watch::Receiver<bool>, Vec<JoinHandle<anyhow::Result<()>>>)> {
    let (leading, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if compact && storage.postgres().is_some() {
        // A connection of its own: renewals never wait behind a flush.
        let db = PgDb::open(catalog_url, &[&lease::LEASES_SCHEMA])
            .await
            .context("opening the lease table in the PostgreSQL catalog")?;
        let (node, stop) = (storage.node_id().to_string(), stop.clone());
        tasks.push(tokio::spawn(async move {
            lease::hold(
                &db,
                lease::MAINTENANCE,
                &node,
                LeaseTiming::default(),
                &leading,
                stop,
            )
            .await;
            Ok(())
        }));
    } else {
        // Alone on SQLite, or not competing: fixed for the process's life.
        leading.send_replace(compact && storage.postgres().is_none());
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            drop(leading);
            Ok(())
        }));
    }
    let gauge = registry.gauge(
        "loupe_leader",
        "1 while this node leads the job: maintenance = compaction, retention, orphan collection, capacity, alerts, webhook delivery.",
        &[("job", lease::MAINTENANCE)],
    );
    let watched = rx.clone();
    registry.on_render(move || gauge.set(i64::from(*watched.borrow())));
    let (storage, mut follow, mut stop) = (storage.clone(), rx.clone(), stop.clone());
    tasks.push(tokio::spawn(async move {
        loop {
            storage.set_maintaining(*follow.borrow_and_update());
            tokio::select! {
                changed = follow.changed() => if changed.is_err() { return Ok(()) },
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    }));
    Ok((rx, tasks))
}

/// Resolves once `rx` holds `want`; never, if its sender is gone first.
async fn becomes(rx: &mut watch::Receiver<bool>, want: bool) {
    if rx.wait_for(|v| *v == want).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs `job` (a loop that returns once its stop flag is set) while
/// `leading`, starting it again each time the lead comes back, until
/// `stop`. A pass in progress when the lead goes finishes; no new one starts.
pub async fn while_leading<F, Fut>(
    mut leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    job: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = becomes(&mut leading, true) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (end, ended) = watch::channel(false);
        let run = job(ended);
        tokio::pin!(run);
        let stopping = tokio::select! {
            _ = &mut run => continue,
            _ = becomes(&mut leading, false) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        end.send_replace(true);
        run.await;
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_job_runs_only_while_leading_and_stops_on_loss() {
        let (lead, leading) = watch::channel(false);
        let (stop, stopped) = watch::channel(false);
        let (starts, running) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, r) = (starts.clone(), running.clone());
        let task = tokio::spawn(while_leading(leading, stopped, move |mut end| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                r.fetch_add(1, Ordering::SeqCst);
                let _ = end.wait_for(|e| *e).await;
                r.fetch_sub(1, Ordering::SeqCst);
            }
        }));
        let settle = || tokio::time::sleep(Duration::from_millis(50));
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 0, "not leading: not started");
        lead.send_replace(true);
        settle().await;
        assert_eq!(running.load(Ordering::SeqCst), 1);
        lead.send_replace(false);
        settle().await;
        assert_eq!(running.load(Ordering::SeqCst), 0, "stopped on loss");
        lead.send_replace(true);
        settle().await;
        assert_eq!(
            (
                starts.load(Ordering::SeqCst),
                running.load(Ordering::SeqCst)
            ),
            (2, 1),
            "started again when the lead came back"
        );
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(running.load(Ordering::SeqCst), 0);
    }
}
