//! Scoring harness for problem location: runs every fault scenario of
//! `loupe gen` with several seeds against a fresh `loupe serve`, asks
//! `/api/v1/problems` about the faulty window, and reports how often the
//! top suspect (top-1) and any of the first three (top-3) name the injected
//! cause from the scenario's ground truth.
//!
//! Run: `cargo bench --bench problems` (env: `SEEDS`, default 5).

#[path = "common/mod.rs"]
mod common;

use common::shared::{FAULT_NS, incident_args};
use common::{Server, client};
use serde_json::Value;
const SCENARIOS: [&str; 3] = ["db-slow", "payment-errors", "bad-deploy"];

/// Whether a suspect names the cause recorded in the ground truth.
fn names_cause(suspect: &Value, truth: &Value) -> bool {
    let cause = &truth["fault"]["cause"];
    let subject = &suspect["subject"];
    match truth["fault"]["kind"].as_str() {
        Some("dependency_latency") => subject["server.address"] == cause["server.address"],
        Some("instance_errors") => subject["service.instance.id"] == cause["service.instance.id"],
        Some("bad_deploy") => {
            subject["service"] == cause["service"]
                && subject["service.version"] == cause["service.version"]
        }
        _ => false,
    }
}

fn run(scenario: &str, seed: u64) -> (bool, bool, String) {
    let data = tempfile::tempdir().expect("temp dir");
    let server = Server::start(data.path(), &[]);
    let truth_path = data.path().join("truth.json");
    let report = server.generate(&incident_args(scenario, &seed.to_string(), &truth_path));
    assert_eq!(report["errors"], 0, "{report}");
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(&truth_path).expect("truth"))
        .expect("truth json");
    let fault = truth["fault"]["start_unix_nano"]
        .as_i64()
        .expect("fault start");
    let report = server.get(
        &client(),
        &format!("/api/v1/problems?start={fault}&end={}", fault + FAULT_NS),
    );
    server.stop();
    let suspects = report["suspects"].as_array().cloned().unwrap_or_default();
    let top1 = suspects.first().is_some_and(|s| names_cause(s, &truth));
    let top3 = suspects.iter().take(3).any(|s| names_cause(s, &truth));
    let said = suspects
        .first()
        .and_then(|s| s["explanation"].as_str())
        .unwrap_or("(no suspect)")
        .to_string();
    (top1, top3, said)
}

fn main() {
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!(
        "problem-location scoring: {} scenarios x {seeds} seeds",
        SCENARIOS.len()
    );
    let (mut top1_total, mut top3_total, mut n) = (0, 0, 0);
    for scenario in SCENARIOS {
        let (mut top1, mut top3) = (0, 0);
        for seed in 1..=seeds {
            let (t1, t3, said) = run(scenario, seed);
            println!(
                "{scenario:<15} seed {seed}: top-1 {} top-3 {} | {said}",
                t1 as u8, t3 as u8
            );
            top1 += t1 as u32;
            top3 += t3 as u32;
        }
        println!("{scenario:<15} top-1 {top1}/{seeds}, top-3 {top3}/{seeds}");
        top1_total += top1;
        top3_total += top3;
        n += seeds as u32;
    }
    println!(
        "overall: top-1 {:.0}% ({top1_total}/{n}), top-3 {:.0}% ({top3_total}/{n})",
        100.0 * top1_total as f64 / n as f64,
        100.0 * top3_total as f64 / n as f64
    );
}
