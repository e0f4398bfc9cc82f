"""Flattens the real-logs corpus and the Nezha logs (extracted from ../shared/datasets into the current directory) into JSONL {"service","time_ns","body"}: the real corpus loupe-bench loads over OTLP.

usage: python3 corpus.py OUT.jsonl
"""
import csv, glob, gzip, json, os, sys
csv.field_size_limit(1<<30)
out = open(sys.argv[1], 'w')
n = 0; raw = 0
t0 = 1_700_000_000_000_000_000
def emit(service, t, body):
    global n, raw
    body = body.rstrip('\n')
    out.write(json.dumps({"service": service, "time_ns": t, "body": body}) + "\n")
    n += 1; raw += len(body.encode()) + 1
for d in ['nezha/rca-2023-01-29/log', 'nezha/fault-free-2023-01-29/log']:
    for f in sorted(glob.glob(d + '/*.csv')):
        for r in csv.DictReader(open(f, newline='')):
            pod = r['PodName']; svc = '-'.join(pod.split('-')[:-2]) or pod
            try: line = json.loads(r['Log'])['log']
            except Exception: line = r['Log']
            try: t = int(r['TimeUnixNano'])
            except Exception: t = t0 + n
            emit(svc, t, line)
for f in sorted(glob.glob('real-logs/loghub-2k/*/*_2k.log')):
    svc = os.path.basename(os.path.dirname(f)).lower()
    for i, line in enumerate(open(f, errors='replace')):
        emit(svc, t0 + i * 1_000_000_000, line)
for f in sorted(glob.glob('real-logs/zeek-json/*.json.gz')):
    svc = 'zeek-' + os.path.basename(f).split('.')[0]
    for i, line in enumerate(gzip.open(f, 'rt', errors='replace')):
        emit(svc, t0 + i * 1_000_000, line)
for f in sorted(glob.glob('real-logs/elastic/**/*', recursive=True)):
    if os.path.isdir(f) or f.endswith('LICENSE'): continue
    svc = os.path.basename(os.path.dirname(f)) if 'kafka' in f else 'apache'
    for i, line in enumerate(open(f, errors='replace')):
        emit(svc + '-' + os.path.basename(f) if 'kafka' in f else svc, t0 + i * 1_000_000, line)
print(n, raw, file=sys.stderr)
