//! A query's time limit, checked by every operator. An outer
//! `tokio::time::timeout` only fires when the query's future yields, and a
//! join whose output a filter discards can loop for hours inside one poll
//! (`a CROSS JOIN b CROSS JOIN c WHERE <never true>`). Wrapping every node
//! of the physical plan in [`DeadlineExec`] makes each batch that passes
//! between operators check the clock, so such a query fails with
//! [`TimeLimit`] at the first batch after its deadline and its operators
//! are dropped.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;

/// The error an operator returns once the query's deadline has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("query exceeded its time limit of {0:?}")]
pub struct TimeLimit(pub Duration);

/// Wraps every node of `plan` that runs on this node so that it stops at
/// `deadline`. Below a network boundary of a distributed plan, the nodes
/// belong to stages sent to workers (and `DeadlineExec` does not encode):
/// those are bounded by the coordinator, which cancels their streams when
/// its own operators fail.
pub fn with_deadline(
    plan: Arc<dyn ExecutionPlan>,
    deadline: Instant,
    limit: Duration,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion_distributed::NetworkBoundaryExt;
    let node = if plan.is_network_boundary() || plan.children().is_empty() {
        plan
    } else {
        let children = plan
            .children()
            .into_iter()
            .map(|child| with_deadline(child.clone(), deadline, limit))
            .collect::<Result<Vec<_>>>()?;
        plan.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )?
    };
    Ok(Arc::new(DeadlineExec {
        properties: node.properties().clone(),
        input: node,
        deadline,
        limit,
    }))
}

/// Passes its input's batches through, or [`TimeLimit`] after the deadline.
#[derive(Debug)]
pub struct DeadlineExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    deadline: Instant,
    limit: Duration,
}

impl DisplayAs for DeadlineExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeadlineExec: limit={:?}", self.limit)
    }
}

impl ExecutionPlan for DeadlineExec {
    fn name(&self) -> &'static str {
        "DeadlineExec"
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
            return Err(DataFusionError::Internal(
                "DeadlineExec has exactly one child".into(),
            ));
        }
        let input = children.swap_remove(0);
        let properties = match options.children_properties {
            ChildrenPropertiesMode::Keep => self.properties.clone(),
            ChildrenPropertiesMode::Recompute => input.properties().clone(),
        };
        Ok(Arc::new(DeadlineExec {
            input,
            properties,
            deadline: self.deadline,
            limit: self.limit,
        }))
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
        if Instant::now() > self.deadline {
            return Err(DataFusionError::External(Box::new(TimeLimit(self.limit))));
        }
        let stream = self.input.execute(partition, context)?;
        let schema = stream.schema();
        let (deadline, limit) = (self.deadline, self.limit);
        let checked = stream.map(move |batch| {
            if Instant::now() > deadline {
                Err(DataFusionError::External(Box::new(TimeLimit(limit))))
            } else {
                batch
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, checked)))
    }
}
