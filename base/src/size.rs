//! Byte sizes in flags and config keys: `512MiB`, `16MB`, `1GiB`, `4096`.

/// Why text is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a size: use e.g. 64MiB, 1GiB, 16MB or a number of bytes")]
pub struct SizeError(pub String);

/// Parses a size to bytes (binary `KiB/MiB/GiB` or `K/M/G`, decimal `kB/MB/GB`).
pub fn parse(text: &str) -> Result<usize, SizeError> {
    let err = || SizeError(text.to_string());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| err())?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => return Err(err()),
    };
    let bytes = n * scale;
    if !bytes.is_finite() || bytes > usize::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse("16MiB"), Ok(16 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("1.5k"), Ok(1536));
        assert_eq!(parse("2MB"), Ok(2_000_000));
        assert_eq!(parse("100"), Ok(100));
        assert!(parse("lots").is_err());
        assert!(parse("5 parsecs").is_err());
    }
}
