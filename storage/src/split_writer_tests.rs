//! Unit tests of split writing: hours and sort order, page and row-group
//! limits, encodings, compression and statistics per column.

use super::*;
use crate::test_batches::log_batch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

#[test]
fn splits_by_hour_and_sorts_by_service_then_time() {
    let h = NANOS_PER_HOUR;
    let batch = log_batch(&[(h + 5, "b"), (h + 1, "b"), (2 * h + 3, "a"), (h + 2, "a")]);
    let splits = encode_splits(Signal::Logs, &[batch]).unwrap();
    assert_eq!(splits.len(), 2);
    let first = &splits[0];
    assert_eq!(
        (
            first.meta.min_time,
            first.meta.max_time,
            first.meta.row_count
        ),
        (h + 1, h + 5, 3)
    );
    assert_eq!(first.meta.services, vec!["a".to_string(), "b".to_string()]);
    assert!(first.meta.path.starts_with("logs/date=1970-01-01/hour=01/"));

    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(first.bytes.clone()))
        .unwrap()
        .build()
        .unwrap();
    let read: Vec<RecordBatch> = reader.collect::<std::result::Result<_, _>>().unwrap();
    let read = arrow::compute::concat_batches(&Signal::Logs.schema(), &read).unwrap();
    assert_eq!(read.schema(), Signal::Logs.schema());
    let times = time_values(Signal::Logs, &read).unwrap();
    assert_eq!(times.values().to_vec(), vec![h + 2, h + 1, h + 5]);
}

/// Rows per data page of `column` in each row group of `file`, from
/// its offset index.
fn page_rows(file: &[u8], column: &str) -> Vec<i64> {
    use parquet::arrow::arrow_reader::ArrowReaderOptions;
    use parquet::file::metadata::PageIndexPolicy;
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new_with_options(Bytes::from(file.to_vec()), options)
            .unwrap();
    let meta = builder.metadata();
    let idx = builder.schema().index_of(column).unwrap();
    let offsets = meta.offset_index().expect("files carry an offset index");
    let mut out = Vec::new();
    for (group, columns) in offsets.iter().enumerate() {
        let locations = columns[idx].page_locations();
        let group_rows = meta.row_group(group).num_rows();
        for (i, page) in locations.iter().enumerate() {
            let end = locations
                .get(i + 1)
                .map_or(group_rows, |next| next.first_row_index);
            out.push(end - page.first_row_index);
        }
    }
    out
}

#[test]
fn compaction_writes_larger_body_pages() {
    let rows: Vec<(i64, &str)> = (0..12_000i64).map(|i| (i, "svc")).collect();
    let mut batch = log_batch(&rows);
    let body: Vec<String> = (0..rows.len())
        .map(|i| format!("{i:08} {}", "word ".repeat(80)))
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[batch.schema().index_of("body").unwrap()] =
        std::sync::Arc::new(arrow::array::StringArray::from(body));
    batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
    let pages = |effort| {
        let split = encode_splits_with(Signal::Logs, std::slice::from_ref(&batch), effort)
            .unwrap()
            .remove(0);
        page_rows(&split.bytes, "body").len()
    };
    // 5 MB of bodies: five pages at a flush, two once compacted.
    assert!(pages(Effort::Flush) >= 4);
    assert!(pages(Effort::Compaction) <= 2);
}

#[test]
fn logs_pages_are_size_based_and_spans_pages_row_capped() {
    let n = 3 * PAGE_ROWS;
    let rows: Vec<(i64, &str)> = (0..n as i64).map(|i| (i, "svc")).collect();
    let logs = encode_splits(Signal::Logs, &[log_batch(&rows)]).unwrap();
    let pages = page_rows(&logs[0].bytes, "service");
    assert!(
        pages.iter().any(|r| *r > PAGE_ROWS as i64),
        "logs pages are not capped at {PAGE_ROWS} rows: {pages:?}"
    );

    let spans = encode_splits(Signal::Spans, &[crate::test_batches::span_batch(n)]).unwrap();
    let pages = page_rows(&spans[0].bytes, "service");
    assert!(pages.len() >= 3, "{pages:?}");
    assert!(
        pages.iter().all(|r| *r <= PAGE_ROWS as i64),
        "spans pages hold at most {PAGE_ROWS} rows: {pages:?}"
    );
}

/// The metadata of the first row group of `batch` written as one split.
fn first_row_group(
    signal: Signal,
    batch: &RecordBatch,
    effort: Effort,
) -> parquet::file::metadata::RowGroupMetaData {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let split = encode_splits_with(signal, std::slice::from_ref(batch), effort)
        .unwrap()
        .remove(0);
    let reader = SerializedFileReader::new(Bytes::from(split.bytes)).unwrap();
    reader.metadata().row_group(0).clone()
}

#[test]
fn unprunable_columns_carry_no_statistics_but_keep_their_page_offsets() {
    let rows: Vec<(i64, &str)> = (0..100i64).map(|i| (i, "svc")).collect();
    for (signal, batch) in [
        (Signal::Logs, log_batch(&rows)),
        (Signal::Spans, crate::test_batches::span_batch(100)),
    ] {
        for effort in [Effort::Flush, Effort::Compaction] {
            let group = first_row_group(signal, &batch, effort);
            let unprunable = unprunable_columns(signal);
            let columns = group.columns();
            for path in &unprunable {
                assert!(
                    columns.iter().any(|c| c.column_path() == path),
                    "{signal:?} has no column {path}"
                );
            }
            for column in columns {
                let path = column.column_path();
                assert_eq!(
                    column.statistics().is_none(),
                    unprunable.contains(path),
                    "{signal:?} {path}"
                );
            }
        }
    }
    // A phrase check still reads only its rows' pages of `body`.
    let logs = encode_splits(Signal::Logs, &[log_batch(&rows)]).unwrap();
    assert_eq!(page_rows(&logs[0].bytes, "body").iter().sum::<i64>(), 100);
}

#[test]
fn dimensions_and_span_times_are_written_without_zstd() {
    for signal in Signal::ALL {
        for name in uncompressed_columns(signal) {
            assert!(signal.schema().index_of(name).is_ok(), "{signal:?} {name}");
        }
    }
    assert_eq!(
        uncompressed_columns(Signal::Logs),
        ["service", "instance", "severity_text", "event_name"]
    );
    assert_eq!(
        uncompressed_columns(Signal::Spans),
        [
            "service",
            "instance",
            "name",
            "kind",
            "status_code",
            "start_time",
            "end_time",
            "duration_ns"
        ]
    );
    let rows: Vec<(i64, &str)> = (0..100i64).map(|i| (i, "svc")).collect();
    let batches = [
        (Signal::Logs, log_batch(&rows)),
        (Signal::Spans, crate::test_batches::span_batch(100)),
    ];
    for (signal, batch) in batches {
        for effort in [Effort::Flush, Effort::Compaction] {
            let group = first_row_group(signal, &batch, effort);
            let plain = uncompressed_columns(signal);
            for column in group.columns() {
                let path = column.column_path().string();
                let expected = plain.contains(&path.as_str());
                assert_eq!(
                    column.compression() == Compression::UNCOMPRESSED,
                    expected,
                    "{signal:?} {effort:?} {path}: {:?}",
                    column.compression()
                );
            }
        }
    }
}

#[test]
fn span_times_and_durations_are_delta_packed() {
    // Durations from 1 µs to about 2 s, in no order.
    let batch = crate::test_batches::span_batch(500);
    let durations: Vec<i64> = (0..500i64)
        .map(|i| 1_000 + (i * 7_919_333) % 2_000_000_000)
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[batch.schema().index_of("duration_ns").unwrap()] =
        std::sync::Arc::new(Int64Array::from(durations.clone()));
    let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
    for effort in [Effort::Flush, Effort::Compaction] {
        let group = first_row_group(Signal::Spans, &batch, effort);
        for name in ["start_time", "end_time", "duration_ns"] {
            let column = group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap();
            assert!(
                column
                    .encodings()
                    .any(|e| e == Encoding::DELTA_BINARY_PACKED),
                "{name} is not delta-packed: {:?}",
                column.encodings().collect::<Vec<_>>()
            );
            assert!(column.dictionary_page_offset().is_none(), "{name}");
        }
    }
    // The values read back as written.
    let split = encode_splits(Signal::Spans, std::slice::from_ref(&batch))
        .unwrap()
        .remove(0);
    let read: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(split.bytes))
        .unwrap()
        .build()
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap();
    let read = arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
    let read = read.column_by_name("duration_ns").unwrap();
    assert_eq!(
        read.as_primitive::<Int64Type>().values().to_vec(),
        durations
    );
}

#[test]
fn log_span_ids_are_plain_while_trace_ids_keep_a_dictionary() {
    let rows: Vec<(i64, &str)> = (0..300i64).map(|i| (i, "svc")).collect();
    let batch = log_batch(&rows);
    let mut columns = batch.columns().to_vec();
    for (name, id) in [("trace_id", 32), ("span_id", 16)] {
        // Ten lines per trace; a span id each.
        let values = (0..rows.len()).map(|i| {
            let n = if name == "trace_id" { i / 10 } else { i };
            format!("{n:0id$x}")
        });
        columns[batch.schema().index_of(name).unwrap()] =
            std::sync::Arc::new(arrow::array::StringArray::from_iter_values(values));
    }
    let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
    for effort in [Effort::Flush, Effort::Compaction] {
        let group = first_row_group(Signal::Logs, &batch, effort);
        let dictionary = |name: &str| {
            let column = group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap();
            column.dictionary_page_offset().is_some()
        };
        assert!(!dictionary("span_id"));
        assert!(dictionary("trace_id"));
    }
}
