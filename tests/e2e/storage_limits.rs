//! Inputs that once made storage or a query take unbounded memory or
//! work, sent exactly: each is answered (or completes), the server stays
//! up, and its peak RSS stays under the bound each test states.

use std::time::Duration;

use prost::Message;
use serde_json::json;

use crate::harness::{Loupe, deadline_in, wait_until};
use crate::otlp_proto::logs_request;

const NANOS_PER_HOUR: u64 = 3_600_000_000_000;

/// Issue 14, item 6: one request whose records each carry a different
/// hour once made one flush encode a file per hour, all at once.
#[test]
fn one_request_over_a_hundred_hours_is_flushed_a_bounded_number_of_files_at_a_time() {
    let loupe = Loupe::start(&[
        "--flush-max-files",
        "8",
        "--flush-interval",
        "1s",
        "--compaction-interval",
        "1h",
    ]);
    let mut request = logs_request("hours", (0..100).map(|h| format!("hour {h}")));
    let records = &mut request.resource_logs[0].scope_logs[0].log_records;
    let now = records[0].time_unix_nano;
    for (h, record) in records.iter_mut().enumerate() {
        record.time_unix_nano = now - (h as u64 + 1) * NANOS_PER_HOUR;
    }
    let response = loupe.post(
        "/v1/logs",
        "application/x-protobuf",
        request.encode_to_vec(),
    );
    assert_eq!(response.status().as_u16(), 200);
    let all_flushed = wait_until(deadline_in(Duration::from_secs(90)), || {
        loupe.splits("logs").len() >= 100
    });
    assert!(
        all_flushed,
        "{} files; log:\n{}",
        loupe.splits("logs").len(),
        loupe.log()
    );
    // 100 hours at most 8 files a flush: at least 13 flushes.
    let flushes = loupe.metric("loupe_flushes_total");
    assert!(flushes >= 13.0, "{flushes} flushes wrote 100 files");
    assert_eq!(
        loupe.count("SELECT count(*) FROM logs WHERE service = 'hours'"),
        100
    );
    assert_eq!(loupe.healthz(), 200);
    let rss = loupe.peak_rss_kb();
    assert!(rss < 300 * 1024, "peak RSS {rss} kB");
}

/// Issue 14, item 7: compaction grouped files by compressed size and
/// decoded whole groups, so logs that compress a thousandfold became
/// gigabytes at merge time. Merges are now bounded by rows and
/// uncompressed bytes and streamed.
#[test]
fn compacting_highly_compressible_logs_stays_within_a_memory_bound() {
    let loupe = Loupe::start(&["--flush-interval", "500ms", "--compaction-interval", "1h"]);
    const REQUESTS: usize = 12;
    const PER_REQUEST: usize = 200;
    let filler = "x".repeat(60_000);
    for r in 0..REQUESTS {
        let bodies = (0..PER_REQUEST).map(|i| format!("req{r} rec{i} {filler}"));
        let response = loupe.post(
            "/v1/logs",
            "application/x-protobuf",
            logs_request("squeeze", bodies).encode_to_vec(),
        );
        assert_eq!(response.status().as_u16(), 200, "request {r}");
        if r % 3 == 2 {
            // A file per three requests.
            let flushed = wait_until(deadline_in(Duration::from_secs(60)), || {
                loupe.metric("loupe_unflushed_bytes") == 0.0
            });
            assert!(flushed, "not flushed; log:\n{}", loupe.log());
        }
    }
    let before = loupe.splits("logs");
    assert!(before.len() >= 3, "{} files", before.len());
    let raw: u64 = before
        .iter()
        .map(|s| s["raw_bytes"].as_u64().unwrap())
        .sum();
    let compressed: u64 = before
        .iter()
        .map(|s| s["byte_size"].as_u64().unwrap())
        .sum();
    println!(
        "{} files: {compressed} bytes of Parquet holding {raw} bytes of data",
        before.len()
    );
    assert!(raw > 100 * compressed, "the test data does not compress");

    // Now let compaction at them, measuring that phase's peak alone.
    let loupe = Loupe::start_in(
        loupe,
        &[
            "--compaction-interval",
            "300ms",
            "--compaction-min-files",
            "2",
        ],
    );
    let measured = loupe.reset_peak_rss();
    let at_start = loupe.peak_rss_kb();
    let merged = wait_until(deadline_in(Duration::from_secs(120)), || {
        loupe.splits("logs").len() == 1
    });
    assert!(
        merged,
        "{} files left; log:\n{}",
        loupe.splits("logs").len(),
        loupe.log()
    );
    let rss = loupe.peak_rss_kb();
    println!(
        "compaction of {raw} bytes of data: peak RSS {rss} kB, {at_start} kB before (peak reset: {measured})"
    );
    // The old merge held the data three times over (decoded, concatenated,
    // sorted), and the index queued every row's text.
    assert!(
        rss < 200 * 1024,
        "peak RSS {rss} kB while merging {raw} bytes"
    );
    assert_eq!(
        loupe.count("SELECT count(*) FROM logs WHERE service = 'squeeze'"),
        (REQUESTS * PER_REQUEST) as u64
    );
    assert_eq!(loupe.healthz(), 200);
}

/// Issue 14, item 1: the result-size cap was checked after a batch was
/// kept, so one batch of any size passed whole, then was copied several
/// times while encoding JSON.
#[test]
fn one_result_batch_over_the_size_cap_is_cut_to_the_cap() {
    let loupe = Loupe::start(&["--max-result-size", "1MiB", "--flush-interval", "1h"]);
    let big = "y".repeat(512 << 10);
    // One request, one batch of 12 MiB.
    let response = loupe.post(
        "/v1/logs",
        "application/x-protobuf",
        logs_request("wide", (0..24).map(|i| format!("{i} {big}"))).encode_to_vec(),
    );
    assert_eq!(response.status().as_u16(), 200);
    let response = loupe
        .client()
        .post(loupe.api_url("/api/v1/sql"))
        .json(&json!({"sql": "SELECT body FROM logs"}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-loupe-truncated")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let bytes = response.bytes().unwrap();
    assert!(
        bytes.len() < (1 << 20) + (64 << 10),
        "{} bytes returned",
        bytes.len()
    );
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["truncated"], true);
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "a 1 MiB cap holds one 512 KiB row");
    assert!(rows[0][0].as_str().unwrap().ends_with(&big));
    assert_eq!(loupe.healthz(), 200);
    let rss = loupe.peak_rss_kb();
    assert!(rss < 300 * 1024, "peak RSS {rss} kB");
}
