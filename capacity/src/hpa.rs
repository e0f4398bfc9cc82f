//! The Kubernetes Horizontal Pod Autoscaler's decision algorithm, step for
//! step: per-signal proposals with a tolerance band, the maximum over
//! signals (holding when a signal is missing and the rest say "down"),
//! stabilisation windows, rate-limit policies and min/max clamping — each
//! decision recording the reason that limited it.

use std::time::Duration;

/// One signal: its total over all ready instances and its per-instance
/// target. (HPA's `usage ratio` is total / (target × current).)
#[derive(Debug, Clone, PartialEq)]
pub struct SignalReading {
    pub name: String,
    /// The current total (e.g. requests/s over the service, or the sum of
    /// CPU utilisation), or `None` when the signal could not be read.
    pub value: Option<f64>,
    /// The target per instance (e.g. target utilisation × capacity).
    pub target: f64,
}

/// Whether a rate policy counts instances or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// At most `value` instances (or percent) of change per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: u32,
    pub period: Duration,
}

impl Policy {
    /// At most `value` instances of change per `period`.
    pub fn pods(value: u32, period: Duration) -> Policy {
        Policy {
            kind: PolicyKind::Pods,
            value,
            period,
        }
    }

    /// At most `value` percent of change per `period`.
    pub fn percent(value: u32, period: Duration) -> Policy {
        Policy {
            kind: PolicyKind::Percent,
            value,
            period,
        }
    }
}

/// How several rate policies of one direction combine (HPA's
/// `selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the biggest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// HPA's `behavior` for one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub stabilization: Duration,
    pub policies: Vec<Policy>,
    pub select: Select,
}

/// HPA's `behavior`: stabilisation and rate limits per direction, kept
/// apart so scaling up can be fast while scaling down is cautious.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    pub scale_up: Rules,
    pub scale_down: Rules,
}

impl Default for Behavior {
    /// Kubernetes' defaults: up by max(4 pods, 100%) per 15 s with no
    /// stabilisation; down by 100% per 15 s after 300 s of stabilisation.
    fn default() -> Self {
        let period = Duration::from_secs(15);
        Behavior {
            scale_up: Rules {
                stabilization: Duration::ZERO,
                policies: vec![Policy::pods(4, period), Policy::percent(100, period)],
                select: Select::Max,
            },
            scale_down: Rules {
                stabilization: Duration::from_secs(300),
                policies: vec![Policy::percent(100, period)],
                select: Select::Max,
            },
        }
    }
}

impl Behavior {
    /// How far back recommendations matter (the longer window).
    pub fn longest_stabilization(&self) -> Duration {
        self.scale_up
            .stabilization
            .max(self.scale_down.stabilization)
    }

    /// How far back scale events matter (the longest rate-policy period).
    pub fn longest_period(&self) -> Duration {
        self.scale_up
            .policies
            .iter()
            .chain(&self.scale_down.policies)
            .map(|p| p.period)
            .max()
            .unwrap_or_default()
    }
}

/// The hard bounds and the tolerance band that stops flapping around the
/// target.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub min: u32,
    pub max: u32,
    pub tolerance_up: f64,
    pub tolerance_down: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min: 1,
            max: u32::MAX,
            tolerance_up: 0.1,
            tolerance_down: 0.1,
        }
    }
}

/// Why a decision came out as it did (HPA's condition reasons, plus the
/// two the evaluator sets around the algorithm). Serialized by its
/// [`Reason::as_str`] name, which the API and webhooks show and users
/// match on, so the names are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    DesiredWithinRange,
    WithinTolerance,
    MissingSignalHold,
    ScaleUpStabilized,
    ScaleDownStabilized,
    ScaleUpLimit,
    ScaleDownLimit,
    TooManyReplicas,
    TooFewReplicas,
    /// An operator's hold is in force (never returned by [`decide`]).
    ManualOverride,
    /// The policy's fallback after failed evaluations (never returned by
    /// [`decide`]).
    Fallback,
}

impl Reason {
    /// The stable name (Kubernetes' spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DesiredWithinRange => "DesiredWithinRange",
            Reason::WithinTolerance => "WithinTolerance",
            Reason::MissingSignalHold => "MissingSignalHold",
            Reason::ScaleUpStabilized => "ScaleUpStabilized",
            Reason::ScaleDownStabilized => "ScaleDownStabilized",
            Reason::ScaleUpLimit => "ScaleUpLimit",
            Reason::ScaleDownLimit => "ScaleDownLimit",
            Reason::TooManyReplicas => "TooManyReplicas",
            Reason::TooFewReplicas => "TooFewReplicas",
            Reason::ManualOverride => "ManualOverride",
            Reason::Fallback => "Fallback",
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One signal's contribution, kept as evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub name: String,
    pub value: Option<f64>,
    pub target: f64,
    pub ratio: Option<f64>,
    pub replicas: Option<u32>,
}

/// What [`decide`] concluded, with each signal's proposal as evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub current: u32,
    /// What the signals asked for, before stabilisation and limits.
    pub desired: u32,
    pub replicas: u32,
    pub reason: Reason,
    pub proposals: Vec<Proposal>,
}

/// The per-service state HPA keeps between evaluations.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// (time, recommendation) of past evaluations.
    recommendations: Vec<(Duration, u32)>,
    /// (time, change) of past scale events (+ up, − down).
    events: Vec<(Duration, i64)>,
}

impl History {
    /// History as it was persisted: past (time, recommendation) pairs and
    /// past (time, change) scale events — so a restart does not forget a
    /// stabilisation window or a rate limit already in progress.
    pub fn restore(recommendations: Vec<(Duration, u32)>, events: Vec<(Duration, i64)>) -> History {
        History {
            recommendations,
            events,
        }
    }
}

/// A signal's proposal: `ceil(current × ratio)`, or `current` inside the
/// tolerance band (inclusive).
fn propose(reading: &SignalReading, current: u32, limits: &Limits) -> Proposal {
    let mut p = Proposal {
        name: reading.name.clone(),
        value: reading.value,
        target: reading.target,
        ratio: None,
        replicas: None,
    };
    if let Some(total) = reading.value.filter(|_| reading.target > 0.0) {
        let ratio = (current > 0).then(|| total / (reading.target * current as f64));
        p.ratio = ratio;
        let within = ratio
            .is_some_and(|r| r >= 1.0 - limits.tolerance_down && r <= 1.0 + limits.tolerance_up);
        // ceil(current × ratio), computed as ceil(total / target) so that
        // exact multiples stay exact.
        p.replicas = Some(if within {
            current
        } else {
            (total / reading.target).ceil().max(0.0) as u32
        });
    }
    p
}

/// Decides the instance count at time `now` (a monotonic clock), updating
/// `history`. `schedule_floor` is a scheduled minimum (0 for none), taken
/// in the same maximum as the signals.
pub fn decide(
    current: u32,
    readings: &[SignalReading],
    schedule_floor: u32,
    limits: &Limits,
    behavior: &Behavior,
    history: &mut History,
    now: Duration,
) -> Decision {
    let proposals: Vec<Proposal> = readings
        .iter()
        .map(|r| propose(r, current, limits))
        .collect();
    let known: Vec<u32> = proposals.iter().filter_map(|p| p.replicas).collect();
    let missing = known.len() < proposals.len();
    let mut desired = known
        .iter()
        .copied()
        .max()
        .unwrap_or(current)
        .max(schedule_floor);
    let mut reason = Reason::DesiredWithinRange;
    if !known.is_empty() && known.iter().all(|r| *r == current) && schedule_floor <= current {
        reason = Reason::WithinTolerance;
    }
    if (missing || known.is_empty()) && desired < current {
        desired = current;
        reason = Reason::MissingSignalHold;
    }

    // Stabilisation (HPA's stabilizeRecommendationWithBehaviors).
    let (mut up, mut down) = (desired, desired);
    let up_from = now.saturating_sub(behavior.scale_up.stabilization);
    let down_from = now.saturating_sub(behavior.scale_down.stabilization);
    for &(at, r) in &history.recommendations {
        if at > up_from {
            up = up.min(r);
        }
        if at > down_from {
            down = down.max(r);
        }
    }
    let mut stabilized = current;
    if stabilized < up {
        stabilized = up;
    }
    if stabilized > down {
        stabilized = down;
    }
    if stabilized != desired && reason != Reason::MissingSignalHold {
        reason = if stabilized < desired {
            Reason::ScaleUpStabilized
        } else {
            Reason::ScaleDownStabilized
        };
    }
    history.recommendations.push((now, desired));
    let keep = behavior.longest_stabilization();
    history.recommendations.retain(|(at, _)| *at + keep >= now);

    // Rate limits, then min/max.
    let mut replicas = stabilized;
    if stabilized > current {
        let limit = rate_limit(
            Direction::Up,
            current,
            &behavior.scale_up,
            &history.events,
            now,
        );
        if replicas > limit {
            replicas = limit;
            reason = Reason::ScaleUpLimit;
        }
    } else if stabilized < current {
        let limit = rate_limit(
            Direction::Down,
            current,
            &behavior.scale_down,
            &history.events,
            now,
        );
        if replicas < limit {
            replicas = limit;
            reason = Reason::ScaleDownLimit;
        }
    }
    if replicas > limits.max {
        replicas = limits.max;
        reason = Reason::TooManyReplicas;
    } else if replicas < limits.min {
        replicas = limits.min;
        reason = Reason::TooFewReplicas;
    }
    if replicas != current {
        history.events.push((now, replicas as i64 - current as i64));
    }
    let longest = behavior.longest_period();
    history.events.retain(|(at, _)| *at + longest >= now);
    Decision {
        current,
        desired,
        replicas,
        reason,
        proposals,
    }
}

/// Net change within the current period: the period started at
/// `current − added + deleted`, as Kubernetes counts it in both directions.
fn changed_in_period(events: &[(Duration, i64)], period: Duration, now: Duration) -> i64 {
    events
        .iter()
        .filter(|(at, _)| *at + period > now)
        .map(|(_, change)| *change)
        .sum()
}

/// Which way a rate limit applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// The furthest the rate policies let the count move from `current` in
/// `direction` now. "Max" selects the policy allowing the most change —
/// the most instances going up, the fewest going down.
fn rate_limit(
    direction: Direction,
    current: u32,
    rules: &Rules,
    events: &[(Duration, i64)],
    now: Duration,
) -> u32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let sign = if direction == Direction::Up { 1 } else { -1 };
    let mut result: Option<i64> = None;
    for p in &rules.policies {
        let start = current as i64 - changed_in_period(events, p.period, now);
        let proposed = match p.kind {
            PolicyKind::Pods => start + sign * p.value as i64,
            PolicyKind::Percent => {
                let scaled = start as f64 * (1.0 + (sign * p.value as i64) as f64 / 100.0);
                // Up rounds towards more instances, down truncates.
                if direction == Direction::Up {
                    scaled.ceil() as i64
                } else {
                    scaled as i64
                }
            }
        };
        // Comparing signed counts makes "most change" a maximum both ways.
        let (r, q) = (result.map(|r| sign * r), sign * proposed);
        result = Some(
            sign * match (r, rules.select) {
                (None, _) => q,
                (Some(r), Select::Min) => r.min(q),
                (Some(r), _) => r.max(q),
            },
        );
    }
    match direction {
        Direction::Up => result.map_or(current, |r| r.max(current as i64) as u32),
        Direction::Down => result.map_or(current, |r| r.clamp(0, current as i64) as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(total: f64, target: f64) -> SignalReading {
        SignalReading {
            name: "load".into(),
            value: Some(total),
            target,
        }
    }

    /// One decision with the default limits and no schedule floor.
    fn step(
        current: u32,
        readings: &[SignalReading],
        behavior: &Behavior,
        history: &mut History,
        now: Duration,
    ) -> Decision {
        decide(
            current,
            readings,
            0,
            &Limits::default(),
            behavior,
            history,
            now,
        )
    }

    /// The default behaviour without the scale-down stabilisation window.
    fn no_down_stabilization() -> Behavior {
        Behavior {
            scale_down: Rules {
                stabilization: Duration::ZERO,
                ..Behavior::default().scale_down
            },
            ..Behavior::default()
        }
    }

    fn once(current: u32, readings: &[SignalReading], limits: &Limits) -> Decision {
        decide(
            current,
            readings,
            0,
            limits,
            &Behavior::default(),
            &mut History::default(),
            Duration::from_secs(1000),
        )
    }

    #[test]
    fn ratio_scales_the_current_count() {
        // 50 instances at 90 against a target of 75 → 60.
        let d = once(50, &[load(90.0 * 50.0, 75.0)], &Limits::default());
        assert_eq!(d.replicas, 60);
    }

    #[test]
    fn rate_limits_count_both_directions_in_the_period() {
        // 10 → 5 five seconds ago: the period started at 10, so the default
        // scale-up policy allows max(10 + 4, 2 × 10) = 20, not 2 × 5.
        let mut history = History::restore(Vec::new(), vec![(Duration::from_secs(100), -5)]);
        let d = step(
            5,
            &[load(3000.0, 100.0)],
            &Behavior::default(),
            &mut history,
            Duration::from_secs(105),
        );
        assert_eq!((d.replicas, d.reason), (20, Reason::ScaleUpLimit));
    }

    #[test]
    fn tolerance_band_is_inclusive() {
        // Ratio exactly 1.10 holds; 1.1001 scales.
        let d = once(10, &[load(1100.0, 100.0)], &Limits::default());
        assert_eq!((d.replicas, d.reason), (10, Reason::WithinTolerance));
        let d = once(10, &[load(1100.1, 100.0)], &Limits::default());
        assert_eq!(d.replicas, 12);
    }

    #[test]
    fn load_over_capacity_whatever_the_current_count() {
        // Load 20 with capacity 5 per instance → 4, from any current count.
        for current in [1u32, 3, 4, 10, 40] {
            let d = step(
                current,
                &[load(20.0, 5.0)],
                &no_down_stabilization(),
                &mut History::default(),
                Duration::from_secs(100),
            );
            assert_eq!(d.desired, 4, "from {current}");
        }
        let limits = Limits {
            max: 2,
            ..Limits::default()
        };
        let d = once(1, &[load(20.0, 5.0)], &limits);
        assert_eq!((d.replicas, d.reason), (2, Reason::TooManyReplicas));
    }

    #[test]
    fn scale_down_waits_out_the_stabilisation_window() {
        let behavior = Behavior::default();
        let t = Duration::from_secs(1000);
        let mut history = History::restore(
            vec![
                (t - Duration::from_secs(240), 8),
                (t - Duration::from_secs(120), 9),
            ],
            Vec::new(),
        );
        let five = load(50.0, 10.0); // load for 5 instances
        let d = step(10, std::slice::from_ref(&five), &behavior, &mut history, t);
        assert_eq!((d.replicas, d.reason), (9, Reason::ScaleDownStabilized));
        // 61 s later the 8 has aged out; the 9 (and the newer 5) remain.
        let d = step(
            9,
            std::slice::from_ref(&five),
            &behavior,
            &mut history,
            t + Duration::from_secs(61),
        );
        assert_eq!(d.replicas, 9);
        // Once the 9 is older than 300 s, only 5s remain.
        let d = step(
            9,
            &[five],
            &behavior,
            &mut history,
            t + Duration::from_secs(181),
        );
        assert_eq!(d.replicas, 5);
    }

    #[test]
    fn default_scale_up_doubles_or_adds_four_per_period() {
        let behavior = Behavior::default();
        let mut history = History::default();
        let mut current = 3;
        let mut t = Duration::from_secs(1000);
        let mut steps = Vec::new();
        for _ in 0..3 {
            let want = load(20.0, 1.0); // 20 instances' worth
            let d = step(current, &[want], &behavior, &mut history, t);
            steps.push((d.replicas, d.reason));
            current = d.replicas;
            t += Duration::from_secs(15);
        }
        assert_eq!(
            steps,
            vec![
                (7, Reason::ScaleUpLimit),
                (14, Reason::ScaleUpLimit),
                (20, Reason::DesiredWithinRange)
            ]
        );
    }

    #[test]
    fn scale_down_policies_select_the_biggest_change() {
        let period = Duration::from_secs(60);
        let behavior = Behavior {
            scale_down: Rules {
                stabilization: Duration::ZERO,
                policies: vec![Policy::pods(4, period), Policy::percent(10, period)],
                select: Select::Max,
            },
            ..Behavior::default()
        };
        let d = step(
            80,
            &[load(10.0, 1.0)],
            &behavior,
            &mut History::default(),
            Duration::from_secs(1000),
        );
        assert_eq!(
            (d.desired, d.replicas, d.reason),
            (10, 72, Reason::ScaleDownLimit)
        );
    }

    #[test]
    fn a_missing_signal_holds_scale_down_but_not_scale_up() {
        let missing = SignalReading {
            name: "cpu".into(),
            value: None,
            target: 0.7,
        };
        let no_stabilization = no_down_stabilization();
        let mut h = History::default();
        let down = step(
            10,
            &[load(20.0, 10.0), missing.clone()],
            &no_stabilization,
            &mut h,
            Duration::from_secs(10),
        );
        assert_eq!(
            (down.replicas, down.reason),
            (10, Reason::MissingSignalHold)
        );
        let up = step(
            10,
            &[load(200.0, 10.0), missing],
            &no_stabilization,
            &mut History::default(),
            Duration::from_secs(10),
        );
        assert_eq!(up.replicas, 20);
    }
}
