//! Loupe on shared storage: Parquet files and indexes in an S3-compatible
//! store (moto's server from PyPI), the catalog in PostgreSQL 15 — both
//! real servers on 127.0.0.1, started per test and stopped after.
//!
//! This file holds those servers and the helpers the tests share; the
//! tests are in the submodules, one subject each.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Loupe, deadline_in, files_with_extension, wait_until};

mod leases;
mod scaling;
mod shared_state;
mod shared_storage;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway PostgreSQL cluster (`initdb` into a temp dir, fsync off)
/// on 127.0.0.1; stopped and removed when dropped.
pub struct Postgres {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// Where Debian's `postgresql` package (or a PATH entry) has `name`.
fn postgres_binary(name: &str) -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/local/bin").join(name)];
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = versions.flatten().map(|e| e.path()).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev().map(|v| v.join("bin").join(name)));
    }
    candidates.into_iter().find(|p| p.exists()).unwrap_or_else(|| {
        panic!("PostgreSQL's {name} is not installed: .ci/run installs it (apt-get install postgresql)")
    })
}

/// `program` run as an unprivileged user when we are root (PostgreSQL
/// refuses to run as root); `setpriv` execs, so the child is the program.
fn unprivileged(program: &PathBuf, user: &str) -> Command {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let initdb = postgres_binary("initdb");
        let postgres = postgres_binary("postgres");
        let dir = tempfile::tempdir().unwrap();
        let user = if Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            "postgres"
        } else {
            "nobody"
        };
        #[allow(unsafe_code)]
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown {user} {}", dir.path().display());
        }
        let data = dir.path().join("pg");
        let out = unprivileged(&initdb, user)
            .arg("-D")
            .arg(&data)
            .args(["-U", "loupe", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log_path = dir.path().join("postgres.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = unprivileged(&postgres, user)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let pg = Postgres { child, port, dir };
        let ready = wait_until(deadline_in(Duration::from_secs(30)), || {
            std::fs::read_to_string(&log_path)
                .is_ok_and(|l| l.contains("ready to accept connections"))
        });
        assert!(
            ready,
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://loupe@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the cluster is thrown away anyway.
        #[allow(unsafe_code)]
        // SAFETY: a plain signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// moto's S3 server on 127.0.0.1 with the `loupe` bucket every test
/// stores in; stopped when dropped.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    client: reqwest::blocking::Client,
}

impl S3Server {
    pub fn start() -> S3Server {
        crate::harness::init_tls();
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("moto_server is not installed ({e}): .ci/run installs it (pip install 'moto[server]')")
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let server = S3Server {
            child,
            endpoint,
            client,
        };
        let ready = wait_until(deadline_in(Duration::from_secs(30)), || {
            server.client.get(&server.endpoint).send().is_ok()
        });
        assert!(ready, "moto_server did not start on {}", server.endpoint);
        server.create_bucket("loupe");
        server
    }

    /// The `AWS_*` variables pointing Loupe at this server.
    pub fn env(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", &self.endpoint),
            ("AWS_ALLOW_HTTP", "true"),
        ]
    }

    fn create_bucket(&self, bucket: &str) {
        let r = self
            .client
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    pub fn put(&self, bucket: &str, key: &str, body: &'static [u8]) {
        let r = self
            .client
            .put(format!("{}/{bucket}/{key}", self.endpoint))
            .body(body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "put {key}: {}", r.status());
    }

    /// Keys under `prefix` (ListObjectsV2; at most 1,000, plenty here).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let body = self
            .client
            .get(format!(
                "{}/{bucket}?list-type=2&prefix={prefix}",
                self.endpoint
            ))
            .send()
            .unwrap()
            .text()
            .unwrap();
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nodes whose heartbeat in the catalog at `url` is recent.
fn live_nodes(url: &str) -> Vec<loupe_catalog::pg::NodeInfo> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = loupe_catalog::pg::PgDb::open(url, &[]).await.unwrap();
        loupe_catalog::pg::live_nodes(&db, Duration::from_secs(30))
            .await
            .unwrap()
    })
}

fn generate(loupe: &Loupe, args: &[&str]) {
    generate_together(&[(loupe, args)]);
}

/// `loupe gen` runs started together, one per (node, flags), waited for;
/// returns each run's `--json` report. Runs started together stamp their
/// data alike (a seed fixes the data up to the start time).
fn generate_together(runs: &[(&Loupe, &[&str])]) -> Vec<Value> {
    let children: Vec<_> = runs
        .iter()
        .map(|(loupe, args)| {
            Command::new(env!("CARGO_BIN_EXE_loupe"))
                .args(["gen", "--endpoint", &loupe.grpc_url(), "--quiet", "--json"])
                .args(*args)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "loupe gen failed");
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect()
}

fn get(loupe: &Loupe, path: &str) -> Value {
    let response = loupe.client().get(loupe.api_url(path)).send().unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
    response.json().unwrap()
}

/// Whether every row of `signal` is in a split (none left in the memtable).
fn all_flushed(loupe: &Loupe, signal: &str) -> bool {
    let in_splits: u64 = loupe
        .splits(signal)
        .iter()
        .map(|s| s["row_count"].as_u64().unwrap_or(0))
        .sum();
    in_splits > 0 && in_splits == loupe.count(&format!("SELECT count(*) FROM {signal}"))
}

/// Two words in a row of some stored log line, as a phrase query.
fn phrase(loupe: &Loupe) -> String {
    for row in loupe.sql("SELECT body FROM logs ORDER BY body LIMIT 200") {
        let body = row[0].as_str().unwrap_or_default();
        let words: Vec<&str> = body.split(' ').collect();
        for pair in words.windows(2) {
            if pair
                .iter()
                .all(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_alphabetic()))
            {
                return format!("{} {}", pair[0], pair[1]);
            }
        }
    }
    panic!("no log line with two plain words in a row")
}

/// What the comparison between nodes looks at.
fn answers(loupe: &Loupe, trace_id: &str) -> Vec<Value> {
    let trace = get(loupe, &format!("/api/v1/traces/{trace_id}"));
    let mut span_ids: Vec<Value> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["span_id"].clone())
        .collect();
    span_ids.sort_by_key(|v| v.to_string());
    vec![
        loupe.sql_value("SELECT count(*) FROM logs"),
        loupe.sql_value("SELECT count(*) FROM spans"),
        loupe.sql_value("SELECT count(*) FROM metrics"),
        loupe.sql_value(
            "SELECT count(*) FROM logs WHERE match_all('service:payment OR service:frontend')",
        ),
        loupe.sql_value("SELECT count(DISTINCT trace_id) FROM spans WHERE status_code = 'error'"),
        Value::Array(span_ids),
        // A phrase is checked against the stored bodies (read from S3).
        loupe.sql_value(&format!(
            "SELECT count(*) FROM logs WHERE match_all('\"{}\"')",
            phrase(loupe)
        )),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Records (spans, logs, metric points) a `loupe gen --json` report says
/// were acknowledged.
fn acknowledged(report: &Value) -> u64 {
    ["spans", "logs", "data_points"]
        .iter()
        .map(|k| report[k].as_u64().unwrap())
        .sum()
}

/// `loupe_leader{job="maintenance"}` of a node.
fn leads(loupe: &Loupe) -> bool {
    loupe.metric("loupe_leader") == 1.0
}

/// `/api/v1/problems` for an explicit window, without its `timings_ms`.
fn problems(loupe: &Loupe, start: i64, end: i64) -> Value {
    let mut report = get(loupe, &format!("/api/v1/problems?start={start}&end={end}"));
    report.as_object_mut().unwrap().remove("timings_ms");
    report
}

/// A problems report's ranking: each suspect's kind and subject, in order.
fn ranking(report: &Value) -> Vec<String> {
    report["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["kind"], s["subject"]))
        .collect()
}

/// Borrowed flags.
fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The logs and spans a node counts.
fn records(loupe: &Loupe) -> u64 {
    loupe.count("SELECT count(*) FROM logs") + loupe.count("SELECT count(*) FROM spans")
}
