//! Storage: bytes on disk (Parquet + full-text index) per raw log byte, on
//! generated logs and on the real corpus from `../shared/datasets/`
//! (loaded over OTLP/HTTP), against zstd -3 of the raw text and DuckDB's
//! zstd Parquet of the same lines.
//!
//! "Raw" is the lines' bodies alone, as a file of text would hold them, and
//! the peers store only time, service and body; Loupe stores whole OTLP
//! records. On real lines (150+ bytes) that difference is small; on
//! `loupe gen`'s short lines (~70 bytes) it dominates. The suite compacts
//! them into one file, so there is no per-file overhead; on 121 k
//! generated lines trace_id and span_id (random hex) were 61 % of the
//! Parquet bytes and the term dictionary (a term per trace id and
//! attribute value) 54 % of the index, which is why generated logs come
//! out larger than their bodies.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::peers::{NOT_INSTALLED, Peers, link_files};
use crate::report::{Better, Row};
use crate::server::{Loupe, send_logs};

/// The goal: stored ≥ 10× smaller than the raw text.
const GOAL_TIMES_SMALLER: f64 = 10.0;

fn file_bytes(p: &Path) -> u64 {
    if p.is_dir() {
        crate::server::dir_bytes(p)
    } else {
        std::fs::metadata(p).map_or(0, |m| m.len())
    }
}

/// Rows comparing Loupe's live `logs` files (already linked into
/// `work/logs`) with the peers' forms of the same lines.
pub fn rows(
    what: &str,
    files: &[(PathBuf, Option<PathBuf>)],
    peers: &Peers,
    work: &Path,
) -> Result<Vec<Row>> {
    let parquet: u64 = files.iter().map(|(p, _)| file_bytes(p)).sum();
    let index: u64 = files
        .iter()
        .filter_map(|(_, i)| i.as_deref())
        .map(file_bytes)
        .sum();
    let out = peers.run(
        "storage.py",
        &[work.join("logs").as_os_str(), work.as_os_str()],
        work,
    );
    let out = match out {
        Ok(v) if v.get("error").is_none() => v,
        failed => {
            match failed {
                Ok(v) => eprintln!("storage peers: {v}"),
                Err(e) => eprintln!("storage peers: {e:#}"),
            }
            return Ok(vec![
                Row::new(
                    format!("storage {what}: Parquet + index"),
                    "MB",
                    (parquet + index) as f64 / 1e6,
                    Better::Lower,
                )
                .vs("duckdb", None, NOT_INSTALLED),
            ]);
        }
    };
    let raw = out["raw_bytes"].as_f64().unwrap_or(f64::NAN);
    let per_raw = |b: Option<f64>| b.map(|b| b / raw);
    eprintln!(
        "storage {what}: {} lines, raw {:.1} MB, parquet {:.2} MB + index {:.2} MB; duckdb parquet {:.2} MB, zstd -3 {:.2} MB",
        out["lines"],
        raw / 1e6,
        parquet as f64 / 1e6,
        index as f64 / 1e6,
        out["duckdb_parquet_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        out["zstd_bytes"].as_f64().unwrap_or(0.0) / 1e6,
    );
    let stored = (parquet + index) as f64;
    Ok(vec![
        Row::new(
            format!("storage {what}: raw text / (Parquet + index)"),
            "× smaller",
            raw / stored,
            Better::Higher,
        )
        .vs("goal", Some(GOAL_TIMES_SMALLER), ""),
        Row::new(
            format!("storage {what}: (Parquet + index) per raw byte"),
            "bytes/byte",
            stored / raw,
            Better::Lower,
        )
        .vs(
            "zstd -3 of the raw text",
            per_raw(out["zstd_bytes"].as_f64()),
            "",
        ),
        Row::new(
            format!("storage {what}: Parquet alone per raw byte"),
            "bytes/byte",
            parquet as f64 / raw,
            Better::Lower,
        )
        .vs(
            "duckdb zstd Parquet",
            per_raw(out["duckdb_parquet_bytes"].as_f64()),
            "",
        ),
        Row::new(
            format!("storage {what}: full-text index per raw byte"),
            "bytes/byte",
            index as f64 / raw,
            Better::Lower,
        ),
    ])
}

/// The real corpus as JSONL (`service`, `time_ns`, `body`), built once
/// from `datasets` into `cache` with `benches/peers/corpus.py`; `None`
/// when the datasets are absent.
pub fn corpus(datasets: &Path, cache: &Path, peers: &Peers) -> Result<Option<PathBuf>> {
    let out = cache.join("corpus.jsonl");
    if out.exists() {
        return Ok(Some(out));
    }
    let bundles = ["real-logs.tar.zst", "nezha-trainticket-2023-01-29.tar.zst"];
    if !bundles.iter().all(|b| datasets.join(b).exists()) {
        return Ok(None);
    }
    let extract = cache.join("extract");
    std::fs::create_dir_all(&extract)?;
    for b in bundles {
        eprintln!("extracting {b} (once; cached in {})", cache.display());
        let status = Command::new("sh")
            .arg("-c")
            .arg("zstd -dc \"$0\" | tar x -C \"$1\"")
            .arg(datasets.join(b))
            .arg(&extract)
            .status()?;
        if !status.success() {
            bail!("extracting {b} failed (needs zstd and tar)");
        }
    }
    let partial = cache.join("corpus.jsonl.part");
    let built = peers.run("corpus.py", &[partial.as_os_str()], &extract);
    let _ = std::fs::remove_dir_all(&extract);
    // corpus.py prints its counts on stderr, not JSON.
    if let Err(e) = built
        && !partial.exists()
    {
        return Err(e);
    }
    std::fs::rename(&partial, &out)?;
    Ok(Some(out))
}

/// Loads the first `limit` lines of the corpus into a fresh server over
/// OTLP/HTTP (consecutive lines of one service per request), restarts it
/// so everything is flushed and compacted, and returns the storage rows.
pub fn load_corpus(
    bin: &Path,
    jsonl: &Path,
    limit: Option<usize>,
    peers: &Peers,
) -> Result<Vec<Row>> {
    let data = tempfile::tempdir()?;
    // Its timestamps are from 2023: keep them within retention.
    let flags = ["--retention-logs", "3650d"];
    let server = Loupe::start(bin, data.path(), &flags)?;
    let reader = BufReader::new(std::fs::File::open(jsonl).context("corpus")?);
    let mut batch: Vec<(i64, String)> = Vec::new();
    let mut service = String::new();
    let mut sent = 0usize;
    let mut last_time = 1_700_000_000_000_000_000i64;
    let flush = |service: &str, batch: &mut Vec<(i64, String)>| -> Result<()> {
        let lines: Vec<(i64, &str)> = batch.iter().map(|(t, b)| (*t, b.as_str())).collect();
        send_logs(&server.otlp_http, service, &lines)?;
        batch.clear();
        Ok(())
    };
    for line in reader.lines() {
        if limit.is_some_and(|l| sent >= l) {
            break;
        }
        let v: Value = serde_json::from_str(&line?)?;
        let s = v["service"].as_str().unwrap_or("unknown");
        if s != service || batch.len() >= 2000 {
            if !batch.is_empty() {
                flush(&service, &mut batch)?;
            }
            service = s.to_string();
        }
        // A few Nezha rows carry a corrupted (negative) time: keep the
        // previous line's.
        last_time = v["time_ns"]
            .as_i64()
            .filter(|t| *t > 0)
            .unwrap_or(last_time);
        batch.push((last_time, v["body"].as_str().unwrap_or("").to_string()));
        sent += 1;
    }
    if !batch.is_empty() {
        flush(&service, &mut batch)?;
    }
    eprintln!("corpus: {sent} real log lines sent over OTLP/HTTP");
    server.stop()?;
    let compacting = [
        flags[0],
        flags[1],
        "--compaction-interval",
        "2s",
        "--compaction-min-files",
        "2",
    ];
    let server = Loupe::start(bin, data.path(), &compacting)?;
    server.settle("logs", Duration::from_secs(600))?;
    let files = server.live_files("logs")?;
    server.stop()?;
    let work = tempfile::tempdir()?;
    let parquet: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    link_files(&parquet, &work.path().join("logs"))?;
    rows("real corpus", &files, peers, work.path())
}
