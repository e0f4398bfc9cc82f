//! What the logical rules that put one aggregate call in place of another
//! share ([`crate::count_distinct_text`], [`crate::counted_cases`]): each
//! aggregate expression is offered to the rule, and a replacement keeps the
//! expression's output name (its alias, or DataFusion's name for the
//! call), so the plan above still finds its column.

use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr::Alias;

/// `exprs` with each one `replace` gives a replacement for replaced, under
/// the same name; `None` when it replaced none.
pub(crate) fn replace_calls(
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
pub(crate) fn same_columns(a: &DFSchema, b: &DFSchema) -> bool {
    a.fields().len() == b.fields().len()
        && a.iter().zip(b.iter()).all(|((q1, f1), (q2, f2))| {
            q1 == q2 && f1.name() == f2.name() && f1.data_type() == f2.data_type()
        })
}
