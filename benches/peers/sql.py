"""SQL peers of loupe-bench: the same queries over the same Parquet files
in DuckDB, chDB and DataFusion (PyPI), each limited to 2 threads.

usage: python3 sql.py SPANS_DIR LOGS_DIR QUERIES_JSON RUNS
QUERIES_JSON: {"name": "SQL over tables spans and logs", ...}
Prints {"engine": {"name": {"ms": median, "rows": [...]}} or {"error": "..."}}.
"""
import json
import statistics
import sys
import time

spans_dir, logs_dir, queries_file, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
queries = json.load(open(queries_file))


def plain(v):
    if isinstance(v, (int, float, str)) or v is None:
        return v
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    try:
        return float(v)  # Decimal and friends
    except (TypeError, ValueError):
        return str(v)


def timed(run):
    times, rows = [], None
    run()  # warm-up: file cache and metadata
    for _ in range(runs):
        start = time.perf_counter()
        rows = run()
        times.append((time.perf_counter() - start) * 1000)
    return {"ms": statistics.median(times), "rows": [[plain(v) for v in r] for r in rows]}


def duckdb_engine():
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet('{spans_dir}/*.parquet')")
    con.execute(f"CREATE VIEW logs AS SELECT * FROM read_parquet('{logs_dir}/*.parquet')")
    # DuckDB's map[key] is the value since 1.3 (a list before).
    return lambda sql: con.execute(sql).fetchall()


def chdb_engine():
    from chdb import session

    s = session.Session()
    s.query(f"CREATE VIEW spans AS SELECT * FROM file('{spans_dir}/*.parquet', Parquet)")
    s.query(f"CREATE VIEW logs AS SELECT * FROM file('{logs_dir}/*.parquet', Parquet)")
    settings = " SETTINGS max_threads = 2, output_format_json_quote_64bit_integers = 0, join_use_nulls = 1"

    def run(sql):
        out = s.query(sql + settings, "JSONCompact")
        return json.loads(out.bytes() or b'{"data": []}')["data"]

    return run


def datafusion_engine():
    from datafusion import SessionConfig, SessionContext

    ctx = SessionContext(SessionConfig().with_target_partitions(2))
    ctx.register_parquet("spans", spans_dir + "/")
    ctx.register_parquet("logs", logs_dir + "/")
    return lambda sql: [list(r.values()) for r in ctx.sql(sql).to_pylist()]


out = {}
for name, make in [("duckdb", duckdb_engine), ("chdb", chdb_engine), ("datafusion-python", datafusion_engine)]:
    try:
        run = make()
    except ImportError:
        out[name] = {"error": "peer not installed"}
        continue
    except Exception as e:  # a peer that cannot read the files is reported, not fatal
        out[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        continue
    out[name] = {}
    for q, sql in queries.items():
        try:
            out[name][q] = timed(lambda: run(sql))
        except Exception as e:
            out[name][q] = {"error": f"{type(e).__name__}: {e}"[:500]}
print(json.dumps(out))
