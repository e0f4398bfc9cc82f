//! Distributed query (issue #16) on `datafusion-distributed`: any query
//! node coordinates, every node of the cluster is a worker.
//!
//! Why this shape:
//! - The coordinating session plans as a single node would, then
//!   [`SelectingPlanner`] puts each Parquet scan under
//!   [`SelectedScanExec`], and only then does the distributed planner cut
//!   the plan into stages. Its file-scan splitting keeps each file's
//!   extensions, and when a stage is sent, [`LoupeCodec`] (registered as
//!   the user codec on both sides) encodes the row selection (a
//!   `match_all` search, a trace-id lookup) of exactly the files that task
//!   reads, and the worker's decoder gives the scan back its expression
//!   adapter (files written before the `instance` column): without it,
//!   `datafusion-proto` would drop both, and a worker would return every
//!   row of the file, and no instance from an older one.
//! - Workers run plans on the node's own [`RuntimeEnv`] (the query memory
//!   pool, the Parquet metadata cache, and the split store, local or S3,
//!   registered under the same URL as on the coordinator), with the same
//!   SQL functions, so a decoded plan means what it meant where it was
//!   planned.
//! - Which workers exist is [`Cluster::set_workers`]' business (the server
//!   refreshes it from the catalog's live `nodes`); with fewer than two the
//!   engine plans locally, as on a single node.
//!
//! Unflushed (memtable) rows: the coordinator's own travel inside the
//! plan as batches, exactly as a local query reads them; every other live
//! ingest node's are read on that node by a [`MemtableScanExec`] task
//! routed there, after the WAL position the coordinator's split list
//! covers for it (see [`crate::memtable_scan`]). An ingest node whose
//! worker does not accept connections is left out, and the answer marked
//! partial.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_distributed::{
    DistributedExt, SessionStateBuilderExt, Worker, WorkerQueryContext, WorkerResolver, grpc,
};
use url::Url;

use crate::memtable_scan::{
    IngestPeer, IngestPeers, NodeStorage, isolate_memtable_scans, memtable_task_count,
    route_memtable_tasks,
};
use crate::plan_codec::{LoupeCodec, wrap_selected_scans};

#[cfg(doc)]
use crate::memtable_scan::MemtableScanExec;
#[cfg(doc)]
use crate::plan_codec::SelectedScanExec;

/// The workers a coordinating node may send tasks to, and the gRPC
/// channels to them (one cache for the process, so queries reuse
/// connections). Cheap to clone; clones share the list.
#[derive(Clone, Default)]
pub struct Cluster {
    workers: Arc<RwLock<Vec<Url>>>,
    /// The live nodes with the ingest role (this one too, if it has it),
    /// whose memtables a query reads.
    ingest: Arc<RwLock<Vec<IngestPeer>>>,
    /// Ingest nodes whose worker refused or did not answer a connection at
    /// the last check, and when that was (see [`Cluster::check_peers`]).
    unreachable: Arc<RwLock<(Option<Instant>, HashSet<String>)>>,
    channels: grpc::DefaultChannelResolver,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("workers", &self.workers())
            .finish()
    }
}

impl Cluster {
    /// Replaces the worker list (the worker endpoints of the live nodes,
    /// this one included), in a stable order.
    pub fn set_workers(&self, mut urls: Vec<Url>) {
        urls.sort();
        urls.dedup();
        *self.workers.write().unwrap_or_else(|p| p.into_inner()) = urls;
    }

    /// Replaces the live ingest nodes (their ids and worker URLs).
    pub fn set_ingest_nodes(&self, mut nodes: Vec<IngestPeer>) {
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes.dedup_by(|a, b| a.node == b.node);
        *self.ingest.write().unwrap_or_else(|p| p.into_inner()) = nodes;
    }

    pub fn ingest_nodes(&self) -> Vec<IngestPeer> {
        self.ingest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks, at most once per [`PEER_CHECK_EVERY`], that every other
    /// ingest node's worker accepts a TCP connection within
    /// [`PEER_CONNECT_TIMEOUT`]; returns the ids of those that do not.
    /// Their unflushed rows are left out of queries: a stage sent to a
    /// dead worker is not reported back by `datafusion-distributed` and
    /// would hold the query until its time limit.
    pub async fn check_peers(&self, own_node: &str) -> Vec<String> {
        let fresh = {
            let state = self.unreachable.read().unwrap_or_else(|p| p.into_inner());
            state
                .0
                .is_some_and(|at| at.elapsed() < PEER_CHECK_EVERY)
                .then(|| state.1.clone())
        };
        let down = match fresh {
            Some(down) => down,
            None => {
                let peers: Vec<IngestPeer> = self
                    .ingest_nodes()
                    .into_iter()
                    .filter(|p| p.node != own_node)
                    .collect();
                let checks = peers.iter().map(|p| async move {
                    let addr = match (p.worker.host_str(), p.worker.port_or_known_default()) {
                        (Some(host), Some(port)) => format!("{host}:{port}"),
                        _ => return Some(p.node.clone()),
                    };
                    let connect = tokio::net::TcpStream::connect(addr);
                    match tokio::time::timeout(PEER_CONNECT_TIMEOUT, connect).await {
                        Ok(Ok(_)) => None,
                        _ => Some(p.node.clone()),
                    }
                });
                let down: HashSet<String> = futures::future::join_all(checks)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                *self.unreachable.write().unwrap_or_else(|p| p.into_inner()) =
                    (Some(Instant::now()), down.clone());
                down
            }
        };
        let mut down: Vec<String> = down.into_iter().filter(|n| n != own_node).collect();
        down.sort();
        down
    }

    fn unreachable(&self) -> HashSet<String> {
        self.unreachable
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    pub fn workers(&self) -> Vec<Url> {
        self.workers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether queries should be distributed now: a single worker would
    /// only add a network hop.
    pub fn distributes(&self) -> bool {
        self.workers().len() > 1
    }

    /// `builder` (a Loupe session's) made a coordinating one: the scans
    /// keep their row selections, the plan is distributed over the
    /// current workers, Loupe's plan nodes encode with [`LoupeCodec`]. A
    /// file scan gets one task per `bytes_per_partition` bytes of Parquet
    /// per target partition (so a small query stays on this node). The
    /// scans of `own_node` (this node's id) also read every other live
    /// ingest node's unflushed rows, on that node.
    pub fn coordinator(
        &self,
        mut builder: SessionStateBuilder,
        bytes_per_partition: usize,
        own_node: &str,
    ) -> Result<SessionStateBuilder> {
        let down = self.unreachable();
        let peers = self
            .ingest_nodes()
            .into_iter()
            .filter(|p| p.node != own_node && !down.contains(&p.node))
            .collect();
        builder
            .config()
            .get_or_insert_default()
            .set_extension(Arc::new(IngestPeers(peers)));
        builder
            // Before `with_distributed_planner`, which wraps the planner it finds.
            .with_query_planner(Arc::new(SelectingPlanner))
            .with_distributed_planner()
            .with_distributed_worker_resolver(Workers(self.workers.clone()))
            .with_distributed_channel_resolver(self.channels.clone())
            .with_distributed_user_codec(LoupeCodec)
            .with_distributed_scale_up_leaf_node_handler(crate::split_routing::scale_up_scan)
            .with_distributed_desired_task_count_handler(memtable_task_count)
            // Before the scans' router: a memtable's stage must go to its node.
            .with_distributed_route_tasks_handler(route_memtable_tasks)
            .with_distributed_route_tasks_handler(crate::split_routing::route_scan_tasks)
            .with_distributed_file_scan_config_bytes_per_partition(bytes_per_partition.max(1))
    }

    /// This node's worker service: runs stages on `runtime` (the query
    /// engine's) in sessions `offer` finishes with Loupe's SQL functions;
    /// memtable scans sent here read `storage`.
    pub fn worker(
        &self,
        runtime: Arc<RuntimeEnv>,
        storage: Arc<loupe_storage::Storage>,
        offer: impl Fn(SessionStateBuilder) -> Result<datafusion::execution::SessionState>
        + Send
        + Sync
        + 'static,
    ) -> Worker {
        let channels = self.channels.clone();
        let offer = Arc::new(offer);
        let storage = Arc::new(NodeStorage(storage));
        Worker::from_session_builder(move |ctx: WorkerQueryContext| {
            let (channels, offer, storage) = (channels.clone(), offer.clone(), storage.clone());
            async move {
                let mut builder = ctx
                    .builder
                    .with_distributed_channel_resolver(channels)
                    .with_distributed_user_codec(LoupeCodec);
                builder
                    .config()
                    .get_or_insert_default()
                    .set_extension(storage);
                offer(builder)
            }
        })
        .with_runtime_env(runtime)
    }
}

/// How long a check of the other ingest nodes' workers holds.
pub const PEER_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a worker may take to accept a connection before its node's
/// unflushed rows are left out.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// The worker list as `datafusion-distributed` reads it (synchronously,
/// at planning and again right before tasks are sent).
struct Workers(Arc<RwLock<Vec<Url>>>);

impl WorkerResolver for Workers {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// DataFusion's physical planner, then [`wrap_selected_scans`] and
/// [`isolate_memtable_scans`]: the distributed planner runs after it and
/// sees the wrapped scans.
#[derive(Debug)]
struct SelectingPlanner;

#[async_trait]
impl QueryPlanner for SelectingPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = DefaultPhysicalPlanner::default()
            .create_physical_plan(logical_plan, session)
            .await?;
        isolate_memtable_scans(wrap_selected_scans(plan)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memtable_scan::IngestPeer;
    use crate::plan_codec::tests::{engine, logs, physical_plan, trace};
    use crate::split_routing::rendezvous;
    use crate::{QueryConfig, QueryEngine};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    use loupe_base::self_metrics::Registry;
    use loupe_storage::Signal;

    /// Limits that spread even the tests' small files over every worker.
    fn spread() -> QueryConfig {
        QueryConfig {
            distributed_partition_bytes: 1,
            ..QueryConfig::default()
        }
    }

    /// Serves `worker` on a fresh 127.0.0.1 port; returns its URL.
    async fn serve(worker: Worker) -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(worker.into_worker_server())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Url::parse(&format!("http://{addr}")).unwrap()
    }

    async fn run(engine: &QueryEngine, sql: &str) -> String {
        let out = engine.sql(sql).await.unwrap();
        pretty_format_batches(&out.batches).unwrap().to_string()
    }

    async fn plan(engine: &QueryEngine, sql: &str) -> String {
        let ctx = engine.session().unwrap();
        let plan = physical_plan(&ctx, sql).await;
        datafusion_distributed::display_plan_ascii(plan.as_ref(), false)
    }

    /// Three workers on 127.0.0.1 ports, each decoding its stages from
    /// bytes through gRPC; a coordinator over the same splits (plus rows
    /// only in its memtable); every answer equal to the single-node one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn distributed_results_equal_single_node_results() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, local) = engine(dir.path()).await;
        // Unflushed rows: the coordinator's memtable is part of its answer.
        storage
            .append(Signal::Logs, logs(1000, 90, 480_002))
            .await
            .unwrap();

        let cluster = Cluster::default();
        let registry = Registry::default();
        let coordinator = QueryEngine::new(storage.clone(), spread(), &registry)
            .unwrap()
            .with_cluster(cluster.clone());
        let mut urls = Vec::new();
        for _ in 0..3 {
            urls.push(serve(coordinator.worker().unwrap().unwrap()).await);
        }
        cluster.set_workers(urls);
        assert!(cluster.distributes());

        let id = trace(3);
        let queries = [
            // An aggregate.
            "SELECT service, count(*) AS n, min(body) AS first, max(time) AS last FROM logs \
             GROUP BY service ORDER BY service"
                .to_string(),
            // A top-N.
            "SELECT body, time FROM logs ORDER BY body DESC LIMIT 7".to_string(),
            // Searches: the scan reads only the selected rows and nothing
            // filters again, so a lost selection returns every row.
            "SELECT count(*) AS n FROM logs WHERE match_all('alpha')".to_string(),
            "SELECT body FROM logs WHERE match_all('alpha') ORDER BY body".to_string(),
            // Trace lookups, through the trace-id and full-text indexes.
            format!("SELECT span_id FROM spans WHERE trace_id = '{id}' ORDER BY span_id"),
            format!(
                "SELECT service, count(*) AS n FROM logs WHERE trace_id = '{id}' GROUP BY service ORDER BY service"
            ),
            // Short text comparisons (`crate::short_text_eq`), sent as
            // DataFusion's.
            "SELECT service, count(*) AS n, sum(CASE WHEN service = 'api' THEN 1 ELSE 0 END) AS a \
             FROM logs WHERE service <> 'db' GROUP BY service ORDER BY service"
                .to_string(),
            // Whole-table distinct counts (`crate::count_distinct_text`),
            // whose partial states cross nodes.
            "SELECT count(DISTINCT trace_id) AS traces, count(DISTINCT body) AS bodies, \
             count(DISTINCT service) AS services FROM logs"
                .to_string(),
        ];
        for sql in &queries {
            let shown = plan(&coordinator, sql).await;
            assert!(shown.contains("DistributedExec"), "{sql}\n{shown}");
            assert!(shown.contains("Stage 1"), "{sql}\n{shown}");
            // Whole files per task (rendezvous by path), no byte ranges.
            assert!(!shown.contains(".parquet:0.."), "{sql}\n{shown}");
            let (here, there) = (run(&local, sql).await, run(&coordinator, sql).await);
            assert_eq!(here, there, "{sql}\n{shown}");
        }
        // Every query ran in stages on the workers: one that fails there
        // runs again on this node, with the same answer.
        let outcome = |outcome| {
            let help = "Queries planned in stages over several nodes.";
            registry
                .counter(
                    "loupe_distributed_queries_total",
                    help,
                    &[("outcome", outcome)],
                )
                .get()
        };
        assert_eq!(outcome("sent"), queries.len() as u64);
        assert_eq!(outcome("run_here_after_failure"), 0);

        // The selection's figures themselves (334 of 1000 flushed lines
        // say "alpha", and 30 of the 90 unflushed ones).
        let n = run(&coordinator, &queries[2]).await;
        assert!(n.contains("| 364 |"), "{n}");
        let bodies = run(&coordinator, &queries[3]).await;
        assert_eq!(bodies.matches("alpha").count(), 364, "{bodies}");
        assert!(!bodies.contains("beta"), "{bodies}");
        let shown = plan(&coordinator, &queries[3]).await;
        assert!(shown.contains("SelectedScanExec"), "{shown}");

        // Task i reads the files whose rendezvous winner is worker i.
        let ctx = coordinator.session().unwrap();
        let physical = physical_plan(&ctx, &queries[0]).await;
        let mut workers = cluster.workers();
        workers.sort();
        let mut files = 0;
        physical
            .apply(|node| {
                if let Some(leaf) =
                    node.downcast_ref::<datafusion_distributed::DistributedLeafExec>()
                {
                    let task_workers = &workers[..leaf.variants().len()];
                    for (task, variant) in leaf.variants().iter().enumerate() {
                        let scan = variant.downcast_ref::<DataSourceExec>().unwrap();
                        let config = scan.data_source().downcast_ref::<FileScanConfig>().unwrap();
                        for file in config.file_groups.iter().flat_map(|g| g.iter()) {
                            let path = file.object_meta.location.as_ref();
                            assert_eq!(rendezvous(path, task_workers), Some(task), "{path}");
                            assert!(file.range.is_none(), "{path}");
                            files += 1;
                        }
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .unwrap();
        assert_eq!(files, 2, "the two log files, each in one task");

        storage.shutdown().await.unwrap();
    }

    /// Runs `sql` planned on `engine` but executed only after `between`:
    /// what a query sees when something happens on another node meanwhile.
    async fn run_planned_before(
        engine: &QueryEngine,
        sql: &str,
        between: impl std::future::Future<Output = ()>,
    ) -> Result<String> {
        let ctx = engine.session().unwrap();
        let plan = ctx.sql(sql).await?.create_physical_plan().await?;
        between.await;
        let out = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await?;
        Ok(pretty_format_batches(&out).unwrap().to_string())
    }

    /// Three nodes, each with its own storage and worker on 127.0.0.1: rows
    /// only in node X's (or Z's) memtable are counted exactly once by a query
    /// coordinated on node Y — read on X (a task sent anywhere else fails
    /// its node check), after the WAL position Y's split list covers for
    /// X — even when X flushes them between Y's planning and execution.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn other_nodes_unflushed_rows_are_read_there_exactly_once() {
        let (dir_x, dir_y) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Y: 1000 log lines in splits (334 say "alpha").
        let (storage_y, _) = engine(dir_y.path()).await;
        let registry = Registry::default();
        let storage_x = loupe_storage::Storage::open(
            loupe_storage::StorageConfig::new(dir_x.path()),
            &registry,
        )
        .await
        .unwrap();
        // X: 50 lines flushed, then 70 acknowledged and not flushed.
        storage_x
            .append(Signal::Logs, logs(5000, 50, 480_003))
            .await
            .unwrap();
        storage_x.flush(Signal::Logs).await.unwrap();
        let covered = storage_x.flushed_through(Signal::Logs);
        assert!(covered > 0);
        storage_x
            .append(Signal::Logs, logs(2000, 70, 480_003))
            .await
            .unwrap();
        let alpha_x = (2000..2070).filter(|i| i % 3 == 0).count();

        // Z: another ingest node, 30 lines not flushed.
        let dir_z = tempfile::tempdir().unwrap();
        let storage_z = loupe_storage::Storage::open(
            loupe_storage::StorageConfig::new(dir_z.path()),
            &registry,
        )
        .await
        .unwrap();
        storage_z
            .append(Signal::Logs, logs(3000, 30, 480_003))
            .await
            .unwrap();
        let cluster_y = Cluster::default();
        let y = QueryEngine::new(storage_y.clone(), spread(), &registry)
            .unwrap()
            .with_cluster(cluster_y.clone());
        // X's worker reads split files from the store Y's are in (as nodes
        // sharing a bucket do) and unflushed rows from X's storage.
        let worker_x = Cluster::default().worker(y.runtime(), storage_x.clone(), |b| {
            let ctx = datafusion::prelude::SessionContext::new_with_state(b.build());
            crate::engine::offer_functions(&ctx);
            Ok(ctx.state())
        });
        let url_x = serve(worker_x).await;
        let worker_z = Cluster::default().worker(y.runtime(), storage_z.clone(), |b| {
            let ctx = datafusion::prelude::SessionContext::new_with_state(b.build());
            crate::engine::offer_functions(&ctx);
            Ok(ctx.state())
        });
        let url_z = serve(worker_z).await;
        let url_y = serve(y.worker().unwrap().unwrap()).await;
        cluster_y.set_workers(vec![url_x.clone(), url_y.clone(), url_z.clone()]);
        let peer = |node: &str, worker: &Url| IngestPeer {
            node: node.to_string(),
            worker: worker.clone(),
        };
        cluster_y.set_ingest_nodes(vec![
            peer(storage_x.node_id(), &url_x),
            peer(storage_y.node_id(), &url_y),
            peer(storage_z.node_id(), &url_z),
        ]);
        // What a reload of the shared catalog would have told Y: its
        // splits hold X's WAL through `covered` (here Y simply lacks them).
        storage_y.set_peer_flushed(storage_x.node_id(), Signal::Logs, covered);

        let count = "SELECT count(*) AS n FROM logs";
        let shown_plan = plan(&y, count).await;
        let shown = shown_plan.clone();
        assert!(shown.contains("MemtableScanExec"), "{shown}");
        assert!(!shown.contains(storage_y.node_id()), "{shown}");
        // Run as planned (no fallback to this node alone).
        let direct = run_planned_before(&y, count, async {}).await.unwrap();
        assert!(direct.contains("| 1100 |"), "{shown}\n{direct}");
        let out = y.sql(count).await.unwrap();
        let shown = pretty_format_batches(&out.batches).unwrap().to_string();
        assert!(shown.contains("| 1100 |"), "{shown}");
        assert!(!out.partial);
        // Each peer's scan in a stage of its own, sent to that peer.
        assert_eq!(
            shown_plan.matches("MemtableScanExec").count(),
            2,
            "{shown_plan}"
        );
        // A search and a projection reach X's rows too.
        let alpha = "SELECT count(*) AS n FROM logs WHERE match_all('alpha')";
        let n = run(&y, alpha).await;
        assert!(n.contains(&format!("| {} |", 334 + alpha_x + 10)), "{n}");
        let bodies = run(
            &y,
            "SELECT body FROM logs WHERE match_all('alpha') AND body LIKE '%line 20__' ORDER BY body",
        )
        .await;
        assert_eq!(bodies.matches("alpha line 20").count(), alpha_x, "{bodies}");
        assert!(!bodies.contains("beta"), "{bodies}");

        // X flushes after Y planned: the rows still count once.
        let flushed = run_planned_before(&y, count, async {
            storage_x.flush(Signal::Logs).await.unwrap();
        })
        .await
        .unwrap();
        assert!(flushed.contains("| 1100 |"), "{flushed}");
        assert!(storage_x.flushed_through(Signal::Logs) > covered);
        assert!(storage_x.snapshot(Signal::Logs).batches.is_empty());
        // …and so does a query planned later on the same (older) split
        // list, within the grace.
        assert!(run(&y, count).await.contains("| 1100 |"));
        // Once Y's list covers X's flush, X returns none of those rows.
        storage_y.set_peer_flushed(
            storage_x.node_id(),
            Signal::Logs,
            storage_x.flushed_through(Signal::Logs),
        );
        assert!(run(&y, count).await.contains("| 1030 |"));

        // An ingest node that is gone: the query still answers, with X's
        // unflushed rows, without the gone node's (after the last check of
        // the peers has aged).
        tokio::time::sleep(PEER_CHECK_EVERY).await;
        storage_y.set_peer_flushed(storage_x.node_id(), Signal::Logs, covered);
        // A port that was just free: nothing listens on it (as after a kill).
        let gone = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let gone = Url::parse(&format!("http://{gone}")).unwrap();
        cluster_y.set_ingest_nodes(vec![peer(storage_x.node_id(), &url_x), peer("gone", &gone)]);
        let out = y.sql(count).await.unwrap();
        let shown = pretty_format_batches(&out.batches).unwrap().to_string();
        assert!(shown.contains("| 1070 |"), "{shown}");
        assert!(
            out.partial,
            "the answer lacks the gone node's rows and says so"
        );

        storage_x.shutdown().await.unwrap();
        storage_y.shutdown().await.unwrap();
        storage_z.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_worker_plans_locally() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = engine(dir.path()).await;
        let cluster = Cluster::default();
        let engine = QueryEngine::new(storage.clone(), spread(), &Registry::default())
            .unwrap()
            .with_cluster(cluster.clone());
        cluster.set_workers(vec![Url::parse("http://127.0.0.1:1").unwrap()]);
        let shown = plan(&engine, "SELECT count(*) FROM logs").await;
        assert!(!shown.contains("DistributedExec"), "{shown}");
        storage.shutdown().await.unwrap();
    }

    /// Workers that are gone (a node killed since the list was read): the
    /// query runs again on this node and answers as a single node would.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_whose_workers_are_gone_runs_here() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, local) = engine(dir.path()).await;
        let cluster = Cluster::default();
        let engine = QueryEngine::new(storage.clone(), spread(), &Registry::default())
            .unwrap()
            .with_cluster(cluster.clone());
        let mut gone = Vec::new();
        for _ in 0..2 {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            gone.push(Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap());
        }
        cluster.set_workers(gone);
        let sql = "SELECT service, count(*) AS n FROM logs WHERE match_all('alpha') GROUP BY service ORDER BY service";
        assert!(plan(&engine, sql).await.contains("DistributedExec"));
        assert_eq!(run(&engine, sql).await, run(&local, sql).await);
        storage.shutdown().await.unwrap();
    }
}
