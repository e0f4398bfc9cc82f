//! Wires capacity planning into the server: its state in the catalog's
//! SQLite file, live load read through the query engine, the evaluation
//! loop and the webhook delivery worker.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use loupe_capacity::Capacity;
use loupe_capacity::load::{BoxFuture, Row, Telemetry};
use loupe_capacity::store::CapacityStore;
use loupe_notify::{Worker, WorkerConfig};
use loupe_query::QueryEngine;
use tokio::sync::watch;

/// Telemetry queries through the engine, under its memory and time limits
/// and the SQL API's sandbox (policies may carry users' SQL).
struct EngineTelemetry(Arc<QueryEngine>);

impl Telemetry for EngineTelemetry {
    fn rows(&self, sql: String) -> BoxFuture<'_, Result<Vec<Row>, String>> {
        Box::pin(async move {
            loupe_query::internal_sql::sandboxed_rows(&self.0, &sql)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Capacity planning with its state opened; [`Planner::spawn`] starts its
/// evaluation loop and webhook delivery worker.
pub struct Planner {
    pub capacity: Arc<Capacity>,
    worker: Worker,
}

/// Opens capacity state and the webhook outbox in the catalog database.
pub fn open(data_dir: &Path, engine: Arc<QueryEngine>) -> anyhow::Result<Planner> {
    let path = data_dir.join("catalog.sqlite");
    let store = CapacityStore::open(&path)
        .with_context(|| format!("opening capacity state in {}", path.display()))?;
    let worker = Worker::open(path.clone(), WorkerConfig::default())
        .with_context(|| format!("opening the webhook outbox in {}", path.display()))?;
    let capacity = Arc::new(Capacity::new(
        Arc::new(store),
        Arc::new(EngineTelemetry(engine)),
        Some(worker.clone()),
    ));
    Ok(Planner { capacity, worker })
}

impl Planner {
    /// Runs the evaluation loop and the delivery worker until `stop`.
    pub fn spawn(
        &self,
        stop: &watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
        let worker = self.worker.clone();
        let worker_stop = stop.clone();
        let capacity = self.capacity.clone();
        let loop_stop = stop.clone();
        vec![
            tokio::spawn(async move {
                worker.run(worker_stop).await;
                Ok(())
            }),
            tokio::spawn(async move {
                capacity.run(loop_stop).await;
                Ok(())
            }),
        ]
    }
}
