//! Problem location: compares an incident window with a baseline and ranks
//! suspects — services, their instances, versions, regions and operations,
//! and the databases and brokers they call — by how much of the incident's
//! excess errors and excess time each explains.
//!
//! Errors are attributed to where they start: an erroring span none of
//! whose children erred. Time is attributed as self time: a span's duration
//! minus its children's, so a slow database shows up on the database calls,
//! not on every caller above them. A suspect's score is
//!
//! ```text
//! share of the excess × ln(1 + lift over baseline) × concentration × novelty
//! ```
//!
//! where concentration (how much worse an instance, version or region is
//! than its service as a whole) prefers the most specific explanation, and
//! novelty favours a value the baseline never saw (a new version). A
//! significance guard (minimum counts, minimum lift) keeps rare values
//! from dominating.

use std::collections::HashMap;
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

use crate::patterns::count_patterns;
use crate::subject::Subject;

const MIN_SPANS: f64 = 20.0;
const MIN_EXCESS_ERRORS: f64 = 5.0;
const MIN_LIFT: f64 = 1.3;
const NOVELTY: f64 = 1.5;
const PATTERN_WEIGHT: f64 = 0.3;
const MAX_SUSPECTS: usize = 10;
/// Severity number of WARN: log patterns below it are not problems.
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
    /// A WARN or ERROR log template that is new or surging.
    LogPattern,
}

/// Span counts, errors that started there, and self time, in one window.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    spans: f64,
    origin_errors: f64,
    self_ns: f64,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.spans += other.spans;
        self.origin_errors += other.origin_errors;
        self.self_ns += other.self_ns;
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

    fn to_json(self) -> Value {
        json!({"spans": self.spans, "origin_errors": self.origin_errors,
               "error_rate": self.error_rate(), "self_ms_per_span": self.mean_self_ns() / 1e6})
    }
}

/// One group of a window's spans: same service, operation, kind and
/// attribute values.
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
    spans: f64,
    origin_errors: Option<f64>,
    self_ns: Option<f64>,
    max_children: Option<f64>,
}

/// A text column's value, when there is one worth naming.
fn named(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// Per-subject stats of one window, from one grouped pass over its spans.
async fn window_stats(
    engine: &QueryEngine,
    start: i64,
    end: i64,
) -> Result<HashMap<Subject, Stats>, QueryError> {
    let (lo, hi) = (start - 60_000_000_000, end + 60_000_000_000);
    let sql = format!(
        "WITH per_span AS (
             SELECT p.span_id, p.service, p.name, p.kind, p.status_code, p.duration_ns,
                    p.resource_attributes['service.instance.id'] AS instance,
                    p.resource_attributes['service.version'] AS version,
                    p.resource_attributes['cloud.region'] AS region,
                    COALESCE(p.attributes['db.system'], p.attributes['messaging.system']) AS system,
                    COALESCE(p.attributes['server.address'], p.attributes['messaging.destination.name'], p.attributes['peer.service']) AS address,
                    COALESCE(sum(c.duration_ns), 0) AS child_ns,
                    count(c.span_id) AS children,
                    max(CASE WHEN c.status_code = 'error' THEN 1 ELSE 0 END) AS child_error
             FROM spans p
             LEFT JOIN spans c ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
                              AND c.start_time >= {lo} AND c.start_time <= {hi}
             WHERE p.start_time >= {start} AND p.start_time <= {end}
             GROUP BY p.trace_id, p.span_id, p.service, p.name, p.kind, p.status_code, p.duration_ns,
                      instance, version, region, system, address
         )
         SELECT service, name, kind, instance, version, region, system, address,
                count(*) AS spans,
                sum(CASE WHEN status_code = 'error' AND child_error = 0 THEN 1 ELSE 0 END) AS origin_errors,
                sum(CASE WHEN duration_ns > child_ns THEN duration_ns - child_ns ELSE 0 END) AS self_ns,
                max(children) AS max_children
         FROM per_span GROUP BY service, name, kind, instance, version, region, system, address",
        lo = ts(lo),
        hi = ts(hi),
        start = ts(start),
        end = ts(end),
    );
    let mut out: HashMap<Subject, Stats> = HashMap::new();
    for r in rows_as::<GroupRow>(engine, sql).await? {
        let Some(service) = named(r.service) else {
            continue;
        };
        let stats = Stats {
            spans: r.spans,
            origin_errors: r.origin_errors.unwrap_or(0.0),
            self_ns: r.self_ns.unwrap_or(0.0),
        };
        let kind = r.kind.as_deref().unwrap_or_default();
        let leaf_call =
            matches!(kind, "client" | "producer") && r.max_children.unwrap_or(0.0) == 0.0;
        if let (true, Some(system)) = (leaf_call, named(r.system)) {
            let address = named(r.address).unwrap_or_else(|| "unknown".into());
            out.entry(Subject::Dependency {
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
            out.entry(s).or_default().add(stats);
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
}

/// Scores every subject; the significance guard drops weak ones.
fn rank(incident: &HashMap<Subject, Stats>, baseline: &HashMap<Subject, Stats>) -> Vec<Suspect> {
    let base = |s: &Subject| baseline.get(s).copied().unwrap_or_default();
    // Expected values come from the subject's own baseline, or its
    // service's when the subject is new (a new version, a new instance).
    let expected = |s: &Subject| -> (Stats, bool) {
        let b = base(s);
        if b.spans >= MIN_SPANS || !s.is_attribute() {
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
        if excess_errors >= MIN_EXCESS_ERRORS && total_excess_errors > 0.0 {
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
        if excess_ns > 0.0 && total_excess_ns > 0.0 && base_mean > 0.0 {
            let lift = stats.mean_self_ns() / base_mean;
            let concentration = if subject.is_attribute() {
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
            });
        }
    }
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

/// Example traces and log lines for a suspect, looked up together.
async fn evidence(
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
    Ok(json!({
        "score": s.score,
        "kind": s.kind,
        "subject": s.subject,
        "explanation": s.explanation,
        "incident": s.incident.to_json(),
        "baseline": s.baseline.to_json(),
        "example_trace_ids": trace_ids,
        "example_logs": logs,
    }))
}

/// New or surging WARN/ERROR log patterns as suspects (at most five),
/// weighted below causes.
async fn pattern_suspects(
    engine: &QueryEngine,
    (start, end): (i64, i64),
    (baseline_start, baseline_end): (i64, i64),
) -> Result<Vec<(f64, Value)>, QueryError> {
    let (now_patterns, before) = futures::try_join!(
        count_patterns(engine, start, end, None, WARN),
        count_patterns(engine, baseline_start, baseline_end, None, WARN),
    )?;
    let total_new: f64 = now_patterns
        .counts
        .iter()
        .map(|(k, (n, _))| (*n as f64 - before.get(k) as f64).max(0.0))
        .sum();
    let mut suspects: Vec<(f64, Value)> = Vec::new();
    for (key, (n, example)) in &now_patterns.counts {
        let (n, b) = (*n as f64, before.get(key) as f64);
        let ratio = (n + 1.0) / (b + 1.0);
        if n >= MIN_EXCESS_ERRORS && ratio >= 3.0 && total_new > 0.0 {
            let score = PATTERN_WEIGHT * (n - b) / total_new * ratio.ln();
            let (service, severity, template) = key;
            let status = if b == 0.0 { "new" } else { "surging" };
            suspects.push((
                score,
                json!({
                    "score": score,
                    "kind": SuspectKind::LogPattern,
                    "subject": {"kind": SuspectKind::LogPattern, "service": service, "severity_text": severity, "template": template},
                    "explanation": format!("{status} {severity} log pattern in {service}: \"{template}\" ({n} lines vs {b} in the baseline)"),
                    "example_logs": [example],
                    "example_trace_ids": [],
                }),
            ));
        }
    }
    suspects.sort_by(|a, b| b.0.total_cmp(&a.0));
    suspects.truncate(5);
    Ok(suspects)
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
    // The two windows' span stats and the log patterns are independent.
    let (incident, baseline, patterns) = futures::try_join!(
        window_stats(engine, start, end),
        window_stats(engine, baseline_start, baseline_end),
        pattern_suspects(engine, (start, end), (baseline_start, baseline_end)),
    )?;
    let mut ranked = rank(&incident, &baseline);
    ranked.truncate(MAX_SUSPECTS);
    let reports =
        futures::future::try_join_all(ranked.iter().map(|s| evidence(engine, s, start, end)))
            .await?;
    let mut suspects: Vec<(f64, Value)> = ranked.iter().map(|s| s.score).zip(reports).collect();
    suspects.extend(patterns);
    suspects.sort_by(|a, b| b.0.total_cmp(&a.0));
    suspects.truncate(MAX_SUSPECTS);
    let suspects: Vec<Value> = suspects.into_iter().map(|(_, v)| v).collect();
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
}
