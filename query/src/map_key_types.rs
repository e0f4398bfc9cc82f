//! `attributes['k']` where the map's keys are views (see
//! [`crate::view_schema`]): DataFusion's `get_field` compares the key it
//! is given with the map's keys as they are, so a text key against view
//! keys fails ("Invalid comparison operation: Utf8 == Utf8View"). Unlike
//! `map_extract`, `get_field` declares no coercion for its key. This
//! analyzer rule, run after DataFusion's type coercion, converts the
//! (always literal) key of every `get_field` on a map to the map's key
//! type. Column names do not change (a view literal prints as the text it
//! holds).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct MapKeyTypes;

impl AnalyzerRule for MapKeyTypes {
    fn name(&self) -> &str {
        "loupe_map_key_types"
    }

    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let mut schema = merge_schema(&plan.inputs());
            if let LogicalPlan::TableScan(scan) = &plan {
                schema.merge(&DFSchema::try_from_qualified_schema(
                    scan.table_name.clone(),
                    &scan.source.schema(),
                )?);
            }
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let name = names.save(&expr);
                expr.transform_up(|e| key_of_map_type(e, &schema))
                    .map(|t| t.update_data(|e| name.restore(e)))
            })?
            .map_data(|plan| plan.recompute_schema())
        })
        .map(|t| t.data)
    }
}

/// `expr` with its key converted, if it is a `get_field` on a map whose
/// key type differs from the key's.
fn key_of_map_type(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let (Some(map), Some(key)) = (args.first(), args.get(1)) else {
        return Ok(Transformed::no(expr));
    };
    if func.name() != "get_field" {
        return Ok(Transformed::no(expr));
    }
    // DataFusion plans only literal keys.
    let Expr::Literal(value, meta) = key else {
        return Ok(Transformed::no(expr));
    };
    let Some(wanted) = key_type(&map.get_type(schema)?) else {
        return Ok(Transformed::no(expr));
    };
    if value.data_type() == wanted {
        return Ok(Transformed::no(expr));
    }
    let mut args = args.clone();
    args[1] = Expr::Literal(value.cast_to(&wanted)?, meta.clone());
    Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction {
        func: func.clone(),
        args,
    })))
}

/// The key type of a map type.
pub fn key_type(map: &DataType) -> Option<DataType> {
    let DataType::Map(entries, _) = map else {
        return None;
    };
    let DataType::Struct(parts) = entries.data_type() else {
        return None;
    };
    parts.first().map(|key| key.data_type().clone())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData;
    use datafusion::parquet::arrow::parquet_to_arrow_schema;
    use loupe_base::self_metrics::Registry;
    use loupe_storage::{Signal, Storage, StorageConfig};

    use super::key_type;
    use crate::plan_codec::tests::{round_trip, spans_with_routes};
    use crate::{QueryConfig, QueryEngine};

    /// Attribute lookups answer over a split (keys read as views from the
    /// file) and the memtable (cast) alike, whatever the key's type.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attribute_lookups_answer_over_keys_read_as_views() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::default();
        let storage = Storage::open(StorageConfig::new(dir.path()), &registry)
            .await
            .unwrap();
        let hour = 480_000;
        let spans = spans_with_routes(0, 300, hour);
        storage.append(Signal::Spans, spans).await.unwrap();
        storage.flush(Signal::Spans).await.unwrap();
        let unflushed = spans_with_routes(300, 90, hour + 1);
        storage.append(Signal::Spans, unflushed).await.unwrap();
        assert_eq!(storage.snapshot(Signal::Spans).splits.len(), 1);
        let engine = QueryEngine::new(storage.clone(), QueryConfig::default(), &registry).unwrap();
        // 390 spans: routes /r0, /r1, /r2 on 130 each; k1 on the odd ones.
        for (sql, expected) in [
            (
                "SELECT attributes['http.route'] AS r, count(*) AS n FROM spans GROUP BY r ORDER BY r",
                "/r0 | 130|/r1 | 130|/r2 | 130",
            ),
            (
                "SELECT count(*) AS n FROM spans WHERE attributes['http.route'] = '/r1'",
                "130",
            ),
            ("SELECT count(attributes['k1']) AS n FROM spans", "195"),
            (
                "SELECT map_extract(attributes, 'http.route')[1] AS r, count(*) AS n FROM spans \
                 GROUP BY r ORDER BY r",
                "/r0 | 130|/r1 | 130|/r2 | 130",
            ),
            (
                "SELECT attributes FROM spans WHERE span_id IN ('0000000000000007', \
                 '0000000000000131') ORDER BY span_id",
                "{http.route: /r1, k1: v7}|{http.route: /r2, k1: v305}",
            ),
        ] {
            let out = engine.sql(sql).await.unwrap();
            let printed = pretty_format_batches(&out.batches).unwrap().to_string();
            let rows: Vec<String> = printed
                .lines()
                .skip(3)
                .filter(|l| l.starts_with('|'))
                .map(|l| l.trim_matches(|c| c == '|' || c == ' ').to_string())
                .collect();
            assert_eq!(rows.join("|"), expected, "{sql}\n{printed}");
        }
        // Sent to another node, the plan reads the split as DataFusion
        // would (the codec does not carry the reader) and answers the same.
        let (here, there, _) = round_trip(
            &engine,
            "SELECT attributes['http.route'] AS r, count(*) AS n FROM spans \
             WHERE attributes['k1'] IS NOT NULL GROUP BY r ORDER BY r",
        )
        .await;
        assert_eq!(here, there);
        assert!(here.contains("| /r1 | 65 |"), "{here}");
        // The split's cached footer reads the keys as views, so the
        // scan decoded them as such rather than casting them.
        let runtime = engine.runtime();
        let cache = runtime.cache_manager.get_file_metadata_cache();
        let entries = cache.list_entries();
        assert_eq!(entries.len(), 1);
        for path in entries.keys() {
            let entry = cache.get(path).unwrap();
            let metadata = entry
                .file_metadata
                .as_any()
                .downcast_ref::<CachedParquetMetaData>()
                .unwrap()
                .parquet_metadata()
                .clone();
            let file = metadata.file_metadata();
            let schema =
                parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata()).unwrap();
            for map in ["attributes", "resource_attributes"] {
                let field = schema.field_with_name(map).unwrap();
                assert_eq!(
                    key_type(field.data_type()),
                    Some(DataType::Utf8View),
                    "{map}"
                );
            }
        }
    }
}
