//! Evidence for problem location beyond a subject's own span statistics,
//! as pure functions over per-window counts, so each rule is testable on a
//! hand-built fixture:
//!
//! - log templates of a service (all severities) that appear, vanish or
//!   change their share of the service's lines ([`log_evidence`]);
//! - call edges (caller service → callee operation) that vanish
//!   ([`edge_evidence`]);
//! - per-instance CPU and memory gauges that rise far more than the same
//!   gauge on other instances ([`metric_evidence`]);
//! - propagation: a caller whose callee is itself anomalous is a symptom,
//!   so it is not ranked above that callee ([`demote_symptoms`]).
//!
//! Significance scales with counts (a Poisson log-likelihood ratio, see
//! [`poisson_g`]) instead of hard minimum counts, so a culprit with a
//! handful of lines or spans can still be listed, while a large count
//! drifting a little cannot dominate (effects are weighted by their
//! relative size).

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::dependency_errors::blames_a_dependency;
use crate::patterns::Compared;

/// The log-likelihood ratio below which a change is noise (about p = 0.01).
pub(crate) const G_MIN: f64 = 6.0;
/// Significance beyond this adds nothing: a large count is not more of a cause.
pub(crate) const G_CAP: f64 = 30.0;
/// A service's log (or call) evidence is capped: many correlated templates
/// of one code path are one piece of evidence, not many.
const SERVICE_CAP: f64 = 2.0;
/// How much of the baseline's own drift is taken off a service's log
/// evidence (the halves of the baseline are a noisy estimate).
const NOISE_SHARE: f64 = 0.5;
/// Robust z-score from which a gauge's rise is evidence, and its cap.
const METRIC_Z_MIN: f64 = 6.0;
const METRIC_Z_CAP: f64 = 30.0;
/// A caller is a symptom of its callee when the callee's own evidence is
/// at least this share of the caller's score.
const SYMPTOM_SHARE: f64 = 0.5;
/// A callee whose evidence is an order of magnitude weaker than its
/// caller's cannot explain the caller, whatever else they share.
const MIN_CAUSE_SHARE: f64 = 0.1;

/// Signed Poisson log-likelihood ratio (deviance) of observing `n` where
/// `e` was expected: positive when `n > e`, negative when fewer.
pub(crate) fn poisson_g(n: f64, e: f64) -> f64 {
    let e = e.max(1e-9);
    let t = if n > 0.0 { n * (n / e).ln() } else { 0.0 };
    let g = (2.0 * (t - (n - e))).max(0.0);
    if n >= e { g } else { -g }
}

/// How sure a change is, from 0 to 1: its log-likelihood ratio `g`
/// against [`G_CAP`]. Span and log evidence are both weighted by it, so a
/// change barely past the significance guard (three errors where half a
/// one was expected) is not as strong a lead as one no one could doubt.
/// For a z-score, pass `z²` (the same statistic for a mean).
pub(crate) fn confidence(g: f64) -> f64 {
    (g.max(0.0) / G_CAP).min(1.0)
}

/// A service's span score on the scale of its other evidence (each kind
/// of signal is worth at most [`SERVICE_CAP`]): monotonic, so span
/// suspects keep their order, but one very lopsided rate cannot outweigh
/// everything the logs, calls and gauges say.
pub(crate) fn saturate(score: f64) -> f64 {
    SERVICE_CAP * (score.max(0.0) / SERVICE_CAP).tanh()
}

/// One count compared with its expectation: the weight of the change as
/// evidence (0 when not significant) and whether it rose.
fn shift_weight(n: f64, e: f64) -> (f64, bool) {
    let g = poisson_g(n, e);
    if g.abs() < G_MIN {
        return (0.0, g > 0.0);
    }
    let relative = (n - e).abs() / (n + e);
    (relative * relative * confidence(g.abs()), g > 0.0)
}

pub(crate) fn is_warning_or_worse(severity: &str) -> bool {
    let s = severity.to_ascii_uppercase();
    ["WARN", "ERR", "FATAL", "CRIT", "ALERT", "EMERG", "SEVERE"]
        .iter()
        .any(|w| s.starts_with(w))
}

/// One template's change, as evidence.
#[derive(Debug, Clone)]
pub(crate) struct TemplateShift {
    pub severity: String,
    pub template: String,
    pub before: u64,
    pub current: u64,
    pub expected: f64,
    pub weight: f64,
    pub example: String,
}

impl TemplateShift {
    pub fn trend(&self) -> &'static str {
        match (self.before, self.current) {
            (0, _) => "new",
            (_, 0) => "vanished",
            _ if self.current as f64 > self.expected => "surging",
            _ => "dropping",
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} {} log pattern \"{}\" ({} lines vs {} in the baseline)",
            self.trend(),
            self.severity,
            self.template,
            self.current,
            self.before
        )
    }

    pub fn to_json(&self) -> Value {
        json!({"severity_text": self.severity, "template": self.template, "count": self.current,
               "previous_count": self.before, "trend": self.trend(), "example": self.example})
    }
}

/// A service's evidence from one kind of signal: what appeared (its own
/// doing) and what vanished (which its callers also see), strongest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Evidence {
    pub appeared: f64,
    /// The part of `appeared` from WARN-or-worse templates.
    pub appeared_severe: f64,
    pub vanished: f64,
    pub shifts: Vec<TemplateShift>,
    /// How much the service's templates move anyway: the same evidence
    /// between the two halves of the baseline.
    pub noise: f64,
}

impl Evidence {
    /// The strongest change counts fully, the rest a quarter: many
    /// templates of one code path moving together are one piece of
    /// evidence, and many small drifts in a busy service are not many.
    pub fn score(&self) -> f64 {
        let strongest = self.shifts.first().map_or(0.0, |s| s.weight);
        let rest = self.appeared + self.vanished - strongest;
        (strongest + 0.25 * rest - NOISE_SHARE * self.noise).clamp(0.0, SERVICE_CAP)
    }

    /// The part of [`Evidence::score`] owed to what appeared.
    pub fn appeared_score(&self) -> f64 {
        let total = self.appeared + self.vanished;
        if total > 0.0 {
            self.score() * self.appeared / total
        } else {
            0.0
        }
    }
}

/// Spans per (service, operation name) in the baseline and the incident.
pub(crate) type OperationTraffic = HashMap<(String, String), (f64, f64)>;

/// One template's significant change: its expected count and weight.
pub(crate) struct Scored<'a> {
    compared: &'a Compared,
    expected: f64,
    weight: f64,
    rose: bool,
}

/// The templates of `changes` whose count changed significantly against
/// what the baseline predicts (see [`log_evidence`]).
fn significant_shifts<'a>(
    changes: &'a [Compared],
    operations: &OperationTraffic,
) -> Vec<Scored<'a>> {
    let mut totals: HashMap<&str, (f64, f64)> = HashMap::new();
    for c in changes {
        let t = totals.entry(c.service.as_str()).or_default();
        t.0 += c.before as f64;
        t.1 += c.current as f64;
    }
    let twins = twin_counts(changes);
    let mut out = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        let (before, current) = totals[c.service.as_str()];
        if before == 0.0 || current == 0.0 {
            continue;
        }
        let traffic =
            (c.operation.as_ref()).and_then(|op| operations.get(&(c.service.clone(), op.clone())));
        let expected = match traffic {
            // The operation ran in only one window: its lines follow it.
            Some(&(b, n)) if b == 0.0 || n == 0.0 => continue,
            Some(&(b, n)) => (c.before as f64 + 0.5) * n / b,
            None => (c.before as f64 + 0.5) * current / before,
        };
        // A line that fell behind its twin: the path stopped between them.
        let behind_twin = twins[i] > expected;
        let expected = expected.max(twins[i]);
        let (mut weight, rose) = shift_weight(c.current as f64, expected);
        if behind_twin && weight > 0.0 {
            // Against its twin the change is a share of outcomes — of the
            // passes through the twin, how many no longer reach this line —
            // weighed as that share, not as a count's drift.
            let stopped = 1.0 - c.current as f64 / expected;
            weight = stopped * confidence(poisson_g(c.current as f64, expected).abs());
        }
        if weight > 0.0 {
            out.push(Scored {
                compared: c,
                expected,
                weight,
                rose,
            });
        }
    }
    out
}

/// Share by which the baseline counts of two lines of one operation may
/// differ and still be twins (a window's edge cuts a request's lines).
const TWIN_TOLERANCE: f64 = 0.1;
/// Baseline lines a template needs before its twins say anything.
const TWIN_MIN_LINES: u64 = 20;

/// Per template of `changes`: the most its twins were logged in the
/// incident (0 without twins). Twins are lines of one operation logged
/// as often as each other in the baseline — one code path, each logged
/// once per pass — so they keep pace: when one falls behind its twin,
/// the path now stops between them (an exception thrown and swallowed
/// there), however the operation's traffic and the lines per request
/// changed. Lesson 4: a changed share of an operation's outcomes.
fn twin_counts(changes: &[Compared]) -> Vec<f64> {
    let mut by_operation: HashMap<(&str, &str), Vec<(u64, u64)>> = HashMap::new();
    for c in changes {
        if let Some(op) = &c.operation {
            let key = (c.service.as_str(), op.as_str());
            by_operation
                .entry(key)
                .or_default()
                .push((c.before, c.current));
        }
    }
    changes
        .iter()
        .map(|c| {
            let Some(op) = &c.operation else {
                return 0.0;
            };
            if c.before < TWIN_MIN_LINES {
                return 0.0;
            }
            let b = c.before as f64;
            by_operation[&(c.service.as_str(), op.as_str())]
                .iter()
                .filter(|&&(tb, tn)| {
                    (tb as f64 - b).abs() <= TWIN_TOLERANCE * b && (tb, tn) != (c.before, c.current)
                })
                .map(|&(_, tn)| tn as f64)
                .fold(0.0, f64::max)
        })
        .collect()
}

/// Per service: templates whose count changed significantly against what
/// the baseline predicts. A template logged in a known operation is
/// compared like with like — with that operation's own traffic — so a
/// shift in the request mix (an operation called more or less often, or
/// only in one window) is not evidence, while a line that stops although
/// its operation is still called as often is. Lines without an operation
/// are compared with their share of the service's lines. A new WARN/ERROR
/// template weighs most; a vanished template (a code path that stopped)
/// weighs nearly as much; a new INFO template half; a vanished WARN/ERROR
/// template (errors that stopped) little. A service absent from
/// either window has no mix to compare. Changes explained by another are
/// not counted again: lines saying a dependency failed the request are
/// the dependency's; the lines of a service whose errors stopped that its
/// requests now get far enough to log are that recovery.
pub(crate) fn log_evidence(
    changes: &[Compared],
    operations: &OperationTraffic,
) -> HashMap<String, Evidence> {
    let scored = significant_shifts(changes, operations);
    // Services whose errors stopped: the lines their requests log now
    // that they get further are the same recovery, not new evidence.
    let recovered: HashSet<&str> = (scored.iter())
        .filter(|s| !s.rose && is_warning_or_worse(&s.compared.severity))
        .map(|s| s.compared.service.as_str())
        .collect();
    let mut out: HashMap<String, Evidence> = HashMap::new();
    for &Scored {
        compared: c,
        expected,
        weight,
        rose,
    } in &scored
    {
        let severe = is_warning_or_worse(&c.severity);
        let service = c.service.as_str();
        // A failure to reach a dependency that starts or stops is the
        // dependency's symptom or recovery, not a change in this service
        // (see `crate::dependency_errors`).
        let symptom = blames_a_dependency(&c.template);
        if symptom || (rose && !severe && recovered.contains(service)) {
            continue;
        }
        // An error that stops is a recovery more often than a cause; a
        // usual line that stops is a code path that no longer runs.
        let severity = match (rose, severe) {
            (true, true) => 1.0,
            (true, false) => 0.5,
            (false, false) => 0.7,
            (false, true) => 0.3,
        };
        let weight = weight * severity;
        let e = out.entry(c.service.clone()).or_default();
        if rose {
            e.appeared += weight;
            if severe {
                e.appeared_severe += weight;
            }
        } else {
            e.vanished += weight;
        }
        e.shifts.push(TemplateShift {
            severity: c.severity.clone(),
            template: c.template.clone(),
            before: c.before,
            current: c.current,
            expected,
            weight,
            example: c.example.clone(),
        });
    }
    for e in out.values_mut() {
        e.shifts.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        e.shifts.truncate(3);
    }
    out
}

/// Lines per (service, operation) in both windows of `changes`: the
/// traffic to compare templates against where spans were not counted.
pub(crate) fn lines_per_operation(changes: &[Compared]) -> OperationTraffic {
    let mut out = OperationTraffic::new();
    for c in changes {
        if let Some(op) = &c.operation {
            let t = out.entry((c.service.clone(), op.clone())).or_default();
            t.0 += c.before as f64;
            t.1 += c.current as f64;
        }
    }
    out
}

/// `halves` (the baseline's older half against its newer half) without
/// the onsets: a template whose newer half already moved significantly
/// (against its service's lines) the way the incident moves it is a
/// change that began just before the window — the incident's evidence
/// starting early — not drift the baseline shows anyway.
pub(crate) fn without_onsets(halves: Vec<Compared>, changes: &[Compared]) -> Vec<Compared> {
    let moved = |list: &[Compared],
                 g_min: f64|
     -> HashMap<(String, String, Option<String>, String), bool> {
        let mut totals: HashMap<&str, (f64, f64)> = HashMap::new();
        for c in list {
            let t = totals.entry(c.service.as_str()).or_default();
            t.0 += c.before as f64;
            t.1 += c.current as f64;
        }
        list.iter()
            .filter_map(|c| {
                let (before, current) = totals[c.service.as_str()];
                if before == 0.0 || current == 0.0 {
                    return None;
                }
                let expected = (c.before as f64 + 0.5) * current / before;
                let g = poisson_g(c.current as f64, expected);
                let key = (
                    c.service.clone(),
                    c.severity.clone(),
                    c.operation.clone(),
                    c.template.clone(),
                );
                (g != 0.0 && g.abs() >= g_min).then_some((key, g > 0.0))
            })
            .collect()
    };
    let incident = moved(changes, G_MIN);
    let early = moved(&halves, G_MIN);
    halves
        .into_iter()
        .filter(|c| {
            let key = (
                c.service.clone(),
                c.severity.clone(),
                c.operation.clone(),
                c.template.clone(),
            );
            !matches!((early.get(&key), incident.get(&key)), (Some(a), Some(b)) if a == b)
        })
        .collect()
}

/// Discounts each service's log evidence by how much its templates move
/// within the baseline alone (`noise`: [`log_evidence`] between the
/// baseline's two halves), so a busy service whose request mix drifts
/// all the time is not a suspect for drifting now.
pub(crate) fn discount_noise(
    evidence: &mut HashMap<String, Evidence>,
    noise: &HashMap<String, Evidence>,
) {
    for (service, e) in evidence.iter_mut() {
        e.noise = noise.get(service).map_or(0.0, Evidence::score);
    }
}

/// Calls from a caller service to a callee operation, in one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Edge {
    pub caller: String,
    pub callee: String,
    pub operation: String,
}

/// Per caller: call edges that vanished (or dropped) relative to the
/// caller's own traffic — a caller that stops calling a dependency has
/// changed what it does. Returns the weight and the strongest edge.
pub(crate) fn edge_evidence(
    before: &HashMap<Edge, f64>,
    current: &HashMap<Edge, f64>,
    traffic: &HashMap<String, (f64, f64)>,
) -> HashMap<String, (f64, String)> {
    let mut out: HashMap<String, (f64, String)> = HashMap::new();
    for (edge, &b) in before {
        let Some(&(tb, tc)) = traffic.get(&edge.caller) else {
            continue;
        };
        if tb == 0.0 || tc == 0.0 {
            continue;
        }
        let n = current.get(edge).copied().unwrap_or(0.0);
        let (weight, rose) = shift_weight(n, b * tc / tb);
        if weight == 0.0 || rose {
            continue;
        }
        let e = out.entry(edge.caller.clone()).or_default();
        if weight > e.0 {
            e.1 = format!(
                "its calls to {} {} dropped to {n} from {b} in the baseline",
                edge.callee, edge.operation
            );
        }
        e.0 = (e.0 + weight * 0.7).min(SERVICE_CAP);
    }
    out
}

/// A gauge of one instance in both windows.
#[derive(Debug, Clone)]
pub(crate) struct GaugeRow {
    pub service: String,
    pub instance: String,
    pub name: String,
    pub base_mean: f64,
    pub base_std: f64,
    pub inc_mean: f64,
}

/// A service's strongest gauge rise: the instance, the weight, a sentence.
#[derive(Debug, Clone)]
pub(crate) struct GaugeEvidence {
    pub instance: String,
    pub weight: f64,
    pub explanation: String,
}

/// Per service: the instance whose gauge rose most unusually. Each
/// instance's rise is compared with the rises of the same gauge on every
/// other instance (median and MAD), so a load change that lifts every
/// instance is not evidence, and with its own baseline spread (a few
/// baseline points are enough).
pub(crate) fn metric_evidence(rows: &[GaugeRow]) -> HashMap<String, GaugeEvidence> {
    let mut by_name: HashMap<&str, Vec<&GaugeRow>> = HashMap::new();
    for r in rows {
        by_name.entry(r.name.as_str()).or_default().push(r);
    }
    let mut out: HashMap<String, GaugeEvidence> = HashMap::new();
    for (name, rows) in by_name {
        let mut rises: Vec<f64> = rows.iter().map(|r| r.inc_mean - r.base_mean).collect();
        rises.sort_by(f64::total_cmp);
        let median = rises[rises.len() / 2];
        let mut deviations: Vec<f64> = rises.iter().map(|d| (d - median).abs()).collect();
        deviations.sort_by(f64::total_cmp);
        let mad = 1.4826 * deviations[deviations.len() / 2];
        for r in rows {
            let rise = r.inc_mean - r.base_mean;
            let spread = mad.max(r.base_std).max(0.1 * r.base_mean.abs()).max(1e-9);
            let z = (rise - median) / spread;
            // A rise must also be large relative to the level (x1.5).
            if z < METRIC_Z_MIN || r.inc_mean < 1.5 * r.base_mean || r.inc_mean <= 0.0 {
                continue;
            }
            let weight = z.min(METRIC_Z_CAP) / METRIC_Z_CAP;
            let e = out.entry(r.service.clone()).or_insert(GaugeEvidence {
                instance: r.instance.clone(),
                weight: 0.0,
                explanation: String::new(),
            });
            if weight > e.weight {
                *e = GaugeEvidence {
                    instance: r.instance.clone(),
                    weight,
                    explanation: format!(
                        "{name} of {} rose to {:.3} from {:.3} in the baseline",
                        r.instance, r.inc_mean, r.base_mean
                    ),
                };
            }
        }
    }
    out
}

/// Propagation: when caller A and callee B are both anomalous, A is a
/// symptom of B and is ranked just below B. Both are anomalous when B's
/// own evidence (what appeared there, not what vanished) is at least half
/// of A's score — counting B's usual log lines that vanished although A
/// kept calling it (`kept`: B's work stopped, it was not just called
/// less) as B's own; or when A fails (errors start in its spans or it logs
/// new WARN/ERROR lines) and B fails too, or B's usual lines vanished
/// although A kept calling it. B must carry at least a tenth of A's score
/// ([`MIN_CAUSE_SHARE`]): a faint anomaly downstream does not absorb a
/// strong one upstream. Computed on the original scores, so blame moves
/// one hop per edge, not down a chain of small anomalies.
///
/// The same holds when A only stopped doing things (`stopped`: its usual
/// lines vanished or its calls dropped, with little that appeared) and B,
/// which A kept calling, mostly stopped some of its usual work too (at
/// least half its score, and a twentieth of A's): a flow that
/// ends early after a call is what a callee returning something else (a
/// swallowed exception, a changed value) looks like from the caller.
pub(crate) fn demote_symptoms(
    scores: &HashMap<String, f64>,
    own: &HashMap<String, f64>,
    failing: &HashSet<String>,
    stopped: &HashSet<String>,
    vanished: &HashMap<String, f64>,
    kept: &HashSet<(String, String)>,
    calls: &[(String, String)],
) -> HashMap<String, f64> {
    let mut out = scores.clone();
    for (caller, callee) in calls {
        if caller == callee {
            continue;
        }
        let (Some(&a), Some(&b)) = (scores.get(caller), scores.get(callee)) else {
            continue;
        };
        let b_own = own.get(callee).copied().unwrap_or(0.0);
        let b_vanished = vanished.get(callee).copied().unwrap_or(0.0);
        let pair = (caller.clone(), callee.clone());
        let a_fails = failing.contains(caller);
        let kept = kept.contains(&pair);
        // What B stopped doing while A kept calling it is B's own doing too.
        let b_changed = b_own + if kept { b_vanished } else { 0.0 };
        let symptom = (b_changed > 0.0 && b_changed >= SYMPTOM_SHARE * a)
            || (a_fails && b_own > 0.0 && failing.contains(callee))
            || (a_fails && b_vanished > 0.0 && kept)
            || (stopped.contains(caller) && kept && b_vanished >= b.max(MIN_CAUSE_SHARE * a) / 2.0);
        if a > 0.0 && b >= MIN_CAUSE_SHARE * a && symptom && b < a {
            let demoted = out.get_mut(caller).expect("present");
            *demoted = demoted.min(0.9 * b);
        }
    }
    out
}

#[cfg(test)]
#[path = "evidence_tests.rs"]
mod tests;
