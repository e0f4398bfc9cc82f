use super::*;
use crate::plan_codec::tests::{answer, engine, optimized, without_rule};

/// Grouped sums of `CASE WHEN p THEN 1 ELSE 0 END` become filtered counts,
/// under the same column names and with the same answers; other sums, and
/// whole-table ones, stay as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_sums_of_one_or_zero_answer_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let (_storage, engine) = engine(dir.path()).await;
    let with = engine.session().unwrap();
    let without = without_rule(&with, CountedCases.name());
    const FILTERED: &str = "FILTER (WHERE";
    let queries = [
        (
            "SELECT service, count(*) AS calls, \
             sum(CASE WHEN name LIKE '%1%' THEN 1 ELSE 0 END) AS ones, \
             avg(duration_ns) AS avg_ns FROM spans GROUP BY service ORDER BY service",
            true,
        ),
        // Unaliased: the column keeps DataFusion's name for the sum.
        (
            "SELECT name, sum(CASE WHEN duration_ns > 1000 THEN 1 ELSE 0 END) \
             FROM spans GROUP BY name ORDER BY name",
            true,
        ),
        // A null condition counts as "else".
        (
            "SELECT service, sum(CASE WHEN parent_span_id > '8' THEN 1 ELSE 0 END) AS n \
             FROM spans GROUP BY service ORDER BY service",
            true,
        ),
        // Whole table with no rows: null, not 0.
        (
            "SELECT sum(CASE WHEN name = 'x' THEN 1 ELSE 0 END) AS n FROM spans \
             WHERE name = 'nothing'",
            false,
        ),
        (
            "SELECT service, sum(CASE WHEN name = 'x' THEN 2 ELSE 0 END) AS n \
             FROM spans GROUP BY service ORDER BY service",
            false,
        ),
        (
            "SELECT service, sum(CASE WHEN name = 'x' THEN 1 END) AS n \
             FROM spans GROUP BY service ORDER BY service",
            false,
        ),
    ];
    for (sql, rewritten) in queries {
        let shown = optimized(&with, sql).await;
        assert_eq!(shown.contains(FILTERED), rewritten, "{sql}\n{shown}");
        assert!(!optimized(&without, sql).await.contains(FILTERED));
        let (got, want) = (answer(&with, sql).await, answer(&without, sql).await);
        assert_eq!(got, want, "{sql}");
        assert!(
            got.lines().count() > 4,
            "{sql}: too few rows to compare\n{got}"
        );
    }
}
