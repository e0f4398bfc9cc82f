//! Trace view, trace search, RED per service and the service graph, on
//! generated shop traffic.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Loupe, files_with_extension};

fn generate(loupe: &Loupe, args: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["gen", "--endpoint", &loupe.grpc_url(), "--quiet"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
}

fn get(loupe: &Loupe, path: &str) -> (u16, Value) {
    let response = loupe.client().get(loupe.api_url(path)).send().unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

#[test]
fn trace_view_has_the_tree_critical_path_and_logs() {
    let loupe = Loupe::start(&[]);
    generate(&loupe, &["--rate", "40", "--duration", "3s"]);
    let id = loupe.sql_value("SELECT trace_id FROM spans WHERE name = 'POST /checkout' AND kind = 'server' ORDER BY trace_id LIMIT 1");
    let id = id.as_str().unwrap();
    let (status, trace) = get(&loupe, &format!("/api/v1/traces/{id}"));
    assert_eq!(status, 200, "{trace}");
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(
        spans.len() as u64,
        loupe.count(&format!(
            "SELECT count(*) FROM spans WHERE trace_id = '{id}'"
        ))
    );
    assert_eq!(
        (spans[0]["depth"].clone(), spans[0]["service"].clone()),
        (json!(0), json!("frontend"))
    );
    assert_eq!(trace["root_operation"], "POST /checkout");
    // The critical path covers the root's whole duration, span by span.
    let path = trace["critical_path"].as_array().unwrap();
    let covered: i64 = path
        .iter()
        .map(|s| s["duration_ns"].as_i64().unwrap())
        .sum();
    assert_eq!(covered, trace["duration_ns"].as_i64().unwrap());
    assert!(
        path.iter().any(|s| s["service"] == "payment"),
        "payment is on a checkout's critical path"
    );
    // The email consumer runs after the checkout answered: off the path.
    let consumer = spans
        .iter()
        .find(|s| s["name"] == "orders process")
        .expect("consumer span");
    assert_eq!(consumer["critical_path_ns"], json!(0));
    assert!(consumer["depth"].as_i64().unwrap() > 1);
    for span in spans {
        assert!(span["self_time_ns"].as_i64().unwrap() <= span["duration_ns"].as_i64().unwrap());
    }
    let logs = trace["logs"].as_array().unwrap();
    assert!(!logs.is_empty());
    assert_eq!(
        logs.len() as u64,
        loupe.count(&format!(
            "SELECT count(*) FROM logs WHERE trace_id = '{id}'"
        ))
    );

    assert_eq!(
        get(&loupe, "/api/v1/traces/0123456789abcdef0123456789abcdef").0,
        404
    );
    assert_eq!(get(&loupe, "/api/v1/traces/not-a-trace").0, 400);
}

#[test]
fn trace_search_red_and_service_graph_agree_with_sql() {
    let loupe = Loupe::start(&[]);
    generate(
        &loupe,
        &[
            "--scenario",
            "payment-errors",
            "--fault-at",
            "0s",
            "--rate",
            "60",
            "--duration",
            "4s",
        ],
    );

    let (status, found) = get(
        &loupe,
        "/api/v1/traces?service=payment&status=error&attr.service.instance.id=payment-2&limit=10",
    );
    assert_eq!(status, 200, "{found}");
    let traces = found["traces"].as_array().unwrap();
    assert!(!traces.is_empty());
    for t in traces {
        assert!(t["error_count"].as_i64().unwrap() > 0, "{t}");
        assert!(
            t["services"]
                .as_array()
                .unwrap()
                .contains(&json!("payment"))
        );
        assert_eq!(t["root_service"], "frontend");
    }
    let (_, slow) = get(&loupe, "/api/v1/traces?min_duration=10s");
    assert!(slow["traces"].as_array().unwrap().is_empty());

    let (status, red) = get(&loupe, "/api/v1/services?start=now-1h&step=1m");
    assert_eq!(status, 200, "{red}");
    let services = red["services"].as_array().unwrap();
    let payment = services.iter().find(|s| s["service"] == "payment").unwrap();
    let sql = loupe.sql(
        "SELECT count(*), sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END),
                count(DISTINCT resource_attributes['service.instance.id'])
         FROM spans WHERE service = 'payment' AND kind IN ('server', 'consumer')",
    );
    assert_eq!(payment["requests"], sql[0][0]);
    assert_eq!(payment["errors"], sql[0][1]);
    assert_eq!(payment["instances"], sql[0][2]);
    let error_rate = sql[0][1].as_f64().unwrap() / sql[0][0].as_f64().unwrap();
    assert!((payment["error_rate"].as_f64().unwrap() - error_rate).abs() < 1e-9);
    let p95_sql = loupe
        .sql_value("SELECT approx_percentile_cont(duration_ns, 0.95) FROM spans WHERE service = 'payment' AND kind IN ('server', 'consumer')")
        .as_f64()
        .unwrap();
    let p95_api = payment["p95_ms"].as_f64().unwrap() * 1e6;
    assert!(
        (p95_api - p95_sql).abs() / p95_sql < 0.02,
        "p95 {p95_api} vs {p95_sql}"
    );
    assert!(
        payment["operations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["operation"] == "POST /api/charge")
    );
    assert!(!payment["series"].as_array().unwrap().is_empty());
    let point = &payment["series"][0];
    assert!(
        point["p50_ms"].as_f64().unwrap() <= point["p99_ms"].as_f64().unwrap(),
        "{point}"
    );

    // One service split by instance: the groups add up to the service,
    // the bad instance carries the errors, each group has its series.
    let (status, split) = get(
        &loupe,
        "/api/v1/services?start=now-1h&step=1m&service=payment&by=instance",
    );
    assert_eq!(status, 200, "{split}");
    let only = split["services"].as_array().unwrap();
    assert_eq!(only.len(), 1, "{split}");
    assert_eq!(only[0]["by"], "instance");
    assert_eq!(only[0]["requests"], payment["requests"]);
    let groups = only[0]["groups"].as_array().unwrap();
    let total: i64 = groups.iter().map(|g| g["requests"].as_i64().unwrap()).sum();
    assert_eq!(json!(total), payment["requests"], "{split}");
    let worst = groups
        .iter()
        .max_by(|a, b| {
            a["error_rate"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["error_rate"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(worst["value"], "payment-2", "{split}");
    let by_sql = loupe.sql(
        "SELECT count(*), sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) FROM spans
         WHERE service = 'payment' AND kind IN ('server', 'consumer') AND resource_attributes['service.instance.id'] = 'payment-2'",
    );
    assert_eq!(worst["requests"], by_sql[0][0]);
    assert_eq!(worst["errors"], by_sql[0][1]);
    for g in groups {
        let series = g["series"].as_array().unwrap();
        assert!(!series.is_empty(), "{g}");
        let sum: i64 = series.iter().map(|p| p["requests"].as_i64().unwrap()).sum();
        assert_eq!(json!(sum), g["requests"], "{g}");
    }
    let (status, ops) = get(&loupe, "/api/v1/services?service=payment&by=operation");
    assert_eq!(status, 200, "{ops}");
    assert!(
        ops["services"][0]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["value"] == "POST /api/charge" && g.get("series").is_none()),
        "{ops}"
    );
    assert_eq!(get(&loupe, "/api/v1/services?by=instance").0, 400);
    assert_eq!(
        get(&loupe, "/api/v1/services?service=payment&by=host").0,
        400
    );
    assert_eq!(
        get(
            &loupe,
            "/api/v1/services?service=payment&by=instance&start=now-1h&step=1s"
        )
        .0,
        400,
        "over 500 points per group"
    );

    let (status, graph) = get(&loupe, "/api/v1/service-graph");
    assert_eq!(status, 200, "{graph}");
    let edge = |caller: &str, callee: &str| {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["caller"] == caller && e["callee"] == callee)
            .cloned()
            .unwrap_or_else(|| panic!("no edge {caller} -> {callee}: {graph}"))
    };
    assert_eq!(edge("frontend", "checkout")["inferred"], json!(false));
    assert_eq!(edge("checkout", "email")["inferred"], json!(false));
    assert!(edge("checkout", "payment")["errors"].as_i64().unwrap() > 0);
    let db = edge("inventory", "postgresql postgres-inventory");
    assert_eq!(db["inferred"], json!(true));
    let node = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "redis redis-cart")
        .cloned();
    assert_eq!(node.unwrap()["inferred"], json!(true));
}

/// Lookups by trace id go through each spans file's trace index; after a
/// restart (everything in Parquet, several files) they must find exactly
/// the spans a full scan finds.
#[test]
fn trace_index_lookups_match_full_scans_on_parquet() {
    let mut loupe = Loupe::start(&[]);
    for seed in ["1", "2", "3"] {
        generate(
            &loupe,
            &["--rate", "200", "--duration", "2s", "--seed", seed],
        );
        loupe.clean_restart();
    }
    let (_, splits) = get(&loupe, "/api/v1/splits");
    let files = splits["spans"].as_array().unwrap();
    assert!(files.len() >= 3, "{splits}");
    assert!(
        files
            .iter()
            .all(|f| f["index_path"].as_str().unwrap().ends_with(".tix"))
    );
    let expected = loupe
        .sql("SELECT trace_id, count(*) FROM spans GROUP BY trace_id ORDER BY trace_id LIMIT 40");
    assert_eq!(expected.len(), 40);
    let mut with_logs = 0;
    for row in &expected {
        let id = row[0].as_str().unwrap();
        let n = row[1].as_u64().unwrap();
        assert_eq!(
            loupe.count(&format!(
                "SELECT count(*) FROM spans WHERE trace_id = '{id}'"
            )),
            n,
            "{id}"
        );
        let upper = id.to_ascii_uppercase();
        assert_eq!(
            loupe.count(&format!(
                "SELECT count(*) FROM spans WHERE '{upper}' = upper(trace_id)"
            )),
            n
        );
        let (status, trace) = get(&loupe, &format!("/api/v1/traces/{id}"));
        assert_eq!(status, 200);
        assert_eq!(trace["spans"].as_array().unwrap().len() as u64, n, "{id}");
        // Its logs come through the logs' full-text index.
        let logs = loupe.count(&format!(
            "SELECT count(*) FROM logs WHERE '{upper}' = upper(trace_id)"
        ));
        assert_eq!(
            loupe.count(&format!(
                "SELECT count(*) FROM logs WHERE trace_id = '{id}'"
            )),
            logs
        );
        assert_eq!(trace["logs"].as_array().unwrap().len() as u64, logs, "{id}");
        with_logs += u64::from(logs > 0);
    }
    assert!(with_logs > 10, "only {with_logs} of 40 traces have logs");

    // A damaged index file costs speed, not answers: that file is scanned.
    let indexes = files_with_extension(&loupe.data_dir().join("splits/spans"), "tix");
    for path in &indexes {
        std::fs::write(path, b"garbage").unwrap();
    }
    assert!(indexes.len() >= 3, "{} index files", indexes.len());
    loupe.clean_restart();
    for row in &expected[..5] {
        let id = row[0].as_str().unwrap();
        assert_eq!(
            loupe.count(&format!(
                "SELECT count(*) FROM spans WHERE trace_id = '{id}'"
            )),
            row[1].as_u64().unwrap()
        );
    }
    assert_eq!(
        loupe.count(
            "SELECT count(*) FROM spans WHERE trace_id = '0123456789abcdef0123456789abcdef'"
        ),
        0
    );
}

/// A "poison trace": one trace of 60,000 spans, each the child of the one
/// before. Walking it once recursed per level and aborted the process.
#[test]
fn a_trace_sixty_thousand_spans_deep_is_answered_and_the_server_stays_up() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    let loupe = Loupe::start(&[]);
    let trace_id: Vec<u8> = (1..=16).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n: u64 = 60_000;
    let span_id = |i: u64| (i + 1).to_be_bytes().to_vec();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let spans = chunk
            .iter()
            .map(|&i| Span {
                trace_id: trace_id.clone(),
                span_id: span_id(i),
                parent_span_id: if i == 0 { Vec::new() } else { span_id(i - 1) },
                name: "deeper".into(),
                kind: 1,
                start_time_unix_nano: now - 10_000_000_000 + i,
                end_time_unix_nano: now - 10_000_000_000 + 2 * n - i,
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("poison".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let status = loupe
            .post(
                "/v1/traces",
                "application/x-protobuf",
                request.encode_to_vec(),
            )
            .status()
            .as_u16();
        assert_eq!(status, 200);
    }
    let response = loupe
        .client()
        .get(loupe.api_url("/api/v1/traces/0102030405060708090a0b0c0d0e0f10"))
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["span_count"], n);
    assert_eq!(body["truncated"], false);
    assert_eq!(
        body["critical_path"].as_array().unwrap().len() as u64,
        2 * n - 1
    );
    assert_eq!(
        reqwest::blocking::get(loupe.api_url("/healthz"))
            .unwrap()
            .status(),
        200
    );
}
