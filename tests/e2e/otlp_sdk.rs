//! All three signals through the official `opentelemetry-otlp` exporters,
//! over gRPC and over HTTP/protobuf, read back through the SQL API.

use opentelemetry::KeyValue;
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, StringValue, Value};
use opentelemetry_otlp::{
    LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Value as Json, json};

use crate::harness::{Loupe, files_with_extension};

#[derive(Clone, Copy, PartialEq)]
enum Via {
    Grpc,
    HttpProtobuf,
}

struct Exporters {
    spans: SpanExporter,
    logs: LogExporter,
    metrics: MetricExporter,
}

fn exporters(loupe: &Loupe, via: Via) -> Exporters {
    match via {
        Via::Grpc => Exporters {
            spans: SpanExporter::builder()
                .with_tonic()
                .with_endpoint(loupe.grpc_url())
                .with_compression(opentelemetry_otlp::Compression::Gzip)
                .build()
                .unwrap(),
            logs: LogExporter::builder()
                .with_tonic()
                .with_endpoint(loupe.grpc_url())
                .build()
                .unwrap(),
            metrics: MetricExporter::builder()
                .with_tonic()
                .with_endpoint(loupe.grpc_url())
                .build()
                .unwrap(),
        },
        Via::HttpProtobuf => Exporters {
            spans: SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(loupe.otlp_http_url("/v1/traces"))
                .build()
                .unwrap(),
            logs: LogExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(loupe.otlp_http_url("/v1/logs"))
                .build()
                .unwrap(),
            metrics: MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(loupe.otlp_http_url("/v1/metrics"))
                .build()
                .unwrap(),
        },
    }
}

/// Emits a small, fully known workload and returns (trace_id, server span_id).
fn emit(exporters: Exporters, service: &str) -> (String, String) {
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .with_attribute(KeyValue::new("service.instance.id", "i-1"))
        .build();
    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(exporters.spans)
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(exporters.logs)
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_periodic_exporter(exporters.metrics)
        .build();

    let tracer = tracer_provider.tracer("e2e");
    let mut server = tracer
        .span_builder("GET /cart")
        .with_kind(SpanKind::Server)
        .with_attributes(vec![
            KeyValue::new("http.response.status_code", 500),
            KeyValue::new("http.route", "/cart"),
            KeyValue::new("retry", true),
            KeyValue::new("ratio", 0.25),
            KeyValue::new(
                "tags",
                Value::Array(Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from("b"),
                ])),
            ),
        ])
        .start(&tracer);
    server.add_event(
        "exception",
        vec![KeyValue::new("exception.type", "IOError")],
    );
    server.set_status(Status::error("boom"));
    let trace_id = server.span_context().trace_id().to_string();
    let span_id = server.span_context().span_id();
    let parent_cx = Context::current_with_span(server);
    let mut client = tracer
        .span_builder("SELECT carts")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![KeyValue::new("db.system", "postgresql")])
        .start_with_context(&tracer, &parent_cx);
    client.end();

    let logger = logger_provider.logger("e2e");
    let mut record = logger.create_log_record();
    record.set_body("payment failed for order 42".into());
    record.set_severity_number(Severity::Error);
    record.set_severity_text("ERROR");
    record.add_attribute("order.id", 42);
    record.set_trace_context(parent_cx.span().span_context().trace_id(), span_id, None);
    logger.emit(record);
    parent_cx.span().end();

    // Cumulative metrics are exported at force_flush and again at shutdown:
    // the checks read the latest point.
    let meter = meter_provider.meter("e2e");
    let orders = meter.u64_counter("orders").build();
    orders.add(5, &[KeyValue::new("region", "eu")]);
    let latency = meter.f64_histogram("latency").with_unit("s").build();
    for v in [0.1, 0.2, 5.0] {
        latency.record(v, &[]);
    }
    meter.i64_gauge("queue_depth").build().record(7, &[]);

    tracer_provider.force_flush().unwrap();
    logger_provider.force_flush().unwrap();
    meter_provider.force_flush().unwrap();
    tracer_provider.shutdown().unwrap();
    logger_provider.shutdown().unwrap();
    meter_provider.shutdown().unwrap();
    (trace_id, span_id.to_string())
}

fn check_round_trip(loupe: &Loupe, service: &str, trace_id: &str, span_id: &str) {
    // Visible as soon as the exporter's request was acknowledged.
    let spans = loupe.sql(&format!(
        "SELECT name, kind, status_code, status_message, service, parent_span_id,
                attributes['http.response.status_code'], attributes['retry'], attributes['ratio'],
                attributes['tags'], events, resource_attributes['service.instance.id'], span_id
         FROM spans WHERE trace_id = '{trace_id}' ORDER BY name"
    ));
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = &spans[0];
    assert_eq!(
        server[..10].to_vec(),
        vec![
            json!("GET /cart"),
            json!("server"),
            json!("error"),
            json!("boom"),
            json!(service),
            Json::Null,
            json!("500"),
            json!("true"),
            json!("0.25"),
            json!(r#"["a","b"]"#),
        ]
    );
    let events: Json = serde_json::from_str(server[10].as_str().unwrap()).unwrap();
    assert_eq!(events[0]["name"], "exception");
    assert_eq!(events[0]["attributes"]["exception.type"], "IOError");
    assert_eq!(server[11], json!("i-1"));
    assert_eq!(server[12], json!(span_id));
    let client = &spans[1];
    assert_eq!(
        (&client[0], &client[1], &client[5]),
        (&json!("SELECT carts"), &json!("client"), &json!(span_id))
    );

    let logs = loupe.sql(&format!(
        "SELECT body, severity_text, severity_number, trace_id, span_id, attributes['order.id']
         FROM logs WHERE service = '{service}'"
    ));
    assert_eq!(
        logs,
        vec![vec![
            json!("payment failed for order 42"),
            json!("ERROR"),
            json!(17),
            json!(trace_id),
            json!(span_id),
            json!("42"),
        ]]
    );

    let counter = loupe.sql(&format!(
        "SELECT kind, value, temporality, is_monotonic, attributes['region']
         FROM metrics WHERE service = '{service}' AND name = 'orders' ORDER BY time DESC LIMIT 1"
    ));
    assert_eq!(
        counter,
        vec![vec![
            json!("sum"),
            json!(5.0),
            json!("cumulative"),
            json!(true),
            json!("eu")
        ]]
    );
    let histogram = loupe.sql(&format!(
        "SELECT kind, count, sum, min, max, unit FROM metrics WHERE service = '{service}' AND name = 'latency' ORDER BY time DESC LIMIT 1"
    ));
    assert_eq!(
        histogram,
        vec![vec![
            json!("histogram"),
            json!(3),
            json!(5.3),
            json!(0.1),
            json!(5.0),
            json!("s")
        ]]
    );
    let bucket_total = loupe.count(&format!(
        "SELECT CAST(array_sum(bucket_counts) AS BIGINT) FROM metrics WHERE service = '{service}' AND name = 'latency' ORDER BY time DESC LIMIT 1"
    ));
    assert_eq!(bucket_total, 3);
    let gauge = loupe.sql(&format!(
        "SELECT kind, value FROM metrics WHERE service = '{service}' AND name = 'queue_depth' ORDER BY time DESC LIMIT 1"
    ));
    assert_eq!(gauge, vec![vec![json!("gauge"), json!(7.0)]]);

    // Every table's `instance` is the resource's `service.instance.id`,
    // fresh (the memtable) and after a restart (Parquet).
    for table in ["spans", "logs", "metrics"] {
        let rows = loupe.count(&format!(
            "SELECT count(*) FROM {table} WHERE service = '{service}'"
        ));
        let same = loupe.count(&format!(
            "SELECT count(*) FROM {table} WHERE service = '{service}' AND instance = 'i-1'
                AND instance = resource_attributes['service.instance.id']"
        ));
        assert!(rows > 0 && same == rows, "{table}: {same} of {rows} rows");
    }
}

#[test]
fn sdk_exports_over_grpc_round_trip_exactly() {
    let loupe = Loupe::start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let exporters = {
        let _guard = runtime.enter();
        exporters(&loupe, Via::Grpc)
    };
    let (trace_id, span_id) = emit(exporters, "sdk-grpc");
    check_round_trip(&loupe, "sdk-grpc", &trace_id, &span_id);
}

#[test]
fn sdk_exports_over_http_protobuf_round_trip_exactly() {
    let loupe = Loupe::start(&[]);
    let exporters = exporters(&loupe, Via::HttpProtobuf);
    let (trace_id, span_id) = emit(exporters, "sdk-http");
    check_round_trip(&loupe, "sdk-http", &trace_id, &span_id);
}

#[test]
fn data_survives_a_clean_restart_and_is_then_read_from_parquet() {
    let mut loupe = Loupe::start(&[]);
    let exporters = exporters(&loupe, Via::HttpProtobuf);
    let (trace_id, span_id) = emit(exporters, "sdk-restart");
    loupe.terminate();
    // Count Parquet files per signal, not directories: a directory can exist
    // without a single flushed file in it.
    for signal in ["logs", "metrics", "spans"] {
        let files = files_with_extension(&loupe.data_dir().join("splits").join(signal), "parquet");
        assert!(
            !files.is_empty(),
            "a clean stop flushes every signal to Parquet; none for {signal}"
        );
    }
    loupe.restart();
    check_round_trip(&loupe, "sdk-restart", &trace_id, &span_id);
}
