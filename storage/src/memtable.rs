//! Accepted batches that are durable in the WAL but not yet in Parquet.
//! Queries read them directly, which is how data is visible within a second
//! of its acknowledgement.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::log_index::LogIndex;

/// One unflushed batch as queries see it, with its full-text index built
/// on first use (logs only) and shared by every later query.
#[derive(Clone)]
pub struct MemBatch {
    pub batch: RecordBatch,
    /// The earliest and latest time of its rows.
    times: Option<(i64, i64)>,
    index: Arc<OnceLock<Arc<LogIndex>>>,
}

impl MemBatch {
    fn new(batch: RecordBatch, times: Option<(i64, i64)>) -> Self {
        MemBatch {
            batch,
            times,
            index: Arc::default(),
        }
    }

    /// Whether some of its rows may fall in `[start, end]` (a search need
    /// not index a batch that cannot match).
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.times
            .is_none_or(|(first, last)| first <= end && last >= start)
    }

    /// The batch's log index (row numbers are the batch's rows).
    pub fn log_index(&self) -> Result<Arc<LogIndex>> {
        if let Some(index) = self.index.get() {
            return Ok(index.clone());
        }
        let built = Arc::new(LogIndex::build(&self.batch)?);
        // Two queries may race to build it; either result is the same.
        Ok(self.index.get_or_init(|| built).clone())
    }
}

/// One unflushed batch with what flushing needs to know about it.
struct Entry {
    seq: u64,
    batch: MemBatch,
    arrived: Instant,
    /// The distinct hours its rows fall in (one split file each).
    hours: Vec<i64>,
}

/// One signal's unflushed batches, in WAL sequence order.
#[derive(Default)]
pub struct Memtable {
    entries: VecDeque<Entry>,
    bytes: usize,
    rows: usize,
}

/// The batches one flush writes: a prefix of the memtable.
pub struct FlushInput {
    /// `(seq, batch)` in sequence order.
    pub batches: Vec<(u64, RecordBatch)>,
    /// The highest seq among them: the flush covers every seq up to it.
    pub last_seq: u64,
    /// Whether batches were left for the next flush.
    pub more: bool,
}

impl Memtable {
    /// Appends a batch; `times` is its rows' earliest and latest time.
    pub fn push(
        &mut self,
        seq: u64,
        batch: RecordBatch,
        hours: Vec<i64>,
        times: Option<(i64, i64)>,
    ) {
        debug_assert!(self.entries.back().is_none_or(|e| e.seq < seq));
        self.bytes += batch.get_array_memory_size();
        self.rows += batch.num_rows();
        self.entries.push_back(Entry {
            seq,
            batch: MemBatch::new(batch, times),
            arrived: Instant::now(),
            hours,
        });
    }

    /// Clones (cheaply: Arrow arrays are reference-counted) every batch and
    /// returns the highest sequence number among them.
    pub fn snapshot(&self) -> (Vec<MemBatch>, Option<u64>) {
        let batches = self.entries.iter().map(|e| e.batch.clone()).collect();
        (batches, self.entries.back().map(|e| e.seq))
    }

    /// The oldest batches whose rows fall in at most `max_hours` distinct
    /// hours (so the flush writes at most that many files) — always at
    /// least one batch, whose hours are bounded when it is appended.
    pub fn flush_input(&self, max_hours: usize) -> Option<FlushInput> {
        let mut hours = std::collections::BTreeSet::new();
        let mut batches = Vec::new();
        for entry in &self.entries {
            let added = entry.hours.iter().filter(|h| !hours.contains(*h)).count();
            if !batches.is_empty() && hours.len() + added > max_hours {
                break;
            }
            hours.extend(entry.hours.iter().copied());
            batches.push((entry.seq, entry.batch.batch.clone()));
        }
        let last_seq = batches.last()?.0;
        Some(FlushInput {
            more: batches.len() < self.entries.len(),
            batches,
            last_seq,
        })
    }

    /// Drops the batches with `seq <= through`, now that they are in a
    /// committed Parquet file; returns the bytes freed.
    pub fn remove_through(&mut self, through: u64) -> usize {
        let mut freed = 0;
        while let Some(entry) = self.entries.front() {
            if entry.seq > through {
                break;
            }
            freed += entry.batch.batch.get_array_memory_size();
            self.rows -= entry.batch.batch.num_rows();
            self.entries.pop_front();
        }
        self.bytes -= freed;
        freed
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// When the oldest unflushed batch arrived.
    pub fn oldest(&self) -> Option<Instant> {
        self.entries.front().map(|e| e.arrived)
    }

    /// The first sequence number still only in the WAL.
    pub fn first_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| e.seq)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int32Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(n: i32) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int32Array::from(vec![n; n as usize]))],
        )
        .unwrap()
    }

    #[test]
    fn removes_exactly_the_flushed_prefix() {
        let mut m = Memtable::default();
        m.push(3, batch(1), vec![0], None);
        m.push(5, batch(2), vec![0], None);
        m.push(9, batch(3), vec![0], None);
        let (batches, last) = m.snapshot();
        assert_eq!((batches.len(), last, m.rows()), (3, Some(9), 6));
        m.remove_through(5);
        assert_eq!((m.rows(), m.first_seq()), (3, Some(9)));
        assert!(m.oldest().is_some());
        m.remove_through(9);
        assert_eq!(
            (m.rows(), m.bytes(), m.first_seq(), m.oldest()),
            (0, 0, None, None)
        );
    }

    #[test]
    fn a_flush_takes_the_oldest_batches_within_the_hour_bound() {
        let mut m = Memtable::default();
        m.push(1, batch(1), vec![10, 11], None);
        m.push(2, batch(1), vec![11], None);
        m.push(3, batch(1), vec![12], None);
        m.push(4, batch(1), vec![13, 14, 15], None);
        let seqs = |input: &FlushInput| input.batches.iter().map(|b| b.0).collect::<Vec<_>>();
        let input = m.flush_input(3).unwrap();
        assert_eq!(
            (seqs(&input), input.last_seq, input.more),
            (vec![1, 2, 3], 3, true)
        );
        // A batch over the bound on its own still goes (appends bound it).
        m.remove_through(3);
        let input = m.flush_input(2).unwrap();
        assert_eq!((seqs(&input), input.more), (vec![4], false));
        m.remove_through(4);
        assert!(m.flush_input(2).is_none());
    }
}
