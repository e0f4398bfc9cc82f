//! Alerting end to end: a SQL rule over logs the test sends, through
//! pending and firing to resolved, notified as Alertmanager's signed
//! webhook body to a real receiver; state kept across a restart without
//! re-notifying; a rule that fails at run time shows `error`.

use std::time::Duration;

use prost::Message;
use serde_json::{Value, json};

use crate::capacity::{call, ok};
use crate::harness::{Loupe, deadline_in, wait_until};
use crate::otlp_proto::logs_request;
use crate::webhook_receiver::{Delivery, Receiver};

fn send_boom(loupe: &Loupe, service: &str) {
    let body = logs_request(service, (0..3).map(|i| format!("boom {i}"))).encode_to_vec();
    let status = loupe
        .post("/v1/logs", "application/x-protobuf", body)
        .status()
        .as_u16();
    assert_eq!(status, 200);
}

fn alerts(loupe: &Loupe) -> Vec<Value> {
    ok(loupe, "GET", "/api/v1/alerts", None)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn statuses(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .filter(|d| d.status < 300)
        .map(|d| d.body["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn a_rule_goes_pending_firing_resolved_and_notifies_once_each() {
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 200);
    let mut loupe = Loupe::start(&[]);

    // The rule's SQL is checked when saved: unknown columns and receivers are refused.
    let (status, body) = call(
        &loupe,
        "PUT",
        "/api/v1/alerts/rules/broken",
        Some(json!({"sql": "SELECT no_such_column FROM logs"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no_such_column"),
        "{body}"
    );
    let (status, _) = call(
        &loupe,
        "PUT",
        "/api/v1/alerts/rules/orphan",
        Some(json!({"sql": "SELECT 1 AS n", "receivers": ["nobody"]})),
    );
    assert_eq!(status, 400);

    let view = ok(
        &loupe,
        "PUT",
        "/api/v1/alerts/receivers/ops",
        Some(json!({
            "type": "webhook", "url": receiver.url(), "secret": secret, "group_by": ["service"],
            "group_wait": "1s", "group_interval": "2s", "repeat_interval": "1h",
        })),
    );
    assert_eq!(view["secret_set"], true, "{view}");
    assert!(view.get("secret").is_none(), "{view}");
    ok(
        &loupe,
        "PUT",
        "/api/v1/alerts/rules/booms",
        Some(json!({
            "sql": "SELECT service, count(*) AS booms FROM logs WHERE body LIKE 'boom%' AND time > now() - INTERVAL '3 seconds' GROUP BY service",
            "every": "1s", "for": "3s",
            "condition": {"column": "booms", "op": ">", "threshold": 0},
            "labels": {"severity": "page"},
            "annotations": {"summary": "{{ $labels.service }} said boom {{ $value }} times"},
            "receivers": ["ops"],
        })),
    );

    // Booms for a while: pending first, never notified, then firing.
    let mut saw_pending = false;
    let fired = wait_until(deadline_in(Duration::from_secs(30)), || {
        send_boom(&loupe, "cart");
        let now = alerts(&loupe);
        saw_pending |= now.iter().any(|a| a["state"] == "pending");
        assert!(receiver.deliveries().is_empty() || now.iter().any(|a| a["state"] == "firing"));
        now.iter().any(|a| a["state"] == "firing")
    });
    assert!(fired, "never fired: {:?}", alerts(&loupe));
    assert!(saw_pending, "fired without being pending first");
    // Booms go on until the firing notification is out. Were they to stop
    // first, a pass slowed by a loaded machine could see the alert resolve
    // before its group's first notification, and an alert never notified
    // as firing resolves silently (as in Alertmanager).
    let firing = receiver.wait_for("the firing notification", Duration::from_secs(20), |d| {
        send_boom(&loupe, "cart");
        statuses(d).contains(&"firing".to_string())
    });
    let d = firing
        .iter()
        .find(|d| d.body["status"] == "firing")
        .unwrap();
    assert!(d.signature_ok, "{d:?}");
    let body = &d.body;
    assert_eq!(body["version"], "4");
    assert_eq!(body["receiver"], "ops");
    assert_eq!(body["groupKey"], "{}:{service=\"cart\"}");
    assert_eq!(body["groupLabels"], json!({"service": "cart"}));
    assert_eq!(body["truncatedAlerts"], 0);
    assert_eq!(
        body["externalURL"],
        format!(
            "http://{}",
            loupe
                .api_url("")
                .trim_start_matches("http://")
                .trim_end_matches('/')
        )
    );
    assert_eq!(body["commonLabels"]["alertname"], "booms");
    let alert = &body["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(
        alert["labels"],
        json!({"alertname": "booms", "service": "cart", "severity": "page"})
    );
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("cart said boom "),
        "{alert}"
    );
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/alerts/rules/booms")
    );
    assert_eq!(alert["fingerprint"].as_str().unwrap().len(), 16);

    // Quiet: the alert resolves and one resolved notification follows.
    let resolved = receiver.wait_for("the resolved notification", Duration::from_secs(30), |d| {
        statuses(d).contains(&"resolved".to_string())
    });
    assert_eq!(
        statuses(&resolved)
            .iter()
            .filter(|s| *s == "firing")
            .count(),
        1,
        "{:?}",
        statuses(&resolved)
    );
    let r = resolved
        .iter()
        .find(|d| d.body["status"] == "resolved")
        .unwrap();
    assert_ne!(r.body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    let history = ok(&loupe, "GET", "/api/v1/alerts/history", None);
    let states: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter_map(|h| h["state"].as_str())
        .collect();
    assert_eq!(states, ["pending", "firing", "resolved"], "{history}");

    // A restart keeps rules, receivers and state, and sends nothing again.
    // Delivery is at least once: a kill between the receiver's answer and
    // the outbox recording it sends that message again, so the restart
    // waits until the outbox has recorded every delivery.
    wait_until_outbox_settled(&loupe);
    let before = receiver.deliveries().len();
    loupe.restart();
    let rules = ok(&loupe, "GET", "/api/v1/alerts/rules", None);
    assert_eq!(rules[0]["name"], "booms", "{rules}");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        receiver.deliveries().len(),
        before,
        "re-notified after restart"
    );
    assert_eq!(
        ok(&loupe, "GET", "/api/v1/alerts/receivers/ops", None)["secret_set"],
        true
    );
}

#[test]
fn a_rule_that_fails_at_run_time_shows_error() {
    let loupe = Loupe::start(&[]);
    // Plans and runs while there are no logs; fails once a body is not a number.
    ok(
        &loupe,
        "PUT",
        "/api/v1/alerts/rules/numbers",
        Some(json!({"sql": "SELECT CAST(body AS BIGINT) AS n FROM logs", "every": "1s"})),
    );
    send_boom(&loupe, "cart");
    let errored = wait_until(deadline_in(Duration::from_secs(20)), || {
        let rule = ok(&loupe, "GET", "/api/v1/alerts/rules/numbers", None);
        rule["health"] == "error"
            && rule["last_evaluation"]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
    });
    assert!(
        errored,
        "{}",
        ok(&loupe, "GET", "/api/v1/alerts/rules/numbers", None)
    );
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on 127.0.0.1,
/// routing everything to `webhook_url`; stopped when dropped.
struct Alertmanager {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start(webhook_url: &str) -> Alertmanager {
        crate::harness::init_tls();
        let binary = ["prometheus-alertmanager", "alertmanager"]
            .into_iter()
            .find(|b| {
                std::process::Command::new(b)
                    .arg("--version")
                    .output()
                    .is_ok()
            })
            .expect("Alertmanager is not installed: apt-get install prometheus-alertmanager (.ci/run does)");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: test\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: test\n    webhook_configs:\n      - url: {webhook_url}\n        send_resolved: true\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let ready = wait_until(deadline_in(Duration::from_secs(20)), || {
            reqwest::blocking::get(format!("{url}/-/ready")).is_ok_and(|r| r.status().is_success())
        });
        assert!(ready, "Alertmanager did not become ready on {url}");
        Alertmanager {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn alerts_reach_a_real_alertmanager_and_resolve_through_it() {
    let hook = Receiver::start(&loupe_notify::signing::generate_secret(), 200);
    let am = Alertmanager::start(&hook.url());
    let loupe = Loupe::start(&[]);
    ok(
        &loupe,
        "PUT",
        "/api/v1/alerts/receivers/am",
        Some(json!({"type": "alertmanager", "url": am.url})),
    );
    ok(
        &loupe,
        "PUT",
        "/api/v1/alerts/rules/booms",
        Some(json!({
            "sql": "SELECT service, count(*) AS booms FROM logs WHERE body LIKE 'boom%' AND time > now() - INTERVAL '3 seconds' GROUP BY service",
            "every": "1s",
            "condition": {"column": "booms", "op": ">", "threshold": 0},
            "receivers": ["am"],
        })),
    );
    for _ in 0..4 {
        send_boom(&loupe, "cart");
        std::thread::sleep(Duration::from_millis(500));
    }
    let seen = hook.wait_for(
        "Alertmanager's firing and resolved notifications",
        Duration::from_secs(60),
        |d| {
            let s = statuses(d);
            s.contains(&"firing".to_string()) && s.contains(&"resolved".to_string())
        },
    );
    let firing = seen.iter().find(|d| d.body["status"] == "firing").unwrap();
    assert_eq!(firing.body["version"], "4");
    assert_eq!(firing.body["alerts"][0]["labels"]["alertname"], "booms");
    assert_eq!(firing.body["alerts"][0]["labels"]["service"], "cart");
    assert!(
        firing.body["alerts"][0]["generatorURL"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/alerts/rules/booms")
    );
}

#[test]
fn notifications_reach_an_https_receiver_trusted_through_configuration() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert_pem).unwrap();
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start_tls(&secret, 200, &cert_pem, &key_pem);
    assert!(receiver.url().starts_with("https://127.0.0.1:"));
    let loupe = Loupe::start(&["--webhook-ca-file", ca.to_str().unwrap()]);
    ok(
        &loupe,
        "PUT",
        "/api/v1/alerts/receivers/tls",
        Some(
            json!({"type": "webhook", "url": receiver.url(), "secret": secret, "group_wait": "0s"}),
        ),
    );
    ok(
        &loupe,
        "PUT",
        "/api/v1/alerts/rules/always",
        Some(
            json!({"sql": "SELECT 'cart' AS service, 1 AS n", "every": "1s", "receivers": ["tls"]}),
        ),
    );
    let seen = receiver.wait_for("a notification over HTTPS", Duration::from_secs(20), |d| {
        !d.is_empty()
    });
    assert!(seen[0].signature_ok, "{:?}", seen[0]);
    assert_eq!(seen[0].body["alerts"][0]["labels"]["service"], "cart");
}

#[test]
fn a_refusing_receiver_gets_one_attempt_and_an_unavailable_one_gets_retries() {
    let secret = loupe_notify::signing::generate_secret();
    let gone = Receiver::start(&secret, 404);
    let flaky = Receiver::start(&secret, 503);
    let loupe = Loupe::start(&[]);
    for (name, receiver) in [("gone", &gone), ("flaky", &flaky)] {
        ok(
            &loupe,
            "PUT",
            &format!("/api/v1/alerts/receivers/{name}"),
            Some(
                json!({"type": "webhook", "url": receiver.url(), "secret": secret, "group_wait": "0s"}),
            ),
        );
    }
    ok(
        &loupe,
        "PUT",
        "/api/v1/alerts/rules/always",
        Some(
            json!({"sql": "SELECT 'cart' AS service, 1 AS n", "every": "1s", "receivers": ["gone", "flaky"]}),
        ),
    );
    flaky.wait_for("two refused attempts", Duration::from_secs(30), |d| {
        d.len() >= 2
    });
    flaky.set_status(200);
    flaky.wait_for(
        "a delivery after the outage",
        Duration::from_secs(30),
        |d| d.iter().any(|d| d.status == 200),
    );
    let seen = gone.deliveries();
    assert_eq!(seen.len(), 1, "a 404 is not retried: {seen:?}");
    assert!(seen[0].signature_ok);
}

#[test]
fn a_firing_alert_names_the_injected_cause_among_its_suspects() {
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 200);
    // Problem location in a debug build on a loaded machine can take longer
    // than the production 5 s, after which the alert goes out without
    // suspects (what this test looks for).
    let loupe = Loupe::start(&["--alert-suspects-timeout", "120s"]);
    ok(
        &loupe,
        "PUT",
        "/api/v1/alerts/receivers/ops",
        Some(
            json!({"type": "webhook", "url": receiver.url(), "secret": secret, "group_wait": "0s", "group_by": ["service"]}),
        ),
    );
    ok(
        &loupe,
        "PUT",
        "/api/v1/alerts/rules/payment_errors",
        Some(json!({
            "sql": "SELECT service, avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate FROM spans WHERE kind = 'server' AND service = 'payment' AND start_time > now() - INTERVAL '20 seconds' GROUP BY service HAVING count(*) >= 10",
            "every": "1s", "for": "10s",
            "condition": {"column": "error_rate", "op": ">", "threshold": 0.05},
            "receivers": ["ops"],
        })),
    );
    let mut generator = crate::capacity::spawn_gen(
        &loupe,
        &[
            "--scenario",
            "payment-errors",
            "--rate",
            "60",
            "--duration",
            "240s",
            "--fault-at",
            "30s",
            "--seed",
            "3",
        ],
    );
    // On a loaded machine the generator may fall behind its rate: the rule
    // needs only 10 payment spans in 20 s and a 5 % error rate held for
    // 10 s (payment-2 fails 30 % of its charges), and the wait is long;
    // the test ends as soon as the notification arrives.
    let seen = receiver.wait_for("a firing notification", Duration::from_secs(200), |d| {
        d.iter().any(|d| d.body["status"] == "firing")
    });
    let _ = generator.kill();
    let _ = generator.wait();
    let firing = seen.iter().find(|d| d.body["status"] == "firing").unwrap();
    let annotations = &firing.body["alerts"][0]["annotations"];
    let suspects: Vec<&str> = ["suspect_1", "suspect_2", "suspect_3"]
        .iter()
        .filter_map(|k| annotations[*k].as_str())
        .collect();
    assert!(
        suspects.iter().any(|s| s.contains("payment-2")),
        "suspects {suspects:?} do not name payment-2; server log: {}",
        loupe.log()
    );
    assert!(
        annotations["problems_url"]
            .as_str()
            .is_some_and(|u| u.contains("/?from=")),
        "{annotations}"
    );
}

#[test]
fn a_new_error_log_pattern_fires_its_template_rule() {
    let loupe = Loupe::start(&[]);
    let view = ok(
        &loupe,
        "POST",
        "/api/v1/alerts/rules/from-template",
        Some(json!({"template": "log_pattern", "every": "1s", "for": "0s", "window": "1m"})),
    );
    assert_eq!(view["name"], "log_pattern", "{view}");
    let mut request = crate::otlp_proto::logs_request(
        "disk",
        (0..6).map(|i| format!("disk full on /dev/sda{i} after {} writes", 100 + i)),
    );
    for record in &mut request.resource_logs[0].scope_logs[0].log_records {
        record.severity_number = 17;
        record.severity_text = "ERROR".into();
    }
    let status = loupe
        .post(
            "/v1/logs",
            "application/x-protobuf",
            request.encode_to_vec(),
        )
        .status()
        .as_u16();
    assert_eq!(status, 200);
    // The SQL function behind it groups the six lines as one template.
    let rows = loupe.sql("SELECT log_template(body), count(*) FROM logs GROUP BY 1");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], 6);
    let mut firing = Vec::new();
    let fired = wait_until(deadline_in(Duration::from_secs(30)), || {
        firing = alerts(&loupe)
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .collect();
        !firing.is_empty()
    });
    assert!(fired, "{:?}", alerts(&loupe));
    assert_eq!(firing[0]["labels"]["service"], "disk");
    assert_eq!(
        firing[0]["labels"]["template"],
        "disk full on /dev/<*> after <*> writes"
    );
    assert!(
        firing[0]["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("disk full on"),
        "{}",
        firing[0]
    );
}

/// Waits (at most 30 s) until the webhook outbox in `loupe`'s catalog
/// file holds no message still waiting to be delivered.
fn wait_until_outbox_settled(loupe: &Loupe) {
    let path = loupe.data_dir().join("catalog.sqlite");
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = rusqlite::Connection::open_with_flags(&path, flags).unwrap();
    let pending = || -> i64 {
        conn.query_row(
            "SELECT count(*) FROM webhook_outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!(
        wait_until(deadline_in(Duration::from_secs(30)), || pending() == 0),
        "webhooks still pending after 30 s"
    );
}
