//! The state every part of storage reads and the WAL writer thread
//! updates: memtables, the committed split lists, the metrics. It lives
//! here, beneath both `Storage` and the writer, so neither has to reach
//! into the other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use arrow::record_batch::RecordBatch;
use tokio::sync::Notify;

use crate::catalog::SplitMeta;
use crate::memtable::{MemBatch, Memtable};
use crate::schema::Signal;
use loupe_base::self_metrics::{Counter, Gauge, Histogram, Registry};

/// What a query reads for one table: committed splits plus the memtable,
/// taken together under one lock so no row is seen twice or missed.
#[derive(Clone, Default)]
pub struct TableSnapshot {
    pub splits: Vec<Arc<SplitMeta>>,
    pub batches: Vec<MemBatch>,
    /// On a shared catalog, how far `splits` cover each other node's WAL
    /// for this table's signal: every row that node acknowledged with a
    /// higher sequence number is not in `splits` but (until it flushes and
    /// the grace passes) in its memtable. A node missing here had flushed
    /// nothing when the list was read (0).
    pub peers_flushed: Arc<HashMap<String, u64>>,
}

impl TableSnapshot {
    /// How far `splits` cover `node`'s WAL (see [`TableSnapshot::peers_flushed`]).
    pub fn peer_flushed(&self, node: &str) -> u64 {
        self.peers_flushed.get(node).copied().unwrap_or(0)
    }
}

/// Memtables and committed splits per signal, behind [`Shared`]'s lock:
/// one lock so a snapshot sees each row exactly once.
pub(crate) struct State {
    pub(crate) memtables: [Memtable; 3],
    pub(crate) splits: [Vec<Arc<SplitMeta>>; 3],
    /// Other nodes' flushed WAL positions per signal, read from the
    /// catalog together with the split list (see [`TableSnapshot`]).
    pub(crate) peers_flushed: [Arc<HashMap<String, u64>>; 3],
    /// Highest WAL sequence number whose batch reached a memtable.
    pub(crate) last_seq: u64,
}

impl State {
    pub(crate) fn insert(&mut self, signal: Signal, seq: u64, batch: RecordBatch) {
        let hours = crate::split_writer::hours(signal, &batch);
        let times = crate::split_writer::time_range(signal, &batch);
        self.memtables[signal.index()].push(seq, batch, hours, times);
        self.last_seq = self.last_seq.max(seq);
    }

    pub(crate) fn unflushed_bytes(&self) -> usize {
        self.memtables.iter().map(Memtable::bytes).sum()
    }

    /// What flushed batches kept for peers' readers hold, over all signals.
    pub(crate) fn retained_bytes(&self) -> usize {
        self.memtables.iter().map(Memtable::flushed_bytes).sum()
    }

    /// Drops the oldest flushed batches until they fit in `room`, taking
    /// from each signal in proportion to what it keeps.
    fn trim_retained(&mut self, room: usize) {
        let total = self.retained_bytes();
        if total <= room {
            return;
        }
        for memtable in &mut self.memtables {
            let keep = (memtable.flushed_bytes() as u128 * room as u128 / total as u128) as usize;
            memtable.forget_flushed_over(keep);
        }
    }

    /// Every WAL record with a seq at or below this is in a committed split.
    pub(crate) fn wal_flushed_through(&self) -> u64 {
        self.memtables
            .iter()
            .filter_map(Memtable::first_seq)
            .map(|first| first - 1)
            .min()
            .unwrap_or(self.last_seq)
    }
}

/// Storage's self-metrics, registered once and updated from the flusher
/// and the WAL thread alike.
pub(crate) struct StorageMetrics {
    pub(crate) wal_sync: Arc<Histogram>,
    pub(crate) wal_groups: Arc<Counter>,
    pub(crate) flushes: Arc<Counter>,
    pub(crate) flush_errors: Arc<Counter>,
    pub(crate) flush_duration: Arc<Histogram>,
    pub(crate) flushed_bytes: Arc<Counter>,
    pub(crate) unflushed_bytes: Arc<Gauge>,
    pub(crate) wal_errors: Arc<Counter>,
    pub(crate) wal_unavailable: Arc<Gauge>,
    pub(crate) quarantined: Arc<Counter>,
}

impl StorageMetrics {
    pub(crate) fn new(r: &Registry) -> Self {
        StorageMetrics {
            wal_sync: r.histogram(
                "loupe_wal_fsync_seconds",
                "Time to write and fsync one WAL group commit.",
                &[],
            ),
            wal_groups: r.counter("loupe_wal_groups_total", "WAL group commits.", &[]),
            flushes: r.counter("loupe_flushes_total", "Memtable flushes to Parquet.", &[]),
            flush_errors: r.counter("loupe_flush_errors_total", "Failed memtable flushes.", &[]),
            flush_duration: r.histogram(
                "loupe_flush_duration_seconds",
                "Time to encode, store and commit one flush.",
                &[],
            ),
            flushed_bytes: r.counter(
                "loupe_flushed_parquet_bytes_total",
                "Bytes of Parquet written by flushes.",
                &[],
            ),
            unflushed_bytes: r.gauge(
                "loupe_unflushed_bytes",
                "Bytes of accepted data in memtables, not yet in Parquet.",
                &[],
            ),
            wal_errors: r.counter(
                "loupe_wal_errors_total",
                "WAL writes or fsyncs that failed (the group was refused and retried later).",
                &[],
            ),
            wal_unavailable: r.gauge(
                "loupe_wal_unavailable",
                "1 while the WAL refuses writes after a failure, until a retry succeeds.",
                &[],
            ),
            quarantined: r.counter(
                "loupe_quarantined_batches_total",
                "Accepted batches that could never be written to Parquet, moved to <data-dir>/quarantine.",
                &[],
            ),
        }
    }
}

/// State shared with the WAL writer thread.
pub(crate) struct Shared {
    state: RwLock<State>,
    /// What the unflushed share holds: appends from when they are
    /// admitted (batch and WAL payload) until their payload is written,
    /// then their batch until it is flushed. One counter, reserved with a
    /// compare-and-swap, so concurrent appends cannot overshoot it.
    pub(crate) reserved_bytes: AtomicUsize,
    /// What flushed batches kept for peers' readers hold
    /// ([`crate::FLUSHED_GRACE`]): they live in the room `reserved_bytes`
    /// leaves in the unflushed share, and give it up first.
    pub(crate) retained_bytes: AtomicUsize,
    /// The unflushed share of the memory budget.
    max_bytes: usize,
    pub(crate) metrics: StorageMetrics,
    pub(crate) flush_wanted: Notify,
    flush_bytes: usize,
    /// Unflushed bytes from which every memtable is flushed,
    /// whatever its own size: the memory budget's share is filling up.
    pressure_bytes: usize,
}

impl Shared {
    pub(crate) fn new(
        state: State,
        metrics: StorageMetrics,
        flush_bytes: usize,
        max_bytes: usize,
    ) -> Shared {
        metrics.unflushed_bytes.set(state.unflushed_bytes() as i64);
        Shared {
            reserved_bytes: AtomicUsize::new(state.unflushed_bytes()),
            retained_bytes: AtomicUsize::new(state.retained_bytes()),
            max_bytes,
            state: RwLock::new(state),
            metrics,
            flush_wanted: Notify::new(),
            flush_bytes,
            pressure_bytes: max_bytes / 2,
        }
    }

    /// The splits and memtable batches a query of `signal` should read.
    pub(crate) fn snapshot(&self, signal: Signal) -> TableSnapshot {
        self.read_state(|state| TableSnapshot {
            splits: state.splits[signal.index()].clone(),
            batches: state.memtables[signal.index()].snapshot().0,
            peers_flushed: state.peers_flushed[signal.index()].clone(),
        })
    }

    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut state);
        self.trim_retained(&mut state, 0);
        self.metrics
            .unflushed_bytes
            .set(state.unflushed_bytes() as i64);
        out
    }

    /// Makes room in the unflushed share for what is reserved now and
    /// `more` bytes about to be, by dropping flushed batches kept for
    /// peers' readers; takes the state lock only when they do not fit.
    pub(crate) fn make_room(&self, more: usize) {
        let held = self.reserved_bytes.load(Ordering::Acquire)
            + more
            + self.retained_bytes.load(Ordering::Acquire);
        if held <= self.max_bytes {
            return;
        }
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        self.trim_retained(&mut state, more);
    }

    fn trim_retained(&self, state: &mut State, more: usize) {
        let room = self
            .max_bytes
            .saturating_sub(self.reserved_bytes.load(Ordering::Acquire) + more);
        state.trim_retained(room);
        self.retained_bytes
            .store(state.retained_bytes(), Ordering::Release);
    }

    pub(crate) fn read_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether unflushed data has reached the point where every signal is
    /// flushed, to keep under the unflushed budget. (Data still queued for
    /// the WAL is not counted: flushing cannot make room for it sooner.)
    pub(crate) fn under_pressure(&self) -> bool {
        self.read_state(State::unflushed_bytes) >= self.pressure_bytes
    }

    pub(crate) fn wake_flusher_if_full(&self) {
        let full = self.read_state(|s| s.memtables.iter().any(|m| m.bytes() >= self.flush_bytes));
        if full || self.under_pressure() {
            self.flush_wanted.notify_one();
        }
    }
}
