//! One node against three on the same data: query latency, and ingest
//! throughput and CPU per record (by hand, `--ignored`).

use super::*;

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
/// `cargo test --test e2e multi_node::scaling::one_vs_three_nodes -- --ignored --nocapture`.
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
    let env = s3.env();
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
