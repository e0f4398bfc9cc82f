//! The `instance` column ([`crate::schema::INSTANCE`]) of batches that do
//! not carry it: WAL records, which never store it (it is their resource
//! attributes' `service.instance.id`, and a record keeps those once per
//! run), and split files written before the column existed, read by
//! compaction. Queries read such files through the same rule, written as
//! an expression (`query`'s `instance_column`).

use std::sync::Arc;

use arrow::array::{Array, AsArray, MapArray, StringArray};
use arrow::record_batch::RecordBatch;

use crate::error::{Result, StorageError};
use crate::schema::{INSTANCE, INSTANCE_KEY, Signal};

/// Each row's `service.instance.id` among its resource attributes (the
/// first entry with that key, as `resource_attributes['service.instance.id']`
/// reads it); null where there is none.
pub fn of_resources(resources: &MapArray) -> StringArray {
    let keys = resources.keys().as_string_opt::<i32>();
    let values = resources.values().as_string_opt::<i32>();
    let (Some(keys), Some(values)) = (keys, values) else {
        return StringArray::new_null(resources.len());
    };
    let offsets = resources.value_offsets();
    (0..resources.len())
        .map(|row| {
            if resources.is_null(row) {
                return None;
            }
            let entries = offsets[row] as usize..offsets[row + 1] as usize;
            entries
                .into_iter()
                .find(|&i| keys.value(i) == INSTANCE_KEY)
                .filter(|&i| values.is_valid(i))
                .map(|i| values.value(i))
        })
        .collect()
}

/// `batch` in `signal`'s schema: unchanged when it has every column, and
/// with the instance column taken from its resource attributes when it
/// has every other one, in order (a split file written before the column).
pub fn complete(signal: Signal, batch: RecordBatch) -> Result<RecordBatch> {
    let schema = signal.schema();
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let error = |reason: &str| StorageError::Schema {
        signal,
        reason: reason.into(),
    };
    let at = schema
        .index_of(INSTANCE)
        .map_err(|e| error(&e.to_string()))?;
    let mut others = schema.fields().iter().enumerate().filter(|&(i, _)| i != at);
    let fields = batch.schema().fields().clone();
    let lacks_only_instance = fields.len() + 1 == schema.fields().len()
        && fields
            .iter()
            .all(|f| others.next().is_some_and(|(_, o)| o == f));
    if !lacks_only_instance {
        return Err(error("the columns differ from the table schema"));
    }
    let resources = batch
        .column_by_name("resource_attributes")
        .and_then(|c| c.as_map_opt())
        .ok_or_else(|| error("resource attributes are not a map"))?;
    let mut columns = batch.columns().to_vec();
    columns.insert(at, Arc::new(of_resources(resources)));
    RecordBatch::try_new(schema, columns).map_err(|e| error(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use arrow::array::{MapBuilder, StringBuilder};

    use super::*;
    use crate::test_batches::{log_batch, with_instances, without_instance};

    fn maps(rows: &[&[(&str, Option<&str>)]]) -> MapArray {
        let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for row in rows {
            for (k, v) in *row {
                b.keys().append_value(k);
                b.values().append_option(*v);
            }
            b.append(true).unwrap();
        }
        b.finish()
    }

    #[test]
    fn the_first_instance_entry_of_each_row_or_null() {
        let resources = maps(&[
            &[
                ("service.name", Some("cart")),
                (INSTANCE_KEY, Some("cart-1")),
            ],
            &[("service.name", Some("cart"))],
            &[(INSTANCE_KEY, Some("a")), (INSTANCE_KEY, Some("b"))],
            &[(INSTANCE_KEY, None)],
            &[],
        ]);
        let instances = of_resources(&resources);
        let got: Vec<Option<&str>> = instances.iter().collect();
        assert_eq!(got, [Some("cart-1"), None, Some("a"), None, None]);
    }

    #[test]
    fn a_batch_without_the_column_gets_it_from_its_resources() {
        let batch = with_instances(
            &log_batch(&[(1, "cart"), (2, "cart")]),
            &[Some("cart-1"), None],
        );
        let old = without_instance(&batch);

        assert_eq!(complete(Signal::Logs, old.clone()).unwrap(), batch);
        // Unchanged when complete; refused when another column is missing.
        assert_eq!(complete(Signal::Logs, batch.clone()).unwrap(), batch);
        let mut other = old;
        other.remove_column(0);
        assert!(complete(Signal::Logs, other).is_err());
    }
}
