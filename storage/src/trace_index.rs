//! A trace-id index beside each spans split, so looking a trace up by id
//! reads a few kilobytes per file instead of decoding `trace_id` columns.
//!
//! Spans files are sorted by service and time (what analytics want), which
//! scatters one trace's spans over a row group per service it touched, and
//! bloom filters then still cost one read per row group. The index maps the
//! first 32 bits of each trace id to the rows holding it, sorted by key, in
//! blocks of 1,024 entries, each entry a varint key delta and a varint row
//! (about 5 bytes per span):
//!
//! ```text
//! "LTI2" | entries: u32 | block: u32 | body length: u32
//!        | body: blocks of (key − previous key, row) varints
//!        | per block: first key (u32), byte offset in the body (u32)
//! ```
//!
//! A reader keeps only the header and that block table (8 bytes per 1,024
//! spans) and reads the one block a key falls in. 32-bit keys can collide;
//! a lookup is a superset of the trace's rows, and the query still compares
//! the full id.

use std::ops::Range;

use arrow::array::StringArray;

use crate::error::{Result, StorageError};

const MAGIC: &[u8; 4] = b"LTI2";
/// Bytes before the body.
pub const HEADER_LEN: u64 = 16;
/// Entries per block: one read of about 5 KiB per lookup and file.
const BLOCK: usize = 1024;

/// The 32-bit key of a trace id: its first 8 hex digits.
pub fn key(trace_id: &str) -> Option<u32> {
    u32::from_str_radix(trace_id.get(..8)?, 16).ok()
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let mut v = 0u32;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u32::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The index of `trace_ids` (row i = element i; nulls and non-hex ids are
/// left out).
pub fn build(trace_ids: &StringArray) -> Vec<u8> {
    let mut builder = TraceIndexBuilder::default();
    builder.add(trace_ids);
    builder.finish()
}

/// Builds a file's trace index batch by batch (8 bytes per span held).
#[derive(Default)]
pub struct TraceIndexBuilder {
    entries: Vec<(u32, u32)>,
    rows: u32,
}

impl TraceIndexBuilder {
    /// Adds the trace ids of the file's next rows.
    pub fn add(&mut self, trace_ids: &StringArray) {
        let first = self.rows;
        self.entries.extend(
            trace_ids
                .iter()
                .enumerate()
                .filter_map(|(row, id)| Some((key(id?)?, first + row as u32))),
        );
        self.rows += arrow::array::Array::len(trace_ids) as u32;
    }

    /// Bytes the entries so far hold.
    pub fn memory(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(u32, u32)>()
    }

    pub fn finish(self) -> Vec<u8> {
        encode(self.entries)
    }
}

fn encode(mut entries: Vec<(u32, u32)>) -> Vec<u8> {
    entries.sort_unstable();
    let mut body = Vec::with_capacity(entries.len() * 5);
    let mut table = Vec::with_capacity(entries.len().div_ceil(BLOCK) * 8);
    for block in entries.chunks(BLOCK) {
        table.extend_from_slice(&block[0].0.to_le_bytes());
        table.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let mut previous = block[0].0;
        for &(key, row) in block {
            put_varint(&mut body, key - previous);
            put_varint(&mut body, row);
            previous = key;
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN as usize + body.len() + table.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&(BLOCK as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&table);
    out
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Internal(format!("corrupt trace index: {what}"))
}

/// An index's shape, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    entries: usize,
    block: usize,
    body_len: u64,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes.
    pub fn parse(header: &[u8]) -> Result<Header> {
        if header.get(..4) != Some(MAGIC.as_slice()) {
            return Err(corrupt("bad magic"));
        }
        let field = |at| u32_at(header, at).ok_or_else(|| corrupt("short header"));
        let header = Header {
            entries: field(4)? as usize,
            block: field(8)? as usize,
            body_len: u64::from(field(12)?),
        };
        if header.block == 0 {
            return Err(corrupt("zero block size"));
        }
        Ok(header)
    }

    fn blocks(&self) -> usize {
        self.entries.div_ceil(self.block)
    }

    /// Where the block table lies.
    pub fn table_range(&self) -> Range<u64> {
        let start = HEADER_LEN + self.body_len;
        start..start + (self.blocks() * 8) as u64
    }
}

/// What a reader keeps of an index: its header and block table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIndexHead {
    header: Header,
    /// (first key, body offset) per block.
    blocks: Vec<(u32, u32)>,
}

/// Blocks `start..end` of an index, read as one byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocks {
    start: usize,
    end: usize,
    /// File offsets of those blocks' bytes.
    pub bytes: Range<u64>,
}

impl TraceIndexHead {
    pub fn new(header: Header, table: &[u8]) -> Result<TraceIndexHead> {
        if table.len() != header.blocks() * 8 {
            return Err(corrupt("block table size"));
        }
        let blocks = table
            .chunks_exact(8)
            .filter_map(|c| Some((u32_at(c, 0)?, u32_at(c, 4)?)))
            .collect();
        Ok(TraceIndexHead { header, blocks })
    }

    /// The blocks that may hold `key`, if any may.
    pub fn blocks_for(&self, key: u32) -> Option<Blocks> {
        // Blocks whose first key is ≤ key, from the last one starting
        // below it (a run of equal keys may begin in the previous block).
        let end = self.blocks.partition_point(|(first, _)| *first <= key);
        if end == 0 {
            return None;
        }
        let start = self
            .blocks
            .partition_point(|(first, _)| *first < key)
            .saturating_sub(1);
        let offset = |i: usize| {
            self.blocks
                .get(i)
                .map_or(self.header.body_len, |(_, off)| u64::from(*off))
        };
        Some(Blocks {
            start,
            end,
            bytes: HEADER_LEN + offset(start)..HEADER_LEN + offset(end),
        })
    }

    /// The rows in `bytes` (the range of `blocks`) whose key is `key`,
    /// ascending.
    pub fn rows_for(&self, blocks: &Blocks, bytes: &[u8], key: u32) -> Result<Vec<u32>> {
        let mut rows = Vec::new();
        let mut at = 0;
        for b in blocks.start..blocks.end {
            let count = self
                .header
                .block
                .min(self.header.entries.saturating_sub(b * self.header.block));
            let mut current = self.blocks[b].0;
            for _ in 0..count {
                let delta = get_varint(bytes, &mut at).ok_or_else(|| corrupt("truncated block"))?;
                let row = get_varint(bytes, &mut at).ok_or_else(|| corrupt("truncated block"))?;
                current = current.wrapping_add(delta);
                if current == key {
                    rows.push(row);
                }
            }
        }
        rows.sort_unstable();
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks `id` up the way the store does: header, block table, one range.
    fn lookup(index: &[u8], id: &str) -> Vec<u32> {
        let header = Header::parse(&index[..HEADER_LEN as usize]).unwrap();
        let table = header.table_range();
        let head =
            TraceIndexHead::new(header, &index[table.start as usize..table.end as usize]).unwrap();
        let Some(k) = key(id) else { return Vec::new() };
        match head.blocks_for(k) {
            Some(b) => head
                .rows_for(&b, &index[b.bytes.start as usize..b.bytes.end as usize], k)
                .unwrap(),
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
        assert!(Header::parse(b"nope000000000000").is_err());
        // About 5 bytes per entry instead of 8.
        assert!(index.len() < 5_000 * 6, "{} bytes", index.len());
        let mut at = 0;
        let mut buf = Vec::new();
        for v in [0, 127, 128, 300_000, u32::MAX] {
            put_varint(&mut buf, v);
        }
        for v in [0, 127, 128, 300_000, u32::MAX] {
            assert_eq!(get_varint(&buf, &mut at), Some(v));
        }
        assert_eq!(get_varint(&buf, &mut at), None);
    }
}
