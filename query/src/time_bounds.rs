//! The time window a query's WHERE clause restricts a table to, so that
//! splits outside it are skipped before any file is opened.

use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;

/// Inclusive bounds in ns since the epoch; open ends are `i64::MIN/MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    pub start: i64,
    pub end: i64,
}

impl Default for TimeBounds {
    fn default() -> Self {
        TimeBounds {
            start: i64::MIN,
            end: i64::MAX,
        }
    }
}

impl TimeBounds {
    /// The bounds implied by the conjunction of `filters` on `column`.
    /// Filters it does not understand are ignored: they can only narrow the
    /// result further, never widen it.
    pub fn from_filters(filters: &[Expr], column: &str) -> TimeBounds {
        let mut bounds = TimeBounds::default();
        for filter in filters {
            bounds.narrow(filter, column);
        }
        bounds
    }

    fn narrow(&mut self, expr: &Expr, column: &str) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And => {
                    self.narrow(left, column);
                    self.narrow(right, column);
                }
                _ => {
                    if let (true, Some(v)) = (is_column(left, column), nanos(right)) {
                        self.apply(*op, v);
                    } else if let (Some(v), true) = (nanos(left), is_column(right, column))
                        && let Some(op) = op.swap()
                    {
                        self.apply(op, v);
                    }
                }
            },
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_column(expr, column) => {
                if let Some(v) = nanos(low) {
                    self.apply(Operator::GtEq, v);
                }
                if let Some(v) = nanos(high) {
                    self.apply(Operator::LtEq, v);
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, op: Operator, v: i64) {
        match op {
            Operator::Gt | Operator::GtEq => self.start = self.start.max(v),
            Operator::Lt | Operator::LtEq => self.end = self.end.min(v),
            Operator::Eq => {
                self.start = self.start.max(v);
                self.end = self.end.min(v);
            }
            _ => {}
        }
    }
}

fn is_column(expr: &Expr, column: &str) -> bool {
    match expr {
        Expr::Column(c) => c.name == column,
        Expr::Cast(c) => is_column(&c.expr, column),
        _ => false,
    }
}

/// A timestamp literal as ns (rounding outward is unnecessary: split
/// ranges are compared inclusively).
fn nanos(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn combines_comparisons_between_and_reversed_operands() {
        let filters = vec![
            col("time").gt_eq(ts(10)),
            ts(50).gt(col("time")),
            col("service").eq(lit("a")),
        ];
        assert_eq!(
            TimeBounds::from_filters(&filters, "time"),
            TimeBounds { start: 10, end: 50 }
        );
        let between = vec![col("start_time").between(ts(5), ts(7))];
        assert_eq!(
            TimeBounds::from_filters(&between, "start_time"),
            TimeBounds { start: 5, end: 7 }
        );
        let other_column = vec![col("end_time").gt(ts(5))];
        assert_eq!(
            TimeBounds::from_filters(&other_column, "start_time"),
            TimeBounds::default()
        );
        // OR cannot narrow.
        let or = vec![col("time").gt(ts(5)).or(col("time").lt(ts(1)))];
        assert_eq!(TimeBounds::from_filters(&or, "time"), TimeBounds::default());
    }
}
