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
//! share of the excess × ln(1 + lift over baseline) × concentration × novelty × confidence
//! ```
//!
//! where concentration (how much worse an instance, version or region is
//! than its service as a whole) prefers the most specific explanation,
//! novelty favours a value the baseline never saw (a new version),
//! confidence grows with the change's significance up to a cap (as for
//! log templates), and an operation is compared with the same operation
//! only. Significance
//! scales with counts (Poisson for errors, a z-score for mean self time),
//! so a culprit with a handful of spans can still be listed. Errors of spans that waited on a callee whose
//! time rose are the callee's (a timeout starts in the caller), and errors
//! whose log line says a dependency failed the request are not the
//! caller's (`crate::dependency_errors`).
//!
//! Other evidence per service (`crate::evidence`): log templates of all
//! severities that appear or vanish against what the baseline predicts —
//! a line logged in a span is compared with the traffic of that span's
//! operation, so a shift in the request mix is not evidence — net of the
//! drift within the baseline itself (but not of a change its newer half
//! already shows: the incident starting early), without the lines that a
//! dependency's failure or a recovery explain (a logger's code location
//! names its own event, and a line that falls behind its twin — logged as
//! often in the baseline by the same operation — is judged against that
//! twin: a swallowed exception stops a path part way); calls to other services
//! that vanish, and CPU or
//! memory gauges of an instance that rise far more than elsewhere (a
//! quarter as much when the service's spans did not slow down). A
//! service's score adds them to its best span score (saturating at the
//! cap of the other kinds); then a caller whose
//! callee is anomalous in its own right (or fails too, or stopped its
//! usual work while still being called — also when the caller itself only
//! stopped doing things) is ranked just below that callee.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Json;
use axum::routing::get;
use loupe_base::sql_literal::timestamp as ts;
use loupe_query::internal_sql::{rows, rows_as};
use loupe_query::{QueryEngine, QueryError, time_param};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::dependency_errors;
use crate::evidence;
use crate::patterns::{Compared, LineRow, by_event, compare_with_halves, masked, operation_lines};
use crate::problem_ranking::{Signals, Suspect, SuspectKind, fold, rank};
use crate::problem_windows::{blame_slow_callees, gauges, kept_calls, window_stats};
use crate::subject::Subject;
use loupe_query::template_miner::Tokens;

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

#[derive(Deserialize)]
struct TraceIdRow {
    trace_id: Option<String>,
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

/// The template changes of both windows' log lines (see
/// [`compare_with_halves`]) and the errors they blame on a dependency.
struct MinedLines {
    changes: Vec<Compared>,
    halves: Vec<Compared>,
    /// Per subject, in the incident and in the baseline.
    dependency_errors: (HashMap<Subject, f64>, HashMap<Subject, f64>),
    /// How long fetching each window's lines (incident, baseline),
    /// masking them (both windows, overlapping) and mining them took.
    fetched: (Duration, Duration),
    masking: Duration,
    mining: Duration,
}

/// One window's log lines, their masked tokens, and how long fetching and
/// masking took.
type MaskedLines = (Vec<LineRow>, Vec<Option<Tokens>>, Duration, Duration);

/// Fetches one window's log lines and masks them on a blocking thread as
/// soon as they arrive: masking, most of mining's CPU work, then overlaps
/// with the other window's fetch and the span statistics.
async fn masked_lines(
    engine: &QueryEngine,
    start: i64,
    end: i64,
) -> Result<MaskedLines, QueryError> {
    let (lines, fetched) = timed(operation_lines(engine, start, end)).await?;
    tokio::task::spawn_blocking(move || {
        let began = Instant::now();
        let tokens = masked(&lines);
        (lines, tokens, fetched, began.elapsed())
    })
    .await
    .map_err(|e| QueryError::Internal(format!("log masking failed: {e}")))
}

/// Fetches both windows' log lines and mines them on a blocking thread:
/// mining is CPU work that would stall the async workers, and it overlaps
/// with the span statistics still being queried. Templates are formed
/// over the baseline first, then the incident, whichever arrives first.
async fn mined_lines(
    engine: &QueryEngine,
    (start, end): (i64, i64),
    (baseline_start, baseline_end): (i64, i64),
) -> Result<MinedLines, QueryError> {
    let ((now, tokens_now, t_now, m_now), (before, tokens_before, t_before, m_before)) = futures::try_join!(
        masked_lines(engine, start, end),
        masked_lines(engine, baseline_start, baseline_end),
    )?;
    tokio::task::spawn_blocking(move || {
        let began = Instant::now();
        let (changes, halves) = compare_with_halves((&before, tokens_before), (&now, tokens_now));
        let (changes, halves) = (by_event(changes), by_event(halves));
        let halves = evidence::without_onsets(halves, &changes);
        MinedLines {
            changes,
            halves,
            dependency_errors: (
                dependency_errors::dependency_errors(&now),
                dependency_errors::dependency_errors(&before),
            ),
            fetched: (t_now, t_before),
            masking: m_now + m_before,
            mining: began.elapsed(),
        }
    })
    .await
    .map_err(|e| QueryError::Internal(format!("log mining failed: {e}")))
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
    // The windows' span stats, log lines (mined as soon as they arrive)
    // and gauges are independent.
    let ((mut incident, t1), (mut baseline, t2), mined, (gauges, t5)) = futures::try_join!(
        timed(window_stats(engine, start, end)),
        timed(window_stats(engine, baseline_start, baseline_end)),
        mined_lines(engine, (start, end), (baseline_start, baseline_end)),
        timed(gauges(engine, (start, end), (baseline_start, baseline_end))),
    )?;
    timings.push("span_stats_incident", t1);
    timings.push("span_stats_baseline", t2);
    timings.push("log_lines_incident", mined.fetched.0);
    timings.push("log_lines_baseline", mined.fetched.1);
    timings.push("log_masking", mined.masking);
    timings.push("log_mining", mined.mining);
    timings.push("gauges", t5);
    let (now, before) = &mined.dependency_errors;
    dependency_errors::discount(&mut incident.subjects, now, incident.share);
    dependency_errors::discount(&mut baseline.subjects, before, baseline.share);
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
    let MinedLines {
        changes, halves, ..
    } = mined;
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
        "trace_share": {"incident": incident.share, "baseline": baseline.share},
        "timings_ms": timings.0,
    }))
}
