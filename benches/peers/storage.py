"""Storage peers of loupe-bench: the same log lines (read from Loupe's
Parquet files) as DuckDB's zstd Parquet (time, service, body, sorted by
service and time) and as zstd -3 of the raw text (one line per record).

usage: python3 storage.py LOGS_DIR WORK_DIR
Prints {"raw_bytes", "lines", "duckdb_parquet_bytes", "zstd_bytes"}.
"""
import json
import os
import subprocess
import sys

logs_dir, work = sys.argv[1], sys.argv[2]
out = {}
try:
    import duckdb
except ImportError:
    print(json.dumps({"error": "peer not installed"}))
    sys.exit(0)
con = duckdb.connect()
con.execute("SET threads TO 2")
src = f"read_parquet('{logs_dir}/*.parquet')"
raw = os.path.join(work, "raw.txt")
with open(raw, "wb") as f:
    cur = con.execute(f"SELECT body FROM {src}")
    lines = 0
    while True:
        batch = cur.fetchmany(50_000)
        if not batch:
            break
        for (body,) in batch:
            f.write((body or "").encode("utf-8", "replace") + b"\n")
            lines += 1
out["lines"] = lines
out["raw_bytes"] = os.path.getsize(raw)
pq = os.path.join(work, "duck.parquet")
con.execute(
    f"COPY (SELECT time, service, body FROM {src} ORDER BY service, time) TO '{pq}' (FORMAT parquet, COMPRESSION zstd)"
)
out["duckdb_parquet_bytes"] = os.path.getsize(pq)
try:
    subprocess.run(["zstd", "-3", "-q", "-f", raw, "-o", raw + ".zst"], check=True)
    out["zstd_bytes"] = os.path.getsize(raw + ".zst")
except (OSError, subprocess.CalledProcessError):
    out["zstd_bytes"] = None
for p in (raw, raw + ".zst", pq):
    if os.path.exists(p):
        os.remove(p)
print(json.dumps(out))
