//! Small batches for unit tests.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, MapBuilder, StringArray, StringBuilder, TimestampNanosecondArray,
    UInt32Array, new_null_array,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::schema::Signal;

/// A logs batch with the given `(time_ns, service)` rows; `body` is
/// `"row {i}"` and every other column takes its empty value.
pub fn log_batch(rows: &[(i64, &str)]) -> RecordBatch {
    let schema = Signal::Logs.schema();
    let n = rows.len();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match (f.name().as_str(), f.data_type()) {
                ("time" | "observed_time", _) => Arc::new(
                    TimestampNanosecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                ("service", _) => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                ("body", _) => Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("row {i}")),
                )),
                (_, DataType::Map(..)) => {
                    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                    for _ in 0..n {
                        b.append(true).unwrap();
                    }
                    Arc::new(b.finish())
                }
                (_, _) if f.is_nullable() => new_null_array(f.data_type(), n),
                (_, DataType::Utf8) => Arc::new(StringArray::from(vec![""; n])),
                (_, DataType::Int32) => Arc::new(Int32Array::from(vec![0; n])),
                (_, DataType::UInt32) => Arc::new(UInt32Array::from(vec![0; n])),
                (name, t) => panic!("no test value for {name}: {t}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

/// A logs batch of `(service, severity_text, severity_number, body, attributes)` rows.
pub fn log_batch_with(rows: &[(&str, &str, i32, &str, &[(&str, &str)])]) -> RecordBatch {
    let schema = Signal::Logs.schema();
    let n = rows.len();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match (f.name().as_str(), f.data_type()) {
                ("time" | "observed_time", _) => Arc::new(
                    TimestampNanosecondArray::from(
                        (0..n as i64).map(|i| 1_000 + i).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                ("service", _) => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                ("severity_text", _) => {
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1)))
                }
                ("severity_number", _) => {
                    Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2)))
                }
                ("body", _) => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
                ("attributes", _) => {
                    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                    for r in rows {
                        for (k, v) in r.4 {
                            b.keys().append_value(k);
                            b.values().append_value(v);
                        }
                        b.append(true).unwrap();
                    }
                    Arc::new(b.finish())
                }
                (_, DataType::Map(..)) => {
                    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                    for _ in 0..n {
                        b.append(true).unwrap();
                    }
                    Arc::new(b.finish())
                }
                (_, _) if f.is_nullable() => new_null_array(f.data_type(), n),
                (_, DataType::Utf8) => Arc::new(StringArray::from(vec![""; n])),
                (_, DataType::UInt32) => Arc::new(UInt32Array::from(vec![0; n])),
                (name, t) => panic!("no test value for {name}: {t}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}
