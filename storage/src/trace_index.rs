//! A trace-id index beside each spans split, so looking a trace up by id
//! reads a few kilobytes per file instead of decoding `trace_id` columns.
//!
//! Spans files are sorted by service and time (what analytics want), which
//! scatters one trace's spans over a row group per service it touched, and
//! bloom filters then still cost one read per row group. The index maps the
//! first 32 bits of each trace id to the rows holding it:
//!
//! ```text
//! "LTI1" | entries: u32 | block: u32 | entries × (key: u32, row: u32), sorted
//!        | one fence per block: the block's first key (u32)
//! ```
//!
//! A reader keeps only the header and fences (4 bytes per 1,024 spans) and
//! reads the one block a key falls in. 32-bit keys can collide; a lookup is
//! a superset of the trace's rows, and the query still compares the full id.

use std::ops::Range;

use arrow::array::StringArray;

use crate::error::{Result, StorageError};

const MAGIC: &[u8; 4] = b"LTI1";
/// Bytes before the entries.
pub const HEADER_LEN: u64 = 12;
const ENTRY_LEN: usize = 8;
/// Entries per block: one read of 8 KiB per lookup and file.
const BLOCK: usize = 1024;

/// The 32-bit key of a trace id: its first 8 hex digits.
pub fn key(trace_id: &str) -> Option<u32> {
    u32::from_str_radix(trace_id.get(..8)?, 16).ok()
}

/// The index of `trace_ids` (row i = element i; nulls and non-hex ids are
/// left out).
pub fn build(trace_ids: &StringArray) -> Vec<u8> {
    let mut entries: Vec<(u32, u32)> = trace_ids
        .iter()
        .enumerate()
        .filter_map(|(row, id)| Some((key(id?)?, row as u32)))
        .collect();
    entries.sort_unstable();
    let blocks = entries.len().div_ceil(BLOCK);
    let mut out = Vec::with_capacity(HEADER_LEN as usize + entries.len() * ENTRY_LEN + blocks * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&(BLOCK as u32).to_le_bytes());
    for (key, row) in &entries {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&row.to_le_bytes());
    }
    for block in entries.chunks(BLOCK) {
        out.extend_from_slice(&block[0].0.to_le_bytes());
    }
    out
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// What a reader keeps of an index: its size and the fences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIndexHead {
    entries: usize,
    block: usize,
    fences: Vec<u32>,
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Internal(format!("corrupt trace index: {what}"))
}

impl TraceIndexHead {
    /// Parses the first [`HEADER_LEN`] bytes; returns the entry count and
    /// block size, from which [`TraceIndexHead::fences_range`] follows.
    pub fn parse_header(header: &[u8]) -> Result<(usize, usize)> {
        if header.get(..4) != Some(MAGIC.as_slice()) {
            return Err(corrupt("bad magic"));
        }
        let entries = u32_at(header, 4).ok_or_else(|| corrupt("short header"))? as usize;
        let block = u32_at(header, 8).ok_or_else(|| corrupt("short header"))? as usize;
        if block == 0 {
            return Err(corrupt("zero block size"));
        }
        Ok((entries, block))
    }

    /// Where the fences of an index of `entries` entries lie.
    pub fn fences_range(entries: usize, block: usize) -> Range<u64> {
        let start = HEADER_LEN + (entries * ENTRY_LEN) as u64;
        start..start + (entries.div_ceil(block) * 4) as u64
    }

    pub fn new(entries: usize, block: usize, fences: &[u8]) -> Result<TraceIndexHead> {
        if fences.len() != entries.div_ceil(block) * 4 {
            return Err(corrupt("fence table size"));
        }
        Ok(TraceIndexHead {
            entries,
            block,
            fences: fences
                .chunks_exact(4)
                .filter_map(|c| c.try_into().ok().map(u32::from_le_bytes))
                .collect(),
        })
    }

    /// The byte range of the entries that may hold `key`, if any may.
    pub fn entries_range(&self, key: u32) -> Option<Range<u64>> {
        // Blocks whose first key is ≤ key, from the last one starting
        // below it (a run of equal keys may begin in the previous block).
        let end = self.fences.partition_point(|f| *f <= key);
        if end == 0 {
            return None;
        }
        let start = self.fences.partition_point(|f| *f < key).saturating_sub(1);
        let first = start * self.block;
        let last = (end * self.block).min(self.entries);
        Some(HEADER_LEN + (first * ENTRY_LEN) as u64..HEADER_LEN + (last * ENTRY_LEN) as u64)
    }
}

/// The rows in `entries` (bytes of whole entries) whose key is `key`,
/// ascending.
pub fn rows_for(entries: &[u8], key: u32) -> Vec<u32> {
    let mut rows: Vec<u32> = entries
        .chunks_exact(ENTRY_LEN)
        .filter(|e| u32_at(e, 0) == Some(key))
        .filter_map(|e| u32_at(e, 4))
        .collect();
    rows.sort_unstable();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks `id` up the way the store does: header, fences, one range.
    fn lookup(index: &[u8], id: &str) -> Vec<u32> {
        let (entries, block) = TraceIndexHead::parse_header(&index[..12]).unwrap();
        let fences = TraceIndexHead::fences_range(entries, block);
        let head = TraceIndexHead::new(
            entries,
            block,
            &index[fences.start as usize..fences.end as usize],
        )
        .unwrap();
        let Some(k) = key(id) else { return Vec::new() };
        match head.entries_range(k) {
            Some(r) => rows_for(&index[r.start as usize..r.end as usize], k),
            None => Vec::new(),
        }
    }

    #[test]
    fn finds_every_row_of_every_trace_across_blocks() {
        // 5,000 rows over 1,700 traces in scrambled order; one trace has
        // many spans so its run crosses a block boundary.
        let ids: Vec<String> = (0..5_000u32)
            .map(|row| {
                let trace = if row % 7 == 0 {
                    1234
                } else {
                    (row * 7919) % 1700
                };
                format!("{:08x}{:024x}", trace.wrapping_mul(2_654_435_761), trace)
            })
            .collect();
        let array = StringArray::from(ids.iter().map(|s| Some(s.as_str())).collect::<Vec<_>>());
        let index = build(&array);
        for probe in [0usize, 7, 13, 4_999, 2_500] {
            let id = &ids[probe];
            let expected: Vec<u32> = ids
                .iter()
                .enumerate()
                .filter(|(_, other)| other[..8] == id[..8])
                .map(|(row, _)| row as u32)
                .collect();
            assert_eq!(lookup(&index, id), expected, "{id}");
        }
        assert!(lookup(&index, "ffffffff000000000000000000000000").is_empty());
        assert!(lookup(&index, "00000001000000000000000000000000").is_empty());
        assert!(lookup(&index, "not hex").is_empty());
        let empty = build(&StringArray::from(Vec::<Option<&str>>::new()));
        assert!(lookup(&empty, &ids[0]).is_empty());
        assert!(TraceIndexHead::parse_header(b"nope00000000").is_err());
    }
}
