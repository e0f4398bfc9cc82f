//! What one WAL record stores: the acknowledged batch, with its resource
//! attributes written once per resource instead of once per row.
//!
//! OTLP sends a resource's attributes once per request; the Arrow batch
//! repeats them on every row. Written as they are, they were more than a
//! third of the WAL's bytes for spans (about 236 of 635 bytes per span from
//! `loupe gen`, whose protobuf is 287 bytes per span), and the WAL thread
//! spent its time copying them into the page cache. Stored once per run,
//! they leave a span 419 bytes of WAL (631 before, measured alike). So a
//! record is
//!
//! ```text
//! "LWP1" | resources_len: u32 LE | resources | rows
//! ```
//!
//! where `resources` is an Arrow IPC stream of one batch holding each run
//! of equal `resource_attributes` once (`resource_attributes`, and
//! `run_end`: the row after the run's last), and `rows` is an IPC stream of
//! the batch without that column and without `instance` (each row's
//! resource's `service.instance.id`, taken from the runs again on replay).
//! Runs need no hashing: a converter emits a resource's rows together, so
//! comparing each row with the one before finds them.
//!
//! Records written before this format are a bare IPC stream of the whole
//! batch. Such a stream starts with the continuation marker `0xFFFFFFFF`,
//! never with the magic, so [`decode`] replays both.

use std::io::Cursor;
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, AsArray, MapArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;

use crate::error::{Result, StorageError};
use crate::instance;
use crate::ipc;
use crate::schema::{INSTANCE, Signal};

/// Marks a record in this format, and its version.
const MAGIC: &[u8; 4] = b"LWP1";
/// The column stored once per run.
const RESOURCE: &str = "resource_attributes";
const RUN_END: &str = "run_end";

/// Encodes `batch` (of `signal`'s schema) as a WAL record's payload.
pub fn encode(signal: Signal, batch: &RecordBatch) -> Result<Vec<u8>> {
    let column = resource_column(signal)?;
    let resources = batch
        .column(column)
        .as_map_opt()
        .ok_or_else(|| corrupt(signal, "resource attributes are not a map"))?;
    let (starts, ends) = runs(resources);
    let firsts = arrow::compute::take(resources, &UInt32Array::from(starts), None)?;
    let run_batch = RecordBatch::try_new(
        run_schema(),
        vec![firsts, Arc::new(UInt32Array::from(ends))],
    )?;
    let instance = instance_column(signal)?;
    let others: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| i != column && i != instance)
        .collect();
    let rows = batch.project(&others)?;

    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 4]);
    let out = ipc::append_stream(out, &run_batch)?;
    let resources_len = out.len() - MAGIC.len() - 4;
    let mut out = ipc::append_stream(out, &rows)?;
    let len = u32::try_from(resources_len).map_err(|_| corrupt(signal, "resources too large"))?;
    out[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// Decodes a payload written by [`encode`], or by the bare IPC format
/// before it, back into `signal`'s batch.
pub fn decode(signal: Signal, payload: &[u8]) -> Result<RecordBatch> {
    let Some(rest) = payload.strip_prefix(MAGIC) else {
        return ipc::decode(signal, payload);
    };
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt(signal, "no resources length"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(corrupt(signal, "resources run past the record"));
    }
    let (run_bytes, row_bytes) = rest.split_at(len);
    let run_batch = read_one(signal, run_bytes)?;
    let rows = read_one(signal, row_bytes)?;
    if rows.num_columns() + 2 != signal.schema().fields().len() {
        return Err(corrupt(signal, "wrong number of columns"));
    }

    let indices = run_indices(signal, &run_batch, rows.num_rows())?;
    let run_resources = run_batch
        .column(0)
        .as_map_opt()
        .ok_or_else(|| corrupt(signal, "resource attributes are not a map"))?;
    let run_instances = instance::of_resources(run_resources);
    let resources = arrow::compute::take(run_resources, &indices, None)?;
    let instances = arrow::compute::take(&run_instances, &indices, None)?;
    // The resource column comes before the instance column: inserted in
    // that order, each lands at its schema index.
    let mut columns = rows.columns().to_vec();
    columns.insert(resource_column(signal)?, resources);
    columns.insert(instance_column(signal)?, instances);
    RecordBatch::try_new(signal.schema(), columns).map_err(|e| corrupt(signal, &e.to_string()))
}

fn resource_column(signal: Signal) -> Result<usize> {
    column_index(signal, RESOURCE)
}

fn instance_column(signal: Signal) -> Result<usize> {
    column_index(signal, INSTANCE)
}

fn column_index(signal: Signal, name: &str) -> Result<usize> {
    signal
        .schema()
        .index_of(name)
        .map_err(|e| corrupt(signal, &e.to_string()))
}

fn run_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new(RESOURCE, crate::schema::attributes_type(), false),
            Field::new(RUN_END, DataType::UInt32, false),
        ]))
    });
    SCHEMA.clone()
}

/// Each run of rows with equal maps: its first row and the row after its
/// last. An empty batch has no runs.
fn runs(maps: &MapArray) -> (Vec<u32>, Vec<u32>) {
    let starts: Vec<u32> = (0..maps.len())
        .filter(|&row| row == 0 || !same_map(maps, row - 1, row))
        .map(|row| row as u32)
        .collect();
    let last_end = (!maps.is_empty()).then_some(maps.len() as u32);
    let ends = starts.iter().skip(1).copied().chain(last_end).collect();
    (starts, ends)
}

/// Whether rows `a` and `b` hold the same entries in the same order.
fn same_map(maps: &MapArray, a: usize, b: usize) -> bool {
    let offsets = maps.value_offsets();
    let (a0, a1) = (offsets[a] as usize, offsets[a + 1] as usize);
    let (b0, b1) = (offsets[b] as usize, offsets[b + 1] as usize);
    if maps.is_null(a) != maps.is_null(b) || a1 - a0 != b1 - b0 {
        return false;
    }
    let keys = maps.keys().as_string::<i32>();
    let values = maps.values().as_string::<i32>();
    (0..a1 - a0).all(|i| {
        let (x, y) = (a0 + i, b0 + i);
        keys.value(x) == keys.value(y)
            && values.is_null(x) == values.is_null(y)
            && values.value(x) == values.value(y)
    })
}

/// The row-to-run index [`decode`] takes each row's map by, after checking
/// the run ends are a valid cover of `rows` rows.
fn run_indices(signal: Signal, run_batch: &RecordBatch, rows: usize) -> Result<UInt32Array> {
    let ends = run_batch
        .column_by_name(RUN_END)
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt32Type>())
        .ok_or_else(|| corrupt(signal, "no run ends"))?;
    let mut indices = Vec::with_capacity(rows);
    for (run, end) in ends.values().iter().enumerate() {
        let end = *end as usize;
        if end <= indices.len() || end > rows {
            return Err(corrupt(signal, "run ends out of order or past the rows"));
        }
        indices.resize(end, run as u32);
    }
    if indices.len() != rows {
        return Err(corrupt(signal, "runs do not cover the rows"));
    }
    Ok(UInt32Array::from(indices))
}

/// The one batch of an IPC stream [`ipc::append_stream`] wrote.
fn read_one(signal: Signal, bytes: &[u8]) -> Result<RecordBatch> {
    let mut reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let batch = reader
        .next()
        .ok_or_else(|| corrupt(signal, "an empty stream"))??;
    if reader.next().is_some() {
        return Err(corrupt(signal, "more than one batch in a stream"));
    }
    Ok(batch)
}

fn corrupt(signal: Signal, reason: &str) -> StorageError {
    StorageError::Schema {
        signal,
        reason: format!("WAL record: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_batches::{log_batch, spans_with_attributes};
    use arrow::array::{MapBuilder, StringArray, StringBuilder};
    use arrow::ipc::writer::StreamWriter;

    /// A record as binaries before this format wrote it: one IPC stream,
    /// with the writer's default 64-byte alignment.
    fn bare_record(batch: &RecordBatch) -> Vec<u8> {
        let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        writer.into_inner().unwrap()
    }

    /// Replaces `batch`'s resource maps with `service.name = names[i]` and
    /// `service.instance.id = "{names[i]}-1"`, and its instances to match.
    fn with_resources(batch: &RecordBatch, names: &[Option<&str>]) -> RecordBatch {
        let mut maps = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for name in names {
            if let Some(name) = name {
                maps.keys().append_value("service.name");
                maps.values().append_value(name);
                maps.keys().append_value("host.name");
                maps.values().append_null();
                maps.keys().append_value(crate::schema::INSTANCE_KEY);
                maps.values().append_value(format!("{name}-1"));
            }
            maps.append(true).unwrap();
        }
        let instances: StringArray = names.iter().map(|n| n.map(|n| format!("{n}-1"))).collect();
        let mut columns = batch.columns().to_vec();
        columns[batch.schema().index_of(RESOURCE).unwrap()] = Arc::new(maps.finish());
        columns[batch.schema().index_of(INSTANCE).unwrap()] = Arc::new(instances);
        RecordBatch::try_new(batch.schema(), columns).unwrap()
    }

    fn run_count(payload: &[u8]) -> usize {
        let len = u32::from_le_bytes(payload[4..8].try_into().unwrap()) as usize;
        read_one(Signal::Spans, &payload[8..8 + len])
            .unwrap()
            .num_rows()
    }

    #[test]
    fn batches_come_back_equal_with_each_run_of_resources_stored_once() {
        let spans = spans_with_attributes(0, 9);
        let names = [
            Some("a"),
            Some("a"),
            Some("a"),
            Some("b"),
            None,
            None,
            Some("a"),
            Some("a"),
            Some("b"),
        ];
        let spans = with_resources(&spans, &names);
        let payload = encode(Signal::Spans, &spans).unwrap();
        assert_eq!(&payload[..4], MAGIC);
        assert_eq!(run_count(&payload), 5, "a, b, none, a, b");
        assert_eq!(decode(Signal::Spans, &payload).unwrap(), spans);

        let logs = log_batch(&[(1, "x"), (2, "x"), (3, "y")]);
        let payload = encode(Signal::Logs, &logs).unwrap();
        assert_eq!(run_count(&payload), 1, "every row's map is empty");
        assert_eq!(decode(Signal::Logs, &payload).unwrap(), logs);
    }

    #[test]
    fn one_resource_costs_its_bytes_once() {
        let one = with_resources(&spans_with_attributes(0, 200), &[Some("checkout"); 200]);
        let long = "checkout-service-with-a-long-name";
        let repeated = with_resources(&spans_with_attributes(0, 200), &[Some(long); 200]);
        let grown = encode(Signal::Spans, &repeated).unwrap().len()
            - encode(Signal::Spans, &one).unwrap().len();
        assert!(
            grown < 2 * long.len(),
            "a longer resource name grew the record by {grown} bytes over 200 rows"
        );
    }

    #[test]
    fn a_one_row_request_costs_less_than_a_bare_stream() {
        for (signal, batch) in [
            (Signal::Logs, log_batch(&[(1, "one")])),
            (Signal::Spans, spans_with_attributes(0, 1)),
        ] {
            let bare = bare_record(&batch).len();
            let record = encode(signal, &batch).unwrap().len();
            assert!(record < bare * 4 / 5, "{signal}: {record} vs {bare} bytes");
        }
    }

    #[test]
    fn records_from_before_the_format_still_replay() {
        let spans = spans_with_attributes(3, 7);
        let old = bare_record(&spans);
        assert_eq!(decode(Signal::Spans, &old).unwrap(), spans);
    }

    #[test]
    fn records_from_before_the_instance_column_replay_with_it() {
        let spans = with_resources(&spans_with_attributes(0, 3), &[Some("a"), None, Some("b")]);
        let mut old = spans.clone();
        old.remove_column(spans.schema().index_of(INSTANCE).unwrap());
        // The bare format stored every column the schema had then.
        assert_eq!(decode(Signal::Spans, &bare_record(&old)).unwrap(), spans);
        // This format never stores the column: its records are the same
        // before and after it, and replay derives it.
        let record = encode(Signal::Spans, &spans).unwrap();
        let len = u32::from_le_bytes(record[4..8].try_into().unwrap()) as usize;
        let rows = read_one(Signal::Spans, &record[8 + len..]).unwrap();
        assert!(rows.schema().index_of(INSTANCE).is_err());
        assert_eq!(decode(Signal::Spans, &record).unwrap(), spans);
    }

    #[test]
    fn damaged_run_ends_are_refused_not_misread() {
        let names = [Some("a"), Some("b"), Some("a"), Some("b")];
        let spans = with_resources(&spans_with_attributes(0, 4), &names);
        let column = resource_column(Signal::Spans).unwrap();
        let maps = spans.column(column).clone();
        for ends in [vec![1u32, 1, 2, 4], vec![1, 2, 3, 5], vec![1, 2, 3, 3]] {
            let run_batch = RecordBatch::try_new(
                run_schema(),
                vec![maps.clone(), Arc::new(UInt32Array::from(ends.clone()))],
            )
            .unwrap();
            let err = run_indices(Signal::Spans, &run_batch, 4).unwrap_err();
            assert!(err.to_string().contains("WAL record"), "{ends:?}: {err}");
        }
        let payload = encode(Signal::Spans, &spans).unwrap();
        assert!(decode(Signal::Spans, &payload[..payload.len() - 100]).is_err());
        assert!(decode(Signal::Spans, &payload[..6]).is_err());
    }
}
