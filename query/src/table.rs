//! `logs`, `spans` and `metrics` as DataFusion tables: the catalog's splits
//! that overlap the query's time window, read through the object store with
//! statistics, page-index and bloom-filter pruning, UNION the memtable.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result as DfResult, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use loupe_storage::{Signal, Storage, TableSnapshot};

use crate::time_bounds::TimeBounds;

pub struct SignalTable {
    storage: Arc<Storage>,
    signal: Signal,
    store_url: ObjectStoreUrl,
}

impl std::fmt::Debug for SignalTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalTable")
            .field("signal", &self.signal)
            .finish()
    }
}

impl SignalTable {
    pub fn new(storage: Arc<Storage>, signal: Signal, store_url: ObjectStoreUrl) -> Self {
        SignalTable {
            storage,
            signal,
            store_url,
        }
    }

    fn parquet_scan(
        &self,
        state: &dyn Session,
        snapshot: &TableSnapshot,
        bounds: TimeBounds,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let files: Vec<PartitionedFile> = snapshot
            .splits
            .iter()
            .filter(|s| s.overlaps(bounds.start, bounds.end))
            .map(|s| PartitionedFile::new(s.path.clone(), s.byte_size))
            .collect();
        if files.is_empty() {
            return Ok(None);
        }
        let schema = self.signal.schema();
        let mut source = ParquetSource::new(schema.clone())
            .with_pushdown_filters(true)
            .with_reorder_filters(true)
            .with_enable_page_index(true)
            .with_bloom_filter_on_read(true);
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            let df_schema = DFSchema::try_from(schema.clone())?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        let groups = spread(files, state.config().target_partitions());
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(Some(DataSourceExec::from_data_source(config)))
    }
}

/// Deals `items` round-robin into at most `n` non-empty groups.
fn spread<T>(items: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let n = n.clamp(1, items.len().max(1));
    let mut groups: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        groups[i % n].push(item);
    }
    groups.retain(|g| !g.is_empty());
    groups
}

#[async_trait]
impl TableProvider for SignalTable {
    fn schema(&self) -> SchemaRef {
        self.signal.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used for pruning only; DataFusion still applies every filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = self.storage.snapshot(self.signal);
        let bounds = TimeBounds::from_filters(filters, self.signal.time_column());
        let mut inputs = Vec::new();
        if let Some(scan) =
            self.parquet_scan(state, &snapshot, bounds, projection, filters, limit)?
        {
            inputs.push(scan);
        }
        if !snapshot.batches.is_empty() {
            let partitions = spread(snapshot.batches, state.config().target_partitions());
            inputs.push(MemorySourceConfig::try_new_exec(
                &partitions,
                self.signal.schema(),
                projection.cloned(),
            )?);
        }
        if inputs.is_empty() {
            let schema = project_schema(&self.signal.schema(), projection)?;
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        UnionExec::try_new(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_deals_round_robin_without_empty_groups() {
        assert_eq!(spread(vec![1, 2, 3], 2), vec![vec![1, 3], vec![2]]);
        assert_eq!(spread(vec![1], 4), vec![vec![1]]);
        assert!(spread(Vec::<i32>::new(), 4).is_empty());
    }
}
