//! Reading split files written before the `instance` column existed: the
//! scan rewrites a query's `instance` into
//! `resource_attributes['service.instance.id']` for such a file, so an old
//! file answers per-instance questions as a new one does (only slower),
//! instead of reading the column as null. Compaction upgrades the rows it
//! merges by the same rule (`loupe_storage`'s `instance` module).
//!
//! This relies on the scan's files carrying no column statistics (Loupe's
//! table gives DataFusion a row count only): from statistics saying a
//! column is all null, DataFusion's Parquet opener replaces it with a null
//! literal before any adapter sees it.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapter, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use datafusion::physical_plan::PhysicalExpr;
use loupe_storage::{INSTANCE, INSTANCE_KEY};

use crate::map_key_types;

const RESOURCE: &str = "resource_attributes";

/// The scans' expression adapter: DataFusion's default one (a file's
/// columns by name, cast to the table's types), after rewriting `instance`
/// for files without it.
#[derive(Debug, Default, Clone, Copy)]
pub struct InstanceFromResources;

impl PhysicalExprAdapterFactory for InstanceFromResources {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let derived = physical_file_schema.index_of(INSTANCE).is_err()
            && physical_file_schema.index_of(RESOURCE).is_ok()
            && logical_file_schema.index_of(RESOURCE).is_ok();
        Ok(Arc::new(Adapter {
            derived: derived.then(|| logical_file_schema.clone()),
            default: DefaultPhysicalExprAdapter::new(logical_file_schema, physical_file_schema),
        }))
    }
}

#[derive(Debug)]
struct Adapter {
    /// The table's schema, when the file lacks the column.
    derived: Option<SchemaRef>,
    default: DefaultPhysicalExprAdapter,
}

impl PhysicalExprAdapter for Adapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        let expr = match &self.derived {
            Some(schema) => expr
                .transform(|e| {
                    let is_instance = e
                        .downcast_ref::<Column>()
                        .is_some_and(|c| c.name() == INSTANCE);
                    if !is_instance {
                        return Ok(Transformed::no(e));
                    }
                    Ok(Transformed::yes(instance_from_resources(schema)?))
                })
                .data()?,
            None => expr,
        };
        self.default.rewrite(expr)
    }
}

/// `CAST(resource_attributes['service.instance.id'] AS <instance's type>)`
/// over the table's schema.
fn instance_from_resources(schema: &SchemaRef) -> Result<Arc<dyn PhysicalExpr>> {
    let resources = Arc::new(Column::new_with_schema(RESOURCE, schema)?);
    // The map's own key type (views in the table schema).
    let key_type = map_key_types::key_type(schema.field_with_name(RESOURCE)?.data_type())
        .unwrap_or(DataType::Utf8);
    let key = ScalarValue::Utf8(Some(INSTANCE_KEY.into())).cast_to(&key_type)?;
    let key = Arc::new(Literal::new(key));
    let lookup = ScalarFunctionExpr::try_new(
        datafusion::functions::core::get_field(),
        vec![resources, key],
        schema,
        Arc::new(ConfigOptions::default()),
    )?;
    let target = schema.field_with_name(INSTANCE)?.data_type().clone();
    Ok(Arc::new(CastExpr::new(Arc::new(lookup), target, None)))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, MapBuilder, StringArray, StringBuilder};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use loupe_storage::Signal;

    use super::*;
    use crate::plan_codec::tests::logs;
    use crate::view_schema;

    /// `batch` with resources naming instance `cart-{i % 3}` on row `i`
    /// (none on every fourth row) and the instance column to match.
    fn with_instances(batch: RecordBatch) -> RecordBatch {
        let n = batch.num_rows();
        let instance = |i: usize| (i % 4 != 3).then(|| format!("cart-{}", i % 3));
        let mut maps = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for i in 0..n {
            maps.keys().append_value("service.name");
            maps.values().append_value("cart");
            if let Some(id) = instance(i) {
                maps.keys().append_value(INSTANCE_KEY);
                maps.values().append_value(id);
            }
            maps.append(true).unwrap();
        }
        let schema = batch.schema();
        let mut columns = batch.columns().to_vec();
        columns[schema.index_of(RESOURCE).unwrap()] = Arc::new(maps.finish());
        columns[schema.index_of(INSTANCE).unwrap()] =
            Arc::new((0..n).map(instance).collect::<StringArray>()) as ArrayRef;
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn write(path: &std::path::Path, batch: &RecordBatch) {
        let file = std::fs::File::create(path).unwrap();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
    }

    async fn ask(dir: &std::path::Path, sql: &str) -> String {
        let url = ListingTableUrl::parse(dir.to_str().unwrap()).unwrap();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()));
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(view_schema::table_schema(Signal::Logs))
            .with_expr_adapter_factory(Arc::new(InstanceFromResources));
        // As Loupe's table: no per-file column statistics (see above).
        let ctx =
            SessionContext::new_with_config(SessionConfig::new().with_collect_statistics(false));
        ctx.register_table("logs", Arc::new(ListingTable::try_new(config).unwrap()))
            .unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn files_without_the_column_answer_from_their_resources() {
        let new = with_instances(logs(0, 40, 0));
        let mut old = new.clone();
        let at = old.schema().index_of(INSTANCE).unwrap();
        let mut fields: Vec<_> = old.schema().fields().iter().cloned().collect();
        fields.remove(at);
        old.remove_column(at);
        let old =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), old.columns().to_vec()).unwrap();

        let (with, without) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(&with.path().join("a.parquet"), &new);
        write(&without.path().join("a.parquet"), &old);
        for sql in [
            "SELECT instance, count(*) AS n FROM logs GROUP BY instance ORDER BY instance",
            "SELECT count(*) AS n FROM logs WHERE instance = 'cart-2'",
            "SELECT count(DISTINCT instance) AS n FROM logs WHERE service = 'api'",
        ] {
            let expected = ask(with.path(), sql).await;
            assert_eq!(ask(without.path(), sql).await, expected, "{sql}");
            assert!(!expected.contains("| 40 |"), "{sql}: {expected}");
        }
        let grouped = ask(
            without.path(),
            "SELECT instance, count(*) AS n FROM logs GROUP BY instance ORDER BY instance",
        )
        .await;
        assert!(grouped.contains("| cart-0   | 10 |"), "{grouped}");
    }
}
