//! Times and durations in API parameters: the shared grammar of
//! [`loupe_base::time_expr`] and [`loupe_base::duration`], answered as
//! [`QueryError::Invalid`] so every API reports a bad time the same way.

use loupe_base::{clock, duration, time_expr};

use crate::error::QueryError;

/// Parses `text` to ns since the epoch; `now` is what `now` means.
pub fn parse(text: &str, now: i64) -> Result<i64, QueryError> {
    time_expr::parse(text, now).map_err(|e| QueryError::Invalid(e.to_string()))
}

/// The latest time a window may reach: 2200-01-01T00:00:00Z. Windows are
/// clamped to [0, this] so their length and bucket arithmetic never
/// overflow, whatever a request says.
pub const LATEST: i64 = 7_258_118_400_000_000_000;

/// A request's `[start, end]` window, clamped to `[0, LATEST]`: `end`
/// defaults to now, `start` to `default_start` (e.g. `now-1h`); start after
/// end is refused.
pub fn window(
    start: Option<&str>,
    end: Option<&str>,
    default_start: &str,
) -> Result<(i64, i64), QueryError> {
    let now = clock::now_nanos();
    let end = parse(end.unwrap_or("now"), now)?.clamp(0, LATEST);
    let start = parse(start.unwrap_or(default_start), now)?.clamp(0, LATEST);
    if start > end {
        return Err(QueryError::Invalid("start is after end".into()));
    }
    Ok((start, end))
}

/// A duration parameter (`min_duration=250ms`, `step=1m`) in ns.
pub fn duration_nanos(key: &str, text: &str) -> Result<i64, QueryError> {
    duration::parse_nanos(text).map_err(|e| QueryError::Invalid(format!("{key}: {e}")))
}

/// A histogram bucket width for a time range: the smallest round width
/// giving at most 120 buckets. Consecutive widths differ by at most 2×, so
/// a range of 1.2 s or more gets 60–120 buckets.
pub fn bucket_width(range_ns: i64) -> i64 {
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000 * MS;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;
    const D: i64 = 24 * H;
    const WIDTHS: [i64; 28] = [
        10 * MS,
        20 * MS,
        30 * MS,
        50 * MS,
        100 * MS,
        200 * MS,
        300 * MS,
        500 * MS,
        S,
        2 * S,
        3 * S,
        5 * S,
        10 * S,
        15 * S,
        30 * S,
        M,
        2 * M,
        3 * M,
        5 * M,
        10 * M,
        15 * M,
        30 * M,
        H,
        2 * H,
        3 * H,
        6 * H,
        12 * H,
        D,
    ];
    WIDTHS
        .into_iter()
        .find(|w| range_ns / w <= 120)
        .unwrap_or_else(|| (range_ns / 120 / D + 1) * D)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_clamped_so_their_arithmetic_cannot_overflow() {
        let (s, e) = window(
            Some("-9000000000000000000"),
            Some("9223372036854775807"),
            "now",
        )
        .unwrap();
        assert_eq!((s, e), (0, LATEST));
        let width = bucket_width(e - s);
        assert!((e - s) / width <= 120);
        let (s, e) = window(
            Some("9223372036854775000"),
            Some("9223372036854775807"),
            "now",
        )
        .unwrap();
        assert_eq!((s, e), (LATEST, LATEST));
        assert!(bucket_width(0) > 0);
    }

    #[test]
    fn bad_times_are_invalid_requests() {
        assert!(matches!(parse("now€", 0), Err(QueryError::Invalid(_))));
        assert_eq!(parse("now-1s", 5_000_000_000).unwrap(), 4_000_000_000);
        assert!(matches!(
            duration_nanos("step", "soon"),
            Err(QueryError::Invalid(m)) if m.starts_with("step:")
        ));
    }

    #[test]
    fn buckets_number_sixty_to_one_hundred_twenty() {
        // Every range from 1.2 s to a year, in small multiplicative steps.
        let mut range: i64 = 1_200_000_000;
        while range < 366 * 86_400_000_000_000 {
            let n = range / bucket_width(range);
            assert!((60..=120).contains(&n), "{range} ns → {n} buckets");
            range += range / 37 + 1;
        }
        assert_eq!(bucket_width(3600 * 1_000_000_000), 30 * 1_000_000_000);
    }
}
