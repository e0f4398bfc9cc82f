//! Runs one SQL query: a fresh DataFusion session over the three tables,
//! a memory pool all running queries share, spilling disabled (queries never write), a time
//! limit, a cap on result rows, and a bound on concurrent queries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider,
};
use datafusion::execution::cache::cache_manager::{CacheManagerConfig, CachedFileMetadataEntry};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryPool, MemoryReservation,
};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::optimizer::Optimizer;
use datafusion::optimizer::analyzer::Analyzer;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use loupe_base::self_metrics::{Counter, Histogram, Registry};
use loupe_storage::{STORE_URL, Signal, Storage};
use tokio::sync::Semaphore;

use crate::count_distinct_text::{self, CountDistinctTexts};
use crate::counted_cases::CountedCases;
use crate::error::{QueryError, from_datafusion};
use crate::map_key_types::MapKeyTypes;
use crate::sandbox;
use crate::short_text_eq::ShortTextComparisons;
use crate::table::SignalTable;

/// Limits that keep one query from hurting the server.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub timeout: Duration,
    /// Memory all running queries together may use for sorts, joins and
    /// aggregations (one pool, so concurrency cannot multiply it).
    pub memory_limit: usize,
    /// Rows returned at most; the response says when it was cut.
    pub max_result_rows: usize,
    /// Bytes of result held at most, whatever the row count: batches are
    /// cut to fit as they arrive.
    pub max_result_bytes: usize,
    /// Queries running at once; more wait (within their timeout).
    pub max_concurrent: usize,
    pub target_partitions: usize,
    /// Bytes of Parquet footers and page indexes kept
    /// across queries.
    pub metadata_cache_bytes: usize,
    /// Bytes of Parquet one partition of a distributed scan reads before
    /// the planner adds a task (on another node); smaller queries run here.
    pub distributed_partition_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(30),
            memory_limit: 512 << 20,
            max_result_rows: 100_000,
            max_result_bytes: 64 << 20,
            max_concurrent: 4,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            metadata_cache_bytes: 64 << 20,
            distributed_partition_bytes: 16 << 20,
        }
    }
}

/// A finished query's rows.
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub truncated: bool,
    /// Other ingest nodes' unflushed rows are missing: the distributed
    /// query failed (a node down) and ran on this node alone.
    pub partial: bool,
    pub elapsed: Duration,
    /// The result's bytes, reserved in the shared query memory pool until
    /// the output (and the response built from it) is dropped: four
    /// concurrent results of `max_result_bytes` would otherwise hold
    /// 256 MiB outside any share of the memory budget.
    _result_memory: MemoryReservation,
}

/// The bytes of `batch`'s own rows (a slice counts only its part of the
/// buffers it shares).
fn batch_bytes(batch: &RecordBatch) -> Result<usize, QueryError> {
    use datafusion::arrow::array::AsArray;
    let mut total = 0;
    for column in batch.columns() {
        // Views point into shared data buffers: count what they point at.
        total += if let Some(views) = column.as_string_view_opt() {
            16 * views.len() + views.iter().flatten().map(str::len).sum::<usize>()
        } else if let Some(views) = column.as_binary_view_opt() {
            16 * views.len() + views.iter().flatten().map(<[u8]>::len).sum::<usize>()
        } else {
            column
                .to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| column.get_array_memory_size())
        };
    }
    Ok(total)
}

/// Keeps the longest prefix of `batch` within `max_rows` rows and
/// `max_bytes` bytes, so one huge batch cannot slip past the result cap;
/// returns it, its size and whether rows were cut. A cut prefix is copied
/// out, so the rest of the batch's memory is freed at once.
fn fit_batch(
    batch: RecordBatch,
    max_rows: usize,
    max_bytes: usize,
) -> Result<(RecordBatch, usize, bool), QueryError> {
    let size = batch_bytes(&batch)?;
    if batch.num_rows() <= max_rows && size <= max_bytes {
        return Ok((batch, size, false));
    }
    // The largest n with batch[..n] within both limits.
    let (mut low, mut high) = (0usize, batch.num_rows().min(max_rows));
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if batch_bytes(&batch.slice(0, mid))? <= max_bytes {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    let indices = datafusion::arrow::array::UInt32Array::from_iter_values(0..low as u32);
    let kept = datafusion::arrow::compute::take_record_batch(&batch, &indices)
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let size = batch_bytes(&kept)?;
    Ok((kept, size, true))
}

/// Functions whose output can be far larger than their input (`repeat(s,
/// 10^12)`, `lpad(s, 10^12)`, `array_repeat`, `range(0, 10^12)`): their
/// buffers are allocated outside the query's memory pool, so one call can
/// abort the process. They are not offered; nothing Loupe answers needs them.
const AMPLIFYING_FUNCTIONS: &[&str] = &[
    "repeat",
    "lpad",
    "rpad",
    "array_repeat",
    "list_repeat",
    "array_resize",
    "list_resize",
    "range",
    "generate_series",
];

/// The SQL functions Loupe offers, the same on a coordinator and a worker
/// (a decoded plan names its functions).
pub(crate) fn offer_functions(ctx: &SessionContext) {
    for name in AMPLIFYING_FUNCTIONS {
        ctx.deregister_udf(name);
        ctx.deregister_udtf(name);
    }
    ctx.register_udf(crate::search::match_all_udf());
    ctx.register_udf(crate::log_template_udf::log_template_udf());
    ctx.register_udaf(crate::count_distinct_text::count_distinct_text_udaf());
}

/// The runtime every query of a node runs on, local or a worker's stage:
/// the shared memory pool and metadata cache, spilling off, and the split
/// store registered under the URL plans name it by.
fn runtime(
    config: &QueryConfig,
    metadata_cache: &Arc<DefaultCache<object_store::path::Path, CachedFileMetadataEntry>>,
    memory: &Arc<dyn MemoryPool>,
    store_url: &ObjectStoreUrl,
    storage: &Storage,
) -> Result<Arc<RuntimeEnv>, QueryError> {
    let caches = CacheManagerConfig::default()
        .with_file_metadata_cache(Some(metadata_cache.clone()))
        .with_metadata_cache_limit(config.metadata_cache_bytes);
    let runtime = RuntimeEnvBuilder::new()
        .with_cache_manager(caches)
        .with_memory_pool(memory.clone())
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(from_datafusion)?;
    runtime.register_object_store(store_url.as_ref(), storage.object_store());
    Ok(runtime)
}

/// A session's configuration, runtime and DataFusion's functions; the
/// tables and Loupe's own functions come after.
fn session_builder(config: &QueryConfig, runtime: Arc<RuntimeEnv>) -> SessionStateBuilder {
    let mut session = SessionConfig::new()
        .with_target_partitions(config.target_partitions)
        .with_information_schema(true);
    // A partial aggregate that barely reduces its input (grouping by
    // trace and span, as `/problems` does: 0.7-0.8 groups per row)
    // stops aggregating and streams its rows on after a probe, rather
    // than holding every group and emitting them as slices of one
    // large batch, which DataFusion charges in full per slice
    // (apache/datafusion#22757): those slices exhausted the query
    // memory limit for a fraction of the memory they held. Keeping
    // more than a quarter of its rows is already "barely": counting
    // distinct traces over 2.2 M spans (0.29 groups per row), the
    // partial aggregates spent 160 ms of CPU to spare the final one
    // 25 ms; streaming the rows on instead, the query took 19 % less
    // CPU (258 -> 210 ms per query).
    let execution = &mut session.options_mut().execution;
    execution.skip_partial_aggregation_probe_ratio_threshold = 0.25;
    execution.skip_partial_aggregation_probe_rows_threshold = 16 * 1024;
    // One pass of the logical optimizer, not DataFusion's default of
    // up to three: its rules are ordered so that one pass does their
    // work (subqueries become joins before filters are pushed down),
    // and a second pass mostly finds nothing left to change. Planning
    // is serial before any execution, 20 % of RED per service's CPU on
    // small-scale data; one pass took RED 4-6 % less time, top-10
    // slowest operations 3-7 %, the join of erroring spans to logs
    // 10 %, `/problems` 3 % (41 and 9 alternated calls).
    session.options_mut().optimizer.max_passes = 1;
    // `count(DISTINCT text)` over a whole table, before DataFusion makes
    // it a grouping.
    let mut rules = Optimizer::new().rules;
    let at = rules
        .iter()
        .position(|r| r.name() == count_distinct_text::BEFORE_RULE)
        .unwrap_or(0);
    rules.insert(at, Arc::new(CountDistinctTexts));
    // Grouped `sum(CASE WHEN p THEN 1 ELSE 0 END)` as a filtered count.
    rules.insert(at, Arc::new(CountedCases));
    // Map keys are read as views; `get_field`'s key must be one too.
    let mut analyzer = Analyzer::new().rules;
    analyzer.push(Arc::new(MapKeyTypes));
    SessionStateBuilder::new()
        .with_config(session)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_analyzer_rules(analyzer)
        .with_optimizer_rules(rules)
        // After DataFusion's rules, so the scans' pruning keeps the
        // comparisons it reads.
        .with_physical_optimizer_rule(Arc::new(ShortTextComparisons))
}

/// A catalog list holding `tables` as the default catalog's default
/// schema, named as `state` names them.
fn catalog_of(
    state: &SessionState,
    tables: Arc<MemorySchemaProvider>,
) -> Result<Arc<dyn CatalogProviderList>, QueryError> {
    let names = &state.config().options().catalog;
    let catalog = Arc::new(MemoryCatalogProvider::new());
    catalog
        .register_schema(&names.default_schema, tables)
        .map_err(from_datafusion)?;
    let list = Arc::new(MemoryCatalogProviderList::new());
    list.register_catalog(names.default_catalog.clone(), catalog);
    Ok(list)
}

/// The one place queries run: every API, the SQL endpoint and the
/// internal queries of the analysis APIs alike, so all share its limits,
/// its concurrency bound and its metadata cache.
pub struct QueryEngine {
    storage: Arc<Storage>,
    config: QueryConfig,
    store_url: ObjectStoreUrl,
    permits: Semaphore,
    /// Parquet footers and page indexes, shared by every
    /// query: split files never change, so this is always valid.
    metadata_cache: Arc<DefaultCache<object_store::path::Path, CachedFileMetadataEntry>>,
    /// The memory every query's operators draw from.
    memory: Arc<dyn MemoryPool>,
    ok: Arc<Counter>,
    failed: Arc<Counter>,
    latency: Arc<Histogram>,
    /// Queries whose plan was cut into stages run on other nodes, and
    /// those of them run again here after a stage failed.
    distributed: Arc<Counter>,
    distributed_retried: Arc<Counter>,
    /// Where plans execute, apart from the ingest threads.
    pool: crate::query_pool::QueryPool,
    /// The workers queries are distributed over; `None` on a single node.
    cluster: Option<crate::distributed::Cluster>,
    /// A query's session before its tables: configuration, runtime and
    /// functions, built once and cloned per query (see
    /// [`QueryEngine::session_for`]).
    prototype: SessionState,
}

impl QueryEngine {
    pub fn new(
        storage: Arc<Storage>,
        config: QueryConfig,
        registry: &Registry,
    ) -> Result<Self, QueryError> {
        let store_url =
            ObjectStoreUrl::parse(STORE_URL).map_err(|e| QueryError::Internal(e.to_string()))?;
        let metadata_cache = Arc::new(DefaultCache::new(config.metadata_cache_bytes));
        let memory: Arc<dyn MemoryPool> =
            Arc::new(GreedyMemoryPool::new(config.memory_limit.max(1)));
        let runtime = runtime(&config, &metadata_cache, &memory, &store_url, &storage)?;
        let ctx = SessionContext::new_with_state(session_builder(&config, runtime).build());
        offer_functions(&ctx);
        Ok(QueryEngine {
            storage,
            permits: Semaphore::new(config.max_concurrent.max(1)),
            metadata_cache,
            memory,
            prototype: ctx.state(),
            config,
            store_url,
            ok: registry.counter(
                "loupe_queries_total",
                "SQL queries run.",
                &[("outcome", "ok")],
            ),
            failed: registry.counter(
                "loupe_queries_total",
                "SQL queries run.",
                &[("outcome", "error")],
            ),
            latency: registry.histogram("loupe_query_duration_seconds", "SQL query latency.", &[]),
            distributed: registry.counter(
                "loupe_distributed_queries_total",
                "Queries planned in stages over several nodes.",
                &[("outcome", "sent")],
            ),
            distributed_retried: registry.counter(
                "loupe_distributed_queries_total",
                "Queries planned in stages over several nodes.",
                &[("outcome", "run_here_after_failure")],
            ),
            pool: crate::query_pool::QueryPool::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )?,
            cluster: None,
        })
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Bytes the running queries' operators hold from the query memory pool.
    pub fn memory_reserved(&self) -> usize {
        self.memory.reserved()
    }

    /// Bytes of Parquet metadata held by the shared metadata cache.
    pub fn metadata_cache_bytes(&self) -> usize {
        self.metadata_cache.memory_used()
    }

    /// The `logs` table restricted to the given rows, for one query.
    pub fn selected_logs(&self, selection: crate::table::Selection) -> crate::table::SignalTable {
        crate::table::SignalTable::selected(
            self.storage.clone(),
            Signal::Logs,
            self.store_url.clone(),
            selection,
        )
    }

    /// The `logs` table of the other ingest nodes' unflushed rows that
    /// `snapshot`'s splits lack (see [`Self::reads_peers`]).
    pub fn peer_logs(&self, snapshot: &loupe_storage::TableSnapshot) -> crate::table::SignalTable {
        crate::table::SignalTable::peers_after(
            self.storage.clone(),
            Signal::Logs,
            self.store_url.clone(),
            snapshot,
        )
    }

    /// Whether this node's queries read other ingest nodes' unflushed rows
    /// on those nodes: what an answer from this node's indexes alone lacks.
    pub fn reads_peers(&self) -> bool {
        self.distributes() && self.has_ingest_peers()
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// The runtime every query of this node runs on, local or a worker's
    /// stage (see [`runtime`]).
    pub fn runtime(&self) -> Arc<RuntimeEnv> {
        self.prototype.runtime_env().clone()
    }

    /// Makes this engine coordinate queries over `cluster` whenever it has
    /// more than one worker (see [`crate::distributed`]).
    pub fn with_cluster(mut self, cluster: crate::distributed::Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// This node's worker service for distributed queries, when it has a
    /// cluster; it runs stages on this engine's runtime.
    pub fn worker(&self) -> Result<Option<datafusion_distributed::Worker>, QueryError> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        Ok(Some(cluster.worker(
            self.runtime(),
            self.storage.clone(),
            |builder| {
                let ctx = SessionContext::new_with_state(builder.build());
                offer_functions(&ctx);
                Ok(ctx.state())
            },
        )))
    }

    /// A session with the three tables and the SQL functions that are safe
    /// to offer, for one query; a coordinating one when the cluster has
    /// workers to send stages to.
    pub fn session(&self) -> Result<SessionContext, QueryError> {
        self.session_for(self.distributes())
    }

    /// Whether other live ingest nodes hold unflushed rows a distributed
    /// query reads.
    fn has_ingest_peers(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| {
            c.ingest_nodes()
                .iter()
                .any(|p| p.node != self.storage.node_id())
        })
    }

    /// Whether queries are distributed now (a cluster with more than one
    /// worker).
    fn distributes(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.distributes())
    }

    /// A session over the three tables: the prototype, cloned (a
    /// coordinating one built on it), with a catalog of its own. A clone
    /// shares the prototype's catalog list, and one query's tables (each
    /// holds the splits it lists) must not be another's. Building the
    /// state per query instead (every function registered again) was
    /// 2.5 % of RED per service's CPU.
    fn session_for(&self, distributed: bool) -> Result<SessionContext, QueryError> {
        let tables = Arc::new(MemorySchemaProvider::new());
        for signal in Signal::ALL {
            let table = SignalTable::new(self.storage.clone(), signal, self.store_url.clone());
            tables
                .register_table(signal.name().to_string(), Arc::new(table))
                .map_err(from_datafusion)?;
        }
        let mut state = match self.cluster.as_ref().filter(|_| distributed) {
            None => self.prototype.clone(),
            // The coordinator wraps the prototype's planner in its own.
            Some(cluster) => cluster
                .coordinator(
                    SessionStateBuilder::new_from_existing(self.prototype.clone()),
                    self.config.distributed_partition_bytes,
                    self.storage.node_id(),
                )
                .map_err(from_datafusion)?
                .build(),
        };
        state.register_catalog_list(catalog_of(&state, tables)?);
        Ok(SessionContext::new_with_state(state))
    }

    /// Runs one read-only statement.
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput, QueryError> {
        // The statement the sandbox parsed is the one planned: parsing the
        // text a second time (as `SessionContext::sql` would) was 1 % of
        // the server's CPU for RED per service.
        let statement = sandbox::check(sql)?;
        self.query(async |ctx| {
            let plan = ctx
                .state()
                .statement_to_plan(statement)
                .await
                .map_err(from_datafusion)?;
            SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false)
                .verify_plan(&plan)
                .map_err(from_datafusion)?;
            ctx.execute_logical_plan(plan)
                .await
                .map_err(from_datafusion)
        })
        .await
    }

    /// Runs a query built with the DataFrame API (the search and trace
    /// APIs do, to avoid assembling SQL text), under the same limits as SQL.
    pub async fn query<F>(&self, build: F) -> Result<QueryOutput, QueryError>
    where
        F: AsyncFnOnce(&SessionContext) -> Result<DataFrame, QueryError>,
    {
        let started = Instant::now();
        let run = async {
            let _permit = self.permits.acquire().await.map_err(|_| QueryError::Busy)?;
            let distributed = self.distributes();
            // Ingest nodes that are down: their unflushed rows are left out.
            let mut skipped = Vec::new();
            if let Some(cluster) = self.cluster.as_ref().filter(|_| distributed) {
                skipped = cluster.check_peers(self.storage.node_id()).await;
                if !skipped.is_empty() {
                    tracing::warn!(nodes = ?skipped, "ingest nodes unreachable: their unflushed rows are not in this answer");
                }
            }
            let ctx = self.session_for(distributed)?;
            let df = build(&ctx).await?;
            let logical = distributed.then(|| df.logical_plan().clone());
            let Some(logical) = logical else {
                return self.collect(df, started).await;
            };
            let mut outcome = self.collect(df, started).await;
            // Another node let go of unflushed rows this node's split list
            // does not hold yet (a list older than the flushed batches'
            // grace): list the splits again and plan once more.
            if let Err(e) = &outcome
                && e.to_string().contains(crate::memtable_scan::ROWS_GONE)
            {
                tracing::info!(error = %e, "split list too old for another node's memtable; planning again");
                self.storage
                    .reload_splits()
                    .await
                    .map_err(|e| QueryError::Internal(e.to_string()))?;
                let again = self.session_for(true)?;
                outcome = self
                    .collect(DataFrame::new(again.state(), logical.clone()), started)
                    .await;
            }
            if let Ok(out) = &mut outcome {
                out.partial = !skipped.is_empty();
            }
            match outcome {
                // A worker that died since the node list was read (or any
                // other failure of a stage elsewhere): once more, here —
                // without the other ingest nodes' unflushed rows.
                Err(e @ (QueryError::Internal(_) | QueryError::Invalid(_))) => {
                    tracing::warn!(error = %e, "distributed query failed; running it on this node, without other nodes' unflushed rows");
                    self.distributed_retried.inc();
                    let local = self.session_for(false)?;
                    let mut out = self
                        .collect(DataFrame::new(local.state(), logical), started)
                        .await?;
                    out.partial = self.has_ingest_peers();
                    Ok(out)
                }
                done => done,
            }
        };
        let result = tokio::time::timeout(self.config.timeout, run)
            .await
            .unwrap_or(Err(QueryError::Timeout(self.config.timeout)));
        self.latency.observe(started.elapsed());
        match &result {
            Ok(_) => self.ok.inc(),
            Err(_) => self.failed.inc(),
        }
        result
    }

    /// Executes `df` on the query threads, keeping at most the configured
    /// rows and bytes.
    async fn collect(&self, df: DataFrame, started: Instant) -> Result<QueryOutput, QueryError> {
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let task = Arc::new(df.task_ctx());
        let result_memory = MemoryConsumer::new("query result").register(task.memory_pool());
        let plan = df.create_physical_plan().await.map_err(from_datafusion)?;
        if plan.is::<datafusion_distributed::DistributedExec>() {
            self.distributed.inc();
        }
        let plan = crate::deadline::with_deadline(
            plan,
            started + self.config.timeout,
            self.config.timeout,
        )
        .map_err(from_datafusion)?;
        let (max_rows, max_bytes) = (self.config.max_result_rows, self.config.max_result_bytes);
        let (batches, truncated, result_memory) = self
            .pool
            .run(async move {
                let mut stream = datafusion::physical_plan::execute_stream(plan, task)
                    .map_err(from_datafusion)?;
                let (mut batches, mut rows, mut bytes, mut truncated) =
                    (Vec::new(), 0usize, 0usize, false);
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(from_datafusion)?;
                    let room = (max_rows - rows, max_bytes.saturating_sub(bytes));
                    let (batch, size, cut) = fit_batch(batch, room.0, room.1)?;
                    // Too big for what the query pool has left: 422, as
                    // for any query that runs out of memory.
                    result_memory.try_grow(size).map_err(from_datafusion)?;
                    truncated |= cut;
                    rows += batch.num_rows();
                    bytes += size;
                    if batch.num_rows() > 0 {
                        batches.push(batch);
                    }
                    if cut || rows >= max_rows || bytes >= max_bytes {
                        truncated = truncated || stream.next().await.is_some();
                        break;
                    }
                }
                Ok((batches, truncated, result_memory))
            })
            .await?;
        Ok(QueryOutput {
            schema,
            batches,
            truncated,
            partial: false,
            elapsed: started.elapsed(),
            _result_memory: result_memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_run_the_logical_optimizer_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, engine) = crate::plan_codec::tests::engine(dir.path()).await;
        let ctx = engine.session().unwrap();
        assert_eq!(ctx.state().config().options().optimizer.max_passes, 1);
        // One pass still answers a subquery, filtered on the outer side.
        let count = async |sql: &str| {
            let out = engine.sql(sql).await.unwrap();
            let column = out.batches[0].column(0).clone();
            column
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap()
                .value(0)
        };
        let n = count(
            "SELECT count(*) FROM spans WHERE service IN \
             (SELECT service FROM spans) AND duration_ns >= 0",
        )
        .await;
        let all = count("SELECT count(*) FROM spans").await;
        assert!(n > 0 && n == all, "{n} of {all}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_cloned_from_the_prototype_keep_their_own_tables() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, engine) = crate::plan_codec::tests::engine(dir.path()).await;
        let first = engine.session().unwrap();
        let second = engine.session().unwrap();
        first.deregister_table("spans").unwrap();
        assert!(!first.table_exist("spans").unwrap());
        assert!(second.table_exist("spans").unwrap());
        assert!(engine.session().unwrap().table_exist("spans").unwrap());
        // Loupe's functions are offered and the amplifying ones are not.
        let state = second.state();
        assert!(
            state
                .scalar_functions()
                .contains_key(crate::search::MATCH_ALL)
        );
        for name in AMPLIFYING_FUNCTIONS {
            assert!(!state.scalar_functions().contains_key(*name), "{name}");
        }
        // The information schema lists the session's own tables.
        let out = engine
            .sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'spans'")
            .await
            .unwrap();
        let columns = out.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(columns, Signal::Spans.schema().fields().len() as i64);
        // Each query has its own start time, not the prototype's.
        let now = async || {
            let out = engine.sql("SELECT now()").await.unwrap();
            out.batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>()
                .unwrap()
                .value(0)
        };
        let first = now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = now().await;
        assert!(second >= first + 5_000_000, "{first} then {second}");
    }

    #[test]
    fn one_batch_over_the_byte_cap_is_cut_to_fit() {
        let big = "x".repeat(1000);
        let values: Vec<&str> = (0..1000).map(|_| big.as_str()).collect();
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values))]).unwrap();
        let (kept, size, cut) = fit_batch(batch.clone(), 10_000, 100_000).unwrap();
        assert!(cut);
        assert!(size <= 100_000, "{size}");
        assert!((90..=100).contains(&kept.num_rows()), "{}", kept.num_rows());
        let (kept, _, cut) = fit_batch(batch, 10, usize::MAX).unwrap();
        assert_eq!((kept.num_rows(), cut), (10, true));
    }
}
