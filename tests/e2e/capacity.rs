//! Capacity planning end to end: a baseline fitted from a generated load
//! test, scale decisions on a traffic spike delivered as signed webhooks
//! to a real receiver, and webhook delivery through a receiver outage and
//! a SIGKILL between commit and delivery.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Loupe, deadline_in, wait_until};
use crate::webhook_receiver::{Delivery, Receiver};

pub(crate) fn call(loupe: &Loupe, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = loupe.api_url(path);
    let request = match method {
        "PUT" => loupe.client().put(url),
        "POST" => loupe.client().post(url),
        "DELETE" => loupe.client().delete(url),
        _ => loupe.client().get(url),
    };
    let request = match body {
        Some(b) => request.json(&b),
        None => request,
    };
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) fn ok(loupe: &Loupe, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, value) = call(loupe, method, path, body);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {value}"
    );
    value
}

/// Starts `loupe gen` in the background.
pub(crate) fn spawn_gen(loupe: &Loupe, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["gen", "--endpoint", &loupe.grpc_url(), "--quiet"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A stepped load test `loupe gen` ran: its start and end (ns) and how
/// many steps it had.
pub(crate) struct LoadTest {
    pub start: i64,
    pub end: i64,
    pub steps: usize,
}

/// Runs `loupe gen`'s stepped load test (capacity 150/s, 2 s steps)
/// against `loupe`.
pub(crate) fn run_load_test(loupe: &Loupe) -> LoadTest {
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.json");
    let status = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["gen", "--endpoint", &loupe.grpc_url(), "--quiet"])
        .args(["--scenario", "load-test-ramp", "--capacity", "150"])
        .args(["--step-duration", "2s", "--truth"])
        .arg(&truth_path)
        .status()
        .unwrap();
    assert!(status.success());
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(&truth_path).unwrap()).unwrap();
    let steps = truth["fault"]["load_test"]["steps"].as_array().unwrap();
    LoadTest {
        start: steps[0]["start_unix_nano"].as_i64().unwrap(),
        end: steps[steps.len() - 1]["end_unix_nano"].as_i64().unwrap(),
        steps: steps.len(),
    }
}

#[test]
fn load_test_fit_recovers_the_generated_capacity() {
    let loupe = Loupe::start(&[]);
    let LoadTest { start, end, .. } = run_load_test(&loupe);

    let fitted = ok(
        &loupe,
        "POST",
        "/api/v1/capacity/baselines/checkout/from-load-test",
        Some(json!({
            "start": start, "end": end, "instance": "checkout-1",
            "slo": {"p99_ms": 100000, "max_error_rate": 1.0},
            "load_test_id": "ramp-1",
        })),
    );
    let fit = &fitted["fit"];
    assert_eq!(fit["steps"].as_array().unwrap().len(), 11, "{fit}");
    let x_max = fit["x_max"].as_f64().unwrap();
    assert!(
        (x_max - 150.0).abs() / 150.0 < 0.10,
        "X_max {x_max} vs the generator's 150 req/s: {fit}"
    );
    let baseline = ok(&loupe, "GET", "/api/v1/capacity/baselines/checkout", None);
    assert_eq!(baseline["load_test_id"], "ramp-1");
    let max_rps = baseline["max_rps_per_instance"].as_f64().unwrap();
    assert!(max_rps <= x_max && max_rps > 0.8 * x_max, "{baseline}");

    // A strict SLO moves the baseline down to the knee; dry runs store nothing.
    let strict = ok(
        &loupe,
        "POST",
        "/api/v1/capacity/baselines/checkout/from-load-test",
        Some(json!({"start": start, "end": end, "dry_run": true,
                    "slo": {"p99_ms": 100000, "max_error_rate": 0.0}})),
    );
    let knee = strict["fit"]["slo_knee"].as_f64().unwrap();
    assert!(knee < x_max, "{strict}");
    assert_eq!(
        strict["baseline"]["max_rps_per_instance"].as_f64(),
        Some(knee)
    );
    let again = ok(&loupe, "GET", "/api/v1/capacity/baselines/checkout", None);
    assert_eq!(again["max_rps_per_instance"].as_f64(), Some(max_rps));

    let (status, body) = call(
        &loupe,
        "POST",
        "/api/v1/capacity/baselines/cart/from-load-test",
        Some(json!({"start": start, "end": end})),
    );
    assert_eq!(status, 422, "{body}");
}

/// Waits until the frontend has sent telemetry for at least `seconds`
/// (its oldest span is that old), so a load window that ends a few seconds
/// ago is full.
fn wait_for_frontend_history(loupe: &Loupe, seconds: u64) {
    let sql = format!(
        "SELECT count(*) FROM spans WHERE service = 'frontend' \
         AND start_time < now() - INTERVAL '{seconds} seconds'"
    );
    assert!(
        wait_until(deadline_in(Duration::from_secs(seconds + 60)), || {
            loupe.count(&sql) > 0
        }),
        "no frontend telemetry {seconds}s old"
    );
}

fn event_type(d: &Delivery) -> &str {
    d.body["type"].as_str().unwrap_or_default()
}

#[test]
fn traffic_spike_sends_signed_scale_up_then_scale_down() {
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 204);
    let loupe = Loupe::start(&[]);
    let mut generator = spawn_gen(
        &loupe,
        &[
            "--scenario",
            "traffic-spike",
            "--rate",
            "20",
            "--duration",
            "70s",
            "--fault-at",
            "20s",
            "--spike-duration",
            "15s",
            "--seed",
            "7",
        ],
    );
    // Let steady traffic fill the load window (5 s, ending 5 s ago)
    // before the policy exists.
    wait_for_frontend_history(&loupe, 12);
    ok(
        &loupe,
        "PUT",
        "/api/v1/capacity/baselines/frontend",
        Some(
            json!({"max_rps_per_instance": 10, "slo": {"p99_ms": 800, "max_error_rate": 0.02},
                    "note": "manual"}),
        ),
    );
    let policy = ok(
        &loupe,
        "PUT",
        "/api/v1/capacity/policies/frontend",
        Some(json!({
            "webhook_url": receiver.url(), "webhook_secret": secret,
            "min": 1, "max": 30, "evaluation_interval": "1s", "load_window": "5s",
            "scale_down": {"stabilization_window": "3s"},
        })),
    );
    assert_eq!(policy["target_utilization"], 0.7, "{policy}");

    let seen = receiver.wait_for("scale-up then scale-down", Duration::from_secs(100), |d| {
        let up = d.iter().position(|d| event_type(d) == "capacity.scale_up");
        up.is_some_and(|up| {
            d[up..]
                .iter()
                .any(|d| event_type(d) == "capacity.scale_down")
        })
    });
    let _ = generator.kill();
    let _ = generator.wait();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for d in &seen {
        assert!(d.signature_ok, "bad signature: {d:?}");
        assert!((now - d.timestamp).abs() < 300, "stale timestamp: {d:?}");
        assert_eq!(d.body["data"]["id"], d.id.as_str(), "{d:?}");
        let (from, to) = (&d.body["data"]["from"], &d.body["data"]["to"]);
        match event_type(d) {
            "capacity.scale_up" => assert!(to.as_u64() > from.as_u64(), "{d:?}"),
            "capacity.scale_down" => assert!(to.as_u64() < from.as_u64(), "{d:?}"),
            other => panic!("unexpected {other}: {d:?}"),
        }
    }
    let up = seen
        .iter()
        .find(|d| event_type(d) == "capacity.scale_up")
        .unwrap();
    let evidence = &up.body["data"]["evidence"];
    assert_eq!(evidence["signals"][0]["name"], "rps", "{evidence}");
    assert!(
        evidence["signals"][0]["ratio"].as_f64().unwrap() > 1.1,
        "{evidence}"
    );

    // The task lifecycle through the API: delivered tasks are `sent`; the
    // executor's ack makes one `acknowledged`.
    let id = up.id.clone();
    let task = ok(&loupe, "GET", &format!("/api/v1/capacity/tasks/{id}"), None);
    assert!(
        matches!(task["state"].as_str(), Some("sent" | "superseded")),
        "{task}"
    );
    let acked = ok(
        &loupe,
        "POST",
        &format!("/api/v1/capacity/tasks/{id}/ack"),
        Some(json!({"status": "succeeded", "message": "scaled"})),
    );
    assert_eq!(acked["state"], "acknowledged", "{acked}");
    let tasks = ok(
        &loupe,
        "GET",
        "/api/v1/capacity/tasks?service=frontend",
        None,
    );
    assert!(tasks.as_array().unwrap().len() >= 2, "{tasks}");
    let decisions = ok(
        &loupe,
        "GET",
        "/api/v1/capacity/decisions?service=frontend&limit=500",
        None,
    );
    let decisions = decisions.as_array().unwrap();
    // After the spike the recommendation falls at once, but the
    // stabilisation window holds the count for a while first.
    assert!(
        decisions
            .iter()
            .any(|d| d["reason"] == "ScaleDownStabilized"),
        "{decisions:?}"
    );
    assert!(
        decisions
            .iter()
            .all(|d| d["evidence"]["ready_instances"].as_u64() > Some(0))
    );
}

#[test]
fn webhook_survives_a_receiver_outage_and_a_kill_before_delivery() {
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 503);
    let loupe = Loupe::start(&[]);
    ok(
        &loupe,
        "PUT",
        "/api/v1/capacity/policies/cart",
        Some(
            json!({"webhook_url": receiver.url(), "webhook_secret": secret,
                    "evaluation_interval": "1h"}),
        ),
    );
    let (status, task) = call(
        &loupe,
        "POST",
        "/api/v1/capacity/tasks",
        Some(json!({"service": "cart", "to": 4, "hold": "10m", "reason": "game day"})),
    );
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(task["state"], "pending");

    // The receiver is down (503 + Retry-After: 1): Loupe keeps retrying.
    receiver.wait_for("two refused attempts", Duration::from_secs(30), |d| {
        d.iter().filter(|d| d.id == id && d.status == 503).count() >= 2
    });
    let pending = ok(&loupe, "GET", &format!("/api/v1/capacity/tasks/{id}"), None);
    assert_eq!(pending["state"], "pending", "{pending}");

    // Killed before any attempt succeeded; the receiver recovers meanwhile.
    let mut loupe = Loupe::start_in(loupe, &[]);
    receiver.set_status(200);
    loupe.restart();
    let seen = receiver.wait_for("delivery after restart", Duration::from_secs(30), |d| {
        d.iter().any(|d| d.id == id && d.status == 200)
    });
    let ours: Vec<&Delivery> = seen.iter().filter(|d| d.id == id).collect();
    assert!(ours.len() >= 3, "{ours:?}");
    assert!(ours.iter().all(|d| d.signature_ok), "{ours:?}");
    assert_eq!(ours[0].body, ours[ours.len() - 1].body);
    assert_eq!(ours[0].body["type"], "capacity.scale_up");
    assert_eq!(ours[0].body["data"]["reason"], "game day");

    // The receiver has answered; the worker records that just after.
    let mut sent = Value::Null;
    let recorded = wait_until(deadline_in(Duration::from_secs(10)), || {
        sent = ok(&loupe, "GET", &format!("/api/v1/capacity/tasks/{id}"), None);
        sent["state"] == "sent"
    });
    assert!(recorded, "{sent}");
    assert!(sent["delivery"]["attempts"].as_u64() >= Some(3), "{sent}");
    assert!(sent["hold_until"].is_string(), "{sent}");

    // Bad input is refused with the field named.
    let (status, body) = call(
        &loupe,
        "PUT",
        "/api/v1/capacity/policies/cart",
        Some(json!({"webhook_url": receiver.url(), "evaluation_interval": "often"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("often"), "{body}");
    // A SQL signal goes through the SQL API's sandbox.
    let (status, body) = call(
        &loupe,
        "PUT",
        "/api/v1/capacity/policies/cart",
        Some(json!({"webhook_url": receiver.url(), "signals": [
            {"type": "sql", "name": "leak", "sql": "SELECT * FROM read_csv('/etc/passwd')", "target": 1}]})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("leak"), "{body}");
    let (status, _) = call(&loupe, "GET", "/api/v1/capacity/tasks/task_nope", None);
    assert_eq!(status, 404);
}

#[test]
fn schedules_apply_without_metrics_and_failures_fall_back_with_an_alert() {
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 204);
    let loupe = Loupe::start(&[]);
    // No baseline and no traffic for `email`: every evaluation fails.
    ok(
        &loupe,
        "PUT",
        "/api/v1/capacity/policies/email",
        Some(
            json!({"webhook_url": receiver.url(), "webhook_secret": secret,
                    "evaluation_interval": "500ms", "max": 10}),
        ),
    );
    // A window open right now (it starts every minute, ends on 1 January).
    let (status, body) = call(
        &loupe,
        "PUT",
        "/api/v1/capacity/schedules/always",
        Some(
            json!({"service": "email", "start_cron": "* * * * *", "end_cron": "0 0 1 1 *",
                    "timezone": "Europe/Berlin", "desired_instances": 6, "lead_seconds": 0}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    // From 1 instance: +4 in the first 15 s period (HPA's default rate
    // limit), then the rest.
    let seen = receiver.wait_for("the scheduled scale-up", Duration::from_secs(40), |d| {
        d.iter().any(|d| d.body["data"]["to"] == 6)
    });
    let first = &seen[0];
    assert_eq!(event_type(first), "capacity.scale_up");
    assert_eq!(first.body["data"]["to"], 5, "{:?}", first.body);
    assert_eq!(first.body["data"]["reason"], "ScaleUpLimit");
    let up = seen.iter().find(|d| d.body["data"]["to"] == 6).unwrap();
    assert_eq!(
        up.body["data"]["evidence"]["schedule"]["windows"],
        json!(["always"])
    );

    // The schedule goes away (no restart): evaluations now fail, and the
    // third in a row raises the fallback alert, keeping the count.
    ok(&loupe, "DELETE", "/api/v1/capacity/schedules/always", None);
    let seen = receiver.wait_for("the fallback alert", Duration::from_secs(30), |d| {
        d.iter().any(|d| event_type(d) == "capacity.fallback")
    });
    let alert = seen
        .iter()
        .find(|d| event_type(d) == "capacity.fallback")
        .unwrap();
    assert!(alert.signature_ok);
    let message = alert.body["data"]["message"].as_str().unwrap();
    assert!(
        message.contains("no baseline") && message.contains("keeping 6"),
        "{message}"
    );
    let events = ok(&loupe, "GET", "/api/v1/capacity/events", None);
    assert_eq!(events[0]["kind"], "fallback", "{events}");
    // The fallback is also Loupe's own log event, so the capacity_fallback
    // alert template (plain SQL over logs) fires on it.
    let view = ok(
        &loupe,
        "POST",
        "/api/v1/alerts/rules/from-template",
        Some(json!({"template": "capacity_fallback", "every": "1s", "for": "0s"})),
    );
    assert_eq!(view["name"], "capacity_fallback", "{view}");
    let mut firing = Value::Null;
    let fired = wait_until(deadline_in(Duration::from_secs(20)), || {
        firing = ok(&loupe, "GET", "/api/v1/alerts?state=firing", None);
        firing.as_array().is_some_and(|a| !a.is_empty())
    });
    assert!(fired, "{firing}");
    assert_eq!(firing[0]["labels"]["service"], "email", "{firing}");
    assert!(
        loupe.count(
            "SELECT count(*) FROM logs WHERE service = 'loupe' AND event_name = 'capacity.fallback'"
        ) >= 1
    );
    assert!(
        !seen.iter().any(|d| event_type(d) == "capacity.scale_down"),
        "{seen:?}"
    );
    let (status, body) = call(
        &loupe,
        "PUT",
        "/api/v1/capacity/schedules/bad",
        Some(
            json!({"service": "email", "start_cron": "* * *", "end_cron": "0 0 1 1 *",
                    "desired_instances": 6}),
        ),
    );
    assert_eq!(status, 400, "{body}");
}

/// Every kind of signal reads live data, per region when asked: request
/// rate from spans and from histogram counts agree, CPU and in-flight
/// requests are measured, and a SQL signal returns its number.
#[test]
fn every_signal_kind_reads_live_load_per_region() {
    let receiver = Receiver::start(&loupe_notify::signing::generate_secret(), 204);
    let loupe = Loupe::start(&[]);
    let mut generator = spawn_gen(
        &loupe,
        &[
            "--rate",
            "30",
            "--duration",
            "60s",
            "--metrics-interval",
            "2s",
            "--seed",
            "11",
        ],
    );
    // Every signal needs its window (12 s, ending 5 s ago) full of data.
    wait_for_frontend_history(&loupe, 20);
    ok(
        &loupe,
        "PUT",
        "/api/v1/capacity/baselines/frontend",
        Some(json!({"max_rps_per_instance": 50})),
    );
    ok(
        &loupe,
        "PUT",
        "/api/v1/capacity/policies/frontend",
        Some(json!({
            "webhook_url": receiver.url(), "evaluation_interval": "1s", "load_window": "12s",
            "split_by_region": true,
            "signals": [
                {"type": "rps"},
                {"type": "rps", "source": "metrics"},
                {"type": "cpu", "target": 0.8},
                {"type": "concurrency", "target": 20},
                {"type": "sql", "name": "routes",
                 "sql": "SELECT count(DISTINCT attributes['http.route']) FROM spans WHERE service = $service AND resource_attributes['cloud.region'] = $region",
                 "target": 100}
            ],
        })),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let decisions = loop {
        let all = ok(
            &loupe,
            "GET",
            "/api/v1/capacity/decisions?service=frontend",
            None,
        );
        let regions: std::collections::BTreeSet<String> = all
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["region"].as_str().map(String::from))
            .collect();
        if regions.len() >= 2 || std::time::Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = generator.kill();
    let _ = generator.wait();
    let decisions = decisions.as_array().unwrap();
    let regions: std::collections::BTreeSet<&str> = decisions
        .iter()
        .filter_map(|d| d["region"].as_str())
        .collect();
    assert_eq!(
        regions,
        ["eu-west-1", "us-east-1"].into_iter().collect(),
        "{decisions:?}"
    );
    let latest = &decisions[0];
    let signals = latest["evidence"]["signals"].as_array().unwrap();
    let value = |name: &str, nth: usize| {
        signals
            .iter()
            .filter(|s| s["name"] == name)
            .nth(nth)
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("{name} #{nth} missing: {latest}"))
    };
    let (from_spans, from_metrics) = (value("rps", 0), value("rps", 1));
    assert!(from_spans > 1.0, "{latest}");
    assert!(
        (from_metrics - from_spans).abs() / from_spans < 0.35,
        "spans {from_spans}/s vs metrics {from_metrics}/s: {latest}"
    );
    assert!(
        value("cpu", 0) > 0.0 && value("concurrency", 0) > 0.0,
        "{latest}"
    );
    assert!(value("routes", 0) >= 1.0, "{latest}");
    assert_eq!(latest["evidence"]["errors"], json!([]), "{latest}");
}
