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
//! so a culprit with a handful of spans can still be listed.
//!
//! Other evidence per service (`crate::evidence`): log templates of all
//! severities that appear, vanish or change share (net of the drift within
//! the baseline itself), calls to other services that vanish, and CPU or
//! memory gauges of an instance that rise far more than elsewhere. A
//! service's score adds them to its best span score; then a caller whose
//! callee is anomalous in its own right (or fails too, or stopped its
//! usual work while still being called) is ranked just below that callee.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Json;
use axum::routing::get;
use loupe_base::sql_literal::timestamp as ts;
use loupe_query::internal_sql::{rows, rows_as};
use loupe_query::{QueryEngine, QueryError, time_param};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::evidence::{self, Edge, GaugeRow};
use crate::patterns::{compare, window_lines};
use crate::subject::Subject;

/// Spans a subject needs to be scored at all; significance does the rest.
const MIN_SPANS: f64 = 5.0;
/// Baseline spans an attribute value needs to be its own baseline (else
/// its service's is used).
const BASELINE_SPANS: f64 = 20.0;
const MIN_EXCESS_ERRORS: f64 = 2.0;
const MIN_LIFT: f64 = 1.3;
/// z-score a mean self time must reach over the baseline's.
const MIN_LATENCY_Z: f64 = 3.0;
const NOVELTY: f64 = 1.5;
/// Weights of the other evidence against span evidence, per service.
const LOG_WEIGHT: f64 = 1.0;
const CALLS_WEIGHT: f64 = 0.5;
const METRIC_WEIGHT: f64 = 2.0;
const MAX_SUSPECTS: usize = 10;
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

/// Span counts, errors that started there, and self time, in one window.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    spans: f64,
    origin_errors: f64,
    self_ns: f64,
    /// Sum of squared self times (ns²), for the spread of the mean.
    self_sq: f64,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.spans += other.spans;
        self.origin_errors += other.origin_errors;
        self.self_ns += other.self_ns;
        self.self_sq += other.self_sq;
    }

    fn error_rate(&self) -> f64 {
        if self.spans > 0.0 {
            self.origin_errors / self.spans
        } else {
            0.0
        }
    }

    fn mean_self_ns(&self) -> f64 {
        if self.spans > 0.0 {
            self.self_ns / self.spans
        } else {
            0.0
        }
    }

    /// Variance of the mean self time (ns²), never below a 5 % spread
    /// (so a constant baseline does not make every change significant).
    fn mean_variance(&self) -> f64 {
        if self.spans <= 0.0 {
            return 0.0;
        }
        let mean = self.mean_self_ns();
        let variance = (self.self_sq / self.spans - mean * mean).max((0.05 * mean).powi(2));
        variance / self.spans
    }

    fn to_json(self) -> Value {
        json!({"spans": self.spans, "origin_errors": self.origin_errors,
               "error_rate": self.error_rate(), "self_ms_per_span": self.mean_self_ns() / 1e6})
    }
}

/// One group of a window's spans: same service, operation, kind,
/// attribute values and callee.
#[derive(Deserialize)]
struct GroupRow {
    service: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    instance: Option<String>,
    version: Option<String>,
    region: Option<String>,
    system: Option<String>,
    address: Option<String>,
    callee: Option<String>,
    callee_op: Option<String>,
    spans: f64,
    origin_errors: Option<f64>,
    self_ns: Option<f64>,
    self_sq: Option<f64>,
    max_children: Option<f64>,
}

/// A text column's value, when there is one worth naming.
fn named(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// One window's span statistics: per subject, the calls between
/// services (caller service → callee operation) and spans per service.
#[derive(Default)]
struct WindowStats {
    subjects: HashMap<Subject, Stats>,
    edges: HashMap<Edge, f64>,
    traffic: HashMap<String, f64>,
}

/// Per-subject stats of one window, from one grouped pass over its spans.
///
/// Self time is a span's duration minus its children's, with two
/// corrections. The gap between a call and the server span it caused
/// (queueing, network, a starved callee) is the callee's, not the
/// caller's. And a childless span that overlaps siblings doing the
/// work (an async gateway handler whose downstream calls hang off its
/// parent) does not own the overlapped time.
async fn window_stats(
    engine: &QueryEngine,
    start: i64,
    end: i64,
) -> Result<WindowStats, QueryError> {
    let (lo, hi) = (start - 60_000_000_000, end + 60_000_000_000);
    let sql = format!(
        "WITH per_span AS (
             SELECT p.trace_id, p.span_id, p.parent_span_id, p.service, p.name, p.kind, p.status_code, p.duration_ns,
                    CAST(p.start_time AS BIGINT) AS t0,
                    p.resource_attributes['service.instance.id'] AS instance,
                    p.resource_attributes['service.version'] AS version,
                    p.resource_attributes['cloud.region'] AS region,
                    COALESCE(p.attributes['db.system'], p.attributes['messaging.system']) AS system,
                    COALESCE(p.attributes['server.address'], p.attributes['messaging.destination.name'], p.attributes['peer.service']) AS address,
                    COALESCE(sum(c.duration_ns), 0) AS child_ns,
                    count(c.span_id) AS children,
                    max(CASE WHEN c.status_code = 'error' THEN 1 ELSE 0 END) AS child_error,
                    max(CASE WHEN c.service <> p.service THEN c.service END) AS callee,
                    max(CASE WHEN c.service <> p.service THEN c.name END) AS callee_op
             FROM spans p
             LEFT JOIN spans c ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
                              AND c.start_time >= {lo} AND c.start_time <= {hi}
             WHERE p.start_time >= {start} AND p.start_time <= {end}
             GROUP BY p.trace_id, p.span_id, p.parent_span_id, p.service, p.name, p.kind, p.status_code, p.duration_ns,
                      t0, instance, version, region, system, address
         ),
         overlap AS (
             SELECT a.trace_id, a.span_id,
                    sum(greatest(0, least(a.t0 + a.duration_ns, b.t0 + b.duration_ns) - greatest(a.t0, b.t0))) AS covered_ns
             FROM per_span a
             JOIN per_span b ON b.trace_id = a.trace_id AND b.parent_span_id = a.parent_span_id AND b.span_id <> a.span_id
             WHERE a.children = 0 AND a.kind NOT IN ('client', 'producer') AND a.parent_span_id <> ''
               AND (b.children > 0 OR b.kind IN ('client', 'producer'))
             GROUP BY a.trace_id, a.span_id
         ),
         timed AS (
             SELECT s.*, greatest(0, s.duration_ns - s.child_ns - COALESCE(o.covered_ns, 0)) AS self_ns
             FROM per_span s LEFT JOIN overlap o ON o.trace_id = s.trace_id AND o.span_id = s.span_id
         )
         SELECT service, name, kind, instance, version, region, system, address, callee, callee_op,
                count(*) AS spans,
                sum(CASE WHEN status_code = 'error' AND child_error = 0 THEN 1 ELSE 0 END) AS origin_errors,
                sum(self_ns) AS self_ns,
                sum(CAST(self_ns AS DOUBLE) * CAST(self_ns AS DOUBLE)) AS self_sq,
                max(children) AS max_children
         FROM timed GROUP BY service, name, kind, instance, version, region, system, address, callee, callee_op",
        lo = ts(lo),
        hi = ts(hi),
        start = ts(start),
        end = ts(end),
    );
    let mut out = WindowStats::default();
    for r in rows_as::<GroupRow>(engine, sql).await? {
        let Some(service) = named(r.service) else {
            continue;
        };
        let mut stats = Stats {
            spans: r.spans,
            origin_errors: r.origin_errors.unwrap_or(0.0),
            self_ns: r.self_ns.unwrap_or(0.0),
            self_sq: r.self_sq.unwrap_or(0.0),
        };
        *out.traffic.entry(service.clone()).or_default() += r.spans;
        let kind = r.kind.as_deref().unwrap_or_default();
        if let Some(callee) = named(r.callee) {
            let edge = Edge {
                caller: service.clone(),
                callee: callee.clone(),
                operation: named(r.callee_op).unwrap_or_default(),
            };
            *out.edges.entry(edge).or_default() += r.spans;
            if matches!(kind, "client" | "producer") {
                // The call's own time is the callee's (lesson: the gap
                // between a call and its server span belongs downstream).
                let gap = Stats {
                    self_ns: stats.self_ns,
                    self_sq: stats.self_sq,
                    ..Stats::default()
                };
                out.subjects
                    .entry(Subject::Service { service: callee })
                    .or_default()
                    .add(gap);
                stats.self_ns = 0.0;
                stats.self_sq = 0.0;
            }
        }
        let leaf_call =
            matches!(kind, "client" | "producer") && r.max_children.unwrap_or(0.0) == 0.0;
        if let (true, Some(system)) = (leaf_call, named(r.system)) {
            let address = named(r.address).unwrap_or_else(|| "unknown".into());
            out.subjects
                .entry(Subject::Dependency {
                    service,
                    system,
                    address,
                })
                .or_default()
                .add(stats);
            continue;
        }
        let mut subjects = vec![Subject::Service {
            service: service.clone(),
        }];
        if let Some(instance) = named(r.instance) {
            subjects.push(Subject::Instance {
                service: service.clone(),
                instance,
            });
        }
        if let Some(version) = named(r.version) {
            subjects.push(Subject::Version {
                service: service.clone(),
                version,
            });
        }
        if let Some(region) = named(r.region) {
            subjects.push(Subject::Region {
                service: service.clone(),
                region,
            });
        }
        if matches!(kind, "server" | "consumer")
            && let Some(operation) = named(r.name)
        {
            subjects.push(Subject::Operation {
                service: service.clone(),
                operation,
            });
        }
        for s in subjects {
            out.subjects.entry(s).or_default().add(stats);
        }
    }
    Ok(out)
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
                    stats.origin_errors
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
            spans: best.get(service).map_or(0.0, |s| s.score),
            logs: LOG_WEIGHT * logs.map_or(0.0, evidence::Evidence::score),
            calls: CALLS_WEIGHT * signals.calls.get(service).map_or(0.0, |c| c.0),
            metrics: METRIC_WEIGHT * signals.metrics.get(service).map_or(0.0, |m| m.weight),
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

/// Example traces and log lines for a suspect, looked up together.
async fn report(
    engine: &QueryEngine,
    s: &Suspect,
    start: i64,
    end: i64,
) -> Result<Value, QueryError> {
    let order = if s.kind == SuspectKind::Errors {
        "CASE WHEN status_code = 'error' THEN 0 ELSE 1 END, duration_ns DESC"
    } else {
        "duration_ns DESC"
    };
    let (traces, logs) = futures::try_join!(
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
    )?;
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

#[derive(Deserialize)]
struct GaugeQueryRow {
    service: Option<String>,
    instance: Option<String>,
    name: Option<String>,
    base_mean: Option<f64>,
    base_std: Option<f64>,
    inc_mean: Option<f64>,
}

/// Per-instance CPU and memory gauges (not host or node level) in both
/// windows: mean and spread in the baseline, mean in the incident.
async fn gauges(
    engine: &QueryEngine,
    (start, end): (i64, i64),
    (baseline_start, baseline_end): (i64, i64),
) -> Result<Vec<GaugeRow>, QueryError> {
    let in_base = format!(
        "time >= {} AND time < {}",
        ts(baseline_start),
        ts(baseline_end)
    );
    let in_incident = format!("time >= {} AND time <= {}", ts(start), ts(end));
    let sql = format!(
        "SELECT service, resource_attributes['service.instance.id'] AS instance, name,
                avg(CASE WHEN {in_base} THEN value END) AS base_mean,
                stddev(CASE WHEN {in_base} THEN value END) AS base_std,
                avg(CASE WHEN {in_incident} THEN value END) AS inc_mean
         FROM metrics
         WHERE kind = 'gauge' AND value IS NOT NULL
           AND (({in_base}) OR ({in_incident}))
           AND (lower(name) LIKE '%cpu%' OR lower(name) LIKE '%memory%')
           AND lower(name) NOT LIKE '%node%' AND lower(name) NOT LIKE 'system.%'
           AND resource_attributes['service.instance.id'] IS NOT NULL
         GROUP BY 1, 2, 3"
    );
    Ok(rows_as::<GaugeQueryRow>(engine, sql)
        .await?
        .into_iter()
        .filter_map(|r| {
            Some(GaugeRow {
                service: named(r.service)?,
                instance: named(r.instance)?,
                name: named(r.name)?,
                base_mean: r.base_mean?,
                base_std: r.base_std.unwrap_or(0.0),
                inc_mean: r.inc_mean?,
            })
        })
        .collect())
}

/// Caller → callee service pairs whose calls per caller span did not drop
/// significantly (a Poisson test against the baseline's rate, scaled by
/// the caller's traffic).
fn kept_calls(baseline: &WindowStats, incident: &WindowStats) -> HashSet<(String, String)> {
    let per_pair = |w: &WindowStats| {
        let mut m: HashMap<(String, String), f64> = HashMap::new();
        for (e, n) in &w.edges {
            *m.entry((e.caller.clone(), e.callee.clone())).or_default() += n;
        }
        m
    };
    let (before, now) = (per_pair(baseline), per_pair(incident));
    now.into_iter()
        .filter(|(pair, n)| {
            let traffic = |w: &WindowStats| w.traffic.get(&pair.0).copied().unwrap_or(0.0);
            let b = before.get(pair).copied().unwrap_or(0.0);
            let expected = b * traffic(incident) / traffic(baseline).max(1.0);
            b == 0.0 || evidence::poisson_g(*n, expected) > -evidence::G_MIN
        })
        .map(|(pair, _)| pair)
        .collect()
}

async fn problems(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<ProblemParams>,
) -> Result<Json<Value>, QueryError> {
    let engine = engine.as_ref();
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
    // The windows' span stats, log lines and gauges are independent.
    let (incident, baseline, lines_now, lines_before, gauges) = futures::try_join!(
        window_stats(engine, start, end),
        window_stats(engine, baseline_start, baseline_end),
        window_lines(engine, start, end, None, 0),
        window_lines(engine, baseline_start, baseline_end, None, 0),
        gauges(engine, (start, end), (baseline_start, baseline_end)),
    )?;
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
    let mut logs = evidence::log_evidence(&compare(&lines_before, &lines_now));
    // The baseline's lines come newest first: its two halves in time.
    let (newer, older) = lines_before.split_at(lines_before.len() / 2);
    evidence::discount_noise(&mut logs, &evidence::log_evidence(&compare(older, newer)));
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
    let suspects =
        futures::future::try_join_all(suspects.iter().map(|s| report(engine, s, start, end)))
            .await?;
    Ok(Json(json!({
        "window": {"start_unix_nano": start, "end_unix_nano": end},
        "baseline": {"start_unix_nano": baseline_start, "end_unix_nano": baseline_end},
        "suspects": suspects,
    })))
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
            logs: evidence::log_evidence(&changes),
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
            before,
            current,
            example: template.into(),
        }
    }
}
