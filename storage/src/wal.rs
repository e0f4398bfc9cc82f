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

/// The appending side of the log, owned by the single WAL writer thread.
pub struct Wal {
    dir: PathBuf,
    sync: SyncMode,
    segment_bytes: u64,
    closed: Vec<ClosedSegment>,
    active: BufWriter<File>,
    active_path: PathBuf,
    active_len: u64,
    active_last_seq: Option<u64>,
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
        let (active, active_path) = create_segment(dir, next_seq)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            sync,
            segment_bytes,
            closed,
            active,
            active_path,
            active_len: 0,
            active_last_seq: None,
            next_seq,
        })
    }

    /// Buffers one record and returns its sequence number; it is durable
    /// only after the next successful [`Wal::sync`].
    pub fn append(&mut self, signal: Signal, payload: &[u8]) -> Result<u64> {
        let seq = self.next_seq;
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
        write(&mut self.active).map_err(|e| StorageError::io("append to", &self.active_path, e))?;
        self.next_seq += 1;
        self.active_len += (HEADER_LEN + body_len) as u64;
        self.active_last_seq = Some(seq);
        Ok(seq)
    }

    /// Writes buffered records and (in [`SyncMode::Always`]) fsyncs them:
    /// one call covers every record appended since the last, which is what
    /// makes group commit cheap.
    pub fn sync(&mut self) -> Result<()> {
        self.active
            .flush()
            .map_err(|e| StorageError::io("write", &self.active_path, e))?;
        if self.sync == SyncMode::Always {
            self.active
                .get_ref()
                .sync_data()
                .map_err(|e| StorageError::io("fsync", &self.active_path, e))?;
        }
        if self.active_len >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Deletes every closed segment whose records all have `seq <= through`
    /// (they are in committed Parquet files). The active segment is closed
    /// first so that it, too, can go on the next call.
    pub fn remove_through(&mut self, through: u64) -> Result<()> {
        if self.active_last_seq.is_some_and(|last| last <= through) {
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
        let Some(last_seq) = self.active_last_seq else {
            return Ok(());
        };
        self.sync_buffer()?;
        let (active, path) = create_segment(&self.dir, self.next_seq)?;
        let old_path = std::mem::replace(&mut self.active_path, path);
        self.active = active;
        self.active_len = 0;
        self.active_last_seq = None;
        self.closed.push(ClosedSegment {
            path: old_path,
            last_seq,
        });
        Ok(())
    }

    fn sync_buffer(&mut self) -> Result<()> {
        self.active
            .flush()
            .map_err(|e| StorageError::io("write", &self.active_path, e))?;
        self.active
            .get_ref()
            .sync_data()
            .map_err(|e| StorageError::io("fsync", &self.active_path, e))
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

fn create_segment(dir: &Path, first_seq: u64) -> Result<(BufWriter<File>, PathBuf)> {
    let path = dir.join(segment_name(first_seq));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("create", &path, e))?;
    sync_dir(dir)?;
    Ok((BufWriter::with_capacity(1 << 20, file), path))
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
        wal.active_path.clone()
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
}
