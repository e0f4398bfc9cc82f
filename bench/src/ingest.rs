//! Ingest at saturation (a fresh server per workload, `loupe gen` over
//! OTLP/gRPC from a separate process, 16 requests in flight) and freshness
//! (ack → visible in search and in SQL while a generator keeps loading).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::Scale;
use crate::report::{Better, Row, percentile};
use crate::server::{Loupe, dir_bytes, now_ns, send_logs};

struct Workload {
    name: &'static str,
    signals: &'static str,
    /// Simulated requests per second: more than one server core absorbs.
    rate: u64,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "logs",
        signals: "logs",
        rate: 20_000,
    },
    Workload {
        name: "spans",
        signals: "traces",
        rate: 10_000,
    },
    Workload {
        name: "all signals",
        signals: "all",
        rate: 8_000,
    },
];

/// Goals of issue #15 (ratio < 1: met).
const LOG_MB_PER_CPU_S_GOAL: f64 = 50.0;
const SPANS_PER_CPU_S_GOAL: f64 = 200_000.0;
const PEAK_RSS_GOAL_MIB: f64 = 1024.0;

pub fn ingest(bin: &Path, scale: &Scale, seed: u64) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for w in &WORKLOADS {
        let data = tempfile::tempdir()?;
        let server = Loupe::start(bin, data.path(), &[])?;
        let cpu_before = server.cpu_secs();
        let report = server.generate(&[
            "--signals",
            w.signals,
            "--rate",
            &w.rate.to_string(),
            "--duration",
            &format!("{}s", scale.ingest_secs),
            "--concurrency",
            "16",
            "--batch",
            "50",
            "--seed",
            &seed.to_string(),
        ])?;
        let cpu = (server.cpu_secs() - cpu_before).max(1e-9);
        let rss = server.peak_rss_mib();
        server.stop()?;
        let n = |k: &str| report[k].as_f64().unwrap_or(0.0);
        let records = n("spans") + n("logs") + n("data_points");
        let bytes = n("bytes");
        let name = |what: &str| format!("ingest {}: {what}", w.name);
        let mut records_row = Row::new(
            name("records per server CPU-s"),
            "records/CPU-s",
            records / cpu,
            Better::Higher,
        );
        if w.name == "spans" {
            records_row = records_row.vs("goal", Some(SPANS_PER_CPU_S_GOAL), "");
        }
        rows.push(records_row);
        let mut mb_row = Row::new(
            name("OTLP protobuf MB per server CPU-s"),
            "MB/CPU-s",
            bytes / 1e6 / cpu,
            Better::Higher,
        );
        if w.name == "logs" {
            mb_row = mb_row.vs("goal", Some(LOG_MB_PER_CPU_S_GOAL), "");
        }
        rows.push(mb_row);
        rows.push(Row::new(
            name("records per wall second"),
            "records/s",
            records / n("elapsed_secs").max(1e-9),
            Better::Higher,
        ));
        for (p, key) in [("p50", "p50_ms"), ("p99", "p99_ms")] {
            rows.push(Row::new(
                name(&format!("ack latency {p}")),
                "ms",
                report["ack_latency"][key].as_f64().unwrap_or(f64::NAN),
                Better::Lower,
            ));
        }
        rows.push(Row::new(name("peak RSS"), "MiB", rss, Better::Lower).vs(
            "goal",
            Some(PEAK_RSS_GOAL_MIB),
            "",
        ));
        let errors = report["errors"].as_u64().unwrap_or(0);
        if errors > 0 {
            eprintln!(
                "ingest {}: {errors} export errors (overload answers count here)",
                w.name
            );
        }
        if w.name == "logs" {
            // After the clean stop everything is in Parquet + index files.
            let stored = dir_bytes(&data.path().join("splits")).max(1);
            rows.push(Row::new(
                "storage generated logs: bytes on disk per OTLP protobuf byte (index included)",
                "bytes/byte",
                stored as f64 / bytes.max(1.0),
                Better::Lower,
            ));
        }
        eprintln!(
            "ingest {}: {records:.0} records, {:.1} MB in {:.1}s, server {cpu:.1} CPU-s, peak RSS {rss:.0} MiB",
            w.name,
            bytes / 1e6,
            n("elapsed_secs")
        );
    }
    Ok(rows)
}

/// While `loupe gen` loads `server` (run by the caller on another thread),
/// sends one uniquely worded log line at a time over OTLP/HTTP and polls
/// until the search API, then SQL, return it. Stops at `probes` or when
/// `loading` says the load is over.
pub fn freshness(server: &Loupe, probes: usize, loading: &dyn Fn() -> bool) -> Result<Vec<Row>> {
    let (mut search_ms, mut sql_ms) = (Vec::new(), Vec::new());
    // Let the generator reach its rate first.
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..probes {
        if !loading() {
            break;
        }
        let token = format!("freshprobe{}x{i}", now_ns());
        let body = format!("freshness probe {token}");
        send_probe(server, &body)?;
        let acked = Instant::now();
        search_ms.push(wait_visible(acked, || {
            let found = server.get(&format!(
                "/api/v1/logs/search?q={token}&start=now-5m&limit=1"
            ))?;
            Ok(found["total"].as_u64().unwrap_or(0) > 0)
        })?);
        let token2 = format!("{token}sql");
        send_probe(server, &token2)?;
        let acked = Instant::now();
        let sql = format!(
            "SELECT count(*) FROM logs WHERE time > now() - INTERVAL '5 minutes' AND service = 'bench-probe' AND body = '{token2}'"
        );
        sql_ms.push(wait_visible(acked, || {
            Ok(server.sql_value(&sql)?.as_u64().unwrap_or(0) > 0)
        })?);
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("freshness: {} probes under load", search_ms.len());
    let mut rows = Vec::new();
    for (what, v) in [("search", search_ms), ("SQL", sql_ms)] {
        for p in [50.0, 99.0] {
            rows.push(Row::new(
                format!("freshness under load: ack → visible in {what}, p{p}"),
                "ms",
                percentile(v.clone(), p),
                Better::Lower,
            ));
        }
    }
    Ok(rows)
}

/// Sends one probe line, retrying while the server answers 429 or 503
/// (overloaded) as exporters do, for at most 60 s.
fn send_probe(server: &Loupe, body: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        match send_logs(&server.otlp_http, "bench-probe", &[(now_ns(), body)]) {
            Err(e)
                if started.elapsed() < Duration::from_secs(60)
                    && ["HTTP 429", "HTTP 503"]
                        .iter()
                        .any(|s| e.to_string().contains(s)) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Milliseconds from `since` until `visible` says yes (at most 60 s; a
/// query that fails under the load counts as not visible yet).
fn wait_visible(since: Instant, mut visible: impl FnMut() -> Result<bool>) -> Result<f64> {
    loop {
        let seen = visible().unwrap_or_else(|e| {
            eprintln!("freshness poll failed (retrying): {e:#}");
            false
        });
        if seen || since.elapsed() > Duration::from_secs(60) {
            return Ok(since.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
