//! Full-text search through SQL: `match_all('…')` on flushed splits (via
//! their Tantivy indexes) and on the memtable returns exactly the rows a
//! brute-force filter returns.

use prost::Message;
use serde_json::json;

use crate::harness::Loupe;
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

#[test]
fn match_all_agrees_with_brute_force_on_splits_and_memtable() {
    let mut loupe = Loupe::start(&[]);
    load(
        &loupe,
        "cart",
        &[
            "connection reset by peer",
            "ECONNRESET on upstream 10.0.0.7",
            "added item SKU-1234",
        ],
    );
    load(
        &loupe,
        "payment",
        &[
            "reset the pool",
            "charged 12.50 USD",
            "timeout after 3000ms",
        ],
    );
    // Flush those to Parquet + index, then add memtable rows.
    loupe.terminate();
    loupe.restart();
    load(
        &loupe,
        "cart",
        &["connection refused", "connection reset again"],
    );

    let cases = [
        (
            "match_all('connection reset')",
            "body LIKE '%connection%' AND body LIKE '%reset%'",
        ),
        (
            "match_all('\"connection reset\"')",
            "body LIKE '%connection reset%'",
        ),
        (
            "match_all('reset OR econnreset')",
            "lower(body) LIKE '%reset%'",
        ),
        ("match_all('conn*')", "body LIKE '%conn%'"),
        (
            "match_all('reset AND NOT service:payment')",
            "body LIKE '%reset%' AND body NOT LIKE '%pool%'",
        ),
        ("match_all('\"SKU-1234\"')", "body LIKE '%SKU-1234%'"),
        ("match_all('3000ms')", "body LIKE '%3000ms%'"),
    ];
    for (search, brute) in cases {
        assert_eq!(
            bodies(&loupe, search),
            bodies(&loupe, brute),
            "{search} vs {brute}"
        );
        assert!(
            !bodies(&loupe, search).is_empty(),
            "{search} finds something"
        );
    }
    // Combined with other predicates, grouping and ordering.
    let rows = loupe.sql("SELECT service, count(*) FROM logs WHERE match_all('reset') AND service = 'cart' GROUP BY service");
    assert_eq!(rows, vec![vec![json!("cart"), json!(2)]]);
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
