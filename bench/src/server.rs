//! A `loupe serve` child process on ephemeral 127.0.0.1 ports, what the
//! suite asks of it (HTTP API, SQL, `loupe gen` against it), and its CPU
//! time and peak RSS read from /proc.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::http;

pub struct Loupe {
    child: Option<Child>,
    bin: PathBuf,
    pub data: PathBuf,
    pub grpc: String,
    pub otlp_http: String,
    pub http: String,
}

impl Loupe {
    /// Starts `bin serve` on `data` with `extra` flags; returns once it
    /// printed its bound addresses.
    pub fn start(bin: &Path, data: &Path, extra: &[&str]) -> Result<Loupe> {
        let mut child = Command::new(bin)
            .arg("serve")
            .args([
                "--otlp-grpc",
                "127.0.0.1:0",
                "--otlp-http",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("LOUPE_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {} serve", bin.display()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("serve stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = |key: &str| -> Result<String> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .map(String::from)
                .with_context(|| format!("no {key} in {line:?}"))
        };
        Ok(Loupe {
            grpc: addr("otlp_grpc")?,
            otlp_http: addr("otlp_http")?,
            http: addr("http")?,
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// utime + stime of the server so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) follow ')';
        // utime and stime are fields 14 and 15, so 12 and 13 after it.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<f64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0.0))
            .collect();
        let ticks = fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0);
        // USER_HZ is 100 on every Linux this runs on.
        ticks / 100.0
    }

    /// The server's peak resident set (VmHWM) in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// SIGTERM and wait for the clean exit, which flushes everything.
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !killed.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("loupe serve exited with {status}");
        }
        Ok(())
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        http::get_json(&self.http, path)
    }

    /// The whole SQL response (`columns`, `rows`, …).
    pub fn sql(&self, sql: &str) -> Result<Value> {
        http::post_json(&self.http, "/api/v1/sql", &json!({ "sql": sql }))
    }

    /// The first value of the first row.
    pub fn sql_value(&self, sql: &str) -> Result<Value> {
        Ok(self.sql(sql)?["rows"][0][0].clone())
    }

    /// Runs `loupe gen` over OTLP/gRPC at this server until it ends;
    /// returns its JSON report.
    pub fn generate<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Value> {
        let output = Command::new(&self.bin)
            .args(["gen", "--protocol", "grpc", "--quiet", "--json"])
            .args(["--endpoint", &format!("http://{}", self.grpc)])
            .args(args)
            .output()
            .context("run loupe gen")?;
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "loupe gen report: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }

    /// The live files of `signal` (as the catalog lists them): the
    /// Parquet path and its full-text index, if any.
    pub fn live_files(&self, signal: &str) -> Result<Vec<(PathBuf, Option<PathBuf>)>> {
        let splits = self.get("/api/v1/splits")?;
        let resolve = |rel: &str| {
            let direct = self.data.join(rel);
            if direct.exists() {
                direct
            } else {
                self.data.join("splits").join(rel)
            }
        };
        Ok(splits[signal]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|s| {
                let path = resolve(s["path"].as_str()?);
                let index = s["index_path"].as_str().map(resolve);
                Some((path, index))
            })
            .collect())
    }

    /// Waits until compaction of `signal` has settled: the file count
    /// unchanged over two polls and the server idle between them (at most
    /// `limit`). A merge keeps the count until it commits, so the count
    /// alone let the queries be timed while one ran beside them.
    pub fn settle(&self, signal: &str, limit: Duration) -> Result<usize> {
        let started = Instant::now();
        let mut last = usize::MAX;
        let mut cpu = self.cpu_secs();
        loop {
            std::thread::sleep(SETTLE_POLL);
            let n = self.live_files(signal)?.len();
            let now = self.cpu_secs();
            let idle = now - cpu < IDLE_CPU_SHARE * SETTLE_POLL.as_secs_f64();
            cpu = now;
            if (n == last && idle) || started.elapsed() > limit {
                return Ok(n);
            }
            last = n;
        }
    }
}

/// How often [`Loupe::settle`] looks.
const SETTLE_POLL: Duration = Duration::from_secs(3);
/// A server using less than this share of a core is idle: no merge runs.
const IDLE_CPU_SHARE: f64 = 0.05;

impl Drop for Loupe {
    fn drop(&mut self) {
        // A suite that failed midway must not leave servers behind.
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends log lines as one OTLP/HTTP JSON request; returns once acknowledged.
pub fn send_logs(otlp_http: &str, service: &str, lines: &[(i64, &str)]) -> Result<()> {
    let records: Vec<Value> = lines
        .iter()
        .map(|(t, body)| {
            json!({
                "timeUnixNano": t.to_string(),
                "severityText": "INFO",
                "severityNumber": 9,
                "body": {"stringValue": body},
            })
        })
        .collect();
    let doc = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"logRecords": records}],
    }]});
    // A server whose flushes lag answers 429 and asks to retry shortly
    // (a loader sending as fast as it can meets that on a busy machine).
    let body = serde_json::to_vec(&doc)?;
    for _ in 0..600 {
        let (status, reply) =
            http::request(otlp_http, "POST", "/v1/logs", "application/json", &body)?;
        if status != 429 {
            return http::json(status, &reply, "/v1/logs").map(|_| ());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!("/v1/logs: still overloaded after 60 s of retries")
}

/// Bytes of every file under `path`.
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
