//! What one window's telemetry says, for problem location: per-subject
//! span statistics (errors that start there, self time with the client /
//! server gap rule), call edges between services, and per-instance gauges —
//! each gathered in one grouped query.

use std::collections::{HashMap, HashSet};

use loupe_base::sql_literal::timestamp as ts;
use loupe_query::internal_sql::{rows_as, rows_as_written};
use loupe_query::{QueryEngine, QueryError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::evidence::{self, Edge, GaugeRow};
use crate::subject::Subject;

/// Lift over the baseline a rate or mean must reach to be evidence.
pub(crate) const MIN_LIFT: f64 = 1.3;
/// z-score a mean self time must reach over the baseline's.
pub(crate) const MIN_LATENCY_Z: f64 = 3.0;
/// Spans of one window read for its statistics: a busier window is read
/// for a deterministic share of its traces (by the last two hex digits of
/// the trace id, so every trace is whole), which bounds the work of a
/// call whatever the window's length or traffic. Rates and mean self
/// times are unbiased; counts are those of the traces read.
pub(crate) const MAX_SPANS: f64 = 40_000.0;

/// Span counts, errors that started there, and self time, in one window.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) spans: f64,
    pub(crate) origin_errors: f64,
    pub(crate) self_ns: f64,
    /// Sum of squared self times (ns²), for the spread of the mean.
    pub(crate) self_sq: f64,
}

impl Stats {
    pub(crate) fn add(&mut self, other: Stats) {
        self.spans += other.spans;
        self.origin_errors += other.origin_errors;
        self.self_ns += other.self_ns;
        self.self_sq += other.self_sq;
    }

    pub(crate) fn error_rate(&self) -> f64 {
        if self.spans > 0.0 {
            self.origin_errors / self.spans
        } else {
            0.0
        }
    }

    pub(crate) fn mean_self_ns(&self) -> f64 {
        if self.spans > 0.0 {
            self.self_ns / self.spans
        } else {
            0.0
        }
    }

    /// Variance of the mean self time (ns²), never below a 5 % spread
    /// (so a constant baseline does not make every change significant).
    pub(crate) fn mean_variance(&self) -> f64 {
        if self.spans <= 0.0 {
            return 0.0;
        }
        let mean = self.mean_self_ns();
        let variance = (self.self_sq / self.spans - mean * mean).max((0.05 * mean).powi(2));
        variance / self.spans
    }

    pub(crate) fn to_json(self) -> Value {
        json!({"spans": self.spans, "origin_errors": self.origin_errors,
               "error_rate": self.error_rate(), "self_ms_per_span": self.mean_self_ns() / 1e6})
    }
}

/// One group of a window's spans: same service, operation, kind,
/// attribute values and callee.
#[derive(Deserialize)]
pub(crate) struct GroupRow {
    pub(crate) service: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) system: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) callee: Option<String>,
    pub(crate) callee_op: Option<String>,
    pub(crate) spans: f64,
    pub(crate) origin_errors: Option<f64>,
    /// Of `origin_errors`, those of spans that spent their time waiting
    /// on a call to `callee` (a call span, or one whose call to another
    /// service took nearly all of it).
    pub(crate) waited_errors: Option<f64>,
    pub(crate) self_ns: Option<f64>,
    pub(crate) self_sq: Option<f64>,
    pub(crate) max_children: Option<f64>,
}

/// A text column's value, when there is one worth naming.
pub(crate) fn named(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// One window's span statistics: per subject, the calls between
/// services (caller service → callee operation) and spans per service.
#[derive(Default)]
pub(crate) struct WindowStats {
    pub(crate) subjects: HashMap<Subject, Stats>,
    pub(crate) edges: HashMap<Edge, f64>,
    pub(crate) traffic: HashMap<String, f64>,
    /// Spans per (service, span name), of every kind: the traffic a log
    /// template logged in that span is compared against.
    pub(crate) operations: HashMap<(String, String), f64>,
    /// Errors that started in spans waiting on a call: the subjects they
    /// were counted for, the callee, and how many (see
    /// [`blame_slow_callees`]).
    pub(crate) waited_errors: Vec<WaitedErrors>,
    /// Share of the window's traces read (1 unless it was busier than
    /// [`MAX_SPANS`]).
    pub(crate) share: f64,
}

/// Errors of one group of spans that spent their time waiting on `callee`.
#[derive(Debug, Clone)]
pub(crate) struct WaitedErrors {
    pub(crate) subjects: Vec<Subject>,
    pub(crate) callee: String,
    pub(crate) errors: f64,
}

/// Per-subject stats of one window (of a share of its traces when it is
/// busier than [`MAX_SPANS`]), from one aggregate per parent span.
///
/// Self time is a span's duration minus its children's, with two
/// corrections. The gap between a call and the server span it caused
/// (queueing, network, a starved callee) is the callee's, not the
/// caller's. And a childless span beside sibling calls (an async gateway
/// handler whose downstream calls hang off its parent) does not own the
/// time it shares with them: the overlap with the calls' extent, at most
/// their summed duration. The callee of a span is the other service among
/// its children's (the highest and lowest named, so one of two).
pub(crate) async fn window_stats(
    engine: &QueryEngine,
    start: i64,
    end: i64,
) -> Result<WindowStats, QueryError> {
    let (lo, hi) = (start - 60_000_000_000, end + 60_000_000_000);
    let (sampled, share) = trace_share(engine, start, end).await?;
    // The window's spans' children and siblings may start up to a minute
    // either side of it, but only those of the window's traces are read:
    // beside a busy minute, the margin held 50 times the window's spans,
    // and aggregating them all by span ran into the query memory limit.
    // Two aggregates over the children of each span, each joined once:
    // all children to the span itself (their time, errors and callee), and
    // the calls among them to the span's siblings (the calls made beside
    // it). No per-span GROUP BY, no self-join.
    let sql = format!(
        "WITH window_traces AS (
             SELECT DISTINCT trace_id FROM spans
             WHERE start_time >= {start} AND start_time <= {end}{sampled}
         ),
         -- The spans of the window's traces in the margin, the window's
         -- traces on the left: the side a hash join holds in memory, kept
         -- as written (`rows_as_written`). As `trace_id IN (window_traces)`
         -- (a semi join holds its filtered side) or with the sides left to
         -- DataFusion, the join held every span of the margin, and after
         -- a busy minute (24 k spans a second) ran into the query memory
         -- limit. Sampled already: the window's traces are.
         margin AS (
             SELECT s.trace_id, s.parent_span_id, s.start_time, s.duration_ns,
                    s.status_code, s.service, s.kind, s.name
             FROM window_traces w JOIN spans s ON s.trace_id = w.trace_id
             WHERE s.start_time >= {lo} AND s.start_time <= {hi} AND s.parent_span_id <> ''
         ),
         children AS (
             SELECT trace_id, parent_span_id AS span_id,
                    sum(duration_ns) AS child_ns,
                    count(*) AS children,
                    max(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS child_error,
                    max(service) AS service_hi,
                    min(service) AS service_lo,
                    max(CASE WHEN kind IN ('server', 'consumer') THEN name END) AS entry_op,
                    max(duration_ns) AS longest_ns,
                    max(CASE WHEN kind IN ('server', 'consumer') THEN duration_ns END) AS longest_entry_ns
             FROM margin
             GROUP BY trace_id, parent_span_id
         ),
         -- The calls among each span's children only: the sibling calls a
         -- childless span is measured against, aggregated and hashed over
         -- the calls alone rather than every child.
         calls AS (
             SELECT trace_id, parent_span_id AS span_id,
                    min(CAST(start_time AS BIGINT)) AS calls_t0,
                    max(CAST(start_time AS BIGINT) + duration_ns) AS calls_t1,
                    sum(duration_ns) AS calls_ns
             FROM margin
             WHERE kind IN ('client', 'producer')
             GROUP BY trace_id, parent_span_id
         ),
         per_span AS (
             SELECT p.service, p.name, p.kind, p.status_code, p.duration_ns,
                    p.instance,
                    p.resource_attributes['service.version'] AS version,
                    p.resource_attributes['cloud.region'] AS region,
                    COALESCE(p.attributes['db.system'], p.attributes['messaging.system']) AS system,
                    COALESCE(p.attributes['server.address'], p.attributes['messaging.destination.name'], p.attributes['peer.service']) AS address,
                    COALESCE(c.children, 0) AS children,
                    COALESCE(c.child_error, 0) AS child_error,
                    CASE WHEN c.service_hi <> p.service THEN c.service_hi
                         WHEN c.service_lo <> p.service THEN c.service_lo END AS callee,
                    c.entry_op AS callee_op,
                    CASE WHEN c.service_hi = c.service_lo THEN c.longest_ns ELSE c.longest_entry_ns END AS call_ns,
                    greatest(0, p.duration_ns - COALESCE(c.child_ns, 0)
                        - CASE WHEN c.span_id IS NULL AND p.kind NOT IN ('client', 'producer') AND s.calls_ns IS NOT NULL
                               THEN least(s.calls_ns, greatest(0,
                                        least(CAST(p.start_time AS BIGINT) + p.duration_ns, s.calls_t1)
                                        - greatest(CAST(p.start_time AS BIGINT), s.calls_t0)))
                               ELSE 0 END) AS self_ns
             -- RIGHT joins: the narrow aggregates are the hashed side.
             FROM calls s RIGHT JOIN (
                 children c RIGHT JOIN spans p ON c.trace_id = p.trace_id AND c.span_id = p.span_id
             ) ON s.trace_id = p.trace_id AND s.span_id = p.parent_span_id
             WHERE p.start_time >= {start} AND p.start_time <= {end}{p_sampled}
         )
         SELECT service, name, kind, instance, version, region, system, address, callee, callee_op,
                count(*) AS spans,
                sum(CASE WHEN status_code = 'error' AND child_error = 0 THEN 1 ELSE 0 END) AS origin_errors,
                sum(CASE WHEN status_code = 'error' AND child_error = 0 AND callee IS NOT NULL
                          AND (kind IN ('client', 'producer') OR call_ns >= 0.9 * duration_ns)
                         THEN 1 ELSE 0 END) AS waited_errors,
                sum(self_ns) AS self_ns,
                sum(CAST(self_ns AS DOUBLE) * CAST(self_ns AS DOUBLE)) AS self_sq,
                max(children) AS max_children
         FROM per_span GROUP BY service, name, kind, instance, version, region, system, address, callee, callee_op",
        lo = ts(lo),
        hi = ts(hi),
        start = ts(start),
        end = ts(end),
        p_sampled = sampled.replace("trace_id", "p.trace_id"),
    );
    let mut out = WindowStats {
        share,
        ..WindowStats::default()
    };
    for r in rows_as_written::<GroupRow>(engine, sql).await? {
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
        if let Some(name) = named(r.name.clone()) {
            // Log lines are all read: their operations' traffic is scaled
            // up to the whole window.
            *out.operations.entry((service.clone(), name)).or_default() += r.spans / share;
        }
        let kind = r.kind.as_deref().unwrap_or_default();
        let waited = r.waited_errors.unwrap_or(0.0);
        let callee = named(r.callee);
        if let Some(callee) = callee.clone() {
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
        if let (Some(callee), true) = (callee, waited > 0.0) {
            out.waited_errors.push(WaitedErrors {
                subjects: subjects.clone(),
                callee,
                errors: waited,
            });
        }
        for s in subjects {
            out.subjects.entry(s).or_default().add(stats);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct CountRow {
    spans: Option<f64>,
}

/// The filter that keeps a share of a window's traces so about
/// [`MAX_SPANS`] of its spans are read, and that share: none and 1 when
/// the window is not busier than that.
async fn trace_share(
    engine: &QueryEngine,
    start: i64,
    end: i64,
) -> Result<(String, f64), QueryError> {
    let sql = format!(
        "SELECT CAST(count(*) AS DOUBLE) AS spans FROM spans WHERE start_time >= {} AND start_time <= {}",
        ts(start),
        ts(end)
    );
    let spans = (rows_as::<CountRow>(engine, sql).await?)
        .first()
        .and_then(|r| r.spans)
        .unwrap_or(0.0);
    Ok(sample_filter(spans))
}

/// See [`trace_share`]: of 256 buckets of the trace id's last byte (in
/// lowercase hex, whose string order is its numeric order), the first
/// `k` are kept.
fn sample_filter(spans: f64) -> (String, f64) {
    if spans <= MAX_SPANS {
        return (String::new(), 1.0);
    }
    let k = ((256.0 * MAX_SPANS / spans).floor() as u32).clamp(1, 255);
    (
        format!(" AND right(trace_id, 2) < '{k:02x}'"),
        f64::from(k) / 256.0,
    )
}

/// Lesson: errors caused by a slow dependency (a timeout) start in the
/// caller, because the callee never failed — it was slow, or its network
/// was. When the callee's own time (its spans' self time plus the gap of
/// the calls to it) is significantly up against the baseline, errors of
/// spans that spent their time waiting on it are moved to it: the error
/// is traced back along the slow path before it is attributed.
pub(crate) fn blame_slow_callees(incident: &mut WindowStats, baseline: &WindowStats) {
    let slow = |callee: &str| {
        let service = Subject::Service {
            service: callee.to_string(),
        };
        let now = incident.subjects.get(&service).copied().unwrap_or_default();
        let before = baseline.subjects.get(&service).copied().unwrap_or_default();
        is_slower(&now, &before)
    };
    let moved: Vec<WaitedErrors> = (incident.waited_errors.iter())
        .filter(|w| slow(&w.callee))
        .cloned()
        .collect();
    for w in moved {
        for s in &w.subjects {
            if let Some(stats) = incident.subjects.get_mut(s) {
                stats.origin_errors = (stats.origin_errors - w.errors).max(0.0);
            }
        }
        let callee = Subject::Service { service: w.callee };
        incident.subjects.entry(callee).or_default().origin_errors += w.errors;
    }
}

/// Whether the mean self time of `now` is significantly and markedly
/// above `before`'s.
pub(crate) fn is_slower(now: &Stats, before: &Stats) -> bool {
    let (m, b) = (now.mean_self_ns(), before.mean_self_ns());
    let z = (m - b)
        / (now.mean_variance() + before.mean_variance())
            .sqrt()
            .max(1.0);
    b > 0.0 && z >= MIN_LATENCY_Z && m >= MIN_LIFT * b
}

#[derive(Deserialize)]
pub(crate) struct GaugeQueryRow {
    pub(crate) service: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) base_mean: Option<f64>,
    pub(crate) base_std: Option<f64>,
    pub(crate) inc_mean: Option<f64>,
}

/// Per-instance CPU and memory gauges (not host or node level) in both
/// windows: mean and spread in the baseline, mean in the incident.
pub(crate) async fn gauges(
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
        "SELECT service, instance, name,
                avg(CASE WHEN {in_base} THEN value END) AS base_mean,
                stddev(CASE WHEN {in_base} THEN value END) AS base_std,
                avg(CASE WHEN {in_incident} THEN value END) AS inc_mean
         FROM metrics
         WHERE kind = 'gauge' AND value IS NOT NULL
           AND (({in_base}) OR ({in_incident}))
           AND (lower(name) LIKE '%cpu%' OR lower(name) LIKE '%memory%')
           AND lower(name) NOT LIKE '%node%' AND lower(name) NOT LIKE 'system.%'
           AND instance IS NOT NULL
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
pub(crate) fn kept_calls(
    baseline: &WindowStats,
    incident: &WindowStats,
) -> HashSet<(String, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{service, stats};

    fn window(subjects: &[(&str, Stats)], waited: &[(&str, &str, f64)]) -> WindowStats {
        WindowStats {
            subjects: (subjects.iter()).map(|(s, st)| (service(s), *st)).collect(),
            waited_errors: (waited.iter())
                .map(|(caller, callee, n)| WaitedErrors {
                    subjects: vec![service(caller)],
                    callee: callee.to_string(),
                    errors: *n,
                })
                .collect(),
            ..WindowStats::default()
        }
    }

    /// A window busier than [`MAX_SPANS`] is read for a share of its
    /// traces that brings it back to about that many spans; a quiet one
    /// is read whole.
    #[test]
    fn a_busy_window_is_read_for_a_share_of_its_traces() {
        assert_eq!(sample_filter(MAX_SPANS), (String::new(), 1.0));
        let (filter, share) = sample_filter(4.0 * MAX_SPANS);
        assert_eq!(filter, " AND right(trace_id, 2) < '40'");
        assert_eq!(share, 0.25);
        let (filter, share) = sample_filter(1e9);
        assert_eq!(filter, " AND right(trace_id, 2) < '01'");
        assert_eq!(share, 1.0 / 256.0);
    }

    /// Lesson 3: `order` times out calling `payment`, whose network is
    /// delayed; payment never errs. The timeouts start in order's call
    /// spans, but they are payment's: it is the slow one. The same errors
    /// with a callee as fast as ever stay with the caller.
    #[test]
    fn timeouts_on_a_slow_callee_are_the_callees_errors() {
        let baseline = window(
            &[
                ("order", stats(200.0, 0.0, 2.0)),
                ("payment", stats(200.0, 0.0, 5.0)),
            ],
            &[],
        );
        let mut incident = window(
            &[
                ("order", stats(200.0, 40.0, 2.0)),
                ("payment", stats(160.0, 0.0, 50.0)),
            ],
            &[("order", "payment", 40.0)],
        );
        blame_slow_callees(&mut incident, &baseline);
        assert_eq!(incident.subjects[&service("order")].origin_errors, 0.0);
        assert_eq!(incident.subjects[&service("payment")].origin_errors, 40.0);

        let mut fast = window(
            &[
                ("order", stats(200.0, 40.0, 2.0)),
                ("payment", stats(200.0, 0.0, 5.1)),
            ],
            &[("order", "payment", 40.0)],
        );
        blame_slow_callees(&mut fast, &baseline);
        assert_eq!(fast.subjects[&service("order")].origin_errors, 40.0);
        assert_eq!(fast.subjects[&service("payment")].origin_errors, 0.0);
    }
}
