//! Physical plans as bytes that keep the rows Loupe's scans select: the
//! first brick of distributed query (issue #16).
//!
//! A `match_all` search or a `trace_id = '…'` lookup reads only the rows an
//! index named, through a [`ParquetAccessPlan`] attached to each
//! `PartitionedFile` of the Parquet scan. `datafusion-proto` 55 encodes a
//! `DataSourceExec` itself (files, projection, predicate, limit) but drops
//! `PartitionedFile::extensions`, so a plan decoded on another node would
//! silently read every row of every file.
//!
//! Design: [`wrap_selected_scans`] puts every Parquet scan under a
//! transport-only node, [`SelectedScanExec`]. That node
//! is unknown to `datafusion-proto`, so [`LoupeCodec`] encodes it: the
//! access plan of each file (row groups skipped, scanned, or read through a
//! row selection's runs), keyed by the file's place in the scan and its
//! path, while the scan below is still encoded by `datafusion-proto`. On
//! decoding, the codec puts the access plans back on the decoded scan's
//! files, and the expression adapter every Loupe scan has
//! ([`crate::instance_column`], which `datafusion-proto` drops too) back on
//! the scan, and returns the scan itself, so the decoded plan has the same
//! shape as the one encoded. This is simpler than encoding
//! `DataSourceExec` by hand (everything but the selection stays
//! DataFusion's), and unlike a permanent Loupe scan node it leaves
//! single-node plans and DataFusion's optimizer rules (projection, limit
//! and dynamic filter pushdown into `DataSourceExec`) untouched.
//!
//! A file extension the codec does not know fails the encoding instead of
//! being dropped. The wrapping is what makes the selection travel: a plan
//! encoded with `datafusion-proto` directly still loses it, so whatever
//! sends plans (a distributed engine's stage encoder) must encode through
//! [`plan_to_bytes`] or run [`wrap_selected_scans`] first. Plans are
//! encoded before the per-operator deadline wraps them (`DeadlineExec`
//! fails to encode): a receiving node sets its own time limit.
//!
//! Unflushed (memtable) rows: the coordinator's own are a
//! `MemorySourceConfig` and travel as batches inside the plan; another
//! ingest node's are a [`MemtableScanExec`], which this codec encodes by
//! what it reads (node, signal, the WAL position after which to read,
//! projection, time bounds, searches) and which runs on that node (see
//! [`crate::memtable_scan`]).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, internal_err, plan_err};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, RowGroupAccess};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use loupe_storage::Signal;
use prost::Message;

use crate::instance_column::InstanceFromResources;
use crate::memtable_scan::{IngestPeer, MemtableFilter, MemtableScanExec};
use crate::time_bounds::TimeBounds;

/// Encodes `plan` with the row selections of its scans (see the module
/// documentation). `plan` must not be wrapped in deadlines yet.
pub fn plan_to_bytes(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
    let plan = wrap_selected_scans(plan)?;
    Ok(physical_plan_to_bytes_with_extension_codec(plan, &LoupeCodec)?.to_vec())
}

/// Decodes a plan made by [`plan_to_bytes`]; `ctx` supplies the functions
/// and the object store the plan refers to (a Loupe session's task context).
pub fn plan_from_bytes(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    physical_plan_from_bytes_with_extension_codec(bytes, ctx, &LoupeCodec)
}

/// Puts every file scan under a [`SelectedScanExec`], so [`LoupeCodec`]
/// gets to encode what `datafusion-proto` would drop: its files' access
/// plans, and the scan's expression adapter (every scan's, for files
/// written before the `instance` column; see [`crate::instance_column`]).
pub fn wrap_selected_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if scan_config(node.as_ref()).is_none() {
            return Ok(Transformed::no(node));
        }
        Ok(Transformed::yes(Arc::new(SelectedScanExec {
            properties: node.properties().clone(),
            input: node,
        }) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

fn scan_config(plan: &dyn ExecutionPlan) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// A file scan whose files carry access plans, on its way to another node.
/// It only exists between [`wrap_selected_scans`] and the decoder, which
/// returns the scan itself; executing it executes the scan.
#[derive(Debug)]
pub struct SelectedScanExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for SelectedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SelectedScanExec")
    }
}

impl ExecutionPlan for SelectedScanExec {
    fn name(&self) -> &'static str {
        "SelectedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("SelectedScanExec has exactly one child");
        }
        let input = children.swap_remove(0);
        let properties = match options.children_properties {
            ChildrenPropertiesMode::Keep => self.properties.clone(),
            ChildrenPropertiesMode::Recompute => input.properties().clone(),
        };
        Ok(Arc::new(SelectedScanExec { input, properties }))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

/// The physical extension codec for Loupe's plan nodes: the row
/// selections of [`SelectedScanExec`], and [`MemtableScanExec`] (another
/// node's unflushed rows, read there). Everything else is left to
/// `datafusion-proto`; a node neither knows fails loudly.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoupeCodec;

impl PhysicalExtensionCodec for LoupeCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = LoupeNode::decode(buf)
            .map_err(|e| DataFusionError::Plan(format!("undecodable Loupe plan node: {e}")))?;
        match node.kind {
            Some(NodeKind::SelectedScan(scan)) => {
                let [input] = inputs else {
                    return plan_err!("a selected scan has one input, got {}", inputs.len());
                };
                restore_selections(input.as_ref(), scan)
            }
            Some(NodeKind::MemtableScan(scan)) => {
                if !inputs.is_empty() {
                    return plan_err!("a memtable scan has no inputs, got {}", inputs.len());
                }
                decode_memtable_scan(scan)
            }
            None => plan_err!("a Loupe plan node of a kind this version does not know"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(scan) = node.downcast_ref::<MemtableScanExec>() {
            let node = LoupeNode {
                kind: Some(NodeKind::MemtableScan(encode_memtable_scan(scan))),
            };
            return node.encode(buf).map_err(|e| {
                DataFusionError::Internal(format!("encoding a Loupe plan node: {e}"))
            });
        }
        let Some(selected) = node.downcast_ref::<SelectedScanExec>() else {
            return plan_err!("{} cannot be sent to another node", node.name());
        };
        let Some(config) = scan_config(selected.input.as_ref()) else {
            return internal_err!("SelectedScanExec wraps a file scan");
        };
        let mut files = Vec::new();
        for (group, files_of_group) in config.file_groups.iter().enumerate() {
            for (index, file) in files_of_group.iter().enumerate() {
                if file.extensions.is_empty() {
                    continue;
                }
                let Some(plan) = file.extension::<ParquetAccessPlan>() else {
                    return plan_err!(
                        "{} carries a file extension that cannot be sent",
                        file.object_meta.location
                    );
                };
                if file.extensions.len() != 1 {
                    return plan_err!(
                        "{} carries file extensions that cannot be sent",
                        file.object_meta.location
                    );
                }
                files.push(FileSelection {
                    group: group as u64,
                    index: index as u64,
                    path: file.object_meta.location.to_string(),
                    row_groups: plan.inner().iter().map(encode_access).collect(),
                });
            }
        }
        let node = LoupeNode {
            kind: Some(NodeKind::SelectedScan(SelectedScan { files })),
        };
        node.encode(buf)
            .map_err(|e| DataFusionError::Internal(format!("encoding a Loupe plan node: {e}")))
    }
}

/// The decoded scan with each file's access plan put back.
fn restore_selections(
    input: &dyn ExecutionPlan,
    scan: SelectedScan,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(config) = scan_config(input) else {
        return plan_err!("a selected scan's input is not a file scan");
    };
    let mut config = config.clone();
    for selection in scan.files {
        let file = usize::try_from(selection.group)
            .ok()
            .and_then(|g| config.file_groups.get_mut(g))
            .and_then(|g| {
                let i = usize::try_from(selection.index).ok()?;
                (i < g.len()).then(|| &mut g[i])
            });
        let Some(file) = file else {
            return plan_err!(
                "a row selection names file {} of group {}, which the scan lacks",
                selection.index,
                selection.group
            );
        };
        if file.object_meta.location.as_ref() != selection.path {
            return plan_err!(
                "a row selection for {} arrived for {}",
                selection.path,
                file.object_meta.location
            );
        }
        let row_groups = selection
            .row_groups
            .into_iter()
            .map(decode_access)
            .collect::<Result<Vec<_>>>()?;
        file.extensions.insert(ParquetAccessPlan::new(row_groups));
    }
    config.expr_adapter_factory = Some(Arc::new(InstanceFromResources));
    Ok(DataSourceExec::from_data_source(config))
}

fn encode_memtable_scan(scan: &MemtableScanExec) -> MemtableScan {
    MemtableScan {
        node: scan.node.clone(),
        worker: scan.worker.to_string(),
        signal: scan.signal.name().to_string(),
        after_seq: scan.after_seq,
        projected: scan.filter.projection.is_some(),
        projection: scan
            .filter
            .projection
            .iter()
            .flatten()
            .map(|&c| c as u64)
            .collect(),
        start: scan.filter.bounds.start,
        end: scan.filter.bounds.end,
        match_all: scan.filter.match_all.clone(),
        trace_id: scan.filter.trace_id.clone(),
    }
}

fn decode_memtable_scan(scan: MemtableScan) -> Result<Arc<dyn ExecutionPlan>> {
    let signal = scan
        .signal
        .parse::<Signal>()
        .map_err(|e| DataFusionError::Plan(format!("a memtable scan: {e}")))?;
    let worker = url::Url::parse(&scan.worker)
        .map_err(|e| DataFusionError::Plan(format!("a memtable scan's worker: {e}")))?;
    let columns = signal.schema().fields().len();
    let projection = if scan.projected {
        let mut projection = Vec::with_capacity(scan.projection.len());
        for c in scan.projection {
            match usize::try_from(c) {
                Ok(c) if c < columns => projection.push(c),
                _ => return plan_err!("a memtable scan projects column {c} of {columns}"),
            }
        }
        Some(projection)
    } else {
        None
    };
    let filter = MemtableFilter {
        projection,
        bounds: TimeBounds {
            start: scan.start,
            end: scan.end,
        },
        match_all: scan.match_all,
        trace_id: scan.trace_id,
    };
    let peer = IngestPeer {
        node: scan.node,
        worker,
    };
    Ok(Arc::new(MemtableScanExec::try_new(
        peer,
        signal,
        scan.after_seq,
        filter,
    )?))
}

fn encode_access(access: &RowGroupAccess) -> RowGroup {
    match access {
        RowGroupAccess::Skip => RowGroup {
            access: Access::Skip as i32,
            runs: Vec::new(),
        },
        RowGroupAccess::Scan => RowGroup {
            access: Access::Scan as i32,
            runs: Vec::new(),
        },
        RowGroupAccess::Selection(selection) => RowGroup {
            access: Access::Select as i32,
            runs: selection
                .iter()
                .map(|s| ((s.row_count as u64) << 1) | u64::from(s.skip))
                .collect(),
        },
    }
}

fn decode_access(group: RowGroup) -> Result<RowGroupAccess> {
    match Access::try_from(group.access) {
        Ok(Access::Skip) => Ok(RowGroupAccess::Skip),
        Ok(Access::Scan) => Ok(RowGroupAccess::Scan),
        Ok(Access::Select) => {
            // Checked here: RowSelection panics when its runs overflow.
            let mut total = 0usize;
            let mut selectors = Vec::with_capacity(group.runs.len());
            for run in group.runs {
                let Ok(rows) = usize::try_from(run >> 1) else {
                    return plan_err!("a row selection run of {} rows", run >> 1);
                };
                let Some(sum) = total.checked_add(rows) else {
                    return plan_err!("a row selection of more rows than fit in memory");
                };
                total = sum;
                selectors.push(if run & 1 == 1 {
                    RowSelector::skip(rows)
                } else {
                    RowSelector::select(rows)
                });
            }
            Ok(RowGroupAccess::Selection(RowSelection::from(selectors)))
        }
        Err(_) => plan_err!("row group access {} is unknown", group.access),
    }
}

/// One Loupe plan node on the wire.
#[derive(Clone, PartialEq, Message)]
struct LoupeNode {
    #[prost(oneof = "NodeKind", tags = "1, 2")]
    kind: Option<NodeKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum NodeKind {
    #[prost(message, tag = "1")]
    SelectedScan(SelectedScan),
    #[prost(message, tag = "2")]
    MemtableScan(MemtableScan),
}

/// Another node's unflushed rows ([`MemtableScanExec`]).
#[derive(Clone, PartialEq, Message)]
struct MemtableScan {
    #[prost(string, tag = "1")]
    node: String,
    #[prost(string, tag = "2")]
    worker: String,
    #[prost(string, tag = "3")]
    signal: String,
    #[prost(uint64, tag = "4")]
    after_seq: u64,
    /// Whether `projection` applies (an empty one selects no column).
    #[prost(bool, tag = "5")]
    projected: bool,
    #[prost(uint64, repeated, tag = "6")]
    projection: Vec<u64>,
    #[prost(int64, tag = "7")]
    start: i64,
    #[prost(int64, tag = "8")]
    end: i64,
    #[prost(string, repeated, tag = "9")]
    match_all: Vec<String>,
    #[prost(string, optional, tag = "10")]
    trace_id: Option<String>,
}

/// The access plans of a file scan's files that have one.
#[derive(Clone, PartialEq, Message)]
struct SelectedScan {
    #[prost(message, repeated, tag = "1")]
    files: Vec<FileSelection>,
}

/// One file's access plan, by its place in the scan's file groups; the
/// path is checked against the decoded scan's.
#[derive(Clone, PartialEq, Message)]
struct FileSelection {
    #[prost(uint64, tag = "1")]
    group: u64,
    #[prost(uint64, tag = "2")]
    index: u64,
    #[prost(string, tag = "3")]
    path: String,
    #[prost(message, repeated, tag = "4")]
    row_groups: Vec<RowGroup>,
}

/// How one row group is read; for `Select`, the row selection as runs of
/// `rows << 1 | skip`.
#[derive(Clone, PartialEq, Message)]
struct RowGroup {
    #[prost(enumeration = "Access", tag = "1")]
    access: i32,
    #[prost(uint64, repeated, tag = "2")]
    runs: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
enum Access {
    Skip = 0,
    Scan = 1,
    Select = 2,
}

#[cfg(test)]
#[path = "plan_codec_tests.rs"]
pub(crate) mod tests;
