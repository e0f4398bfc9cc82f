//! The life of one alert instance, exactly as Prometheus runs it: inactive
//! → pending while the condition holds → firing once it has held for `for`
//! → resolved when it stops holding (or, with `keep_firing_for`, once it
//! has stopped holding that long). Pending alerts are never notified.
//! Pure: the evaluator feeds it observations and stores what it returns.

use serde::{Deserialize, Serialize};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds, not yet for `for`.
    Pending,
    /// Notified while it lasts.
    Firing,
    /// It fired and has stopped; notified once as resolved.
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<AlertState> {
        match text {
            "pending" => Some(AlertState::Pending),
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// What is remembered of an instance between evaluations (ms timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Life {
    pub state: AlertState,
    /// When the condition started holding (`startsAt`).
    pub active_at: i64,
    /// When it started firing.
    pub fired_at: Option<i64>,
    /// When it resolved (`endsAt`).
    pub resolved_at: Option<i64>,
    /// Since when the condition has not held while `keep_firing_for` keeps it firing.
    pub quiet_since: Option<i64>,
}

/// The durations of a rule that shape an instance's life (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
}

/// The next life of an instance after one evaluation at `now`:
/// `holds` says whether the condition returned it. `None` means the
/// instance is gone (a pending alert that stopped, never notified).
pub fn step(previous: Option<Life>, holds: bool, now: i64, timing: Timing) -> Option<Life> {
    let fire_if_due = |mut life: Life| {
        if life.state == AlertState::Pending && now - life.active_at >= timing.for_ms {
            life.state = AlertState::Firing;
            life.fired_at = Some(now);
        }
        life
    };
    match (previous, holds) {
        // A new instance, or one that resolved and holds again.
        (None, true)
        | (
            Some(Life {
                state: AlertState::Resolved,
                ..
            }),
            true,
        ) => Some(fire_if_due(Life {
            state: AlertState::Pending,
            active_at: now,
            fired_at: None,
            resolved_at: None,
            quiet_since: None,
        })),
        (None, false) => None,
        (Some(life), true) => Some(fire_if_due(Life {
            quiet_since: None,
            ..life
        })),
        (Some(life), false) => match life.state {
            AlertState::Pending => None,
            AlertState::Resolved => Some(life),
            AlertState::Firing => {
                let quiet_since = life.quiet_since.unwrap_or(now);
                if now - quiet_since >= timing.keep_firing_for_ms {
                    Some(Life {
                        state: AlertState::Resolved,
                        resolved_at: Some(now),
                        quiet_since: None,
                        ..life
                    })
                } else {
                    Some(Life {
                        quiet_since: Some(quiet_since),
                        ..life
                    })
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        for_ms: 60_000,
        keep_firing_for_ms: 0,
    };

    fn run(observations: &[(i64, bool)], timing: Timing) -> Vec<Option<AlertState>> {
        let mut life = None;
        observations
            .iter()
            .map(|&(now, holds)| {
                life = step(life, holds, now, timing);
                life.map(|l| l.state)
            })
            .collect()
    }

    #[test]
    fn pending_fires_only_after_for() {
        let states = run(
            &[(0, true), (30_000, true), (59_999, true), (60_000, true)],
            T,
        );
        use AlertState::*;
        assert_eq!(
            states,
            [Some(Pending), Some(Pending), Some(Pending), Some(Firing)]
        );
    }

    #[test]
    fn pending_that_stops_is_forgotten_and_starts_over() {
        let states = run(
            &[
                (0, true),
                (30_000, false),
                (40_000, true),
                (90_000, true),
                (100_000, true),
            ],
            T,
        );
        use AlertState::*;
        assert_eq!(
            states,
            [
                Some(Pending),
                None,
                Some(Pending),
                Some(Pending),
                Some(Firing)
            ]
        );
    }

    #[test]
    fn for_zero_fires_at_once_and_resolves_when_false() {
        let t = Timing {
            for_ms: 0,
            keep_firing_for_ms: 0,
        };
        let mut life = step(None, true, 5, t).unwrap();
        assert_eq!(life.state, AlertState::Firing);
        assert_eq!(life.fired_at, Some(5));
        life = step(Some(life), false, 9, t).unwrap();
        assert_eq!(life.state, AlertState::Resolved);
        assert_eq!((life.active_at, life.resolved_at), (5, Some(9)));
        // Holding again starts a new life.
        let again = step(Some(life), true, 12, t).unwrap();
        assert_eq!((again.state, again.active_at), (AlertState::Firing, 12));
    }

    #[test]
    fn keep_firing_for_holds_a_flapping_alert() {
        let t = Timing {
            for_ms: 0,
            keep_firing_for_ms: 10_000,
        };
        use AlertState::*;
        let states = run(
            &[
                (0, true),
                (5_000, false),
                (12_000, true),
                (13_000, false),
                (22_000, false),
                (23_000, false),
            ],
            t,
        );
        assert_eq!(
            states,
            [
                Some(Firing),
                Some(Firing),
                Some(Firing),
                Some(Firing),
                Some(Firing),
                Some(Resolved)
            ]
        );
    }
}
