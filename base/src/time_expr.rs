//! The one grammar for points in time in API parameters, request bodies and
//! flags: RFC 3339 (`2026-11-26T14:00:00Z`), `now`, `now` plus or minus a
//! [duration](crate::duration) (`now-15m`, `now-1.5h`, `now+1h`, `now-1w`),
//! or integer nanoseconds since the epoch.

use chrono::DateTime;

/// Why text is not a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a time: use RFC 3339 (2026-11-26T14:00:00Z), now, now-15m, now+1h, or nanoseconds since the epoch"
)]
pub struct TimeError(pub String);

/// Parses `text` to ns since the epoch; `now_ns` is what `now` means.
pub fn parse(text: &str, now_ns: i64) -> Result<i64, TimeError> {
    let err = || TimeError(text.to_string());
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("now") {
        let rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(now_ns);
        }
        let (negative, amount) = if let Some(a) = rest.strip_prefix('-') {
            (true, a)
        } else if let Some(a) = rest.strip_prefix('+') {
            (false, a)
        } else {
            return Err(err());
        };
        let offset = crate::duration::parse_nanos(amount).map_err(|_| err())?;
        let at = if negative {
            now_ns.checked_sub(offset)
        } else {
            now_ns.checked_add(offset)
        };
        return at.ok_or_else(err);
    }
    if let Ok(ns) = t.parse::<i64>() {
        return Ok(ns);
    }
    DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
        .ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000_000_000;
    const S: i64 = 1_000_000_000;

    #[test]
    fn parses_absolute_relative_and_raw_times() {
        assert_eq!(parse("now", NOW), Ok(NOW));
        assert_eq!(parse("now-15m", NOW), Ok(NOW - 900 * S));
        assert_eq!(parse("now-1.5h", NOW), Ok(NOW - 5400 * S));
        assert_eq!(parse("now-1w", NOW), Ok(NOW - 7 * 86400 * S));
        assert_eq!(parse("now+1s", NOW), Ok(NOW + S));
        assert_eq!(parse("1970-01-01T00:00:01Z", NOW), Ok(S));
        assert_eq!(parse("1970-01-01T01:00:01+01:00", NOW), Ok(S));
        assert_eq!(parse("42", NOW), Ok(42));
    }

    #[test]
    fn refuses_without_panicking() {
        for bad in [
            "yesterday",
            "now-15q",
            "now€",
            "now-",
            "now*2",
            "now-€5m",
            "",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(parse(bad, NOW).is_err(), "{bad:?} parsed");
        }
        assert!(parse("now+1w", i64::MAX).is_err());
    }
}
