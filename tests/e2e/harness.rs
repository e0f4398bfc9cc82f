//! Starts the real `loupe` binary on ephemeral ports with a temporary data
//! directory, and talks to it over HTTP. Dropping a `Loupe` kills the
//! process and removes the directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::shared::{EPHEMERAL_PORTS, listening_addr, listening_addr_if_any};

pub struct Loupe {
    child: Option<Child>,
    root: tempfile::TempDir,
    args: Vec<String>,
    /// Extra environment variables of the server process.
    envs: Vec<(String, String)>,
    pub grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub http: SocketAddr,
    client: reqwest::blocking::Client,
}

fn parse_addr(line: &str, key: &str) -> SocketAddr {
    listening_addr(line, key).parse().unwrap()
}

impl Loupe {
    /// Starts a server; `args` are extra `serve` flags.
    pub fn start(args: &[&str]) -> Loupe {
        Loupe::launch(args, &[], |_| {})
    }

    /// Like [`Loupe::start`], with `prepare` called on the (not yet
    /// existing) data directory path first — to make it a link to a small
    /// file system, say.
    pub fn start_with(args: &[&str], prepare: impl FnOnce(&Path)) -> Loupe {
        Loupe::launch(args, &[], prepare)
    }

    /// Like [`Loupe::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Loupe {
        Loupe::launch(args, envs, |_| {})
    }

    fn launch(args: &[&str], envs: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Loupe {
        init_tls();
        let root = tempfile::tempdir().unwrap();
        prepare(&root.path().join("data"));
        let mut loupe = Loupe {
            child: None,
            root,
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            grpc: "127.0.0.1:0".parse().unwrap(),
            otlp_http: "127.0.0.1:0".parse().unwrap(),
            http: "127.0.0.1:0".parse().unwrap(),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        loupe.spawn();
        loupe
    }

    /// Peak resident memory of the server process so far, in KiB.
    pub fn peak_rss_kb(&self) -> u64 {
        let pid = self.pid().expect("loupe is running");
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// Resets the peak RSS (`VmHWM`) to the current RSS, so a later
    /// [`Loupe::peak_rss_kb`] measures one phase; false if not permitted.
    pub fn reset_peak_rss(&self) -> bool {
        let pid = self.pid().expect("loupe is running");
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
    }

    /// The status of `GET /healthz`.
    pub fn healthz(&self) -> u16 {
        self.client
            .get(self.api_url("/healthz"))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// The sum of every sample of `/metrics` metric `name` (all labels).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.api_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// `GET /api/v1/splits`: the files of `signal` as the catalog lists them.
    pub fn splits(&self, signal: &str) -> Vec<Value> {
        let body: Value = self
            .client
            .get(self.api_url("/api/v1/splits"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        body[signal].as_array().cloned().unwrap_or_default()
    }

    /// Starts a new server, with other flags, on a stopped one's data.
    pub fn start_in(mut previous: Loupe, args: &[&str]) -> Loupe {
        previous.kill9();
        previous.args = args.iter().map(|s| s.to_string()).collect();
        previous.spawn();
        previous
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("server.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(EPHEMERAL_PORTS)
            .args(&self.args)
            .env("LOUPE_LOG", "warn")
            // Test receivers listen on 127.0.0.1, which the SSRF guard
            // refuses unless allowed (a test may pass --webhook-allow to override).
            .env("LOUPE_WEBHOOK_ALLOW", "127.0.0.1")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start loupe");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("loupe did not start; log:\n{}", self.log()));
        assert!(
            line.starts_with("loupe listening"),
            "unexpected first line {line:?}; log:\n{}",
            self.log()
        );
        // A node without the ingest role names no OTLP listeners.
        let unbound = || "127.0.0.1:0".parse().unwrap();
        let otlp =
            |key| listening_addr_if_any(&line, key).map_or_else(unbound, |a| a.parse().unwrap());
        self.grpc = otlp("otlp_grpc");
        self.otlp_http = otlp("otlp_http");
        self.http = parse_addr(&line, "http");
        self.child = Some(child);
    }

    /// The server's stderr so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL: no flush, no cleanup — a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and expect a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a plain signal to our own child.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "loupe exited with {status}; log:\n{}",
                self.log()
            );
        }
    }

    /// SIGTERM (everything flushed to Parquet), then start again on the
    /// same data directory (new ports).
    pub fn clean_restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// SIGKILL (a crash), then start again on the same data directory (new
    /// ports).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn otlp_http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.otlp_http)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Runs SQL; returns the HTTP status and the JSON body.
    pub fn sql_response(&self, sql: &str) -> (u16, Value) {
        let response = self
            .client
            .post(self.api_url("/api/v1/sql"))
            .json(&json!({ "sql": sql }))
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap())
    }

    /// Runs SQL that must succeed; returns its rows.
    pub fn sql(&self, sql: &str) -> Vec<Vec<Value>> {
        let (status, body) = self.sql_response(sql);
        assert_eq!(status, 200, "{sql}: {body}");
        serde_json::from_value(body["rows"].clone()).unwrap()
    }

    /// A single value, e.g. of `SELECT count(*) …`.
    pub fn sql_value(&self, sql: &str) -> Value {
        let rows = self.sql(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0][0].clone()
    }

    pub fn count(&self, sql: &str) -> u64 {
        self.sql_value(sql)
            .as_u64()
            .unwrap_or_else(|| panic!("{sql} is not a count"))
    }

    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::blocking::Response {
        self.client
            .post(self.otlp_http_url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap()
    }

    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }
}

impl Drop for Loupe {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `done` until it holds or `deadline` passes; returns whether it held.
/// Tests wait for conditions this way rather than sleeping a fixed time.
pub fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `Instant::now() + timeout`, for `wait_until`.
pub fn deadline_in(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

/// Every file under `dir` (recursively) whose name ends in `.{extension}`.
pub fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == extension) {
                files.push(path);
            }
        }
    }
    files
}

/// Installs the rustls crypto provider (ring) every HTTP client of the
/// test process needs before it is built; call it before building one.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
