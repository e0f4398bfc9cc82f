//! Times in API parameters: RFC 3339 (`2026-11-26T14:00:00Z`), relative to
//! now (`now`, `now-15m`, `now-2h`, `now+30s`) or nanoseconds since the epoch.

use chrono::DateTime;

use crate::error::QueryError;

/// Parses `text` to ns since the epoch; `now` is the current time in ns.
pub fn parse(text: &str, now: i64) -> Result<i64, QueryError> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now);
        }
        let (sign, amount) = match rest.split_at(1) {
            ("-", a) => (-1, a),
            ("+", a) => (1, a),
            _ => return Err(bad(text)),
        };
        return Ok(now + sign * duration_nanos(amount).ok_or_else(|| bad(text))?);
    }
    if let Ok(ns) = t.parse::<i64>() {
        return Ok(ns);
    }
    DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
        .ok_or_else(|| bad(text))
}

fn bad(text: &str) -> QueryError {
    QueryError::Invalid(format!(
        "{text:?} is not a time: use RFC 3339 (2026-11-26T14:00:00Z), now, now-15m, or nanoseconds since the epoch"
    ))
}

/// `15m`, `2h`, `30s`, `500ms`, `7d` in ns.
pub fn duration_nanos(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().ok()?;
    let scale: i64 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "w" => 7 * 86_400_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// A histogram bucket width for a time range: the smallest "round" width
/// giving at most 120 buckets (so usually 60–120 of them).
pub fn bucket_width(range_ns: i64) -> i64 {
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000 * MS;
    const WIDTHS: [i64; 24] = [
        10 * MS,
        20 * MS,
        50 * MS,
        100 * MS,
        200 * MS,
        500 * MS,
        S,
        2 * S,
        5 * S,
        10 * S,
        15 * S,
        30 * S,
        60 * S,
        120 * S,
        300 * S,
        600 * S,
        900 * S,
        1800 * S,
        3600 * S,
        7200 * S,
        10800 * S,
        21600 * S,
        43200 * S,
        86400 * S,
    ];
    WIDTHS
        .into_iter()
        .find(|w| range_ns / w <= 120)
        .unwrap_or_else(|| (range_ns / 120 / (86400 * S) + 1) * 86400 * S)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_absolute_relative_and_raw_times() {
        let now = 1_000_000_000_000;
        assert_eq!(parse("now", now).unwrap(), now);
        assert_eq!(parse("now-15m", now).unwrap(), now - 900_000_000_000);
        assert_eq!(parse("now+1s", now).unwrap(), now + 1_000_000_000);
        assert_eq!(parse("1970-01-01T00:00:01Z", now).unwrap(), 1_000_000_000);
        assert_eq!(parse("42", now).unwrap(), 42);
        assert!(parse("yesterday", now).is_err());
        assert!(parse("now-15q", now).is_err());
    }

    #[test]
    fn buckets_number_sixty_to_one_hundred_twenty() {
        for range_s in [60, 900, 3600, 6 * 3600, 86400, 7 * 86400] {
            let range = range_s * 1_000_000_000i64;
            let n = range / bucket_width(range);
            assert!((30..=120).contains(&n), "{range_s}s → {n} buckets");
        }
        assert_eq!(bucket_width(3600 * 1_000_000_000), 30 * 1_000_000_000);
    }
}
