//! Loupe on shared storage: Parquet files and indexes in an S3-compatible
//! store (moto's server from PyPI), the catalog in PostgreSQL 15 — both
//! real servers on 127.0.0.1, started per test and stopped after.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Loupe, deadline_in, files_with_extension, wait_until};

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

/// moto's S3 server on 127.0.0.1; stopped when dropped.
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
        server
    }

    /// The `AWS_*` variables pointing Loupe at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    pub fn create_bucket(&self, bucket: &str) {
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

#[test]
fn s3_and_postgres_answer_like_a_single_node_and_survive_a_crash() {
    let pg = Postgres::start();
    let s3 = S3Server::start();
    s3.create_bucket("loupe");
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let catalog = pg.url();
    let shared = [
        "--storage",
        "s3://loupe/cluster",
        "--catalog",
        &catalog,
        "--flush-interval",
        "1s",
        "--compaction-interval",
        "1s",
        "--compaction-min-files",
        "1000",
        "--orphan-grace",
        "2s",
        // Spread even these small files over both nodes once there are two.
        "--distributed-partition-size",
        "1",
    ];
    let mut remote = Loupe::start_with_env(&shared, &env);
    let single = Loupe::start(&["--flush-interval", "1s"]);
    // The node beats its membership row in PostgreSQL.
    let node = std::fs::read_to_string(remote.data_dir().join("node_id")).unwrap();
    let mut nodes = Vec::new();
    wait_until(deadline_in(Duration::from_secs(20)), || {
        nodes = live_nodes(&catalog);
        !nodes.is_empty()
    });
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(
        (nodes[0].id.as_str(), nodes[0].http_addr.clone()),
        (node.as_str(), remote.http.to_string())
    );
    let workload = ["--rate", "40", "--duration", "3s", "--seed", "7"];
    generate(&remote, &workload);
    generate(&single, &workload);
    for loupe in [&remote, &single] {
        let flushed = wait_until(deadline_in(Duration::from_secs(30)), || {
            ["logs", "spans", "metrics"]
                .iter()
                .all(|s| all_flushed(loupe, s))
        });
        assert!(flushed, "not flushed; log:\n{}", loupe.log());
    }
    // The files are in the bucket, not in the data directory.
    let keys = s3.keys("loupe", "cluster/");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("cluster/logs/") && k.ends_with(".parquet")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("cluster/spans/")),
        "{keys:?}"
    );
    assert!(files_with_extension(&remote.data_dir(), "parquet").is_empty());

    let trace_id = single.sql_value(
        "SELECT trace_id FROM spans WHERE name = 'POST /checkout' AND kind = 'server' ORDER BY trace_id LIMIT 1",
    );
    let trace_id = trace_id.as_str().unwrap().to_string();
    let expected = answers(&single, &trace_id);
    assert!(
        expected[3].as_u64().unwrap() > 0,
        "the search matches something"
    );
    assert!(
        expected[6].as_u64().unwrap() > 0,
        "the phrase matches something"
    );

    // The first round reads from S3; the same queries again come from the
    // read cache without a single GET.
    let gets = || remote.metric("loupe_object_store_gets_total");
    let hits = || remote.metric("loupe_read_cache_hits_total");
    let before = gets();
    assert_eq!(answers(&remote, &trace_id), expected);
    let (after_first, hits_first) = (gets(), hits());
    assert!(after_first > before, "the first queries read from S3");
    assert_eq!(answers(&remote, &trace_id), expected);
    assert_eq!(gets(), after_first, "the second round downloads nothing");
    assert!(hits() > hits_first);

    // An object no catalog row names is collected once past the grace.
    s3.put(
        "loupe",
        "cluster/logs/orphan.parquet",
        b"left by a crashed upload",
    );
    let collected = wait_until(deadline_in(Duration::from_secs(30)), || {
        !s3.keys("loupe", "cluster/logs/")
            .iter()
            .any(|k| k.ends_with("orphan.parquet"))
    });
    assert!(collected, "orphan not collected; log:\n{}", remote.log());
    assert_eq!(
        answers(&remote, &trace_id),
        expected,
        "published files stay"
    );

    // kill -9 with acknowledged data still in the WAL: nothing is lost.
    generate(
        &remote,
        &["--rate", "40", "--duration", "2s", "--seed", "8"],
    );
    let acknowledged =
        remote.count("SELECT count(*) FROM logs") + remote.count("SELECT count(*) FROM spans");
    remote.restart();
    assert_eq!(
        remote.count("SELECT count(*) FROM logs") + remote.count("SELECT count(*) FROM spans"),
        acknowledged,
        "log:\n{}",
        remote.log()
    );
    let flushed = wait_until(deadline_in(Duration::from_secs(30)), || {
        ["logs", "spans"].iter().all(|s| all_flushed(&remote, s))
    });
    assert!(flushed, "not flushed after restart; log:\n{}", remote.log());
    assert_eq!(
        remote.count("SELECT count(*) FROM logs") + remote.count("SELECT count(*) FROM spans"),
        acknowledged
    );

    // A second node on the same bucket and catalog reads the first one's
    // files, and with eager compaction and a 1 s retention of its own
    // leaves them alone: the first node holds the maintenance lease (its
    // restart resumed it), so only the first node's settings apply.
    let files_before = s3.keys("loupe", "cluster/");
    let other = Loupe::start_with_env(
        &[
            "--storage",
            "s3://loupe/cluster",
            "--catalog",
            &catalog,
            "--compaction-interval",
            "1s",
            "--compaction-min-files",
            "2",
            "--retention-logs",
            "1s",
            "--retention-spans",
            "1s",
            "--distributed-partition-size",
            "1",
        ],
        &env,
    );
    assert!(wait_until(
        deadline_in(Duration::from_secs(20)),
        || live_nodes(&catalog).len() == 2
    ));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        other.count("SELECT count(*) FROM logs") + other.count("SELECT count(*) FROM spans"),
        acknowledged,
        "log:\n{}",
        other.log()
    );
    assert_eq!(s3.keys("loupe", "cluster/"), files_before);

    // New splits of the first node reach the second without a restart
    // (announced through LISTEN/NOTIFY).
    generate(
        &remote,
        &["--rate", "40", "--duration", "1s", "--seed", "9"],
    );
    let total =
        || remote.count("SELECT count(*) FROM logs") + remote.count("SELECT count(*) FROM spans");
    assert!(wait_until(deadline_in(Duration::from_secs(30)), || {
        ["logs", "spans"].iter().all(|s| all_flushed(&remote, s))
    }));
    let flushed_at = std::time::Instant::now();
    let seen = wait_until(deadline_in(Duration::from_secs(20)), || {
        other.count("SELECT count(*) FROM logs") + other.count("SELECT count(*) FROM spans")
            == total()
    });
    assert!(
        seen,
        "the second node never saw the new splits; log:\n{}",
        other.log()
    );
    println!(
        "second node saw the new splits {:?} after the first had them all",
        flushed_at.elapsed()
    );

    // Both nodes serve the distributed-query worker on their gRPC listener
    // and coordinate over both: once each has read the other's row, a
    // query's plan is cut into stages, and every answer agrees across the
    // nodes (all data is flushed, so there is nothing node-local).
    let nodes = get(&other, "/api/v1/nodes")["nodes"].clone();
    let grpc: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["grpc_addr"].as_str())
        .collect();
    assert_eq!(grpc.len(), 2, "{nodes}");
    let sent = |loupe: &Loupe| loupe.metric("loupe_distributed_queries_total{outcome=\"sent\"}");
    for loupe in [&remote, &other] {
        let before = sent(loupe);
        let distributed = wait_until(deadline_in(Duration::from_secs(20)), || {
            loupe.count("SELECT count(*) FROM logs");
            sent(loupe) > before
        });
        assert!(
            distributed,
            "no query was distributed; log:\n{}",
            loupe.log()
        );
    }
    let before = (sent(&remote), sent(&other));
    assert_eq!(answers(&remote, &trace_id), answers(&other, &trace_id));
    let services = "SELECT service, count(*) AS n FROM logs GROUP BY service ORDER BY service";
    assert_eq!(remote.sql(services), other.sql(services));
    assert!(sent(&remote) > before.0 && sent(&other) > before.1);
    let retried = |loupe: &Loupe| {
        loupe.metric("loupe_distributed_queries_total{outcome=\"run_here_after_failure\"}")
    };
    assert_eq!((retried(&remote), retried(&other)), (0.0, 0.0));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Query latency on S3 + PostgreSQL with a cold read cache (the first
/// queries after a start) and a warm one, against a single node on local
/// disk; printed, not asserted:
/// `cargo test --test e2e multi_node::s3_query_latency -- --ignored --nocapture`.
#[test]
#[ignore]
fn s3_query_latency() {
    let pg = Postgres::start();
    let s3 = S3Server::start();
    s3.create_bucket("loupe");
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let catalog = pg.url();
    let args = [
        "--storage",
        "s3://loupe/bench",
        "--catalog",
        &catalog,
        "--flush-interval",
        "2s",
    ];
    let mut remote = Loupe::start_with_env(&args, &env);
    let single = Loupe::start(&["--flush-interval", "2s"]);
    let workload = ["--rate", "100", "--duration", "20s", "--seed", "3"];
    generate(&remote, &workload);
    generate(&single, &workload);
    for loupe in [&remote, &single] {
        assert!(wait_until(deadline_in(Duration::from_secs(60)), || {
            ["logs", "spans", "metrics"]
                .iter()
                .all(|s| all_flushed(loupe, s))
        }));
    }
    let trace_id = single.sql_value("SELECT trace_id FROM spans ORDER BY trace_id LIMIT 1");
    let trace_id = trace_id.as_str().unwrap().to_string();
    let time = |loupe: &Loupe| {
        let start = std::time::Instant::now();
        answers(loupe, &trace_id);
        start.elapsed().as_secs_f64() * 1000.0
    };
    let (mut cold, mut warm, mut local) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        remote.clean_restart();
        cold.push(time(&remote));
        for _ in 0..3 {
            warm.push(time(&remote));
            local.push(time(&single));
        }
    }
    let spans = single.count("SELECT count(*) FROM spans");
    let logs = single.count("SELECT count(*) FROM logs");
    println!(
        "{logs} logs, {spans} spans; one round = 3 counts, a match_all count, an error count, a trace lookup\n\
         S3 + PostgreSQL, cold cache: median {:.1} ms (5 starts)\n\
         S3 + PostgreSQL, warm cache: median {:.1} ms (15 rounds)\n\
         local disk + SQLite:         median {:.1} ms (15 rounds)",
        median(cold),
        median(warm),
        median(local)
    );
}

/// CPU seconds (user + system) the server process has used so far.
fn cpu_secs(loupe: &Loupe) -> f64 {
    let pid = loupe.pid().expect("loupe is running");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th of the whole line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_sec
}

/// Records (spans, logs, metric points) a `loupe gen --json` report says
/// were acknowledged.
fn acknowledged(report: &Value) -> u64 {
    ["spans", "logs", "data_points"]
        .iter()
        .map(|k| report[k].as_u64().unwrap())
        .sum()
}

/// One Loupe deployment of the benchmark: its ingest nodes and all nodes.
struct Deployment {
    name: &'static str,
    nodes: Vec<Loupe>,
    ingest: usize,
}

impl Deployment {
    /// `roles` per node on a catalog and prefix of their own.
    fn start(
        name: &'static str,
        roles: &[&str],
        catalog: &str,
        prefix: &str,
        env: &[(&str, &str)],
    ) -> Deployment {
        let nodes: Vec<Loupe> = roles
            .iter()
            .map(|role| {
                Loupe::start_with_env(
                    &[
                        "--role",
                        role,
                        "--storage",
                        prefix,
                        "--catalog",
                        catalog,
                        "--flush-interval",
                        "2s",
                    ],
                    env,
                )
            })
            .collect();
        let ingest = roles.iter().filter(|r| r.contains("ingest")).count();
        Deployment {
            name,
            nodes,
            ingest,
        }
    }

    /// Runs `loupe gen` with `flags` once per seed, together, the seeds
    /// spread over the ingest nodes; returns the records acknowledged,
    /// the wall seconds until the runs ended and until every record was
    /// published, and the server CPU seconds of all nodes over that time.
    fn load(&self, seeds: &[u64], flags: &[&str]) -> Load {
        let cpu = || self.nodes.iter().map(cpu_secs).sum::<f64>();
        let args: Vec<Vec<String>> = seeds
            .iter()
            .map(|seed| {
                let mut args = strs_owned(flags);
                args.extend(["--seed".to_string(), seed.to_string()]);
                args
            })
            .collect();
        let borrowed: Vec<Vec<&str>> = args.iter().map(|a| strs(a)).collect();
        let runs: Vec<(&Loupe, &[&str])> = borrowed
            .iter()
            .enumerate()
            .map(|(i, a)| (&self.nodes[i % self.ingest], a.as_slice()))
            .collect();
        let (cpu_before, started) = (cpu(), std::time::Instant::now());
        let generators_before = children_cpu_secs();
        let reports = generate_together(&runs);
        let sent = started.elapsed().as_secs_f64();
        let generators = children_cpu_secs() - generators_before;
        let published = wait_until(deadline_in(Duration::from_secs(300)), || {
            self.nodes[..self.ingest].iter().all(|n| {
                ["logs", "spans", "metrics"]
                    .iter()
                    .all(|s| all_flushed(n, s))
            })
        });
        assert!(published, "{}: not published in 5 minutes", self.name);
        let stored = started.elapsed().as_secs_f64();
        let records = reports.iter().map(acknowledged).sum();
        Load {
            records,
            sent,
            stored,
            server_cpu: cpu() - cpu_before,
            generator_cpu: generators,
        }
    }

    /// Live Parquet files of logs and spans, as the catalog lists them.
    fn files(&self) -> usize {
        self.nodes[0].splits("logs").len() + self.nodes[0].splits("spans").len()
    }
}

/// What one [`Deployment::load`] measured.
struct Load {
    /// Records acknowledged.
    records: u64,
    /// Wall seconds until the generators ended…
    sent: f64,
    /// …and until every record was published.
    stored: f64,
    /// CPU seconds of every node over `stored`…
    server_cpu: f64,
    /// …and of the generators.
    generator_cpu: f64,
}

impl Load {
    fn per_record_us(&self, cpu: f64) -> f64 {
        cpu / self.records as f64 * 1e6
    }
}

/// CPU seconds of this process's finished (waited for) children.
fn children_cpu_secs() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn strs_owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// 1 node against 3 (two `ingest,query`, one `query,compact`), each on
/// S3 + PostgreSQL, on this machine; printed, not asserted:
/// `cargo test --test e2e multi_node::one_vs_three_nodes -- --ignored --nocapture`.
/// Query latency on the same data (seeds 7 and 8 at a rate both keep),
/// per query and node, warm read cache; then ingest throughput with the
/// generators flat out (their rate far above what the servers take), and
/// the servers' CPU seconds per record summed over the nodes.
#[test]
#[ignore]
fn one_vs_three_nodes() {
    const REPS: usize = 3;
    const ROUNDS: usize = 7;
    let (pg_one, pg_three) = (Postgres::start(), Postgres::start());
    let s3 = S3Server::start();
    s3.create_bucket("loupe");
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let one = Deployment::start(
        "1 node",
        &["ingest,query,compact"],
        &pg_one.url(),
        "s3://loupe/one",
        &env,
    );
    let three = Deployment::start(
        "3 nodes",
        &["ingest,query", "ingest,query", "query,compact"],
        &pg_three.url(),
        "s3://loupe/three",
        &env,
    );

    // The same data in both: seeds 7 and 8, 20 s at 100 traces/s each.
    let same = ["--rate", "100", "--duration", "20s"];
    let mut loaded = Vec::new();
    for d in [&one, &three] {
        let load = d.load(&[7, 8], &same);
        println!(
            "{}: {} records sent in {:.1} s, all published after {:.1} s; CPU-µs/record: servers {:.1}, generators {:.1}",
            d.name,
            load.records,
            load.sent,
            load.stored,
            load.per_record_us(load.server_cpu),
            load.per_record_us(load.generator_cpu),
        );
        loaded.push(load.records);
    }
    assert_eq!(loaded[0], loaded[1], "not the same data");
    // Compaction settles (each deployment's leader merges) before timing.
    std::thread::sleep(Duration::from_secs(10));

    let trace_id = one.nodes[0].sql_value("SELECT trace_id FROM spans WHERE name = 'POST /checkout' AND kind = 'server' ORDER BY trace_id LIMIT 1");
    let trace_id = trace_id.as_str().unwrap().to_string();
    type Query<'a> = Box<dyn Fn(&Loupe) + 'a>;
    let queries: [(&str, Query); 4] = [
        (
            "count",
            Box::new(|n| {
                n.count("SELECT count(*) FROM spans");
            }),
        ),
        (
            "RED group by",
            Box::new(|n| {
                n.sql(
                    "SELECT service, count(*) AS requests, \
                     avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0 END) AS error_rate, \
                     approx_percentile_cont(duration_ns, 0.99) AS p99 \
                     FROM spans WHERE kind = 'server' GROUP BY service ORDER BY service",
                );
            }),
        ),
        (
            "match_all search",
            Box::new(|n| {
                n.count("SELECT count(*) FROM logs WHERE match_all('service:payment AND error')");
            }),
        ),
        (
            "trace lookup",
            Box::new(|n| {
                get(n, &format!("/api/v1/traces/{trace_id}"));
            }),
        ),
    ];
    println!(
        "query latency, median of {ROUNDS} after one warm-up, per node (ms); {} vs {} files of logs and spans:\n{:<18} {:>8} | {:>8} {:>8} {:>8}",
        one.files(),
        three.files(),
        "",
        "1 node",
        "3: a",
        "3: b",
        "3: c"
    );
    for (name, query) in &queries {
        let medians: Vec<f64> = (one.nodes.iter())
            .chain(&three.nodes)
            .map(|n| {
                query(n);
                median(
                    (0..ROUNDS)
                        .map(|_| {
                            let start = std::time::Instant::now();
                            query(n);
                            start.elapsed().as_secs_f64() * 1000.0
                        })
                        .collect(),
                )
            })
            .collect();
        println!(
            "{name:<18} {:>8.1} | {:>8.1} {:>8.1} {:>8.1}",
            medians[0], medians[1], medians[2], medians[3]
        );
    }

    // Ingest flat out: each repetition new seeds, 10 s of generators
    // asking for far more than the servers take.
    let flat_out = ["--rate", "100000", "--duration", "10s"];
    let mut results = vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; 2];
    for rep in 0..REPS as u64 {
        for (i, d) in [&one, &three].into_iter().enumerate() {
            let load = d.load(&[100 + rep, 200 + rep], &flat_out);
            let row = [
                load.records as f64 / load.sent,
                load.records as f64 / load.stored,
                load.per_record_us(load.server_cpu),
                load.per_record_us(load.generator_cpu),
            ];
            println!("  {} run {rep}: {row:.1?}", d.name);
            for (column, value) in results[i].iter_mut().zip(row) {
                column.push(value);
            }
        }
    }
    println!(
        "ingest flat out, median of {REPS} runs of two 10 s generators:\n\
         {:<8} {:>12} {:>12} {:>12} {:>12}",
        "", "acked rec/s", "stored rec/s", "server µs/r", "gen µs/r"
    );
    for (d, columns) in [&one, &three].iter().zip(results) {
        let [sent, stored, server, generator] = columns.map(median);
        println!(
            "{:<8} {sent:>12.0} {stored:>12.0} {server:>12.1} {generator:>12.1}",
            d.name
        );
    }
}

#[test]
fn postgres_migrations_apply_once_in_order_and_refuse_a_newer_schema() {
    use loupe_catalog::CatalogDbError;
    use loupe_catalog::pg::{PgDb, PgSchema};
    const V1: PgSchema = PgSchema {
        component: "things",
        migrations: &["CREATE TABLE things (id BIGINT PRIMARY KEY)"],
    };
    const V2: PgSchema = PgSchema {
        component: "things",
        migrations: &[
            "CREATE TABLE things (id BIGINT PRIMARY KEY)",
            "ALTER TABLE things ADD COLUMN name TEXT",
        ],
    };
    let pg = Postgres::start();
    let url = pg.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Nodes starting together: each step still runs exactly once.
        let opened = futures::future::join_all((0..4).map(|_| PgDb::open(&url, &[&V1]))).await;
        assert!(opened.iter().all(Result::is_ok));
        let db = PgDb::open(&url, &[&V2]).await.unwrap();
        {
            let client = db.client().await.unwrap();
            let client = client.as_ref().unwrap();
            client
                .execute("INSERT INTO things (id, name) VALUES (1, 'a')", &[])
                .await
                .unwrap();
            let version: i64 = client
                .query_one(
                    "SELECT version FROM schema_versions WHERE component = 'things'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(version, 2);
        }
        // Reopening at the same version runs nothing again.
        PgDb::open(&url, &[&V2]).await.unwrap();
        let err = PgDb::open(&url, &[&V1]).await.err().unwrap();
        assert!(
            matches!(
                err,
                CatalogDbError::TooNew {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{err}"
        );
    });
}

/// The lease SQL against a real PostgreSQL: one holder at a time, renewals
/// keep it, a holder that stops renewing loses it to the next contender
/// within TTL + one renewal, and every change of hands bumps the epoch.
#[test]
fn a_lease_has_one_holder_and_passes_on_when_renewals_stop() {
    use loupe_catalog::lease::{self, LEASES_SCHEMA, LeaseTiming};
    use loupe_catalog::pg::PgDb;
    use tokio::sync::watch;
    let pg = Postgres::start();
    let url = pg.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = PgDb::open(&url, &[&LEASES_SCHEMA]).await.unwrap();
        let ttl = Duration::from_secs(2);
        // The SQL alone: the first taker gets epoch 1, a contender nothing,
        // a renewal the same epoch.
        assert_eq!(lease::acquire(&db, "job", "a", ttl).await.unwrap(), Some(1));
        assert_eq!(lease::acquire(&db, "job", "b", ttl).await.unwrap(), None);
        assert_eq!(lease::acquire(&db, "job", "a", ttl).await.unwrap(), Some(1));
        assert_eq!(
            lease::holder(&db, "job").await.unwrap(),
            Some(("a".to_string(), 1))
        );
        // "a" stops renewing: "b", trying every 100 ms, gets it once it expires.
        let last_renewal = std::time::Instant::now();
        let epoch = loop {
            if let Some(epoch) = lease::acquire(&db, "job", "b", ttl).await.unwrap() {
                break epoch;
            }
            assert!(last_renewal.elapsed() < ttl + Duration::from_secs(2));
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(last_renewal.elapsed() >= ttl - Duration::from_millis(100));
        assert_eq!(epoch, 2);
        assert_eq!(lease::acquire(&db, "job", "a", ttl).await.unwrap(), None);
        // Released, it goes to the next contender at once.
        lease::release(&db, "job", "b").await.unwrap();
        assert_eq!(lease::acquire(&db, "job", "a", ttl).await.unwrap(), Some(3));

        // Two nodes competing through `hold`: exactly one leads at any
        // sample; killing the leader's task (no release, like kill -9)
        // hands the lead over within TTL + a renewal.
        let timing = LeaseTiming {
            ttl: Duration::from_secs(3),
            renew: Duration::from_millis(500),
        };
        let mut contenders = Vec::new();
        for name in ["x", "y"] {
            let db = PgDb::open(&url, &[]).await.unwrap();
            let (lead_tx, lead_rx) = watch::channel(false);
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(async move {
                lease::hold(&db, "maintenance", name, timing, &lead_tx, stop_rx).await;
            });
            contenders.push((name, lead_rx, stop_tx, task));
        }
        let leaders = |c: &Vec<(&str, watch::Receiver<bool>, _, _)>| -> Vec<String> {
            c.iter()
                .filter(|(_, rx, _, _)| *rx.borrow())
                .map(|(n, _, _, _)| n.to_string())
                .collect()
        };
        let mut led = Vec::new();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = leaders(&contenders);
            assert!(now.len() <= 1, "two leaders at once: {now:?}");
            led = now;
        }
        assert_eq!(led.len(), 1, "nobody leads");
        let first = led[0].clone();
        let (_, _, _, task) = contenders.iter().find(|(n, ..)| *n == first).unwrap();
        task.abort();
        let killed = std::time::Instant::now();
        let (_, other, _, _) = contenders.iter().find(|(n, ..)| *n != first).unwrap();
        let mut other = other.clone();
        tokio::time::timeout(timing.ttl + timing.renew * 2, other.wait_for(|l| *l))
            .await
            .expect("the other contender took over in time")
            .unwrap();
        println!(
            "lease taken over {:?} after its holder died",
            killed.elapsed()
        );
        let (holder, epoch) = lease::holder(&db, "maintenance").await.unwrap().unwrap();
        assert_ne!(holder, first);
        assert_eq!(epoch, 2, "the takeover bumped the epoch");
        for (_, _, stop, task) in contenders {
            stop.send_replace(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // A clean stop released it.
        assert_eq!(lease::holder(&db, "maintenance").await.unwrap(), None);
    });
}

/// `loupe_leader{job="maintenance"}` of a node.
fn leads(loupe: &Loupe) -> bool {
    loupe.metric("loupe_leader") == 1.0
}

/// Roles over one bucket and catalog: two `ingest,query` nodes, a
/// `query,compact` and a `compact` one. Exactly one compact node leads;
/// it compacts the ingest nodes' files (which they then stop listing);
/// killed with -9, its lease goes to the other within seconds and ingest
/// on both ingest nodes carries on.
#[test]
fn one_maintenance_leader_among_roles_and_a_takeover_when_it_dies() {
    let pg = Postgres::start();
    let s3 = S3Server::start();
    s3.create_bucket("loupe");
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let catalog = pg.url();
    let node = |role: &str| {
        Loupe::start_with_env(
            &[
                "--role",
                role,
                "--storage",
                "s3://loupe/roles",
                "--catalog",
                &catalog,
                "--flush-interval",
                "1s",
                "--compaction-interval",
                "1s",
                "--compaction-min-files",
                "2",
            ],
            &env,
        )
    };
    let a = node("ingest,query");
    let b = node("ingest,query");
    let c = node("query,compact");
    let d = node("compact");
    let id = |l: &Loupe| std::fs::read_to_string(l.data_dir().join("node_id")).unwrap();

    // Only ingest nodes listen for OTLP; a node without `query` refuses queries.
    assert_eq!((c.grpc.port(), d.grpc.port()), (0, 0));
    assert_ne!(a.grpc.port(), 0);
    let refused = d
        .client()
        .post(d.api_url("/api/v1/sql"))
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 404);
    assert!(refused.text().unwrap().contains("query"));
    assert_eq!(d.healthz(), 200);

    // Exactly one compact node leads; the others report 0.
    let one_leader = wait_until(deadline_in(Duration::from_secs(20)), || {
        leads(&c) != leads(&d)
    });
    assert!(
        one_leader,
        "no single leader; logs:\n{}\n{}",
        c.log(),
        d.log()
    );
    assert!(!leads(&a) && !leads(&b));
    let leader_is_c = leads(&c);
    let (mut leader, mut heir) = if leader_is_c { (c, d) } else { (d, c) };
    let (leader_id, heir_id) = (id(&leader), id(&heir));

    // The nodes API lists every node with its roles and the leader.
    let mut listed = Value::Null;
    let all_four = wait_until(deadline_in(Duration::from_secs(20)), || {
        listed = get(&a, "/api/v1/nodes");
        listed["nodes"].as_array().is_some_and(|n| n.len() == 4)
    });
    assert!(all_four, "{listed}");
    assert_eq!(listed["leader"]["node"], leader_id.as_str());
    let first_epoch = listed["leader"]["epoch"].as_i64().unwrap();
    let mut roles: Vec<String> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["roles"].as_str().unwrap().to_string())
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        ["compact", "ingest,query", "ingest,query", "query,compact"]
    );

    // Both ingest nodes take data; the leader compacts their files, and
    // every query node still counts each record once.
    generate(&a, &["--rate", "40", "--duration", "2s", "--seed", "1"]);
    generate(&b, &["--rate", "40", "--duration", "2s", "--seed", "2"]);
    let agree = |nodes: &[&Loupe]| -> Option<u64> {
        let counts: Vec<u64> = nodes
            .iter()
            .map(|n| n.count("SELECT count(*) FROM logs") + n.count("SELECT count(*) FROM spans"))
            .collect();
        counts.windows(2).all(|w| w[0] == w[1]).then(|| counts[0])
    };
    let compacted_by = |node: &str| {
        a.splits("logs")
            .iter()
            .chain(a.splits("spans").iter())
            .any(|s| s["node"] == node)
    };
    let flushed = || {
        ["logs", "spans"]
            .iter()
            .all(|s| all_flushed(&a, s) && all_flushed(&b, s))
    };
    // c is the third query node, whether it leads or not.
    let query_c = if leader_is_c { &leader } else { &heir };
    let mut total = 0;
    let settled = wait_until(deadline_in(Duration::from_secs(40)), || {
        flushed()
            && compacted_by(&leader_id)
            && agree(&[&a, &b, query_c]).is_some_and(|n| {
                total = n;
                n > 0
            })
    });
    assert!(
        settled,
        "no compaction by the leader, or counts differ; leader's log:\n{}",
        leader.log()
    );

    // kill -9 the leader: the other compact node takes over within seconds.
    leader.kill9();
    let killed = std::time::Instant::now();
    let took_over = wait_until(deadline_in(Duration::from_secs(15)), || leads(&heir));
    assert!(took_over, "no takeover within 15 s; log:\n{}", heir.log());
    println!(
        "the other compact node leads {:?} after the leader was killed",
        killed.elapsed()
    );
    let mut after = Value::Null;
    assert!(wait_until(deadline_in(Duration::from_secs(10)), || {
        after = get(&a, "/api/v1/nodes");
        after["leader"]["node"] == heir_id.as_str()
    }));
    assert!(
        after["leader"]["epoch"].as_i64().unwrap() > first_epoch,
        "{after}"
    );

    // Ingest goes on on both ingest nodes, and the new leader compacts.
    generate(&a, &["--rate", "40", "--duration", "2s", "--seed", "3"]);
    generate(&b, &["--rate", "40", "--duration", "2s", "--seed", "4"]);
    let mut survivors = vec![&a, &b];
    if !leader_is_c {
        survivors.push(&heir);
    }
    let settled = wait_until(deadline_in(Duration::from_secs(40)), || {
        flushed() && compacted_by(&heir_id) && agree(&survivors).is_some_and(|n| n > total)
    });
    assert!(
        settled,
        "after the takeover: no compaction by the new leader, or counts differ; log:\n{}",
        heir.log()
    );

    // Restarted, the old leader does not take the lead back.
    leader.restart();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!leads(&leader));
    assert!(leads(&heir));
    // Stopped cleanly, a leader releases its lease: the other takes it at
    // its next attempt (every 2 s), not after the 10 s TTL.
    heir.terminate();
    let stopped = std::time::Instant::now();
    let took_over = wait_until(deadline_in(Duration::from_secs(6)), || leads(&leader));
    assert!(
        took_over,
        "no prompt takeover after SIGTERM; log:\n{}",
        leader.log()
    );
    println!(
        "after a clean stop the lead passed on in {:?}",
        stopped.elapsed()
    );
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

/// The issue's acceptance on one machine: PostgreSQL, S3 and three nodes
/// (two `ingest,query`, one `query,compact`), `loupe gen` writing seed 7
/// to one ingest node and seed 8 to the other while a single node on
/// local disk and SQLite takes both. Once flushed, counts, a `match_all`
/// search, a phrase, a trace lookup and `/problems` agree on every node
/// and with the single node. A kill -9 of an ingest node holding
/// acknowledged, unflushed records loses none (its WAL replays) while the
/// others keep answering; when the compaction leader dies, a replacement
/// `query,compact` node takes its lease over.
#[test]
fn three_nodes_answer_like_one_lose_nothing_to_a_crash_and_hand_the_lease_over() {
    let began = std::time::Instant::now();
    let pg = Postgres::start();
    let s3 = S3Server::start();
    s3.create_bucket("loupe");
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let catalog = pg.url();
    let args = |role: &str, flush: &str| -> Vec<String> {
        [
            "--role",
            role,
            "--storage",
            "s3://loupe/three",
            "--catalog",
            &catalog,
            "--flush-interval",
            flush,
            "--compaction-interval",
            "1s",
            "--compaction-min-files",
            "2",
        ]
        .map(String::from)
        .to_vec()
    };
    let node = |role: &str| {
        let args = args(role, "1s");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Loupe::start_with_env(&args, &env)
    };
    let a = node("ingest,query");
    let b = node("ingest,query");
    let mut c = node("query,compact");
    let single = Loupe::start(&["--flush-interval", "1s"]);
    let leader_id = std::fs::read_to_string(c.data_dir().join("node_id")).unwrap();
    assert!(
        wait_until(deadline_in(Duration::from_secs(20)), || leads(&c)),
        "the compact node never led; log:\n{}",
        c.log()
    );

    // An incident (payment-2 fails 30% of charges from 6 s on), seed 7 to
    // a and 8 to b, the same two runs to the single node, all at once so
    // both copies of the data carry the same times.
    let truth = tempfile::tempdir().unwrap();
    let run = |seed: &str, name: &str| -> Vec<String> {
        let mut args: Vec<String> =
            crate::shared::incident_args("payment-errors", seed, &truth.path().join(name))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect();
        // Half the usual rate: four runs share the machine.
        let rate = args.iter().position(|a| a == "--rate").unwrap() + 1;
        args[rate] = "60".into();
        args
    };
    let (seven, eight) = (run("7", "a.json"), run("8", "b.json"));
    let (seven_again, eight_again) = (run("7", "s7.json"), run("8", "s8.json"));
    let (r7, r8, s7, s8) = (
        strs(&seven),
        strs(&eight),
        strs(&seven_again),
        strs(&eight_again),
    );
    let reports = generate_together(&[(&a, &r7), (&b, &r8), (&single, &s7), (&single, &s8)]);
    // The same seed, the same data: nothing was dropped for lack of time.
    assert_eq!(reports[0]["spans"], reports[2]["spans"], "{reports:?}");
    assert_eq!(reports[1]["spans"], reports[3]["spans"], "{reports:?}");
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(truth.path().join("a.json")).unwrap())
            .unwrap();
    let fault = truth["fault"]["start_unix_nano"].as_i64().unwrap();
    let (start, end) = (fault, fault + crate::shared::FAULT_NS);

    let flushed = |nodes: &[&Loupe]| {
        wait_until(deadline_in(Duration::from_secs(40)), || {
            nodes.iter().all(|n| {
                ["logs", "spans", "metrics"]
                    .iter()
                    .all(|s| all_flushed(n, s))
            })
        })
    };
    assert!(flushed(&[&a, &b, &single]), "not flushed");
    let trace_id = single.sql_value(
        "SELECT trace_id FROM spans WHERE name = 'POST /checkout' AND kind = 'server' ORDER BY trace_id LIMIT 1",
    );
    let trace_id = trace_id.as_str().unwrap().to_string();
    let expected = answers(&single, &trace_id);
    let expected_problems = problems(&single, start, end);
    let top = ranking(&expected_problems);
    assert!(
        top.first().is_some_and(|s| s.contains("payment-2")),
        "{expected_problems:#}"
    );
    // Every node answers alike (the leader compacting meanwhile), and
    // like the single node.
    let mut seen = Vec::new();
    let agreed = wait_until(deadline_in(Duration::from_secs(20)), || {
        seen = [&a, &b, &c]
            .iter()
            .map(|n| (answers(n, &trace_id), problems(n, start, end)))
            .collect();
        seen.iter()
            .all(|(answers, report)| answers == &expected && ranking(report) == top)
    });
    assert!(
        agreed,
        "single node: {expected:?}\n{expected_problems:#}\nnodes: {seen:#?}"
    );
    // Same files, same report, scores included.
    assert!(seen.windows(2).all(|w| w[0].1 == w[1].1), "{seen:#?}");
    println!(
        "agreement after {:?}: {} suspects, first {}",
        began.elapsed(),
        top.len(),
        top[0]
    );

    // An ingest node holding acknowledged records it has not flushed (an
    // hour's flush interval): the other nodes count them too, read on it
    // from its memtable (once its new worker address is in their lists,
    // read every 5 s). Then kill -9 it: the others keep answering, with
    // the published records, and once restarted its WAL gives back every
    // one of them.
    let published = records(&b);
    let slow = args("ingest,query", "1h");
    let mut a = Loupe::start_in(a, &strs(&slow));
    generate(&a, &["--rate", "40", "--duration", "2s", "--seed", "9"]);
    let acknowledged = records(&a);
    assert!(acknowledged > published);
    let mut seen = Vec::new();
    let unflushed_seen = wait_until(deadline_in(Duration::from_secs(20)), || {
        seen = [&b, &c].iter().map(|n| records(n)).collect();
        seen.iter().all(|&n| n == acknowledged)
    });
    let warnings = |n: &Loupe| -> String {
        let log = n.log();
        log.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        unflushed_seen,
        "b and c count {seen:?}: a acknowledged {acknowledged}, {published} published\nb:\n{}\nc:\n{}",
        warnings(&b),
        warnings(&c)
    );
    // …which are still not in any published file.
    let in_files: u64 = ["logs", "spans"]
        .iter()
        .flat_map(|s| b.splits(s))
        .map(|s| s["row_count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(in_files, published, "a flushed its new records");
    // The search API too: a's unflushed lines are in no index on b or c,
    // so they count them and read the newest of them on a.
    let logs = a.count("SELECT count(*) FROM logs");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let (start, end) = (now - 7_200_000_000_000, now + 60_000_000_000);
    for q in ["", "error"] {
        let search = |n: &Loupe| {
            let found = get(
                n,
                &format!("/api/v1/logs/search?q={q}&start={start}&end={end}&limit=50"),
            );
            ["total", "hits", "histogram", "partial"].map(|k| found[k].clone())
        };
        let on_a = search(&a);
        if q.is_empty() {
            assert_eq!(on_a[0], logs, "{on_a:?}");
        }
        assert!(on_a[0].as_u64() > Some(0), "{on_a:?}");
        for n in [&b, &c] {
            let there = search(n);
            assert_eq!(there[0], on_a[0], "q={q}: total");
            assert_eq!(there[1], on_a[1], "q={q}: hits");
            assert_eq!(there[2], on_a[2], "q={q}: histogram");
            assert_eq!(there[3], false, "q={q}: partial");
        }
    }
    println!(
        "a's unflushed records seen on b and c after {:?}",
        began.elapsed()
    );
    a.kill9();
    for n in [&b, &c] {
        assert_eq!(records(n), published);
        assert_eq!(answers(n, &trace_id), expected);
    }
    a.restart();
    assert_eq!(records(&a), acknowledged, "log:\n{}", a.log());
    // Stopped cleanly, it publishes them for every node.
    a.clean_restart();
    let everywhere = wait_until(deadline_in(Duration::from_secs(20)), || {
        [&a, &b, &c].iter().all(|n| records(n) == acknowledged)
    });
    assert!(everywhere, "the replayed records did not reach every node");
    println!("crash and replay after {:?}", began.elapsed());

    // kill -9 the compaction leader: a replacement query,compact node
    // takes the lease over once it expires, and answers like the others.
    let before: Value = get(&b, "/api/v1/nodes");
    assert_eq!(before["leader"]["node"], leader_id.as_str(), "{before}");
    c.kill9();
    let killed = std::time::Instant::now();
    let d = node("query,compact");
    let took_over = wait_until(deadline_in(Duration::from_secs(20)), || leads(&d));
    assert!(took_over, "no takeover; log:\n{}", d.log());
    println!("lease taken over {:?} after the kill", killed.elapsed());
    let after = get(&b, "/api/v1/nodes");
    assert!(
        after["leader"]["epoch"].as_i64() > before["leader"]["epoch"].as_i64(),
        "{after}"
    );
    assert_ne!(after["leader"]["node"], leader_id.as_str());
    assert_eq!(records(&d), acknowledged);
    assert_eq!(answers(&d, &trace_id), answers(&b, &trace_id));
    println!("done after {:?}", began.elapsed());
}

/// The alert, capacity and outbox stores on a real PostgreSQL, through the
/// statements the API tests reach least: a decision's task, superseding and
/// pruning; the HPA history; an evaluation's instances, history and status;
/// a group's notification committed with it, delivered by a worker on the
/// same catalog to a receiver on 127.0.0.1.
#[test]
fn alert_capacity_and_outbox_stores_on_postgres() {
    use loupe_alerts::store::{AlertStore, Instance, Outgoing, RULES};
    use loupe_alerts::{AlertState, lifecycle::Life};
    use loupe_capacity::store::{
        AckStatus, CapacityStore, DecisionRow, Endpoint, NewTask, TaskOrigin, TaskState,
    };
    use loupe_catalog::db::Location;
    let pg = Postgres::start();
    let location = Location::Postgres(pg.url());
    let secret = loupe_notify::signing::generate_secret();
    let receiver = crate::webhook_receiver::Receiver::start(&secret, 200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let superseded = runtime.block_on(async {
        // Capacity: decisions with tasks; a newer task supersedes the older
        // one's webhook; a failed ack puts the count back.
        let capacity = CapacityStore::open(&location).await.unwrap();
        let endpoint = Endpoint {
            url: receiver.url(),
            secret: Some(secret.clone()),
        };
        let decide = |from: u32, to: u32, at: i64| {
            let task = NewTask {
                service: "cart".into(),
                region: String::new(),
                from,
                to,
                reason: "DesiredWithinRange".into(),
                evidence: serde_json::json!({"rps": 10}),
                origin: TaskOrigin::Decision,
                hold_until_ms: None,
            };
            let capacity = &capacity;
            let endpoint = endpoint.clone();
            async move {
                let body = serde_json::json!({});
                let row = DecisionRow {
                    service: "cart",
                    region: "",
                    body: &body,
                    desired: to,
                    replicas: to,
                };
                capacity
                    .commit_decision(&row, Some((task, endpoint)), at)
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        assert_eq!(capacity.current("cart", "").await.unwrap(), None);
        let first = decide(2, 5, 1_000).await;
        let second = decide(2, 3, 2_000).await;
        assert!(second.sequence > first.sequence);
        assert_eq!(capacity.current("cart", "").await.unwrap(), Some(3));
        let state = |id: String| {
            let capacity = &capacity;
            async move { capacity.task(&id).await.unwrap().unwrap().state }
        };
        assert_eq!(state(first.id.clone()).await, TaskState::Superseded);
        assert_eq!(state(second.id.clone()).await, TaskState::Pending);
        assert_eq!(
            capacity.recommendations("cart", "", 0).await.unwrap(),
            vec![(1_000, 5), (2_000, 3)]
        );
        assert_eq!(
            capacity.scale_events("cart", "", 0).await.unwrap(),
            vec![(1_000, 3), (2_000, 1)]
        );
        assert_eq!(capacity.decisions(None, 10).await.unwrap().len(), 2);
        let superseded = capacity
            .tasks(None, Some(TaskState::Superseded), 10)
            .await
            .unwrap();
        assert_eq!(superseded.len(), 1);
        assert_eq!(superseded[0].id, first.id);
        assert_eq!(
            capacity.tasks(None, None, 1).await.unwrap()[0].id,
            second.id
        );
        capacity
            .ack_task(&second.id, AckStatus::Failed, "quota", 3_000)
            .await
            .unwrap();
        assert_eq!(capacity.current("cart", "").await.unwrap(), Some(2));
        // Eight days later a decision supersedes the last webhook and
        // prunes the old history, tasks and finished webhooks.
        let later = decide(2, 4, 8 * 24 * 3600 * 1000).await;
        let tasks = capacity.tasks(Some("cart"), None, 10).await.unwrap();
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        assert_eq!(tasks[0].id, later.id);
        assert_eq!(capacity.decisions(None, 10).await.unwrap().len(), 1);

        // Alerts: an evaluation's instances and history, an error, a group
        // committed with its notification.
        let alerts = AlertStore::open(&location).await.unwrap();
        let rule: loupe_alerts::rule::RuleSpec =
            serde_json::from_value(serde_json::json!({"sql": "SELECT 1 AS n"})).unwrap();
        alerts.put(&RULES, "r", &rule, 1).await.unwrap();
        alerts.put(&RULES, "r", &rule, 2).await.unwrap();
        assert_eq!(alerts.list(&RULES).await.unwrap().len(), 1);
        assert!(alerts.get(&RULES, "r").await.unwrap().is_some());
        let instance = Instance {
            rule: "r".into(),
            fingerprint: "f1".into(),
            labels: [("service".to_string(), "cart".to_string())].into(),
            annotations: Default::default(),
            value: 2.5,
            life: Life {
                state: AlertState::Firing,
                active_at: 10,
                fired_at: Some(20),
                resolved_at: None,
                quiet_since: None,
            },
        };
        alerts
            .record_evaluation("r", std::slice::from_ref(&instance), &[&instance], 20, 1.5)
            .await
            .unwrap();
        assert_eq!(
            alerts.instances(Some("r")).await.unwrap(),
            vec![instance.clone()]
        );
        assert_eq!(alerts.instances(None).await.unwrap().len(), 1);
        assert_eq!(alerts.history(10).await.unwrap()[0]["state"], "firing");
        alerts.record_error("r", 30, 2.0, "boom").await.unwrap();
        let status = alerts.status("r").await.unwrap().unwrap();
        assert_eq!(
            (status.health, status.last_error.as_deref()),
            ("error", Some("boom"))
        );
        let message = loupe_notify::Message {
            id: "alert_1".into(),
            url: receiver.url(),
            secret: Some(secret.clone()),
            event_type: "alert".into(),
            body: r#"{"status":"firing"}"#.into(),
            supersede_key: None,
        };
        let group = loupe_alerts::grouping::GroupState {
            first_seen_ms: 20,
            ..Default::default()
        };
        alerts
            .commit_group("ops", "{}", Some(&group), Some(&Outgoing { message }), 20)
            .await
            .unwrap();
        assert_eq!(alerts.groups("ops").await.unwrap()["{}"], group);
        assert!(alerts.delete_rule("r").await.unwrap());
        assert!(alerts.instances(None).await.unwrap().is_empty());
        assert!(alerts.status("r").await.unwrap().is_none());

        // A worker on the same catalog delivers what both enqueued.
        let worker = loupe_notify::Worker::open(
            &location,
            loupe_notify::WorkerConfig {
                allow: "127.0.0.1".parse().unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut delivered = 0;
        for _ in 0..5 {
            delivered += worker.pass().await.unwrap();
        }
        assert_eq!(delivered, 2);
        assert_eq!(state(later.id.clone()).await, TaskState::Sent);

        // An alert event to an endpoint that answers 410 Gone: recorded,
        // the endpoint disabled, and enabled again by saving its policy.
        let gone = crate::webhook_receiver::Receiver::start(&secret, 410);
        let alert = loupe_capacity::store::Alert {
            service: "cart",
            region: "",
            kind: "fallback",
            message: "no signal",
            evidence: &serde_json::json!({}),
        };
        let gone_endpoint = Endpoint {
            url: gone.url(),
            secret: None,
        };
        capacity
            .raise_alert(&alert, &gone_endpoint, 9_000)
            .await
            .unwrap();
        assert_eq!(capacity.events(10).await.unwrap()[0].kind, "fallback");
        assert_eq!(worker.pass().await.unwrap(), 1);
        assert!(
            capacity
                .webhook_disabled(&gone.url())
                .await
                .unwrap()
                .is_some()
        );
        let policy: loupe_capacity::policy::PolicySpec =
            serde_json::from_value(serde_json::json!({"webhook_url": gone.url()})).unwrap();
        capacity.put_policy("cart", &policy, 10_000).await.unwrap();
        assert!(
            capacity
                .webhook_disabled(&gone.url())
                .await
                .unwrap()
                .is_none()
        );
        [first.id, second.id]
    });
    let seen = receiver.deliveries();
    assert!(
        seen.iter().any(|d| d.id == "alert_1" && d.signature_ok),
        "{seen:?}"
    );
    assert!(seen.iter().all(|d| !superseded.contains(&d.id)), "{seen:?}");
}

/// Alert, capacity and token state in the shared catalog: what one node's
/// API saves every query node shows the same, and when the leader is
/// killed (-9) with webhooks still undelivered (the receiver answers 503),
/// the next leader delivers them — same ids — and the alert keeps firing
/// since the same time.
#[test]
fn alert_capacity_and_token_state_is_shared_and_a_new_leader_delivers_what_the_old_one_could_not() {
    use crate::capacity::{call, ok};
    use crate::webhook_receiver::Receiver;
    use serde_json::json;
    let pg = Postgres::start();
    let s3 = S3Server::start();
    s3.create_bucket("loupe");
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let catalog = pg.url();
    let node = |role: &str| {
        Loupe::start_with_env(
            &[
                "--role",
                role,
                "--storage",
                "s3://loupe/state",
                "--catalog",
                &catalog,
            ],
            &env,
        )
    };
    let a = node("ingest,query");
    let b = node("query,compact");
    let c = node("query,compact");
    let one_leader = wait_until(deadline_in(Duration::from_secs(20)), || {
        leads(&b) != leads(&c)
    });
    assert!(one_leader, "no single leader");
    let secret = loupe_notify::signing::generate_secret();
    let receiver = Receiver::start(&secret, 503);

    // Saved through a, shown alike by all three.
    ok(
        &a,
        "PUT",
        "/api/v1/alerts/receivers/ops",
        Some(
            json!({"type": "webhook", "url": receiver.url(), "secret": secret,
                    "group_wait": "1s"}),
        ),
    );
    ok(
        &a,
        "PUT",
        "/api/v1/alerts/rules/always",
        Some(json!({"sql": "SELECT 1 AS n", "every": "1s",
                    "condition": {"column": "n", "op": ">", "threshold": 0},
                    "attach_suspects": false, "receivers": ["ops"]})),
    );
    let policy = ok(
        &a,
        "PUT",
        "/api/v1/capacity/policies/cart",
        Some(
            json!({"webhook_url": receiver.url(), "webhook_secret": secret,
                    "evaluation_interval": "1h"}),
        ),
    );
    let (status, task) = call(
        &b,
        "POST",
        "/api/v1/capacity/tasks",
        Some(json!({"service": "cart", "to": 4, "hold": "10m", "reason": "game day"})),
    );
    assert_eq!(status, 201, "{task}");
    let task_id = task["id"].as_str().unwrap().to_string();
    for n in [&a, &b, &c] {
        assert_eq!(
            ok(n, "GET", "/api/v1/alerts/receivers/ops", None)["url"],
            receiver.url()
        );
        assert_eq!(ok(n, "GET", "/api/v1/capacity/policies/cart", None), policy);
        let shown = ok(n, "GET", &format!("/api/v1/capacity/tasks/{task_id}"), None);
        assert_eq!(shown["spec"], task["spec"], "{shown}");
        assert_eq!(shown["hold_until"], task["hold_until"], "{shown}");
    }

    // The leader fires the rule; every node shows the same alert.
    let firing = |n: &Loupe| -> Value {
        let alerts = ok(n, "GET", "/api/v1/alerts?rule=always", None);
        alerts
            .as_array()
            .and_then(|a| a.iter().find(|a| a["state"] == "firing").cloned())
            .unwrap_or(Value::Null)
    };
    let fired = wait_until(deadline_in(Duration::from_secs(30)), || {
        !firing(&a).is_null()
    });
    assert!(fired, "the rule never fired");
    let alert = firing(&a);
    for n in [&b, &c] {
        assert_eq!(firing(n), alert);
        let rule = ok(n, "GET", "/api/v1/alerts/rules/always", None);
        assert_eq!(rule["state"], "firing", "{rule}");
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // The receiver refuses both webhooks a few times…
    let refused = receiver.wait_for("refused attempts", Duration::from_secs(30), |d| {
        d.iter().filter(|d| d.id == task_id).count() >= 2
            && d.iter().any(|d| d.body["status"] == "firing")
    });
    let alert_id = refused
        .iter()
        .find(|d| d.body["status"] == "firing")
        .unwrap()
        .id
        .clone();
    // …then the leader dies and the receiver recovers: the next leader
    // delivers both, under their ids.
    let (mut leader, heir) = if leads(&b) { (b, c) } else { (c, b) };
    leader.kill9();
    let killed_at = std::time::Instant::now();
    let killed = receiver.deliveries().len();
    receiver.set_status(200);
    let seen = receiver.wait_for("delivery by the new leader", Duration::from_secs(45), |d| {
        [&task_id, &alert_id]
            .iter()
            .all(|id| d[killed..].iter().any(|d| &d.id == *id && d.status == 200))
    });
    println!(
        "the new leader delivered both webhooks {:?} after the old one was killed",
        killed_at.elapsed()
    );
    assert!(leads(&heir));
    assert!(seen.iter().all(|d| d.signature_ok), "{seen:?}");
    let alert_notifications = seen
        .iter()
        .filter(|d| d.status == 200 && d.body["status"] == "firing")
        .count();
    assert_eq!(alert_notifications, 1, "notified again: {seen:#?}");
    let mut sent = Value::Null;
    let recorded = wait_until(deadline_in(Duration::from_secs(10)), || {
        sent = ok(
            &a,
            "GET",
            &format!("/api/v1/capacity/tasks/{task_id}"),
            None,
        );
        sent["state"] == "sent"
    });
    assert!(recorded, "{sent}");
    assert!(sent["delivery"]["attempts"].as_u64() >= Some(3), "{sent}");
    // The new leader went on evaluating the same alert.
    let after = firing(&a);
    assert_eq!(after["firing_since"], alert["firing_since"], "{after}");
    assert_eq!(
        ok(&heir, "GET", "/api/v1/alerts/rules/always", None)["health"],
        "ok"
    );

    // A token created through one node is asked for by the others within
    // a reload (2 s); revoked through another, it is gone everywhere.
    let created = ok(
        &a,
        "POST",
        "/api/v1/tokens",
        Some(json!({"scope": "admin", "name": "ops"})),
    );
    let token = created["token"].as_str().unwrap().to_string();
    let status = |n: &Loupe, token: Option<&str>| {
        let request = n.client().get(n.api_url("/api/v1/alerts"));
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        request.send().unwrap().status().as_u16()
    };
    let asked = wait_until(deadline_in(Duration::from_secs(5)), || {
        status(&heir, None) == 401
    });
    assert!(asked, "the other node does not ask for the new token");
    assert_eq!(status(&heir, Some(&token)), 200);
    let id = created["id"].as_str().unwrap();
    let revoked = heir
        .client()
        .delete(heir.api_url(&format!("/api/v1/tokens/{id}")))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 204);
    let open_again = wait_until(deadline_in(Duration::from_secs(5)), || {
        status(&a, None) == 200
    });
    assert!(
        open_again,
        "the revoked token is still asked for on the first node"
    );
}

/// The shared-state interface's transactions on a real PostgreSQL: one
/// dropped before its commit (an error, a cancelled request) leaves
/// nothing behind, and the next use reconnects by itself.
#[test]
fn a_dropped_postgres_transaction_rolls_back_and_the_next_use_reconnects() {
    use loupe_catalog::db::{Db, Location, Value};
    use loupe_catalog::pg::PgSchema;
    use loupe_catalog::values;
    const THINGS: PgSchema = PgSchema {
        component: "things",
        migrations: &[
            "CREATE TABLE things (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, raw BYTEA)",
        ],
    };
    let pg = Postgres::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = Db::open(&Location::Postgres(pg.url()), &[], &[&THINGS])
            .await
            .unwrap();
        let insert = "INSERT INTO things (id, name, score, raw) VALUES (?1, ?2, ?3, ?4)";
        {
            let mut tx = db.begin().await.unwrap();
            tx.execute(insert, values![1i64, "dropped", 0.5, &b"x"[..]])
                .await
                .unwrap();
        }
        let mut tx = db.begin().await.unwrap();
        tx.execute(insert, values![2i64, None::<String>, 1.5, &b"\x00\xff"[..]])
            .await
            .unwrap();
        // A failing statement spoils the transaction; dropped, it is gone.
        assert!(
            tx.execute(insert, values![2i64, "again", 0.0, &b""[..]])
                .await
                .is_err()
        );
        drop(tx);
        let mut tx = db.begin().await.unwrap();
        tx.execute(insert, values![3i64, "kept", 2.5, &b"\x00\xff"[..]])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows = db
            .query("SELECT id, name, score, raw FROM things ORDER BY id", &[])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].0,
            vec![
                Value::Int(3),
                Value::Text("kept".into()),
                Value::Real(2.5),
                Value::Blob(vec![0, 255])
            ]
        );
    });
}
