//! Other ingest nodes' unflushed rows in a distributed query (issue #16):
//! a scan task routed to the node that holds the memtable, instead of
//! batches shipped inside the plan.
//!
//! How a coordinating node sees each row exactly once: its split list
//! comes from the shared catalog together with every node's flushed WAL
//! position, read in one snapshot (a flush commits both at once), so the
//! listed splits hold exactly node X's rows up to `after_seq`. For each
//! other live ingest node X, the coordinator's scan adds a
//! [`MemtableScanExec`] `{ node: X, after_seq, … }`; [`route_memtable_tasks`]
//! sends its stage to X's worker, where it returns X's rows with a
//! sequence number above `after_seq` — still in the memtable, or flushed
//! since the coordinator listed the splits and kept for
//! [`loupe_storage::FLUSHED_GRACE`] for this reason. If X has let some of
//! them go (a split list older than the grace, or than X's process), the
//! task fails with [`ROWS_GONE`] in its message and the engine reloads the
//! split list and plans once more.
//!
//! Each scan sits under a `CoalescePartitionsExec` (see
//! [`isolate_memtable_scans`]): the distributed planner puts a stage
//! boundary under every such node, so the scan is alone in a stage the
//! router can send to X without touching how the other stages are spread.
//! The planner drops a boundary between two one-task stages, so the scan
//! asks for two tasks ([`memtable_task_count`]), both sent to X; only the
//! first returns the rows.
//!
//! A node that is down: `datafusion-distributed` does not report a stage
//! it could not send, so the query would wait for it until its time
//! limit. Before each distributed query the engine checks (at most once a
//! second, [`crate::distributed::Cluster::check_peers`]) that each other
//! ingest node's worker accepts a TCP connection; the scans leave out the
//! ones that do not, and the answer is marked partial
//! (`QueryOutput::partial`, `x-loupe-partial: true` on the SQL API) with a
//! warning in the log. A node that dies after the check fails its stage
//! or, if its address still accepts connections without answering, holds
//! the query until its time limit; a failed distributed query runs again
//! on this node alone (published splits and its own memtable).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, exec_err, internal_err, project_schema};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedTaskContext,
    NetworkBoundaryExt, RouteTasksEvent, RouteTasksEventResponse,
};
use loupe_storage::{Signal, Storage, StorageError};
use url::Url;

use crate::time_bounds::TimeBounds;

/// In the message of a memtable task whose rows left memory: the query is
/// planned again on a fresh split list.
pub const ROWS_GONE: &str = "unflushed rows gone";

/// The storage a worker reads its own memtable from, in its sessions'
/// configuration.
pub struct NodeStorage(pub Arc<Storage>);

/// Another node that holds unflushed rows: its id (the catalog's) and its
/// worker's URL. The coordinator's sessions carry the live ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestPeer {
    pub node: String,
    pub worker: Url,
}

/// The live ingest nodes other than this one, in a coordinating session's
/// configuration (read by the tables' scans).
#[derive(Debug, Clone, Default)]
pub struct IngestPeers(pub Vec<IngestPeer>);

/// What rows a memtable scan returns, besides whose and after where.
#[derive(Debug, Clone, PartialEq)]
pub struct MemtableFilter {
    /// Columns of the signal's schema, as the table scan got them.
    pub projection: Option<Vec<usize>>,
    /// Batches wholly outside this time window are skipped (the query's
    /// own filters still apply above).
    pub bounds: TimeBounds,
    /// `match_all` searches, applied exactly (the table reports them as
    /// exact filters).
    pub match_all: Vec<String>,
    /// A trace id a log lookup narrows to through the batch's index.
    pub trace_id: Option<String>,
}

/// Node `node`'s rows of `signal` with a WAL sequence number above
/// `after_seq`, read on that node (see the module documentation).
#[derive(Debug)]
pub struct MemtableScanExec {
    pub(crate) node: String,
    pub(crate) worker: Url,
    pub(crate) signal: Signal,
    pub(crate) after_seq: u64,
    pub(crate) filter: MemtableFilter,
    properties: Arc<PlanProperties>,
}

impl MemtableScanExec {
    pub fn try_new(
        peer: IngestPeer,
        signal: Signal,
        after_seq: u64,
        filter: MemtableFilter,
    ) -> Result<Self> {
        let schema: SchemaRef = project_schema(
            &crate::view_schema::table_schema(signal),
            filter.projection.as_ref(),
        )?;
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(MemtableScanExec {
            node: peer.node,
            worker: peer.worker,
            signal,
            after_seq,
            filter,
            properties: Arc::new(properties),
        })
    }

    /// The rows, on the node that holds them.
    fn rows(&self, storage: &Storage) -> Result<Vec<RecordBatch>> {
        if storage.node_id() != self.node {
            return exec_err!(
                "the unflushed rows of node {} were sent to node {}",
                self.node,
                storage.node_id()
            );
        }
        let batches = storage
            .unflushed_after(self.signal, self.after_seq)
            .map_err(|e| match e {
                StorageError::RowsGone { .. } => {
                    DataFusionError::Execution(format!("{ROWS_GONE}: {e}"))
                }
                e => DataFusionError::External(Box::new(e)),
            })?;
        let searches = crate::table::mem_searches(
            self.signal,
            &self.filter.match_all,
            self.filter.trace_id.as_deref(),
        )?;
        let rows = crate::table::mem_rows(&batches, self.filter.bounds, &searches)?;
        let (_, rows) =
            crate::view_schema::table_batches(self.signal, &rows, self.filter.projection.as_ref())?;
        Ok(rows)
    }
}

impl DisplayAs for MemtableScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MemtableScanExec: node={} signal={} after_seq={}",
            self.node, self.signal, self.after_seq
        )
    }
}

impl ExecutionPlan for MemtableScanExec {
    fn name(&self) -> &'static str {
        "MemtableScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("MemtableScanExec has no children");
        }
        Ok(self)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return exec_err!("MemtableScanExec has one partition, not {partition}");
        }
        let schema = self.properties.eq_properties.schema().clone();
        // Its stage has two tasks (see the module documentation): one reads.
        if DistributedTaskContext::from_ctx(&context).task_index != 0 {
            return Ok(Box::pin(MemoryStream::try_new(Vec::new(), schema, None)?));
        }
        let Some(storage) = context.session_config().get_extension::<NodeStorage>() else {
            return exec_err!(
                "node {}'s unflushed rows were sent to a process without storage",
                self.node
            );
        };
        let rows = self.rows(&storage.0)?;
        Ok(Box::pin(MemoryStream::try_new(rows, schema, None)?))
    }
}

/// Puts every [`MemtableScanExec`] of `plan` under a
/// `CoalescePartitionsExec`, which the distributed planner cuts a stage
/// under: the scan gets a stage of its own, of one task, for
/// [`route_memtable_tasks`] to send to its node. Runs after DataFusion's
/// optimizer, which would drop the node as useless.
pub fn isolate_memtable_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.downcast_ref::<MemtableScanExec>().is_none() {
            return Ok(Transformed::no(node));
        }
        Ok(Transformed::yes(
            Arc::new(CoalescePartitionsExec::new(node)) as Arc<dyn ExecutionPlan>,
        ))
    })
    .map(|t| t.data)
}

/// Task-count handler: a memtable scan's stage has two tasks, the fewest
/// the distributed planner keeps a stage boundary for (it merges a
/// one-task stage into a one-task consumer, which would leave the scan in
/// a stage the router cannot send to its node).
pub fn memtable_task_count(
    ev: DesiredTaskCountEvent,
) -> Option<Result<DesiredTaskCountEventResponse>> {
    ev.plan
        .downcast_ref::<MemtableScanExec>()
        .map(|_| Ok(DesiredTaskCountEventResponse::maximum(2)))
}

/// Routing handler: a stage whose own plan (not the stages below it) reads
/// a memtable runs on that memtable's node.
pub fn route_memtable_tasks(ev: RouteTasksEvent) -> Option<Result<RouteTasksEventResponse>> {
    let mut worker = None;
    let found = ev.plan.apply(|node| {
        if node.is_network_boundary() {
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Some(scan) = node.downcast_ref::<MemtableScanExec>() {
            worker = Some(scan.worker.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Err(e) = found {
        return Some(Err(e));
    }
    let worker = worker?;
    Some(Ok(RouteTasksEventResponse::new(vec![
        worker;
        ev.task_count
    ])))
}
