//! The questions asked of loaded data, each answered by Loupe over HTTP and
//! by the peers over the same Parquet files: log search (vs DuckDB LIKE and
//! tantivy-py), SQL analytics over spans (vs DuckDB, chDB, DataFusion-python),
//! trace by id, and `/problems` over an incident.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::peers::{NOT_INSTALLED, Peers, brief, same_rows};
use crate::report::{Better, Row, median};
use crate::server::Loupe;

/// The SQL questions, in the dialect all four engines share.
pub const SQL: [(&str, &str); 5] = [
    (
        "RED per service",
        "SELECT service, count(*) AS calls, sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors, \
         avg(duration_ns) AS avg_ns, max(duration_ns) AS max_ns \
         FROM spans WHERE kind = 'server' GROUP BY service ORDER BY service",
    ),
    (
        "top-10 slowest operations",
        "SELECT service, name, avg(duration_ns) AS avg_ns, count(*) AS calls FROM spans \
         GROUP BY service, name ORDER BY avg_ns DESC, service, name LIMIT 10",
    ),
    (
        "count distinct traces",
        "SELECT count(DISTINCT trace_id) FROM spans",
    ),
    (
        "attribute filter",
        "SELECT service, count(*) AS calls FROM spans \
         WHERE attributes['http.route'] = '/api/checkout' GROUP BY service ORDER BY service",
    ),
    (
        "erroring spans joined to their logs",
        "SELECT s.service, count(*) AS lines FROM spans s JOIN logs l \
         ON l.trace_id = s.trace_id AND l.span_id = s.span_id \
         WHERE s.status_code = 'error' GROUP BY s.service ORDER BY s.service",
    ),
];

/// Median milliseconds of `runs` calls (after one warm-up) and the last answer.
fn timed(runs: usize, mut call: impl FnMut() -> Result<Value>) -> Result<(f64, Value)> {
    let mut answer = call()?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        answer = call()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median(times), answer))
}

/// A row for Loupe's `ms` against `peer`'s answer in `peer_out[engine][key]`
/// (`{"ms", "rows"|"hits"}` or `{"error"}`), checking the answers agree.
fn versus(
    name: &str,
    ms: f64,
    engine: &str,
    peer: Option<&Value>,
    ours: &Value,
    field: &str,
) -> Row {
    let row = Row::new(name, "ms", ms, Better::Lower);
    let Some(peer) = peer else {
        return row.vs(engine, None, NOT_INSTALLED);
    };
    if let Some(e) = peer["error"].as_str() {
        return row.vs(engine, None, e.chars().take(80).collect::<String>());
    }
    let theirs = &peer[field];
    let check = if same_rows(ours, theirs) {
        "same".to_string()
    } else {
        format!("DIFFERENT: loupe {} vs {}", brief(ours), brief(theirs))
    };
    row.vs(engine, peer["ms"].as_f64(), check)
}

fn engine_out<'a>(out: &'a Result<Value>, engine: &str) -> Option<&'a Value> {
    let v = out.as_ref().ok()?.get(engine)?;
    Some(v)
}

/// SQL analytics and trace by id.
pub fn sql(server: &Loupe, peers: &Peers, work: &Path, runs: usize) -> Result<Vec<Row>> {
    let trace_id = server
        .sql_value(
            "SELECT trace_id FROM spans WHERE parent_span_id IS NULL ORDER BY trace_id LIMIT 1",
        )?
        .as_str()
        .context("no root span")?
        .to_string();
    let mut queries = serde_json::Map::new();
    for (name, sql) in SQL {
        queries.insert(name.into(), json!(sql));
    }
    queries.insert(
        "trace by id".into(),
        json!(format!(
            "SELECT count(*) FROM spans WHERE trace_id = '{trace_id}'"
        )),
    );
    let queries_file = work.join("queries.json");
    std::fs::write(&queries_file, Value::Object(queries).to_string())?;
    let out = peers.run(
        "sql.py",
        &[
            work.join("spans").as_os_str(),
            work.join("logs").as_os_str(),
            queries_file.as_os_str(),
            runs.to_string().as_ref(),
        ],
        work,
    );
    if let Err(e) = &out {
        eprintln!("SQL peers: {e:#}");
    }
    let mut rows = Vec::new();
    for (name, sql) in SQL {
        let (ms, answer) = timed(runs, || server.sql(sql))?;
        let ours = answer["rows"].clone();
        for engine in ["duckdb", "chdb", "datafusion-python"] {
            let peer = engine_out(&out, engine).map(|e| e.get("error").map_or(&e[name], |_| e));
            rows.push(versus(
                &format!("SQL {name}"),
                ms,
                engine,
                peer,
                &ours,
                "rows",
            ));
        }
    }
    let (ms, trace) = timed(runs, || server.get(&format!("/api/v1/traces/{trace_id}")))?;
    let spans = json!([[trace["span_count"].clone()]]);
    let peer = engine_out(&out, "duckdb").map(|e| e.get("error").map_or(&e["trace by id"], |_| e));
    rows.push(versus(
        "trace by id (API: tree, critical path, logs; DuckDB: its spans)",
        ms,
        "duckdb",
        peer,
        &spans,
        "rows",
    ));
    Ok(rows)
}

/// Search: a rare phrase, the newest 100 lines with a common term, and a
/// count + histogram of that term over a day.
pub fn search(server: &Loupe, peers: &Peers, work: &Path, runs: usize) -> Result<Vec<Row>> {
    let line = server.sql_value(
        "SELECT body FROM logs WHERE body LIKE 'sent order confirmation o-%' ORDER BY body LIMIT 1",
    )?;
    let rare = line
        .as_str()
        .and_then(|b| b.split_whitespace().find(|w| w.starts_with("o-")))
        .context("no order confirmation line to pick a rare term from")?
        .to_string();
    let common = "charged";
    let index_dir = work.join("tantivy");
    std::fs::create_dir_all(&index_dir)?;
    let out = peers.run(
        "search.py",
        &[
            work.join("logs").as_os_str(),
            rare.as_ref(),
            common.as_ref(),
            runs.to_string().as_ref(),
            index_dir.as_os_str(),
        ],
        work,
    );
    if let Err(e) = &out {
        eprintln!("search peers: {e:#}");
    }
    let _ = std::fs::remove_dir_all(&index_dir);
    let api = |q: &str, limit: u32| {
        format!(
            "/api/v1/logs/search?q={}&start=now-1d&limit={limit}",
            crate::http::encode(q)
        )
    };
    let questions = [
        (
            "rare",
            format!("search: rare phrase \"{rare}\""),
            api(&format!("\"{rare}\""), 100),
        ),
        (
            "recent",
            format!("search: newest 100 lines with '{common}'"),
            api(common, 100),
        ),
        (
            "count",
            format!("search: count + histogram of '{common}' over a day"),
            api(common, 0),
        ),
    ];
    let mut rows = Vec::new();
    for (key, name, path) in questions {
        let (ms, answer) = timed(runs, || server.get(&path))?;
        let hits = if key == "recent" {
            json!(answer["hits"].as_array().map_or(0, Vec::len))
        } else {
            answer["total"].clone()
        };
        for engine in ["duckdb", "tantivy-py"] {
            let peer = engine_out(&out, engine).map(|e| e.get("error").map_or(&e[key], |_| e));
            rows.push(versus(&name, ms, engine, peer, &hits, "hits"));
        }
    }
    Ok(rows)
}

/// `/api/v1/problems` over an incident `loupe gen` injects into `server`
/// on top of the data already there: latency and whether a top-3 suspect
/// names the injected cause.
pub fn problems(server: &Loupe, work: &Path, secs: u64, runs: usize) -> Result<Vec<Row>> {
    let truth_path = work.join("truth.json");
    let report = server.generate(&[
        "--scenario".to_string(),
        "db-slow".into(),
        "--rate".into(),
        "150".into(),
        "--duration".into(),
        format!("{secs}s"),
        "--fault-at".into(),
        format!("{}s", secs / 2),
        "--truth".into(),
        truth_path.display().to_string(),
    ])?;
    anyhow::ensure!(report["errors"] == 0, "incident load had errors: {report}");
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(&truth_path)?)?;
    let fault = truth["fault"]["start_unix_nano"]
        .as_i64()
        .context("fault start")?;
    let end = fault + secs as i64 / 2 * 1_000_000_000;
    let path = format!("/api/v1/problems?start={fault}&end={end}");
    let (ms, answer) = timed(runs, || server.get(&path))?;
    let cause = &truth["fault"]["cause"]["server.address"];
    let named = answer["suspects"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .take(3)
        .any(|s| &s["subject"]["server.address"] == cause);
    Ok(vec![
        Row::new(
            format!("/problems over a {}s incident", secs / 2),
            "ms",
            ms,
            Better::Lower,
        ),
        Row::new(
            "/problems: a top-3 suspect names the injected cause",
            "yes=1",
            f64::from(u8::from(named)),
            Better::Higher,
        ),
    ])
}
