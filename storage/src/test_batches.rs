//! Small batches for unit tests.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, MapBuilder, StringArray, StringBuilder,
    TimestampNanosecondArray, UInt32Array, new_null_array,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::schema::Signal;

/// A batch of `n` rows of `signal`'s schema: `given` supplies a column by
/// name, every other column takes its empty value — one filler, so each
/// test batch states only the columns it is about.
fn batch_of(signal: Signal, n: usize, given: impl Fn(&str) -> Option<ArrayRef>) -> RecordBatch {
    let schema = signal.schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            if let Some(column) = given(f.name()) {
                return column;
            }
            match (f.name().as_str(), f.data_type()) {
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
                (_, DataType::Int64) => Arc::new(Int64Array::from(vec![0; n])),
                (_, DataType::UInt32) => Arc::new(UInt32Array::from(vec![0; n])),
                (_, DataType::Timestamp(..)) => {
                    Arc::new(TimestampNanosecondArray::from(vec![0; n]).with_timezone("UTC"))
                }
                (name, t) => panic!("no test value for {name}: {t}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

fn times(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from(values.collect::<Vec<_>>()).with_timezone("UTC"))
}

fn texts<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// A logs batch with the given `(time_ns, service)` rows; `body` is
/// `"row {i}"` and every other column takes its empty value.
pub fn log_batch(rows: &[(i64, &str)]) -> RecordBatch {
    let n = rows.len();
    batch_of(Signal::Logs, n, |name| match name {
        "time" | "observed_time" => Some(times(rows.iter().map(|r| r.0))),
        "service" => Some(texts(rows.iter().map(|r| r.1))),
        "body" => Some(Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("row {i}")),
        ))),
        _ => None,
    })
}

/// `(service, severity_text, severity_number, body, attributes)`.
pub type LogRow<'a> = (&'a str, &'a str, i32, &'a str, &'a [(&'a str, &'a str)]);

/// A logs batch of [`LogRow`]s.
pub fn log_batch_with(rows: &[LogRow<'_>]) -> RecordBatch {
    let n = rows.len();
    batch_of(Signal::Logs, n, |name| match name {
        "time" | "observed_time" => Some(times((0..n as i64).map(|i| 1_000 + i))),
        "service" => Some(texts(rows.iter().map(|r| r.0))),
        "severity_text" => Some(texts(rows.iter().map(|r| r.1))),
        "severity_number" => Some(Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.2),
        ))),
        "body" => Some(texts(rows.iter().map(|r| r.3))),
        "attributes" => {
            let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
            for r in rows {
                for (k, v) in r.4 {
                    b.keys().append_value(k);
                    b.values().append_value(v);
                }
                b.append(true).unwrap();
            }
            Some(Arc::new(b.finish()))
        }
        _ => None,
    })
}

/// `n` as a word of letters: the index keeps such words whole (words with
/// digits it shortens).
fn letters(mut n: usize) -> String {
    let mut word = String::new();
    loop {
        word.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
        if n == 0 {
            return word;
        }
    }
}

/// `n` log lines of `service` a microsecond apart from `start`, whose
/// bodies compress well but hold many distinct words: small on disk,
/// large once indexed.
pub fn wordy_log_batch(service: &str, start: i64, n: usize) -> RecordBatch {
    let rows: Vec<(i64, &str)> = (0..n as i64)
        .map(|i| (start + i * 1_000, service))
        .collect();
    let batch = log_batch(&rows);
    let bodies = (0..n).map(|i| {
        format!(
            "user u{} fetched item i{} in {} ms from shard s{} of {service} \
             session x{} order o{} cart c{} region r{}",
            letters((i * 7919) % 100_003),
            letters((i * 31) % 50_021),
            i % 997,
            letters(i % 17),
            letters((i * 104_729) % 1_000_003),
            letters((i * 7) % 65_537),
            letters((i * 13) % 32_771),
            letters(i % 41)
        )
    });
    let mut columns = batch.columns().to_vec();
    columns[batch.schema().index_of("body").unwrap()] =
        Arc::new(StringArray::from_iter_values(bodies));
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

/// A spans batch of `n` spans of service `svc`, one trace each, starting
/// one nanosecond apart.
pub fn span_batch(n: usize) -> RecordBatch {
    let ids: Vec<String> = (0..n).map(|i| format!("{i:032x}")).collect();
    batch_of(Signal::Spans, n, |name| match name {
        "trace_id" | "span_id" => Some(texts(ids.iter().map(String::as_str))),
        "service" => Some(texts(std::iter::repeat_n("svc", n))),
        "start_time" | "end_time" => Some(times(0..n as i64)),
        _ => None,
    })
}

/// A spans batch of `n` rows whose attribute maps vary: row `i` (counted
/// from `seed`) has `i % 4` entries, some with null values, and its
/// resource attributes name its service.
pub fn spans_with_attributes(seed: usize, n: usize) -> RecordBatch {
    let batch = span_batch(n);
    let mut attributes = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut resource = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for i in seed..seed + n {
        for entry in 0..i % 4 {
            attributes.keys().append_value(format!("key.{entry}"));
            if (i + entry) % 3 == 0 {
                attributes.values().append_null();
            } else {
                attributes
                    .values()
                    .append_value(format!("value {i}/{entry}"));
            }
        }
        attributes.append(true).unwrap();
        resource.keys().append_value("service.name");
        resource.values().append_value(format!("svc-{}", i % 5));
        resource.append(true).unwrap();
    }
    let mut columns = batch.columns().to_vec();
    let schema = batch.schema();
    columns[schema.index_of("attributes").unwrap()] = Arc::new(attributes.finish());
    columns[schema.index_of("resource_attributes").unwrap()] = Arc::new(resource.finish());
    RecordBatch::try_new(schema, columns).unwrap()
}

/// `batch` with row `i`'s resource naming instance `ids[i]` (no such
/// attribute where `None`) and its `instance` column to match.
pub fn with_instances(batch: &RecordBatch, ids: &[Option<&str>]) -> RecordBatch {
    let mut maps = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for id in ids {
        maps.keys().append_value("service.name");
        maps.values().append_value("cart");
        if let Some(id) = id {
            maps.keys().append_value(crate::schema::INSTANCE_KEY);
            maps.values().append_value(id);
        }
        maps.append(true).unwrap();
    }
    let schema = batch.schema();
    let mut columns = batch.columns().to_vec();
    columns[schema.index_of("resource_attributes").unwrap()] = Arc::new(maps.finish());
    columns[schema.index_of(crate::schema::INSTANCE).unwrap()] =
        Arc::new(ids.iter().copied().collect::<StringArray>());
    RecordBatch::try_new(schema, columns).unwrap()
}

/// `batch` as written before the `instance` column existed.
pub fn without_instance(batch: &RecordBatch) -> RecordBatch {
    let at = batch.schema().index_of(crate::schema::INSTANCE).unwrap();
    let others: Vec<usize> = (0..batch.num_columns()).filter(|&i| i != at).collect();
    batch.project(&others).unwrap()
}
