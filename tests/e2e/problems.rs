//! Problem location on generated incidents: the top suspect of
//! `/api/v1/problems` names the injected cause.

use std::process::Command;

use serde_json::Value;

use crate::harness::Loupe;
use crate::shared::{FAULT_NS, incident_args};

/// Runs a fault scenario (fault halfway) and returns the problems report
/// for the faulty half against the healthy half.
fn incident(scenario: &str, seed: &str) -> (Value, Loupe) {
    let loupe = Loupe::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.json");
    let status = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["gen", "--endpoint", &loupe.grpc_url(), "--quiet"])
        .args(incident_args(scenario, seed, &truth_path))
        .status()
        .unwrap();
    assert!(status.success());
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(truth_path).unwrap()).unwrap();
    let fault = truth["fault"]["start_unix_nano"].as_i64().unwrap();
    let end = fault + FAULT_NS;
    let response = loupe
        .client()
        .get(loupe.api_url(&format!("/api/v1/problems?start={fault}&end={end}")))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    (response.json().unwrap(), loupe)
}

fn top(report: &Value) -> &Value {
    let suspects = report["suspects"].as_array().unwrap();
    assert!(!suspects.is_empty(), "no suspects: {report}");
    &suspects[0]
}

#[test]
fn db_slow_points_at_the_database() {
    let (report, _loupe) = incident("db-slow", "3");
    let s = top(&report);
    assert_eq!(s["subject"]["kind"], "dependency", "{report:#}");
    assert_eq!(s["subject"]["system"], "postgresql");
    assert_eq!(s["subject"]["server.address"], "postgres-inventory");
    assert_eq!(s["kind"], "latency");
    assert!(!s["example_trace_ids"].as_array().unwrap().is_empty());
}

#[test]
fn payment_errors_point_at_the_instance() {
    let (report, loupe) = incident("payment-errors", "4");
    let s = top(&report);
    assert_eq!(
        s["subject"]["service.instance.id"], "payment-2",
        "{report:#}"
    );
    assert_eq!(s["kind"], "errors");
    let explanation = s["explanation"].as_str().unwrap();
    assert!(
        explanation.contains("payment instance payment-2"),
        "{explanation}"
    );
    let logs = s["example_logs"].as_array().unwrap();
    assert!(
        logs.iter()
            .any(|l| l["body"].as_str().unwrap().contains("PaymentGatewayError")),
        "{logs:?}"
    );

    // Error groups: the exception events collapse into one group.
    let response = loupe
        .client()
        .get(loupe.api_url("/api/v1/errors?start=now-1h"))
        .send()
        .unwrap();
    let body: Value = response.json().unwrap();
    let groups = body["groups"].as_array().unwrap();
    let events = groups
        .iter()
        .find(|g| g["type"] == "PaymentGatewayError" && g["source"] == "span_event")
        .unwrap_or_else(|| panic!("{body:#}"));
    assert_eq!(events["top_frames"][0], "com.shop.payment.Gateway.charge");
    assert_eq!(events["services"], serde_json::json!(["payment"]));
    let errors = loupe.count("SELECT count(*) FROM spans WHERE service = 'payment' AND events LIKE '%PaymentGatewayError%'");
    assert_eq!(events["count"].as_u64().unwrap(), errors);
}

#[test]
fn bad_deploy_points_at_the_version_and_its_log_pattern_surfaces() {
    let (report, loupe) = incident("bad-deploy", "5");
    let s = top(&report);
    assert_eq!(s["subject"]["service.version"], "2.0.0", "{report:#}");
    assert_eq!(s["subject"]["service"], "cart");
    // The new ERROR template is part of the evidence listed for cart.
    let patterns = report["suspects"].as_array().unwrap().iter().any(|s| {
        s["subject"]["service"] == "cart"
            && s["log_patterns"].as_array().unwrap().iter().any(|p| {
                p["trend"] == "new"
                    && p["template"]
                        .as_str()
                        .unwrap()
                        .contains("NullPointerException")
            })
    });
    assert!(patterns, "{report:#}");
    let response = loupe
        .client()
        .get(loupe.api_url("/api/v1/logs/patterns?service=cart&start=now-1h"))
        .send()
        .unwrap();
    let body: Value = response.json().unwrap();
    assert!(
        body["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["template"].as_str().unwrap().starts_with("added item"))
    );
}
