//! Problem location on real incidents: replays the public Nezha TrainTicket
//! bundle (28 labelled faults, see `../shared/datasets/README.md`) into a
//! fresh `loupe serve` per fault, asks `/api/v1/problems` for the incident
//! window against a baseline, and scores where the injected pod's service
//! ranks among the suspects (AS@1/AS@3/AS@5, overall and per fault type).
//!
//! Protocol (the README's): the baseline is the fault-free minutes plus the
//! part of the fault's first minute before `inject_time` (read as UTC); the
//! incident is the rest of the fault's minute files. The fault-free minutes
//! happened at another time of day, so they are first moved to end just
//! before the fault's first minute; then everything is shifted by one
//! constant so the injection lands five minutes before now.
//!
//! Run: `cargo test --bench rca` (debug) or `cargo bench --bench rca`.
//! Env: `NEZHA` (bundle path), `FAULTS=N` (first N faults only), `ONLY`
//! (faults whose inject time contains this text), `OUT` (JSON report,
//! default `target/rca-latest.json`), `DUMP=DIR` (each fault's whole
//! `/problems` answer as `DIR/HH_MM.json`, to see why it ranked so).

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, client, read_csv};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;
use serde_json::{Value, json};

const SEC: i64 = 1_000_000_000;
/// Where the injection lands relative to now: recent enough for any
/// retention, old enough that the whole incident is in the past.
const LEAD: i64 = 5 * 60 * SEC;
/// A fault never owns more minute files than this from its injection on.
const MAX_FAULT_MINUTES: i64 = 10;
/// Records per OTLP request, so no request approaches a body-size limit.
const CHUNK: usize = 2000;
const BUNDLE: &str = "../shared/datasets/nezha-trainticket-2023-01-29.tar.zst";

/// One row of `trace/HH_MM_trace.csv`.
#[derive(Clone)]
struct SpanRow {
    trace: String,
    span: String,
    parent: String,
    pod: String,
    name: String,
    start: i64,
    end: i64,
}

/// One row of `log/HH_MM_log.csv`, with the application's inner line.
#[derive(Clone)]
struct LogRow {
    time: i64,
    pod: String,
    trace: String,
    span: String,
    line: String,
}

/// One row of `metric/<pod>_metric.csv`: every numeric column by name.
#[derive(Clone)]
struct MetricRow {
    time: i64,
    pod: String,
    values: Vec<(String, f64)>,
}

/// Telemetry of some minutes, converted as a unit (kinds and error status
/// are inferred within it).
#[derive(Clone, Default)]
struct Slice {
    spans: Vec<SpanRow>,
    logs: Vec<LogRow>,
    metrics: Vec<MetricRow>,
}

/// One labelled fault of the bundle and the minute files it owns.
struct Fault {
    time: String,
    inject: i64,
    pod: String,
    kind: String,
    minutes: Vec<String>,
}

/// `YYYY-MM-DD` and `HH:MM:SS[.frac]` as UTC nanoseconds (days-from-civil).
fn utc_nanos(date: &str, time: &str) -> Option<i64> {
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let days = 365 * y + y.div_euclid(4) - y.div_euclid(100)
        + y.div_euclid(400)
        + (153 * m + 2) / 5
        + d[2]
        - 719_469;
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    Some((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * SEC + frac.parse::<i64>().ok()?)
}

/// `ts-travel-service-64469b5b48-25zj6` → `ts-travel-service`.
fn service_of(pod: &str) -> &str {
    pod.rsplitn(3, '-').nth(2).unwrap_or(pod)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// The severity word near the start of a Java log line (`16:42:22.382 INFO  …`).
fn severity(line: &str) -> (&'static str, i32) {
    const LEVELS: [(&str, i32); 6] = [
        ("TRACE", 1),
        ("DEBUG", 5),
        ("INFO", 9),
        ("WARN", 13),
        ("ERROR", 17),
        ("FATAL", 21),
    ];
    line.split_whitespace()
        .take(4)
        .find_map(|w| LEVELS.iter().find(|(l, _)| w == *l).copied())
        .unwrap_or(("", 0))
}

fn load_spans(path: &Path) -> Vec<SpanRow> {
    read_csv(path)
        .into_iter()
        .skip(1)
        .filter(|r| r.len() >= 7)
        .map(|r| SpanRow {
            trace: r[0].clone(),
            span: r[1].clone(),
            parent: r[2].clone(),
            pod: r[3].clone(),
            name: r[4].clone(),
            start: r[5].parse().unwrap_or(0),
            end: r[6].parse().unwrap_or(0),
        })
        .filter(|s| s.start > 0 && s.end >= s.start)
        .collect()
}

/// Log time comes from `Timestamp`: a few rows carry a corrupted `TimeUnixNano`.
fn load_logs(path: &Path) -> Vec<LogRow> {
    read_csv(path)
        .into_iter()
        .skip(1)
        .filter(|r| r.len() >= 8)
        .filter_map(|r| {
            let (date, time) = r[0].trim_end_matches('Z').split_once('T')?;
            let time = utc_nanos(date, time).or_else(|| r[1].parse().ok())?;
            let inner: Value = serde_json::from_str(&r[7]).ok()?;
            let line = inner["log"]
                .as_str()
                .unwrap_or(&r[7])
                .trim_end()
                .to_string();
            Some(LogRow {
                time,
                pod: r[3].clone(),
                trace: r[5].clone(),
                span: r[6].clone(),
                line,
            })
        })
        .collect()
}

/// Every pod's metric rows; non-numeric columns (times, names) are dropped.
fn load_metrics(dir: &Path) -> Vec<MetricRow> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("metric dir").flatten() {
        let path = entry.path();
        if !path.to_string_lossy().ends_with("_metric.csv") {
            continue;
        }
        let rows = read_csv(&path);
        let Some((header, rows)) = rows.split_first() else {
            continue;
        };
        for r in rows {
            let Some(secs) = r.get(1).and_then(|t| t.parse::<i64>().ok()) else {
                continue;
            };
            let values = header.iter().zip(r).skip(3);
            let values = values.filter_map(|(h, v)| Some((h.clone(), v.parse::<f64>().ok()?)));
            out.push(MetricRow {
                time: secs * SEC,
                pod: r.get(2).cloned().unwrap_or_default(),
                values: values.collect(),
            });
        }
    }
    out
}

/// The slice of minute files `minutes` (`HH_MM`) of one phase directory,
/// with the metric rows that fall within its span of time.
fn load_slice(dir: &Path, minutes: &[String], metrics: &[MetricRow]) -> Slice {
    let mut slice = Slice::default();
    for m in minutes {
        slice
            .spans
            .extend(load_spans(&dir.join(format!("trace/{m}_trace.csv"))));
        slice
            .logs
            .extend(load_logs(&dir.join(format!("log/{m}_log.csv"))));
    }
    let (lo, hi) = slice.range();
    slice.metrics = metrics
        .iter()
        .filter(|m| m.time >= lo && m.time <= hi)
        .cloned()
        .collect();
    slice
}

impl Slice {
    /// First and last span start.
    fn range(&self) -> (i64, i64) {
        let starts = self.spans.iter().map(|s| s.start);
        (starts.clone().min().unwrap_or(0), starts.max().unwrap_or(0))
    }

    fn shift(&mut self, by: i64) {
        self.spans
            .iter_mut()
            .for_each(|s| (s.start, s.end) = (s.start + by, s.end + by));
        self.logs.iter_mut().for_each(|l| l.time += by);
        self.metrics.iter_mut().for_each(|m| m.time += by);
    }
}

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    })
}

fn resource(pod: &str) -> Option<Resource> {
    let attr = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: text(value),
        ..Default::default()
    };
    Some(Resource {
        attributes: vec![
            attr("service.name", service_of(pod)),
            attr("service.instance.id", pod),
        ],
        ..Default::default()
    })
}

/// Splits `(pod, record)` pairs into requests of at most `CHUNK` records,
/// each grouping its records under one OTLP resource per pod.
fn batches<T: Clone, R>(
    items: &[(String, T)],
    wrap: impl Fn(Option<Resource>, Vec<T>) -> R,
) -> Vec<Vec<R>> {
    let group = |chunk: &[(String, T)]| {
        let mut pods: BTreeMap<&str, Vec<T>> = BTreeMap::new();
        for (pod, item) in chunk {
            pods.entry(pod).or_default().push(item.clone());
        }
        pods.into_iter()
            .map(|(pod, items)| wrap(resource(pod), items))
            .collect()
    };
    items.chunks(CHUNK).map(group).collect()
}

/// The dataset has no span kinds: an entry into a service (a root, or a
/// parent in another service) is SERVER, a span calling into another
/// service is CLIENT, the rest INTERNAL. Spans whose logs say ERROR or
/// exception get an error status, the only error signal the traces carry.
fn span_requests(slice: &Slice) -> Vec<ExportTraceServiceRequest> {
    let pod_of: HashMap<&str, &str> = slice
        .spans
        .iter()
        .map(|s| (s.span.as_str(), s.pod.as_str()))
        .collect();
    // Whether a span's parent is missing or runs in another service.
    let entry = |s: &SpanRow| {
        pod_of
            .get(s.parent.as_str())
            .is_none_or(|p| service_of(p) != service_of(&s.pod))
    };
    let calls_out: HashSet<&str> = slice
        .spans
        .iter()
        .filter(|s| entry(s))
        .map(|s| s.parent.as_str())
        .collect();
    let erred: HashSet<(&str, &str)> = slice
        .logs
        .iter()
        .filter(|l| severity(&l.line).1 >= 17 || l.line.to_ascii_lowercase().contains("exception"))
        .map(|l| (l.trace.as_str(), l.span.as_str()))
        .collect();
    let convert = |s: &SpanRow| {
        let kind = match (entry(s), calls_out.contains(s.span.as_str())) {
            (true, _) => span::SpanKind::Server,
            (false, true) => span::SpanKind::Client,
            (false, false) => span::SpanKind::Internal,
        };
        let error = erred.contains(&(s.trace.as_str(), s.span.as_str()));
        let span = Span {
            trace_id: hex(&s.trace),
            span_id: hex(&s.span),
            parent_span_id: hex(&s.parent), // `root` decodes to empty
            name: s.name.clone(),
            kind: kind as i32,
            start_time_unix_nano: s.start as u64,
            end_time_unix_nano: s.end as u64,
            status: error.then(|| Status {
                code: status::StatusCode::Error as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        (s.pod.clone(), span)
    };
    let spans: Vec<_> = slice.spans.iter().map(convert).collect();
    let wrap = |resource, spans| ResourceSpans {
        resource,
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    let requests = batches(&spans, wrap).into_iter();
    requests
        .map(|resource_spans| ExportTraceServiceRequest { resource_spans })
        .collect()
}

fn log_requests(slice: &Slice) -> Vec<ExportLogsServiceRequest> {
    let convert = |l: &LogRow| {
        let (severity_text, severity_number) = severity(&l.line);
        let record = LogRecord {
            time_unix_nano: l.time as u64,
            observed_time_unix_nano: l.time as u64,
            severity_number,
            severity_text: severity_text.into(),
            body: text(&l.line),
            trace_id: hex(&l.trace),
            span_id: hex(&l.span),
            ..Default::default()
        };
        (l.pod.clone(), record)
    };
    let records: Vec<_> = slice.logs.iter().map(convert).collect();
    let wrap = |resource, log_records| ResourceLogs {
        resource,
        scope_logs: vec![ScopeLogs {
            log_records,
            ..Default::default()
        }],
        ..Default::default()
    };
    let requests = batches(&records, wrap).into_iter();
    requests
        .map(|resource_logs| ExportLogsServiceRequest { resource_logs })
        .collect()
}

/// Each numeric column becomes a gauge named after it, one point a row.
fn metric_requests(slice: &Slice) -> Vec<ExportMetricsServiceRequest> {
    let gauge = |m: &MetricRow, name: &str, v: f64| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: m.time as u64,
                value: Some(number_data_point::Value::AsDouble(v)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let points: Vec<_> = (slice.metrics.iter())
        .flat_map(|m| {
            m.values
                .iter()
                .map(move |(n, v)| (m.pod.clone(), gauge(m, n, *v)))
        })
        .collect();
    let wrap = |resource, metrics| ResourceMetrics {
        resource,
        scope_metrics: vec![ScopeMetrics {
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    };
    let requests = batches(&points, wrap).into_iter();
    requests
        .map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
        .collect()
}

fn post<M: Message>(
    http: &reqwest::blocking::Client,
    server: &Server,
    path: &str,
    requests: Vec<M>,
) {
    for request in requests {
        let response = http
            .post(format!("http://{}{path}", server.otlp_http))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .expect("OTLP export");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
}

/// Ingestion is asynchronous: wait until SQL sees every span and log sent.
fn wait_visible(http: &reqwest::blocking::Client, server: &Server, spans: usize, logs: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let count = |table: &str| {
        server
            .sql(http, &format!("SELECT count(*) FROM {table}"))
            .as_u64()
            .unwrap_or(0)
    };
    while count("spans") < spans as u64 || count("logs") < logs as u64 {
        if Instant::now() > deadline {
            eprintln!("warning: not all data visible after 120 s");
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The fault list, in time order, each with the minute files it owns:
/// from its inject minute until the next fault's, at most `MAX_FAULT_MINUTES`.
fn faults(dir: &Path) -> Vec<Fault> {
    let list: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("2023-01-29-fault_list.json")).expect("fault list"),
    )
    .expect("fault list JSON");
    let mut faults: Vec<Fault> = list
        .as_object()
        .into_iter()
        .flat_map(|hours| hours.values())
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .map(|f| {
            let time = f["inject_time"].as_str().unwrap_or_default().to_string();
            let (date, clock) = time.split_once(' ').expect("inject_time");
            Fault {
                inject: utc_nanos(date, clock).expect("inject_time"),
                time: time.clone(),
                pod: f["inject_pod"].as_str().unwrap_or_default().into(),
                kind: f["inject_type"].as_str().unwrap_or_default().into(),
                minutes: Vec::new(),
            }
        })
        .collect();
    faults.sort_by_key(|f| f.inject);
    let files = minute_files(&dir.join("trace"));
    for i in 0..faults.len() {
        let from = minute_of_day(&faults[i].time[11..]);
        let next = faults.get(i + 1).map(|n| minute_of_day(&n.time[11..]));
        let until = next.unwrap_or(i64::MAX).min(from + MAX_FAULT_MINUTES);
        let owned = |m: &&String| (from..until).contains(&minute_of_day(m));
        faults[i].minutes = files.iter().filter(owned).cloned().collect();
    }
    faults
}

/// `HH_MM` or `HH:MM` as minutes since midnight (files and faults are all
/// on one day).
fn minute_of_day(hhmm: &str) -> i64 {
    let part = |r: std::ops::Range<usize>| hhmm.get(r).and_then(|p| p.parse::<i64>().ok());
    part(0..2).unwrap_or(0) * 60 + part(3..5).unwrap_or(0)
}

/// `HH_MM` of every `HH_MM_trace.csv` in a directory.
fn minute_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("trace dir")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix("_trace.csv")
                .map(String::from)
        })
        .collect();
    names.sort();
    names
}

/// 1-based position of the first suspect naming the injected pod's service
/// (or the pod itself).
fn rank_of(suspects: &[Value], pod: &str) -> Option<usize> {
    let service = service_of(pod);
    suspects
        .iter()
        .position(|s| {
            s["subject"]["service"] == service || s["subject"]["service.instance.id"] == pod
        })
        .map(|i| i + 1)
}

/// One fault's telemetry placed in time: the fault-free minutes moved to
/// end just before the fault's first minute, then both shifted so the
/// injection lands `LEAD` before now. Returns the two slices and the
/// baseline and incident windows (ns).
fn place(fault: &Fault, free: &Slice, mut incident: Slice) -> ([Slice; 2], [(i64, i64); 2]) {
    let (lo, hi) = incident.range();
    let (free_lo, free_hi) = free.range();
    let mut free = free.clone();
    let shift = loupe_base::clock::now_nanos() - LEAD - fault.inject;
    free.shift(lo - SEC - free_hi + shift);
    incident.shift(shift);
    let baseline = (free_lo + lo - SEC - free_hi + shift, fault.inject + shift);
    let window = (fault.inject + shift, hi + shift + SEC);
    ([free, incident], [baseline, window])
}

/// One fault end to end: fresh server, baseline + incident, one
/// `/problems` call. Returns the fault's report row.
fn run(fault: &Fault, rca: &Path, free: &Slice, metrics: &[MetricRow]) -> Value {
    let incident = load_slice(rca, &fault.minutes, metrics);
    let (slices, [baseline, window]) = place(fault, free, incident);
    let data = tempfile::tempdir().expect("temp dir");
    let server = Server::start(data.path(), &[]);
    let http = client();
    for slice in &slices {
        post(&http, &server, "/v1/traces", span_requests(slice));
        post(&http, &server, "/v1/logs", log_requests(slice));
        post(&http, &server, "/v1/metrics", metric_requests(slice));
    }
    let spans = slices.iter().map(|s| s.spans.len()).sum();
    wait_visible(
        &http,
        &server,
        spans,
        slices.iter().map(|s| s.logs.len()).sum(),
    );
    let started = Instant::now();
    let report = server.get(
        &http,
        &format!(
            "/api/v1/problems?start={}&end={}&baseline_start={}&baseline_end={}",
            window.0, window.1, baseline.0, baseline.1
        ),
    );
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    if let Ok(dir) = std::env::var("DUMP") {
        std::fs::create_dir_all(&dir).expect("dump dir");
        let name = fault.time.get(11..16).unwrap_or("fault").replace(':', "_");
        let path = Path::new(&dir).join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(&report).expect("JSON");
        std::fs::write(path, text).expect("write dump");
    }
    if let Ok(sql) = std::env::var("DEBUG_SQL") {
        let body: Value = http
            .post(format!("http://{}/api/v1/sql", server.http))
            .json(&json!({ "sql": sql }))
            .send()
            .and_then(|r| r.json())
            .expect("SQL call");
        println!("{body}");
    }
    server.stop();
    let suspects = report["suspects"].as_array().cloned().unwrap_or_default();
    let label = |s: &Value| {
        let subject = &s["subject"];
        format!(
            "{}({})",
            subject["service"].as_str().unwrap_or("?"),
            subject["kind"].as_str().unwrap_or("?")
        )
    };
    let top: Vec<_> = suspects.iter().take(3).map(label).collect();
    // Why the top suspects and the culprit scored as they did.
    let scored =
        |s: &Value| json!({"suspect": label(s), "score": s["score"], "evidence": s["evidence"]});
    let rank = rank_of(&suspects, &fault.pod);
    let culprit = rank.and_then(|r| suspects.get(r - 1)).map(scored);
    let top_scores: Vec<_> = suspects.iter().take(3).map(scored).collect();
    let all_scores: Vec<_> = suspects.iter().map(scored).collect();
    json!({
        "time": fault.time, "type": fault.kind, "pod": fault.pod, "service": service_of(&fault.pod),
        "minutes": fault.minutes, "rank": rank, "top3": top, "top3_scores": top_scores, "culprit": culprit,
        "suspects": all_scores,
        "top_explanation": suspects.first().map(|s| &s["explanation"]), "latency_ms": latency_ms,
    })
}

/// `zstd -dc FILE | tar x -C DIR`; returns the bundle's `nezha/` directory.
fn extract(dir: &Path) -> PathBuf {
    let bundle = std::env::var("NEZHA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLE));
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"zstd -dc "$0" | tar x -C "$1""#)
        .arg(&bundle)
        .arg(dir)
        .status()
        .expect("zstd | tar");
    assert!(status.success(), "extracting {}", bundle.display());
    dir.join("nezha")
}

/// AS@1/3/5 (percent) and the count over a set of ranks.
fn accuracy(ranks: &[Option<usize>]) -> Value {
    let at = |k: usize| {
        100.0 * ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64
            / ranks.len() as f64
    };
    json!({"n": ranks.len(), "as1": at(1), "as3": at(3), "as5": at(5)})
}

/// Prints and returns AS@k per fault type and overall.
fn summarize(by_type: &BTreeMap<String, Vec<Option<usize>>>) -> (Value, BTreeMap<String, Value>) {
    let all: Vec<_> = by_type.values().flatten().copied().collect();
    let per_type: BTreeMap<_, _> = by_type
        .iter()
        .map(|(k, r)| (k.clone(), accuracy(r)))
        .collect();
    let all = accuracy(&all);
    println!(
        "\n{:<14} {:>3} {:>7} {:>7} {:>7}",
        "type", "n", "AS@1", "AS@3", "AS@5"
    );
    for (kind, a) in per_type.iter().chain([(&"overall".to_string(), &all)]) {
        let pct = |k: &str| a[k].as_f64().unwrap_or(0.0);
        let (n, as1, as3, as5) = (&a["n"], pct("as1"), pct("as3"), pct("as5"));
        println!("{kind:<14} {n:>3} {as1:>6.1}% {as3:>6.1}% {as5:>6.1}%");
    }
    (all, per_type)
}

fn main() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = extract(tmp.path());
    let rca = root.join("rca-2023-01-29");
    let free_dir = root.join("fault-free-2023-01-29");
    let metrics = load_metrics(&rca.join("metric"));
    let free = load_slice(
        &free_dir,
        &minute_files(&free_dir.join("trace")),
        &load_metrics(&free_dir.join("metric")),
    );
    let mut faults = faults(&rca);
    faults.truncate(common::env("FAULTS", faults.len() as u64) as usize);
    // `ONLY=13:31` runs the faults whose inject time contains that text.
    if let Ok(only) = std::env::var("ONLY") {
        faults.retain(|f| f.time.contains(&only));
    }

    println!(
        "{:<19} {:<14} {:<30} {:>4}  {:<80} {:>8}",
        "time", "type", "culprit", "rank", "top-3", "ms"
    );
    let (mut rows, mut by_type) = (Vec::new(), BTreeMap::<String, Vec<Option<usize>>>::new());
    for fault in &faults {
        let row = run(fault, &rca, &free, &metrics);
        let rank = row["rank"].as_u64().map(|r| r as usize);
        let (top, ms) = (
            row["top3"].as_array().cloned().unwrap_or_default(),
            &row["latency_ms"],
        );
        let top: Vec<_> = top.iter().filter_map(|t| t.as_str()).collect();
        println!(
            "{:<19} {:<14} {:<30} {:>4}  {:<80} {:>8.0}",
            fault.time,
            fault.kind,
            service_of(&fault.pod),
            rank.map_or("-".into(), |r| r.to_string()),
            top.join(", "),
            ms.as_f64().unwrap_or(0.0)
        );
        by_type.entry(fault.kind.clone()).or_default().push(rank);
        rows.push(row);
    }
    let (all, per_type) = summarize(&by_type);
    let out = std::env::var("OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/rca-latest.json"));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).expect("report dir");
    }
    let report = json!({"faults": rows, "overall": all, "per_type": per_type});
    std::fs::write(&out, serde_json::to_string_pretty(&report).expect("JSON"))
        .expect("write report");
    println!("report: {}", out.display());
}
