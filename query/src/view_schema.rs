//! The schema SQL sees: the stored schema with its dimension columns
//! (service, operation name, kind, status, severity, unit, …: few distinct
//! values, mostly short) as `Utf8View`. Files and memtable batches keep
//! plain `Utf8`; the Parquet reader decodes straight into views when the
//! table asks for them (a value of up to 12 bytes is held inline in its
//! 16-byte view, a longer one points into the page's dictionary), and
//! filtering and grouping views is cheaper than offsets and bytes. On
//! 737 k spans in 32 files DataFusion answered RED per service in 22 ms
//! with views and 39 ms without.
//!
//! Ids, bodies and messages stay `Utf8`: DataFusion 55 charges every batch
//! that shares a view buffer for the whole buffer (apache/datafusion
//! #20491), and a result with a value per trace or span (an aggregate by
//! span, as `/problems` runs), sliced into batches and repartitioned, was
//! charged many times the memory it held. A dimension's buffers hold its
//! few distinct values.
//!
//! Attribute maps' keys are views too: a handful of distinct keys
//! repeated on every row, which the reader otherwise copies byte by byte
//! into each batch. Splits store them as plain text, so the scan reads
//! them as views through [`crate::split_reader`], and `attributes['k']`
//! compares its key as a view through [`crate::map_key_types`]. Values
//! stay `Utf8`, for the same reason as ids: they can be as many as rows.
//!
//! Memtable batches are cast on the way in (a view per value, the bytes
//! shared), after projection so that only the columns a query reads are
//! cast.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{Result, project_schema};
use loupe_storage::{DIMENSIONS, Signal};

static SCHEMAS: LazyLock<[SchemaRef; 3]> =
    LazyLock::new(|| Signal::ALL.map(|signal| with_views(&signal.schema())));

/// `signal`'s table schema as queries see it.
pub fn table_schema(signal: Signal) -> SchemaRef {
    SCHEMAS[signal.index()].clone()
}

fn with_views(stored: &Schema) -> SchemaRef {
    let fields: Vec<Field> = stored
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 if DIMENSIONS.contains(&f.name().as_str()) => {
                f.as_ref().clone().with_data_type(DataType::Utf8View)
            }
            _ => with_view_keys(f),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, stored.metadata().clone()))
}

/// `field` with its map's keys as views, if it is a map with text keys;
/// otherwise `field` unchanged.
pub fn with_view_keys(field: &Field) -> Field {
    let DataType::Map(entries, sorted) = field.data_type() else {
        return field.clone();
    };
    let DataType::Struct(parts) = entries.data_type() else {
        return field.clone();
    };
    let Some(key) = parts.first().filter(|k| k.data_type() == &DataType::Utf8) else {
        return field.clone();
    };
    let mut parts = parts.to_vec();
    parts[0] = Arc::new(key.as_ref().clone().with_data_type(DataType::Utf8View));
    let entries = entries
        .as_ref()
        .clone()
        .with_data_type(DataType::Struct(parts.into()));
    field
        .clone()
        .with_data_type(DataType::Map(Arc::new(entries), *sorted))
}

/// Stored-schema `batches` of `signal` as the table's `projection` of
/// them: the projected columns, text cast to views. Returns the schema
/// too, for a scan with no batches to take it from.
pub fn table_batches(
    signal: Signal,
    batches: &[RecordBatch],
    projection: Option<&Vec<usize>>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = project_schema(&table_schema(signal), projection)?;
    let batches = batches
        .iter()
        .map(|batch| {
            let batch = match projection {
                Some(columns) => batch.project(columns)?,
                None => batch.clone(),
            };
            let columns = batch
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(column, field)| {
                    if column.data_type() == field.data_type() {
                        Ok(column.clone())
                    } else {
                        cast(column, field.data_type())
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            // A projection of no columns (`count(*)`) keeps its row count.
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            Ok(RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &options,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::new_empty_array;

    #[test]
    fn dimensions_and_map_keys_become_views_and_nothing_else_changes() {
        for signal in Signal::ALL {
            let stored = signal.schema();
            let table = table_schema(signal);
            assert_eq!(stored.fields().len(), table.fields().len());
            for (s, t) in stored.fields().iter().zip(table.fields()) {
                assert_eq!(s.name(), t.name());
                assert_eq!(s.is_nullable(), t.is_nullable());
                let view =
                    s.data_type() == &DataType::Utf8 && DIMENSIONS.contains(&s.name().as_str());
                let expected = match s.data_type() {
                    _ if view => DataType::Utf8View,
                    DataType::Map(_, _) => {
                        let DataType::Map(entries, _) = t.data_type() else {
                            panic!("{} is no longer a map", s.name());
                        };
                        let DataType::Struct(parts) = entries.data_type() else {
                            panic!("{}'s entries are not a struct", s.name());
                        };
                        assert_eq!(parts[0].data_type(), &DataType::Utf8View, "{}", s.name());
                        assert_eq!(parts[1].data_type(), &DataType::Utf8, "{}", s.name());
                        t.data_type().clone()
                    }
                    other => other.clone(),
                };
                assert_eq!(t.data_type(), &expected, "{}", s.name());
            }
        }
        let spans = table_schema(Signal::Spans);
        for (name, view) in [("service", true), ("kind", true), ("trace_id", false)] {
            let field = spans.field_with_name(name).unwrap();
            assert_eq!(field.data_type() == &DataType::Utf8View, view, "{name}");
        }
    }

    #[test]
    fn memtable_batches_are_projected_then_cast() {
        let stored = Signal::Spans.schema();
        let empty = stored
            .fields()
            .iter()
            .map(|f| new_empty_array(f.data_type()))
            .collect();
        let batch = RecordBatch::try_new(stored.clone(), empty).unwrap();
        let service = stored.index_of("service").unwrap();
        let duration = stored.index_of("duration_ns").unwrap();
        let (schema, out) =
            table_batches(Signal::Spans, &[batch], Some(&vec![duration, service])).unwrap();
        assert_eq!(schema.field(0).name(), "duration_ns");
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8View);
        assert_eq!(out[0].schema(), schema);
    }
}
