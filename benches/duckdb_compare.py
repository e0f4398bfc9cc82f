"""The search benchmark's peer: the same three questions as LIKE scans over
the same Parquet files in DuckDB. Prints one JSON object of median
milliseconds (and row counts, to check the answers agree).

usage: python3 duckdb_compare.py FILE_LIST RARE_TERM COMMON_TERM RUNS
(FILE_LIST: a text file with one Parquet path per line)
"""
import json
import statistics
import sys
import time

import duckdb

list_file, rare, common, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(list_file) as f:
    files = [line.strip() for line in f if line.strip()]
con = duckdb.connect()
con.execute("SET threads TO 2")
src = "read_parquet([" + ", ".join("'" + p.replace("'", "''") + "'" for p in files) + "])"
queries = {
    "rare": (f"SELECT time, service, body FROM {src} WHERE body LIKE ? ORDER BY time DESC LIMIT 100", [f"%{rare}%"]),
    "recent": (f"SELECT time, service, body FROM {src} WHERE body ILIKE ? ORDER BY time DESC LIMIT 100", [f"%{common}%"]),
    "count_day": (
        f"SELECT time_bucket(INTERVAL '15 minutes', time) AS b, count(*) FROM {src} "
        f"WHERE body ILIKE ? AND time >= now() - INTERVAL 1 DAY GROUP BY b",
        [f"%{common}%"],
    ),
}
out = {}
for name, (sql, params) in queries.items():
    times, rows = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = con.execute(sql, params).fetchall()
        times.append((time.perf_counter() - start) * 1000)
        rows = sum(r[1] for r in result) if name == "count_day" else len(result)
    out[name] = {"median_ms": statistics.median(times), "rows": rows}
print(json.dumps(out))
