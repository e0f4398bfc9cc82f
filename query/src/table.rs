//! `logs`, `spans` and `metrics` as DataFusion tables: the catalog's splits
//! that overlap the query's time window, read through the object store with
//! statistics and page-index pruning, UNION the memtable. A
//! `match_all` on logs or a `trace_id = '…'` on spans reads only the rows
//! the split's index names. In a distributed query the scan also reads
//! every other live ingest node's memtable, on that node, after the WAL
//! position the split list covers for it ([`MemtableScanExec`]).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{DataFusionError, Result as DfResult, project_schema};
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use loupe_storage::{MemBatch, Signal, Storage, TableSnapshot};

use crate::instance_column::InstanceFromResources;
use crate::memtable_scan::{IngestPeers, MemtableFilter, MemtableScanExec};
use crate::search;
use crate::split_reader::SplitReaderFactory;
use crate::time_bounds::TimeBounds;
use crate::view_schema;

pub struct SignalTable {
    storage: Arc<Storage>,
    signal: Signal,
    store_url: ObjectStoreUrl,
    /// When set, the table is just these rows (see [`Selection`]).
    selection: Option<Selection>,
    /// When set, only the other ingest nodes' unflushed rows, after the
    /// WAL positions given (a [`TableSnapshot::peers_flushed`]): the
    /// search API reads the rest from the indexes of its own snapshot and
    /// asks this for what that snapshot's splits lack.
    peers_after: Option<Arc<HashMap<String, u64>>>,
    /// The most bytes of a whole split one piece of a scan covers
    /// ([`SCAN_PIECE_BYTES`]; smaller in tests).
    piece_bytes: u64,
}

/// Given rows of a table: rows of splits (ascending row numbers) and
/// memtable rows already cut out. The search API reads its newest hits,
/// found in the indexes, through this.
#[derive(Default, Clone)]
pub struct Selection {
    pub splits: Vec<(Arc<loupe_storage::SplitMeta>, Vec<u32>)>,
    pub batches: Vec<datafusion::arrow::record_batch::RecordBatch>,
}

impl std::fmt::Debug for SignalTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalTable")
            .field("signal", &self.signal)
            .finish()
    }
}

impl SignalTable {
    pub fn new(storage: Arc<Storage>, signal: Signal, store_url: ObjectStoreUrl) -> Self {
        SignalTable {
            storage,
            signal,
            store_url,
            selection: None,
            peers_after: None,
            piece_bytes: SCAN_PIECE_BYTES,
        }
    }

    /// The table of the other live ingest nodes' unflushed rows alone,
    /// after the positions `snapshot`'s splits cover, as a coordinating
    /// session reads them (empty in any other session).
    pub fn peers_after(
        storage: Arc<Storage>,
        signal: Signal,
        store_url: ObjectStoreUrl,
        snapshot: &TableSnapshot,
    ) -> Self {
        SignalTable {
            peers_after: Some(snapshot.peers_flushed.clone()),
            ..SignalTable::new(storage, signal, store_url)
        }
    }

    /// The table restricted to `selection`.
    pub fn selected(
        storage: Arc<Storage>,
        signal: Signal,
        store_url: ObjectStoreUrl,
        selection: Selection,
    ) -> Self {
        SignalTable {
            selection: Some(selection),
            ..SignalTable::new(storage, signal, store_url)
        }
    }

    /// The files to read, each with the rows a search or a trace lookup
    /// selected (if any), and how many rows they hold in all.
    async fn files(
        &self,
        snapshot: &TableSnapshot,
        bounds: TimeBounds,
        searches: &[loupe_search::Ast],
        trace_id: Option<&str>,
    ) -> DfResult<(Vec<PartitionedFile>, usize)> {
        let group_rows = loupe_storage::row_group_rows(self.signal);
        let mut files = Vec::new();
        let mut total_rows = 0;
        for split in snapshot
            .splits
            .iter()
            .filter(|s| s.overlaps(bounds.start, bounds.end))
        {
            // The rows an index names; `None`: read the whole file.
            let rows = if !searches.is_empty() {
                let index = self
                    .storage
                    .split_index(split)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                // A phrase's check reads bodies from the file: off the
                // runtime's threads.
                let searches = searches.to_vec();
                let rows = tokio::task::spawn_blocking(move || {
                    search::matching_rows(&searches, |q| index.matching_rows(q))
                })
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))??;
                Some(rows)
            } else if let Some(id) = trace_id {
                // An unreadable index costs speed, not the answer: scan.
                self.storage.trace_rows(split, id).await.unwrap_or_else(|e| {
                    tracing::warn!(split = %split.id, error = %e, "trace index unreadable; scanning the file");
                    None
                })
            } else {
                None
            };
            let file = PartitionedFile::new(split.path.clone(), split.byte_size);
            match rows {
                Some(rows) if rows.is_empty() => continue,
                Some(rows) => {
                    total_rows += rows.len();
                    files.push(file.with_extension(search::access_plan(
                        &rows,
                        split.row_count as usize,
                        group_rows,
                    )));
                }
                None => {
                    total_rows += split.row_count as usize;
                    files.extend(pieces(file, self.piece_bytes));
                }
            }
        }
        Ok((files, total_rows))
    }

    /// A scan of `files`, which hold about `rows` rows (the planner's
    /// estimate; see below).
    fn parquet_scan(
        &self,
        state: &dyn Session,
        files: Vec<PartitionedFile>,
        rows: usize,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = view_schema::table_schema(self.signal);
        // A split never changes once written, so its footer and page
        // index are read once and kept in the runtime's metadata cache
        // (bounded by `metadata_cache_bytes`). The cache was configured
        // but unused until this factory: RED per service over one file
        // (7 ms in all) spent 1.2 ms of its scan reading them again.
        // `SplitReaderFactory` makes the page index part of the cached
        // entry; DataFusion's opener would otherwise re-read it per query.
        let runtime = state.runtime_env();
        let cache = runtime.cache_manager.get_file_metadata_cache();
        let reader = SplitReaderFactory {
            inner: CachedParquetFileReaderFactory::new(
                runtime.object_store(&self.store_url)?,
                cache.clone(),
            ),
            cache,
        };
        // The query's filters prune files, row groups and pages (statistics
        // and page index; splits have no bloom filters, the trace index
        // does that job, so none are looked for). They reach the scan as
        // DataFusion pushes the `FilterExec` above it down (the filters are
        // `Inexact`, so one is always there); giving them to the scan here
        // as well built and evaluated every pruning predicate twice
        // (`kind = server AND kind = server`).
        //
        // They are not evaluated while decoding: row-level pushdown decodes
        // the filter columns first and the rest through a selection, which
        // cost more than it saved on the suite's analytics (RED per
        // service, kind = 'server' keeps 45 % of spans: 11-15 ms with it,
        // 9.3-9.5 ms without, DataFusion 55 on the same file). Searches
        // and trace lookups still read only their rows through access
        // plans.
        let source = ParquetSource::new(schema.clone())
            .with_parquet_file_reader_factory(Arc::new(reader))
            .with_pushdown_filters(false)
            .with_enable_page_index(true)
            .with_bloom_filter_on_read(false);
        let groups = spread(files, state.config().target_partitions());
        // The files' row count (from the catalog) lets the planner size
        // joins: without it, joining erroring spans to their logs hashed
        // and repartitioned both sides instead of broadcasting the few
        // spans (26 ms against 17 ms for DataFusion on the same files).
        // Inexact, so never used as an answer: a search's files hold
        // fewer matching rows than the count says.
        let statistics = Statistics::new_unknown(&schema).with_num_rows(Precision::Inexact(rows));
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .with_expr_adapter(Some(Arc::new(InstanceFromResources)))
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// The id of a `trace_id = '…'` filter, if the query has one: the trace
/// index then picks the rows to read (the filter itself still applies).
fn trace_id_literal(filters: &[Expr]) -> Option<String> {
    filters.iter().find_map(|f| {
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) = f
        else {
            return None;
        };
        let (column, value) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
                (c, v)
            }
            _ => return None,
        };
        if column.name != "trace_id" {
            return None;
        }
        match value {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => Some(s.to_ascii_lowercase()),
            _ => None,
        }
    })
}

fn is_trace_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The searches a memtable batch of `signal` is narrowed by: every
/// `match_all` query, and on logs the trace id of a lookup (its lines are
/// found through the full-text index, which holds trace ids too).
pub(crate) fn mem_searches(
    signal: Signal,
    match_all: &[String],
    log_trace: Option<&str>,
) -> DfResult<Vec<loupe_search::Ast>> {
    if signal != Signal::Logs {
        return Ok(Vec::new());
    }
    let mut searches = Vec::with_capacity(match_all.len() + 1);
    for q in match_all {
        match loupe_storage::log_index::parse_query(q) {
            Ok(ast) => searches.push(ast),
            Err(e) => return Err(DataFusionError::Plan(e.to_string())),
        }
    }
    if let Some(id) = log_trace {
        searches.push(loupe_search::Ast::field_is("trace_id", id));
    }
    Ok(searches)
}

/// The rows of memtable `batches` a query reads: batches wholly outside
/// `bounds` are skipped, the others narrowed to the rows matching every
/// search.
pub(crate) fn mem_rows(
    batches: &[MemBatch],
    bounds: TimeBounds,
    searches: &[loupe_search::Ast],
) -> DfResult<Vec<RecordBatch>> {
    let mut rows = Vec::with_capacity(batches.len());
    for mem in batches
        .iter()
        .filter(|m| m.overlaps(bounds.start, bounds.end))
    {
        if searches.is_empty() {
            rows.push(mem.batch.clone());
        } else if let Some(matching) = search::filter_mem_batch(mem, searches)? {
            rows.push(matching);
        }
    }
    Ok(rows)
}

/// The most bytes of a split one piece of a scan covers.
///
/// A scan's partitions take their next piece from a queue they share as
/// they finish one (DataFusion's file-stream work stealing), so with many
/// pieces they finish together. DataFusion itself cuts the files into one
/// byte range per partition, and on 2.2 M spans in 5 files one partition
/// read 10 % more rows than the other while the query waited for it. A
/// piece reads the row groups that start in it; one that holds none costs
/// an open from the cached footer.
const SCAN_PIECE_BYTES: u64 = 4 << 20;

/// A whole split file as byte ranges of at most `piece_bytes` (a small
/// file stays whole).
fn pieces(file: PartitionedFile, piece_bytes: u64) -> Vec<PartitionedFile> {
    let size = file.object_meta.size;
    let n = size.div_ceil(piece_bytes.max(1)).max(1);
    if n == 1 {
        return vec![file];
    }
    let step = size.div_ceil(n);
    (0..n)
        .map(|i| {
            let start = i * step;
            let end = (start + step).min(size);
            file.clone().with_range(start as i64, end as i64)
        })
        .collect()
}

/// Deals `items` round-robin into at most `n` non-empty groups.
fn spread<T>(items: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let n = n.clamp(1, items.len().max(1));
    let mut groups: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        groups[i % n].push(item);
    }
    groups.retain(|g| !g.is_empty());
    groups
}

#[async_trait]
impl TableProvider for SignalTable {
    fn schema(&self) -> SchemaRef {
        view_schema::table_schema(self.signal)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match (search::match_all_query(f), self.signal) {
                // The scan returns exactly the matching rows.
                (Some(_), Signal::Logs) => TableProviderFilterPushDown::Exact,
                (Some(_), _) => TableProviderFilterPushDown::Unsupported,
                // Used for pruning only; DataFusion still applies the filter.
                (None, _) => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(selection) = &self.selection {
            let rows = selection.splits.iter().map(|(_, rows)| rows.len()).sum();
            let files: Vec<PartitionedFile> = selection
                .splits
                .iter()
                .map(|(split, rows)| {
                    PartitionedFile::new(split.path.clone(), split.byte_size).with_extension(
                        search::access_plan(
                            rows,
                            split.row_count as usize,
                            loupe_storage::row_group_rows(self.signal),
                        ),
                    )
                })
                .collect();
            let mut inputs = Vec::new();
            if !files.is_empty() {
                inputs.push(self.parquet_scan(state, files, rows, projection, None)?);
            }
            if !selection.batches.is_empty() {
                let (schema, batches) =
                    view_schema::table_batches(self.signal, &selection.batches, projection)?;
                inputs.push(MemorySourceConfig::try_new_exec(&[batches], schema, None)?);
            }
            if inputs.is_empty() {
                return Ok(Arc::new(EmptyExec::new(project_schema(
                    &self.schema(),
                    projection,
                )?)));
            }
            return UnionExec::try_new(inputs);
        }
        let snapshot = self.storage.snapshot(self.signal);
        let bounds = TimeBounds::from_filters(filters, self.signal.time_column());
        let match_all: Vec<String> = match self.signal {
            Signal::Logs => filters
                .iter()
                .filter_map(search::match_all_query)
                .map(str::to_string)
                .collect(),
            Signal::Spans | Signal::Metrics => Vec::new(),
        };
        let trace_id = trace_id_literal(filters);
        // A trace's log lines come from the full-text index, which holds
        // trace_id too (the equality itself still applies).
        let log_trace = trace_id
            .clone()
            .filter(|id| self.signal == Signal::Logs && is_trace_id(id));
        let searches = mem_searches(self.signal, &match_all, log_trace.as_deref())?;
        let mut inputs = Vec::new();
        let trace_id = trace_id.filter(|_| self.signal == Signal::Spans);
        let (files, rows) = match self.peers_after {
            Some(_) => (Vec::new(), 0),
            None => {
                self.files(&snapshot, bounds, &searches, trace_id.as_deref())
                    .await?
            }
        };
        if !files.is_empty() {
            inputs.push(self.parquet_scan(state, files, rows, projection, limit)?);
        }
        let batches = match self.peers_after {
            Some(_) => Vec::new(),
            None => mem_rows(&snapshot.batches, bounds, &searches)?,
        };
        if !batches.is_empty() {
            let (schema, batches) = view_schema::table_batches(self.signal, &batches, projection)?;
            let partitions = spread(batches, state.config().target_partitions());
            inputs.push(MemorySourceConfig::try_new_exec(&partitions, schema, None)?);
        }
        // On a coordinating node, the other ingest nodes' unflushed rows:
        // read on each node, after what the listed splits hold of its WAL.
        if let Some(peers) = state.config().get_extension::<IngestPeers>() {
            for peer in peers.0.iter().filter(|p| p.node != self.storage.node_id()) {
                let filter = MemtableFilter {
                    projection: projection.cloned(),
                    bounds,
                    match_all: match_all.clone(),
                    trace_id: log_trace.clone(),
                };
                let after = match &self.peers_after {
                    Some(after) => after.get(&peer.node).copied().unwrap_or(0),
                    None => snapshot.peer_flushed(&peer.node),
                };
                inputs.push(Arc::new(MemtableScanExec::try_new(
                    peer.clone(),
                    self.signal,
                    after,
                    filter,
                )?));
            }
        }
        if inputs.is_empty() {
            let schema = project_schema(&self.schema(), projection)?;
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        UnionExec::try_new(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::{PartitionedFile, SignalTable, pieces, spread};
    use crate::plan_codec::tests::{access_plans, engine, physical_plan};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData;
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion::physical_plan::display::DisplayableExecutionPlan;
    use datafusion::physical_plan::{collect, displayable};
    use loupe_storage::Signal;
    use std::sync::Arc;

    /// The files' row counts reach the planner: a join of a few filtered
    /// spans to logs broadcasts the spans instead of hashing both sides
    /// into partitions. The counts are estimates, never answers: a
    /// search's count is its matching rows, not the files' rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_counts_size_joins_but_never_answer_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, engine) = engine(dir.path()).await;
        let ctx = engine.session().unwrap();
        let plan = physical_plan(
            &ctx,
            "SELECT s.service, count(*) FROM spans s JOIN logs l ON l.trace_id = s.trace_id \
                 WHERE s.name = 'op1' GROUP BY s.service",
        )
        .await;
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains("mode=CollectLeft"), "{shown}");
        for (sql, count) in [
            ("SELECT count(*) FROM logs WHERE match_all('alpha')", "334"),
            ("SELECT count(*) FROM logs", "1000"),
            ("SELECT count(*) FROM spans WHERE name = 'op1'", "267"),
        ] {
            let out = engine.sql(sql).await.unwrap();
            let printed = pretty_format_batches(&out.batches).unwrap().to_string();
            assert!(printed.contains(&format!("| {count} ")), "{sql}: {printed}");
        }
    }

    /// A split's footer and page index are read from the file once, then
    /// from the engine's metadata cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn split_metadata_is_read_once_then_cached() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, engine) = engine(dir.path()).await;
        assert_eq!(engine.metadata_cache_bytes(), 0);
        let hits = || -> usize {
            let runtime = engine.runtime();
            let cache = runtime.cache_manager.get_file_metadata_cache();
            cache.list_entries().values().map(|e| e.hits).sum()
        };
        let sql = "SELECT count(*) FROM spans WHERE name = 'op1'";
        let first = engine.sql(sql).await.unwrap();
        let cached = engine.metadata_cache_bytes();
        assert!(cached > 0, "the scan left nothing in the metadata cache");
        assert_eq!(hits(), 0);
        let again = engine.sql(sql).await.unwrap();
        assert_eq!(engine.metadata_cache_bytes(), cached);
        // Each of the two files was read from the cache, not stored again
        // (storing an entry resets its hits).
        assert!(hits() >= 2, "{} cache hits", hits());
        // The page index is part of each entry, so the filter's page
        // pruning found it there instead of reading it from the file.
        let runtime = engine.runtime();
        let cache = runtime.cache_manager.get_file_metadata_cache();
        for path in cache.list_entries().keys() {
            let entry = cache.get(path).unwrap();
            let parquet = entry
                .file_metadata
                .as_any()
                .downcast_ref::<CachedParquetMetaData>()
                .unwrap()
                .parquet_metadata();
            assert!(parquet.column_index().is_some(), "{path}: no column index");
            assert!(parquet.offset_index().is_some(), "{path}: no offset index");
        }
        assert_eq!(
            pretty_format_batches(&first.batches).unwrap().to_string(),
            pretty_format_batches(&again.batches).unwrap().to_string()
        );
    }

    /// A query's filter reaches the Parquet scan once (DataFusion pushes
    /// the `FilterExec`'s copy into it) and prunes row groups there by
    /// their statistics.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn filters_reach_the_scan_once_and_prune_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, engine) = engine(dir.path()).await;
        let ctx = engine.session().unwrap();
        let plan = physical_plan(
            &ctx,
            "SELECT count(*) AS n FROM spans WHERE name = 'zz-no-such-op'",
        )
        .await;
        let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
        let printed = pretty_format_batches(&batches).unwrap().to_string();
        assert!(printed.contains("| 0 "), "{printed}");
        let shown = DisplayableExecutionPlan::with_metrics(plan.as_ref())
            .indent(true)
            .to_string();
        let scan = shown
            .lines()
            .find(|l| l.contains("DataSourceExec") && l.contains(".parquet"))
            .unwrap_or_else(|| panic!("no Parquet scan in {shown}"));
        assert_eq!(scan.matches("name@").count(), 1, "{scan}");
        assert!(
            scan.contains("row_groups_pruned_statistics=2 total → 0 matched"),
            "{scan}"
        );
    }

    /// A split cut into pieces smaller than its row groups is still read
    /// whole and each row once: a row group is read by the one piece it
    /// starts in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_split_read_in_pieces_gives_each_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, engine) = engine(dir.path()).await;
        let ctx = engine.session().unwrap();
        let store_url = ObjectStoreUrl::parse(loupe_storage::STORE_URL).unwrap();
        let mut table = SignalTable::new(storage, Signal::Spans, store_url);
        table.piece_bytes = 512;
        ctx.register_table("spans_in_pieces", Arc::new(table))
            .unwrap();
        let sql = |table: &str| {
            format!(
                "SELECT count(*) AS n, count(DISTINCT span_id) AS ids, \
                 sum(CAST(start_time AS BIGINT) % 1000003) AS t, max(name) AS top \
                 FROM {table} WHERE kind IS NOT NULL"
            )
        };
        let answer = |sql: String| {
            let ctx = &ctx;
            async move {
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                pretty_format_batches(&batches).unwrap().to_string()
            }
        };
        let whole = answer(sql("spans")).await;
        assert!(whole.contains("| 800 "), "{whole}");
        assert_eq!(answer(sql("spans_in_pieces")).await, whole);

        let ranges = |table: &str| {
            let ctx = &ctx;
            let sql = sql(table);
            async move { access_plans(&physical_plan(ctx, &sql).await).len() }
        };
        // Two small files: whole (DataFusion may still cut them in two).
        assert!(ranges("spans").await <= 4);
        assert!(ranges("spans_in_pieces").await > 8);
    }

    #[test]
    fn pieces_cover_a_file_once_in_order() {
        let file = PartitionedFile::new("spans/a.parquet", 10_000);
        let cut = pieces(file.clone(), 3_000);
        let ranges: Vec<(u64, u64)> = cut.iter().map(|f| f.range()).collect();
        assert_eq!(
            ranges,
            vec![(0, 2_500), (2_500, 5_000), (5_000, 7_500), (7_500, 10_000)]
        );
        let whole = pieces(file, 10_000);
        assert_eq!(whole.len(), 1);
        assert!(whole[0].range.is_none());
        let odd = pieces(PartitionedFile::new("b", 10_001), 5_000);
        let ranges: Vec<(u64, u64)> = odd.iter().map(|f| f.range()).collect();
        assert_eq!(ranges, vec![(0, 3_334), (3_334, 6_668), (6_668, 10_001)]);
    }

    #[test]
    fn spread_deals_round_robin_without_empty_groups() {
        assert_eq!(spread(vec![1, 2, 3], 2), vec![vec![1, 3], vec![2]]);
        assert_eq!(spread(vec![1], 4), vec![vec![1]]);
        assert!(spread(Vec::<i32>::new(), 4).is_empty());
    }
}
