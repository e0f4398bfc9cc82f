//! `loupe gen` scenarios against a real server: each injected fault must be
//! visible in the stored data exactly where its ground truth says, and a
//! seed must fix the data.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Loupe, deadline_in, wait_until};

/// Runs `loupe gen` to completion and returns its ground truth.
fn generate(loupe: &Loupe, args: &[&str]) -> Value {
    generate_with_report(loupe, args).0
}

/// Runs `loupe gen` to completion; returns its ground truth and report.
fn generate_with_report(loupe: &Loupe, args: &[&str]) -> (Value, Value) {
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.json");
    let output = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args([
            "gen",
            "--endpoint",
            &loupe.grpc_url(),
            "--quiet",
            "--json",
            "--truth",
        ])
        .arg(&truth)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "gen failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["errors"], json!(0), "{report}");
    let truth = serde_json::from_str(&std::fs::read_to_string(truth).unwrap()).unwrap();
    (truth, report)
}

fn fault_start(truth: &Value) -> i64 {
    truth["fault"]["start_unix_nano"].as_i64().unwrap()
}

fn f64_of(loupe: &Loupe, sql: &str) -> f64 {
    loupe
        .sql_value(sql)
        .as_f64()
        .unwrap_or_else(|| panic!("{sql}: not a number"))
}

#[test]
fn steady_looks_like_a_microservice_shop() {
    let loupe = Loupe::start(&[]);
    let (_, report) = generate_with_report(
        &loupe,
        &[
            "--scenario",
            "steady",
            "--rate",
            "60",
            "--duration",
            "4s",
            "--metrics-interval",
            "2s",
        ],
    );
    let achieved = report["traces_per_sec"].as_f64().unwrap();
    assert!(
        (achieved - 60.0).abs() / 60.0 <= 0.10,
        "asked 60/s, achieved {achieved}/s"
    );
    assert!(loupe.count("SELECT count(DISTINCT service) FROM spans") >= 8);
    assert_eq!(
        loupe.count("SELECT count(DISTINCT resource_attributes['cloud.region']) FROM spans"),
        2
    );
    assert!(loupe.count("SELECT count(DISTINCT resource_attributes['service.instance.id']) FROM spans WHERE service = 'cart'") >= 2);
    let kinds = loupe.sql("SELECT DISTINCT kind FROM spans ORDER BY kind");
    assert_eq!(
        kinds,
        vec![
            vec![json!("client")],
            vec![json!("consumer")],
            vec![json!("internal")],
            vec![json!("producer")],
            vec![json!("server")]
        ]
    );
    // Parent/child links cross services: every client call has a server child.
    let orphans = loupe.count(
        "SELECT count(*) FROM spans c WHERE c.kind = 'client' AND c.attributes['db.system'] IS NULL
         AND NOT EXISTS (SELECT 1 FROM spans s WHERE s.parent_span_id = c.span_id AND s.trace_id = c.trace_id)",
    );
    assert_eq!(orphans, 0);
    assert!(loupe.count("SELECT count(*) FROM spans WHERE attributes['db.system'] = 'postgresql' AND attributes['db.statement'] IS NOT NULL") > 0);
    assert!(
        loupe.count("SELECT count(*) FROM spans WHERE attributes['messaging.system'] = 'kafka'")
            > 0
    );
    // Logs are correlated with spans and come in several severities and shapes.
    let uncorrelated = loupe.count(
        "SELECT count(*) FROM logs l WHERE NOT EXISTS (SELECT 1 FROM spans s WHERE s.span_id = l.span_id)",
    );
    assert_eq!(uncorrelated, 0);
    assert!(loupe.count("SELECT count(DISTINCT severity_text) FROM logs") >= 2);
    assert!(loupe.count("SELECT count(*) FROM logs WHERE body LIKE '{%'") > 0);
    let error_rate = f64_of(
        &loupe,
        "SELECT avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0.0 END) FROM spans WHERE service = 'frontend' AND kind = 'server'",
    );
    assert!(error_rate < 0.02, "steady error rate {error_rate}");
    // Metrics: cumulative request-duration histograms per route and status, and gauges.
    let histograms = loupe.sql(
        "SELECT DISTINCT temporality FROM metrics WHERE name = 'http.server.request.duration' AND attributes['http.route'] IS NOT NULL",
    );
    assert_eq!(histograms, vec![vec![json!("cumulative")]]);
    for name in [
        "http.server.request.count",
        "process.cpu.utilization",
        "process.memory.usage",
        "messaging.kafka.consumer.lag",
        "db.client.connection.count",
    ] {
        assert!(
            loupe.count(&format!(
                "SELECT count(*) FROM metrics WHERE name = '{name}'"
            )) > 0,
            "{name}"
        );
    }
}

#[test]
fn db_slow_makes_database_calls_ten_times_slower_after_the_fault() {
    let loupe = Loupe::start(&[]);
    let truth = generate(
        &loupe,
        &[
            "--scenario",
            "db-slow",
            "--rate",
            "80",
            "--duration",
            "6s",
            "--fault-at",
            "3s",
        ],
    );
    assert_eq!(truth["fault"]["cause"]["db.system"], "postgresql");
    let t = fault_start(&truth);
    let p95 = |cond: &str| {
        f64_of(
            &loupe,
            &format!(
            "SELECT approx_percentile_cont(duration_ns, 0.95) FROM spans
             WHERE attributes['db.system'] = 'postgresql' AND CAST(start_time AS BIGINT) {cond} {t}"
        ),
        )
    };
    let (before, after) = (p95("<"), p95(">="));
    assert!(after >= 5.0 * before, "p95 before {before} after {after}");
    let redis_ratio = {
        let q = |cond: &str| {
            f64_of(
                &loupe,
                &format!(
                    "SELECT approx_percentile_cont(duration_ns, 0.5) FROM spans WHERE attributes['db.system'] = 'redis' AND CAST(start_time AS BIGINT) {cond} {t}"
                ),
            )
        };
        q(">=") / q("<")
    };
    assert!(redis_ratio < 2.0, "redis is not the culprit: {redis_ratio}");
}

#[test]
fn payment_errors_come_from_one_instance() {
    let loupe = Loupe::start(&[]);
    let truth = generate(
        &loupe,
        &[
            "--scenario",
            "payment-errors",
            "--rate",
            "100",
            "--duration",
            "6s",
            "--fault-at",
            "2s",
        ],
    );
    let t = fault_start(&truth);
    let rows = loupe.sql(&format!(
        "SELECT resource_attributes['service.instance.id'],
                avg(CASE WHEN attributes['http.response.status_code'] >= '500' THEN 1.0 ELSE 0.0 END)
         FROM spans WHERE service = 'payment' AND kind = 'server' AND CAST(start_time AS BIGINT) >= {t}
         GROUP BY 1 ORDER BY 1"
    ));
    for row in rows {
        let rate = row[1].as_f64().unwrap();
        if row[0] == json!("payment-2") {
            assert!(rate >= 0.15, "payment-2 error rate {rate}");
        } else {
            assert!(rate < 0.05, "{} error rate {rate}", row[0]);
        }
    }
    assert!(loupe.count("SELECT count(*) FROM logs WHERE severity_text = 'ERROR' AND body LIKE 'PaymentGatewayError%'") > 0);
    let before = loupe.count(&format!(
        "SELECT count(*) FROM spans WHERE service = 'payment' AND status_code = 'error' AND CAST(start_time AS BIGINT) < {t}"
    ));
    assert_eq!(before, 0);
}

#[test]
fn bad_deploy_is_a_new_version_that_is_slower_and_fails() {
    let loupe = Loupe::start(&[]);
    let truth = generate(
        &loupe,
        &[
            "--scenario",
            "bad-deploy",
            "--rate",
            "100",
            "--duration",
            "6s",
            "--fault-at",
            "3s",
        ],
    );
    let t = fault_start(&truth);
    let new = "resource_attributes['service.version'] = '2.0.0'";
    assert_eq!(
        loupe.count(&format!(
            "SELECT count(*) FROM spans WHERE {new} AND CAST(start_time AS BIGINT) < {t}"
        )),
        0
    );
    let stat = |version_cond: &str, expr: &str| {
        f64_of(
            &loupe,
            &format!(
                "SELECT {expr} FROM spans WHERE service = 'cart' AND kind = 'server' AND {version_cond}"
            ),
        )
    };
    let old = "resource_attributes['service.version'] = '1.8.3'";
    let (p50_old, p50_new) = (
        stat(old, "approx_percentile_cont(duration_ns, 0.5)"),
        stat(new, "approx_percentile_cont(duration_ns, 0.5)"),
    );
    assert!(p50_new > 2.0 * p50_old, "p50 old {p50_old} new {p50_new}");
    let errors = stat(
        new,
        "avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0.0 END)",
    );
    assert!(errors > 0.05, "new version error rate {errors}");
    assert_eq!(
        stat(
            old,
            "sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END)"
        ),
        0.0
    );
}

#[test]
fn traffic_spike_quadruples_load_for_its_period() {
    let loupe = Loupe::start(&[]);
    let truth = generate(
        &loupe,
        &[
            "--scenario",
            "traffic-spike",
            "--rate",
            "40",
            "--duration",
            "6s",
            "--fault-at",
            "2s",
            "--spike-duration",
            "2s",
        ],
    );
    let (start, end) = (
        fault_start(&truth),
        truth["fault"]["end_unix_nano"].as_i64().unwrap(),
    );
    let per_sec = |from: i64, to: i64| {
        loupe.count(&format!(
            "SELECT count(*) FROM spans WHERE service = 'frontend' AND kind = 'server'
             AND CAST(start_time AS BIGINT) >= {from} AND CAST(start_time AS BIGINT) < {to}"
        )) as f64
            / ((to - from) as f64 / 1e9)
    };
    let before = per_sec(start - 2_000_000_000, start);
    let during = per_sec(start, end);
    assert!(
        during >= 3.0 * before,
        "before {before}/s during {during}/s"
    );
}

#[test]
fn load_test_ramp_saturates_at_the_configured_capacity() {
    let loupe = Loupe::start(&[]);
    let truth = generate(
        &loupe,
        &[
            "--scenario",
            "load-test-ramp",
            "--capacity",
            "150",
            "--step-duration",
            "1s",
        ],
    );
    let steps = truth["fault"]["load_test"]["steps"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(steps.len(), 11);
    let rows = loupe.sql(
        "SELECT CAST(attributes['loadtest.step'] AS INT) AS step, count(*), approx_percentile_cont(duration_ns, 0.5)
         FROM spans WHERE attributes['loadtest.id'] = 'ramp' GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(rows.len(), 11, "{rows:?}");
    let throughput: Vec<f64> = rows.iter().map(|r| r[1].as_f64().unwrap()).collect();
    let peak = throughput.iter().cloned().fold(0.0, f64::max);
    assert!(
        (peak - 150.0).abs() / 150.0 < 0.15,
        "peak {peak} per 1s step; {throughput:?}"
    );
    assert!(
        throughput[0] < throughput[4] && throughput[4] < peak,
        "{throughput:?}"
    );
    let (first_p50, last_p50) = (rows[0][2].as_f64().unwrap(), rows[10][2].as_f64().unwrap());
    // Little's law under the USL: R(128) / R(1) = 1 + σ·127 + κ·128·127 ≈ 12.9.
    assert!(
        last_p50 > 8.0 * first_p50,
        "latency climbs: {first_p50} → {last_p50}"
    );
}

#[test]
fn the_same_seed_gives_the_same_ids_and_values() {
    let spans_of = |seed: &str| {
        let loupe = Loupe::start(&[]);
        generate(
            &loupe,
            &[
                "--scenario",
                "payment-errors",
                "--rate",
                "50",
                "--duration",
                "2s",
                "--fault-at",
                "1s",
                "--seed",
                seed,
            ],
        );
        let spans = loupe.sql(
            "SELECT trace_id, span_id, parent_span_id, service, name, duration_ns, status_code,
                    attributes['http.response.status_code'], attributes['db.statement'], CAST(start_time AS BIGINT) - (SELECT min(CAST(start_time AS BIGINT)) FROM spans) AS offset
             FROM spans ORDER BY span_id",
        );
        let logs =
            loupe.sql("SELECT span_id, severity_text, body FROM logs ORDER BY span_id, body");
        (spans, logs)
    };
    let (a, b, c) = (spans_of("7"), spans_of("7"), spans_of("8"));
    assert!(a.0.len() > 100);
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
}

#[test]
fn serve_demo_shows_live_data_within_seconds() {
    let loupe = Loupe::start(&["--demo", "--demo-rate", "40"]);
    let (mut services, mut logs) = (0, 0);
    let shown = wait_until(deadline_in(Duration::from_secs(30)), || {
        services = loupe.count("SELECT count(DISTINCT service) FROM spans");
        logs = loupe.count("SELECT count(*) FROM logs");
        services >= 8 && logs > 0
    });
    assert!(
        shown,
        "demo data did not show up: {services} services, {logs} logs"
    );
}

/// Rate control on its own (the server's speed aside): a sink that only
/// encodes, at a fixed rate.
#[test]
fn rate_control_holds_the_asked_rate() {
    let output = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args([
            "gen",
            "--endpoint",
            "null",
            "--rate",
            "400",
            "--duration",
            "3s",
            "--quiet",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let achieved = report["traces_per_sec"].as_f64().unwrap();
    assert!(
        (achieved - 400.0).abs() / 400.0 <= 0.05,
        "asked 400/s, achieved {achieved}/s: {report}"
    );
    assert_eq!(report["errors"], json!(0));
}
