//! Problem location: compares an incident window with a baseline and ranks
//! suspect services — each named by its most specific subject: an
//! instance, version, region or operation, or a database or broker it
//! calls — by the evidence against them, one entry per service.
//!
//! Span evidence: errors are attributed to where they start (an erroring
//! span none of whose children erred) and time as self time (duration
//! minus children), so a slow database shows up on the database calls,
//! not on every caller above them. The gap between a call and the server
//! span it caused is the callee's; a childless span overlapped by the
//! siblings doing its work (an async gateway handler) does not own that
//! time. A subject's span score is
//!
//! ```text
//! share of the excess × ln(1 + lift over baseline) × concentration × novelty
//! ```
//!
//! where concentration (how much worse an instance, version or region is
//! than its service as a whole) prefers the most specific explanation,
//! novelty favours a value the baseline never saw (a new version), and an
//! operation is compared with the same operation only. Significance
//! scales with counts (Poisson for errors, a z-score for mean self time),
//! so a culprit with a handful of spans can still be listed. Errors of spans that waited on a callee whose
//! time rose are the callee's (a timeout starts in the caller).
//!
//! Other evidence per service (`crate::evidence`): log templates of all
//! severities that appear or vanish against what the baseline predicts —
//! a line logged in a span is compared with the traffic of that span's
//! operation, so a shift in the request mix is not evidence — net of the
//! drift within the baseline itself, calls to other services that vanish, and CPU or
//! memory gauges of an instance that rise far more than elsewhere (a
//! quarter as much when the service's spans did not slow down). A
//! service's score adds them to its best span score (saturating at the
//! cap of the other kinds); then a caller whose
//! callee is anomalous in its own right (or fails too, or stopped its
//! usual work while still being called) is ranked just below that callee.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Json;
use axum::routing::get;
use loupe_base::sql_literal::timestamp as ts;
use loupe_query::internal_sql::{rows, rows_as};
use loupe_query::{QueryEngine, QueryError, time_param};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::evidence;
use crate::patterns::{compare_with_halves, operation_lines};
use crate::problem_windows::{
    MIN_LATENCY_Z, MIN_LIFT, Stats, blame_slow_callees, gauges, kept_calls, window_stats,
};
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
/// Share of a gauge's weight when the service's spans did not slow down.
const UNSLOWED_GAUGE: f64 = 0.25;
const MAX_SUSPECTS: usize = 10;
/// Suspects, from the top, whose example traces and log lines are looked
/// up: two queries each, so the rest of the list costs nothing.
const EXAMPLED: usize = 5;
/// Severity number of WARN: example log lines are WARN or worse.
const WARN: i32 = 13;

/// The problems route.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/problems", get(problems))
        .with_state(engine)
}

#[derive(Debug, Deserialize)]
struct ProblemParams {
    start: Option<String>,
    end: Option<String>,
    baseline_start: Option<String>,
    baseline_end: Option<String>,
}

/// What a suspect stands out for: the `kind` of a suspect in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum SuspectKind {
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

struct Suspect {
    subject: Subject,
    score: f64,
    kind: SuspectKind,
    explanation: String,
    incident: Stats,
    baseline: Stats,
    log_patterns: Vec<evidence::TemplateShift>,
    components: Components,
}

/// Scores every subject; the significance guard drops weak ones.
fn rank(incident: &HashMap<Subject, Stats>, baseline: &HashMap<Subject, Stats>) -> Vec<Suspect> {
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
        let significant =
            evidence::poisson_g(stats.origin_errors, stats.spans * base_rate) >= evidence::G_MIN;
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
                    * novelty;
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
                let score =
                    excess_ns / total_excess_ns * (1.0 + lift).ln() * concentration * novelty;
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

#[derive(Deserialize)]
struct TraceIdRow {
    trace_id: Option<String>,
}

/// A service's evidence beyond its best span suspect, weighted.
#[derive(Debug, Default, Clone)]
struct Components {
    spans: f64,
    logs: f64,
    calls: f64,
    metrics: f64,
}

impl Components {
    fn total(&self) -> f64 {
        self.spans + self.logs + self.calls + self.metrics
    }
}

/// Everything measured besides span statistics, per service.
#[derive(Default)]
struct Signals {
    logs: HashMap<String, evidence::Evidence>,
    calls: HashMap<String, (f64, String)>,
    metrics: HashMap<String, evidence::GaugeEvidence>,
    /// (caller, callee) services that call each other in the incident.
    edges: Vec<(String, String)>,
    /// Those of `edges` whose calls did not drop against the caller's
    /// traffic.
    kept: HashSet<(String, String)>,
}

/// One suspect per service, most specific subject first: a service's
/// score is its best span suspect's plus its log, call and metric
/// evidence; a caller whose callee is anomalous in its own right is then
/// ranked below that callee (see [`evidence::demote_symptoms`]).
fn fold(
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
    let scores = evidence::demote_symptoms(
        &scores,
        &own,
        &failing,
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

/// A suspect's answer, with example traces and log lines looked up
/// together when `examples` is set.
async fn report(
    engine: &QueryEngine,
    s: &Suspect,
    start: i64,
    end: i64,
    examples: bool,
) -> Result<Value, QueryError> {
    let order = if s.kind == SuspectKind::Errors {
        "CASE WHEN status_code = 'error' THEN 0 ELSE 1 END, duration_ns DESC"
    } else {
        "duration_ns DESC"
    };
    let (traces, logs) = if !examples {
        (Vec::new(), Vec::new())
    } else {
        futures::try_join!(
            rows_as::<TraceIdRow>(
                engine,
                format!(
                    "SELECT trace_id FROM spans WHERE {} AND start_time >= {} AND start_time <= {} ORDER BY {order} LIMIT 3",
                    s.subject.span_condition(),
                    ts(start),
                    ts(end)
                ),
            ),
            rows(
                engine,
                format!(
                    "SELECT time, severity_text, body, trace_id FROM logs
                 WHERE {} AND severity_number >= {WARN} AND time >= {} AND time <= {}
                 ORDER BY severity_number DESC, time DESC LIMIT 3",
                    s.subject.log_condition(),
                    ts(start),
                    ts(end)
                ),
            ),
        )?
    };
    let trace_ids: Vec<Option<String>> = traces.into_iter().map(|r| r.trace_id).collect();
    let c = &s.components;
    Ok(json!({
        "score": s.score,
        "kind": s.kind,
        "subject": s.subject,
        "explanation": s.explanation,
        "incident": s.incident.to_json(),
        "baseline": s.baseline.to_json(),
        "evidence": {"spans": c.spans, "logs": c.logs, "calls": c.calls, "metrics": c.metrics},
        "log_patterns": s.log_patterns.iter().map(evidence::TemplateShift::to_json).collect::<Vec<_>>(),
        "example_trace_ids": trace_ids,
        "example_logs": logs,
    }))
}

async fn problems(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<ProblemParams>,
) -> Result<Json<Value>, QueryError> {
    let now = loupe_base::clock::now_nanos();
    let end = time_param::parse(p.end.as_deref().unwrap_or("now"), now)?;
    let start = time_param::parse(p.start.as_deref().unwrap_or("now-15m"), now)?;
    if start >= end {
        return Err(QueryError::Invalid("start must be before end".into()));
    }
    let baseline_end = match &p.baseline_end {
        Some(t) => time_param::parse(t, now)?,
        None => start,
    };
    let baseline_start = match &p.baseline_start {
        Some(t) => time_param::parse(t, now)?,
        None => baseline_end - (end - start),
    };
    locate(&engine, (start, end), (baseline_start, baseline_end))
        .await
        .map(Json)
}

/// The explanations of the top `n` suspects of an incident `window`
/// against `baseline` (ns): what an alert carries as its likely cause.
pub async fn top_explanations(
    engine: &QueryEngine,
    window: (i64, i64),
    baseline: (i64, i64),
    n: usize,
) -> Result<Vec<String>, QueryError> {
    let found = locate(engine, window, baseline).await?;
    Ok(found["suspects"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|s| s["explanation"].as_str().map(String::from))
                .take(n)
                .collect()
        })
        .unwrap_or_default())
}

/// Wall-clock time of each stage of one call, in ms: the answer's
/// `timings_ms`, so a slow call shows where its time went. Stages joined
/// together overlap.
#[derive(Default)]
struct Timings(serde_json::Map<String, Value>);

impl Timings {
    fn push(&mut self, stage: &str, took: Duration) {
        let ms = (took.as_secs_f64() * 1e4).round() / 10.0;
        self.0.insert(stage.to_string(), json!(ms));
    }
}

/// `f`'s output and how long it took to complete.
async fn timed<T, E>(f: impl Future<Output = Result<T, E>>) -> Result<(T, Duration), E> {
    let began = Instant::now();
    let out = f.await?;
    Ok((out, began.elapsed()))
}

/// Problem location: the ranked suspects of an incident window against a
/// baseline window (both in ns).
pub async fn locate(
    engine: &QueryEngine,
    (start, end): (i64, i64),
    (baseline_start, baseline_end): (i64, i64),
) -> Result<Value, QueryError> {
    let began = Instant::now();
    let mut timings = Timings::default();
    // The windows' span stats, log lines and gauges are independent.
    let ((mut incident, t1), (baseline, t2), (lines_now, t3), (lines_before, t4), (gauges, t5)) = futures::try_join!(
        timed(window_stats(engine, start, end)),
        timed(window_stats(engine, baseline_start, baseline_end)),
        timed(operation_lines(engine, start, end)),
        timed(operation_lines(engine, baseline_start, baseline_end)),
        timed(gauges(engine, (start, end), (baseline_start, baseline_end))),
    )?;
    timings.push("span_stats_incident", t1);
    timings.push("span_stats_baseline", t2);
    timings.push("log_lines_incident", t3);
    timings.push("log_lines_baseline", t4);
    timings.push("gauges", t5);
    blame_slow_callees(&mut incident, &baseline);
    let traffic: HashMap<String, (f64, f64)> = incident
        .traffic
        .iter()
        .map(|(s, n)| {
            (
                s.clone(),
                (baseline.traffic.get(s).copied().unwrap_or(0.0), *n),
            )
        })
        .collect();
    let mut edges: Vec<(String, String)> = incident
        .edges
        .keys()
        .map(|e| (e.caller.clone(), e.callee.clone()))
        .collect();
    edges.sort();
    edges.dedup();
    let kept = kept_calls(&baseline, &incident);
    let mut operations = evidence::OperationTraffic::new();
    for (op, n) in &baseline.operations {
        operations.entry(op.clone()).or_default().0 = *n;
    }
    for (op, n) in &incident.operations {
        operations.entry(op.clone()).or_default().1 = *n;
    }
    let mining = Instant::now();
    let (changes, halves) = compare_with_halves(&lines_before, &lines_now);
    timings.push("log_mining", mining.elapsed());
    let mut logs = evidence::log_evidence(&changes, &operations);
    // The baseline's two halves in time, each operation's templates
    // against the operation's lines (its spans per half are not counted).
    let noise = evidence::log_evidence(&halves, &evidence::lines_per_operation(&halves));
    evidence::discount_noise(&mut logs, &noise);
    let signals = Signals {
        logs,
        calls: evidence::edge_evidence(&baseline.edges, &incident.edges, &traffic),
        metrics: evidence::metric_evidence(&gauges),
        edges,
        kept,
    };
    let ranked = rank(&incident.subjects, &baseline.subjects);
    let mut suspects = fold(ranked, &signals, &incident.subjects, &baseline.subjects);
    suspects.truncate(MAX_SUSPECTS);
    let examples = Instant::now();
    let suspects = futures::future::try_join_all(
        (suspects.iter().enumerate()).map(|(i, s)| report(engine, s, start, end, i < EXAMPLED)),
    )
    .await?;
    timings.push("examples", examples.elapsed());
    timings.push("total", began.elapsed());
    Ok(json!({
        "window": {"start_unix_nano": start, "end_unix_nano": end},
        "baseline": {"start_unix_nano": baseline_start, "end_unix_nano": baseline_end},
        "suspects": suspects,
        "timings_ms": timings.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(spans: f64, errors: f64, self_ms: f64) -> Stats {
        Stats {
            spans,
            origin_errors: errors,
            self_ns: self_ms * 1e6 * spans,
            self_sq: (self_ms * 1e6).powi(2) * spans,
        }
    }

    fn service(s: &str) -> Subject {
        Subject::Service { service: s.into() }
    }

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
        crate::patterns::Compared {
            service: service.into(),
            severity: severity.into(),
            template: template.into(),
            operation: None,
            before,
            current,
            example: template.into(),
        }
    }
}
