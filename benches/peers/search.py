"""Search peers of loupe-bench over the same log lines: DuckDB LIKE scans of
the same Parquet files, and tantivy-py over an index of the same lines
(built first, not timed; positions kept so phrases are exact).

usage: python3 search.py LOGS_DIR RARE COMMON RUNS INDEX_DIR
Prints {"duckdb": {...}, "tantivy-py": {...}}: per question its median ms
and hit count, or {"error": ...}.
"""
import json
import statistics
import sys
import time

logs_dir, rare, common, runs, index_dir = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]


def timed(run):
    times, hits = [], None
    run()
    for _ in range(runs):
        start = time.perf_counter()
        hits = run()
        times.append((time.perf_counter() - start) * 1000)
    return {"ms": statistics.median(times), "hits": hits}


out = {}
try:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    src = f"read_parquet('{logs_dir}/*.parquet')"
    rare_sql = f"SELECT time, service, body FROM {src} WHERE body LIKE ? ORDER BY time DESC LIMIT 100"
    recent_sql = f"SELECT time, service, body FROM {src} WHERE body ILIKE ? ORDER BY time DESC LIMIT 100"
    count_sql = (
        f"SELECT time_bucket(INTERVAL '15 minutes', time) AS b, count(*) FROM {src} "
        f"WHERE body ILIKE ? AND time >= now() - INTERVAL 1 DAY GROUP BY b"
    )
    out["duckdb"] = {
        "rare": timed(lambda: len(con.execute(rare_sql, [f"%{rare}%"]).fetchall())),
        "recent": timed(lambda: len(con.execute(recent_sql, [f"%{common}%"]).fetchall())),
        "count": timed(lambda: sum(r[1] for r in con.execute(count_sql, [f"%{common}%"]).fetchall())),
    }
except ImportError:
    out["duckdb"] = {"error": "peer not installed"}

try:
    import tantivy
    import duckdb

    sb = tantivy.SchemaBuilder()
    sb.add_text_field("body", stored=False)
    sb.add_integer_field("time", stored=False, indexed=True, fast=True)
    index = tantivy.Index(sb.build(), path=index_dir)
    writer = index.writer(heap_size=200_000_000, num_threads=2)
    con = duckdb.connect()
    cur = con.execute(f"SELECT epoch_ns(time), body FROM read_parquet('{logs_dir}/*.parquet')")
    while True:
        batch = cur.fetchmany(50_000)
        if not batch:
            break
        for t, body in batch:
            writer.add_document(tantivy.Document(time=int(t), body=body or ""))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    searcher = index.searcher()
    phrase = index.parse_query('"' + rare + '"', ["body"])
    term = index.parse_query(common, ["body"])
    day = 86_400 * 10**9
    now = time.time_ns()
    agg = {"h": {"histogram": {"field": "time", "interval": 900 * 10**9}}}

    def count_with_histogram():
        n = searcher.search(term, limit=1, count=True).count
        searcher.aggregate(term, agg)
        return n

    out["tantivy-py"] = {
        "rare": timed(lambda: searcher.search(phrase, limit=100, count=True).count),
        "recent": timed(
            lambda: len(searcher.search(term, limit=100, order_by_field="time", order=tantivy.Order.Desc).hits)
        ),
        "count": timed(count_with_histogram),
    }
except ImportError:
    out["tantivy-py"] = {"error": "peer not installed"}
except Exception as e:
    out["tantivy-py"] = {"error": f"{type(e).__name__}: {e}"[:500]}
print(json.dumps(out))
