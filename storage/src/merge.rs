//! Compaction's merge: a k-way merge of split files that are each sorted
//! by service then time, streamed into new split files. Each input is read
//! a small batch at a time (fewer rows when its rows are wide; from disk a
//! page at a time when the store is local), and the output's Parquet row
//! groups and index are written as they fill; each output file is stored
//! as soon as it is closed, and closed early when it would outgrow the
//! merge's share of the memory budget ([`CompactionMemory`]). So the memory
//! a merge takes is bounded by that share, not by how much its data
//! expands from its compressed size.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampNanosecondType;
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::ChunkReader;

use crate::compaction_memory::{
    CompactionMemory, INPUT_BATCH_BYTES, OUTPUT_BATCH_BYTES, WRITER_OVERHEAD,
};
use crate::error::{Result, StorageError};
use crate::instance;
use crate::schema::Signal;
use crate::split_writer::{Effort, EncodedSplit, SplitBuilder};

/// Rows per batch, at most, on either side.
const MAX_BATCH_ROWS: usize = 8192;

/// When a merged file is full and the next one starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileLimits {
    pub rows: u64,
    /// Parquet bytes (compressed).
    pub bytes: u64,
    /// Memory the file being written may take (its Parquet bytes, its
    /// index, and the index's copy when it is bundled).
    pub memory: usize,
}

/// Where a merge reads one input file.
pub(crate) enum Input {
    /// A file on this machine's disk, read a page at a time.
    Local(PathBuf),
    /// A file fetched whole from a remote store; its bytes count against
    /// the merge's share.
    Fetched(Bytes),
}

impl Input {
    /// Bytes the input holds in memory before any is decoded.
    pub(crate) fn fetched_bytes(&self) -> usize {
        match self {
            Input::Local(_) => 0,
            Input::Fetched(bytes) => bytes.len(),
        }
    }
}

/// One input file, read a batch at a time, with its current row.
struct Cursor {
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    row: usize,
    /// Decoded bytes per row of `batch`, an estimate for batching.
    row_bytes: usize,
}

/// A reader of `builder`'s file in batches of about [`INPUT_BATCH_BYTES`].
fn batch_reader<T: ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<T>,
) -> Result<ParquetRecordBatchReader> {
    let meta = builder.metadata();
    let rows: i64 = meta.row_groups().iter().map(|g| g.num_rows()).sum();
    let raw: i64 = meta.row_groups().iter().map(|g| g.total_byte_size()).sum();
    let file_row_bytes = (raw.max(1) / rows.max(1)).max(1) as usize;
    let batch_rows = (INPUT_BATCH_BYTES / file_row_bytes).clamp(1, MAX_BATCH_ROWS);
    Ok(builder.with_batch_size(batch_rows).build()?)
}

impl Cursor {
    fn open(signal: Signal, input: Input) -> Result<Option<Cursor>> {
        let mut reader = match input {
            Input::Local(path) => {
                let file = std::fs::File::open(&path)
                    .map_err(|e| StorageError::io("open split file", &path, e))?;
                batch_reader(ParquetRecordBatchReaderBuilder::try_new(file)?)?
            }
            Input::Fetched(bytes) => {
                batch_reader(ParquetRecordBatchReaderBuilder::try_new(bytes)?)?
            }
        };
        match next_nonempty(signal, &mut reader)? {
            Some(batch) => Ok(Some(Cursor {
                reader,
                row_bytes: row_bytes(&batch),
                batch,
                row: 0,
            })),
            None => Ok(None),
        }
    }

    fn key(&self, signal: Signal) -> Result<(&str, i64)> {
        key_at(signal, &self.batch, self.row)
    }
}

/// The next batch with rows, in the table's schema: a file written before
/// the `instance` column gets it ([`instance::complete`]); a file with
/// other columns is refused.
fn next_nonempty(
    signal: Signal,
    reader: &mut ParquetRecordBatchReader,
) -> Result<Option<RecordBatch>> {
    for batch in reader.by_ref() {
        let batch = batch?;
        if batch.num_rows() > 0 {
            return instance::complete(signal, batch).map(Some);
        }
    }
    Ok(None)
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

/// Merges `inputs` (split files of `signal` and of the one hour `hour`,
/// each sorted by service then time) into new files of at most `limits`,
/// handing each to `store` as soon as it is closed; what the merge holds
/// is kept up to date in `memory`.
pub(crate) fn merge_files(
    signal: Signal,
    hour: i64,
    inputs: Vec<Input>,
    limits: FileLimits,
    memory: &CompactionMemory,
    store: &mut dyn FnMut(EncodedSplit) -> Result<()>,
) -> Result<()> {
    let fetched: usize = inputs.iter().map(Input::fetched_bytes).sum();
    let mut cursors: Vec<Cursor> = Vec::with_capacity(inputs.len());
    for input in inputs {
        if let Some(cursor) = Cursor::open(signal, input)? {
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
        last_growth: 0,
        fetched,
        memory,
        store,
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
                match next_nonempty(signal, &mut cursor.reader)? {
                    Some(batch) => {
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
    out.close_current()?;
    memory.set(0);
    Ok(())
}

/// Decoded bytes per row of `batch`, an estimate for batching.
fn row_bytes(batch: &RecordBatch) -> usize {
    (batch.get_array_memory_size() / batch.num_rows().max(1)).max(1)
}

/// The file being written, and where closed files go.
struct Output<'a> {
    signal: Signal,
    hour: i64,
    limits: FileLimits,
    current: Option<SplitBuilder>,
    /// How much the file's memory grew with the last batch written: the
    /// file is closed when the next one might not fit.
    last_growth: usize,
    /// Bytes of inputs fetched whole.
    fetched: usize,
    memory: &'a CompactionMemory,
    store: &'a mut dyn FnMut(EncodedSplit) -> Result<()>,
}

impl Output<'_> {
    fn write(&mut self, cursors: &[Cursor], pending: &mut Pending) -> Result<()> {
        if pending.picks.is_empty() {
            return Ok(());
        }
        let batches: Vec<&RecordBatch> = cursors.iter().map(|c| &c.batch).collect();
        let merged = crate::interleave::interleave_rows(&batches, &pending.picks)?;
        pending.picks.clear();
        pending.bytes = 0;
        if self.current.is_none() {
            // Room for the file's target size (and its last row group
            // and footer past it), unless its memory bound comes first.
            let capacity = (self.limits.bytes as usize)
                .saturating_add(self.limits.bytes as usize / 8 + (1 << 20))
                .min(self.limits.memory);
            self.current = Some(SplitBuilder::new(
                self.signal,
                self.hour,
                Effort::Compaction,
                capacity,
            )?);
            self.last_growth = 0;
        }
        let Some(file) = self.current.as_mut() else {
            return Ok(());
        };
        let before = file.memory();
        file.write(&merged)?;
        let file_memory = file.memory();
        self.last_growth = file_memory.saturating_sub(before);
        let reading: usize = cursors
            .iter()
            .map(|c| c.batch.get_array_memory_size())
            .sum();
        self.memory.set(
            self.fetched + reading + merged.get_array_memory_size() + file_memory + WRITER_OVERHEAD,
        );
        if file.rows() >= self.limits.rows
            || file.bytes() as u64 >= self.limits.bytes
            || file_memory + self.last_growth >= self.limits.memory
        {
            self.close_current()?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(file) = self.current.take() {
            (self.store)(file.finish()?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split_writer::encode_splits;
    use crate::test_batches::{log_batch, with_instances, without_instance, wordy_log_batch};

    const WIDE: FileLimits = FileLimits {
        rows: 1 << 20,
        bytes: 64 << 20,
        memory: usize::MAX,
    };

    /// Merges `inputs` as compaction does, keeping every file written.
    fn merge(
        signal: Signal,
        inputs: Vec<Input>,
        limits: FileLimits,
        memory: &CompactionMemory,
    ) -> Vec<EncodedSplit> {
        let mut out = Vec::new();
        merge_files(
            signal,
            0,
            inputs,
            limits,
            memory,
            &mut |split: EncodedSplit| {
                out.push(split);
                Ok(())
            },
        )
        .unwrap();
        out
    }

    fn fetched(files: &[Bytes]) -> Vec<Input> {
        files.iter().cloned().map(Input::Fetched).collect()
    }

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
        let memory = CompactionMemory::new(usize::MAX);
        let merged = merge(Signal::Logs, fetched(&files), WIDE, &memory);
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
        let small = FileLimits { rows: 3, ..WIDE };
        let merged = merge(Signal::Logs, fetched(&files), small, &memory);
        assert!(merged.len() >= 2, "{}", merged.len());
        assert_eq!(times_and_services(&merged), want);
    }

    #[test]
    fn files_from_before_the_instance_column_merge_with_it() {
        let new = with_instances(&log_batch(&[(1, "a"), (3, "a")]), &[Some("a-1"), None]);
        let old = with_instances(
            &log_batch(&[(2, "a"), (4, "a")]),
            &[Some("a-2"), Some("a-3")],
        );
        let mut written = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            &mut written,
            without_instance(&old).schema(),
            None,
        )
        .unwrap();
        writer.write(&without_instance(&old)).unwrap();
        writer.close().unwrap();
        let encoded = encode_splits(Signal::Logs, std::slice::from_ref(&new))
            .unwrap()
            .remove(0)
            .bytes;
        let files = [Bytes::from(encoded), Bytes::from(written)];

        let memory = CompactionMemory::new(usize::MAX);
        let merged = merge(Signal::Logs, fetched(&files), WIDE, &memory);
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(merged[0].bytes.clone()))
            .unwrap()
            .build()
            .unwrap();
        let mut instances = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            assert_eq!(batch.schema().fields(), Signal::Logs.schema().fields());
            let column = batch.column_by_name(crate::schema::INSTANCE).unwrap();
            instances.extend(
                column
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(String::from)),
            );
        }
        let want = [Some("a-1"), Some("a-2"), None, Some("a-3")];
        assert_eq!(instances, want.map(|v| v.map(String::from)));
    }

    #[test]
    fn a_merge_stays_within_its_memory_share_by_closing_files_early() {
        const ROWS: usize = 40_000;
        const LIMIT: usize = 64 << 20;
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (i, service) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let batch = wordy_log_batch(service, i as i64, ROWS);
            let file = encode_splits(Signal::Logs, &[batch]).unwrap().remove(0);
            let path = dir.path().join(format!("{i}.parquet"));
            std::fs::write(&path, &file.bytes).unwrap();
            files.push((path, Bytes::from(file.bytes)));
        }
        let memory = CompactionMemory::new(LIMIT);
        let file_memory = memory.file_memory(files.len(), 0).unwrap();
        let limits = FileLimits {
            memory: file_memory,
            ..WIDE
        };
        let local = files.iter().map(|(p, _)| Input::Local(p.clone())).collect();
        let merged = merge(Signal::Logs, local, limits, &memory);
        assert!(merged.len() >= 2, "{} files", merged.len());
        assert!(memory.peak() <= LIMIT, "{} > {LIMIT}", memory.peak());
        assert_eq!(memory.used(), 0);
        // What each file came to is within what was counted for it.
        for f in &merged {
            let written = f.bytes.len() + 2 * f.index.as_ref().map_or(0, Vec::len);
            assert!(written <= file_memory, "{written} > {file_memory}");
        }
        // Every row, once, in order.
        let rows = times_and_services(&merged);
        assert_eq!(rows.len(), 4 * ROWS);
        assert!(rows.is_sorted());

        // Unbounded, the same merge is one file that holds more than the share.
        let whole = CompactionMemory::new(usize::MAX);
        let fetched = files.into_iter().map(|(_, b)| Input::Fetched(b)).collect();
        assert_eq!(merge(Signal::Logs, fetched, WIDE, &whole).len(), 1);
        assert!(whole.peak() > LIMIT, "{}", whole.peak());
    }
}
