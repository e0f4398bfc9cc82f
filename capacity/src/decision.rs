//! The middle step of an evaluation, kept pure: from what was measured and
//! what the unit remembers, what to do — run HPA, hold for an operator,
//! fail, or fall back. No I/O here, so every branch is tested with
//! hand-built measurements; the evaluator measures before and records after.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::baseline::Baseline;
use crate::hpa::{self, History, Reason, SignalReading};
use crate::policy::{Fallback, PolicySpec};
use crate::task::TaskOrigin;
use loupe_base::clock::rfc3339_ms as rfc3339;

/// Consecutive failed evaluations before the fallback applies.
pub const FAILURES_BEFORE_FALLBACK: u32 = 3;

/// A signal (or the instance count) that could not be read, kept as
/// evidence: `{"signal", "error"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalError {
    pub signal: String,
    pub error: String,
}

/// Everything one evaluation read before deciding anything.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// One per policy signal, in policy order; `value` is `None` when the
    /// signal could not be read.
    pub readings: Vec<SignalReading>,
    pub errors: Vec<SignalError>,
    pub ready: Option<u32>,
    pub baseline: Option<Baseline>,
    /// The count (service, region) is at.
    pub current: u32,
    /// The scheduled floor (0 for none) and the windows that set it.
    pub floor: u32,
    pub windows: Vec<String>,
    /// An operator's hold in force, until then (ms).
    pub hold_until_ms: Option<i64>,
}

impl Measurement {
    /// Records that `signal` could not be read, and why.
    pub fn error(&mut self, signal: &str, error: impl ToString) {
        self.errors.push(SignalError {
            signal: signal.into(),
            error: error.to_string(),
        });
    }

    /// Keeps `result`'s value, or records its error against `signal`.
    pub fn note<T, E: ToString>(&mut self, signal: &str, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.error(signal, e)).ok()
    }

    /// No signal readable and nothing that applies without one (a
    /// scheduled window above the count needs no metrics; an operator's
    /// hold is never overridden by the fallback): the evaluation failed.
    pub fn failed(&self) -> bool {
        self.readings.iter().all(|r| r.value.is_none())
            && self.floor <= self.current
            && self.hold_until_ms.is_none()
    }

    /// Whether [`decide`] runs HPA, and so needs the unit's history.
    pub fn needs_history(&self) -> bool {
        !self.failed() && self.hold_until_ms.is_none()
    }
}

/// What the evaluator remembers per (service, region) between evaluations.
#[derive(Debug, Default)]
pub struct Unit {
    /// HPA's memory; `None` until loaded from the store (after a restart
    /// or a manual task).
    pub history: Option<History>,
    pub failures: u32,
    pub in_fallback: bool,
}

/// What an evaluation concluded, before it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub current: u32,
    pub desired: u32,
    pub replicas: u32,
    pub reason: Reason,
    pub evidence: Value,
    /// Where a resulting task came from.
    pub origin: TaskOrigin,
}

/// The three ways an evaluation ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A decision to record (its task, if the count changes).
    Decided(Verdict),
    /// No signal readable, and the fallback is not (or already) applied;
    /// `message` joins the errors.
    Failed { message: String },
    /// The fallback applies now: record `verdict` and raise `alert`.
    FellBack { verdict: Verdict, alert: String },
}

/// A wall-clock time in ms as HPA's monotonic time.
pub fn since_epoch(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// Decides for `service` from `m`, updating `unit` (failures, fallback,
/// and the history, which must be loaded when `m.needs_history()`).
pub fn decide(
    service: &str,
    policy: &PolicySpec,
    m: &Measurement,
    unit: &mut Unit,
    now_ms: i64,
) -> Outcome {
    if m.failed() {
        return failed(service, policy, m, unit);
    }
    if m.readings.iter().any(|r| r.value.is_some()) {
        unit.failures = 0;
        unit.in_fallback = false;
    }
    let (decision, reason) = if m.hold_until_ms.is_some() {
        let current = m.current;
        let held = hpa::Decision {
            current,
            desired: current,
            replicas: current,
            reason: Reason::WithinTolerance,
            proposals: Vec::new(),
        };
        (held, Reason::ManualOverride)
    } else {
        let history = unit.history.get_or_insert_with(History::default);
        let d = hpa::decide(
            m.current,
            &m.readings,
            m.floor,
            &policy.limits(),
            &policy.behavior(),
            history,
            since_epoch(now_ms),
        );
        let reason = d.reason;
        (d, reason)
    };
    let signals: Vec<Value> = decision
        .proposals
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "value": p.value,
                "target_per_instance": p.target,
                "ratio": p.ratio,
                "proposal": p.replicas,
            })
        })
        .collect();
    let evidence = json!({
        "signals": signals,
        "errors": m.errors,
        "ready_instances": m.ready,
        "baseline": m.baseline.as_ref().map(|b| json!({
            "max_rps_per_instance": b.max_rps_per_instance,
            "target_utilization": policy.target_utilization,
            "slo": b.slo,
        })),
        "schedule": {"floor": m.floor, "windows": m.windows},
        "hold_until": m.hold_until_ms.map(rfc3339),
        "window": loupe_base::duration::format(policy.load_window),
    });
    Outcome::Decided(Verdict {
        current: m.current,
        desired: decision.desired,
        replicas: decision.replicas,
        reason,
        evidence,
        origin: TaskOrigin::Decision,
    })
}

/// Counts a failed evaluation; the third in a row applies the fallback
/// (once, until a signal is read again).
fn failed(service: &str, policy: &PolicySpec, m: &Measurement, unit: &mut Unit) -> Outcome {
    unit.failures += 1;
    let message = m
        .errors
        .iter()
        .map(|e| e.error.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if unit.failures < FAILURES_BEFORE_FALLBACK || unit.in_fallback {
        return Outcome::Failed { message };
    }
    unit.in_fallback = true;
    let current = m.current;
    let (to, what) = match policy.fallback {
        Fallback::Keep => (current, format!("keeping {current} instances")),
        Fallback::Static { instances } => {
            let to = instances.clamp(policy.min, policy.max);
            (to, format!("going to the static {to} instances"))
        }
    };
    let alert = format!(
        "{} evaluations of {service} failed in a row ({message}); fallback: {what}",
        unit.failures
    );
    let evidence =
        json!({"errors": m.errors, "ready_instances": m.ready, "fallback": policy.fallback});
    Outcome::FellBack {
        verdict: Verdict {
            current,
            desired: to,
            replicas: to,
            reason: Reason::Fallback,
            evidence,
            origin: TaskOrigin::Fallback,
        },
        alert,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_000_000;

    fn policy(extra: Value) -> PolicySpec {
        let mut spec = json!({"webhook_url": "http://127.0.0.1:9/hook"});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(spec).unwrap()
    }

    /// `current` instances and one rps reading of `rps` against 10 per
    /// instance (`None`: unreadable).
    fn measured(current: u32, rps: Option<f64>) -> Measurement {
        let mut m = Measurement {
            current,
            ..Measurement::default()
        };
        let read: Result<f64, &str> = rps.ok_or("no spans");
        let value = m.note("rps", read);
        m.readings.push(SignalReading {
            name: "rps".into(),
            value,
            target: 10.0,
        });
        m
    }

    fn verdict(outcome: Outcome) -> Verdict {
        match outcome {
            Outcome::Decided(v) | Outcome::FellBack { verdict: v, .. } => v,
            Outcome::Failed { message } => panic!("failed: {message}"),
        }
    }

    #[test]
    fn scales_up_within_the_rate_limit() {
        let mut unit = Unit::default();
        let m = measured(2, Some(100.0));
        let v = verdict(decide("cart", &policy(json!({})), &m, &mut unit, NOW_MS));
        // Wants 10; the default rate allows max(2 + 4, 2 × 2) = 6.
        assert_eq!((v.desired, v.replicas), (10, 6));
        assert_eq!(v.reason, Reason::ScaleUpLimit);
        assert_eq!(v.origin, TaskOrigin::Decision);
        assert_eq!(v.evidence["signals"][0]["proposal"], 10);
        assert!(unit.history.is_some());
    }

    #[test]
    fn scale_down_waits_for_the_stabilisation_window() {
        let minute_ago = since_epoch(NOW_MS - 60_000);
        let mut unit = Unit {
            history: Some(History::restore(vec![(minute_ago, 10)], Vec::new())),
            ..Unit::default()
        };
        let m = measured(10, Some(20.0));
        let v = verdict(decide("cart", &policy(json!({})), &m, &mut unit, NOW_MS));
        assert_eq!((v.desired, v.replicas), (2, 10));
        assert_eq!(v.reason, Reason::ScaleDownStabilized);
    }

    #[test]
    fn a_schedule_floor_applies_without_signals() {
        let mut unit = Unit::default();
        let mut m = measured(2, None);
        m.floor = 5;
        m.windows = vec!["business-hours".into()];
        assert!(!m.failed());
        let v = verdict(decide("cart", &policy(json!({})), &m, &mut unit, NOW_MS));
        assert_eq!(v.replicas, 5);
        assert_eq!(v.evidence["schedule"]["windows"][0], "business-hours");
        assert_eq!(v.evidence["errors"][0]["signal"], "rps");
    }

    #[test]
    fn an_operators_hold_keeps_the_count() {
        let mut unit = Unit::default();
        let mut m = measured(4, Some(500.0));
        m.hold_until_ms = Some(NOW_MS + 60_000);
        assert!(!m.needs_history());
        let v = verdict(decide("cart", &policy(json!({})), &m, &mut unit, NOW_MS));
        assert_eq!((v.current, v.desired, v.replicas), (4, 4, 4));
        assert_eq!(v.reason, Reason::ManualOverride);
        assert_eq!(serde_json::to_value(v.reason).unwrap(), "ManualOverride");
        assert!(v.evidence["hold_until"].is_string());
        assert!(unit.history.is_none());
    }

    #[test]
    fn falls_back_once_after_three_failures_in_a_row() {
        let p = policy(json!({"min": 2, "fallback": {"mode": "static", "instances": 1}}));
        let mut unit = Unit::default();
        let m = measured(6, None);
        for _ in 0..2 {
            let outcome = decide("cart", &p, &m, &mut unit, NOW_MS);
            assert_eq!(
                outcome,
                Outcome::Failed {
                    message: "no spans".into()
                }
            );
        }
        let Outcome::FellBack { verdict, alert } = decide("cart", &p, &m, &mut unit, NOW_MS) else {
            panic!("no fallback");
        };
        // Static 1 clamped to min 2.
        assert_eq!((verdict.replicas, verdict.reason), (2, Reason::Fallback));
        assert_eq!(verdict.origin, TaskOrigin::Fallback);
        assert!(alert.starts_with("3 evaluations of cart failed"), "{alert}");
        // Applied once; a readable signal resets the count.
        let again = decide("cart", &p, &m, &mut unit, NOW_MS);
        assert!(matches!(again, Outcome::Failed { .. }));
        decide("cart", &p, &measured(6, Some(60.0)), &mut unit, NOW_MS);
        assert_eq!((unit.failures, unit.in_fallback), (0, false));
    }
}
