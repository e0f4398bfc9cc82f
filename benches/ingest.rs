//! Ingest benchmark: drives OTLP/gRPC load from a separate `loupe gen`
//! process at a `loupe serve` process on this machine and reports, per
//! workload, medians over several runs of:
//!
//! - records/s and uncompressed-protobuf MB/s per server CPU-second,
//! - acknowledgement latency p50 / p99 (as the generator saw it),
//! - the server's peak RSS,
//! - bytes on disk (Parquet + catalog, after the final flush) per ingested byte.
//!
//! Run: `cargo bench --bench ingest` (env: `RUNS`, `SECONDS`, `RATE_SCALE_PERCENT`).

#[path = "common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, Server, dir_bytes, env, median};

use serde_json::Value;

struct Workload {
    name: &'static str,
    signals: &'static str,
    /// Traces per second asked of the generator.
    rate: f64,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "logs",
        signals: "logs",
        rate: 3000.0,
    },
    Workload {
        name: "spans",
        signals: "traces",
        rate: 1500.0,
    },
    Workload {
        name: "mixed",
        signals: "all",
        rate: 1000.0,
    },
];

#[derive(Debug, Clone, Default)]
struct Sample {
    cpu_secs: f64,
    records_per_cpu_sec: f64,
    mb_per_cpu_sec: f64,
    records_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mb: f64,
    disk_per_byte: f64,
    errors: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/pid/stat: 12 and 13 after ')'.
    (get(11) + get(12)) / clock_ticks()
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn run_once(w: &Workload, seconds: u64, seed: u64) -> Sample {
    let data = tempfile::tempdir().expect("temp dir");
    let server = Server::start(data.path(), &[]);
    let (pid, grpc) = (server.pid(), server.grpc.clone());
    let cpu_before = cpu_secs(pid);
    let output = Command::new(BIN)
        .args([
            "gen",
            "--protocol",
            "grpc",
            "--quiet",
            "--json",
            "--concurrency",
            "8",
            "--batch",
            "50",
        ])
        .args(["--endpoint", &format!("http://{grpc}")])
        .args(["--signals", w.signals, "--rate", &w.rate.to_string()])
        .args([
            "--duration",
            &format!("{seconds}s"),
            "--seed",
            &seed.to_string(),
        ])
        .output()
        .expect("run loupe gen");
    let cpu = cpu_secs(pid) - cpu_before;
    let rss = peak_rss_mb(pid);
    server.stop();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "gen report: {e}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let n = |k: &str| report[k].as_f64().unwrap_or(0.0);
    let records = n("spans") + n("logs") + n("data_points");
    let bytes = n("bytes");
    let on_disk = dir_bytes(&data.path().join("splits"))
        + dir_bytes(&data.path().join("wal"))
        + std::fs::metadata(data.path().join("catalog.sqlite"))
            .map(|m| m.len())
            .unwrap_or(0);
    Sample {
        cpu_secs: cpu,
        records_per_cpu_sec: records / cpu.max(1e-9),
        mb_per_cpu_sec: bytes / 1e6 / cpu.max(1e-9),
        records_per_sec: records / n("elapsed_secs").max(1e-9),
        p50_ms: report["ack_latency"]["p50_ms"].as_f64().unwrap_or(0.0),
        p99_ms: report["ack_latency"]["p99_ms"].as_f64().unwrap_or(0.0),
        peak_rss_mb: rss,
        disk_per_byte: on_disk as f64 / bytes.max(1.0),
        errors: report["errors"].as_u64().unwrap_or(0),
    }
}

fn main() {
    // `cargo bench` passes flags such as --bench; only our env vars matter.
    let runs = env("RUNS", 3) as usize;
    let seconds = env("SECONDS", 20);
    let scale = env("RATE_SCALE_PERCENT", 100) as f64 / 100.0;
    println!(
        "ingest benchmark: {runs} runs × {seconds}s per workload, OTLP/gRPC from a separate `loupe gen` process"
    );
    println!(
        "{:<6} {:>8} {:>14} {:>12} {:>11} {:>9} {:>9} {:>9} {:>11} {:>7}",
        "load",
        "records",
        "rec/CPU-s",
        "MB/CPU-s",
        "CPU-s",
        "p50 ms",
        "p99 ms",
        "RSS MB",
        "disk/byte",
        "errors"
    );
    let mut summary = Vec::new();
    for w in &WORKLOADS {
        let w = Workload {
            rate: w.rate * scale,
            ..*w
        };
        let samples: Vec<Sample> = (0..runs)
            .map(|i| {
                let s = run_once(&w, seconds, i as u64 + 1);
                println!(
                    "{:<6} {:>8.0} {:>14.0} {:>12.2} {:>11.2} {:>9.2} {:>9.2} {:>9.1} {:>11.3} {:>7}",
                    w.name, s.records_per_sec, s.records_per_cpu_sec, s.mb_per_cpu_sec, s.cpu_secs, s.p50_ms,
                    s.p99_ms, s.peak_rss_mb, s.disk_per_byte, s.errors
                );
                std::thread::sleep(Duration::from_millis(500));
                s
            })
            .collect();
        let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        let line = format!(
            "{:<6} {:>8.0} {:>14.0} {:>12.2} {:>11.2} {:>9.2} {:>9.2} {:>9.1} {:>11.3} {:>7}",
            format!("{}*", w.name),
            m(|s| s.records_per_sec),
            m(|s| s.records_per_cpu_sec),
            m(|s| s.mb_per_cpu_sec),
            m(|s| s.cpu_secs),
            m(|s| s.p50_ms),
            m(|s| s.p99_ms),
            m(|s| s.peak_rss_mb),
            m(|s| s.disk_per_byte),
            samples.iter().map(|s| s.errors).sum::<u64>()
        );
        println!("{line}");
        summary.push(line);
    }
    println!(
        "\nmedians (records = log records for `logs`, spans for `spans`, all signals for `mixed`):"
    );
    for line in summary {
        println!("{line}");
    }
}
