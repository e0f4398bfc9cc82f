//! The write-ahead log: every accepted request is appended here and fsync'd
//! before the client is acknowledged.
//!
//! The log is a directory of segment files named by the sequence number of
//! their first record. A record is framed as
//!
//! ```text
//! [body_len: u32 LE][crc32(body): u32 LE][body = seq: u64 LE | signal: u8 | payload]
//! ```
//!
//! so a torn write at the tail of a segment (crash mid-append) is detected by
//! a short read or a CRC mismatch, truncated away and never replayed. Segments
//! are only ever appended to by one writer (see `writer.rs`) and deleted
//! whole once every record in them is in a committed Parquet file.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::schema::Signal;

const HEADER_LEN: usize = 8;
const BODY_PREFIX_LEN: usize = 9;
/// Anything larger is garbage from a torn header, not a record we wrote.
const MAX_BODY_LEN: usize = 1 << 30;
/// The largest payload one record can carry. [`Wal::append`] refuses
/// larger ones before writing a byte, so replay never meets a frame it must
/// take for garbage (which would drop it and every record after it).
pub const MAX_PAYLOAD_LEN: usize = MAX_BODY_LEN - BODY_PREFIX_LEN;

/// One replayed record.
#[derive(Debug)]
pub struct WalRecord {
    pub seq: u64,
    pub signal: Signal,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fsync before acknowledging (the default; survives power loss).
    Always,
    /// Leave flushing to the OS; survives a process crash, not power loss.
    Never,
}

impl std::str::FromStr for SyncMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "always" => Ok(SyncMode::Always),
            "never" => Ok(SyncMode::Never),
            other => Err(format!(
                "{other:?} is not a WAL fsync mode: use always or never"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SyncMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug)]
struct ClosedSegment {
    path: PathBuf,
    last_seq: u64,
}

/// The segment new records go to.
struct ActiveSegment {
    writer: BufWriter<File>,
    path: PathBuf,
    /// Bytes appended, durable or not.
    len: u64,
    /// The highest seq appended (it may be on disk even if its write failed).
    last_seq: Option<u64>,
    /// Length and last seq as of the last successful sync.
    synced_len: u64,
    synced_last_seq: Option<u64>,
}

/// The appending side of the log, owned by the single WAL writer thread.
pub struct Wal {
    dir: PathBuf,
    sync: SyncMode,
    segment_bytes: u64,
    closed: Vec<ClosedSegment>,
    /// `None` after a failed write or sync abandoned the segment, until
    /// [`Wal::reopen`] starts a new one.
    active: Option<ActiveSegment>,
    next_seq: u64,
}

impl Wal {
    /// Opens the log in `dir`, replaying every intact record in sequence
    /// order through `replay`, truncating torn tails, and starts a fresh
    /// segment for new appends. `min_next_seq` keeps sequence numbers
    /// increasing even when every old segment was already deleted.
    pub fn open(
        dir: &Path,
        sync: SyncMode,
        segment_bytes: u64,
        min_next_seq: u64,
        mut replay: impl FnMut(WalRecord) -> Result<()>,
    ) -> Result<Wal> {
        fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
        let mut next_seq = min_next_seq.max(1);
        let mut closed = Vec::new();
        for (first_seq, path) in list_segments(dir)? {
            let mut last_seq = None;
            read_segment(&path, |record| {
                last_seq = Some(record.seq);
                next_seq = next_seq.max(record.seq + 1);
                replay(record)
            })?;
            match last_seq {
                Some(last_seq) => closed.push(ClosedSegment { path, last_seq }),
                None => {
                    tracing::debug!(segment = %path.display(), first_seq, "removing empty WAL segment");
                    fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
                }
            }
        }
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            sync,
            segment_bytes,
            closed,
            active: None,
            next_seq,
        };
        wal.reopen()?;
        Ok(wal)
    }

    /// Starts a fresh segment if there is none (after [`Wal::abandon`]).
    pub fn reopen(&mut self) -> Result<()> {
        if self.active.is_none() {
            self.active = Some(create_segment(&self.dir, self.next_seq)?);
        }
        Ok(())
    }

    /// Gives up the active segment after a failed write or sync, whose
    /// tail is now unknown: the unsynced records are cut off when the file
    /// lets us (so a refused request never reappears at replay), and new
    /// records go to a new segment from [`Wal::reopen`]. Sequence numbers
    /// of refused records are never reused.
    pub fn abandon(&mut self) {
        let Some(segment) = self.active.take() else {
            return;
        };
        // No flush: the buffer holds exactly the records that failed.
        let (file, _unwritten) = segment.writer.into_parts();
        let truncated = file
            .set_len(segment.synced_len)
            .and_then(|()| file.sync_all())
            .is_ok();
        drop(file);
        let last_seq = if truncated {
            segment.synced_last_seq
        } else {
            segment.last_seq
        };
        match last_seq {
            Some(last_seq) => self.closed.push(ClosedSegment {
                path: segment.path,
                last_seq,
            }),
            None => {
                if let Err(e) = fs::remove_file(&segment.path) {
                    tracing::debug!(segment = %segment.path.display(), error = %e, "could not remove an empty abandoned WAL segment");
                }
            }
        }
    }

    /// Buffers one record and returns its sequence number; it is durable
    /// only after the next successful [`Wal::sync`].
    pub fn append(&mut self, signal: Signal, payload: &[u8]) -> Result<u64> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(StorageError::RecordTooLarge {
                bytes: payload.len(),
                limit: MAX_PAYLOAD_LEN,
            });
        }
        let active = self
            .active
            .as_mut()
            .ok_or_else(|| StorageError::WalFailed("no open WAL segment".into()))?;
        // The number is used up even if the write fails: part of the record
        // may be on disk, and no other record may ever carry it.
        let seq = self.next_seq;
        self.next_seq += 1;
        active.last_seq = Some(seq);
        let body_len = BODY_PREFIX_LEN + payload.len();
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&seq.to_le_bytes());
        hasher.update(&[signal.to_u8()]);
        hasher.update(payload);
        let write = |w: &mut BufWriter<File>| -> std::io::Result<()> {
            w.write_all(&(body_len as u32).to_le_bytes())?;
            w.write_all(&hasher.finalize().to_le_bytes())?;
            w.write_all(&seq.to_le_bytes())?;
            w.write_all(&[signal.to_u8()])?;
            w.write_all(payload)
        };
        write(&mut active.writer).map_err(|e| StorageError::io("append to", &active.path, e))?;
        active.len += (HEADER_LEN + body_len) as u64;
        Ok(seq)
    }

    /// Writes buffered records and (in [`SyncMode::Always`]) fsyncs them:
    /// one call covers every record appended since the last, which is what
    /// makes group commit cheap.
    pub fn sync(&mut self) -> Result<()> {
        let active = self
            .active
            .as_mut()
            .ok_or_else(|| StorageError::WalFailed("no open WAL segment".into()))?;
        active.sync(self.sync)?;
        if active.len >= self.segment_bytes
            && let Err(e) = self.rotate()
        {
            // The records are durable; a new segment is tried next time.
            tracing::warn!(error = %e, "could not start a new WAL segment; will retry");
        }
        Ok(())
    }

    /// Deletes every closed segment whose records all have `seq <= through`
    /// (they are in committed Parquet files). The active segment is closed
    /// first so that it, too, can go on the next call.
    pub fn remove_through(&mut self, through: u64) -> Result<()> {
        if self
            .active
            .as_ref()
            .and_then(|a| a.last_seq)
            .is_some_and(|last| last <= through)
        {
            self.rotate()?;
        }
        let mut kept = Vec::with_capacity(self.closed.len());
        for segment in self.closed.drain(..) {
            if segment.last_seq <= through {
                fs::remove_file(&segment.path)
                    .map_err(|e| StorageError::io("remove", &segment.path, e))?;
            } else {
                kept.push(segment);
            }
        }
        self.closed = kept;
        Ok(())
    }

    /// The sequence number the next append will get.
    #[cfg(test)]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn rotate(&mut self) -> Result<()> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let Some(last_seq) = active.last_seq else {
            return Ok(());
        };
        active.sync(SyncMode::Always)?;
        let new = create_segment(&self.dir, self.next_seq)?;
        if let Some(old) = self.active.replace(new) {
            self.closed.push(ClosedSegment {
                path: old.path,
                last_seq,
            });
        }
        Ok(())
    }

    #[cfg(test)]
    fn active_path(&self) -> PathBuf {
        self.active.as_ref().map(|a| a.path.clone()).unwrap()
    }
}

impl ActiveSegment {
    fn sync(&mut self, mode: SyncMode) -> Result<()> {
        self.writer
            .flush()
            .map_err(|e| StorageError::io("write", &self.path, e))?;
        if mode == SyncMode::Always {
            self.writer
                .get_ref()
                .sync_data()
                .map_err(|e| StorageError::io("fsync", &self.path, e))?;
        }
        self.synced_len = self.len;
        self.synced_last_seq = self.last_seq;
        Ok(())
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(first_seq) = stem.parse::<u64>() {
            segments.push((first_seq, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

fn create_segment(dir: &Path, first_seq: u64) -> Result<ActiveSegment> {
    let path = dir.join(segment_name(first_seq));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("create", &path, e))?;
    sync_dir(dir)?;
    Ok(ActiveSegment {
        writer: BufWriter::with_capacity(1 << 20, file),
        path,
        len: 0,
        last_seq: None,
        synced_len: 0,
        synced_last_seq: None,
    })
}

/// Makes a created or removed directory entry durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// Reads every intact record of one segment. A torn or corrupt tail is cut
/// off the file so it can never be mistaken for data later.
fn read_segment(path: &Path, mut each: impl FnMut(WalRecord) -> Result<()>) -> Result<()> {
    let data = fs::read(path).map_err(|e| StorageError::io("read", path, e))?;
    let mut offset = 0usize;
    while offset < data.len() {
        match decode_frame(&data[offset..]) {
            Some((record, used)) => {
                each(record)?;
                offset += used;
            }
            None => {
                tracing::warn!(
                    segment = %path.display(),
                    offset,
                    dropped_bytes = data.len() - offset,
                    "truncating torn or corrupt WAL tail"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| StorageError::io("open", path, e))?;
                file.set_len(offset as u64)
                    .and_then(|_| file.sync_all())
                    .map_err(|e| StorageError::io("truncate", path, e))?;
                break;
            }
        }
    }
    Ok(())
}

/// Decodes the frame at the start of `buf`: `None` when it is incomplete or
/// its checksum does not match.
fn decode_frame(buf: &[u8]) -> Option<(WalRecord, usize)> {
    let body_len = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    if !(BODY_PREFIX_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return None;
    }
    let body = buf.get(HEADER_LEN..HEADER_LEN + body_len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(body[0..8].try_into().ok()?);
    let signal = Signal::try_from_u8(body[8])?;
    Some((
        WalRecord {
            seq,
            signal,
            payload: body[BODY_PREFIX_LEN..].to_vec(),
        },
        HEADER_LEN + body_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay_all(dir: &Path, min_next: u64) -> (Wal, Vec<WalRecord>) {
        let mut records = Vec::new();
        let wal = Wal::open(dir, SyncMode::Always, 1 << 20, min_next, |r| {
            records.push(r);
            Ok(())
        })
        .unwrap();
        (wal, records)
    }

    #[test]
    fn records_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, none) = replay_all(dir.path(), 0);
        assert!(none.is_empty());
        assert_eq!(wal.append(Signal::Logs, b"one").unwrap(), 1);
        assert_eq!(wal.append(Signal::Spans, b"two").unwrap(), 2);
        wal.sync().unwrap();
        drop(wal);
        let (wal, records) = replay_all(dir.path(), 0);
        let got: Vec<_> = records
            .iter()
            .map(|r| (r.seq, r.signal, r.payload.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Signal::Logs, b"one".to_vec()),
                (2, Signal::Spans, b"two".to_vec())
            ]
        );
        assert_eq!(wal.next_seq(), 3);
    }

    /// Writes `payloads` as logs records to a fresh log in `dir`, closes
    /// it and returns its segment, for tests that then damage it.
    fn write_logs(dir: &Path, payloads: &[&[u8]]) -> PathBuf {
        let (mut wal, _) = replay_all(dir, 0);
        for payload in payloads {
            wal.append(Signal::Logs, payload).unwrap();
        }
        wal.sync().unwrap();
        wal.active_path()
    }

    #[test]
    fn torn_tail_is_truncated_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_logs(dir.path(), &[b"kept", b"torn-record-payload"]);
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 5).unwrap();
        drop(file);

        let (mut wal, records) = replay_all(dir.path(), 0);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].payload, b"kept");
        // The next record gets a fresh sequence number and replays cleanly.
        assert_eq!(wal.append(Signal::Logs, b"after").unwrap(), 2);
        wal.sync().unwrap();
        drop(wal);
        let (_, records) = replay_all(dir.path(), 0);
        let payloads: Vec<_> = records.iter().map(|r| r.payload.clone()).collect();
        assert_eq!(payloads, vec![b"kept".to_vec(), b"after".to_vec()]);
    }

    #[test]
    fn corrupt_byte_stops_replay_at_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_logs(dir.path(), &[b"good", b"flipped"]);
        let mut data = fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(&path, data).unwrap();
        let (_, records) = replay_all(dir.path(), 0);
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn removed_segments_are_not_replayed_and_seq_keeps_rising() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = replay_all(dir.path(), 0);
        for _ in 0..3 {
            wal.append(Signal::Metrics, b"m").unwrap();
        }
        wal.sync().unwrap();
        wal.remove_through(3).unwrap();
        wal.append(Signal::Metrics, b"later").unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, records) = replay_all(dir.path(), 0);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].seq, 4);
        // With every segment gone, the floor keeps numbering monotonic.
        let empty = tempfile::tempdir().unwrap();
        let (wal, _) = replay_all(empty.path(), 42);
        assert_eq!(wal.next_seq(), 42);
    }

    #[test]
    fn an_abandoned_segment_loses_only_unsynced_records_and_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = replay_all(dir.path(), 0);
        wal.append(Signal::Logs, b"durable").unwrap();
        wal.sync().unwrap();
        wal.append(Signal::Logs, b"refused").unwrap();
        // A write or fsync failed: the writer gives up the segment.
        wal.abandon();
        assert!(matches!(
            wal.append(Signal::Logs, b"x"),
            Err(StorageError::WalFailed(_))
        ));
        wal.reopen().unwrap();
        assert_eq!(wal.append(Signal::Logs, b"later").unwrap(), 3);
        wal.sync().unwrap();
        drop(wal);
        let (wal, records) = replay_all(dir.path(), 0);
        let got: Vec<_> = records.iter().map(|r| (r.seq, r.payload.clone())).collect();
        assert_eq!(got, vec![(1, b"durable".to_vec()), (3, b"later".to_vec())]);
        assert_eq!(wal.next_seq(), 4);
    }

    #[test]
    fn a_payload_over_the_frame_limit_is_refused_without_writing() {
        assert_eq!(MAX_PAYLOAD_LEN + BODY_PREFIX_LEN, MAX_BODY_LEN);
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = replay_all(dir.path(), 0);
        // Zeroed pages the OS hands out lazily: only the length is read.
        let huge = vec![0u8; MAX_PAYLOAD_LEN + 1];
        assert!(matches!(
            wal.append(Signal::Logs, &huge),
            Err(StorageError::RecordTooLarge { .. })
        ));
        assert_eq!(wal.next_seq(), 1);
    }
}
