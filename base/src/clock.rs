//! Wall-clock time as integers, the unit every table and API uses.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch, for state kept at ms precision
/// (capacity decisions, webhook schedules).
pub fn now_ms() -> i64 {
    now_nanos() / 1_000_000
}

/// RFC 3339 text with millisecond precision, for ms timestamps shown to
/// people and sent in webhooks (`""` if out of chrono's range).
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_agree_and_format() {
        let ns = now_nanos();
        let ms = now_ms();
        assert!(ns > 1_600_000_000_000_000_000);
        assert!((ms - ns / 1_000_000).abs() < 1_000);
        assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.500Z");
    }
}
