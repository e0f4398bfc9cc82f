//! Compaction's merge: a k-way merge of split files that are each sorted
//! by service then time, streamed into new split files. Each input is read
//! a small batch at a time (fewer rows when its rows are wide) and the
//! output's Parquet row groups and index are written as they fill, so the
//! memory a merge takes is bounded by its inputs' count, not by how much
//! their data expands from its compressed size.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampNanosecondType;
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::error::{Result, StorageError};
use crate::schema::Signal;
use crate::split_writer::{Effort, EncodedSplit, SplitBuilder};

/// Decoded bytes held per input file at a time.
const INPUT_BATCH_BYTES: usize = 2 << 20;
/// Decoded bytes of merged rows gathered before they go to the writer.
const OUTPUT_BATCH_BYTES: usize = 4 << 20;
/// Rows per batch, at most, on either side.
const MAX_BATCH_ROWS: usize = 8192;

/// When a merged file is full and the next one starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileLimits {
    pub rows: u64,
    /// Parquet bytes (compressed).
    pub bytes: u64,
}

/// One input file, read a batch at a time, with its current row.
struct Cursor {
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    row: usize,
    /// Decoded bytes per row of `batch`, an estimate for batching.
    row_bytes: usize,
}

impl Cursor {
    fn open(signal: Signal, file: Bytes) -> Result<Option<Cursor>> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let meta = builder.metadata();
        let rows: i64 = meta.row_groups().iter().map(|g| g.num_rows()).sum();
        let raw: i64 = meta.row_groups().iter().map(|g| g.total_byte_size()).sum();
        let file_row_bytes = (raw.max(1) / rows.max(1)).max(1) as usize;
        let batch_rows = (INPUT_BATCH_BYTES / file_row_bytes).clamp(1, MAX_BATCH_ROWS);
        let mut reader = builder.with_batch_size(batch_rows).build()?;
        match next_nonempty(&mut reader)? {
            Some(batch) => {
                check_schema(signal, &batch)?;
                Ok(Some(Cursor {
                    reader,
                    row_bytes: row_bytes(&batch),
                    batch,
                    row: 0,
                }))
            }
            None => Ok(None),
        }
    }

    fn key(&self, signal: Signal) -> Result<(&str, i64)> {
        key_at(signal, &self.batch, self.row)
    }
}

fn next_nonempty(reader: &mut ParquetRecordBatchReader) -> Result<Option<RecordBatch>> {
    for batch in reader.by_ref() {
        let batch = batch?;
        if batch.num_rows() > 0 {
            return Ok(Some(batch));
        }
    }
    Ok(None)
}

fn check_schema(signal: Signal, batch: &RecordBatch) -> Result<()> {
    if batch.schema().fields() != signal.schema().fields() {
        return Err(StorageError::Schema {
            signal,
            reason: "a split file's columns differ from the table schema".into(),
        });
    }
    Ok(())
}

/// The sort key (service, time) of one row.
fn key_at(signal: Signal, batch: &RecordBatch, row: usize) -> Result<(&str, i64)> {
    let schema_error = |reason: &str| StorageError::Schema {
        signal,
        reason: reason.into(),
    };
    let service = batch
        .column_by_name("service")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| schema_error("service is not text"))?;
    let time = batch
        .column_by_name(signal.time_column())
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| schema_error("time is not a timestamp"))?;
    Ok((service.value(row), time.value(row)))
}

/// Merged rows not yet handed to the writer: `(input, row)` pairs into
/// the inputs' current batches.
struct Pending {
    picks: Vec<(usize, usize)>,
    bytes: usize,
}

/// Merges `files` (split files of `signal` and of the one hour `hour`,
/// each sorted by service then time) into new files of at most `limits`.
pub(crate) fn merge_files(
    signal: Signal,
    hour: i64,
    files: Vec<Bytes>,
    limits: FileLimits,
) -> Result<Vec<EncodedSplit>> {
    let mut cursors: Vec<Cursor> = Vec::with_capacity(files.len());
    for file in files {
        if let Some(cursor) = Cursor::open(signal, file)? {
            cursors.push(cursor);
        }
    }
    let mut heap = BinaryHeap::new();
    for (i, cursor) in cursors.iter().enumerate() {
        let (service, time) = cursor.key(signal)?;
        heap.push(Reverse((service.to_owned(), time, i)));
    }
    let mut out = Output {
        signal,
        hour,
        limits,
        current: None,
        done: Vec::new(),
    };
    let mut pending = Pending {
        picks: Vec::new(),
        bytes: 0,
    };
    while let Some(Reverse((_, _, i))) = heap.pop() {
        // Take rows from input i while they sort before every other input's next row.
        let next_other = heap.peek().map(|Reverse((s, t, _))| (s.clone(), *t));
        loop {
            let cursor = &mut cursors[i];
            pending.picks.push((i, cursor.row));
            pending.bytes += cursor.row_bytes;
            cursor.row += 1;
            if pending.picks.len() >= MAX_BATCH_ROWS || pending.bytes >= OUTPUT_BATCH_BYTES {
                out.write(&cursors, &mut pending)?;
            }
            let cursor = &mut cursors[i];
            if cursor.row == cursor.batch.num_rows() {
                // The batch is about to be replaced: what points into it goes first.
                out.write(&cursors, &mut pending)?;
                let cursor = &mut cursors[i];
                match next_nonempty(&mut cursor.reader)? {
                    Some(batch) => {
                        check_schema(signal, &batch)?;
                        cursor.row_bytes = row_bytes(&batch);
                        cursor.batch = batch;
                        cursor.row = 0;
                    }
                    None => break,
                }
            }
            let key = cursors[i].key(signal)?;
            let before_others = next_other
                .as_ref()
                .is_none_or(|(s, t)| (key.0, key.1) <= (s.as_str(), *t));
            if !before_others {
                heap.push(Reverse((key.0.to_owned(), key.1, i)));
                break;
            }
        }
    }
    out.write(&cursors, &mut pending)?;
    out.finish()
}

/// Decoded bytes per row of `batch`, an estimate for batching.
fn row_bytes(batch: &RecordBatch) -> usize {
    (batch.get_array_memory_size() / batch.num_rows().max(1)).max(1)
}

/// The files being written.
struct Output {
    signal: Signal,
    hour: i64,
    limits: FileLimits,
    current: Option<SplitBuilder>,
    done: Vec<EncodedSplit>,
}

impl Output {
    fn write(&mut self, cursors: &[Cursor], pending: &mut Pending) -> Result<()> {
        if pending.picks.is_empty() {
            return Ok(());
        }
        let batches: Vec<&RecordBatch> = cursors.iter().map(|c| &c.batch).collect();
        let merged = arrow::compute::interleave_record_batch(&batches, &pending.picks)?;
        pending.picks.clear();
        pending.bytes = 0;
        if self.current.is_none() {
            self.current = Some(SplitBuilder::new(
                self.signal,
                self.hour,
                Effort::Compaction,
            )?);
        }
        if let Some(file) = self.current.as_mut() {
            file.write(&merged)?;
            if file.rows() >= self.limits.rows || file.bytes() as u64 >= self.limits.bytes {
                self.close_current()?;
            }
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(file) = self.current.take() {
            self.done.push(file.finish()?);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<EncodedSplit>> {
        self.close_current()?;
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split_writer::encode_splits;
    use crate::test_batches::log_batch;

    fn times_and_services(files: &[EncodedSplit]) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for f in files {
            let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(f.bytes.clone()))
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                for row in 0..batch.num_rows() {
                    let (s, t) = key_at(Signal::Logs, &batch, row).unwrap();
                    out.push((s.to_string(), t));
                }
            }
        }
        out
    }

    #[test]
    fn merges_sorted_files_into_one_sorted_file_with_its_index() {
        let inputs = [
            log_batch(&[(5, "b"), (1, "a"), (9, "c")]),
            log_batch(&[(2, "a"), (3, "b"), (4, "b")]),
            log_batch(&[(7, "a")]),
        ];
        let files: Vec<Bytes> = inputs
            .iter()
            .map(|b| {
                Bytes::from(
                    encode_splits(Signal::Logs, std::slice::from_ref(b))
                        .unwrap()
                        .remove(0)
                        .bytes,
                )
            })
            .collect();
        let limits = FileLimits {
            rows: 1 << 20,
            bytes: 1 << 30,
        };
        let merged = merge_files(Signal::Logs, 0, files.clone(), limits).unwrap();
        assert_eq!(merged.len(), 1);
        let want: Vec<(String, i64)> = [
            ("a", 1),
            ("a", 2),
            ("a", 7),
            ("b", 3),
            ("b", 4),
            ("b", 5),
            ("c", 9),
        ]
        .iter()
        .map(|(s, t)| (s.to_string(), *t))
        .collect();
        assert_eq!(times_and_services(&merged), want);
        let meta = &merged[0].meta;
        assert_eq!((meta.row_count, meta.min_time, meta.max_time), (7, 1, 9));
        assert_eq!(meta.services, vec!["a", "b", "c"]);
        assert!(meta.raw_bytes > 0);
        let index =
            crate::log_index::LogIndex::open(merged[0].index.as_ref().unwrap(), None).unwrap();
        assert_eq!(
            index
                .matching_rows(&crate::log_index::parse_query("service:b").unwrap())
                .unwrap(),
            vec![3, 4, 5]
        );

        // Small file limits cut the output into several files, still in order.
        let small = FileLimits {
            rows: 3,
            bytes: 1 << 30,
        };
        let merged = merge_files(Signal::Logs, 0, files, small).unwrap();
        assert!(merged.len() >= 2, "{}", merged.len());
        assert_eq!(times_and_services(&merged), want);
    }
}
