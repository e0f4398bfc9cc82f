//! `match_all('query')`: full-text search as a SQL predicate on `logs`.
//!
//! The function never runs row by row: the `logs` table takes it as an
//! exact filter, asks each split's Tantivy index (and each memtable batch's)
//! for the matching rows, skips files without any, and reads only those
//! rows from Parquet through a row selection.

use std::ops::Range;

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue, exec_err};
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::parquet::arrow::arrow_reader::RowSelection;
use loupe_search::Ast;
use loupe_storage::MemBatch;

pub const MATCH_ALL: &str = "match_all";

#[derive(Debug, PartialEq, Eq, Hash)]
struct MatchAll {
    signature: Signature,
}

/// The `match_all` SQL function, to register in each session.
pub fn match_all_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(MatchAll {
        signature: Signature::string(1, Volatility::Stable),
    })
}

impl ScalarUDFImpl for MatchAll {
    fn name(&self) -> &str {
        MATCH_ALL
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        exec_err!(
            "match_all('…') works only as a condition in the WHERE clause of a query on logs, combined with AND"
        )
    }
}

/// The search text of a `match_all('…')` filter, if `expr` is one.
pub fn match_all_query(expr: &Expr) -> Option<&str> {
    let Expr::ScalarFunction(call) = expr else {
        return None;
    };
    if call.func.name() != MATCH_ALL {
        return None;
    }
    match call.args.as_slice() {
        [
            Expr::Literal(
                ScalarValue::Utf8(Some(q))
                | ScalarValue::Utf8View(Some(q))
                | ScalarValue::LargeUtf8(Some(q)),
                _,
            ),
        ] => Some(q.as_str()),
        _ => None,
    }
}

/// Rows matching every query (one search of their conjunction), ascending.
pub fn matching_rows(
    queries: &[Ast],
    search: impl Fn(&Ast) -> Result<Vec<u32>, loupe_storage::StorageError>,
) -> DfResult<Vec<u32>> {
    if queries.is_empty() {
        return Ok(Vec::new());
    }
    search(&Ast::and(queries.iter().cloned())).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// Which rows of a Parquet file of `total_rows` rows, in row groups of
/// `group_rows`, to read: row groups without a match are skipped, the
/// others read only the matching rows.
pub fn access_plan(rows: &[u32], total_rows: usize, group_rows: usize) -> ParquetAccessPlan {
    let groups = total_rows.div_ceil(group_rows).max(1);
    let mut plan = ParquetAccessPlan::new_all(groups);
    let mut rows = rows.iter().map(|r| *r as usize).peekable();
    for group in 0..groups {
        let start = group * group_rows;
        let end = (start + group_rows).min(total_rows);
        let mut ranges: Vec<Range<usize>> = Vec::new();
        while let Some(row) = rows.next_if(|r| *r < end) {
            let local = row - start;
            match ranges.last_mut() {
                Some(last) if last.end == local => last.end += 1,
                _ => ranges.push(local..local + 1),
            }
        }
        if ranges.is_empty() {
            plan.skip(group);
        } else {
            plan.scan_selection(
                group,
                RowSelection::from_consecutive_ranges(ranges.into_iter(), end - start),
            );
        }
    }
    plan
}

/// The rows of a memtable batch that match every query.
pub fn filter_mem_batch(batch: &MemBatch, queries: &[Ast]) -> DfResult<Option<RecordBatch>> {
    let index = batch
        .log_index()
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let rows = matching_rows(queries, |q| index.matching_rows(q))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut mask = vec![false; batch.batch.num_rows()];
    for r in rows {
        if let Some(m) = mask.get_mut(r as usize) {
            *m = true;
        }
    }
    Ok(Some(filter_record_batch(
        &batch.batch,
        &BooleanArray::from(mask),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::datasource::physical_plan::parquet::RowGroupAccess;
    use loupe_storage::ROW_GROUP_ROWS;

    #[test]
    fn access_plans_skip_groups_without_matches() {
        let total = ROW_GROUP_ROWS * 2 + 10;
        let last = (ROW_GROUP_ROWS * 2 + 3) as u32;
        let plan = access_plan(&[1, 2, 3, 7, last], total, ROW_GROUP_ROWS);
        let groups = plan.inner();
        assert!(matches!(&groups[0], RowGroupAccess::Selection(s) if s.row_count() == 4));
        assert!(matches!(&groups[1], RowGroupAccess::Skip));
        assert!(matches!(&groups[2], RowGroupAccess::Selection(s) if s.row_count() == 1));
    }
}
