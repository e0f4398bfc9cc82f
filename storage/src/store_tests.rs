//! Unit tests of the store: appends, flushes, the WAL, the memory share,
//! quarantine and recovery after a crash.

use super::flush::QUARANTINE_AFTER_FAILURES;
use super::*;
use crate::ipc;
use crate::test_batches::log_batch;

fn rows(snapshot: &TableSnapshot) -> (u64, usize) {
    let split_rows = snapshot.splits.iter().map(|s| s.row_count).sum();
    let mem_rows = snapshot.batches.iter().map(|b| b.batch.num_rows()).sum();
    (split_rows, mem_rows)
}

async fn open(dir: &std::path::Path) -> Arc<Storage> {
    Storage::open(StorageConfig::new(dir), &Registry::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unflushed_share_counts_batches_until_flushed_and_payloads_until_written() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    storage
        .append(Signal::Logs, log_batch(&[(1, "a"), (2, "b")]))
        .await
        .unwrap();
    // Acknowledged: the payload is written, the batch is in the memtable.
    let memtable = storage.shared.read_state(State::unflushed_bytes);
    assert!(memtable > 0);
    assert_eq!(storage.unflushed_bytes(), memtable);
    storage.flush(Signal::Logs).await.unwrap();
    assert_eq!(storage.unflushed_bytes(), 0);
    storage.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_rows_are_visible_then_flushed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    storage
        .append(Signal::Logs, log_batch(&[(1, "a"), (2, "b")]))
        .await
        .unwrap();
    storage
        .append(Signal::Logs, log_batch(&[(3, "a")]))
        .await
        .unwrap();
    assert_eq!(rows(&storage.snapshot(Signal::Logs)), (0, 3));
    storage.flush(Signal::Logs).await.unwrap();
    assert_eq!(rows(&storage.snapshot(Signal::Logs)), (3, 0));
    storage
        .append(Signal::Logs, log_batch(&[(4, "c")]))
        .await
        .unwrap();
    storage.shutdown().await.unwrap();
    assert!(matches!(
        storage.append(Signal::Logs, log_batch(&[(5, "c")])).await,
        Err(StorageError::ShuttingDown)
    ));
    drop(storage);

    // Everything is in splits now, and the WAL replays nothing twice.
    let storage = open(dir.path()).await;
    assert_eq!(rows(&storage.snapshot(Signal::Logs)), (4, 0));
    assert_eq!(rows(&storage.snapshot(Signal::Spans)), (0, 0));
    storage.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unflushed_rows_replay_from_the_wal_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    storage
        .append(Signal::Logs, log_batch(&[(1, "a")]))
        .await
        .unwrap();
    storage.flush(Signal::Logs).await.unwrap();
    storage
        .append(Signal::Logs, log_batch(&[(2, "a"), (3, "a")]))
        .await
        .unwrap();
    // A crash: no shutdown, no flush.
    storage.crash().await;
    // An orphan split file as a crash mid-flush would leave.
    let orphan = dir.path().join("splits/logs/orphan.parquet");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"partial").unwrap();

    let storage = open(dir.path()).await;
    assert_eq!(rows(&storage.snapshot(Signal::Logs)), (1, 2));
    assert!(!orphan.exists());
    storage.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_writes_beyond_the_unflushed_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::new(dir.path());
    config.max_unflushed_bytes = 1;
    let storage = Storage::open(config, &Registry::default()).await.unwrap();
    // While anything is held, a batch over the share is refused...
    storage.shared.reserved_bytes.fetch_add(1, Ordering::AcqRel);
    let err = storage
        .append(Signal::Logs, log_batch(&[(1, "a")]))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Overloaded(_)), "{err}");
    // ... and admitted alone, so the largest request gets in eventually.
    storage.shared.reserved_bytes.fetch_sub(1, Ordering::AcqRel);
    storage
        .append(Signal::Logs, log_batch(&[(1, "a")]))
        .await
        .unwrap();
    storage.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_frame_limit_is_refused_before_it_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::new(dir.path());
    config.max_record_bytes = 4096;
    let storage = Storage::open(config.clone(), &Registry::default())
        .await
        .unwrap();
    storage
        .append(Signal::Logs, log_batch(&[(1, "before")]))
        .await
        .unwrap();
    let many: Vec<(i64, &str)> = (0..500).map(|i| (i, "big")).collect();
    let err = storage
        .append(Signal::Logs, log_batch(&many))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::RecordTooLarge { limit: 4096, .. }),
        "{err}"
    );
    // The log keeps working, and replay brings back everything acknowledged.
    storage
        .append(Signal::Logs, log_batch(&[(2, "after")]))
        .await
        .unwrap();
    storage.crash().await;
    let storage = Storage::open(config, &Registry::default()).await.unwrap();
    assert_eq!(rows_of(&storage.snapshot(Signal::Logs)), (0, 2));
    storage.shutdown().await.unwrap();
}

fn rows_of(snapshot: &TableSnapshot) -> (u64, usize) {
    rows(snapshot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_spread_over_many_hours_is_flushed_a_bounded_number_of_files_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::new(dir.path());
    config.max_files_per_flush = 4;
    config.flush_interval = Duration::from_secs(3600);
    let storage = Storage::open(config, &Registry::default()).await.unwrap();
    let hour = 3_600_000_000_000i64;
    let hourly: Vec<(i64, &str)> = (0..10).map(|h| (h * hour + 1, "svc")).collect();
    storage
        .append(Signal::Logs, log_batch(&hourly))
        .await
        .unwrap();
    // The request became three WAL records of at most four hours each.
    assert_eq!(storage.snapshot(Signal::Logs).batches.len(), 3);
    assert!(storage.flush_some(Signal::Logs, false).await.unwrap());
    assert_eq!(storage.snapshot(Signal::Logs).splits.len(), 4);
    assert!(storage.flush_some(Signal::Logs, false).await.unwrap());
    assert!(!storage.flush_some(Signal::Logs, false).await.unwrap());
    let snapshot = storage.snapshot(Signal::Logs);
    assert_eq!(rows(&snapshot), (10, 0));
    assert_eq!(snapshot.splits.len(), 10);
    storage.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_starts_by_itself_when_half_the_unflushed_budget_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::new(dir.path());
    // Neither size nor age would flush: only the budget's pressure.
    config.flush_bytes = usize::MAX;
    config.flush_interval = Duration::from_secs(3600);
    config.max_unflushed_bytes = 256 << 10;
    let storage = Storage::open(config, &Registry::default()).await.unwrap();
    let batch_rows: Vec<(i64, &str)> = (0..200).map(|i| (i, "svc")).collect();
    let mut appended = 0;
    while storage.shared.read_state(State::unflushed_bytes) < 128 << 10
        && storage.shared.metrics.flushes.get() == 0
    {
        storage
            .append(Signal::Logs, log_batch(&batch_rows))
            .await
            .unwrap();
        appended += batch_rows.len();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while storage.shared.metrics.flushes.get() == 0 {
        assert!(Instant::now() < deadline, "no flush under pressure");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Room again, and nothing lost.
    assert!(storage.shared.read_state(State::unflushed_bytes) < 128 << 10);
    storage
        .append(Signal::Logs, log_batch(&batch_rows))
        .await
        .unwrap();
    appended += batch_rows.len();
    let (flushed, in_memory) = rows(&storage.snapshot(Signal::Logs));
    assert!(flushed > 0);
    assert_eq!(flushed as usize + in_memory, appended);
    storage.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_never_flushes_is_quarantined_and_stops_pinning_the_wal() {
    use crate::test_batches::log_batch_with;
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::new(dir.path());
    config.flush_interval = Duration::ZERO;
    let registry = Registry::default();
    let storage = Storage::open(config.clone(), &registry).await.unwrap();
    let poison: crate::test_batches::LogRow<'_> =
        ("svc", "INFO", 9, split_writer::POISON_BODY, &[]);
    storage
        .append(Signal::Logs, log_batch_with(&[poison]))
        .await
        .unwrap();
    storage
        .append(Signal::Logs, log_batch(&[(5, "good")]))
        .await
        .unwrap();
    // The flusher fails, backs off, then isolates the bad batch.
    let deadline = Instant::now() + Duration::from_secs(30);
    while storage.shared.metrics.quarantined.get() == 0 {
        assert!(Instant::now() < deadline, "nothing was quarantined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while rows(&storage.snapshot(Signal::Logs)) != (1, 0) {
        assert!(Instant::now() < deadline, "the good batch was not flushed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(storage.shared.metrics.flush_errors.get() >= QUARANTINE_AFTER_FAILURES as u64);
    let quarantined: Vec<_> = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let kept = ipc::decode(Signal::Logs, &std::fs::read(&quarantined[0]).unwrap()).unwrap();
    assert_eq!(kept.num_rows(), 1);
    // A crash now replays neither batch: the WAL is no longer pinned.
    // (The flush that took the good batch has told the WAL what it may
    // remove once it is counted; the crash lets the WAL finish that.)
    while storage.shared.metrics.flushes.get() == 0 {
        assert!(Instant::now() < deadline, "the flush was not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    storage.crash().await;
    let storage = Storage::open(config, &Registry::default()).await.unwrap();
    assert_eq!(rows(&storage.snapshot(Signal::Logs)), (1, 0));
    storage.shutdown().await.unwrap();
}
