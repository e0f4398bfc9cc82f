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
    index: Arc<OnceLock<Arc<LogIndex>>>,
}

impl MemBatch {
    fn new(batch: RecordBatch) -> Self {
        MemBatch {
            batch,
            index: Arc::default(),
        }
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

/// One signal's unflushed batches, in WAL sequence order.
#[derive(Default)]
pub struct Memtable {
    entries: VecDeque<(u64, MemBatch)>,
    bytes: usize,
    rows: usize,
    oldest: Option<Instant>,
}

impl Memtable {
    pub fn push(&mut self, seq: u64, batch: RecordBatch) {
        debug_assert!(self.entries.back().is_none_or(|(last, _)| *last < seq));
        self.bytes += batch.get_array_memory_size();
        self.rows += batch.num_rows();
        self.oldest.get_or_insert_with(Instant::now);
        self.entries.push_back((seq, MemBatch::new(batch)));
    }

    /// Clones (cheaply: Arrow arrays are reference-counted) every batch and
    /// returns the highest sequence number among them.
    pub fn snapshot(&self) -> (Vec<MemBatch>, Option<u64>) {
        let batches = self.entries.iter().map(|(_, b)| b.clone()).collect();
        (batches, self.entries.back().map(|(seq, _)| *seq))
    }

    /// Drops the batches with `seq <= through`, now that they are in a
    /// committed Parquet file; returns the bytes freed.
    pub fn remove_through(&mut self, through: u64) -> usize {
        let mut freed = 0;
        while let Some((seq, batch)) = self.entries.front() {
            if *seq > through {
                break;
            }
            freed += batch.batch.get_array_memory_size();
            self.rows -= batch.batch.num_rows();
            self.entries.pop_front();
        }
        self.bytes -= freed;
        self.oldest = if self.entries.is_empty() {
            None
        } else {
            // Entries left came after the flush started: age them from now.
            self.oldest.map(|_| Instant::now())
        };
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
        self.oldest
    }

    /// The first sequence number still only in the WAL.
    pub fn first_seq(&self) -> Option<u64> {
        self.entries.front().map(|(seq, _)| *seq)
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
        m.push(3, batch(1));
        m.push(5, batch(2));
        m.push(9, batch(3));
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
}
