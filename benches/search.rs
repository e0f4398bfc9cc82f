//! Search benchmark: loads ≥ 20 M generated log lines into `loupe serve`
//! (over OTLP/gRPC from `loupe gen`), lets compaction merge them, then
//! times three questions through the search API — (a) a rare term with
//! ≤ 100 hits, (b) the newest 100 lines with a common term, (c) a count
//! and histogram over a day for that term — against the same questions as
//! LIKE scans over the same Parquet files in DuckDB (PyPI `duckdb`), and
//! reports bytes on disk per raw log byte, index included.
//!
//! Run: `cargo bench --bench search` (env: `LINES`, default 20000000;
//! `RUNS`, default 5; `KEEP_DATA=1` reuses a loaded data dir in
//! target/bench-search between runs).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::{Load, Server, env, median};
use serde_json::Value;

fn main() {
    let lines = env("LINES", 20_000_000);
    let runs = env("RUNS", 5) as usize;
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-search");
    let client = common::client();
    if std::env::var("KEEP_DATA").is_err() {
        let _ = std::fs::remove_dir_all(&data);
    }

    // Load (skipped when a kept data dir already holds enough).
    let server = Server::start(&data, &["--compaction-interval", "1h"]);
    let reports = server.load(
        &client,
        Load {
            table: "logs",
            what: "log lines",
            target: lines,
            signals: "logs",
            rate: 40_000,
            // About 3 log lines per simulated request.
            rows_per_trace: 3,
        },
    );
    let ingested_bytes: f64 = reports
        .iter()
        .map(|r| r["bytes"].as_f64().unwrap_or(0.0))
        .sum();
    server.stop();

    // Compact: restart with eager compaction and wait until it settles.
    let server = Server::start_compacting(&data);
    let compact_started = Instant::now();
    let live_files = server.settle_compaction(&client, "logs");
    let compaction_secs = compact_started.elapsed().as_secs_f64();

    let rare_body = server.sql(
        &client,
        "SELECT body FROM logs WHERE body LIKE 'sent order confirmation o-%' ORDER BY body LIMIT 1",
    );
    let rare = rare_body
        .as_str()
        .and_then(|b| b.split_whitespace().find(|w| w.starts_with("o-")))
        .expect("an order id")
        .to_string();
    let common = "charged";
    let total_lines = server
        .sql(&client, "SELECT count(*) FROM logs")
        .as_u64()
        .unwrap_or(0);
    let raw_bytes = server
        .sql(
            &client,
            "SELECT sum(CAST(length(body) AS BIGINT)) FROM logs",
        )
        .as_f64()
        .unwrap_or(1.0);

    let time_api = |path: &str| -> (f64, Value) {
        let mut times = Vec::new();
        let mut body = Value::Null;
        for _ in 0..runs {
            let started = Instant::now();
            body = server.get(&client, path);
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        (median(times), body)
    };
    let quoted = format!("%22{rare}%22");
    let (rare_ms, rare_body) = time_api(&format!(
        "/api/v1/logs/search?q={quoted}&start=now-1d&limit=100"
    ));
    let (recent_ms, recent_body) = time_api(&format!(
        "/api/v1/logs/search?q={common}&start=now-1d&limit=100"
    ));
    let (count_ms, count_body) = time_api(&format!(
        "/api/v1/logs/search?q={common}&start=now-1d&limit=0"
    ));
    server.stop();

    // DuckDB reads exactly the files the catalog lists (replaced files may
    // still sit in the directory during their grace period).
    let list_path = data.join("duckdb-files.txt");
    let list: Vec<String> = live_files
        .iter()
        .map(|p| data.join("splits").join(p).display().to_string())
        .collect();
    std::fs::write(&list_path, list.join("\n")).expect("file list");
    let peer = Command::new("python3")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/duckdb_compare.py"))
        .arg(&list_path)
        .args([&rare, common, &runs.to_string()])
        .output()
        .expect("python3 with duckdb (pip install duckdb)");
    let duck: Value = serde_json::from_slice(&peer.stdout)
        .unwrap_or_else(|e| panic!("duckdb: {e}: {}", String::from_utf8_lossy(&peer.stderr)));

    let (mut parquet_bytes, mut index_bytes) = (0u64, 0u64);
    for p in &live_files {
        let size = |rel: &str| {
            std::fs::metadata(data.join("splits").join(rel))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        parquet_bytes += size(p);
        index_bytes += size(&p.replace(".parquet", ".idx"));
    }
    println!("search benchmark: {total_lines} log lines, {runs} runs per query, medians");
    println!("compaction settled after {compaction_secs:.0}s");
    println!(
        "{:<44} {:>12} {:>12} {:>8} {:>10}",
        "query", "loupe ms", "duckdb ms", "ratio", "hits"
    );
    let row = |name: &str, ours: f64, key: &str, hits: String| {
        let theirs = duck[key]["median_ms"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{name:<44} {ours:>12.1} {theirs:>12.1} {:>7.1}x {hits:>10}",
            theirs / ours
        );
    };
    row(
        &format!("(a) rare term \"{rare}\""),
        rare_ms,
        "rare",
        format!("{}/{}", rare_body["total"], duck["rare"]["rows"]),
    );
    row(
        &format!("(b) '{common}' ORDER BY time DESC LIMIT 100"),
        recent_ms,
        "recent",
        format!(
            "{}/{}",
            recent_body["hits"].as_array().map_or(0, Vec::len),
            duck["recent"]["rows"]
        ),
    );
    row(
        &format!("(c) count + histogram of '{common}' over 1 day"),
        count_ms,
        "count_day",
        format!("{}/{}", count_body["total"], duck["count_day"]["rows"]),
    );
    println!(
        "on disk: parquet {:.1} MB + index {:.1} MB for {:.1} MB of raw log text: {:.3} bytes per raw byte ({:.3} without the index); {:.3} per ingested OTLP byte",
        parquet_bytes as f64 / 1e6,
        index_bytes as f64 / 1e6,
        raw_bytes / 1e6,
        (parquet_bytes + index_bytes) as f64 / raw_bytes,
        parquet_bytes as f64 / raw_bytes,
        (parquet_bytes + index_bytes) as f64 / ingested_bytes.max(1.0),
    );
}
