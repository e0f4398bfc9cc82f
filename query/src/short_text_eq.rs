//! `column = 'text'` for short text, compared as whole 16-byte views.
//! (DataFusion plans an `IN` list of up to three literals as `=`s too.)
//!
//! The most common filters in observability SQL compare a low-cardinality
//! text column with a short literal: `kind = 'server'`,
//! `status_code = 'error'`, `severity_text = 'ERROR'`, `service = 'cart'`.
//! Loupe's scans read text as views ([`crate::view_schema`]), and a view of
//! at most 12 bytes holds the whole value: its length, then its bytes. So a
//! value equals a literal of at most 12 bytes exactly when the view's
//! length and first bytes equal the literal's, one masked 128-bit
//! comparison per row with no look at the data buffers.
//!
//! Arrow's comparison kernel takes that shortcut only for arrays without
//! data buffers; a column decoded from a dictionary page always has one, so
//! it compared each row through lengths, prefixes and branches: on 1.5 M
//! rows of `kind`, 6.5 ms against 1.3 ms for the views (release build).
//! Those comparisons were 14 % of the CPU of RED per service; with the
//! views, RED over 1.48 M spans took 17.3-18.5 ms instead of 19.9-20.8.
//!
//! [`ShortTextComparisons`] is a physical optimizer rule that runs after
//! DataFusion's: it rewrites such comparisons in filters, projections and
//! aggregate arguments into [`ShortTextEq`]. The scan's own copy of a
//! filter, which prunes files, row groups and pages by statistics, stays
//! DataFusion's (pruning reads `column = literal` and nothing else). A
//! stage sent to another node carries DataFusion's comparison instead (see
//! [`ShortTextEq::try_to_proto`]).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, make_view};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer};
use datafusion::arrow::compute::kernels::cmp;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr_common::physical_expr::proto_encode::PhysicalExprEncodeCtx;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion_proto::protobuf::PhysicalExprNode;

/// The longest literal a view holds whole.
pub(crate) const INLINE_BYTES: usize = 12;

/// The bits of a view of a value of `len` bytes (at most [`INLINE_BYTES`])
/// that hold its length and bytes; what follows them is padding.
pub(crate) fn inline_mask(len: usize) -> u128 {
    match len {
        INLINE_BYTES.. => u128::MAX,
        n => (1u128 << ((4 + n) * 8)) - 1,
    }
}

/// `text = literal` (or `<>` when `negated`) where `text` is a view column
/// and `literal` at most [`INLINE_BYTES`] bytes long.
#[derive(Debug, Eq)]
pub struct ShortTextEq {
    text: Arc<dyn PhysicalExpr>,
    literal: String,
    negated: bool,
    /// The literal's view, and the mask of its length and bytes.
    view: u128,
    mask: u128,
}

impl PartialEq for ShortTextEq {
    fn eq(&self, other: &Self) -> bool {
        self.text.eq(&other.text) && self.literal == other.literal && self.negated == other.negated
    }
}

impl Hash for ShortTextEq {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
        self.literal.hash(state);
        self.negated.hash(state);
    }
}

impl ShortTextEq {
    /// `None` when `literal` is too long to be held in a view.
    pub fn new(text: Arc<dyn PhysicalExpr>, literal: String, negated: bool) -> Option<Self> {
        let len = literal.len();
        if len > INLINE_BYTES {
            return None;
        }
        let view = make_view(literal.as_bytes(), 0, 0);
        // A longer value's view differs in its length anyway.
        let mask = inline_mask(len);
        Some(ShortTextEq {
            text,
            literal,
            negated,
            view,
            mask,
        })
    }

    /// The comparison as DataFusion planned it.
    fn as_binary(&self) -> BinaryExpr {
        let op = if self.negated {
            Operator::NotEq
        } else {
            Operator::Eq
        };
        let literal = ScalarValue::Utf8View(Some(self.literal.clone()));
        BinaryExpr::new(Arc::clone(&self.text), op, Arc::new(Literal::new(literal)))
    }

    /// The comparison of each row of `array`, null where the row is.
    fn compare(&self, array: &dyn Array) -> Result<BooleanArray> {
        let Some(text) = array.as_string_view_opt() else {
            // Planned for views but given something else: Arrow's kernel,
            // with the literal in the array's type.
            let literal = ScalarValue::Utf8(Some(self.literal.clone()))
                .cast_to(array.data_type())?
                .to_scalar()?;
            let compared = if self.negated {
                cmp::neq(&array, &literal)?
            } else {
                cmp::eq(&array, &literal)?
            };
            return Ok(compared);
        };
        let views = text.views();
        // A word of 64 rows at a time, in a loop the compiler can
        // vectorize.
        let mut words = Vec::with_capacity(views.len().div_ceil(64));
        for chunk in views.chunks(64) {
            let mut word = 0u64;
            for (i, v) in chunk.iter().enumerate() {
                word |= u64::from(v & self.mask == self.view) << i;
            }
            if self.negated {
                word = !word;
            }
            words.push(word);
        }
        let bits = BooleanBuffer::new(Buffer::from_vec(words), 0, views.len());
        Ok(BooleanArray::new(bits, text.nulls().cloned()))
    }
}

/// As DataFusion shows a comparison, marked so that a plan shows which
/// comparisons were rewritten.
impl fmt::Display for ShortTextEq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.negated { "!=" } else { "=" };
        write!(f, "{} {op} {} [views]", self.text, self.literal)
    }
}

impl PhysicalExpr for ShortTextEq {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.text.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        match self.text.evaluate(batch)? {
            ColumnarValue::Array(array) => {
                Ok(ColumnarValue::Array(Arc::new(self.compare(&array)?)))
            }
            ColumnarValue::Scalar(value) => {
                let compared = self.compare(&value.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &compared, 0,
                )?))
            }
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.text]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [text] = <[_; 1]>::try_from(children).map_err(|c| {
            datafusion::common::DataFusionError::Internal(format!(
                "a short text comparison has one child, got {}",
                c.len()
            ))
        })?;
        Ok(Arc::new(ShortTextEq {
            text,
            literal: self.literal.clone(),
            ..*self
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_binary().fmt_sql(f)
    }

    /// Sent to another node as DataFusion's comparison: `datafusion-proto`
    /// 55's composed codec, which `datafusion-distributed` sends stages
    /// with, passes no expression to Loupe's codec. The stages another
    /// node runs compare as DataFusion does.
    fn try_to_proto(&self, ctx: &PhysicalExprEncodeCtx<'_>) -> Result<Option<PhysicalExprNode>> {
        let plain: Arc<dyn PhysicalExpr> = Arc::new(self.as_binary());
        Ok(Some(ctx.encode_child(&plain)?))
    }
}

/// The physical optimizer rule that puts [`ShortTextEq`] in place of
/// short text comparisons; see the module's documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShortTextComparisons;

impl PhysicalOptimizerRule for ShortTextComparisons {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(rewrite_node).data()
    }

    fn name(&self) -> &str {
        "short_text_comparisons"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` with its expressions rewritten, for the nodes that evaluate
/// expressions row by row.
fn rewrite_node(node: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if let Some(filter) = node.downcast_ref::<FilterExec>() {
        let predicate = rewrite_expr(filter.predicate(), &filter.input().schema())?;
        if !predicate.transformed {
            return Ok(Transformed::no(node));
        }
        let rewritten = FilterExecBuilder::from(filter)
            .with_predicate(predicate.data)
            .build()?;
        return Ok(Transformed::yes(Arc::new(rewritten)));
    }
    if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
        let schema = projection.input().schema();
        let mut changed = false;
        let mut exprs = Vec::with_capacity(projection.expr().len());
        for e in projection.expr() {
            let expr = rewrite_expr(&e.expr, &schema)?;
            changed |= expr.transformed;
            exprs.push(ProjectionExpr::new(expr.data, e.alias.clone()));
        }
        if !changed {
            return Ok(Transformed::no(node));
        }
        let rewritten = ProjectionExec::try_new(exprs, Arc::clone(projection.input()))?;
        return Ok(Transformed::yes(Arc::new(rewritten)));
    }
    if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
        let schema = aggregate.input_schema();
        let mut changed = false;
        let mut aggregates = Vec::with_capacity(aggregate.aggr_expr().len());
        for a in aggregate.aggr_expr() {
            let rewritten = rewrite_aggregate(a, &schema)?;
            changed |= rewritten.is_some();
            aggregates.push(rewritten.map_or_else(|| Arc::clone(a), Arc::new));
        }
        // Filters of aggregates (`count(*) FILTER (WHERE …)`, which
        // `crate::counted_cases` also writes).
        let mut filters = Vec::with_capacity(aggregate.filter_expr().len());
        let mut filtered = false;
        for f in aggregate.filter_expr() {
            let f = f.as_ref().map(|f| rewrite_expr(f, &schema)).transpose()?;
            filtered |= f.as_ref().is_some_and(|f| f.transformed);
            filters.push(f.map(|f| f.data));
        }
        // Rebuilding makes a new dynamic filter, which the scan that holds
        // the old one would not see: such aggregates keep their filters.
        if filtered && aggregate.dynamic_expressions_produced().is_empty() {
            let rebuilt = AggregateExec::try_new(
                *aggregate.mode(),
                aggregate.group_expr().clone(),
                aggregates,
                filters,
                Arc::clone(aggregate.input()),
                aggregate.input_schema(),
            )?
            .with_new_limit_options(aggregate.limit_options());
            return Ok(Transformed::yes(Arc::new(rebuilt)));
        }
        if !changed {
            return Ok(Transformed::no(node));
        }
        return Ok(Transformed::yes(Arc::new(
            aggregate.with_new_aggr_exprs(aggregates),
        )));
    }
    Ok(Transformed::no(node))
}

/// `aggregate` with its arguments rewritten, if any was.
fn rewrite_aggregate(
    aggregate: &AggregateFunctionExpr,
    schema: &Schema,
) -> Result<Option<AggregateFunctionExpr>> {
    // Rebuilding a reversed aggregate would lose its direction.
    if aggregate.is_reversed() {
        return Ok(None);
    }
    let mut changed = false;
    let mut args = Vec::new();
    for arg in aggregate.expressions() {
        let arg = rewrite_expr(&arg, schema)?;
        changed |= arg.transformed;
        args.push(arg.data);
    }
    if !changed {
        return Ok(None);
    }
    let order_by = aggregate
        .order_bys()
        .iter()
        .map(|o| Arc::clone(&o.expr))
        .collect();
    Ok(aggregate.with_new_expressions(args, order_by))
}

/// `expr` with each `text = 'short literal'` (or `<>`) over views in it
/// made a [`ShortTextEq`].
fn rewrite_expr(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    Arc::clone(expr).transform_up(|e| {
        let Some(binary) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        let negated = match binary.op() {
            Operator::Eq => false,
            Operator::NotEq => true,
            _ => return Ok(Transformed::no(e)),
        };
        let (text, literal) = match (text_literal(binary.left()), text_literal(binary.right())) {
            (None, Some(literal)) => (binary.left(), literal),
            (Some(literal), None) => (binary.right(), literal),
            _ => return Ok(Transformed::no(e)),
        };
        if text.data_type(schema)? != DataType::Utf8View {
            return Ok(Transformed::no(e));
        }
        match ShortTextEq::new(Arc::clone(text), literal.to_string(), negated) {
            Some(compare) => Ok(Transformed::yes(Arc::new(compare) as Arc<dyn PhysicalExpr>)),
            None => Ok(Transformed::no(e)),
        }
    })
}

/// The text of a non-null text literal.
fn text_literal(expr: &Arc<dyn PhysicalExpr>) -> Option<&str> {
    match expr.downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{StringViewArray, StringViewBuilder};
    use datafusion::arrow::datatypes::Field;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::plan_codec::tests::{engine, physical_plan};

    /// Values of every length around the inline limit, with shared
    /// prefixes, long values in data buffers, and nulls.
    fn texts() -> StringViewArray {
        let values = [
            Some(""),
            Some("server"),
            Some("serve"),
            Some("servers"),
            Some("server, but longer than twelve"),
            None,
            Some("client"),
            Some("abcdefghijkl"),
            Some("abcdefghijklm"),
            Some("abcdefghijk"),
            Some("s"),
        ];
        let mut b = StringViewBuilder::new();
        for _ in 0..7 {
            for v in values {
                b.append_option(v);
            }
        }
        b.finish()
    }

    #[test]
    fn compares_as_arrow_does() {
        let all = texts();
        assert!(!all.data_buffers().is_empty());
        let schema = Schema::new(vec![Field::new("t", DataType::Utf8View, true)]);
        for array in [all.clone(), all.slice(3, 50)] {
            let batch =
                RecordBatch::try_new(Arc::new(schema.clone()), vec![Arc::new(array.clone())])
                    .unwrap();
            for literal in ["", "server", "s", "abcdefghijkl", "abcdefghijk", "nothing"] {
                for negated in [false, true] {
                    let column = Arc::new(Column::new("t", 0));
                    let compare = ShortTextEq::new(column, literal.to_string(), negated).unwrap();
                    let got = compare
                        .evaluate(&batch)
                        .unwrap()
                        .into_array(array.len())
                        .unwrap();
                    let scalar = StringViewArray::new_scalar(literal);
                    let want = if negated {
                        cmp::neq(&array, &scalar).unwrap()
                    } else {
                        cmp::eq(&array, &scalar).unwrap()
                    };
                    assert_eq!(got.as_boolean(), &want, "{literal:?} negated={negated}");
                }
            }
        }
        let column = Arc::new(Column::new("t", 0));
        assert!(ShortTextEq::new(column, "abcdefghijklm".into(), false).is_none());
    }

    #[test]
    fn other_text_types_and_scalars_compare_too() {
        let column = Arc::new(Column::new("t", 0));
        let compare = ShortTextEq::new(column, "api".into(), true).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, true)]));
        let plain =
            datafusion::arrow::array::StringArray::from(vec![Some("api"), None, Some("db")]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(plain)]).unwrap();
        let got = compare.evaluate(&batch).unwrap().into_array(3).unwrap();
        let want = BooleanArray::from(vec![Some(false), None, Some(true)]);
        assert_eq!(got.as_boolean(), &want);

        let literal = Arc::new(Literal::new(ScalarValue::Utf8View(Some("api".into()))));
        let compare = ShortTextEq::new(literal, "api".into(), false).unwrap();
        let got = compare.evaluate(&batch).unwrap();
        let ColumnarValue::Scalar(value) = got else {
            panic!("a scalar's comparison is a scalar");
        };
        assert_eq!(value, ScalarValue::Boolean(Some(true)));
    }

    /// The comparisons in `plan` made [`ShortTextEq`], and the literals of
    /// the scans' predicates.
    fn inspect(plan: &Arc<dyn ExecutionPlan>) -> (Vec<String>, Vec<String>) {
        let (mut rewritten, mut scans) = (Vec::new(), Vec::new());
        plan.apply(|node| {
            let mut exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
            if let Some(f) = node.downcast_ref::<FilterExec>() {
                exprs.push(Arc::clone(f.predicate()));
            }
            if let Some(a) = node.downcast_ref::<AggregateExec>() {
                exprs.extend(a.aggr_expr().iter().flat_map(|a| a.expressions()));
                exprs.extend(a.filter_expr().iter().flatten().cloned());
            }
            if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                exprs.extend(p.expr().iter().map(|e| Arc::clone(&e.expr)));
            }
            for e in exprs {
                e.apply(|e| {
                    if let Some(c) = e.downcast_ref::<ShortTextEq>() {
                        rewritten.push(c.to_string());
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
                .unwrap();
            }
            let shown = datafusion::physical_plan::displayable(node.as_ref())
                .one_line()
                .to_string();
            if let Some(at) = shown.find("pruning_predicate=") {
                scans.push(shown[at..].to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        (rewritten, scans)
    }

    /// Filters, aggregate arguments and projections compare short text
    /// as views, with the same answers as DataFusion's comparisons, and
    /// the scans still prune by the original comparison.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_answer_as_before_with_views_compared() {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, engine) = engine(dir.path()).await;
        let with = engine.session().unwrap();
        let state = with.state();
        let rules = state
            .physical_optimizers()
            .iter()
            .filter(|r| r.name() != ShortTextComparisons.name())
            .cloned()
            .collect();
        let without = SessionContext::new_with_state(
            SessionStateBuilder::new_from_existing(state)
                .with_physical_optimizer_rules(rules)
                .build(),
        );
        let queries = [
            (
                "SELECT service, count(*) AS n, \
                 sum(CASE WHEN body <> 'x' AND service = 'db' THEN 1 ELSE 0 END) AS db \
                 FROM logs WHERE service <> 'web' GROUP BY service ORDER BY service",
                // `body` is plain text (`crate::view_schema`): left alone.
                vec!["service != web", "service = db"],
            ),
            (
                "SELECT count(*) AS n FROM logs WHERE service = 'db'",
                vec!["service = db"],
            ),
            // DataFusion makes a short list `=`s.
            (
                "SELECT service, count(*) AS n FROM logs \
                 WHERE service IN ('api', 'web') GROUP BY service",
                vec!["service = api", "service = web"],
            ),
            // A literal too long to be held in a view stays DataFusion's.
            (
                "SELECT service = 'api' AS api, body FROM logs \
                 WHERE body <> 'beta line 77777' ORDER BY body LIMIT 5",
                vec!["service = api"],
            ),
            (
                "SELECT count(*) AS n FROM logs WHERE body = 'alpha line 999'",
                vec![],
            ),
        ];
        for (sql, expected) in queries {
            let plan = physical_plan(&with, sql).await;
            let (rewritten, scans) = inspect(&plan);
            // Without the column's place in its input (`service@0`).
            let rewritten: std::collections::BTreeSet<String> = rewritten
                .iter()
                .map(|c| {
                    let (name, rest) = c.split_once('@').unwrap();
                    let rest = rest.trim_start_matches(|ch: char| ch.is_ascii_digit());
                    format!("{name}{}", rest.trim_end_matches(" [views]"))
                })
                .collect();
            assert_eq!(rewritten.into_iter().collect::<Vec<_>>(), expected, "{sql}");
            assert!(!scans.is_empty(), "{sql}: no scan prunes");
            for scan in &scans {
                assert!(scan.contains("_min@"), "{sql}: {scan}");
            }
            let got = collect(plan, with.task_ctx()).await.unwrap();
            let plain = physical_plan(&without, sql).await;
            assert!(inspect(&plain).0.is_empty());
            let want = collect(plain, without.task_ctx()).await.unwrap();
            let (got, want) = (
                pretty_format_batches(&got).unwrap().to_string(),
                pretty_format_batches(&want).unwrap().to_string(),
            );
            assert_eq!(got, want, "{sql}");
            assert!(got.lines().count() > 4, "{sql}: {got}");
        }
    }
}
