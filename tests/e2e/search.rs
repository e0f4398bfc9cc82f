//! Full-text search through SQL: `match_all('…')` on flushed splits (via
//! their Tantivy indexes) and on the memtable returns exactly the rows an
//! independent in-test matcher over the fixture picks.

use std::time::Duration;

use prost::Message;
use serde_json::json;

use crate::harness::{Loupe, deadline_in, wait_until};
use crate::otlp_proto::logs_request;

fn load(loupe: &Loupe, service: &str, bodies: &[&str]) {
    let request = logs_request(service, bodies.iter().map(|b| b.to_string())).encode_to_vec();
    assert_eq!(
        loupe
            .post("/v1/logs", "application/x-protobuf", request)
            .status()
            .as_u16(),
        200
    );
}

fn bodies(loupe: &Loupe, sql_where: &str) -> Vec<String> {
    loupe
        .sql(&format!(
            "SELECT body FROM logs WHERE {sql_where} ORDER BY body"
        ))
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

/// A log line of the search fixture.
struct Line {
    service: &'static str,
    body: &'static str,
}

/// The words of a body as the index sees them: runs of alphanumeric
/// characters, lowercased.
fn words(body: &str) -> Vec<String> {
    body.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn has_word(line: &Line, word: &str) -> bool {
    words(line.body).iter().any(|w| w == word)
}

fn has_phrase(line: &Line, phrase: &str) -> bool {
    let phrase = words(phrase);
    words(line.body).windows(phrase.len()).any(|w| w == phrase)
}

fn has_prefix(line: &Line, prefix: &str) -> bool {
    words(line.body).iter().any(|w| w.starts_with(prefix))
}

/// A search and the same question asked of a line in Rust.
type Case = (&'static str, fn(&Line) -> bool);

#[test]
fn match_all_agrees_with_brute_force_on_splits_and_memtable() {
    let flushed = [
        ("cart", "connection reset by peer"),
        ("cart", "ECONNRESET on upstream 10.0.0.7"),
        ("cart", "added item SKU-1234"),
        ("payment", "reset the pool"),
        ("payment", "charged 12.50 USD"),
        ("payment", "timeout after 3000ms"),
        ("payment", "TraceID ffc8ca7e4c8f06c7 order o-810804"),
    ];
    let in_memtable = [
        ("cart", "connection refused"),
        ("cart", "connection reset again"),
        ("cart", "TraceID ffc8aaaa11112222 order o-810805 ffc8"),
    ];
    let mut loupe = Loupe::start(&[]);
    let load_all = |loupe: &Loupe, lines: &[(&str, &str)]| {
        // One request per run of lines of the same service.
        for run in lines.chunk_by(|a, b| a.0 == b.0) {
            let bodies: Vec<&str> = run.iter().map(|(_, body)| *body).collect();
            load(loupe, run[0].0, &bodies);
        }
    };
    load_all(&loupe, &flushed);
    // Flush those to Parquet + index, then add memtable rows.
    loupe.terminate();
    loupe.restart();
    load_all(&loupe, &in_memtable);
    let lines: Vec<Line> = flushed
        .iter()
        .chain(&in_memtable)
        .map(|&(service, body)| Line { service, body })
        .collect();

    // Each search, and the same question asked of every line in Rust.
    let cases: [Case; 12] = [
        ("match_all('connection reset')", |l| {
            has_word(l, "connection") && has_word(l, "reset")
        }),
        ("match_all('\"connection reset\"')", |l| {
            has_phrase(l, "connection reset")
        }),
        ("match_all('reset OR econnreset')", |l| {
            has_word(l, "reset") || has_word(l, "econnreset")
        }),
        ("match_all('conn*')", |l| has_prefix(l, "conn")),
        ("match_all('reset AND NOT service:payment')", |l| {
            has_word(l, "reset") && l.service != "payment"
        }),
        ("match_all('\"SKU-1234\"')", |l| has_phrase(l, "SKU-1234")),
        ("match_all('3000ms')", |l| has_word(l, "3000ms")),
        // Words with a digit are indexed shortened and checked per row.
        ("match_all('ffc8ca7e4c8f06c7')", |l| {
            has_word(l, "ffc8ca7e4c8f06c7")
        }),
        ("match_all('ffc8')", |l| has_word(l, "ffc8")),
        ("match_all('ffc8a*')", |l| has_prefix(l, "ffc8a")),
        ("match_all('ffc8*')", |l| has_prefix(l, "ffc8")),
        ("match_all('\"order o-810805\"')", |l| {
            has_phrase(l, "order o-810805")
        }),
    ];
    for (search, oracle) in cases {
        let mut expected: Vec<String> = lines
            .iter()
            .filter(|l| oracle(l))
            .map(|l| l.body.to_string())
            .collect();
        expected.sort();
        assert!(!expected.is_empty(), "{search} has something to find");
        assert_eq!(bodies(&loupe, search), expected, "{search}");
    }
    // Combined with other predicates, grouping and ordering.
    let cart_resets = lines
        .iter()
        .filter(|l| l.service == "cart" && has_word(l, "reset"))
        .count();
    let rows = loupe.sql("SELECT service, count(*) FROM logs WHERE match_all('reset') AND service = 'cart' GROUP BY service");
    assert_eq!(rows, vec![vec![json!("cart"), json!(cart_resets)]]);
    let newest = loupe.sql(
        "SELECT body FROM logs WHERE match_all('connection') ORDER BY time DESC, body LIMIT 1",
    );
    assert_eq!(newest.len(), 1);

    // Bad syntax is the caller's error; match_all elsewhere is refused clearly.
    let (status, body) = loupe.sql_response("SELECT * FROM logs WHERE match_all('a AND (')");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("invalid search query"),
        "{body}"
    );
    let (status, body) = loupe.sql_response("SELECT match_all('x') FROM logs");
    assert!(status >= 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("match_all"),
        "{body}"
    );
}

fn get_json(loupe: &Loupe, path_and_query: &str) -> (u16, serde_json::Value) {
    let response = loupe
        .client()
        .get(loupe.api_url(path_and_query))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

#[test]
fn search_api_returns_hits_total_histogram_and_context() {
    let loupe = Loupe::start(&[]);
    load(
        &loupe,
        "cart",
        &["first reset", "unrelated line", "second reset"],
    );
    load(&loupe, "payment", &["third reset"]);
    let (status, body) = get_json(
        &loupe,
        "/api/v1/logs/search?q=reset&start=now-15m&end=now&limit=2",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], json!(3));
    let hits = body["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2);
    let times: Vec<&str> = hits.iter().map(|h| h["time"].as_str().unwrap()).collect();
    assert!(times[0] >= times[1], "newest first: {times:?}");
    let histogram = body["histogram"].as_array().unwrap();
    assert!(
        (60..=121).contains(&histogram.len()),
        "{} buckets",
        histogram.len()
    );
    let counted: i64 = histogram.iter().map(|b| b["count"].as_i64().unwrap()).sum();
    assert_eq!(counted, 3);
    assert!(body["took_ms"].as_f64().is_some());

    let (_, only_cart) = get_json(&loupe, "/api/v1/logs/search?q=reset&service=cart");
    assert_eq!(only_cart["total"], json!(2));
    let (_, everything) = get_json(&loupe, "/api/v1/logs/search");
    assert_eq!(everything["total"], json!(4));
    let (status, bad) = get_json(&loupe, "/api/v1/logs/search?q=a%20AND%20(");
    assert_eq!(status, 400, "{bad}");
    let (status, bad) = get_json(&loupe, "/api/v1/logs/search?start=yesterday");
    assert_eq!(status, 400, "{bad}");

    // Context: the lines around "unrelated line" of the same service.
    let time = loupe.sql_value(
        "SELECT CAST(CAST(time AS BIGINT) AS VARCHAR) FROM logs WHERE body = 'unrelated line'",
    );
    let (status, context) = get_json(
        &loupe,
        &format!(
            "/api/v1/logs/context?service=cart&time={}&before=5&after=5",
            time.as_str().unwrap()
        ),
    );
    assert_eq!(status, 200, "{context}");
    // All three cart lines share one timestamp (one request): they are "the line".
    let lines: Vec<&str> = context["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["body"].as_str().unwrap())
        .collect();
    assert!(lines.contains(&"unrelated line"), "{context}");
    assert!(context["before"].as_array().unwrap().is_empty());
}

#[test]
fn compaction_keeps_results_identical() {
    let mut loupe = Loupe::start(&["--compaction-interval", "1h"]);
    for round in 0..4 {
        let bodies: Vec<String> = (0..50)
            .map(|i| format!("round {round} line {i} reset {}", i % 7))
            .collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        load(
            &loupe,
            if round % 2 == 0 { "cart" } else { "payment" },
            &refs,
        );
        // A clean stop flushes: one split per round.
        loupe.terminate();
        loupe.restart();
    }
    let parquet_files = |loupe: &Loupe| {
        let (_, splits) = get_json(loupe, "/api/v1/splits");
        splits["logs"].as_array().unwrap().len()
    };
    assert_eq!(parquet_files(&loupe), 4);
    let queries = [
        "SELECT body FROM logs WHERE match_all('reset AND 3') ORDER BY body",
        "SELECT service, count(*) FROM logs GROUP BY service ORDER BY service",
        "SELECT body FROM logs WHERE match_all('\"line 4\"') AND service = 'payment' ORDER BY body",
        "SELECT count(*) FROM logs",
    ];
    let before: Vec<_> = queries.iter().map(|q| loupe.sql(q)).collect();

    loupe.terminate();
    let mut compacting = Loupe::start_in(
        loupe,
        &[
            "--compaction-interval",
            "200ms",
            "--compaction-min-files",
            "2",
        ],
    );
    assert!(
        wait_until(deadline_in(Duration::from_secs(20)), || {
            parquet_files(&compacting) == 1
        }),
        "compaction did not run; log:\n{}",
        compacting.log()
    );
    let after: Vec<_> = queries.iter().map(|q| compacting.sql(q)).collect();
    assert_eq!(before, after);
    compacting.terminate();
}
