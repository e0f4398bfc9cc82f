use std::collections::BTreeSet;

use datafusion::arrow::array::{LargeStringArray, StringArray, StringViewArray};

use super::*;
use crate::plan_codec::tests::{answer, engine, optimized, without_rule};

/// Values of every shape: short ones around the inline limit, hex ids of
/// 16 and 32 digits, the same digits at the other length, ids with an
/// uppercase or non-hex character, long text, and nulls.
fn values() -> Vec<Option<&'static str>> {
    vec![
        Some(""),
        Some("a"),
        Some("api"),
        Some("abcdefghijkl"),
        Some("abcdefghijklm"),
        Some("0123456789abcdef0123456789abcdef"),
        Some("0123456789ABCDEF0123456789abcdef"),
        Some("0123456789abcdefg123456789abcdef"),
        Some("00000000000000000000000000000000"),
        Some("000000000000000000000000000000ff"),
        Some("00000000000000ff"),
        Some("00000000000000FF"),
        Some("000000000000000g"),
        Some("0000000000000000"),
        Some("000000000000"),
        Some("a long line of text that goes on"),
        None,
    ]
}

fn distinct(values: &[Option<&str>]) -> usize {
    values.iter().flatten().collect::<BTreeSet<_>>().len()
}

fn count(texts: ArrayRef) -> i64 {
    let mut acc = DistinctTexts::default();
    acc.update_batch(&[texts]).unwrap();
    match acc.evaluate().unwrap() {
        ScalarValue::Int64(Some(n)) => n,
        other => panic!("{other:?}"),
    }
}

#[test]
fn lower_hex_reads_lowercase_digits_only() {
    assert_eq!(lower_hex(b"000000ff"), Some(0xff));
    assert_eq!(lower_hex(b"0123456789abcdef"), Some(0x0123456789abcdef));
    assert_eq!(
        lower_hex(b"fedcba9876543210f0e1d2c3b4a59687"),
        Some(0xfedcba9876543210f0e1d2c3b4a59687)
    );
    // Every byte in every place of eight: taken exactly when it is a
    // lowercase hex digit, and worth its digit there.
    for place in 0..8 {
        for byte in 0..=255u8 {
            let mut digits = *b"00000000";
            digits[place] = byte;
            let want = char::from(byte)
                .to_digit(16)
                .filter(|_| !byte.is_ascii_uppercase())
                .map(|d| u128::from(d) << (4 * (7 - place)));
            assert_eq!(lower_hex(&digits), want, "{digits:?}");
        }
    }
    for bad in [&b"00ff"[..], b"0000000ff", &[b'0'; 40]] {
        assert_eq!(lower_hex(bad), None, "{bad:?}");
    }
}

#[test]
fn counts_as_a_set_of_strings_does() {
    let values = values();
    let want = distinct(&values) as i64;
    let repeated: Vec<_> = values
        .iter()
        .cycle()
        .take(values.len() * 3)
        .copied()
        .collect();
    assert_eq!(
        count(Arc::new(StringViewArray::from(repeated.clone()))),
        want
    );
    assert_eq!(count(Arc::new(StringArray::from(repeated.clone()))), want);
    assert_eq!(
        count(Arc::new(LargeStringArray::from(repeated.clone()))),
        want
    );
    let sliced = StringViewArray::from(repeated.clone()).slice(5, values.len());
    assert_eq!(count(Arc::new(sliced)), want);
    let sliced = StringArray::from(repeated).slice(5, values.len());
    assert_eq!(count(Arc::new(sliced)), want);
    // Each shape counted alone.
    for v in values.iter().flatten() {
        assert_eq!(
            count(Arc::new(StringViewArray::from(vec![*v, *v]))),
            1,
            "{v}"
        );
    }
    assert_eq!(
        count(Arc::new(StringViewArray::from(vec![None::<&str>]))),
        0
    );
}

#[test]
fn padding_after_a_short_value_is_ignored() {
    // Two views of "api" whose padding differs, as a writer may leave it.
    let clean = make_view(b"api", 0, 0);
    let padded = clean | (0xabu128 << 100);
    let texts = StringViewArray::try_new(vec![clean, padded].into(), vec![], None);
    match texts {
        Ok(texts) => assert_eq!(count(Arc::new(texts)), 1),
        // Arrow may refuse such views outright; then none can arrive.
        Err(e) => assert!(e.to_string().contains("padding"), "{e}"),
    }
}

#[test]
fn states_merge_across_partitions() {
    let values = values();
    let (first, second) = values.split_at(7);
    let mut states = Vec::new();
    for part in [first, second, &values[3..12]] {
        let mut acc = DistinctTexts::default();
        acc.update_batch(&[Arc::new(StringViewArray::from(part.to_vec()))])
            .unwrap();
        states.push(acc.state().unwrap());
        // Taking the state empties the accumulator.
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(0)));
    }
    let mut merged = DistinctTexts::default();
    let columns: Vec<ArrayRef> = (0..4)
        .map(|c| {
            let scalars: Vec<ScalarValue> = states.iter().map(|s| s[c].clone()).collect();
            ScalarValue::iter_to_array(scalars).unwrap()
        })
        .collect();
    merged.merge_batch(&columns).unwrap();
    assert_eq!(
        merged.evaluate().unwrap(),
        ScalarValue::Int64(Some(distinct(&values) as i64))
    );
    assert!(merged.size() > size_of::<DistinctTexts>());
}

/// The optimized logical plan of `sql`, as text.
/// Whole-table distinct counts of text take the sets, under the same
/// column names and with the same answers as DataFusion's grouping;
/// grouped ones, and counts of other types, stay DataFusion's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_table_distinct_counts_answer_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let (_storage, engine) = engine(dir.path()).await;
    let with = engine.session().unwrap();
    let without = without_rule(&with, CountDistinctTexts.name());
    let queries = [
        ("SELECT count(DISTINCT trace_id) FROM spans", true),
        (
            "SELECT count(DISTINCT span_id) AS ids, count(*) AS n, min(name) AS first FROM spans",
            true,
        ),
        (
            "SELECT count(DISTINCT body) AS bodies, count(DISTINCT service) AS services, \
             count(DISTINCT trace_id) AS traces FROM logs WHERE body <> 'beta line 4'",
            true,
        ),
        // No rows: zero, not null.
        (
            "SELECT count(DISTINCT trace_id) AS n FROM spans WHERE name = 'nothing'",
            true,
        ),
        (
            "SELECT service, count(DISTINCT trace_id) AS n FROM spans \
             GROUP BY service ORDER BY service",
            false,
        ),
        ("SELECT count(DISTINCT duration_ns) AS n FROM spans", false),
    ];
    for (sql, rewritten) in queries {
        let shown = optimized(&with, sql).await;
        assert_eq!(shown.contains(NAME), rewritten, "{sql}\n{shown}");
        assert!(!optimized(&without, sql).await.contains(NAME));
        let (got, want) = (answer(&with, sql).await, answer(&without, sql).await);
        assert_eq!(got, want, "{sql}");
    }
    // The figures themselves: seven traces, 500 span ids in 800 spans.
    let shown = answer(&with, queries[1].0).await;
    assert!(shown.contains("| 500 | 800 |"), "{shown}");
}
