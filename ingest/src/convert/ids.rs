//! Trace and span ids: validated by length and rendered as lowercase hex.

use std::ops::Deref;

/// An id's lowercase hex text, kept on the stack: every span and most log
/// records carry two or three ids, and a `String` each showed in ingest
/// profiles.
#[derive(Clone, Copy)]
pub struct HexId {
    /// Ids are at most 16 bytes, 32 hex digits.
    digits: [u8; 32],
    len: usize,
}

impl Deref for HexId {
    type Target = str;
    fn deref(&self) -> &str {
        // Hex digits are ASCII, so this never falls back.
        std::str::from_utf8(&self.digits[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Debug for HexId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// The hex form of an id that must be present and `len` (at most 16)
/// bytes long.
pub fn hex_id(bytes: &[u8], len: usize, what: &str) -> Result<HexId, String> {
    if bytes.len() != len || len > 16 {
        return Err(format!("{what} must be {len} bytes, got {}", bytes.len()));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(format!("{what} is all zeroes"));
    }
    let mut id = HexId {
        digits: [0; 32],
        len: 2 * len,
    };
    hex::encode_to_slice(bytes, &mut id.digits[..2 * len]).map_err(|e| format!("{what}: {e}"))?;
    Ok(id)
}

/// The hex form of an optional id: empty (or all zeroes) means absent.
pub fn optional_id(bytes: &[u8], len: usize, what: &str) -> Result<Option<HexId>, String> {
    if bytes.is_empty() || bytes.iter().all(|b| *b == 0) && bytes.len() == len {
        return Ok(None);
    }
    hex_id(bytes, len, what).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_length_and_zeroes() {
        assert_eq!(
            &*hex_id(&[0xab; 8], 8, "span_id").unwrap(),
            "abababababababab"
        );
        assert_eq!(
            &*hex_id(&[0x0f; 16], 16, "trace_id").unwrap(),
            "0f".repeat(16)
        );
        assert_eq!(
            hex_id(&[1; 7], 16, "trace_id").unwrap_err(),
            "trace_id must be 16 bytes, got 7"
        );
        assert!(hex_id(&[0; 8], 8, "span_id").is_err());
        assert!(optional_id(&[], 8, "span_id").unwrap().is_none());
        assert!(optional_id(&[0; 8], 8, "span_id").unwrap().is_none());
        assert!(optional_id(&[1; 3], 8, "span_id").is_err());
    }
}
