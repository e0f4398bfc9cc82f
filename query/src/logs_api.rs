//! Log search over HTTP: `GET /api/v1/logs/search` (hits newest first, a
//! total and a histogram over the range) and `GET /api/v1/logs/context`
//! (the lines around one line of the same service and instance), and
//! `GET /api/v1/logs/tail` (new matching lines as server-sent events).
//!
//! This stays with the engine rather than the analysis APIs: a search is
//! answered from the split indexes and reads its hits through a row
//! selection of the `logs` table provider — engine internals, not SQL.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Json;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::scalar::ScalarValue;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::QueryEngine;
use crate::error::{QueryError, from_datafusion};
use crate::internal_sql::objects;
use crate::time_param;

const HIT_COLUMNS: [&str; 9] = [
    "time",
    "service",
    "severity_text",
    "severity_number",
    "body",
    "trace_id",
    "span_id",
    "attributes",
    "resource_attributes",
];
const MAX_LIMIT: usize = 10_000;
const MAX_CONTEXT: usize = 200;

/// The log search and context routes.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/logs/search", get(search_logs))
        .route("/api/v1/logs/context", get(context))
        .route("/api/v1/logs/tail", get(tail))
        .with_state(engine)
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    q: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
    service: Option<String>,
}

fn ts(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

fn hit_columns() -> Vec<Expr> {
    HIT_COLUMNS.iter().map(|c| col(*c)).collect()
}

async fn search_logs(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<SearchParams>,
) -> Result<Json<Value>, QueryError> {
    let timeout = engine.config().timeout;
    tokio::time::timeout(timeout, search_indexes(&engine, p))
        .await
        .unwrap_or(Err(QueryError::Timeout(timeout)))
        .map(Json)
}

/// The search of a request: its `q` (everything when empty), restricted
/// to one service when asked.
fn index_query(q: Option<&str>, service: Option<&str>) -> Result<loupe_search::Ast, QueryError> {
    let q = match q.map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => loupe_storage::log_index::parse_query(q).map_err(storage_error)?,
        None => loupe_search::Ast::All,
    };
    let service = service.map(|s| loupe_search::Ast::field_is("service", s));
    Ok(loupe_search::Ast::and([q].into_iter().chain(service)))
}

fn storage_error(e: loupe_storage::StorageError) -> QueryError {
    match e {
        loupe_storage::StorageError::InvalidSearch(m) => {
            QueryError::Invalid(format!("invalid search query: {m}"))
        }
        other => QueryError::Internal(other.to_string()),
    }
}

/// Answers a search from the indexes alone — the total, the histogram
/// and which rows are the newest hits — then reads just those rows.
async fn search_indexes(engine: &QueryEngine, p: SearchParams) -> Result<Value, QueryError> {
    let started = Instant::now();
    let (start, end) = time_param::window(p.start.as_deref(), p.end.as_deref(), "now-1h")?;
    let limit = p.limit.unwrap_or(100).min(MAX_LIMIT);
    let query = index_query(p.q.as_deref(), p.service.as_deref())?;
    let width = time_param::bucket_width(end - start);

    let storage = engine.storage().clone();
    let snapshot = storage.snapshot(loupe_storage::Signal::Logs);
    let splits: Vec<_> = snapshot
        .splits
        .iter()
        .filter(|s| s.overlaps(start, end))
        .cloned()
        .collect();
    let mut hits = Hits {
        width,
        limit,
        ..Hits::default()
    };
    let query = Arc::new(query);
    // Matching is CPU work, done on the blocking pool: one task per split
    // and one for all memtable batches, rather than `block_in_place` per
    // index, which hands the async worker's role to another thread each
    // time — under load that spread allocations over dozens of threads,
    // each keeping memory of its own, and took resident memory past the
    // memory budget.
    for (i, split) in splits.iter().enumerate() {
        let index = storage.split_index(split).await.map_err(storage_error)?;
        let query = query.clone();
        hits = blocking(move || {
            index
                .for_each_match(&query, start, end, |t, row| hits.note(t, i, row))
                .map(|()| hits)
        })
        .await?;
    }
    // Batches outside the window are not indexed at all (under load a
    // memtable holds hundreds, most older than a recent window).
    let in_window: Vec<(usize, loupe_storage::MemBatch)> = snapshot
        .batches
        .iter()
        .enumerate()
        .filter(|(_, mem)| mem.overlaps(start, end))
        .map(|(j, mem)| (splits.len() + j, mem.clone()))
        .collect();
    if !in_window.is_empty() {
        let query = query.clone();
        hits = blocking(move || {
            for (source, mem) in in_window {
                mem.log_index()?
                    .for_each_match(&query, start, end, |t, row| hits.note(t, source, row))?;
            }
            Ok(hits)
        })
        .await?;
    }
    let Hits {
        mut total,
        mut counts,
        newest,
        ..
    } = hits;
    // Other ingest nodes' unflushed lines are in no index here: a query
    // read on those nodes counts them per bucket (the newest are read
    // with this node's hits below).
    let peers = engine
        .reads_peers()
        .then(|| Arc::new(engine.peer_logs(&snapshot)));
    let theirs = peer_conditions(p.q.as_deref(), p.service.as_deref(), start, end);
    let mut partial = false;
    if let Some(peers) = &peers {
        let out = engine
            .query(async |ctx| {
                ctx.register_table("peer_logs", peers.clone())
                    .map_err(from_datafusion)?;
                // Times are never negative, so this is `div_euclid`'s bucket.
                let bucket = (cast(col("time"), DataType::Int64) / lit(width)) * lit(width);
                ctx.table("peer_logs")
                    .await
                    .and_then(|df| df.filter(theirs.clone()))
                    .and_then(|df| df.aggregate(vec![bucket], vec![count(lit(1))]))
                    .map_err(from_datafusion)
            })
            .await?;
        partial |= out.partial;
        for batch in &out.batches {
            let (buckets, n) = (batch.column(0), batch.column(1));
            let (Some(buckets), Some(n)) = (
                buckets.as_primitive_opt::<Int64Type>(),
                n.as_primitive_opt::<Int64Type>(),
            ) else {
                return Err(QueryError::Internal("peer counts: not integers".into()));
            };
            for (bucket, n) in buckets.iter().zip(n.iter()) {
                if let (Some(bucket), Some(n)) = (bucket, n) {
                    total += n as u64;
                    *counts.entry(bucket).or_default() += n as u64;
                }
            }
        }
    }

    let mut by_source: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for Reverse((_, source, row)) in newest {
        by_source.entry(source).or_default().push(row);
    }
    let mut selection = crate::table::Selection::default();
    for (source, mut rows) in by_source {
        rows.sort_unstable();
        if let Some(split) = splits.get(source) {
            selection.splits.push((split.clone(), rows));
        } else if let Some(mem) = snapshot.batches.get(source - splits.len()) {
            let indices = datafusion::arrow::array::UInt32Array::from(rows);
            let taken = datafusion::arrow::compute::take_record_batch(&mem.batch, &indices)
                .map_err(|e| QueryError::Internal(e.to_string()))?;
            selection.batches.push(taken);
        }
    }
    let table = Arc::new(engine.selected_logs(selection));
    let hits = engine
        .query(async |ctx| {
            ctx.register_table("hits", table).map_err(from_datafusion)?;
            let mut hits = ctx
                .table("hits")
                .await
                .and_then(|df| df.select(hit_columns()))
                .map_err(from_datafusion)?;
            if let Some(peers) = peers {
                ctx.register_table("peer_logs", peers)
                    .map_err(from_datafusion)?;
                let newest_of_peers = ctx
                    .table("peer_logs")
                    .await
                    .and_then(|df| df.filter(theirs))
                    .and_then(|df| df.select(hit_columns()))
                    .and_then(|df| df.sort(vec![col("time").sort(false, true)]))
                    .and_then(|df| df.limit(0, Some(limit)))
                    .map_err(from_datafusion)?;
                hits = hits.union(newest_of_peers).map_err(from_datafusion)?;
            }
            hits.sort(vec![col("time").sort(false, true)])
                .and_then(|df| df.limit(0, Some(limit)))
                .map_err(from_datafusion)
        })
        .await?;
    partial |= hits.partial;

    let first = start.div_euclid(width) * width;
    let mut histogram = Vec::new();
    let mut bucket = Some(first);
    // The window is clamped, so this is at most ~121 buckets; the checked
    // step and the cap keep it so whatever the window.
    while let Some(b) = bucket.filter(|b| *b <= end && histogram.len() <= 240) {
        let start_time = chrono::DateTime::from_timestamp_nanos(b)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        histogram.push(json!({"start": start_time, "count": counts.get(&b).copied().unwrap_or(0)}));
        bucket = b.checked_add(width);
    }
    Ok(json!({
        "total": total,
        "hits": objects(&hits)?,
        "histogram": histogram,
        "bucket_ms": width as f64 / 1e6,
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
        "partial": partial,
    }))
}

/// The request's search as conditions on the `logs` table, for the rows
/// other nodes read: `match_all` of its `q`, its service, its window.
fn peer_conditions(q: Option<&str>, service: Option<&str>, start: i64, end: i64) -> Expr {
    let mut all = col("time").gt_eq(ts(start)).and(col("time").lt_eq(ts(end)));
    if let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) {
        all = all.and(Arc::new(crate::search::match_all_udf()).call(vec![lit(q)]));
    }
    if let Some(service) = service {
        all = all.and(col("service").eq(lit(service)));
    }
    all
}

/// What a search has found so far: the total, the count per histogram
/// bucket and the newest `limit` hits.
#[derive(Default)]
struct Hits {
    width: i64,
    limit: usize,
    total: u64,
    counts: BTreeMap<i64, u64>,
    /// Min-heap of the newest `limit` hits: (time, source, row).
    newest: BinaryHeap<Reverse<(i64, usize, u32)>>,
}

impl Hits {
    fn note(&mut self, t: i64, source: usize, row: u32) {
        self.total += 1;
        *self
            .counts
            .entry(t.div_euclid(self.width) * self.width)
            .or_default() += 1;
        if self.limit == 0 {
            return;
        }
        if self.newest.len() < self.limit {
            self.newest.push(Reverse((t, source, row)));
        } else if self
            .newest
            .peek()
            .is_some_and(|Reverse((oldest, _, _))| t > *oldest)
        {
            self.newest.pop();
            self.newest.push(Reverse((t, source, row)));
        }
    }
}

/// Runs index work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> loupe_storage::Result<T> + Send + 'static,
) -> Result<T, QueryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| QueryError::Internal(format!("search task: {e}")))?
        .map_err(storage_error)
}

#[derive(Debug, Deserialize)]
struct ContextParams {
    service: String,
    /// The line's time (RFC 3339 or ns).
    time: String,
    /// `service.instance.id`; all instances when absent.
    instance: Option<String>,
    before: Option<usize>,
    after: Option<usize>,
}

async fn context(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<ContextParams>,
) -> Result<Json<Value>, QueryError> {
    let at = time_param::parse(&p.time, loupe_base::clock::now_nanos())?;
    let (before, after) = (
        p.before.unwrap_or(10).min(MAX_CONTEXT),
        p.after.unwrap_or(10).min(MAX_CONTEXT),
    );
    let side = async |cmp: Expr, ascending: bool, n: usize| {
        let (service, instance) = (p.service.clone(), p.instance.clone());
        engine
            .query(async move |ctx| {
                let mut df = ctx
                    .table("logs")
                    .await
                    .and_then(|df| df.filter(col("service").eq(lit(service))))
                    .and_then(|df| df.filter(cmp))
                    .map_err(from_datafusion)?;
                if let Some(instance) = instance {
                    df = df
                        .filter(col(loupe_storage::INSTANCE).eq(lit(instance)))
                        .map_err(from_datafusion)?;
                }
                df.select(hit_columns())
                    .and_then(|df| df.sort(vec![col("time").sort(ascending, true)]))
                    .and_then(|df| df.limit(0, Some(n)))
                    .map_err(from_datafusion)
            })
            .await
    };
    let mut earlier = objects(&side(col("time").lt(ts(at)), false, before).await?)?;
    earlier.reverse();
    let lines = objects(&side(col("time").eq(ts(at)), true, MAX_CONTEXT).await?)?;
    let later = objects(&side(col("time").gt(ts(at)), true, after).await?)?;
    if lines.is_empty() {
        return Err(QueryError::Invalid(format!(
            "no log line of service {:?} at {}",
            p.service, p.time
        )));
    }
    Ok(Json(
        json!({"before": earlier, "lines": lines, "after": later}),
    ))
}

#[derive(Debug, Deserialize)]
struct TailParams {
    q: Option<String>,
    service: Option<String>,
}

/// How far back each tail poll looks again, for lines that arrive late
/// (SDKs export in batches); lines already sent are skipped.
const TAIL_LAG_NS: i64 = 10_000_000_000;
const TAIL_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Server-sent events: every second, a `lines` event with the lines that
/// matched `q` (and `service`) since the stream opened and were not sent
/// yet, oldest first (at most 500 per event); an invalid query is a 400
/// before the stream starts.
async fn tail(
    State(engine): State<Arc<QueryEngine>>,
    Query(p): Query<TailParams>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>>, QueryError> {
    use std::collections::HashMap;
    use std::hash::{DefaultHasher, Hash, Hasher};

    index_query(p.q.as_deref(), p.service.as_deref())?;
    let opened = loupe_base::clock::now_nanos();
    // Sent lines by key (time, service, body) with their time.
    let sent: HashMap<u64, i64> = HashMap::new();
    let stream =
        futures::stream::unfold((engine, p, sent), move |(engine, p, mut sent)| async move {
            tokio::time::sleep(TAIL_POLL).await;
            let now = loupe_base::clock::now_nanos();
            let from = (now - TAIL_LAG_NS).max(opened);
            let search = SearchParams {
                q: p.q.clone(),
                start: Some(from.to_string()),
                end: Some(now.to_string()),
                limit: Some(500),
                service: p.service.clone(),
            };
            let event = match search_indexes(&engine, search).await {
                Ok(v) => {
                    let mut fresh = Vec::new();
                    for hit in v["hits"].as_array().into_iter().flatten() {
                        let time = hit["time"]
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .and_then(|t| t.timestamp_nanos_opt())
                            .unwrap_or(now);
                        let mut h = DefaultHasher::new();
                        (time, hit["service"].as_str(), hit["body"].as_str()).hash(&mut h);
                        if sent.insert(h.finish(), time).is_none() {
                            fresh.push(hit.clone());
                        }
                    }
                    sent.retain(|_, t| *t >= from);
                    fresh.reverse();
                    Event::default()
                        .event("lines")
                        .json_data(fresh)
                        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
                }
                Err(e) => Event::default().event("error").data(e.to_string()),
            };
            Some((Ok(event), (engine, p, sent)))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
