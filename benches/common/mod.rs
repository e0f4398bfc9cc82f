//! What the benchmarks share: a `loupe serve` child process on ephemeral
//! ports, loading it with `loupe gen` and waiting for compaction, and small
//! statistics helpers.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

#[path = "../../tests/e2e/shared.rs"]
pub mod shared;
use shared::{EPHEMERAL_PORTS, listening_addr};

pub const BIN: &str = env!("CARGO_BIN_EXE_loupe");

pub struct Server {
    child: Child,
    pub grpc: String,
    /// OTLP/HTTP receiver (`/v1/traces`, `/v1/logs`, `/v1/metrics`).
    pub otlp_http: String,
    pub http: String,
}

impl Server {
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(EPHEMERAL_PORTS)
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("LOUPE_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start loupe serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("bound addresses");
        let get = |key: &str| listening_addr(&line, key).to_string();
        Server {
            grpc: get("otlp_grpc"),
            otlp_http: get("otlp_http"),
            http: get("http"),
            child,
        }
    }

    /// Restarts on `data` with eager compaction (then see `settle_compaction`).
    pub fn start_compacting(data: &Path) -> Server {
        Server::start(
            data,
            &["--compaction-interval", "2s", "--compaction-min-files", "2"],
        )
    }

    /// Runs `loupe gen` (a new seed each time) until `load.table` holds
    /// `load.target` rows — at once if it already does; returns the reports.
    pub fn load(&self, client: &reqwest::blocking::Client, load: Load<'_>) -> Vec<Value> {
        let count = format!("SELECT count(*) FROM {}", load.table);
        let stored = || self.sql(client, &count).as_u64().unwrap_or(0);
        let started = std::time::Instant::now();
        let mut reports = Vec::new();
        let mut rows = stored();
        while rows < load.target {
            let traces = (load.target - rows) / load.rows_per_trace + 1000;
            let secs = (traces / load.rate).clamp(5, 120);
            let seed = reports.len() + 1;
            reports.push(self.generate(&[
                "--signals",
                load.signals,
                "--concurrency",
                "8",
                "--batch",
                "200",
                "--rate",
                &load.rate.to_string(),
                "--duration",
                &format!("{secs}s"),
                "--seed",
                &seed.to_string(),
            ]));
            rows = stored();
            eprintln!(
                "loaded {rows} {} ({:.0}s)",
                load.what,
                started.elapsed().as_secs_f64()
            );
        }
        reports
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and a clean exit (which flushes everything).
    pub fn stop(mut self) {
        // SAFETY: a plain signal to our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "loupe serve exited with {status}");
    }

    pub fn get(&self, client: &reqwest::blocking::Client, path: &str) -> Value {
        client
            .get(format!("http://{}{path}", self.http))
            .send()
            .and_then(|r| r.json())
            .expect("API call")
    }

    /// The first value of the first row of a SQL query.
    pub fn sql(&self, client: &reqwest::blocking::Client, sql: &str) -> Value {
        let body: Value = client
            .post(format!("http://{}/api/v1/sql", self.http))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .and_then(|r| r.json())
            .expect("SQL call");
        body["rows"][0][0].clone()
    }

    /// Runs `loupe gen` against this server until done; returns its report.
    pub fn generate<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Value {
        let output = Command::new(BIN)
            .args(["gen", "--protocol", "grpc", "--quiet", "--json"])
            .args(["--endpoint", &format!("http://{}", self.grpc)])
            .args(args)
            .output()
            .expect("loupe gen");
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "gen report: {e}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }

    /// Waits until compaction has nothing left to merge: no hour of
    /// `signal` with two files under half the target size (32 MiB), and the
    /// file count steady. Returns the live files' paths.
    pub fn settle_compaction(
        &self,
        client: &reqwest::blocking::Client,
        signal: &str,
    ) -> Vec<String> {
        let mut last = usize::MAX;
        loop {
            std::thread::sleep(std::time::Duration::from_secs(10));
            let splits = self.get(client, "/api/v1/splits")[signal]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut small_per_hour = std::collections::HashMap::<i64, usize>::new();
            for s in &splits {
                if s["byte_size"].as_u64().unwrap_or(0) < 32 << 20 {
                    let hour = s["min_time"]
                        .as_i64()
                        .unwrap_or(0)
                        .div_euclid(3_600_000_000_000);
                    *small_per_hour.entry(hour).or_default() += 1;
                }
            }
            let pending = small_per_hour.values().any(|n| *n >= 2);
            eprintln!(
                "{signal} files: {} (merges pending: {pending})",
                splits.len()
            );
            if !pending && splits.len() == last {
                return splits
                    .iter()
                    .filter_map(|s| s["path"].as_str().map(String::from))
                    .collect();
            }
            last = splits.len();
        }
    }
}

/// What `Server::load` generates.
pub struct Load<'a> {
    /// The table to fill, and what its rows are called in progress lines.
    pub table: &'a str,
    pub what: &'a str,
    pub target: u64,
    /// `loupe gen --signals`.
    pub signals: &'a str,
    /// Simulated requests per second.
    pub rate: u64,
    /// About how many rows of `table` one simulated request adds.
    pub rows_per_trace: u64,
}

pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// A whole-number setting from the environment (`cargo bench` passes its
/// own flags on the command line, so benchmarks are tuned by env vars).
pub fn env(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .expect("HTTP client")
}

/// A minimal CSV reader: commas, double-quoted fields with doubled quotes
/// (the log column is a quoted JSON document), quoted newlines; bytes that are not UTF-8 are
/// replaced. Row 0 is the header.
pub fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = String::from_utf8_lossy(&bytes);
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}
