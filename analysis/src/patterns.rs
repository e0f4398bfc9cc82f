//! Log patterns: a window's log lines grouped into templates (see
//! [`loupe_query::template_miner`]) and compared with the window before, so a
//! new, surging or vanished shape stands out.
//!
//! Two granularities: the patterns API mines templates over both windows
//! together (one miner, so an event gets the same template in both), while
//! [`PatternCounts`] keys each line by its own masked form, the finer
//! grouping problem location compares.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Json;
use axum::routing::get;
use loupe_base::sql_literal::{quote, timestamp as ts};
use loupe_query::internal_sql::rows_as;
use loupe_query::{QueryEngine, QueryError, time_param};
use serde::Deserialize;
use serde_json::{Value, json};

pub use loupe_query::template_miner::template;
use loupe_query::template_miner::{TemplateMiner, Tokens};

/// Counts of templates in a set of lines, with one example line each.
#[derive(Debug, Default)]
pub struct PatternCounts {
    pub counts: HashMap<(String, String, String), (u64, String)>,
}

impl PatternCounts {
    /// Adds a line of `service` at `severity`.
    pub fn add(&mut self, service: &str, severity: &str, line: &str) {
        let key = (service.to_string(), severity.to_string(), template(line));
        let entry = self
            .counts
            .entry(key)
            .or_insert_with(|| (0, line.to_string()));
        entry.0 += 1;
    }

    /// How many lines had the template `key` (0 when none).
    pub fn get(&self, key: &(String, String, String)) -> u64 {
        self.counts.get(key).map_or(0, |(n, _)| *n)
    }
}

/// The log patterns route.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/logs/patterns", get(patterns))
        .with_state(engine)
}

#[derive(Deserialize)]
pub(crate) struct LineRow {
    pub(crate) service: Option<String>,
    pub(crate) severity_text: Option<String>,
    pub(crate) body: Option<String>,
    /// The name of the span the line was logged in, when it carries one
    /// (see [`operation_lines`]).
    #[serde(default)]
    pub(crate) operation: Option<String>,
    /// The instance that logged the line, when known (see [`operation_lines`]).
    #[serde(default)]
    pub(crate) instance: Option<String>,
}

/// Counts the templates of a window's log lines at `min_severity` or
/// above (the newest 50000 lines), of one service or all.
pub async fn count_patterns(
    engine: &QueryEngine,
    start: i64,
    end: i64,
    service: Option<&str>,
    min_severity: i32,
) -> Result<PatternCounts, QueryError> {
    let lines = window_lines(engine, start, end, service, min_severity).await?;
    let mut counts = PatternCounts::default();
    for l in lines {
        if let (Some(s), Some(sev), Some(body)) = (l.service, l.severity_text, l.body) {
            counts.add(&s, &sev, &body);
        }
    }
    Ok(counts)
}

/// Templates of the window's log lines with counts, marked new, surging,
/// steady or vanished against the window of the same length just before.
async fn patterns(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<crate::WindowParams>,
) -> Result<Json<Value>, QueryError> {
    let (start, end) = time_param::window(p.start.as_deref(), p.end.as_deref(), "now-15m")?;
    if start == end {
        return Err(QueryError::Invalid("start must be before end".into()));
    }
    let service = p.service.as_deref();
    let (current, before) = futures::try_join!(
        window_lines(&engine, start, end, service, 0),
        window_lines(&engine, start - (end - start), start, service, 0),
    )?;
    let mut list: Vec<(u64, String, Value)> = compare(&before, &current)
        .into_iter()
        .map(|p| {
            let trend = p.trend();
            let value = json!({
                "service": p.service, "severity_text": p.severity, "template": p.template,
                "count": p.current, "previous_count": p.before, "trend": trend, "example": p.example,
            });
            (p.current, p.template, value)
        })
        .collect();
    list.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let list: Vec<Value> = list.into_iter().map(|(_, _, v)| v).collect();
    Ok(Json(json!({ "patterns": list })))
}

/// The lines of a window at `min_severity` or above (the newest 50000),
/// of one service or all.
pub(crate) async fn window_lines(
    engine: &QueryEngine,
    start: i64,
    end: i64,
    service: Option<&str>,
    min_severity: i32,
) -> Result<Vec<LineRow>, QueryError> {
    let service = service
        .map(|s| format!(" AND service = {}", quote(s)))
        .unwrap_or_default();
    rows_as::<LineRow>(
        engine,
        format!(
            "SELECT service, severity_text, body FROM logs
             WHERE time >= {} AND time <= {} AND severity_number >= {min_severity} AND body IS NOT NULL{service}
             ORDER BY time DESC LIMIT 50000",
            ts(start),
            ts(end)
        ),
    )
    .await
}

/// The lines of a window (the newest 50000) with the name of the span
/// each was logged in, so a template can be compared with the traffic of
/// the operation that logs it rather than with its whole service.
pub(crate) async fn operation_lines(
    engine: &QueryEngine,
    start: i64,
    end: i64,
) -> Result<Vec<LineRow>, QueryError> {
    // Spans start at most a minute before the lines logged in them.
    let (lo, hi) = (start - 60_000_000_000, end);
    // The newest lines are chosen before the join, and only the span ids
    // and names are joined to them: the join's hashed side is then at
    // most those lines or the window's narrow span ids, never every line
    // of a busy window with its body (which ran into the query memory
    // limit, HashJoinInput, on a day of data).
    rows_as::<LineRow>(
        engine,
        format!(
            "WITH l AS (
                 SELECT time, service, severity_text, body, trace_id, span_id,
                        instance
                 FROM logs
                 WHERE time >= {} AND time <= {} AND body IS NOT NULL
                 ORDER BY time DESC LIMIT 50000
             ),
             s AS (
                 SELECT trace_id, span_id, name FROM spans
                 WHERE start_time >= {} AND start_time <= {}
             )
             SELECT l.service, l.severity_text, l.body, s.name AS operation, l.instance
             FROM l LEFT JOIN s ON s.trace_id = l.trace_id AND s.span_id = l.span_id
             ORDER BY l.time DESC",
            ts(start),
            ts(end),
            ts(lo),
            ts(hi)
        ),
    )
    .await
}

/// One template's counts in the window before and in the current one (per
/// operation, when the lines carry the span they were logged in).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Compared {
    pub service: String,
    pub severity: String,
    pub template: String,
    /// The span name the lines were logged in, if known.
    pub operation: Option<String>,
    pub before: u64,
    pub current: u64,
    pub example: String,
}

impl Compared {
    fn trend(&self) -> &'static str {
        match (self.before, self.current) {
            (0, _) => "new",
            (_, 0) => "vanished",
            (b, n) if n >= 3 * b => "surging",
            _ => "steady",
        }
    }
}

/// Mines both windows' lines with one miner (a service's lines at one
/// severity form a group) and counts each template — per operation, when
/// the lines name one — in each window.
pub(crate) fn compare(before: &[LineRow], current: &[LineRow]) -> Vec<Compared> {
    let mut miner = TemplateMiner::default();
    let ids_before = mine(&mut miner, before);
    let ids_now = mine(&mut miner, current);
    count(&miner, (before, &ids_before), (current, &ids_now))
}

/// [`compare`] of `before` with `current`, and of the older half of
/// `before` with its newer half (`before` comes newest first) — how much
/// the templates move within the baseline alone — mining every line once.
/// Each window's lines come with their [`masked`] tokens.
pub(crate) fn compare_with_halves(
    (before, tokens_before): (&[LineRow], Vec<Option<Tokens>>),
    (current, tokens_now): (&[LineRow], Vec<Option<Tokens>>),
) -> (Vec<Compared>, Vec<Compared>) {
    let mut miner = TemplateMiner::default();
    let ids_before = mine_masked(&mut miner, before, tokens_before);
    let ids_now = mine_masked(&mut miner, current, tokens_now);
    let now = count(&miner, (before, &ids_before), (current, &ids_now));
    let half = before.len() / 2;
    let (newer, older) = before.split_at(half);
    let (ids_newer, ids_older) = ids_before.split_at(half);
    let halves = count(&miner, (older, ids_older), (newer, ids_newer));
    (now, halves)
}

/// Tokens of a template that name its event, for problem location: what
/// follows (an object dump, a list, headers) is data, whose shape follows
/// the request rather than the code path.
const EVENT_TOKENS: usize = 12;

/// `changes` merged per event: templates below WARN of one service,
/// severity and operation whose first [`EVENT_TOKENS`] tokens agree are
/// counted as one (shown as the commonest of them). A line printing the tickets of
/// another route, or a longer list, is then the same event as before —
/// not a new pattern with the old one vanished — while a changed message
/// or status early in the line still reads as a change.
pub(crate) fn by_event(changes: Vec<Compared>) -> Vec<Compared> {
    let mut merged: HashMap<(String, String, Option<String>, String), Compared> = HashMap::new();
    for c in changes {
        // A warning or error is kept whole: its text is the evidence.
        let tokens = if crate::evidence::is_warning_or_worse(&c.severity) {
            usize::MAX
        } else {
            EVENT_TOKENS
        };
        let event: Vec<&str> = c.template.split(' ').take(tokens).collect();
        let key = (
            c.service.clone(),
            c.severity.clone(),
            c.operation.clone(),
            event.join(" "),
        );
        match merged.get_mut(&key) {
            None => {
                merged.insert(key, c);
            }
            Some(m) => {
                if c.before + c.current > m.before + m.current {
                    m.template = c.template;
                    m.example = c.example;
                }
                m.before += c.before;
                m.current += c.current;
            }
        }
    }
    merged.into_values().collect()
}

/// The template id of each line (none for a line without a service,
/// severity or body).
fn mine(miner: &mut TemplateMiner, lines: &[LineRow]) -> Vec<Option<usize>> {
    lines
        .iter()
        .map(
            |line| match (&line.service, &line.severity_text, &line.body) {
                (Some(service), Some(severity), Some(body)) => {
                    Some(miner.add(&format!("{service}\u{1f}{severity}"), body))
                }
                _ => None,
            },
        )
        .collect()
}

/// The masked tokens of each line that [`mine_masked`] groups (none for a
/// line without a service, severity or body): the per-line work of
/// mining, which needs no miner and so runs as soon as a window's lines
/// arrive.
pub(crate) fn masked(lines: &[LineRow]) -> Vec<Option<Tokens>> {
    (lines.iter())
        .map(
            |line| match (&line.service, &line.severity_text, &line.body) {
                (Some(_), Some(_), Some(body)) => Some(Tokens::of(body)),
                _ => None,
            },
        )
        .collect()
}

/// [`mine`] of lines already [`masked`].
fn mine_masked(
    miner: &mut TemplateMiner,
    lines: &[LineRow],
    tokens: Vec<Option<Tokens>>,
) -> Vec<Option<usize>> {
    (lines.iter().zip(tokens))
        .map(
            |(line, tokens)| match (&line.service, &line.severity_text, tokens) {
                (Some(service), Some(severity), Some(tokens)) => {
                    Some(miner.add_tokens(&format!("{service}\u{1f}{severity}"), tokens))
                }
                _ => None,
            },
        )
        .collect()
}

/// Counts each (template, operation) in two windows of mined lines.
fn count(
    miner: &TemplateMiner,
    before: (&[LineRow], &[Option<usize>]),
    current: (&[LineRow], &[Option<usize>]),
) -> Vec<Compared> {
    let mut counts: HashMap<(usize, Option<String>), Compared> = HashMap::new();
    for (is_current, (lines, ids)) in [(false, before), (true, current)] {
        for (line, id) in lines.iter().zip(ids) {
            let (Some(id), Some(service), Some(severity), Some(body)) =
                (id, &line.service, &line.severity_text, &line.body)
            else {
                continue;
            };
            let operation = line.operation.clone().filter(|o| !o.is_empty());
            let key = (*id, operation.clone());
            let entry = counts.entry(key).or_insert_with(|| Compared {
                service: service.clone(),
                severity: severity.clone(),
                template: String::new(),
                operation,
                before: 0,
                current: 0,
                example: body.clone(),
            });
            if is_current {
                if entry.current == 0 {
                    entry.example = body.clone();
                }
                entry.current += 1;
            } else {
                entry.before += 1;
            }
        }
    }
    counts
        .into_iter()
        .map(|((id, _), mut c)| {
            c.template = miner.template(id);
            c
        })
        .collect()
}

/// Fixtures for the rules' unit tests (evidence, ranking).
#[cfg(test)]
impl Compared {
    /// One template's counts outside any operation, its example the template.
    pub(crate) fn fixture(
        service: &str,
        severity: &str,
        template: &str,
        before: u64,
        current: u64,
    ) -> Compared {
        Compared {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(service: &str, severity: &str, body: &str) -> LineRow {
        LineRow {
            service: Some(service.into()),
            severity_text: Some(severity.into()),
            body: Some(body.into()),
            operation: None,
            instance: None,
        }
    }

    /// Lesson 4 without the noise: the same event printing other data (a
    /// longer list, another route) is one event, not a new pattern beside
    /// a vanished one; a changed message early in the line stays a change.
    #[test]
    fn an_event_printing_other_data_is_the_same_event() {
        let event = |template: &str, before, current| Compared {
            service: "seat".into(),
            severity: "INFO".into(),
            template: template.into(),
            operation: Some("left".into()),
            before,
            current,
            example: template.into(),
        };
        let head = "<*> INFO SeatServiceImpl TraceID: <*> SpanID: <*> [getLeft][result] result is Response(status=<*>, msg=Success,";
        let changes = vec![
            event(
                &format!("{head} from=shanghai, to=suzhou), Ticket(seat=<*>,"),
                20,
                0,
            ),
            event(
                &format!("{head} from=nanjing, to=beijing), Ticket(seat=<*>, x, y"),
                0,
                25,
            ),
            event(
                "<*> INFO SeatServiceImpl TraceID: <*> SpanID: <*> [getLeft][result] result is Response(status=<*>, msg=Failed,",
                0,
                5,
            ),
        ];
        let mut errors = vec![
            event(&format!("{head} Ticket(seat=<*>,"), 3, 0),
            event(&format!("{head} Ticket(seat=<*>, x"), 0, 3),
        ];
        for e in &mut errors {
            e.severity = "ERROR".into();
        }
        assert_eq!(by_event(errors).len(), 2, "an error's text is kept whole");
        let mut events = by_event(changes);
        events.sort_by_key(|c| c.current);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!((events[0].before, events[0].current), (0, 5));
        assert_eq!((events[1].before, events[1].current), (20, 25));
        assert!(
            events[1].template.contains("nanjing"),
            "the commonest shown"
        );
    }

    #[test]
    fn counts_each_line_by_its_masked_form() {
        let mut counts = PatternCounts::default();
        counts.add("a", "INFO", "took 5ms");
        counts.add("a", "INFO", "took 7ms");
        assert_eq!(
            counts.get(&("a".into(), "INFO".into(), "took <*>".into())),
            2
        );
    }

    /// Mining once serves both comparisons: the incident against the
    /// baseline, and the baseline's older half against its newer half.
    #[test]
    fn the_baseline_halves_are_counted_from_the_same_mining() {
        // Newest first: the newer half logs "b", the older half "a".
        let before = vec![
            line("s", "INFO", "step b for user 1"),
            line("s", "INFO", "step b for user 2"),
            line("s", "INFO", "step a done"),
            line("s", "INFO", "step a done"),
        ];
        let current = vec![line("s", "INFO", "step b for user 3")];
        let (now, halves) =
            compare_with_halves((&before, masked(&before)), (&current, masked(&current)));
        let counts = |list: &[Compared]| {
            let mut v: Vec<(String, u64, u64)> = (list.iter())
                .map(|c| (c.template.clone(), c.before, c.current))
                .collect();
            v.sort();
            v
        };
        assert_eq!(counts(&now), counts(&compare(&before, &current)));
        assert_eq!(
            counts(&halves),
            [
                ("step a done".to_string(), 2, 0),
                ("step b for user <*>".to_string(), 0, 2)
            ]
        );
    }

    #[test]
    fn windows_share_templates_and_show_new_surging_and_vanished() {
        let before = vec![
            line("cart", "INFO", "cart loaded for user alice"),
            line("cart", "INFO", "cart loaded for user bob"),
            line("cart", "WARN", "cache miss for key k1"),
            line("pay", "INFO", "charged card 4242"),
        ];
        let mut current = vec![
            line("cart", "INFO", "cart loaded for user carol"),
            line("cart", "ERROR", "connection refused by redis"),
        ];
        for _ in 0..4 {
            current.push(line("pay", "INFO", "charged card 1111"));
        }
        let mut got = compare(&before, &current);
        got.sort_by(|a, b| a.template.cmp(&b.template));
        let summary: Vec<(&str, u64, u64, &str)> = got
            .iter()
            .map(|c| (c.template.as_str(), c.before, c.current, c.trend()))
            .collect();
        assert_eq!(
            summary,
            [
                ("cache miss for key <*>", 1, 0, "vanished"),
                ("cart loaded for user <*>", 2, 1, "steady"),
                ("charged card <*>", 1, 4, "surging"),
                ("connection refused by redis", 0, 1, "new"),
            ]
        );
        let new = got
            .iter()
            .find(|c| c.current == 1 && c.before == 0)
            .unwrap();
        assert_eq!(new.example, "connection refused by redis");
    }
}
