//! Scheduled scaling: known busy periods ("weekdays 08:00–20:00 Berlin need
//! at least 6") as a floor under the reactive decision. A window opens
//! `lead_seconds` before its start cron fires (instances need time to
//! start) and closes when its end cron fires; afterwards the count comes
//! down only through the normal scale-down stabilisation.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::cron::Cron;

/// A scheduled floor: between `start_cron` and `end_cron` firings, at
/// least `desired_instances` — for load that is known in advance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default)]
    pub name: String,
    pub service: String,
    pub start_cron: String,
    pub end_cron: String,
    #[serde(default = "utc")]
    pub timezone: String,
    pub desired_instances: u32,
    /// Local dates (`YYYY-MM-DD`) on which the window does not open.
    #[serde(default)]
    pub exclude_dates: Vec<String>,
    #[serde(default = "five_minutes")]
    pub lead_seconds: u32,
}

fn utc() -> String {
    "UTC".into()
}

fn five_minutes() -> u32 {
    300
}

/// A schedule with its expressions parsed.
struct Parsed {
    start: Cron,
    end: Cron,
    tz: Tz,
}

impl Schedule {
    fn parse(&self) -> Result<Parsed, String> {
        let tz: Tz = self
            .timezone
            .parse()
            .map_err(|_| format!("{:?} is not an IANA time zone", self.timezone))?;
        Ok(Parsed {
            start: self.start_cron.parse()?,
            end: self.end_cron.parse()?,
            tz,
        })
    }

    /// Checks what serde cannot (the cron text, the time zone, ranges),
    /// so a bad schedule is refused at the API rather than skipped later.
    pub fn validate(&self) -> Result<(), String> {
        self.parse()?;
        for date in &self.exclude_dates {
            chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map_err(|_| format!("exclude_dates: {date:?} is not YYYY-MM-DD"))?;
        }
        if self.service.is_empty() {
            return Err("service is required".into());
        }
        Ok(())
    }

    /// Whether the window is open at `now`: the last start (looking
    /// `lead_seconds` ahead) came after the last end, on a date not
    /// excluded.
    pub fn active(&self, now: DateTime<Utc>) -> Result<bool, String> {
        let p = self.parse()?;
        let ahead = now + chrono::Duration::seconds(self.lead_seconds as i64);
        let Some((start, date)) = p.start.last_fire(p.tz, ahead) else {
            return Ok(false);
        };
        if self
            .exclude_dates
            .iter()
            .any(|d| *d == date.format("%Y-%m-%d").to_string())
        {
            return Ok(false);
        }
        Ok(match p.end.last_fire(p.tz, now) {
            Some((end, _)) => start > end,
            None => true,
        })
    }
}

/// The highest count any open window of `service` asks for (0: none), and
/// the names of those windows.
pub fn floor(schedules: &[Schedule], service: &str, now: DateTime<Utc>) -> (u32, Vec<String>) {
    let mut floor = 0;
    let mut names = Vec::new();
    for s in schedules.iter().filter(|s| s.service == service) {
        match s.active(now) {
            Ok(true) => {
                floor = floor.max(s.desired_instances);
                names.push(s.name.clone());
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(schedule = %s.name, error = %e, "skipping a bad schedule"),
        }
    }
    (floor, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn business_hours() -> Schedule {
        Schedule {
            name: "business".into(),
            service: "checkout".into(),
            start_cron: "0 8 * * mon-fri".into(),
            end_cron: "0 20 * * mon-fri".into(),
            timezone: "Europe/Berlin".into(),
            desired_instances: 6,
            exclude_dates: vec!["2026-12-25".into()],
            lead_seconds: 300,
        }
    }

    #[test]
    fn window_opens_early_by_the_lead_and_closes_at_the_end() {
        let s = business_hours();
        // Berlin is UTC+1 in November: 08:00 local = 07:00 UTC.
        assert!(!s.active(at("2026-11-25T06:54:00Z")).unwrap());
        assert!(s.active(at("2026-11-25T06:55:00Z")).unwrap());
        assert!(s.active(at("2026-11-25T18:59:00Z")).unwrap());
        assert!(!s.active(at("2026-11-25T19:00:00Z")).unwrap());
        // Saturday: closed.
        assert!(!s.active(at("2026-11-28T10:00:00Z")).unwrap());
        // An excluded date (Friday 25 December) stays closed.
        assert!(!s.active(at("2026-12-25T10:00:00Z")).unwrap());
        assert!(s.active(at("2026-12-24T10:00:00Z")).unwrap());
    }

    #[test]
    fn floor_is_the_highest_open_window_of_the_service() {
        let mut night = business_hours();
        night.name = "batch".into();
        night.desired_instances = 9;
        night.start_cron = "0 2 * * *".into();
        night.end_cron = "0 4 * * *".into();
        let schedules = vec![business_hours(), night];
        assert_eq!(
            floor(&schedules, "checkout", at("2026-11-25T10:00:00Z")),
            (6, vec!["business".to_string()])
        );
        assert_eq!(
            floor(&schedules, "checkout", at("2026-11-25T01:30:00Z")).0,
            9
        );
        assert_eq!(floor(&schedules, "cart", at("2026-11-25T10:00:00Z")).0, 0);
        let mut bad = business_hours();
        bad.timezone = "Mars/Olympus".into();
        assert!(bad.validate().is_err());
    }
}
