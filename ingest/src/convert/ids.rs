//! Trace and span ids: validated by length and rendered as lowercase hex.

/// The hex form of an id that must be present and `len` bytes long.
pub fn hex_id(bytes: &[u8], len: usize, what: &str) -> Result<String, String> {
    if bytes.len() != len {
        return Err(format!("{what} must be {len} bytes, got {}", bytes.len()));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(format!("{what} is all zeroes"));
    }
    Ok(hex::encode(bytes))
}

/// The hex form of an optional id: empty (or all zeroes) means absent.
pub fn optional_id(bytes: &[u8], len: usize, what: &str) -> Result<Option<String>, String> {
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
            hex_id(&[0xab; 8], 8, "span_id").unwrap(),
            "abababababababab"
        );
        assert_eq!(
            hex_id(&[1; 7], 16, "trace_id").unwrap_err(),
            "trace_id must be 16 bytes, got 7"
        );
        assert!(hex_id(&[0; 8], 8, "span_id").is_err());
        assert_eq!(optional_id(&[], 8, "span_id").unwrap(), None);
        assert_eq!(optional_id(&[0; 8], 8, "span_id").unwrap(), None);
        assert!(optional_id(&[1; 3], 8, "span_id").is_err());
    }
}
