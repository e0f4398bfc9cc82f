//! Compaction's share of the memory budget. One merge runs at a time and
//! holds at most this share: what it reads, the rows between reader and
//! writer, and the file it is writing (Parquet and index) — the file is
//! closed early when it would not fit. What the running merge holds is
//! published for `/metrics`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Decoded bytes a merge reads from each input at a time.
pub(crate) const INPUT_BATCH_BYTES: usize = 1 << 20;
/// What one input costs while it is read: its decoded batch (estimated
/// from its file's average row; a batch may come out larger) and the
/// decompressed pages of its columns the reader holds.
pub(crate) const INPUT_COST: usize = 4 * INPUT_BATCH_BYTES;
/// Decoded bytes of merged rows gathered before they go to the writer.
pub(crate) const OUTPUT_BATCH_BYTES: usize = 2 << 20;
/// What a file being written holds besides its rows and index: one
/// compression context per column (zstd's at level 9 is the largest),
/// column encoders, the merged batch on its way in.
pub(crate) const WRITER_OVERHEAD: usize = 16 << 20;
/// The least a merge's output file may take: an empty log index alone
/// holds about 10 MB and the row group being encoded a few more; below it,
/// merging would cut files smaller than the ones it merges, so no merge
/// runs.
pub(crate) const MIN_FILE_MEMORY: usize = 24 << 20;

/// The share and what the running merge holds of it.
#[derive(Debug)]
pub struct CompactionMemory {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl CompactionMemory {
    pub fn new(limit: usize) -> CompactionMemory {
        CompactionMemory {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// What the running merge holds now (0 between merges).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most any merge has held since start.
    #[cfg(test)]
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Records what the running merge holds now.
    pub(crate) fn set(&self, bytes: usize) {
        self.used.store(bytes, Ordering::Relaxed);
        self.peak.fetch_max(bytes, Ordering::Relaxed);
    }

    /// Inputs a merge may read at once: their readers take a quarter of
    /// the share, leaving the rest for the file being written.
    pub(crate) fn max_inputs(&self) -> usize {
        (self.limit / 4 / INPUT_COST).max(2)
    }

    /// What one output file (Parquet, index and the index's copy while it
    /// is bundled) may take, given what the merge's inputs hold: `None` if
    /// that is too little for a merge worth doing.
    pub(crate) fn file_memory(&self, inputs: usize, fetched_bytes: usize) -> Option<usize> {
        let room = self
            .limit
            .checked_sub(inputs * INPUT_COST + fetched_bytes + 2 * OUTPUT_BATCH_BYTES)?
            .checked_sub(WRITER_OVERHEAD)?;
        (room >= MIN_FILE_MEMORY).then_some(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_gets_what_the_inputs_leave_and_too_little_means_no_merge() {
        let memory = CompactionMemory::new(96 << 20);
        assert_eq!(memory.max_inputs(), 6);
        let room = memory.file_memory(6, 0).unwrap();
        assert_eq!(
            room,
            (96 << 20) - 6 * INPUT_COST - 2 * OUTPUT_BATCH_BYTES - WRITER_OVERHEAD
        );
        assert!(memory.file_memory(6, 60 << 20).is_none());
        assert!(CompactionMemory::new(48 << 20).file_memory(2, 0).is_none());
        memory.set(5);
        memory.set(3);
        assert_eq!((memory.used(), memory.peak()), (3, 5));
    }
}
