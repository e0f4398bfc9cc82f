//! The SQL endpoint: output formats, the read-only sandbox, and the time
//! and memory limits.

use prost::Message;
use serde_json::json;

use crate::harness::Loupe;
use crate::otlp_proto::logs_request;

fn load_logs(loupe: &Loupe, requests: usize, per_request: usize) {
    for r in 0..requests {
        let bodies =
            (0..per_request).map(|i| format!("request {r} line {i} {}", "padding ".repeat(8)));
        let body = logs_request("sql", bodies).encode_to_vec();
        assert_eq!(
            loupe
                .post("/v1/logs", "application/x-protobuf", body)
                .status()
                .as_u16(),
            200
        );
    }
}

#[test]
fn results_come_as_json_csv_or_arrow() {
    let loupe = Loupe::start(&[]);
    load_logs(&loupe, 1, 3);
    let sql = json!({"sql": "SELECT service, count(*) AS n FROM logs GROUP BY service"});
    let started = std::time::Instant::now();
    let (status, body) =
        loupe.sql_response("SELECT service, count(*) AS n FROM logs GROUP BY service");
    let round_trip_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(status, 200);
    assert_eq!(
        body["columns"],
        json!([{"name": "service", "type": "Utf8View"}, {"name": "n", "type": "Int64"}])
    );
    assert_eq!(body["rows"], json!([["sql", 3]]));
    // The server's own timing: some time, and no more than the client saw.
    let elapsed_ms = body["elapsed_ms"].as_f64().unwrap();
    assert!(
        elapsed_ms > 0.0 && elapsed_ms <= round_trip_ms,
        "elapsed_ms {elapsed_ms} outside (0, {round_trip_ms}]"
    );

    let csv = loupe
        .client()
        .post(loupe.api_url("/api/v1/sql"))
        .header("accept", "text/csv")
        .json(&sql)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(csv, "service,n\nsql,3\n");

    let arrow = loupe
        .client()
        .post(loupe.api_url("/api/v1/sql"))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&sql)
        .send()
        .unwrap();
    assert_eq!(
        arrow.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let reader = arrow::ipc::reader::StreamReader::try_new(
        std::io::Cursor::new(arrow.bytes().unwrap()),
        None,
    )
    .unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    let health = reqwest::blocking::get(loupe.api_url("/readyz")).unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let missing = reqwest::blocking::get(loupe.api_url("/api/v1/nope")).unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert!(missing.text().unwrap().contains("\"error\""));
}

#[test]
fn the_sandbox_refuses_every_writing_or_file_reading_statement() {
    let loupe = Loupe::start(&[]);
    let cases = [
        ("CREATE TABLE t (a INT)", "CREATE TABLE is not allowed"),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE EXTERNAL TABLE is not allowed",
        ),
        ("CREATE VIEW v AS SELECT 1", "CREATE VIEW is not allowed"),
        ("DROP TABLE logs", "DROP TABLE is not allowed"),
        (
            "INSERT INTO logs (body) VALUES ('x')",
            "INSERT is not allowed",
        ),
        ("DELETE FROM spans", "DELETE is not allowed"),
        ("UPDATE logs SET body = 'x'", "UPDATE is not allowed"),
        (
            "COPY (SELECT 1) TO '/tmp/loupe-escape.csv'",
            "COPY is not allowed",
        ),
        (
            "SET datafusion.execution.batch_size = 1",
            "SET is not allowed",
        ),
        (
            "SELECT * FROM read_parquet('/etc/passwd')",
            "table function read_parquet is not allowed",
        ),
        (
            "SELECT * FROM read_csv('/etc/passwd')",
            "table function read_csv is not allowed",
        ),
        ("SELECT * FROM \"/etc/passwd\"", "reading files"),
        ("SELECT 1; DROP TABLE logs", "one statement"),
    ];
    for (sql, want) in cases {
        let (status, body) = loupe.sql_response(sql);
        // Refused by the sandbox: 403, whatever the token; malformed: 400.
        let expected = if want == "one statement" { 400 } else { 403 };
        assert_eq!(status, expected, "{sql}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(want), "{sql}: {error}");
    }
    assert!(!std::path::Path::new("/tmp/loupe-escape.csv").exists());
    let (status, body) = loupe.sql_response("SELECT nosuchcolumn FROM logs");
    assert_eq!(status, 400, "{body}");
    // The allowed kinds work.
    for sql in [
        "SHOW TABLES",
        "DESCRIBE spans",
        "EXPLAIN SELECT * FROM metrics",
        "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
    ] {
        assert_eq!(loupe.sql_response(sql).0, 200, "{sql}");
    }
}

#[test]
fn queries_over_their_memory_or_time_limit_fail_cleanly() {
    // Each query can only hit its own limit, however loaded the machine:
    // the sort needs ~3 MiB for its 20,000 rows of ~100 bytes, far over
    // 1 MiB and reached at its first batches, well within 5 s; the join
    // keeps one 4-byte column of one side (80 KB) and streams 400 million
    // pairs through a count, which takes a debug build far longer than 5 s.
    let loupe = Loupe::start(&["--query-memory-limit", "1MiB", "--query-timeout", "5s"]);
    load_logs(&loupe, 20, 1_000);
    let (status, body) =
        loupe.sql_response("SELECT body, observed_time FROM logs ORDER BY body, observed_time");
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("memory"), "{body}");
    // No operator needs memory here, but the result itself (~2.5 MiB of
    // bodies) is held until it is answered: it counts against the same
    // limit.
    let (status, body) = loupe.sql_response("SELECT body, observed_time FROM logs");
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("memory"), "{body}");

    let (status, body) = loupe.sql_response(
        "SELECT count(*) FROM (SELECT severity_number FROM logs) a \
         CROSS JOIN logs b \
         WHERE length(b.body) + a.severity_number < 0",
    );
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("time limit"),
        "{body}"
    );

    // The server is unharmed: it answers again (once the cancelled join
    // has let go of the query threads — a while on a loaded machine).
    let answered = crate::harness::wait_until(
        crate::harness::deadline_in(std::time::Duration::from_secs(120)),
        || {
            let (status, body) = loupe.sql_response("SELECT count(*) AS n FROM logs");
            status == 200 && body["rows"] == json!([[20_000]])
        },
    );
    assert!(
        answered,
        "the server did not answer a count after the limits were hit"
    );
}

#[test]
fn columns_with_the_same_name_keep_their_own_values() {
    let loupe = Loupe::start(&[]);
    load_logs(&loupe, 1, 2);
    // A self-join: both sides have `service` and `body`; the right side's
    // body is a different row's, so a name-keyed row would lose one.
    let (status, body) = loupe.sql_response(
        "SELECT a.service, a.body, b.service, b.body FROM logs a JOIN logs b \
         ON a.service = b.service AND a.body < b.body",
    );
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["service", "body", "service", "body"]);
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let row = rows[0].as_array().unwrap();
    assert_eq!(row[0], "sql");
    assert_eq!(row[2], "sql");
    let (left, right) = (row[1].as_str().unwrap(), row[3].as_str().unwrap());
    assert!(left.starts_with("request 0 line 0"), "{left}");
    assert!(right.starts_with("request 0 line 1"), "{right}");
}

#[test]
fn a_heavy_query_does_not_hold_up_acknowledgements() {
    let loupe = Loupe::start(&["--query-timeout", "20s"]);
    load_logs(&loupe, 20, 1_000);
    let heavy = "SELECT count(*) FROM (SELECT severity_number FROM logs) a \
                 CROSS JOIN (SELECT severity_number FROM logs) b \
                 CROSS JOIN (SELECT severity_number FROM logs) c \
                 WHERE a.severity_number + b.severity_number + c.severity_number < 0";
    std::thread::scope(|scope| {
        let query = scope.spawn(|| loupe.sql_response(heavy));
        std::thread::sleep(std::time::Duration::from_secs(1));
        for r in 0..10 {
            let started = std::time::Instant::now();
            let body =
                logs_request("during", (0..10).map(|i| format!("line {r} {i}"))).encode_to_vec();
            let status = loupe
                .post("/v1/logs", "application/x-protobuf", body)
                .status()
                .as_u16();
            assert_eq!(status, 200);
            let took = started.elapsed();
            assert!(
                took < std::time::Duration::from_secs(3),
                "ack took {took:?} while a query ran"
            );
        }
        let (status, body) = query.join().unwrap();
        assert_eq!(status, 504, "{body}");
    });
}
