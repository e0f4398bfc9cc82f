//! What the logical rules that put one aggregate call in place of another
//! share ([`crate::count_distinct_text`], [`crate::counted_cases`]): each
//! aggregate expression is offered to the rule, and a replacement keeps the
//! expression's output name (its alias, or DataFusion's name for the
//! call), so the plan above still finds its column.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::Alias;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};

/// `aggregate` with the calls `replace` gives replacements for replaced
/// (see [`replace_calls`]), or unchanged when it replaced none or the
/// columns would differ (the plan above refers to them by name).
pub(crate) fn with_calls_replaced(
    aggregate: Aggregate,
    replace: impl FnMut(&Expr) -> Result<Option<Expr>>,
) -> Result<Transformed<LogicalPlan>> {
    let Some(exprs) = replace_calls(&aggregate.aggr_expr, replace)? else {
        return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
    };
    let rewritten = Aggregate::try_new(
        Arc::clone(&aggregate.input),
        aggregate.group_expr.clone(),
        exprs,
    )?;
    if !same_columns(&rewritten.schema, &aggregate.schema) {
        return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
    }
    Ok(Transformed::yes(LogicalPlan::Aggregate(rewritten)))
}

/// `exprs` with each one `replace` gives a replacement for replaced, under
/// the same name; `None` when it replaced none.
fn replace_calls(
    exprs: &[Expr],
    mut replace: impl FnMut(&Expr) -> Result<Option<Expr>>,
) -> Result<Option<Vec<Expr>>> {
    let mut changed = false;
    let mut out = Vec::with_capacity(exprs.len());
    for expr in exprs {
        let replaced = match expr {
            Expr::Alias(Alias {
                expr: inner,
                relation,
                name,
                ..
            }) => replace(inner)?.map(|e| e.alias_qualified(relation.clone(), name)),
            _ => replace(expr)?.map(|e| e.alias(expr.schema_name().to_string())),
        };
        changed |= replaced.is_some();
        out.push(replaced.unwrap_or_else(|| expr.clone()));
    }
    Ok(changed.then_some(out))
}

/// Whether `a` and `b` have the same columns: qualifier, name and type.
/// Not nullability, which DataFusion's own check of a rule's plan ignores
/// too (a count is never null where a sum could be).
fn same_columns(a: &DFSchema, b: &DFSchema) -> bool {
    a.fields().len() == b.fields().len()
        && a.iter().zip(b.iter()).all(|((q1, f1), (q2, f2))| {
            q1 == q2 && f1.name() == f2.name() && f1.data_type() == f2.data_type()
        })
}
