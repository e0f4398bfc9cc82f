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

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::error_response;
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::internal_sql::rows;
use crate::patterns::PatternCounts;
use crate::time_param;
use loupe_base::sql_literal::{quote, timestamp as ts};

const MIN_SPANS: f64 = 20.0;
const MIN_EXCESS_ERRORS: f64 = 5.0;
const MIN_LIFT: f64 = 1.3;
const NOVELTY: f64 = 1.5;
const PATTERN_WEIGHT: f64 = 0.3;
const MAX_SUSPECTS: usize = 10;

#[derive(Debug, Deserialize)]
pub struct ProblemParams {
    start: Option<String>,
    end: Option<String>,
    baseline_start: Option<String>,
    baseline_end: Option<String>,
}

pub async fn handler(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<ProblemParams>,
) -> Response {
    match problems(&engine, &p).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(e.http_status(), e.to_string()),
    }
}

/// What a suspect is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Service(String),
    Instance(String, String),
    Version(String, String),
    Region(String, String),
    Operation(String, String),
    /// caller service, system (postgresql, redis, kafka), address
    Dependency(String, String, String),
}

impl Subject {
    fn service(&self) -> &str {
        match self {
            Subject::Service(s)
            | Subject::Instance(s, _)
            | Subject::Version(s, _)
            | Subject::Region(s, _)
            | Subject::Operation(s, _)
            | Subject::Dependency(s, _, _) => s,
        }
    }

    /// Between equally good explanations, the more specific one wins: an
    /// instance that is alone in its region is named as the instance.
    fn specificity(&self) -> u8 {
        match self {
            Subject::Instance(..) | Subject::Dependency(..) => 0,
            Subject::Version(..) => 1,
            Subject::Operation(..) => 2,
            Subject::Region(..) => 3,
            Subject::Service(_) => 4,
        }
    }

    /// Attribute values (not whole services or dependencies) are compared
    /// with their service.
    fn is_attribute(&self) -> bool {
        matches!(
            self,
            Subject::Instance(..)
                | Subject::Version(..)
                | Subject::Region(..)
                | Subject::Operation(..)
        )
    }

    fn describe(&self) -> String {
        match self {
            Subject::Service(s) => format!("service {s}"),
            Subject::Instance(s, i) => format!("{s} instance {i}"),
            Subject::Version(s, v) => format!("{s} version {v}"),
            Subject::Region(s, r) => format!("{s} in region {r}"),
            Subject::Operation(s, o) => format!("{s} operation {o}"),
            Subject::Dependency(s, system, address) => {
                format!("{system} at {address} (called by {s})")
            }
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Subject::Service(s) => json!({"kind": "service", "service": s}),
            Subject::Instance(s, i) => {
                json!({"kind": "instance", "service": s, "service.instance.id": i})
            }
            Subject::Version(s, v) => {
                json!({"kind": "version", "service": s, "service.version": v})
            }
            Subject::Region(s, r) => json!({"kind": "region", "service": s, "cloud.region": r}),
            Subject::Operation(s, o) => json!({"kind": "operation", "service": s, "operation": o}),
            Subject::Dependency(s, system, address) => {
                json!({"kind": "dependency", "service": s, "system": system, "server.address": address})
            }
        }
    }
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
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(String::from)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
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
    for r in rows(engine, sql).await? {
        let Some(service) = text(&r["service"]) else {
            continue;
        };
        let stats = Stats {
            spans: num(&r["spans"]),
            origin_errors: num(&r["origin_errors"]),
            self_ns: num(&r["self_ns"]),
        };
        let kind = r["kind"].as_str().unwrap_or_default();
        let leaf_call = matches!(kind, "client" | "producer") && num(&r["max_children"]) == 0.0;
        if let (true, Some(system)) = (leaf_call, text(&r["system"])) {
            let address = text(&r["address"]).unwrap_or_else(|| "unknown".into());
            out.entry(Subject::Dependency(service, system, address))
                .or_default()
                .add(stats);
            continue;
        }
        let mut subjects = vec![Subject::Service(service.clone())];
        if let Some(i) = text(&r["instance"]) {
            subjects.push(Subject::Instance(service.clone(), i));
        }
        if let Some(v) = text(&r["version"]) {
            subjects.push(Subject::Version(service.clone(), v));
        }
        if let Some(region) = text(&r["region"]) {
            subjects.push(Subject::Region(service.clone(), region));
        }
        if matches!(kind, "server" | "consumer")
            && let Some(op) = text(&r["name"])
        {
            subjects.push(Subject::Operation(service.clone(), op));
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
    kind: &'static str,
    explanation: String,
    incident: Stats,
    baseline: Stats,
}

/// Scores every subject; the significance guard drops weak ones.
fn rank(incident: &HashMap<Subject, Stats>, baseline: &HashMap<Subject, Stats>) -> Vec<Suspect> {
    let base = |s: &Subject| baseline.get(s).copied().unwrap_or_default();
    let service_of = |s: &Subject| Subject::Service(s.service().to_string());
    // Expected values come from the subject's own baseline, or its
    // service's when the subject is new (a new version, a new instance).
    let expected = |s: &Subject| -> (Stats, bool) {
        let b = base(s);
        if b.spans >= MIN_SPANS || !s.is_attribute() {
            (b, false)
        } else {
            (base(&service_of(s)), b.spans == 0.0)
        }
    };
    let top_level = |s: &Subject| matches!(s, Subject::Service(_) | Subject::Dependency(..));
    let mut total_excess_errors = 0.0;
    let mut total_excess_ns = 0.0;
    for (s, stats) in incident.iter().filter(|(s, _)| top_level(s)) {
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
            .get(&service_of(subject))
            .copied()
            .unwrap_or(*stats);
        let novelty = if new && subject.is_attribute() {
            NOVELTY
        } else {
            1.0
        };

        let mut best: Option<(f64, &'static str, String)> = None;
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
                best = Some((score, "errors", explanation));
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
                    best = Some((score, "latency", explanation));
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

/// The SQL condition selecting a subject's spans.
fn condition(subject: &Subject) -> String {
    match subject {
        Subject::Service(s) => format!("service = {}", quote(s)),
        Subject::Instance(s, i) => format!(
            "service = {} AND resource_attributes['service.instance.id'] = {}",
            quote(s),
            quote(i)
        ),
        Subject::Version(s, v) => format!(
            "service = {} AND resource_attributes['service.version'] = {}",
            quote(s),
            quote(v)
        ),
        Subject::Region(s, r) => format!(
            "service = {} AND resource_attributes['cloud.region'] = {}",
            quote(s),
            quote(r)
        ),
        Subject::Operation(s, o) => format!("service = {} AND name = {}", quote(s), quote(o)),
        Subject::Dependency(s, _, address) => format!(
            "service = {} AND kind IN ('client', 'producer') AND COALESCE(attributes['server.address'], attributes['messaging.destination.name'], attributes['peer.service']) = {}",
            quote(s),
            quote(address)
        ),
    }
}

/// Example traces and log lines for a suspect.
async fn evidence(
    engine: &QueryEngine,
    s: &Suspect,
    start: i64,
    end: i64,
) -> Result<(Value, Value), QueryError> {
    let order = if s.kind == "errors" {
        "CASE WHEN status_code = 'error' THEN 0 ELSE 1 END, duration_ns DESC"
    } else {
        "duration_ns DESC"
    };
    let traces = rows(
        engine,
        format!(
            "SELECT trace_id FROM spans WHERE {} AND start_time >= {} AND start_time <= {} ORDER BY {order} LIMIT 3",
            condition(&s.subject),
            ts(start),
            ts(end)
        ),
    )
    .await?;
    let mut log_filter = format!("service = {}", quote(s.subject.service()));
    if let Subject::Instance(_, i) = &s.subject {
        log_filter.push_str(&format!(
            " AND resource_attributes['service.instance.id'] = {}",
            quote(i)
        ));
    }
    if let Subject::Version(_, v) = &s.subject {
        log_filter.push_str(&format!(
            " AND resource_attributes['service.version'] = {}",
            quote(v)
        ));
    }
    let logs = rows(
        engine,
        format!(
            "SELECT time, severity_text, body, trace_id FROM logs
             WHERE {log_filter} AND severity_number >= 13 AND time >= {} AND time <= {}
             ORDER BY severity_number DESC, time DESC LIMIT 3",
            ts(start),
            ts(end)
        ),
    )
    .await?;
    let trace_ids: Vec<Value> = traces.into_iter().map(|r| r["trace_id"].clone()).collect();
    Ok((Value::Array(trace_ids), json!(logs)))
}

/// Counts log templates of WARN and above in a window (bounded sample).
pub async fn warn_patterns(
    engine: &QueryEngine,
    start: i64,
    end: i64,
    service: Option<&str>,
    min_severity: i32,
) -> Result<PatternCounts, QueryError> {
    let service = service
        .map(|s| format!(" AND service = {}", quote(s)))
        .unwrap_or_default();
    let lines = rows(
        engine,
        format!(
            "SELECT service, severity_text, body FROM logs
             WHERE time >= {} AND time <= {} AND severity_number >= {min_severity} AND body IS NOT NULL{service}
             ORDER BY time DESC LIMIT 50000",
            ts(start),
            ts(end)
        ),
    )
    .await?;
    let mut counts = PatternCounts::default();
    for l in lines {
        if let (Some(s), Some(sev), Some(body)) = (
            l["service"].as_str(),
            l["severity_text"].as_str(),
            l["body"].as_str(),
        ) {
            counts.add(s, sev, body);
        }
    }
    Ok(counts)
}

async fn problems(engine: &QueryEngine, p: &ProblemParams) -> Result<Value, QueryError> {
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
    let incident = window_stats(engine, start, end).await?;
    let baseline = window_stats(engine, baseline_start, baseline_end).await?;
    let mut ranked = rank(&incident, &baseline);
    ranked.truncate(MAX_SUSPECTS);

    let mut suspects = Vec::new();
    for s in &ranked {
        let (traces, logs) = evidence(engine, s, start, end).await?;
        suspects.push(json!({
            "score": s.score,
            "kind": s.kind,
            "subject": s.subject.to_json(),
            "explanation": s.explanation,
            "incident": {"spans": s.incident.spans, "origin_errors": s.incident.origin_errors,
                         "error_rate": s.incident.error_rate(), "self_ms_per_span": s.incident.mean_self_ns() / 1e6},
            "baseline": {"spans": s.baseline.spans, "origin_errors": s.baseline.origin_errors,
                         "error_rate": s.baseline.error_rate(), "self_ms_per_span": s.baseline.mean_self_ns() / 1e6},
            "example_trace_ids": traces,
            "example_logs": logs,
        }));
    }

    // New or surging WARN/ERROR log patterns, weighted below causes.
    let now_patterns = warn_patterns(engine, start, end, None, 13).await?;
    let before = warn_patterns(engine, baseline_start, baseline_end, None, 13).await?;
    let total_new: f64 = now_patterns
        .counts
        .iter()
        .map(|(k, (n, _))| (*n as f64 - before.get(k) as f64).max(0.0))
        .sum();
    let mut pattern_suspects: Vec<(f64, Value)> = Vec::new();
    for (key, (n, example)) in &now_patterns.counts {
        let (n, b) = (*n as f64, before.get(key) as f64);
        let ratio = (n + 1.0) / (b + 1.0);
        if n >= MIN_EXCESS_ERRORS && ratio >= 3.0 && total_new > 0.0 {
            let score = PATTERN_WEIGHT * (n - b) / total_new * ratio.ln();
            let (service, severity, template) = key;
            let status = if b == 0.0 { "new" } else { "surging" };
            pattern_suspects.push((
                score,
                json!({
                    "score": score,
                    "kind": "log_pattern",
                    "subject": {"kind": "log_pattern", "service": service, "severity_text": severity, "template": template},
                    "explanation": format!("{status} {severity} log pattern in {service}: \"{template}\" ({n} lines vs {b} in the baseline)"),
                    "example_logs": [example],
                    "example_trace_ids": [],
                }),
            ));
        }
    }
    pattern_suspects.sort_by(|a, b| b.0.total_cmp(&a.0));
    suspects.extend(pattern_suspects.into_iter().take(5).map(|(_, v)| v));
    suspects.sort_by(|a, b| num(&b["score"]).total_cmp(&num(&a["score"])));
    suspects.truncate(MAX_SUSPECTS);
    Ok(json!({
        "window": {"start_unix_nano": start, "end_unix_nano": end},
        "baseline": {"start_unix_nano": baseline_start, "end_unix_nano": baseline_end},
        "suspects": suspects,
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
        }
    }

    #[test]
    fn the_failing_instance_outranks_its_service() {
        let svc = || "payment".to_string();
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(Subject::Service(svc()), stats(300.0, 30.0, 25.0));
        baseline.insert(Subject::Service(svc()), stats(300.0, 0.0, 25.0));
        for (i, errors) in [("payment-1", 0.0), ("payment-2", 30.0), ("payment-3", 0.0)] {
            incident.insert(
                Subject::Instance(svc(), i.into()),
                stats(100.0, errors, 25.0),
            );
            baseline.insert(Subject::Instance(svc(), i.into()), stats(100.0, 0.0, 25.0));
        }
        let ranked = rank(&incident, &baseline);
        assert_eq!(
            ranked[0].subject,
            Subject::Instance(svc(), "payment-2".into()),
            "{}",
            ranked[0].explanation
        );
        assert_eq!(ranked[0].kind, "errors");
    }

    #[test]
    fn a_new_version_outranks_its_service_and_a_slow_dependency_its_callers() {
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(Subject::Service("cart".into()), stats(200.0, 30.0, 4.5));
        baseline.insert(Subject::Service("cart".into()), stats(200.0, 0.0, 1.5));
        incident.insert(
            Subject::Version("cart".into(), "2.0.0".into()),
            stats(200.0, 30.0, 4.5),
        );
        baseline.insert(
            Subject::Version("cart".into(), "1.8.3".into()),
            stats(200.0, 0.0, 1.5),
        );
        let ranked = rank(&incident, &baseline);
        assert_eq!(
            ranked[0].subject,
            Subject::Version("cart".into(), "2.0.0".into())
        );
        assert!(ranked[0].explanation.contains("(new)"));

        let db = Subject::Dependency(
            "inventory".into(),
            "postgresql".into(),
            "postgres-inventory".into(),
        );
        let mut incident = HashMap::new();
        let mut baseline = HashMap::new();
        incident.insert(db.clone(), stats(100.0, 0.0, 25.0));
        baseline.insert(db.clone(), stats(100.0, 0.0, 2.5));
        incident.insert(Subject::Service("inventory".into()), stats(100.0, 0.0, 1.0));
        baseline.insert(Subject::Service("inventory".into()), stats(100.0, 0.0, 1.0));
        let ranked = rank(&incident, &baseline);
        assert_eq!(ranked[0].subject, db);
        assert_eq!(ranked.len(), 1, "unchanged services are not suspects");
    }
}
