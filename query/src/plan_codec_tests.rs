//! Tests of the plan codec: plans survive the trip to a worker and back,
//! with their scans' row selections and memtable batches.

use super::*;
use crate::memtable_scan::NodeStorage;
use crate::{QueryConfig, QueryEngine};
use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, MapBuilder, StringArray, StringBuilder,
    TimestampNanosecondArray, UInt32Array, new_null_array,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;
use loupe_base::self_metrics::Registry;
use loupe_storage::{Storage, StorageConfig};

/// A batch of `signal` with `n` rows: `given` supplies columns by name,
/// the others take their empty value.
fn batch(signal: Signal, n: usize, given: impl Fn(&str) -> Option<ArrayRef>) -> RecordBatch {
    let schema = signal.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            if let Some(column) = given(f.name()) {
                return column;
            }
            match f.data_type() {
                DataType::Map(..) => {
                    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                    for _ in 0..n {
                        b.append(true).unwrap();
                    }
                    Arc::new(b.finish())
                }
                t if f.is_nullable() => new_null_array(t, n),
                DataType::Utf8 => Arc::new(StringArray::from(vec![""; n])),
                DataType::Int32 => Arc::new(Int32Array::from(vec![0; n])),
                DataType::Int64 => Arc::new(Int64Array::from(vec![0; n])),
                DataType::UInt32 => Arc::new(UInt32Array::from(vec![0; n])),
                DataType::Timestamp(..) => times(0, n),
                t => panic!("no test value for {}: {t}", f.name()),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

const HOUR: i64 = 3_600_000_000_000;

fn times(first: i64, n: usize) -> ArrayRef {
    Arc::new(
        TimestampNanosecondArray::from_iter_values((0..n as i64).map(|i| first + i))
            .with_timezone("UTC"),
    )
}

fn texts(values: impl Iterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// The trace of row `i`: seven traces, whose first 32 bits (the trace
/// index's key) differ.
pub(crate) fn trace(i: usize) -> String {
    let k = i % 7;
    format!("{:08x}{:024x}", 0x1000_0000 + k * 0x0101_0101, k)
}

/// Log lines `first..first + n`: every third says "alpha", the others
/// "beta"; two services; trace ids cycle through seven traces.
pub(crate) fn logs(first: usize, n: usize, hour: i64) -> RecordBatch {
    batch(Signal::Logs, n, |name| match name {
        "time" | "observed_time" => Some(times(hour * HOUR, n)),
        "service" => Some(texts(
            (first..first + n).map(|i| ["api", "db"][i % 2].to_string()),
        )),
        "body" => Some(texts((first..first + n).map(|i| {
            let word = if i % 3 == 0 { "alpha" } else { "beta" };
            format!("{word} line {i}")
        }))),
        "trace_id" => Some(texts((first..first + n).map(trace))),
        _ => None,
    })
}

/// Spans of seven traces, interleaved.
fn spans(n: usize, hour: i64) -> RecordBatch {
    batch(Signal::Spans, n, |name| match name {
        "trace_id" => Some(texts((0..n).map(trace))),
        "span_id" => Some(texts((0..n).map(|i| format!("{i:016x}")))),
        "service" => Some(texts((0..n).map(|i| ["api", "db"][i % 2].to_string()))),
        "name" => Some(texts((0..n).map(|i| format!("op{}", i % 3)))),
        "start_time" | "end_time" => Some(times(hour * HOUR, n)),
        _ => None,
    })
}

/// Spans `first..first + n` of the hour, whose attributes map
/// `http.route` to `/r{i % 3}` and `k{i % 2}` to `v{i}`.
pub(crate) fn spans_with_routes(first: usize, n: usize, hour: i64) -> RecordBatch {
    let mut maps = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for i in first..first + n {
        maps.keys().append_value("http.route");
        maps.values().append_value(format!("/r{}", i % 3));
        maps.keys().append_value(format!("k{}", i % 2));
        maps.values().append_value(format!("v{i}"));
        maps.append(true).unwrap();
    }
    let attributes: ArrayRef = Arc::new(maps.finish());
    batch(Signal::Spans, n, |name| match name {
        "trace_id" => Some(texts((first..first + n).map(trace))),
        "span_id" => Some(texts((first..first + n).map(|i| format!("{i:016x}")))),
        "service" => Some(texts((0..n).map(|i| ["api", "db"][i % 2].to_string()))),
        "start_time" | "end_time" => Some(times(hour * HOUR, n)),
        "attributes" => Some(attributes.clone()),
        _ => None,
    })
}

/// `ctx`'s session without the logical optimizer rule `rule`, to compare
/// answers with and without it.
pub(crate) fn without_rule(ctx: &SessionContext, rule: &str) -> SessionContext {
    let state = ctx.state();
    let rules: Vec<_> = state
        .optimizers()
        .iter()
        .filter(|r| r.name() != rule)
        .cloned()
        .collect();
    assert_eq!(rules.len() + 1, state.optimizers().len(), "{rule}");
    SessionContext::new_with_state(
        datafusion::execution::SessionStateBuilder::new_from_existing(state)
            .with_optimizer_rules(rules)
            .build(),
    )
}

/// The optimized logical plan of `sql`, as text.
pub(crate) async fn optimized(ctx: &SessionContext, sql: &str) -> String {
    ctx.sql(sql)
        .await
        .unwrap()
        .into_optimized_plan()
        .unwrap()
        .display_indent()
        .to_string()
}

/// The answer to `sql`, as a printed table.
pub(crate) async fn answer(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// A query engine over real splits: logs and spans in two files each
/// (two hours), nothing left in the memtables.
pub(crate) async fn engine(dir: &std::path::Path) -> (Arc<Storage>, QueryEngine) {
    let registry = Registry::default();
    let storage = Storage::open(StorageConfig::new(dir), &registry)
        .await
        .unwrap();
    let hour = 480_000;
    storage
        .append(Signal::Logs, logs(0, 600, hour))
        .await
        .unwrap();
    storage
        .append(Signal::Logs, logs(600, 400, hour + 1))
        .await
        .unwrap();
    storage
        .append(Signal::Spans, spans(500, hour))
        .await
        .unwrap();
    storage
        .append(Signal::Spans, spans(300, hour + 2))
        .await
        .unwrap();
    storage.flush(Signal::Logs).await.unwrap();
    storage.flush(Signal::Spans).await.unwrap();
    assert!(storage.snapshot(Signal::Logs).batches.is_empty());
    assert_eq!(storage.snapshot(Signal::Logs).splits.len(), 2);
    assert_eq!(storage.snapshot(Signal::Spans).splits.len(), 2);
    let engine = QueryEngine::new(storage.clone(), QueryConfig::default(), &registry).unwrap();
    (storage, engine)
}

/// Each file (or piece of one) scanned, with its access plan if it has
/// one.
pub(crate) fn access_plans(
    plan: &Arc<dyn ExecutionPlan>,
) -> Vec<(String, Option<ParquetAccessPlan>)> {
    let mut out = Vec::new();
    plan.apply(|node| {
        if let Some(config) = scan_config(node.as_ref()) {
            for file in config.file_groups.iter().flat_map(|g| g.iter()) {
                out.push((
                    file.object_meta.location.to_string(),
                    file.extension::<ParquetAccessPlan>().cloned(),
                ));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    out
}

fn selects_some_rows_only(plan: &ParquetAccessPlan) -> bool {
    plan.inner()
        .iter()
        .any(|g| matches!(g, RowGroupAccess::Selection(s) if s.skipped_row_count() > 0))
}

/// `sql` planned on `ctx`, ready to run or to inspect.
pub(crate) async fn physical_plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap()
}

/// Plans `sql`, sends it through bytes to a fresh session (another
/// node's stand-in), runs both; returns both results, printed, and the
/// access plans of the original.
pub(crate) async fn round_trip(
    engine: &QueryEngine,
    sql: &str,
) -> (String, String, Vec<(String, Option<ParquetAccessPlan>)>) {
    let ctx = engine.session().unwrap();
    let plan = physical_plan(&ctx, sql).await;
    let bytes = plan_to_bytes(plan.clone()).unwrap();
    let remote = engine.session().unwrap();
    let decoded = plan_from_bytes(&bytes, &remote.task_ctx()).unwrap();
    let sent = access_plans(&plan);
    assert_eq!(sent, access_plans(&decoded), "{sql}");
    // Every scan, selected or not, keeps the adapter that reads files
    // written before the `instance` column.
    decoded
        .apply(|node| {
            if let Some(config) = scan_config(node.as_ref()) {
                assert!(config.expr_adapter_factory.is_some(), "{sql}");
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
    let here = collect(plan, ctx.task_ctx()).await.unwrap();
    let there = collect(decoded, remote.task_ctx()).await.unwrap();
    let print = |b: &[RecordBatch]| pretty_format_batches(b).unwrap().to_string();
    (print(&here), print(&there), sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_keep_their_row_selection_through_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, engine) = engine(dir.path()).await;

    // A search: the scan reads only the matching rows and DataFusion
    // does not filter again, so a lost selection returns every row.
    let (here, there, plans) = round_trip(
        &engine,
        "SELECT body FROM logs WHERE match_all('alpha') ORDER BY body",
    )
    .await;
    assert_eq!(here, there);
    assert_eq!(here.matches("alpha").count(), 334, "{here}");
    assert!(!here.contains("beta"));
    assert_eq!(plans.len(), 2);
    assert!(
        plans
            .iter()
            .all(|(_, p)| p.as_ref().is_some_and(selects_some_rows_only)),
        "{plans:?}"
    );

    // A trace lookup on spans: the trace index picks the rows.
    let id = trace(3);
    let (here, there, plans) = round_trip(
        &engine,
        &format!("SELECT span_id FROM spans WHERE trace_id = '{id}' ORDER BY span_id"),
    )
    .await;
    assert_eq!(here, there);
    assert_eq!(here.matches("| 0").count(), 500 / 7 + 300 / 7 + 1, "{here}");
    assert!(
        plans
            .iter()
            .any(|(_, p)| p.as_ref().is_some_and(selects_some_rows_only)),
        "{plans:?}"
    );

    // A trace's log lines come through the full-text index.
    let (here, there, plans) = round_trip(
        &engine,
        &format!("SELECT body FROM logs WHERE trace_id = '{id}' ORDER BY body"),
    )
    .await;
    assert_eq!(here, there);
    assert_eq!(here.matches(" line ").count(), 1000 / 7 + 1, "{here}");
    assert!(plans.iter().all(|(_, p)| p.is_some()), "{plans:?}");

    // Plain SQL: no selection, the whole plan still travels.
    let (here, there, plans) = round_trip(
        &engine,
        "SELECT service, count(*) AS n, min(body) AS first FROM logs \
         GROUP BY service ORDER BY service",
    )
    .await;
    assert_eq!(here, there);
    assert!(here.contains("| api     | 500 |"), "{here}");
    assert!(plans.iter().all(|(_, p)| p.is_none()), "{plans:?}");

    storage.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_codec_does_not_know_fails_to_encode() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, engine) = engine(dir.path()).await;
    let ctx = engine.session().unwrap();
    let plan = physical_plan(&ctx, "SELECT body FROM logs WHERE match_all('alpha')").await;
    let limit = std::time::Duration::from_secs(5);
    let timed =
        crate::deadline::with_deadline(plan, std::time::Instant::now() + limit, limit).unwrap();
    let err = plan_to_bytes(timed).unwrap_err();
    assert!(err.to_string().contains("DeadlineExec"), "{err}");
    storage.shutdown().await.unwrap();
}

/// Another node's memtable scan keeps whose rows, after where, which
/// columns, times and searches through bytes, and decodes to a scan
/// that reads them on that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memtable_scan_survives_its_wire_form() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, engine) = engine(dir.path()).await;
    storage
        .append(Signal::Logs, logs(1000, 90, 480_002))
        .await
        .unwrap();
    let peer = IngestPeer {
        node: storage.node_id().to_string(),
        worker: url::Url::parse("http://127.0.0.1:7070").unwrap(),
    };
    let filter = MemtableFilter {
        projection: Some(vec![3, 0]),
        bounds: TimeBounds {
            start: 480_002 * HOUR,
            end: i64::MAX,
        },
        match_all: vec!["alpha".into()],
        trace_id: None,
    };
    let columns = |f: &MemtableFilter| {
        let schema = Signal::Logs.schema();
        f.projection
            .iter()
            .flatten()
            .map(|&c| schema.field(c).name().clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(columns(&filter).len(), 2);
    let after = storage.flushed_through(Signal::Logs);
    let scan = Arc::new(
        MemtableScanExec::try_new(peer.clone(), Signal::Logs, after, filter.clone()).unwrap(),
    );
    let bytes = plan_to_bytes(scan.clone()).unwrap();
    let ctx = engine.session().unwrap();
    let decoded = plan_from_bytes(&bytes, &ctx.task_ctx()).unwrap();
    let back = decoded.downcast_ref::<MemtableScanExec>().unwrap();
    assert_eq!(
        (
            &back.node,
            &back.worker,
            back.signal,
            back.after_seq,
            &back.filter
        ),
        (&peer.node, &peer.worker, Signal::Logs, after, &filter)
    );
    assert_eq!(decoded.schema(), scan.schema());

    // Executed where the storage is: the 30 "alpha" lines of the 90.
    let mut config = ctx.copied_config();
    config.set_extension(Arc::new(NodeStorage(storage.clone())));
    let task = TaskContext::default().with_session_config(config);
    let rows = collect(decoded.clone(), Arc::new(task)).await.unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 30);
    assert_eq!(rows[0].num_columns(), 2);
    // Without the storage the scan fails instead of returning nothing.
    assert!(collect(decoded, ctx.task_ctx()).await.is_err());

    // A projection past the schema is refused on decoding.
    let mut wire = encode_memtable_scan(&scan);
    wire.projection.push(999);
    assert!(decode_memtable_scan(wire).is_err());
    storage.shutdown().await.unwrap();
}

#[test]
fn row_group_accesses_survive_their_wire_form() {
    let accesses = [
        RowGroupAccess::Skip,
        RowGroupAccess::Scan,
        RowGroupAccess::Selection(RowSelection::from_consecutive_ranges(
            [1..3, 7..8, 100..164].into_iter(),
            1000,
        )),
    ];
    for access in accesses {
        assert_eq!(decode_access(encode_access(&access)).unwrap(), access);
    }
    let overflowing = RowGroup {
        access: Access::Select as i32,
        runs: vec![u64::MAX - 1, u64::MAX - 1, u64::MAX - 1],
    };
    assert!(decode_access(overflowing).is_err());
    let unknown = RowGroup {
        access: 9,
        runs: Vec::new(),
    };
    assert!(decode_access(unknown).is_err());
}

/// A comparison the short-text rule rewrote (`crate::short_text_eq`)
/// reaches the other node as DataFusion's, and answers there as here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_text_comparisons_travel_as_datafusions() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, engine) = engine(dir.path()).await;
    let sql = "SELECT service, count(*) AS n, \
               sum(CASE WHEN service IN ('api', 'web') THEN 1 ELSE 0 END) AS a \
               FROM logs WHERE service <> 'db' GROUP BY service";
    let ctx = engine.session().unwrap();
    let plan = physical_plan(&ctx, sql).await;
    let remote = engine.session().unwrap();
    let decoded =
        plan_from_bytes(&plan_to_bytes(plan.clone()).unwrap(), &remote.task_ctx()).unwrap();
    let shown = |plan: &Arc<dyn ExecutionPlan>| {
        datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string()
    };
    let (sent, arrived) = (shown(&plan), shown(&decoded));
    assert!(
        sent.contains("FilterExec: service@0 != db [views]\n"),
        "{sent}"
    );
    assert!(
        arrived.contains("FilterExec: service@0 != db\n"),
        "{arrived}"
    );

    let print = |b: &[RecordBatch]| pretty_format_batches(b).unwrap().to_string();
    let here = print(&collect(plan, ctx.task_ctx()).await.unwrap());
    let there = print(&collect(decoded, remote.task_ctx()).await.unwrap());
    assert_eq!(here, there);
    assert!(here.contains("| api     | 500 | 500 |"), "{here}");
    storage.shutdown().await.unwrap();
}
