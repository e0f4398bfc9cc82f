//! The one duration grammar of every API field, flag and config key:
//! `500ms`, `15s`, `5m`, `1.5h`, `7d`, `1w`, compounds such as `1h30m`, and
//! a bare number meaning seconds. Units: `ns`, `us` (or `µs`), `ms`, `s`,
//! `m`, `h`, `d`, `w`. Arithmetic is exact (integer nanoseconds) and checked.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Why text is not a duration; the message says what would be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration: {why} (use e.g. 500ms, 15s, 5m, 1.5h, 7d, 1w or 1h30m)")]
pub struct DurationError {
    pub text: String,
    pub why: &'static str,
}

const NS_PER_UNIT: &[(&str, i128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("w", 604_800_000_000_000),
];

/// Parses a non-negative duration to whole nanoseconds.
pub fn parse_nanos(text: &str) -> Result<i64, DurationError> {
    let err = |why| DurationError {
        text: text.to_string(),
        why,
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(err("it is empty"));
    }
    let mut rest = t;
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(err("expected a number"));
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit.trim() {
            // A bare number is seconds, but only on its own.
            "" if total == 0 && after.is_empty() => 1_000_000_000,
            "" => return Err(err("a number without a unit inside a compound")),
            u => {
                NS_PER_UNIT
                    .iter()
                    .find(|(name, _)| *name == u)
                    .ok_or_else(|| err("unknown unit"))?
                    .1
            }
        };
        total = total
            .checked_add(scaled(number, scale).ok_or_else(|| err("not a number"))?)
            .ok_or_else(|| err("too long"))?;
        rest = after;
    }
    i64::try_from(total).map_err(|_| err("too long"))
}

/// `digits[.digits] × scale`, exactly (fractions below 1 ns are dropped).
fn scaled(number: &str, scale: i128) -> Option<i128> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') || whole.len() > 30 {
        return None;
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(scale)?;
    let mut place = scale;
    for digit in frac.chars().take(18) {
        place /= 10;
        value += i128::from(digit.to_digit(10)? as u8) * place;
    }
    Some(value)
}

/// Parses a non-negative duration.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_nanos(text).map(|ns| Duration::from_nanos(ns as u64))
}

/// The shortest exact text for `d` in the grammar (`1500ms`, `15s`, `5m`).
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, per) in NS_PER_UNIT.iter().rev() {
        if *unit == "µs" {
            continue;
        }
        let per = *per as u128;
        if ns >= per && ns.is_multiple_of(per) {
            return format!("{}{unit}", ns / per);
        }
    }
    if ns == 0 {
        "0s".into()
    } else {
        format!("{ns}ns")
    }
}

/// `#[serde(with = "loupe_base::duration")]` for `Duration` fields.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// See [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// `#[serde(with = "loupe_base::duration::option")]` for `Option<Duration>`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| super::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn parses_units_fractions_and_compounds() {
        assert_eq!(parse_nanos("500ms"), Ok(S / 2));
        assert_eq!(parse_nanos("15s"), Ok(15 * S));
        assert_eq!(parse_nanos("90"), Ok(90 * S));
        assert_eq!(parse_nanos("1.5h"), Ok(5400 * S));
        assert_eq!(parse_nanos(".5s"), Ok(S / 2));
        assert_eq!(parse_nanos("1w"), Ok(7 * 86400 * S));
        assert_eq!(parse_nanos("2d"), Ok(2 * 86400 * S));
        assert_eq!(parse_nanos("1h30m"), Ok(5400 * S));
        assert_eq!(parse_nanos("250us"), Ok(250_000));
        assert_eq!(parse_nanos("7ns"), Ok(7));
        assert_eq!(parse_nanos(" 5m "), Ok(300 * S));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "-1s",
            "5 weeks",
            "1.2.3s",
            "s",
            "1h30",
            "99999999999999999999w",
            "5€",
            "now",
        ] {
            assert!(parse_nanos(bad).is_err(), "{bad:?} parsed");
        }
        let message = parse_nanos("5q").unwrap_err().to_string();
        assert!(message.contains("unknown unit"), "{message}");
    }

    #[test]
    fn formats_round_trip() {
        for text in ["300ms", "15s", "5m", "1h", "2d", "1w", "90s", "7ns", "0s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }

    #[test]
    fn serde_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "crate::duration")]
            d: Duration,
            #[serde(with = "crate::duration::option", default)]
            o: Option<Duration>,
        }
        let t: T = serde_json::from_str(r#"{"d": "1.5h", "o": "5m"}"#).unwrap();
        assert_eq!(t.d, Duration::from_secs(5400));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"d":"90m","o":"5m"}"#
        );
        assert!(serde_json::from_str::<T>(r#"{"d": "soon"}"#).is_err());
    }
}
