//! Trace lookup benchmark: loads ≥ 10 M generated spans into `loupe serve`,
//! lets compaction settle, then fetches random traces by id through
//! `GET /api/v1/traces/{id}` (tree, critical path and logs) and reports the
//! median latency.
//!
//! Run: `cargo bench --bench trace_lookup` (env: `SPANS`, default 10000000;
//! `LOOKUPS`, default 50; `DATA_DIR` to keep the data for the next run;
//! `WITH_LOGS=1` to store the traces' logs too, so the trace view's log
//! lookup has data to search).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use common::{Load, Server, client, env, median};

fn main() {
    let spans = env("SPANS", 10_000_000);
    let signals = if env("WITH_LOGS", 0) == 1 {
        "traces,logs"
    } else {
        "traces"
    };
    let lookups = env("LOOKUPS", 50) as usize;
    // DATA_DIR keeps the loaded spans for the next run (which then skips
    // loading); by default they go to a temporary directory.
    let temp = tempfile::tempdir().expect("temp dir");
    let data = std::env::var_os("DATA_DIR").map_or_else(|| temp.path().to_path_buf(), Into::into);
    std::fs::create_dir_all(&data).expect("data dir");
    let http = client();

    let server = Server::start(&data, &["--compaction-interval", "1h"]);
    let reports = server.load(
        &http,
        Load {
            table: "spans",
            what: "spans",
            target: spans,
            signals,
            rate: 10_000,
            rows_per_trace: 6,
        },
    );
    for report in &reports {
        assert_eq!(report["errors"], 0, "{report}");
    }
    server.stop();
    let server = Server::start_compacting(&data);
    let files = server.settle_compaction(&http, "spans").len();

    let ids: Vec<String> = {
        let body: serde_json::Value = http
            .post(format!("http://{}/api/v1/sql", server.http))
            .json(&serde_json::json!({"sql": format!(
                "SELECT trace_id FROM spans WHERE parent_span_id IS NULL ORDER BY random() LIMIT {lookups}"
            )}))
            .send()
            .and_then(|r| r.json())
            .expect("sample trace ids");
        body["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r[0].as_str().map(String::from))
            .collect()
    };
    let mut api_ms = Vec::new();
    let mut span_counts = Vec::new();
    let mut log_counts = Vec::new();
    for id in &ids {
        let t = Instant::now();
        let trace = server.get(&http, &format!("/api/v1/traces/{id}"));
        api_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        span_counts.push(trace["span_count"].as_f64().unwrap_or(0.0));
        log_counts.push(trace["logs"].as_array().map_or(0.0, |l| l.len() as f64));
    }
    let total = server.sql(&http, "SELECT count(*) FROM spans");
    let logs = server.sql(&http, "SELECT count(*) FROM logs");
    server.stop();
    println!(
        "trace lookup: {total} spans in {files} files and {logs} logs, {} lookups of random traces (median {:.0} logs each)",
        ids.len(),
        median(log_counts)
    );
    println!(
        "GET /api/v1/traces/{{id}}: median {:.1} ms, p90 {:.1} ms (median {:.0} spans per trace)",
        median(api_ms.clone()),
        {
            let mut v = api_ms.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            v[(v.len() * 9 / 10).min(v.len() - 1)]
        },
        median(span_counts)
    );
}
