//! The log lines behind a full-text index, for checking phrases: the index
//! keeps no word positions, so a phrase is narrowed to the rows holding
//! all its words and each of those rows' `body` is read and checked — from
//! the memtable batch, or from the split's Parquet file, reading only the
//! pages of those rows. Trace ids, indexed by prefix, are checked the same
//! way against the `trace_id` column.

use std::ops::Range;
use std::path::PathBuf;

use arrow::array::{Array, AsArray, RecordBatch};
use loupe_search::TextSource;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::file::metadata::PageIndexPolicy;
use tantivy::{DocId, SegmentReader, TantivyError};

/// Where an index's rows' bodies are.
#[derive(Debug)]
pub(crate) enum Bodies {
    /// An index only being written, never searched.
    Unavailable,
    /// A memtable batch.
    Batch(RecordBatch),
    /// The split's Parquet file.
    File(PathBuf),
    /// The split's Parquet file in a remote object store, read through
    /// `runtime` (searches run on blocking threads).
    Remote {
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        path: object_store::path::Path,
        size: u64,
        runtime: tokio::runtime::Handle,
    },
}

fn internal(e: impl std::fmt::Display) -> TantivyError {
    TantivyError::InternalError(format!("reading log bodies: {e}"))
}

impl TextSource for Bodies {
    fn texts(
        &self,
        segment: &SegmentReader,
        column: &str,
        docs: &[DocId],
        each: &mut dyn FnMut(usize, &str),
    ) -> tantivy::Result<()> {
        let row_of = segment.fast_fields().u64("row")?;
        // (row, position in `docs`), by row.
        let mut rows: Vec<(usize, usize)> = docs
            .iter()
            .enumerate()
            .filter_map(|(i, doc)| row_of.first(*doc).map(|row| (row as usize, i)))
            .collect();
        rows.sort_unstable();
        match self {
            Bodies::Unavailable => Err(internal("this index has no rows to read")),
            Bodies::Batch(batch) => {
                let text = batch
                    .column_by_name(column)
                    .and_then(|c| c.as_string_opt::<i32>())
                    .ok_or_else(|| internal(format!("no text column {column}")))?;
                for (row, i) in rows {
                    if row < text.len() && text.is_valid(row) {
                        each(i, text.value(row));
                    }
                }
                Ok(())
            }
            Bodies::File(path) => read_file(path, column, &rows, each),
            Bodies::Remote {
                store,
                path,
                size,
                runtime,
            } => read_remote(store, path, *size, runtime, column, &rows, each),
        }
    }
}

/// Reads `column` of `rows` (ascending) from a Parquet file in an object
/// store, only the pages holding them, batch by batch.
// `ParquetObjectReader` is deprecated in parquet 59 in favour of a
// hand-written `AsyncFileReader`; it still does what is needed here.
#[allow(deprecated)]
fn read_remote(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    path: &object_store::path::Path,
    size: u64,
    runtime: &tokio::runtime::Handle,
    column: &str,
    rows: &[(usize, usize)],
    each: &mut dyn FnMut(usize, &str),
) -> tantivy::Result<()> {
    use futures::StreamExt;
    use parquet::arrow::ParquetRecordBatchStreamBuilder;
    use parquet::arrow::async_reader::ParquetObjectReader;
    if rows.is_empty() {
        return Ok(());
    }
    let reader = ParquetObjectReader::new(store.clone(), path.clone()).with_file_size(size);
    let builder = runtime
        .block_on(ParquetRecordBatchStreamBuilder::new_with_options(
            reader,
            ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional),
        ))
        .map_err(internal)?;
    let total = builder.metadata().file_metadata().num_rows() as usize;
    let ranges = consecutive_ranges(rows, total);
    let mask = ProjectionMask::columns(builder.parquet_schema(), [column]);
    let mut stream = builder
        .with_projection(mask)
        .with_row_selection(RowSelection::from_consecutive_ranges(
            ranges.into_iter(),
            total,
        ))
        .with_batch_size(1024)
        .build()
        .map_err(internal)?;
    let mut next = rows.iter().filter(|(row, _)| *row < total);
    while let Some(batch) = runtime.block_on(stream.next()) {
        if !visit_bodies(&batch.map_err(internal)?, &mut next, each)? {
            break;
        }
    }
    Ok(())
}

/// Reads `column` of `rows` (ascending) from a Parquet file.
fn read_file(
    path: &PathBuf,
    column: &str,
    rows: &[(usize, usize)],
    each: &mut dyn FnMut(usize, &str),
) -> tantivy::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let file =
        std::fs::File::open(path).map_err(|e| internal(format!("{}: {e}", path.display())))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        file,
        ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional),
    )
    .map_err(internal)?;
    let total = builder.metadata().file_metadata().num_rows() as usize;
    let ranges = consecutive_ranges(rows, total);
    let mask = ProjectionMask::columns(builder.parquet_schema(), [column]);
    let reader = builder
        .with_projection(mask)
        .with_row_selection(RowSelection::from_consecutive_ranges(
            ranges.into_iter(),
            total,
        ))
        .with_batch_size(1024)
        .build()
        .map_err(internal)?;
    let mut next = rows.iter().filter(|(row, _)| *row < total);
    for batch in reader {
        if !visit_bodies(&batch.map_err(internal)?, &mut next, each)? {
            break;
        }
    }
    Ok(())
}

/// The selected rows (ascending, those below `total`) as runs of consecutive
/// rows, the shape a Parquet row selection takes.
fn consecutive_ranges(rows: &[(usize, usize)], total: usize) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for (row, _) in rows.iter().filter(|(row, _)| *row < total) {
        match ranges.last_mut() {
            Some(last) if last.end == *row => last.end += 1,
            _ => ranges.push(*row..row + 1),
        }
    }
    ranges
}

/// Hands each text of a batch of the selected rows (one column) to `each`
/// with its caller's index; false once every selected row has been seen.
fn visit_bodies<'a>(
    batch: &arrow::record_batch::RecordBatch,
    next: &mut impl Iterator<Item = &'a (usize, usize)>,
    each: &mut dyn FnMut(usize, &str),
) -> tantivy::Result<bool> {
    let body = batch
        .columns()
        .first()
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| internal("the checked column is not text"))?;
    for r in 0..body.len() {
        let Some((_, i)) = next.next() else {
            return Ok(false);
        };
        if body.is_valid(r) {
            each(*i, body.value(r));
        }
    }
    Ok(true)
}
