//! Five-field cron expressions (`minute hour day-of-month month
//! day-of-week`) evaluated in an IANA time zone: `*`, lists, ranges, steps
//! and three-letter names, with Vixie cron's rule that a restricted
//! day-of-month and day-of-week match either.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// A five-field cron expression as bit sets, so a schedule can ask when
/// it last fired without a dependency on a cron crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    /// Bit 0 = Sunday.
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(text: &str, names: &[&str], base: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(i as u32 + base);
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not a number or name"))
}

/// A bit set of the values `field` allows within `min..=max`.
fn field(text: &str, min: u32, max: u32, names: &[&str], name_base: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, name_base)?, value(b, names, name_base)?)
        } else {
            let v = value(range, names, name_base)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

impl std::str::FromStr for Cron {
    type Err = String;

    fn from_str(text: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = parts[..] else {
            return Err(format!(
                "{text:?} needs five fields: minute hour day-of-month month day-of-week"
            ));
        };
        let context = |e: String| format!("cron {text:?}: {e}");
        let mut weekdays = field(weekday, 0, 7, &WEEKDAYS, 0).map_err(context)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Cron {
            minutes: field(minute, 0, 59, &[], 0).map_err(context)?,
            hours: field(hour, 0, 23, &[], 0).map_err(context)?,
            days: field(day, 1, 31, &[], 0).map_err(context)?,
            months: field(month, 1, 12, &MONTHS, 1).map_err(context)?,
            weekdays,
            // Vixie cron: a field starting with `*` (also `*/2`) does not
            // restrict, so the other day field alone decides.
            days_restricted: !day.starts_with('*'),
            weekdays_restricted: !weekday.starts_with('*'),
        })
    }
}

impl Cron {
    fn matches_day(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The latest time at or before `t` when this expression fires in `tz`
    /// (searching back a year), and that time's local date.
    pub fn last_fire(&self, tz: Tz, t: DateTime<Utc>) -> Option<(DateTime<Utc>, NaiveDate)> {
        let local = t.with_timezone(&tz).naive_local();
        for back in 0..=366 {
            let date = local.date() - Duration::days(back);
            if !self.matches_day(date) {
                continue;
            }
            for hour in (0..24u32).rev() {
                if self.hours & (1 << hour) == 0 || (back == 0 && hour > local.hour()) {
                    continue;
                }
                for minute in (0..60u32).rev() {
                    if self.minutes & (1 << minute) == 0 {
                        continue;
                    }
                    let Some(naive) = date.and_hms_opt(hour, minute, 0) else {
                        continue;
                    };
                    // A local time skipped by a DST change never fires.
                    let Some(at) = tz.from_local_datetime(&naive).earliest() else {
                        continue;
                    };
                    let at = at.with_timezone(&Utc);
                    if at <= t {
                        return Some((at, date));
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Asserts that at `now`, `cron` in `tz` last fired at `fired`.
    fn assert_last_fire(cron: &Cron, tz: Tz, now: &str, fired: &str) {
        let (at, _) = cron.last_fire(tz, utc(now)).unwrap();
        assert_eq!(at, utc(fired), "at {now}");
    }

    #[test]
    fn parses_fields() {
        let c: Cron = "*/15 9-17 * * mon-fri".parse().unwrap();
        assert_eq!(c.minutes, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(c.weekdays, 0b0111110);
        assert!("0 0 * *".parse::<Cron>().is_err());
        assert!("61 0 * * *".parse::<Cron>().is_err());
        assert!("0 0 * * 7".parse::<Cron>().unwrap().weekdays & 1 == 1);
    }

    #[test]
    fn finds_the_last_fire_in_a_time_zone() {
        let c: Cron = "0 8 * * mon-fri".parse().unwrap();
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // Wednesday 2026-11-25 10:00 UTC = 11:00 Berlin: fired at 07:00 UTC.
        let (at, date) = c.last_fire(tz, utc("2026-11-25T10:00:00Z")).unwrap();
        assert_eq!(at, utc("2026-11-25T07:00:00Z"));
        assert_eq!(date.to_string(), "2026-11-25");
        // Monday 06:00 UTC (07:00 Berlin): last fire was Friday.
        assert_last_fire(&c, tz, "2026-11-23T06:00:00Z", "2026-11-20T07:00:00Z");
        // Exactly at the fire time counts.
        assert_last_fire(&c, tz, "2026-11-25T07:00:00Z", "2026-11-25T07:00:00Z");
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        let c: Cron = "0 0 1 * sun".parse().unwrap();
        let tz: Tz = "UTC".parse().unwrap();
        // 2026-11-29 is a Sunday; 2026-12-01 a Tuesday (the 1st).
        assert_last_fire(&c, tz, "2026-11-30T12:00:00Z", "2026-11-29T00:00:00Z");
        assert_last_fire(&c, tz, "2026-12-01T12:00:00Z", "2026-12-01T00:00:00Z");
        // `*/2` days AND Sundays: 2026-11-29 is odd-numbered... and a Sunday.
        let c: Cron = "0 0 */2 * sun".parse().unwrap();
        assert_last_fire(&c, tz, "2026-12-01T12:00:00Z", "2026-11-29T00:00:00Z");
    }
}
