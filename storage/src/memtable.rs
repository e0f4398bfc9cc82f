//! Accepted batches that are durable in the WAL but not yet in Parquet.
//! Queries read them directly, which is how data is visible within a second
//! of its acknowledgement.
//!
//! Flushed batches stay a little longer ([`FLUSHED_GRACE`]): another node
//! that coordinates a query reads this node's unflushed rows as "every row
//! after the WAL position its split list covers" ([`Memtable::rows_after`]),
//! and its split list may lag this node's latest flush by the time a
//! catalog notification takes. Keeping the just-flushed batches lets such
//! a reader still get each row exactly once instead of losing the rows
//! flushed since it listed the splits.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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

/// How long flushed batches stay readable by [`Memtable::rows_after`]:
/// tens of seconds, far above the usual lag of another node's split list
/// (a `NOTIFY` round trip). They are dropped sooner when the unflushed
/// share of the memory budget needs the room (see
/// [`Memtable::forget_flushed_over`]): under heavy ingest a flush every
/// second or two would otherwise keep tens of flushes' worth.
pub const FLUSHED_GRACE: Duration = Duration::from_secs(30);

/// One signal's unflushed batches, in WAL sequence order.
#[derive(Default)]
pub struct Memtable {
    entries: VecDeque<Entry>,
    bytes: usize,
    rows: usize,
    /// Batches flushed less than [`FLUSHED_GRACE`] ago (at the time of the
    /// last flush), with the time they were flushed, in sequence order.
    /// Not counted in `bytes`: they are in Parquet already.
    flushed: VecDeque<(u64, MemBatch, Instant)>,
    /// What the batches in `flushed` hold.
    flushed_bytes: usize,
    /// Every batch with a seq at or below this is in Parquet.
    flushed_through: u64,
    /// Every batch with a seq at or below this is gone from memory (flushed
    /// more than the grace ago, or before this process started).
    gone_through: u64,
}

/// The rows after a WAL position are no longer all in memory: the reader's
/// split list is older than [`FLUSHED_GRACE`] or than this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowsGone {
    /// Every batch with a seq at or below this is gone.
    pub gone_through: u64,
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
    /// committed Parquet file (they stay readable by [`Memtable::rows_after`]
    /// for [`FLUSHED_GRACE`]); returns the bytes freed from the unflushed
    /// share.
    pub fn remove_through(&mut self, through: u64) -> usize {
        self.remove_through_at(through, Instant::now())
    }

    fn remove_through_at(&mut self, through: u64, now: Instant) -> usize {
        while let Some((_, _, at)) = self.flushed.front() {
            if now.saturating_duration_since(*at) < FLUSHED_GRACE {
                break;
            }
            self.forget_oldest_flushed();
        }
        let mut freed = 0;
        while let Some(entry) = self.entries.front() {
            if entry.seq > through {
                break;
            }
            freed += entry.batch.batch.get_array_memory_size();
            self.rows -= entry.batch.batch.num_rows();
            if let Some(entry) = self.entries.pop_front() {
                self.flushed_bytes += entry.batch.batch.get_array_memory_size();
                self.flushed.push_back((entry.seq, entry.batch, now));
            }
        }
        self.flushed_through = self.flushed_through.max(through);
        self.bytes -= freed;
        freed
    }

    /// What the flushed batches still kept for [`Memtable::rows_after`]
    /// hold.
    pub fn flushed_bytes(&self) -> usize {
        self.flushed_bytes
    }

    /// Drops the oldest flushed batches (before their grace is over) until
    /// they hold at most `keep` bytes: they are only a convenience for
    /// readers with a slightly old split list, who then get [`RowsGone`]
    /// and say their answer is partial, while unflushed data needs the
    /// memory.
    pub fn forget_flushed_over(&mut self, keep: usize) {
        while self.flushed_bytes > keep && self.forget_oldest_flushed() {}
    }

    fn forget_oldest_flushed(&mut self) -> bool {
        let Some((seq, batch, _)) = self.flushed.pop_front() else {
            return false;
        };
        self.gone_through = self.gone_through.max(seq);
        self.flushed_bytes -= batch.batch.get_array_memory_size();
        true
    }

    /// Records that every batch up to `seq` was flushed before this
    /// process started (the WAL replay begins after it).
    pub fn set_flushed_before_start(&mut self, seq: u64) {
        self.flushed_through = self.flushed_through.max(seq);
        self.gone_through = self.gone_through.max(seq);
    }

    /// Every batch with a seq at or below this is in Parquet.
    pub fn flushed_through(&self) -> u64 {
        self.flushed_through
    }

    /// The batches, flushed or not, with a seq above `after` — exactly the
    /// rows a reader whose split list covers this WAL up to `after` lacks —
    /// or [`RowsGone`] when some of them left memory already.
    pub fn rows_after(&self, after: u64) -> Result<Vec<MemBatch>, RowsGone> {
        if after < self.gone_through {
            return Err(RowsGone {
                gone_through: self.gone_through,
            });
        }
        let flushed = self
            .flushed
            .iter()
            .filter(|(seq, _, _)| *seq > after)
            .map(|(_, batch, _)| batch.clone());
        let unflushed = self
            .entries
            .iter()
            .filter(|e| e.seq > after)
            .map(|e| e.batch.clone());
        Ok(flushed.chain(unflushed).collect())
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

    /// Batches of 1, 2 and 3 rows at seqs 3, 5 and 9.
    fn push_three(m: &mut Memtable) {
        for (seq, n) in [(3, 1), (5, 2), (9, 3)] {
            m.push(seq, batch(n), vec![0], None);
        }
    }

    #[test]
    fn removes_exactly_the_flushed_prefix() {
        let mut m = Memtable::default();
        push_three(&mut m);
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

    fn seqs_after(m: &Memtable, after: u64) -> Result<Vec<usize>, RowsGone> {
        m.rows_after(after)
            .map(|b| b.iter().map(|b| b.batch.num_rows()).collect())
    }

    #[test]
    fn rows_after_a_position_are_read_exactly_once_through_a_flush() {
        let mut m = Memtable::default();
        m.set_flushed_before_start(2);
        push_three(&mut m);
        // A reader whose splits cover the WAL through 2 reads all three.
        assert_eq!(seqs_after(&m, 2), Ok(vec![1, 2, 3]));
        // Before this process started: those rows are only in Parquet.
        assert_eq!(seqs_after(&m, 1), Err(RowsGone { gone_through: 2 }));
        // A flush through 5: a reader that listed the splits before it
        // still reads each row once, one that listed them after it too.
        let start = Instant::now();
        let freed = batch(1).get_array_memory_size() + batch(2).get_array_memory_size();
        assert_eq!(m.remove_through_at(5, start), freed);
        assert_eq!(m.flushed_through(), 5);
        assert_eq!(seqs_after(&m, 2), Ok(vec![1, 2, 3]));
        assert_eq!(seqs_after(&m, 3), Ok(vec![2, 3]));
        assert_eq!(seqs_after(&m, 5), Ok(vec![3]));
        assert_eq!(m.rows(), 3);
        // Past the grace, the next flush lets the flushed batches go: an
        // old reader gets an error instead of a silently short answer.
        m.remove_through_at(9, start + FLUSHED_GRACE);
        assert_eq!(seqs_after(&m, 2), Err(RowsGone { gone_through: 5 }));
        assert_eq!(seqs_after(&m, 5), Ok(vec![3]));
        assert_eq!(seqs_after(&m, 9), Ok(vec![]));
    }

    #[test]
    fn flushed_batches_give_way_to_a_byte_bound_oldest_first() {
        let mut m = Memtable::default();
        push_three(&mut m);
        m.remove_through(9);
        let sizes: Vec<usize> = [1, 2, 3].map(|n| batch(n).get_array_memory_size()).into();
        assert_eq!(m.flushed_bytes(), sizes.iter().sum::<usize>());
        // Room for the newest two: the oldest goes, and a reader that
        // needs it is told so.
        m.forget_flushed_over(sizes[1] + sizes[2]);
        assert_eq!(m.flushed_bytes(), sizes[1] + sizes[2]);
        assert_eq!(seqs_after(&m, 2), Err(RowsGone { gone_through: 3 }));
        assert_eq!(seqs_after(&m, 3), Ok(vec![2, 3]));
        // No room at all: every flushed batch goes.
        m.forget_flushed_over(0);
        assert_eq!(m.flushed_bytes(), 0);
        assert_eq!(seqs_after(&m, 5), Err(RowsGone { gone_through: 9 }));
        assert_eq!(seqs_after(&m, 9), Ok(vec![]));
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
