//! Turns a signal's memtable batches into Parquet files ("splits"): sorted by
//! service then time, one file per hour of data, zstd-compressed, with page
//! statistics for the columns queries prune by — plus, beside each file, the
//! index that finds rows by more than time: a full-text index for logs, a
//! trace-id index for spans.

use std::collections::BTreeSet;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Int64Type, TimestampNanosecondType};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::catalog::SplitMeta;
use crate::error::{Result, StorageError};
use crate::file_order::{FileOrder, file_order};
use crate::interleave::interleave_rows;
use crate::schema::{DIMENSIONS, Signal};

pub(crate) const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
/// Rows per Parquet row group: every row group but a file's last has
/// exactly this many, which lets a search turn row numbers into row-group
/// selections without reading the footer.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Rows per row group of spans and metrics, smaller than logs': files are
/// sorted by service, so one trace's spans sit in a row group per service it
/// touched, and reading them costs a page per column in each.
/// Logs keep [`ROW_GROUP_ROWS`] because search maps index rows onto it.
const SPAN_ROW_GROUP_ROWS: usize = 64 * 1024;

/// Rows per data page of spans and metrics: a trace lookup selects a few
/// rows through the trace index and then decodes one small page per column
/// instead of a megabyte. (Logs keep parquet's size-based pages, which
/// compress better; their reads are mostly whole ranges.)
const PAGE_ROWS: usize = 8 * 1024;

/// Rows a logs writer takes between checks of its page size limits.
const LOG_WRITE_BATCH_ROWS: usize = 64;

/// Rows per row group (all but a file's last) of `signal`'s files.
pub fn row_group_rows(signal: Signal) -> usize {
    match signal {
        Signal::Logs => ROW_GROUP_ROWS,
        Signal::Spans | Signal::Metrics => SPAN_ROW_GROUP_ROWS,
    }
}

/// A Parquet file ready to be stored, with its catalog row.
pub struct EncodedSplit {
    /// The catalog row, committed only after the files are stored.
    pub meta: SplitMeta,
    /// The Parquet file, for `meta.path`.
    pub bytes: Vec<u8>,
    /// The full-text index bundle of a logs split, for `meta.index_path`.
    pub index: Option<Vec<u8>>,
}

/// Encodes `batches` (all of `signal`'s schema) into one split per hour.
pub fn encode_splits(signal: Signal, batches: &[RecordBatch]) -> Result<Vec<EncodedSplit>> {
    encode_splits_with(signal, batches, Effort::Flush)
}

/// [`encode_splits`] at a given compression effort.
pub(crate) fn encode_splits_with(
    signal: Signal,
    batches: &[RecordBatch],
    effort: Effort,
) -> Result<Vec<EncodedSplit>> {
    let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    // The rows are copied once, in file order and a slice at a time, from
    // the batches themselves (concatenating them first doubled a flush's
    // memory).
    let times = batches
        .iter()
        .map(|b| time_values(signal, b))
        .collect::<Result<Vec<_>>>()?;
    let services = batches
        .iter()
        .map(|b| {
            b.column_by_name("service")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| StorageError::Schema {
                    signal,
                    reason: "missing text column service".into(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let FileOrder {
        rows: positions,
        hours,
    } = file_order(&times, &services);
    let mut splits = Vec::new();
    for (start, len) in runs(&hours) {
        let mut split = SplitBuilder::new(signal, hours[start], effort, 0)?;
        for rows in positions[start..start + len].chunks(FLUSH_SLICE_ROWS) {
            split.write(&interleave_rows(&batches, rows)?)?;
        }
        splits.push(split.finish()?);
    }
    Ok(splits)
}

/// Rows a flush copies into file order at a time.
const FLUSH_SLICE_ROWS: usize = 16 * 1024;

/// `(start, len)` of each run of equal values.
fn runs(values: &[i64]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < values.len() {
        let mut end = start + 1;
        while end < values.len() && values[end] == values[start] {
            end += 1;
        }
        out.push((start, end - start));
        start = end;
    }
    out
}

/// The hour (since the epoch) of each time; one split file holds one hour.
fn hour_values(time: &Int64Array) -> Int64Array {
    time.iter()
        .map(|t| t.map(|t| t.div_euclid(NANOS_PER_HOUR)))
        .collect()
}

/// The distinct hours `batch`'s rows fall in, ascending (empty if the
/// batch has no time column, which appends refuse).
pub(crate) fn hours(signal: Signal, batch: &RecordBatch) -> Vec<i64> {
    let Ok(time) = time_values(signal, batch) else {
        return Vec::new();
    };
    let set: BTreeSet<i64> = hour_values(&time).iter().flatten().collect();
    set.into_iter().collect()
}

/// The earliest and latest time of `batch`'s rows (`None` when it has none).
pub(crate) fn time_range(signal: Signal, batch: &RecordBatch) -> Option<(i64, i64)> {
    let time = time_values(signal, batch).ok()?;
    Some((arrow::compute::min(&time)?, arrow::compute::max(&time)?))
}

/// Splits `batch` into parts whose rows each fall in at most `max_hours`
/// distinct hours (the batch itself when it already does), so that no
/// flush has to write more than that many files for one batch.
pub(crate) fn split_by_hours(
    signal: Signal,
    batch: &RecordBatch,
    max_hours: usize,
) -> Result<Vec<RecordBatch>> {
    let max_hours = max_hours.max(1);
    let time = time_values(signal, batch)?;
    let hours = hour_values(&time);
    let distinct: BTreeSet<i64> = hours.iter().flatten().collect();
    if distinct.len() <= max_hours {
        return Ok(vec![batch.clone()]);
    }
    let order = arrow::compute::sort_to_indices(&hours, None, None)?;
    let sorted = take_record_batch(batch, &order)?;
    let sorted_hours = arrow::compute::take(&hours, &order, None)?;
    let sorted_hours = sorted_hours.as_primitive::<Int64Type>();
    let mut parts = Vec::new();
    for chunk in runs(sorted_hours.values()).chunks(max_hours) {
        let start = chunk[0].0;
        let len: usize = chunk.iter().map(|(_, len)| len).sum();
        parts.push(sorted.slice(start, len));
    }
    Ok(parts)
}

fn column(signal: Signal, batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| StorageError::Schema {
            signal,
            reason: format!("missing column {name}"),
        })
}

/// The time column as plain i64 nanoseconds.
fn time_values(signal: Signal, batch: &RecordBatch) -> Result<Int64Array> {
    let col = column(signal, batch, signal.time_column())?;
    let ts = col
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| StorageError::Schema {
            signal,
            reason: format!("{} is not a nanosecond timestamp", signal.time_column()),
        })?;
    Ok(ts.reinterpret_cast::<Int64Type>())
}

/// How hard a writer compresses: a flush is on the ingest path and keeps
/// zstd's fastest level; compaction rewrites data off that path and spends
/// more, on log bodies most (on 450 k real lines, body 9.5 MB at level 3,
/// 8.0 MB at 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Flush,
    Compaction,
}

impl Effort {
    /// zstd's level for every column but compacted log bodies. At level 1
    /// rather than 3, flushes took 6 % less server CPU per span, and their
    /// files came out 5 % smaller, not larger (`loupe gen --signals traces`,
    /// 20 s, seed 1, medians of 6 runs: 53.4 against 56.1 MB); the real
    /// log corpus, compacted, stored the same.
    fn zstd_level(self) -> i32 {
        match self {
            Effort::Flush => 1,
            Effort::Compaction => 3,
        }
    }
}

const BODY_ZSTD_LEVEL_COMPACTION: i32 = 9;

/// Bytes of body per data page in compacted files: zstd finds more of a
/// service's repeats in a larger page (450 k real lines, level 9: 8.10 MB
/// in 1 MB pages, 7.76 MB in 4 MB pages). A phrase check decodes whole
/// pages of its candidate rows, about 4 ms more per page.
const BODY_PAGE_BYTES_COMPACTION: usize = 4 << 20;

fn writer_properties(signal: Signal, effort: Effort) -> Result<WriterProperties> {
    let schema = signal.schema();
    let sort_col = |name: &str| -> Result<SortingColumn> {
        let idx = schema.index_of(name)?;
        Ok(SortingColumn {
            column_idx: idx as i32,
            descending: false,
            nulls_first: false,
        })
    };
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(effort.zstd_level())?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows(signal)))
        .set_sorting_columns(Some(vec![
            sort_col("service")?,
            sort_col(signal.time_column())?,
        ]));
    // Comparing every value of these for a page's min/max, statistics no
    // query can use, was 2.7 % of span ingest's CPU; leaving them out made
    // it 4.7 % cheaper.
    for path in unprunable_columns(signal) {
        props = props.set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    if signal == Signal::Logs {
        // Page and dictionary limits are checked once per write batch: at
        // parquet's default of 1,024 rows, wide log lines (tens of KB each)
        // would fill tens of MB of page before a check.
        props = props.set_write_batch_size(LOG_WRITE_BATCH_ROWS);
        // Times sorted within a service differ little row to row: deltas
        // take 0.7 MB where dictionary/plain took 1.7 MB per column (450 k
        // real lines).
        for name in ["time", "observed_time"] {
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(name), false)
                .set_column_encoding(ColumnPath::from(name), Encoding::DELTA_BINARY_PACKED);
        }
        // Log lines rarely repeat whole: a dictionary only costs time
        // before parquet falls back from it.
        let body = ColumnPath::from("body");
        props = props.set_column_dictionary_enabled(body.clone(), false);
        // Nor do span ids: a span writes a line or two. Plain, a flush of
        // 486 k generated lines took 25.3 MB against 26.2 (its CPU saving
        // was within noise).
        props = props.set_column_dictionary_enabled(ColumnPath::from("span_id"), false);
        if effort == Effort::Compaction {
            props = props
                .set_column_compression(
                    body.clone(),
                    Compression::ZSTD(ZstdLevel::try_new(BODY_ZSTD_LEVEL_COMPACTION)?),
                )
                .set_column_data_page_size_limit(body, BODY_PAGE_BYTES_COMPACTION);
        }
    } else {
        props = props.set_data_page_row_count_limit(PAGE_ROWS);
    }
    if signal == Signal::Spans {
        // Every span has its own id, and a parent's id recurs only among
        // its children: a dictionary of them fills up and falls back to
        // plain after hashing every value (a tenth of a flush's Parquet
        // work).
        // Trace ids keep theirs: the spans of a trace in one service share
        // it (1.55 MB against 1.78).
        for name in ["span_id", "parent_span_id"] {
            props = props.set_column_dictionary_enabled(ColumnPath::from(name), false);
        }
        // Start and end times sorted within a service differ little row
        // to row, as log times do: deltas took 0.50 and 0.62 MB where
        // dictionary/plain took 0.91 and 1.00.
        // Durations hardly recur (their dictionary fell back to plain and
        // left pages a third larger than plain alone), nor are they
        // sorted, but deltas bit-pack them into about the bits the range
        // of a page's values needs: 3.36 bytes a span against 3.61 for
        // plain + zstd (2.19 M spans), and a query no longer inflates
        // 8 bytes a span through zstd to read them. That was a quarter of
        // RED per service's CPU; with deltas RED took 20-24 % less time
        // and top-10 slowest operations 17-23 % less.
        for name in ["start_time", "end_time", "duration_ns"] {
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(name), false)
                .set_column_encoding(ColumnPath::from(name), Encoding::DELTA_BINARY_PACKED);
        }
    }
    for name in uncompressed_columns(signal) {
        props = props.set_column_compression(ColumnPath::from(name), Compression::UNCOMPRESSED);
    }
    Ok(props.build())
}

/// Columns written without zstd: [`DIMENSIONS`] (few distinct values, so
/// dictionary-encoded as runs and bit-packed keys) and span times and
/// durations (delta bit-packed), which their encodings already shrink.
///
/// Reading a zstd column chunk makes parquet build a codec holding a zstd
/// compressor and a decompressor (`ZSTDCodec::new`), per chunk and query,
/// and inflate every page. RED per service over one small-scale file
/// (184 k spans, three row groups, four of these columns) spent 4 % of its
/// CPU creating those contexts alone; without zstd here it took 7-8 % less
/// time (6.92 -> 6.45 ms, top-10 slowest operations 5.95 -> 5.48 ms, 41
/// alternated runs) for 1 % more span Parquet (7.09 -> 7.16 MB) and
/// 0.3 % more log Parquet.
fn uncompressed_columns(signal: Signal) -> Vec<&'static str> {
    let times: &[&'static str] = match signal {
        Signal::Spans => &["start_time", "end_time", "duration_ns"],
        Signal::Logs | Signal::Metrics => &[],
    };
    let schema = signal.schema();
    DIMENSIONS
        .into_iter()
        .filter(|name| schema.index_of(name).is_ok())
        .chain(times.iter().copied())
        .collect()
}

/// Columns whose min/max can never prune a page, so Parquet is spared
/// comparing every value for them: random ids, free text and JSON matched
/// inside, and attribute maps' entries, which are read through a function
/// no pruning predicate sees into.
fn unprunable_columns(signal: Signal) -> Vec<ColumnPath> {
    let own: &[&str] = match signal {
        Signal::Logs => &["body", "span_id"],
        Signal::Spans => &[
            "span_id",
            "parent_span_id",
            "trace_state",
            "status_message",
            "events",
            "links",
        ],
        Signal::Metrics => &[],
    };
    let map_leaves = ["attributes", "resource_attributes"]
        .into_iter()
        .flat_map(|map| {
            ["keys", "values"]
                .map(|leaf| ColumnPath::new(vec![map.into(), "entries".into(), leaf.into()]))
        });
    own.iter()
        .map(|name| ColumnPath::from(*name))
        .chain(map_leaves)
        .collect()
}

/// The index written beside a split, built as its rows arrive.
enum IndexBuilder {
    Logs(Box<crate::log_index::LogIndexBuilder>),
    Spans(crate::trace_index::TraceIndexBuilder),
    None,
}

/// One split file being written: rows arrive in file order (sorted by
/// service, then time) in as many batches as the caller likes; Parquet row
/// groups are written as they fill, and the index grows alongside. Flushes
/// write a file in one go; compaction streams merged rows through it.
pub struct SplitBuilder {
    signal: Signal,
    hour: i64,
    effort: Effort,
    writer: ArrowWriter<Vec<u8>>,
    index: IndexBuilder,
    min_time: i64,
    max_time: i64,
    rows: u64,
    services: BTreeSet<String>,
}

#[cfg(test)]
/// A body that makes encoding fail, so tests can send a batch that can
/// never be flushed (no real input is known to do this).
pub(crate) const POISON_BODY: &str = "\u{0}loupe-test-poison";

impl SplitBuilder {
    /// A new file for rows of `hour` (hours since the epoch), with room
    /// for `capacity` bytes of Parquet: a file that grows within it is
    /// never copied to a larger buffer (which for a moment holds it twice).
    pub fn new(signal: Signal, hour: i64, effort: Effort, capacity: usize) -> Result<Self> {
        let writer = ArrowWriter::try_new(
            Vec::with_capacity(capacity),
            signal.schema(),
            Some(writer_properties(signal, effort)?),
        )?;
        let index = match signal {
            // A flush's rows are bounded by the unflushed share, a merge's
            // file by the compaction share ([`SplitBuilder::memory`]).
            Signal::Logs => IndexBuilder::Logs(Box::new(
                crate::log_index::LogIndexBuilder::in_one_segment(0)?,
            )),
            Signal::Spans => IndexBuilder::Spans(Default::default()),
            Signal::Metrics => IndexBuilder::None,
        };
        Ok(SplitBuilder {
            signal,
            hour,
            effort,
            writer,
            index,
            min_time: i64::MAX,
            max_time: i64::MIN,
            rows: 0,
            services: BTreeSet::new(),
        })
    }

    /// Appends the next rows of the file.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let signal = self.signal;
        #[cfg(test)]
        if signal == Signal::Logs
            && let Some(body) = batch
                .column_by_name("body")
                .and_then(|c| c.as_string_opt::<i32>())
            && body.iter().flatten().any(|b| b == POISON_BODY)
        {
            return Err(StorageError::Internal("poisoned test batch".into()));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let time = time_values(signal, batch)?;
        if let Some(min) = arrow::compute::min(&time) {
            self.min_time = self.min_time.min(min);
        }
        if let Some(max) = arrow::compute::max(&time) {
            self.max_time = self.max_time.max(max);
        }
        if let Some(service) = column(signal, batch, "service")?.as_string_opt::<i32>() {
            for s in service.iter().flatten() {
                if !self.services.contains(s) {
                    self.services.insert(s.to_owned());
                }
            }
        }
        self.writer.write(batch)?;
        match &mut self.index {
            IndexBuilder::Logs(index) => index.add(batch)?,
            IndexBuilder::Spans(index) => {
                let ids = column(signal, batch, "trace_id")?;
                let ids = ids
                    .as_string_opt::<i32>()
                    .ok_or_else(|| StorageError::Schema {
                        signal,
                        reason: "trace_id is not a string column".into(),
                    })?;
                index.add(ids);
            }
            IndexBuilder::None => {}
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes of Parquet written so far plus the row group being filled.
    pub fn bytes(&self) -> usize {
        self.writer.bytes_written() + self.writer.in_progress_size()
    }

    /// Memory the file takes by the time it is finished: its Parquet
    /// bytes so far, the row group being encoded, and its index twice (the
    /// index being built, then its bundle while it is copied out). Room
    /// reserved for Parquet bytes not yet written is not counted: the
    /// system backs those pages only once they are written.
    pub fn memory(&self) -> usize {
        let index = match &self.index {
            IndexBuilder::Logs(index) => index.memory(),
            IndexBuilder::Spans(index) => index.memory(),
            IndexBuilder::None => 0,
        };
        self.writer.inner().len() + self.writer.memory_size() + index
    }

    /// Closes the file; its catalog row is ready to commit once stored.
    pub fn finish(mut self) -> Result<EncodedSplit> {
        let signal = self.signal;
        let metadata = self.writer.finish()?;
        let raw_bytes: i64 = metadata
            .row_groups()
            .iter()
            .map(|g| g.total_byte_size())
            .sum();
        let bytes = std::mem::take(self.writer.inner_mut());
        let (index, extension) = match self.index {
            IndexBuilder::Logs(index) => (
                Some(
                    index
                        .finish(crate::log_bodies::Bodies::Unavailable)?
                        .to_bundle()?,
                ),
                "idx",
            ),
            IndexBuilder::Spans(index) => (Some(index.finish()), "tix"),
            IndexBuilder::None => (None, ""),
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let hour_start = DateTime::<Utc>::from_timestamp_nanos(self.hour * NANOS_PER_HOUR);
        let stem = format!(
            "{}/{}/{}",
            signal.name(),
            hour_start.format("date=%Y-%m-%d/hour=%H"),
            id
        );
        let (min_time, max_time) = if self.rows == 0 {
            (0, 0)
        } else {
            (self.min_time, self.max_time)
        };
        Ok(EncodedSplit {
            meta: SplitMeta {
                id,
                signal,
                path: format!("{stem}.parquet"),
                index_path: index.as_ref().map(|_| format!("{stem}.{extension}")),
                min_time,
                max_time,
                row_count: self.rows,
                byte_size: bytes.len() as u64,
                raw_bytes: raw_bytes.max(0) as u64,
                services: self.services.into_iter().collect(),
                created_at: Utc::now().timestamp_nanos_opt().unwrap_or_default(),
                compacted: self.effort == Effort::Compaction,
                node: None,
            },
            bytes,
            index,
        })
    }
}

#[cfg(test)]
#[path = "split_writer_tests.rs"]
mod tests;
