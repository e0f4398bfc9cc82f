//! Ranking for problem location: scores each subject's span statistics
//! against the baseline ([`rank`]), then folds them with the other
//! evidence into one suspect per service ([`fold`]); see
//! [`crate::problems`] for the whole method.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::evidence;
use crate::problem_windows::{MIN_LATENCY_Z, MIN_LIFT, Stats};
use crate::subject::Subject;

/// Spans a subject needs to be scored at all; significance does the rest.
const MIN_SPANS: f64 = 5.0;
/// Baseline spans an attribute value needs to be its own baseline (else
/// its service's is used).
const BASELINE_SPANS: f64 = 20.0;
const MIN_EXCESS_ERRORS: f64 = 2.0;
const NOVELTY: f64 = 1.5;
/// Weights of the other evidence against span evidence, per service.
const LOG_WEIGHT: f64 = 1.0;
const CALLS_WEIGHT: f64 = 0.5;
const METRIC_WEIGHT: f64 = 2.0;
/// A service whose own evidence (what appeared: errors, time, new lines,
/// gauges) is under this share of its score has mostly stopped doing
/// things (see [`evidence::demote_symptoms`]).
const STOPPED_SHARE: f64 = 0.25;
/// Share of a gauge's weight when the service's spans did not slow down.
const UNSLOWED_GAUGE: f64 = 0.25;
/// What a suspect stands out for: the `kind` of a suspect in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SuspectKind {
    /// More errors start in its spans than in the baseline.
    Errors,
    /// Its spans spend more of their own time than in the baseline.
    Latency,
    /// Its log templates appeared, vanished or changed their share.
    LogPattern,
    /// Its calls to other services vanished.
    Calls,
    /// An instance's CPU or memory rose far more than elsewhere.
    Metric,
}

pub(crate) struct Suspect {
    pub(crate) subject: Subject,
    pub(crate) score: f64,
    pub(crate) kind: SuspectKind,
    pub(crate) explanation: String,
    pub(crate) incident: Stats,
    pub(crate) baseline: Stats,
    pub(crate) log_patterns: Vec<evidence::TemplateShift>,
    pub(crate) components: Components,
}

/// Scores every subject; the significance guard drops weak ones.
pub(crate) fn rank(
    incident: &HashMap<Subject, Stats>,
    baseline: &HashMap<Subject, Stats>,
) -> Vec<Suspect> {
    let base = |s: &Subject| baseline.get(s).copied().unwrap_or_default();
    // Expected values come from the subject's own baseline, or its
    // service's when the subject is new (a new version, a new instance).
    let expected = |s: &Subject| -> (Stats, bool) {
        let b = base(s);
        // An operation is compared with the same operation only: the
        // service's other operations cost and fail differently.
        let operation = matches!(s, Subject::Operation { .. });
        if b.spans >= BASELINE_SPANS || !s.is_attribute() || operation {
            (b, false)
        } else {
            (base(&s.whole_service()), b.spans == 0.0)
        }
    };
    let mut total_excess_errors = 0.0;
    let mut total_excess_ns = 0.0;
    for (s, stats) in incident.iter().filter(|(s, _)| s.is_top_level()) {
        let (b, _) = expected(s);
        total_excess_errors += (stats.origin_errors - stats.spans * smoothed_rate(&b)).max(0.0);
        total_excess_ns += (stats.self_ns - stats.spans * b.mean_self_ns()).max(0.0);
    }
    let mut suspects = Vec::new();
    for (subject, stats) in incident {
        if stats.spans < MIN_SPANS {
            continue;
        }
        let (b, new) = expected(subject);
        let parent = incident
            .get(&subject.whole_service())
            .copied()
            .unwrap_or(*stats);
        let novelty = if new && subject.is_attribute() {
            NOVELTY
        } else {
            1.0
        };

        let mut best: Option<(f64, SuspectKind, String)> = None;
        let base_rate = smoothed_rate(&b);
        let excess_errors = stats.origin_errors - stats.spans * base_rate;
        let g = evidence::poisson_g(stats.origin_errors, stats.spans * base_rate);
        let significant = g >= evidence::G_MIN;
        if excess_errors >= MIN_EXCESS_ERRORS && significant && total_excess_errors > 0.0 {
            let lift = stats.error_rate() / base_rate;
            let concentration = if subject.is_attribute() {
                (stats.error_rate() / parent.error_rate().max(1e-9)).max(1.0)
            } else {
                1.0
            };
            if lift >= MIN_LIFT {
                let score = excess_errors / total_excess_errors
                    * (1.0 + lift).ln()
                    * concentration
                    * novelty
                    * evidence::confidence(g);
                let explanation = format!(
                    "{}{}: errors start here in {:.1}% of its spans vs {:.1}% in the baseline ({} errors)",
                    subject.describe(),
                    if new { " (new)" } else { "" },
                    stats.error_rate() * 100.0,
                    b.error_rate() * 100.0,
                    stats.origin_errors.round()
                );
                best = Some((score, SuspectKind::Errors, explanation));
            }
        }
        let base_mean = b.mean_self_ns();
        let excess_ns = stats.self_ns - stats.spans * base_mean;
        let z = (stats.mean_self_ns() - base_mean)
            / (stats.mean_variance() + b.mean_variance()).sqrt().max(1.0);
        if excess_ns > 0.0 && total_excess_ns > 0.0 && base_mean > 0.0 && z >= MIN_LATENCY_Z {
            let lift = stats.mean_self_ns() / base_mean;
            let concentration =
                if subject.is_attribute() && !matches!(subject, Subject::Operation { .. }) {
                    (stats.mean_self_ns() / parent.mean_self_ns().max(1.0)).max(1.0)
                } else {
                    1.0
                };
            if lift >= MIN_LIFT {
                let score = excess_ns / total_excess_ns
                    * (1.0 + lift).ln()
                    * concentration
                    * novelty
                    * evidence::confidence(z * z);
                if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                    let explanation = format!(
                        "{}{}: {:.2} ms of its own time per span vs {:.2} ms in the baseline (x{:.1})",
                        subject.describe(),
                        if new { " (new)" } else { "" },
                        stats.mean_self_ns() / 1e6,
                        base_mean / 1e6,
                        lift
                    );
                    best = Some((score, SuspectKind::Latency, explanation));
                }
            }
        }
        if let Some((score, kind, explanation)) = best {
            suspects.push(Suspect {
                subject: subject.clone(),
                score,
                kind,
                explanation,
                incident: *stats,
                baseline: base(subject),
                log_patterns: Vec::new(),
                components: Components::default(),
            });
        }
    }
    sort_suspects(&mut suspects);
    suspects
}

/// A baseline error rate that is never zero (add-half smoothing).
fn smoothed_rate(b: &Stats) -> f64 {
    (b.origin_errors + 0.5) / (b.spans + 1.0)
}

/// A service's evidence beyond its best span suspect, weighted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Components {
    pub(crate) spans: f64,
    pub(crate) logs: f64,
    pub(crate) calls: f64,
    pub(crate) metrics: f64,
}

impl Components {
    fn total(&self) -> f64 {
        self.spans + self.logs + self.calls + self.metrics
    }
}

/// Everything measured besides span statistics, per service.
#[derive(Default)]
pub(crate) struct Signals {
    pub(crate) logs: HashMap<String, evidence::Evidence>,
    pub(crate) calls: HashMap<String, (f64, String)>,
    pub(crate) metrics: HashMap<String, evidence::GaugeEvidence>,
    /// (caller, callee) services that call each other in the incident.
    pub(crate) edges: Vec<(String, String)>,
    /// Those of `edges` whose calls did not drop against the caller's
    /// traffic.
    pub(crate) kept: HashSet<(String, String)>,
}

/// One suspect per service, most specific subject first: a service's
/// score is its best span suspect's plus its log, call and metric
/// evidence; a caller whose callee is anomalous in its own right is then
/// ranked below that callee (see [`evidence::demote_symptoms`]).
pub(crate) fn fold(
    ranked: Vec<Suspect>,
    signals: &Signals,
    incident: &HashMap<Subject, Stats>,
    baseline: &HashMap<Subject, Stats>,
) -> Vec<Suspect> {
    let mut best: HashMap<String, Suspect> = HashMap::new();
    for s in ranked {
        best.entry(s.subject.service().to_string()).or_insert(s);
    }
    let mut services: Vec<String> = best.keys().cloned().collect();
    services.extend(signals.logs.keys().cloned());
    services.extend(signals.calls.keys().cloned());
    services.extend(signals.metrics.keys().cloned());
    services.sort();
    services.dedup();
    let mut components: HashMap<String, Components> = HashMap::new();
    let (mut scores, mut own) = (HashMap::new(), HashMap::new());
    for service in &services {
        let logs = signals.logs.get(service);
        let c = Components {
            spans: evidence::saturate(best.get(service).map_or(0.0, |s| s.score)),
            logs: LOG_WEIGHT * logs.map_or(0.0, evidence::Evidence::score),
            calls: CALLS_WEIGHT * signals.calls.get(service).map_or(0.0, |c| c.0),
            metrics: METRIC_WEIGHT
                * signals.metrics.get(service).map_or(0.0, |m| m.weight)
                * gauge_credibility(service, incident, baseline),
        };
        let appeared = LOG_WEIGHT * logs.map_or(0.0, evidence::Evidence::appeared_score);
        scores.insert(service.clone(), c.total());
        own.insert(service.clone(), c.spans + appeared + c.metrics);
        components.insert(service.clone(), c);
    }
    let failing: HashSet<String> = services
        .iter()
        .filter(|s| {
            best.get(*s).is_some_and(|b| b.kind == SuspectKind::Errors)
                || signals
                    .logs
                    .get(*s)
                    .is_some_and(|l| l.appeared_severe > 0.0)
        })
        .cloned()
        .collect();
    let vanished: HashMap<String, f64> = (signals.logs.iter())
        .map(|(s, l)| (s.clone(), l.score() - l.appeared_score()))
        .collect();
    // Services whose evidence is mostly work that stopped (vanished
    // lines, dropped calls) rather than anything that appeared.
    let stopped: HashSet<String> = (scores.iter())
        .filter(|(s, total)| own.get(*s).is_some_and(|o| *o < STOPPED_SHARE * **total))
        .map(|(s, _)| s.clone())
        .collect();
    let scores = evidence::demote_symptoms(
        &scores,
        &own,
        &failing,
        &stopped,
        &vanished,
        &signals.kept,
        &signals.edges,
    );
    let mut out = Vec::new();
    for service in services {
        let c = components.remove(&service).unwrap_or_default();
        let logs = signals.logs.get(&service);
        let metric = signals.metrics.get(&service);
        let mut suspect = best.remove(&service).unwrap_or_else(|| {
            let (subject, kind) = match metric {
                Some(m) if c.metrics >= c.logs.max(c.calls) => (
                    Subject::Instance {
                        service: service.clone(),
                        instance: m.instance.clone(),
                    },
                    SuspectKind::Metric,
                ),
                _ if c.logs >= c.calls => (
                    Subject::Service {
                        service: service.clone(),
                    },
                    SuspectKind::LogPattern,
                ),
                _ => (
                    Subject::Service {
                        service: service.clone(),
                    },
                    SuspectKind::Calls,
                ),
            };
            Suspect {
                explanation: subject.describe(),
                incident: incident.get(&subject).copied().unwrap_or_default(),
                baseline: baseline.get(&subject).copied().unwrap_or_default(),
                subject,
                score: 0.0,
                kind,
                log_patterns: Vec::new(),
                components: Components::default(),
            }
        });
        let mut parts = vec![suspect.explanation.clone()];
        if let Some(m) = metric {
            parts.push(m.explanation.clone());
        }
        if let Some(shift) = logs.and_then(|l| l.shifts.first()) {
            parts.push(shift.describe());
        }
        if let Some((_, said)) = signals.calls.get(&service) {
            parts.push(said.clone());
        }
        suspect.explanation = parts.join("; ");
        suspect.log_patterns = logs.map(|l| l.shifts.clone()).unwrap_or_default();
        suspect.score = scores.get(&service).copied().unwrap_or(0.0);
        suspect.components = c;
        out.push(suspect);
    }
    sort_suspects(&mut out);
    out
}

/// Lesson 7, with a guard: a CPU or memory gauge that rose while the
/// service's own work is about as fast as before (its mean self time up
/// by less than [`MIN_LIFT`]) is more often load — the entry service of
/// a traffic burst — than a fault: contention slows the work it contends
/// with. Such a rise counts [`UNSLOWED_GAUGE`]. The point estimate is
/// used, not a significance test, as a contended service may serve few
/// spans; a service without spans in both windows keeps full weight.
fn gauge_credibility(
    service: &str,
    incident: &HashMap<Subject, Stats>,
    baseline: &HashMap<Subject, Stats>,
) -> f64 {
    let key = Subject::Service {
        service: service.to_string(),
    };
    match (incident.get(&key), baseline.get(&key)) {
        (Some(now), Some(before)) if now.spans > 0.0 && before.spans > 0.0 => {
            if now.mean_self_ns() >= MIN_LIFT * before.mean_self_ns() {
                1.0
            } else {
                UNSLOWED_GAUGE
            }
        }
        _ => 1.0,
    }
}

fn sort_suspects(suspects: &mut [Suspect]) {
    suspects.sort_by(|a, b| {
        let tie = (a.score - b.score).abs() <= 1e-9 * a.score.abs().max(b.score.abs());
        let by_score = if tie {
            std::cmp::Ordering::Equal
        } else {
            b.score.total_cmp(&a.score)
        };
        by_score
            .then_with(|| a.subject.specificity().cmp(&b.subject.specificity()))
            .then_with(|| a.subject.describe().cmp(&b.subject.describe()))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{service, stats};

    fn instance(s: &str, i: &str) -> Subject {
        Subject::Instance {
            service: s.into(),
            instance: i.into(),
        }
    }

    fn version(s: &str, v: &str) -> Subject {
        Subject::Version {
            service: s.into(),
            version: v.into(),
        }
    }

    #[test]
    fn the_failing_instance_outranks_its_service() {
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(service("payment"), stats(300.0, 30.0, 25.0));
        baseline.insert(service("payment"), stats(300.0, 0.0, 25.0));
        for (i, errors) in [("payment-1", 0.0), ("payment-2", 30.0), ("payment-3", 0.0)] {
            incident.insert(instance("payment", i), stats(100.0, errors, 25.0));
            baseline.insert(instance("payment", i), stats(100.0, 0.0, 25.0));
        }
        let ranked = rank(&incident, &baseline);
        assert_eq!(
            ranked[0].subject,
            instance("payment", "payment-2"),
            "{}",
            ranked[0].explanation
        );
        assert_eq!(ranked[0].kind, SuspectKind::Errors);
        assert_eq!(serde_json::to_value(ranked[0].kind).unwrap(), "errors");
    }

    #[test]
    fn a_new_version_outranks_its_service_and_a_slow_dependency_its_callers() {
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(service("cart"), stats(200.0, 30.0, 4.5));
        baseline.insert(service("cart"), stats(200.0, 0.0, 1.5));
        incident.insert(version("cart", "2.0.0"), stats(200.0, 30.0, 4.5));
        baseline.insert(version("cart", "1.8.3"), stats(200.0, 0.0, 1.5));
        let ranked = rank(&incident, &baseline);
        assert_eq!(ranked[0].subject, version("cart", "2.0.0"));
        assert!(ranked[0].explanation.contains("(new)"));

        let db = Subject::Dependency {
            service: "inventory".into(),
            system: "postgresql".into(),
            address: "postgres-inventory".into(),
        };
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(db.clone(), stats(100.0, 0.0, 25.0));
        baseline.insert(db.clone(), stats(100.0, 0.0, 2.5));
        incident.insert(service("inventory"), stats(100.0, 0.0, 1.0));
        baseline.insert(service("inventory"), stats(100.0, 0.0, 1.0));
        let ranked = rank(&incident, &baseline);
        assert_eq!(ranked[0].subject, db);
        assert_eq!(ranked[0].kind, SuspectKind::Latency);
        assert_eq!(ranked.len(), 1, "unchanged services are not suspects");
    }

    #[test]
    fn one_suspect_per_service_naming_its_most_specific_subject() {
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(service("payment"), stats(200.0, 30.0, 25.0));
        baseline.insert(service("payment"), stats(200.0, 0.0, 25.0));
        incident.insert(instance("payment", "payment-2"), stats(100.0, 30.0, 25.0));
        baseline.insert(instance("payment", "payment-2"), stats(100.0, 0.0, 25.0));
        incident.insert(instance("payment", "payment-1"), stats(100.0, 0.0, 25.0));
        baseline.insert(instance("payment", "payment-1"), stats(100.0, 0.0, 25.0));
        incident.insert(service("cart"), stats(200.0, 10.0, 5.0));
        baseline.insert(service("cart"), stats(200.0, 0.0, 5.0));
        let ranked = rank(&incident, &baseline);
        assert!(ranked.len() >= 3, "service, instance and cart");
        let folded = fold(ranked, &Signals::default(), &incident, &baseline);
        let named: Vec<_> = folded.iter().map(|s| s.subject.clone()).collect();
        assert_eq!(named, [instance("payment", "payment-2"), service("cart")]);
    }

    /// The caller logs the error (errors start in its spans); the callee
    /// it calls only changed its own log lines (a new ERROR template, an
    /// INFO template gone). The callee is the cause.
    #[test]
    fn an_error_in_the_caller_is_traced_to_its_anomalous_callee() {
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(service("travel"), stats(300.0, 12.0, 5.0));
        baseline.insert(service("travel"), stats(300.0, 0.0, 5.0));
        incident.insert(service("price"), stats(8.0, 0.0, 2.0));
        baseline.insert(service("price"), stats(8.0, 0.0, 2.0));
        let ranked = rank(&incident, &baseline);
        assert_eq!(ranked[0].subject, service("travel"));
        let changes = vec![
            compared("price", "INFO", "query price <*>", 20, 0),
            compared("price", "ERROR", "price not found <*>", 0, 12),
            compared("price", "INFO", "price controller <*>", 20, 20),
            compared("travel", "ERROR", "get price failed", 0, 12),
            compared("travel", "INFO", "query trips", 100, 100),
        ];
        let signals = Signals {
            logs: evidence::log_evidence(&changes, &evidence::OperationTraffic::new()),
            edges: vec![("travel".into(), "price".into())],
            ..Signals::default()
        };
        let folded = fold(ranked, &signals, &incident, &baseline);
        assert_eq!(
            folded[0].subject,
            service("price"),
            "{}",
            folded[0].explanation
        );
        assert!(
            folded[0].explanation.contains("price not found")
                || folded[0].explanation.contains("query price")
        );
        assert_eq!(folded[1].subject, service("travel"));
    }

    /// Lesson 6: a culprit with 8 spans in the window is listed (and
    /// ranked first) when its errors are significant for its count, while
    /// a busy service's few extra errors are not evidence.
    #[test]
    fn a_culprit_with_thin_traffic_is_listed() {
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(service("thin"), stats(8.0, 6.0, 2.0));
        baseline.insert(service("thin"), stats(8.0, 0.0, 2.0));
        incident.insert(service("busy"), stats(2000.0, 22.0, 5.0));
        baseline.insert(service("busy"), stats(2000.0, 20.0, 5.0));
        let ranked = rank(&incident, &baseline);
        assert_eq!(ranked.len(), 1, "busy is not a suspect");
        assert_eq!(ranked[0].subject, service("thin"));
        assert_eq!(ranked[0].kind, SuspectKind::Errors);
    }

    /// Lessons 4 and 6: evidence is weighed by how sure it is. Three
    /// errors in five spans of an operation that never erred pass the
    /// significance guard, but barely: they do not outrank a service
    /// whose own time doubled over hundreds of spans.
    #[test]
    fn a_barely_significant_error_burst_does_not_outrank_a_sure_slowdown() {
        let op = Subject::Operation {
            service: "payment".into(),
            operation: "pay".into(),
        };
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        for s in [op.clone(), service("payment")] {
            incident.insert(s.clone(), stats(5.0, 3.0, 1.0));
            baseline.insert(s, stats(5.0, 0.0, 1.0));
        }
        incident.insert(service("basic"), stats(300.0, 0.0, 4.0));
        baseline.insert(service("basic"), stats(300.0, 0.0, 2.0));
        let ranked = rank(&incident, &baseline);
        assert_eq!(ranked.len(), 3, "all are significant");
        assert_eq!(
            ranked[0].subject,
            service("basic"),
            "{}",
            ranked[0].explanation
        );
        assert!(ranked[1..].iter().all(|s| s.kind == SuspectKind::Errors));
    }

    /// Lesson 7: a CPU rise counts fully for a service whose work slowed
    /// down (contention) and a quarter for one as fast as before (load).
    #[test]
    fn a_gauge_rise_counts_fully_only_where_the_work_slowed() {
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(service("contended"), stats(50.0, 0.0, 40.0));
        baseline.insert(service("contended"), stats(50.0, 0.0, 4.0));
        incident.insert(service("entry"), stats(500.0, 0.0, 10.5));
        baseline.insert(service("entry"), stats(100.0, 0.0, 10.0));
        let credibility = |s: &str| gauge_credibility(s, &incident, &baseline);
        assert_eq!(credibility("contended"), 1.0);
        assert_eq!(credibility("entry"), UNSLOWED_GAUGE);
        assert_eq!(credibility("uninstrumented"), 1.0);
    }

    #[test]
    fn an_operation_is_compared_with_the_same_operation() {
        let op = |o: &str| Subject::Operation {
            service: "travel".into(),
            operation: o.into(),
        };
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        // A costly operation whose cost did not change is not a suspect,
        // however cheap the service's other operations are.
        incident.insert(service("travel"), stats(110.0, 0.0, 1.9));
        baseline.insert(service("travel"), stats(110.0, 0.0, 1.9));
        incident.insert(op("cheap"), stats(100.0, 0.0, 1.0));
        baseline.insert(op("cheap"), stats(100.0, 0.0, 1.0));
        incident.insert(op("costly"), stats(10.0, 0.0, 10.0));
        baseline.insert(op("costly"), stats(10.0, 0.0, 10.0));
        assert!(rank(&incident, &baseline).is_empty());
    }

    fn compared(
        service: &str,
        severity: &str,
        template: &str,
        before: u64,
        current: u64,
    ) -> crate::patterns::Compared {
        crate::patterns::Compared::fixture(service, severity, template, before, current)
    }
}
