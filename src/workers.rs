//! Which nodes a query may be distributed over (issue #16): on a
//! PostgreSQL catalog every node serves the `datafusion-distributed` worker
//! on its gRPC listener and records that address in its `nodes` row; each
//! node follows the live rows into its [`Cluster`].
//!
//! Distribution is off, and queries run as on a single node, when:
//! - the catalog is SQLite (one node);
//! - the node has access tokens: the stage requests between nodes carry
//!   no token yet, and a worker that answered anyone would hand out every
//!   row to a caller without one;
//! - the listeners use TLS: the worker channels are plain HTTP/2.
//!
//! Like the PostgreSQL connection, the worker traffic is unauthenticated
//! plain TCP: keep the nodes on a private network.

use std::sync::Arc;
use std::time::Duration;

use loupe_catalog::pg::{NodeInfo, PgDb};
use loupe_query::distributed::Cluster;
use loupe_query::memtable_scan::IngestPeer;
use loupe_storage::Storage;
use tokio::sync::watch;

use crate::access::Access;
use crate::listen::Hardening;

/// How often the worker list is read again from `nodes`; a node that
/// stopped beating drops out after [`LIVE_WITHIN`] at most.
const REFRESH: Duration = Duration::from_secs(5);

/// A node is live while its heartbeat (every 5 s) is this recent.
const LIVE_WITHIN: Duration = Duration::from_secs(15);

/// The cluster this node coordinates over, when distribution is on (see
/// the module documentation).
pub fn cluster_for(storage: &Storage, access: &Access, rules: &Hardening) -> Option<Cluster> {
    storage.postgres()?;
    if access.required() {
        tracing::warn!(
            "distributed query is off: this node has access tokens and the stage requests between nodes carry none; queries read the published files here"
        );
        return None;
    }
    if rules.tls() {
        tracing::warn!(
            "distributed query is off: the listeners use TLS and the worker channels do not; queries read the published files here"
        );
        return None;
    }
    Some(Cluster::default())
}

/// Keeps `cluster`'s workers equal to the live nodes' worker addresses,
/// and its ingest nodes (whose memtables queries read) to the live ones
/// with the ingest role, until `stop`; a failed read keeps the last lists.
pub async fn follow(
    db: Arc<PgDb>,
    cluster: Cluster,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        let read = tokio::time::timeout(REFRESH, loupe_catalog::pg::live_nodes(&db, LIVE_WITHIN));
        match read.await {
            Ok(Ok(nodes)) => {
                let workers: Vec<(&NodeInfo, url::Url)> = nodes
                    .iter()
                    .filter(|n| !n.grpc_addr.is_empty())
                    .filter_map(|n| {
                        let url = url::Url::parse(&format!("http://{}", n.grpc_addr)).ok()?;
                        Some((n, url))
                    })
                    .collect();
                // Ingest nodes hold unflushed rows a query reads there.
                let ingest = workers
                    .iter()
                    .filter(|(n, _)| n.roles.split(',').any(|r| r.trim() == "ingest"))
                    .map(|(n, url)| IngestPeer {
                        node: n.id.clone(),
                        worker: url.clone(),
                    })
                    .collect();
                cluster.set_workers(workers.into_iter().map(|(_, url)| url).collect());
                cluster.set_ingest_nodes(ingest);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reading the worker list failed; will retry"),
            Err(_) => tracing::warn!("reading the worker list timed out; will retry"),
        }
    }
}
