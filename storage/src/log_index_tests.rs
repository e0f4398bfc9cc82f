//! Tests of the log index: terms, phrases, fields and ranges; words with a
//! digit (shortened, by blocks); trace ids (by prefix); an empty index.

use super::*;

/// `batch` with these trace ids (row i = element i).
fn with_trace_ids(batch: &RecordBatch, ids: &[Option<&str>]) -> RecordBatch {
    let mut columns = batch.columns().to_vec();
    columns[batch.schema().index_of("trace_id").unwrap()] =
        Arc::new(StringArray::from(ids.to_vec()));
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

/// `batch` as a split: its Parquet file written in `dir`, and its index
/// bundle (returned too) opened over that file.
fn reopened_split(batch: &RecordBatch, dir: &std::path::Path) -> (LogIndex, Vec<u8>) {
    let split =
        crate::split_writer::encode_splits(crate::Signal::Logs, std::slice::from_ref(batch))
            .unwrap()
            .remove(0);
    let parquet = dir.join("split.parquet");
    std::fs::write(&parquet, &split.bytes).unwrap();
    let bundle = split.index.unwrap();
    (LogIndex::open(&bundle, Some(parquet)).unwrap(), bundle)
}

mod field_tests {
    use super::*;
    use crate::test_batches::log_batch_with;

    fn rows(index: &LogIndex, q: &str) -> Vec<u32> {
        parse_query(q)
            .and_then(|ast| index.matching_rows(&ast))
            .unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    #[test]
    fn terms_phrases_fields_attributes_and_ranges() {
        let batch = log_batch_with(&[
            (
                "cart",
                "ERROR",
                17,
                "connection reset by peer at /api/cart",
                &[
                    ("http.route", "/cart"),
                    ("http.response.status_code", "503"),
                ],
            ),
            (
                "cart",
                "INFO",
                9,
                "added item SKU-1234 x2 to cart c-5512",
                &[
                    ("http.route", "/cart"),
                    ("http.response.status_code", "200"),
                ],
            ),
            (
                "payment",
                "WARN",
                13,
                "reset the connection pool",
                &[("http.response.status_code", "404")],
            ),
        ]);
        let index = LogIndex::build(&batch).unwrap();
        assert_eq!(index.num_docs().unwrap(), 3);
        assert_eq!(rows(&index, "connection reset"), vec![0, 2]);
        assert_eq!(rows(&index, "\"connection reset\""), vec![0]);
        // Phrases are exact though the index keeps no positions: rows 0
        // and 2 both hold "reset" and "connection", neither in this order.
        assert_eq!(rows(&index, "\"reset connection\""), Vec::<u32>::new());
        assert_eq!(rows(&index, "NOT \"connection reset\""), vec![1, 2]);
        assert_eq!(rows(&index, "\"connection reset\" OR sku"), vec![0, 1]);
        assert_eq!(rows(&index, "reset AND NOT service:payment"), vec![0]);
        assert_eq!(rows(&index, "reset NOT service:payment"), vec![0]);
        assert_eq!(rows(&index, "reset -service:payment"), vec![0]);
        assert_eq!(rows(&index, "\"by peer AND NOT\" OR pool"), vec![2]);
        assert_eq!(rows(&index, "connection OR sku"), vec![0, 1, 2]);
        assert_eq!(rows(&index, "severity_text:error"), vec![0]);
        assert_eq!(rows(&index, "severity_number:[13 TO 24]"), vec![0, 2]);
        assert_eq!(rows(&index, "\"SKU-1234\""), vec![1]);
        assert_eq!(rows(&index, "c-55*"), Vec::<u32>::new());
        assert_eq!(rows(&index, "conn*"), vec![0, 2]);
        assert_eq!(rows(&index, "(Conn* AND service:cart)"), vec![0]);
        assert_eq!(rows(&index, "service:pay*"), vec![2]);
        assert_eq!(rows(&index, "\"connection res\"*"), vec![0]);
        assert_eq!(rows(&index, "attributes.http.route:cart"), vec![0, 1]);
        assert_eq!(
            rows(&index, "attributes.http.response.status_code:[500 TO 599]"),
            vec![0]
        );
        assert!(parse_query("body:(").is_err());
        assert!(parse_query("nosuchfield:x").is_err());
        assert!(validate_query("a AND (").is_err());

        let mut seen = Vec::new();
        index
            .for_each_match(&parse_query("reset").unwrap(), 1_000, 1_001, |t, row| {
                seen.push((t, row))
            })
            .unwrap();
        seen.sort();
        assert_eq!(seen, vec![(1_000, 0)], "time bounds apply");

        // A split's index checks phrases against its Parquet file.
        let dir = tempfile::tempdir().unwrap();
        let (reopened, _) = reopened_split(&batch, dir.path());
        // The split is sorted by service then time: cart rows 0 and 1 keep
        // their order, payment's row is last.
        assert_eq!(rows(&reopened, "\"connection reset\""), vec![0]);
        assert_eq!(rows(&reopened, "\"reset the\""), vec![2]);
        assert_eq!(rows(&reopened, "connection -\"reset the\""), vec![0]);
        assert_eq!(rows(&reopened, "\"connection res\"*"), vec![0]);
        assert_eq!(
            rows(
                &reopened,
                "attributes.http.response.status_code:[500 TO 599]"
            ),
            vec![0]
        );
    }

    /// Attributes are read in place from the map column: a batch that is
    /// a slice of another indexes its own rows' entries, and decimals are
    /// numbers.
    #[test]
    fn attributes_of_a_sliced_batch_are_its_rows_own() {
        let batch = log_batch_with(&[
            ("a", "INFO", 9, "first", &[("http.route", "/first")]),
            (
                "a",
                "INFO",
                9,
                "second",
                &[("http.route", "/second"), ("latency", "0.25")],
            ),
            ("a", "INFO", 9, "third", &[("latency", "2.5e0")]),
        ]);
        let index = LogIndex::build(&batch.slice(1, 2)).unwrap();
        assert_eq!(rows(&index, "attributes.http.route:second"), vec![0]);
        assert_eq!(
            rows(&index, "attributes.http.route:first"),
            Vec::<u32>::new()
        );
        assert_eq!(rows(&index, "attributes.latency:[0.1 TO 0.5]"), vec![0]);
        assert_eq!(rows(&index, "attributes.latency:[1 TO 3]"), vec![1]);
    }

    /// Every example of the README's "Searching logs" table, run.
    #[test]
    fn readme_examples() {
        let batch = log_batch_with(&[
            (
                "cart",
                "ERROR",
                17,
                "connection reset at /api/cart for o-810804",
                &[
                    ("http.route", "/cart"),
                    ("http.response.status_code", "503"),
                ],
            ),
            ("payment", "WARN", 13, "connection refused: timeout", &[]),
            ("payment", "INFO", 9, "reset\tdone \"quoted\"", &[]),
        ]);
        let batch = with_trace_ids(
            &batch,
            &[Some("5b8efff798038103d269b633813fc60c"), None, None],
        );
        let index = LogIndex::build(&batch).unwrap();
        for (query, expected) in [
            ("timeout", vec![1]),
            ("TIMEOUT", vec![1]),
            ("connection reset", vec![0]),
            ("\"connection reset\"", vec![0]),
            ("\"o-810804\"", vec![0]),
            ("\"/api/cart\"", vec![0]),
            ("reset OR refused", vec![0, 1, 2]),
            ("reset AND NOT service:payment", vec![0]),
            ("reset -service:payment", vec![0]),
            ("(reset OR refused) AND connection", vec![0, 1]),
            ("conn*", vec![0, 1]),
            ("service:pay*", vec![1, 2]),
            ("service:cart", vec![0]),
            ("service:CART", vec![0]),
            ("severity_text:error", vec![0]),
            ("trace_id:5b8efff798038103d269b633813fc60c", vec![0]),
            ("severity_number:[17 TO 24]", vec![0]),
            ("attributes.http.route:cart", vec![0]),
            ("attributes.http.response.status_code:[500 TO 599]", vec![0]),
            ("attributes.http.response.status_code:503", vec![0]),
            (
                "time:[2026-11-26T14:00:00Z TO 2026-11-26T15:00:00Z]",
                vec![],
            ),
            (
                "time:[1970-01-01T00:00:00Z TO 1970-01-01T00:00:01Z]",
                vec![0, 1, 2],
            ),
            // Times are kept to the nanosecond (rows at 1,000 ns and on).
            ("time:{1970-01-01T00:00:00Z TO *]", vec![0, 1, 2]),
            ("time:[1970-01-01T00:00:00.000001001Z TO *]", vec![1, 2]),
            ("time:1970-01-01T00:00:00.000001Z", vec![0]),
            // Tabs separate words, escaped quotes stay inside phrases.
            ("reset\tdone", vec![2]),
            (r#""done \"quoted\"""#, vec![2]),
            ("NOT service:payment", vec![0]),
        ] {
            assert_eq!(rows(&index, query), expected, "{query}");
        }
        let deep = format!("{}a{}", "(".repeat(1000), ")".repeat(1000));
        assert!(parse_query(&deep).is_err());
    }
}

mod id_word_tests {
    use super::*;
    use crate::test_batches::log_batch_with;

    /// Words with a digit are indexed shortened (`ffc8~`); searches for
    /// them still answer exactly, before and after the rows are in a
    /// split (whose bundle holds an empty document store).
    #[test]
    fn id_like_words_are_found_exactly() {
        let batch = log_batch_with(&[
            (
                "cart",
                "INFO",
                9,
                "TraceID: ffc8ca7e4c8f06c75142c880d5595d96 order o-810804 took 1674981742383 ms",
                &[],
            ),
            (
                "cart",
                "INFO",
                9,
                "TraceID: ffc8aaaa11112222 order o-810805 ffc8",
                &[],
            ),
            ("cart", "INFO", 9, "code e12345 and 2023", &[]),
        ]);
        let memtable = LogIndex::build(&batch).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (reopened, bundle) = reopened_split(&batch, dir.path());
        let bundle = bundle.as_slice();
        for index in [&memtable, &reopened] {
            for (query, expected) in [
                ("ffc8ca7e4c8f06c75142c880d5595d96", vec![0]),
                ("FFC8CA7E4C8F06C75142C880D5595D96", vec![0]),
                ("trace_id:x OR ffc8aaaa11112222", vec![1]),
                // The short word itself, not the ids it begins.
                ("ffc8", vec![1]),
                ("ffc8ca7e4c8f06c75142c880d5595d97", vec![]),
                ("ffc8*", vec![0, 1]),
                ("ffc8c*", vec![0]),
                ("ffc8ca7e*", vec![0]),
                ("ffc8ca7x*", vec![]),
                ("810804", vec![0]),
                ("\"o-810804\"", vec![0]),
                ("\"order o 810805\"", vec![1]),
                ("\"order o-8108\"*", vec![0, 1]),
                ("\"order o-81080\"*", vec![0, 1]),
                ("1674981742383", vec![0]),
                ("1674981742384", vec![]),
                ("\"took 1674981742383 ms\"", vec![0]),
                // Words apart are no phrase.
                ("\"1674981742383 took\"", vec![]),
                ("\"took 810804\"", vec![]),
                ("NOT ffc8ca7e4c8f06c75142c880d5595d96", vec![1, 2]),
                ("e12345 2023", vec![2]),
                ("e1234", vec![]),
                ("e1234*", vec![2]),
                ("E12345 -code", vec![]),
            ] {
                let ast = parse_query(query).unwrap_or_else(|e| panic!("{query}: {e}"));
                assert_eq!(index.matching_rows(&ast).unwrap(), expected, "{query}");
            }
        }
        assert!(
            parse_query("body:[a TO b]").is_err(),
            "body words have no order"
        );
        // The bundle's document stores (the index's and its blocks')
        // hold no document.
        let stores: Vec<usize> = log_bundle::read_bundle(bundle)
            .unwrap()
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "store"))
            .map(|(_, d)| d.len())
            .collect();
        assert_eq!(stores, vec![empty_store().unwrap().len(); 2]);
    }
}

mod trace_id_tests {
    use super::*;
    use crate::test_batches::log_batch_with;

    /// Trace ids are indexed by their first eight digits; searches for
    /// them still answer exactly, in a memtable batch and in a split
    /// (whose rows are checked against its Parquet file).
    #[test]
    fn trace_ids_are_found_exactly_though_kept_by_prefix() {
        let batch = log_batch_with(&[
            ("cart", "INFO", 9, "a", &[]),
            ("cart", "INFO", 9, "b", &[]),
            ("cart", "INFO", 9, "c", &[]),
            ("cart", "INFO", 9, "d", &[]),
        ]);
        let batch = with_trace_ids(
            &batch,
            &[
                Some("5b8efff798038103d269b633813fc60c"),
                Some("5b8efff7aaaaaaaabbbbbbbbcccccccc"),
                Some("abc"),
                None,
            ],
        );
        let memtable = LogIndex::build(&batch).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (reopened, _) = reopened_split(&batch, dir.path());
        for index in [&memtable, &reopened] {
            let searcher = index.reader.searcher();
            let terms = searcher.segment_readers()[0]
                .inverted_index(index.fields.trace_id)
                .unwrap()
                .terms()
                .num_terms();
            assert_eq!(terms, 2, "the two long ids share one term");
            for (query, expected) in [
                ("trace_id:5b8efff798038103d269b633813fc60c", vec![0]),
                ("trace_id:5B8EFFF798038103D269B633813FC60C", vec![0]),
                ("trace_id:\"5b8efff7aaaaaaaabbbbbbbbcccccccc\"", vec![1]),
                ("trace_id:5b8efff798038103d269b633813fc60d", vec![]),
                ("trace_id:5b8efff7", vec![]),
                ("trace_id:abc", vec![2]),
                ("trace_id:5b8e*", vec![0, 1]),
                ("trace_id:5b8efff7*", vec![0, 1]),
                ("trace_id:5b8efff79*", vec![0]),
                ("trace_id:5b8efff798038103d269b633813fc60c*", vec![0]),
                ("trace_id:5b8efff7b*", vec![]),
                // Values holding the mark share the long ids' term, and are
                // checked like them.
                ("trace_id:5b8efff7~", vec![]),
                ("trace_id:5B8EFFF7~", vec![]),
                ("trace_id:\"5b8efff7~\"", vec![]),
                ("trace_id:\"5b8efff7~\"*", vec![]),
                ("trace_id:\"5b8efff7~a\"*", vec![]),
                (
                    "NOT trace_id:5b8efff798038103d269b633813fc60c",
                    vec![1, 2, 3],
                ),
                ("a OR trace_id:5b8efff7aaaaaaaabbbbbbbbcccccccc", vec![0, 1]),
            ] {
                let ast = parse_query(query).unwrap_or_else(|e| panic!("{query}: {e}"));
                assert_eq!(index.matching_rows(&ast).unwrap(), expected, "{query}");
            }
        }
    }
}

mod empty_index_tests {
    use super::*;

    /// Found by the `search_query` fuzz target: a query over an index of
    /// no rows must match nothing, not panic.
    #[test]
    fn an_index_of_no_rows_matches_nothing() {
        let index = LogIndex::empty().unwrap();
        for q in [
            "body:pay* AND NOT (a OR b) trace_id:5b8e",
            "NOT a",
            "\"a b\"",
            "*",
        ] {
            let ast = loupe_search::parse(q).unwrap();
            assert_eq!(index.matching_rows(&ast).unwrap(), Vec::<u32>::new(), "{q}");
        }
    }
}

mod digit_block_tests {
    use super::*;
    use crate::test_batches::log_batch_with;

    /// The words of `text` as a person reads them: runs of letters and
    /// digits, lowercased (an oracle written apart from the index).
    fn words(text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    }

    /// Rows whose words hold `phrase`'s words in a row (the last one as a
    /// prefix when asked).
    fn expected(bodies: &[String], phrase: &str, prefix: bool) -> Vec<u32> {
        let wanted = words(phrase);
        let last = wanted.len() - 1;
        (0..bodies.len())
            .filter(|&r| {
                let have = words(&bodies[r]);
                have.windows(wanted.len()).any(|w| {
                    w.iter().zip(&wanted).enumerate().all(|(i, (h, x))| {
                        if prefix && i == last {
                            h.starts_with(x.as_str())
                        } else {
                            h == x
                        }
                    })
                })
            })
            .map(|r| r as u32)
            .collect()
    }

    /// Words with a digit are indexed by blocks of rows, not per row: a
    /// search for one, a phrase holding one (with or without its other
    /// words apart in other rows) or a prefix of one still answers exactly
    /// the rows that hold it, in the memtable's index and in a split's.
    #[test]
    fn digit_words_are_found_through_blocks_exactly() {
        let codes = ["200", "404", "503"];
        let bodies: Vec<String> = (0..600usize)
            .map(|i| match i % 5 {
                0 => format!(
                    "GET /api/v{} status {} took {} ms",
                    i % 3,
                    codes[i % 3],
                    i * 7
                ),
                1 => format!("{} status took ms GET", codes[(i + 1) % 3]),
                2 => format!("trace {:016x}{:016x} order o-{}", i * 7919, i, 810_000 + i),
                3 => format!("connection reset port {} after e{}x", 40_000 + i, i),
                _ => "no digits here at all".to_string(),
            })
            .collect();
        assert!(bodies.len() > 4 * DIGIT_BLOCK_ROWS as usize);
        let rows: Vec<_> = bodies
            .iter()
            .map(|b| ("cart", "INFO", 9, b.as_str(), &[][..]))
            .collect();
        let batch = log_batch_with(&rows);
        let memtable = LogIndex::build(&batch).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (reopened, bundle) = reopened_split(&batch, dir.path());
        assert!(
            log_bundle::read_bundle(&bundle)
                .unwrap()
                .iter()
                .any(|(p, _)| p.starts_with(BLOCKS_DIR)),
            "the bundle holds the blocks' index"
        );
        let trace = format!("{:016x}{:016x}", 17 * 7919, 17);
        let phrases = [
            "404",
            "503",
            "200",
            "status 503",
            "503 status",
            "status 503 took",
            "took 503",
            "v1 status 404",
            "api v2",
            trace.as_str(),
            "order o-810047",
            "o-810047 order",
            "810047",
            "810048",
            "40003",
            "port 40008",
            "e13x",
            "reset port",
            "no digits",
            "999",
        ];
        for index in [&memtable, &reopened] {
            for phrase in phrases {
                let want = expected(&bodies, phrase, false);
                let query = format!("\"{phrase}\"");
                assert_eq!(rows_of(index, &query), want, "{query}");
                if phrase.chars().all(char::is_alphanumeric) {
                    assert_eq!(rows_of(index, phrase), want, "{phrase}");
                }
            }
            for stem in ["40", "4000", "40012", "e1", "e13", "81004", "v", "po", "no"] {
                let want = expected(&bodies, stem, true);
                assert_eq!(rows_of(index, &format!("{stem}*")), want, "{stem}*");
            }
            let want = expected(&bodies, "status 50", true);
            assert_eq!(rows_of(index, "\"status 50\"*"), want);
            let all: Vec<u32> = (0..bodies.len() as u32).collect();
            let with: Vec<u32> = expected(&bodies, "503", false);
            let without: Vec<u32> = all.into_iter().filter(|r| !with.contains(r)).collect();
            assert_eq!(rows_of(index, "NOT 503"), without);
            assert_eq!(rows_of(index, "503 OR 404"), {
                let mut r = with.clone();
                r.extend(expected(&bodies, "404", false));
                r.sort();
                r
            });
        }
    }

    fn rows_of(index: &LogIndex, q: &str) -> Vec<u32> {
        parse_query(q)
            .and_then(|ast| index.matching_rows(&ast))
            .unwrap_or_else(|e| panic!("{q}: {e}"))
    }
}
