//! Every kind of bad input gets its OTLP status and a message naming the
//! problem, and never disturbs data from other requests.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use prost::Message;
use serde_json::json;
use tonic_types::StatusExt;

use crate::harness::{Loupe, deadline_in, wait_until};
use crate::otlp_proto::{LOGS_EXPORT, logs_request, raw_grpc};

const PROTOBUF: &str = "application/x-protobuf";

/// `google.rpc.Status`, the OTLP/HTTP error body.
type RpcStatus = tonic_types::Status;

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn malformed_oversized_and_mistyped_requests_are_refused_with_reasons() {
    let loupe = Loupe::start(&["--max-request-size", "64KiB"]);
    let good = logs_request("good", bodies("good", 10)).encode_to_vec();
    assert_eq!(
        loupe.post("/v1/logs", PROTOBUF, good).status().as_u16(),
        200
    );

    let status_of = |response: reqwest::blocking::Response| -> (u16, RpcStatus) {
        let code = response.status().as_u16();
        (code, RpcStatus::decode(response.bytes().unwrap()).unwrap())
    };

    // Malformed protobuf.
    let (code, status) = status_of(loupe.post("/v1/logs", PROTOBUF, vec![0xff, 0xff, 0xff, 0x01]));
    assert_eq!(code, 400);
    assert!(
        status.message.contains("malformed protobuf logs"),
        "{}",
        status.message
    );
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);

    // Malformed JSON, answered in JSON.
    let response = loupe.post(
        "/v1/traces",
        "application/json",
        b"{\"resourceSpans\": [".to_vec(),
    );
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("malformed OTLP JSON spans"),
        "{body}"
    );

    // Wrong content type.
    let response = loupe.post("/v1/metrics", "text/plain", b"hello".to_vec());
    assert_eq!(response.status().as_u16(), 415);
    let (_, status) = status_of(response);
    assert!(
        status
            .message
            .contains("unsupported content type \"text/plain\""),
        "{}",
        status.message
    );

    // Too large as sent.
    let big = logs_request("big", vec!["x".repeat(100 * 1024)]).encode_to_vec();
    let (code, status) = status_of(loupe.post("/v1/logs", PROTOBUF, big));
    assert_eq!(code, 413);
    assert!(status.message.contains("65536 bytes"), "{}", status.message);

    // A gzip bomb: 9 KiB on the wire, 8 MiB inflated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 8 << 20]).unwrap();
    let response = loupe
        .client()
        .post(loupe.otlp_http_url("/v1/logs"))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .unwrap();
    let (code, status) = status_of(response);
    assert_eq!(code, 413);
    assert!(
        status.message.contains("after gzip decompression"),
        "{}",
        status.message
    );

    // Corrupt gzip.
    let response = loupe
        .client()
        .post(loupe.otlp_http_url("/v1/logs"))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "gzip")
        .body(b"not gzip at all".to_vec())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // One record with a 7-byte trace id: rejected alone, the rest stored.
    let mut partial = logs_request("partial", bodies("partial", 3));
    partial.resource_logs[0].scope_logs[0].log_records[1].trace_id = vec![7; 7];
    let response = loupe.post("/v1/logs", PROTOBUF, partial.encode_to_vec());
    assert_eq!(response.status().as_u16(), 200);
    let reply = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(
        response.bytes().unwrap(),
    )
    .unwrap();
    let partial_success = reply.partial_success.unwrap();
    assert_eq!(partial_success.rejected_log_records, 1);
    assert!(
        partial_success
            .error_message
            .contains("trace_id must be 16 bytes, got 7")
    );

    // gRPC: malformed protobuf is INVALID_ARGUMENT, an oversized message is refused.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let err = raw_grpc(&loupe.grpc_url(), LOGS_EXPORT, vec![0xff, 0xff, 0xff, 0x01])
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains("malformed protobuf"), "{err}");

        let big = logs_request("big", vec!["x".repeat(100 * 1024)]).encode_to_vec();
        let err = raw_grpc(&loupe.grpc_url(), LOGS_EXPORT, big)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.code(),
                tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
            ),
            "{err}"
        );

        let mut client = LogsServiceClient::connect(loupe.grpc_url()).await.unwrap();
        let mut partial = logs_request("grpc-partial", bodies("grpc-partial", 2));
        partial.resource_logs[0].scope_logs[0].log_records[0].span_id = vec![1; 3];
        let reply = client.export(partial).await.unwrap().into_inner();
        assert_eq!(reply.partial_success.unwrap().rejected_log_records, 1);
    });

    // Nothing bad touched the good data.
    let rows = loupe.sql("SELECT service, count(*) FROM logs GROUP BY service ORDER BY service");
    assert_eq!(
        rows,
        vec![
            vec![json!("good"), json!(10)],
            vec![json!("grpc-partial"), json!(1)],
            vec![json!("partial"), json!(2)],
        ]
    );
    let metrics = reqwest::blocking::get(loupe.api_url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(
            r#"loupe_ingest_records_total{signal="logs",transport="http",outcome="rejected"} 1"#
        ),
        "{metrics}"
    );
}

#[test]
fn overload_is_429_with_retry_after_and_resource_exhausted_with_retry_info() {
    // A 2 MiB memory budget: 256 KiB for requests in flight, so a request
    // of 2,000 records (its estimated working memory is larger than that)
    // is admitted only while no other one is — eight senders at once
    // overlap and are refused — and 512 KiB of unflushed data.
    let loupe = Loupe::start(&["--memory-budget", "2MiB"]);
    let senders = 8;
    let refused = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..senders)
            .map(|t| {
                let loupe = &loupe;
                scope.spawn(move || {
                    for i in 0..100 {
                        let request = logs_request("load", bodies(&format!("load-{t}-{i}"), 2000));
                        let response = loupe.post("/v1/logs", PROTOBUF, request.encode_to_vec());
                        match response.status().as_u16() {
                            200 => {}
                            429 => return Some(response),
                            other => panic!("unexpected status {other}"),
                        }
                    }
                    None
                })
            })
            .collect();
        threads.into_iter().filter_map(|t| t.join().unwrap()).next()
    });
    let response = refused.expect("the server never pushed back");
    assert_eq!(response.headers()["retry-after"], "1");
    let status = RpcStatus::decode(response.bytes().unwrap()).unwrap();
    assert!(status.message.contains("overloaded"), "{}", status.message);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let refused = runtime.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..senders {
            let url = loupe.grpc_url();
            tasks.push(tokio::spawn(async move {
                let mut client = LogsServiceClient::connect(url).await.unwrap();
                for i in 0..100 {
                    let request = logs_request("load", bodies(&format!("grpc-{t}-{i}"), 2000));
                    if let Err(err) = client.export(request).await {
                        return Some(err);
                    }
                }
                None
            }));
        }
        let mut first = None;
        for task in tasks {
            first = first.or(task.await.unwrap());
        }
        first
    });
    let err = refused.expect("the server never pushed back over gRPC");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    let retry = err.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(1)));
    let metrics = reqwest::blocking::get(loupe.api_url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    for transport in ["http", "grpc"] {
        let line = format!(
            "loupe_ingest_overloaded_requests_total{{signal=\"logs\",transport=\"{transport}\"}} "
        );
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in {metrics}"));
        assert!(count >= 1, "{line}{count}");
    }
    // The server is still healthy and answers queries.
    assert!(loupe.count("SELECT count(*) FROM logs") > 0);
}

/// Opens an OTLP/HTTP logs request announcing `announced` body bytes,
/// sends `sent` of them and leaves it at that (the sender stalls).
fn stalled_upload(loupe: &Loupe, announced: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(loupe.otlp_http).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write!(
        stream,
        "POST /v1/logs HTTP/1.1\r\nHost: loupe\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {announced}\r\n\r\n"
    )
    .unwrap();
    // Refused senders may find the server no longer reading: not an error.
    for chunk in vec![0u8; sent].chunks(64 << 10) {
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    stream
}

#[test]
fn bodies_still_arriving_count_against_the_in_flight_budget() {
    // A 16 MiB budget: 1 MiB for requests in flight. Bodies used to be
    // reserved only once fully read, so any number of senders could each
    // have up to 16 MiB buffered while the share read zero.
    let loupe = Loupe::start(&["--memory-budget", "16MiB"]);
    let in_flight = || loupe.metric("loupe_memory_used_bytes{share=\"in_flight\"}");
    let first = stalled_upload(&loupe, 4 << 20, 700 << 10);
    let held = wait_until(deadline_in(Duration::from_secs(10)), || {
        in_flight() >= (700 << 10) as f64
    });
    assert!(held, "a body being received holds {} bytes", in_flight());

    // A second body would take the share past 1 MiB: refused while it is
    // still being sent, with the retry hint.
    let mut second = stalled_upload(&loupe, 4 << 20, 700 << 10);
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = String::new();
    let mut reader = std::io::BufReader::new(&mut second);
    while !head.ends_with("\r\n\r\n") {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut reader, &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => head.push_str(&line),
        }
    }
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 429"), "answered {head:?}");
    assert!(head.contains("retry-after: 1\r\n"), "{head}");

    // Over gRPC, the same refusal is RESOURCE_EXHAUSTED with RetryInfo.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let refused = runtime.block_on(async {
        let mut client = LogsServiceClient::connect(loupe.grpc_url()).await.unwrap();
        client
            .export(logs_request("big", bodies("grpc-big", 8000)))
            .await
            .unwrap_err()
    });
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    let retry = refused.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));

    // The stalled senders go away: their reservations with them.
    drop((first, second));
    let released = wait_until(deadline_in(Duration::from_secs(10)), || in_flight() == 0.0);
    assert!(released, "still {} bytes in flight", in_flight());
    let request = logs_request("after", bodies("after", 10));
    let response = loupe.post("/v1/logs", PROTOBUF, request.encode_to_vec());
    assert_eq!(response.status().as_u16(), 200);
}

#[test]
fn absurd_search_windows_answer_quickly_and_leave_the_server_up() {
    let loupe = Loupe::start(&[]);
    let get = |query: &str| {
        let response = loupe
            .client()
            .get(loupe.api_url(&format!("/api/v1/logs/search?{query}")))
            .timeout(std::time::Duration::from_secs(20))
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<serde_json::Value>().unwrap_or_default(),
        )
    };
    // Once looped forever (the bucket counter wrapped).
    let (status, body) = get("q=x&start=9223372036854775000&end=9223372036854775807");
    assert_eq!(status, 200, "{body}");
    // Once asked for ~10^12 buckets.
    let (status, body) = get("q=x&start=-9000000000000000000");
    assert_eq!(status, 200, "{body}");
    let buckets = body["histogram"].as_array().unwrap().len();
    assert!((1..=121).contains(&buckets), "{buckets} buckets");
    // Once panicked on a multi-byte character.
    let (status, body) = get("q=x&start=now%E2%82%AC");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not a time"),
        "{body}"
    );
    assert_eq!(
        reqwest::blocking::get(loupe.api_url("/healthz"))
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn deeply_nested_queries_are_refused_with_400_not_a_crash() {
    let loupe = Loupe::start(&[]);
    let deep_sum = format!("SELECT {}", vec!["1"; 5_000].join("+"));
    let (status, body) = loupe.sql_response(&deep_sum);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("operators"),
        "{body}"
    );
    let parens = format!("{}a{}", "(".repeat(5_000), ")".repeat(5_000));
    let encoded: String = parens.replace('(', "%28").replace(')', "%29");
    for path in ["/api/v1/logs/search", "/api/v1/traces"] {
        let response = loupe
            .client()
            .get(loupe.api_url(&format!("{path}?q={encoded}")))
            .send()
            .map_err(|e| e.without_url())
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{path}");
    }
    let (status, body) = loupe.sql_response(&format!(
        "SELECT count(*) FROM logs WHERE match_all('{parens}')"
    ));
    assert_eq!(status, 400, "{body}");
    let attrs: String = (0..5_000).map(|i| format!("&attr.k{i}=v")).collect();
    let response = loupe
        .client()
        .get(loupe.api_url(&format!("/api/v1/traces?service=x{attrs}")))
        .send()
        .map_err(|e| e.without_url())
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    assert_eq!(
        reqwest::blocking::get(loupe.api_url("/healthz"))
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn functions_that_amplify_memory_are_not_offered() {
    let loupe = Loupe::start(&[]);
    for sql in [
        "SELECT length(repeat(arrow_cast('x','LargeUtf8'), 1000000000000))",
        "SELECT lpad('x', 1000000000000)",
        "SELECT array_repeat(1, 1000000000000)",
        "SELECT range(0, 1000000000000)",
        "SELECT count(*) FROM generate_series(1, 1000000000000)",
    ] {
        let (status, body) = loupe.sql_response(sql);
        assert_eq!(status, 400, "{sql}: {body}");
    }
    assert_eq!(
        reqwest::blocking::get(loupe.api_url("/healthz"))
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn records_timed_far_outside_now_are_rejected_and_counted() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    let loupe = Loupe::start(&[]);
    let mut request = crate::otlp_proto::logs_request("clock", (0..3).map(|i| format!("line {i}")));
    let records = &mut request.resource_logs[0].scope_logs[0].log_records;
    // One an hour ahead is fine; a year ahead and 1999 are not.
    let now = records[0].time_unix_nano;
    records[0].time_unix_nano = now + 3_000_000_000_000;
    records[1].time_unix_nano = now + 365 * 86_400_000_000_000;
    records[2].time_unix_nano = 946_684_800_000_000_000;
    let response = loupe.post(
        "/v1/logs",
        "application/x-protobuf",
        request.encode_to_vec(),
    );
    assert_eq!(response.status().as_u16(), 200);
    let body = ExportLogsServiceResponse::decode(response.bytes().unwrap()).unwrap();
    let partial = body.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 2);
    assert!(
        partial
            .error_message
            .contains("outside the accepted window"),
        "{}",
        partial.error_message
    );
    assert_eq!(
        loupe.count("SELECT count(*) FROM logs WHERE service = 'clock'"),
        1
    );
    let metrics = reqwest::blocking::get(loupe.api_url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("loupe_ingest_records_total")
                && l.contains("signal=\"logs\"")
                && l.contains("transport=\"http\"")
                && l.contains("outcome=\"rejected\"")
                && l.ends_with(" 2")),
        "{metrics}"
    );
}

/// Once allocated gigabytes: a body of millions of empty log records.
#[test]
fn a_request_of_millions_of_empty_records_is_refused_before_decoding() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let loupe = Loupe::start(&[]);
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); 5_000_000],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = request.encode_to_vec();
    assert!(body.len() < 16 << 20, "{} bytes", body.len());
    drop(request);
    let response = loupe.post("/v1/logs", "application/x-protobuf", body.clone());
    assert_eq!(response.status().as_u16(), 413);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(raw_grpc(&loupe.grpc_url(), LOGS_EXPORT, body))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("records"), "{err:?}");
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", loupe.pid().unwrap()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 400 * 1024, "peak RSS {rss_kb} kB");
    assert_eq!(
        reqwest::blocking::get(loupe.api_url("/healthz"))
            .unwrap()
            .status(),
        200
    );
}
