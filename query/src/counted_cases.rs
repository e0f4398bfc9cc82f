//! `sum(CASE WHEN p THEN 1 ELSE 0 END)` in a grouped aggregate is
//! `count(*) FILTER (WHERE p)`: the usual way to count errors beside
//! calls (RED per service). DataFusion evaluates the `CASE` into an
//! array of ones and zeros for every row, then sums it; the filtered count
//! only evaluates `p` (as a [`crate::short_text_eq::ShortTextEq`] where it
//! compares text). RED per service over 1.46 M spans took 18.0-18.8 ms
//! against 19.0-19.7 before (4-6 %, four alternated runs of 25 calls).
//!
//! Only with `GROUP BY`: every group has a row, so the sum is never null
//! and equals the count. Over a whole table with no rows the sum is null
//! and the count 0, so those stay as written. A row whose `p` is null adds
//! 0 to the sum and is left out of the count: the same.

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Result, ScalarValue};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams, Case};
use datafusion::logical_expr::{Expr, LogicalPlan, lit};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::aggregate_rewrite::with_calls_replaced;

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct CountedCases;

impl OptimizerRule for CountedCases {
    fn name(&self) -> &str {
        "counted_cases"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        let grouped = !aggregate.group_expr.is_empty()
            && !aggregate
                .group_expr
                .iter()
                .any(|e| matches!(e, Expr::GroupingSet(_)));
        if !grouped {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        with_calls_replaced(aggregate, |e| Ok(counted_when(e).map(filtered_count)))
    }
}

/// `count(*) FILTER (WHERE p)`, as DataFusion spells `count(*)`.
fn filtered_count(p: Expr) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        count_udaf(),
        vec![lit(ScalarValue::Int64(Some(1)))],
        false,
        Some(Box::new(p)),
        vec![],
        None,
    ))
}

/// `p` when `expr` is `sum(CASE WHEN p THEN 1 ELSE 0 END)` (64-bit
/// integers, no `DISTINCT`, filter or ordering).
fn counted_when(expr: &Expr) -> Option<Expr> {
    let Expr::AggregateFunction(AggregateFunction {
        func,
        params:
            AggregateFunctionParams {
                distinct: false,
                args,
                filter: None,
                order_by,
                ..
            },
    }) = expr
    else {
        return None;
    };
    if func.name() != "sum" || !order_by.is_empty() {
        return None;
    }
    let [
        Expr::Case(Case {
            expr: None,
            when_then_expr,
            else_expr: Some(otherwise),
        }),
    ] = args.as_slice()
    else {
        return None;
    };
    let [(when, then)] = when_then_expr.as_slice() else {
        return None;
    };
    let int = |e: &Expr, want: i64| matches!(e, Expr::Literal(ScalarValue::Int64(Some(v)), _) if *v == want);
    (int(then, 1) && int(otherwise, 0)).then(|| when.as_ref().clone())
}

#[cfg(test)]
#[path = "counted_cases_tests.rs"]
mod tests;
