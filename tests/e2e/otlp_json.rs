//! Raw OTLP/JSON over HTTP, as the Collector and browser SDKs send it:
//! hex ids, int64 as strings or numbers, enums as integers, every
//! attribute type and every metric kind.

use std::io::Write;

use serde_json::{Value, json};

/// Retention long enough for the fixtures' fixed timestamps.
const LONG_RETENTION: [&str; 6] = [
    "--retention-logs",
    "3650d",
    "--retention-spans",
    "3650d",
    "--retention-metrics",
    "3650d",
];

use crate::harness::Loupe;

const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
const SPAN_ID: &str = "eee19b7ec3c1b174";
const T0: &str = "1764165600000000000";

fn resource(service: &str) -> Value {
    json!({"attributes": [
        {"key": "service.name", "value": {"stringValue": service}},
        {"key": "host.name", "value": {"stringValue": "node-7"}}
    ]})
}

fn all_attribute_types() -> Value {
    json!([
        {"key": "s", "value": {"stringValue": "text"}},
        {"key": "b", "value": {"boolValue": false}},
        {"key": "i_str", "value": {"intValue": "9007199254740993"}},
        {"key": "i_num", "value": {"intValue": 404}},
        {"key": "d", "value": {"doubleValue": 2.5}},
        {"key": "bytes", "value": {"bytesValue": "AQL/"}},
        {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "x"}]}}},
        {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "inner", "value": {"boolValue": true}}]}}}
    ])
}

fn post_json(loupe: &Loupe, path: &str, body: &Value) -> (u16, Value) {
    let response = loupe.post(path, "application/json", body.to_string().into_bytes());
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json",
        "responses use the request's encoding"
    );
    (status, response.json().unwrap())
}

#[test]
fn otlp_json_logs_spans_and_all_metric_kinds_round_trip() {
    // The fixtures carry fixed 2025 timestamps: accept them.
    let loupe = Loupe::start(&LONG_RETENTION);

    let logs = json!({"resourceLogs": [{
        "resource": resource("json-svc"),
        "scopeLogs": [{"scope": {"name": "lib", "version": "1.2"}, "logRecords": [
            {"timeUnixNano": T0, "severityNumber": 13, "body": {"stringValue": "disk almost full"},
             "traceId": TRACE_ID, "spanId": SPAN_ID, "attributes": all_attribute_types()},
            {"timeUnixNano": T0, "severityNumber": 9, "severityText": "Information",
             "body": {"kvlistValue": {"values": [{"key": "event", "value": {"stringValue": "login"}}]}}}
        ]}]
    }]});
    assert_eq!(post_json(&loupe, "/v1/logs", &logs), (200, json!({})));

    let spans = json!({"resourceSpans": [{
        "resource": resource("json-svc"),
        "scopeSpans": [{"scope": {"name": "lib"}, "spans": [{
            "traceId": TRACE_ID, "spanId": SPAN_ID, "parentSpanId": "",
            "name": "POST /checkout", "kind": 2,
            "startTimeUnixNano": T0, "endTimeUnixNano": 1764165600250000000u64,
            "attributes": all_attribute_types(),
            "events": [{"timeUnixNano": "1764165600100000000", "name": "exception",
                        "attributes": [{"key": "exception.message", "value": {"stringValue": "nope"}}]}],
            "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}],
            "status": {"code": 2, "message": "failed"}
        }]}]
    }]});
    assert_eq!(post_json(&loupe, "/v1/traces", &spans), (200, json!({})));

    let point = |extra: Value| {
        let mut p = json!({"timeUnixNano": T0, "startTimeUnixNano": "1764165500000000000",
                           "attributes": [{"key": "route", "value": {"stringValue": "/a"}}]});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };
    let metrics = json!({"resourceMetrics": [{
        "resource": resource("json-svc"),
        "scopeMetrics": [{"metrics": [
            {"name": "g", "unit": "1", "gauge": {"dataPoints": [point(json!({"asDouble": 0.75}))]}},
            {"name": "c", "sum": {"aggregationTemporality": 1, "isMonotonic": true,
                                  "dataPoints": [point(json!({"asInt": "12"}))]}},
            {"name": "h", "histogram": {"aggregationTemporality": 2, "dataPoints": [point(json!({
                "count": "6", "sum": 10.5, "min": 0.5, "max": 4.0,
                "explicitBounds": [1.0, 2.0], "bucketCounts": ["1", "2", "3"]}))]}},
            {"name": "e", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [point(json!({
                "count": "4", "sum": 8.0, "scale": 3, "zeroCount": "1",
                "positive": {"offset": 2, "bucketCounts": ["1", "2"]},
                "negative": {"offset": -1, "bucketCounts": ["0"]}}))]}},
            {"name": "s", "summary": {"dataPoints": [point(json!({
                "count": "10", "sum": 55.0,
                "quantileValues": [{"quantile": 0.5, "value": 5.0}, {"quantile": 0.99, "value": 9.9}]}))]}}
        ]}]
    }]});
    assert_eq!(post_json(&loupe, "/v1/metrics", &metrics), (200, json!({})));

    let log = loupe.sql(
        "SELECT body, severity_text, trace_id, span_id, scope_name, scope_version,
                attributes['s'], attributes['b'], attributes['i_str'], attributes['i_num'], attributes['d'],
                attributes['bytes'], attributes['arr'], attributes['kv'], resource_attributes['host.name'],
                CAST(time AS BIGINT)
         FROM logs WHERE severity_number = 13",
    );
    assert_eq!(
        log,
        vec![vec![
            json!("disk almost full"),
            json!("WARN"),
            json!(TRACE_ID),
            json!(SPAN_ID),
            json!("lib"),
            json!("1.2"),
            json!("text"),
            json!("false"),
            json!("9007199254740993"),
            json!("404"),
            json!("2.5"),
            json!("AQL/"),
            json!(r#"[1,"x"]"#),
            json!(r#"{"inner":true}"#),
            json!("node-7"),
            json!(1764165600000000000i64),
        ]]
    );
    let structured =
        loupe.sql("SELECT body, severity_text, trace_id FROM logs WHERE severity_number = 9");
    assert_eq!(
        structured,
        vec![vec![
            json!(r#"{"event":"login"}"#),
            json!("Information"),
            Value::Null
        ]]
    );

    let span = loupe.sql(&format!(
        "SELECT name, kind, status_code, status_message, duration_ns, parent_span_id, attributes['i_str'], links
         FROM spans WHERE trace_id = '{TRACE_ID}'"
    ));
    assert_eq!(
        span[0][..7].to_vec(),
        vec![
            json!("POST /checkout"),
            json!("server"),
            json!("error"),
            json!("failed"),
            json!(250_000_000),
            Value::Null,
            json!("9007199254740993"),
        ]
    );
    let links: Value = serde_json::from_str(span[0][7].as_str().unwrap()).unwrap();
    assert_eq!(links[0]["span_id"], "b7ad6b7169203331");

    let rows = loupe.sql(
        "SELECT name, kind, value, count, sum, min, max, bucket_bounds, bucket_counts, exp_scale, exp_zero_count,
                exp_positive_offset, exp_positive_counts, exp_negative_offset, quantiles, quantile_values,
                temporality, is_monotonic, attributes['route'], unit
         FROM metrics ORDER BY name",
    );
    let by_name = |n: &str| {
        rows.iter()
            .find(|r| r[0] == json!(n))
            .unwrap_or_else(|| panic!("{n}: {rows:?}"))
            .clone()
    };
    let null = Value::Null;
    assert_eq!(
        by_name("g")[1..4].to_vec(),
        vec![json!("gauge"), json!(0.75), null.clone()]
    );
    assert_eq!(by_name("g")[19], json!("1"));
    let c = by_name("c");
    assert_eq!(
        (&c[1], &c[2], &c[16], &c[17], &c[18]),
        (
            &json!("sum"),
            &json!(12.0),
            &json!("delta"),
            &json!(true),
            &json!("/a")
        )
    );
    let h = by_name("h");
    assert_eq!(
        h[1..9].to_vec(),
        vec![
            json!("histogram"),
            null.clone(),
            json!(6),
            json!(10.5),
            json!(0.5),
            json!(4.0),
            json!([1.0, 2.0]),
            json!([1, 2, 3]),
        ]
    );
    assert_eq!(h[16], json!("cumulative"));
    let e = by_name("e");
    assert_eq!(
        e[9..14].to_vec(),
        vec![json!(3), json!(1), json!(2), json!([1, 2]), json!(-1)]
    );
    let s = by_name("s");
    assert_eq!(s[3..5].to_vec(), vec![json!(10), json!(55.0)]);
    assert_eq!(
        s[14..16].to_vec(),
        vec![json!([0.5, 0.99]), json!([5.0, 9.9])]
    );
}

#[test]
fn gzip_json_and_partial_success_are_reported_in_json() {
    // The fixtures carry fixed 2025 timestamps: accept them.
    let loupe = Loupe::start(&LONG_RETENTION);
    let spans = json!({"resourceSpans": [{"resource": resource("gz"), "scopeSpans": [{"spans": [
        {"traceId": TRACE_ID, "spanId": SPAN_ID, "name": "ok", "startTimeUnixNano": T0, "endTimeUnixNano": T0},
        {"traceId": "5b8efff798038103d269b6", "spanId": SPAN_ID, "name": "short-trace-id"}
    ]}]}]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(spans.to_string().as_bytes()).unwrap();
    let response = loupe
        .client()
        .post(loupe.otlp_http_url("/v1/traces"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(body["partialSuccess"]["rejectedSpans"], json!("1"));
    let message = body["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("trace_id must be 16 bytes, got 11"),
        "{message}"
    );
    assert_eq!(loupe.sql("SELECT name FROM spans"), vec![vec![json!("ok")]]);
}
