//! Overload: twice the rate the server sustains, for a minute, from
//! `loupe gen`. The server must shed what it cannot hold (429 with
//! `Retry-After`, RESOURCE_EXHAUSTED with `RetryInfo`), stay within its
//! memory budget, keep answering queries, accept again as soon as the load
//! drops, and have stored exactly what it acknowledged.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use prost::Message;
use serde_json::Value;
use tonic_types::StatusExt;

use crate::harness::{Loupe, deadline_in, wait_until};
use crate::otlp_proto::logs_request;

/// The budget the server gets: small, so a debug build under a minute of
/// load would go far past it if nothing held it back (it reached 630 MiB
/// before admission control).
///
/// What must stay under it is the server's anonymous resident memory
/// (`RssAnon`: heap, thread stacks), not all of `VmRSS`: the rest of
/// `VmRSS` is file-backed pages — the debug binary's code (about 120 MiB
/// resident, a third of this budget; far less in release) and mapped
/// files — which the kernel can drop and re-read, and which no setting of
/// the server could shrink. Both are sampled and printed.
const BUDGET_MIB: u64 = 384;
/// Traces per request: requests of a few hundred KiB, as a Collector sends.
const BATCH: &str = "100";
/// Senders of the overload run: enough that requests the server cannot
/// process pile up, as they do from a fleet of applications.
const OVERLOAD_SENDERS: &str = "32";
const OVERLOAD_SECS: u64 = 60;

/// Runs `loupe gen` to completion and returns its JSON report (it exits
/// non-zero when some requests were still refused after its retries).
fn gen_report(loupe: &Loupe, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["gen", "--endpoint", &loupe.grpc_url(), "--json"])
        .args(["--signals", "traces,logs", "--batch", BATCH])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON report from loupe gen: {stdout}"));
    serde_json::from_str(last).unwrap()
}

/// The shares of the memory budget `/metrics` reports.
const SHARES: [&str; 6] = [
    "unflushed",
    "in_flight",
    "queries",
    "log_index_cache",
    "metadata_cache",
    "compaction",
];

/// The `/metrics` series of `share`'s `used` or `limit` bytes.
fn share_series(what: &str, share: &str) -> String {
    format!("loupe_memory_{what}_bytes{{share=\"{share}\"}}")
}

/// Resident memory of the server, as (`VmRSS`, `RssAnon`) in kB.
fn rss_kb(pid: u32) -> (u64, u64) {
    (status_kb(pid, "VmRSS:"), status_kb(pid, "RssAnon:"))
}

/// A `kB` field of `/proc/PID/status`.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies
        .get((latencies.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

/// One small OTLP/HTTP request of `records` log records; its status and
/// `Retry-After`.
fn probe_http(loupe: &Loupe, tag: &str, records: usize) -> (u16, Option<String>) {
    let bodies = (0..records).map(|i| format!("probe {tag} {i}"));
    let request = logs_request("probe", bodies).encode_to_vec();
    let response = loupe.post("/v1/logs", "application/x-protobuf", request);
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_string());
    (response.status().as_u16(), retry_after)
}

#[test]
fn twice_the_sustainable_rate_is_shed_with_retry_hints_within_the_memory_budget() {
    let budget = format!("{BUDGET_MIB}MiB");
    let loupe = Loupe::start(&["--memory-budget", &budget]);
    let pid = loupe.pid().unwrap();

    // What this server sustains: as fast as four senders get acknowledged.
    let measured = gen_report(
        &loupe,
        &["--rate", "100000", "--duration", "5s", "--concurrency", "4"],
    );
    let sustainable = measured["traces_per_sec"].as_f64().unwrap();
    let rate = (2.0 * sustainable).max(20.0);
    eprintln!("sustainable ≈ {sustainable:.0} traces/s; driving {rate:.0} traces/s");

    // Twice that, from many senders, for a minute.
    let overload_run = {
        let loupe = &loupe;
        let rate = format!("{rate:.0}");
        let duration = format!("{OVERLOAD_SECS}s");
        move || {
            gen_report(
                loupe,
                &[
                    "--rate",
                    &rate,
                    "--duration",
                    &duration,
                    "--concurrency",
                    OVERLOAD_SENDERS,
                    "--seed",
                    "2",
                ],
            )
        }
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let running = || !done.load(std::sync::atomic::Ordering::Relaxed);
    let (
        report,
        load_secs,
        (max_rss_kb, max_anon_kb),
        sql_latency,
        search_latency,
        probes,
        max_shares,
    ) = std::thread::scope(|scope| {
        let started = Instant::now();
        let load = scope.spawn(|| {
            let report = overload_run();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            report
        });
        // The server's resident memory, sampled from /proc.
        let rss = scope.spawn(|| {
            let (mut max_rss, mut max_anon) = (0, 0);
            while running() {
                let (rss, anon) = rss_kb(pid);
                (max_rss, max_anon) = (max_rss.max(rss), max_anon.max(anon));
                std::thread::sleep(Duration::from_millis(100));
            }
            (max_rss, max_anon)
        });
        // What each share of the budget holds, from `/metrics`.
        let shares = scope.spawn(|| {
            let mut max = [0.0f64; SHARES.len()];
            while running() {
                for (m, share) in max.iter_mut().zip(SHARES) {
                    *m = m.max(loupe.metric(&share_series("used", share)));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            max
        });
        // Queries keep being answered while ingest is shed.
        let queries = scope.spawn(|| {
            let (mut sql, mut search) = (Vec::new(), Vec::new());
            // Answered, or cut at the query time limit (504): bounded
            // either way; printed below, not asserted.
            let bounded = |status: u16, body: &str| {
                assert!(status == 200 || status == 504, "{status} {body}");
            };
            while running() {
                let t = Instant::now();
                let (status, body) = loupe.sql_response("SELECT count(*) AS n FROM spans");
                bounded(status, &body.to_string());
                sql.push((t.elapsed(), status));
                let t = Instant::now();
                let response = loupe
                    .client()
                    .get(loupe.api_url("/api/v1/logs/search?q=error&start=now-10s&limit=50"))
                    .send()
                    .unwrap();
                let status = response.status().as_u16();
                bounded(status, &response.text().unwrap_or_default());
                search.push((t.elapsed(), status));
                std::thread::sleep(Duration::from_millis(200));
            }
            (sql, search)
        });
        // Our own senders see the refusals and their retry hints.
        let probes = scope.spawn(|| {
            let mut grpc = None;
            let (mut acked, mut http_hint, mut grpc_hint) = (0u64, None, None);
            let mut i = 0;
            while running() && (http_hint.is_none() || grpc_hint.is_none()) {
                i += 1;
                if http_hint.is_none() {
                    match probe_http(&loupe, &format!("load-{i}"), 10) {
                        (200, _) => acked += 10,
                        (429, hint) => http_hint = Some(hint.expect("429 without Retry-After")),
                        (status, _) => panic!("probe answered {status}"),
                    }
                }
                if grpc_hint.is_none() {
                    let client = grpc.get_or_insert_with(|| {
                        runtime
                            .block_on(LogsServiceClient::connect(loupe.grpc_url()))
                            .unwrap()
                    });
                    let bodies = (0..10).map(|j| format!("probe grpc-{i} {j}"));
                    match runtime.block_on(client.export(logs_request("probe", bodies))) {
                        Ok(_) => acked += 10,
                        Err(status) => {
                            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                            let info = status.get_details_retry_info().expect("RetryInfo detail");
                            grpc_hint = Some(info.retry_delay.expect("a retry delay"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (acked, http_hint, grpc_hint)
        });
        let report = load.join().unwrap();
        let load_secs = started.elapsed();
        let (sql, search) = queries.join().unwrap();
        (
            report,
            load_secs,
            rss.join().unwrap(),
            sql,
            search,
            probes.join().unwrap(),
            shares.join().unwrap(),
        )
    });
    let (mut probe_acked, http_hint, grpc_hint) = probes;
    // The measuring run's records are stored too.
    let acked = |what: &str| report[what].as_u64().unwrap() + measured[what].as_u64().unwrap();
    let (acked_spans, acked_logs) = (acked("spans"), acked("logs"));
    eprintln!(
        "overload: {:.0} s, acknowledged {} traces ({:.0}/s), {} requests, {} retries, {} failed; \
         max RSS {} MiB, of which anonymous at most {} MiB (budget {BUDGET_MIB} MiB)",
        load_secs.as_secs_f64(),
        report["traces"],
        report["traces_per_sec"].as_f64().unwrap_or(0.0),
        report["requests"],
        report["retries"],
        report["errors"],
        max_rss_kb >> 10,
        max_anon_kb >> 10,
    );
    let timed_out = |runs: &[(Duration, u16)]| runs.iter().filter(|(_, s)| *s == 504).count();
    eprintln!(
        "during overload: SQL count p99 {:?} over {} queries ({} cut at the time limit), \
         log search p99 {:?} over {} ({} cut)",
        p99(&mut sql_latency.iter().map(|r| r.0).collect::<Vec<_>>()),
        sql_latency.len(),
        timed_out(&sql_latency),
        p99(&mut search_latency.iter().map(|r| r.0).collect::<Vec<_>>()),
        search_latency.len(),
        timed_out(&search_latency),
    );
    eprintln!(
        "after the load: RSS {} MiB, of which anonymous {} MiB, file-backed (code) {} MiB",
        rss_kb(pid).0 >> 10,
        status_kb(pid, "RssAnon:") >> 10,
        status_kb(pid, "RssFile:") >> 10
    );
    // Each share stayed within its part of the budget.
    for (share, max) in SHARES.iter().zip(max_shares) {
        let limit = loupe.metric(&share_series("limit", share));
        eprintln!(
            "share {share}: at most {} of {} MiB",
            max as u64 >> 20,
            limit as u64 >> 20
        );
        assert!(limit > 0.0 && max <= limit, "{share}: {max} > {limit}");
    }
    let refused = loupe.metric("loupe_ingest_overloaded_requests_total");
    eprintln!("refused as overloaded: {refused} requests");
    assert!(refused >= 1.0, "nothing was shed");
    assert!(report["retries"].as_u64().unwrap() >= 1, "{report}");
    let http_hint = http_hint.expect("no OTLP/HTTP request was refused during the overload");
    assert_eq!(http_hint, "1");
    let grpc_hint = grpc_hint.expect("no OTLP/gRPC request was refused during the overload");
    assert_eq!(grpc_hint, Duration::from_secs(1));
    assert!(
        max_anon_kb < BUDGET_MIB << 10,
        "anonymous RSS reached {} MiB, over the {BUDGET_MIB} MiB budget",
        max_anon_kb >> 10
    );

    // The load has stopped: ingest is accepted again at once.
    let t = Instant::now();
    let mut first = probe_http(&loupe, "after", 10).0;
    while first == 429 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        first = probe_http(&loupe, "after", 10).0;
    }
    assert_eq!(first, 200, "still refusing 10 s after the load stopped");
    probe_acked += 10;
    eprintln!("accepted again {:?} after the load stopped", t.elapsed());

    // Everything acknowledged is stored, once; nothing refused is.
    let count = |sql: &str| loupe.count(sql);
    let stored = wait_until(deadline_in(Duration::from_secs(30)), || {
        count("SELECT count(*) FROM spans") == acked_spans
            && count("SELECT count(*) FROM logs WHERE service <> 'probe'") == acked_logs
            && count("SELECT count(*) FROM logs WHERE service = 'probe'") == probe_acked
    });
    assert!(
        stored,
        "stored {} spans, {} logs, {} probe logs; acknowledged {acked_spans}, {acked_logs}, {probe_acked}",
        count("SELECT count(*) FROM spans"),
        count("SELECT count(*) FROM logs WHERE service <> 'probe'"),
        count("SELECT count(*) FROM logs WHERE service = 'probe'"),
    );
    assert_eq!(loupe.healthz(), 200);
}
