//! `loupe-bench`: Loupe against the tools users would pick instead, on the
//! same data in the same run. It starts a real `loupe serve` (the `loupe`
//! binary beside this one), loads it with `loupe gen` over OTLP/gRPC from a
//! separate process (and the real corpus from `../shared/datasets/` over
//! OTLP/HTTP when present), asks it over 127.0.0.1 what it asks DuckDB,
//! chDB, DataFusion-python and tantivy-py over the same Parquet files,
//! checks the answers agree, and writes one table to stdout,
//! `benches/results/latest.json` and `benches/results/latest.md`.
//!
//! `cargo build --release --bin loupe && cargo run --release -p loupe-bench -- all --scale small`

mod http;
mod ingest;
mod peers;
mod queries;
mod report;
mod server;
mod storage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use peers::{Peers, link_files};
use report::Row;
use server::Loupe;

#[derive(Debug, Parser)]
#[command(
    name = "loupe-bench",
    about = "Loupe against its peers on the same data"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every section: ingest, freshness, search, SQL, trace by id, /problems, storage.
    All(Args),
    /// Ingest at saturation only.
    Ingest(Args),
    /// One loaded server: freshness, /problems, search, SQL, trace by id,
    /// storage of generated logs.
    Queries(Args),
    /// Storage of the real corpus only.
    Corpus(Args),
}

/// Which sections a command runs.
#[derive(Debug, Clone, Copy)]
struct Sections {
    ingest: bool,
    queries: bool,
    corpus: bool,
}

#[derive(Debug, clap::Args)]
struct Args {
    #[arg(long, value_enum, default_value = "small")]
    scale: ScaleName,
    /// Repeat the whole suite this many times; the table shows medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// The `loupe` binary [default: beside this one].
    #[arg(long)]
    loupe: Option<PathBuf>,
    /// Where the real corpus bundles are (skipped when absent).
    #[arg(long, default_value = "../shared/datasets")]
    datasets: PathBuf,
    /// Where the flattened corpus is kept between runs [default: $TMPDIR/loupe-bench-cache].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Where latest.json and latest.md go.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScaleName {
    Small,
    Medium,
    Large,
}

/// How much each section does at a scale.
#[derive(Debug)]
pub struct Scale {
    /// Seconds of saturating load per ingest workload.
    pub ingest_secs: u64,
    /// The data the questions are asked of: `loupe gen --signals all` for
    /// this long at this rate.
    pub load_secs: u64,
    pub load_rate: u64,
    pub freshness_probes: usize,
    /// Timed calls per question (medians; after one warm-up).
    pub query_runs: usize,
    /// The incident for `/problems`: its load lasts this long, the fault
    /// the second half.
    pub incident_secs: u64,
    /// Real corpus lines to load (`None`: all).
    pub corpus_lines: Option<usize>,
}

impl ScaleName {
    fn scale(self) -> Scale {
        match self {
            ScaleName::Small => Scale {
                ingest_secs: 8,
                load_secs: 20,
                load_rate: 1_500,
                freshness_probes: 20,
                query_runs: 3,
                incident_secs: 12,
                corpus_lines: Some(50_000),
            },
            ScaleName::Medium => Scale {
                ingest_secs: 30,
                load_secs: 90,
                load_rate: 4_000,
                freshness_probes: 50,
                query_runs: 5,
                incident_secs: 60,
                corpus_lines: None,
            },
            // By hand: ≥ 100 M log lines and ≥ 50 M spans take hours here.
            ScaleName::Large => Scale {
                ingest_secs: 120,
                load_secs: 4 * 3600,
                load_rate: 10_000,
                freshness_probes: 200,
                query_runs: 5,
                incident_secs: 900,
                corpus_lines: None,
            },
        }
    }
}

fn main() -> Result<()> {
    let (args, sections, command) = match Cli::parse().command {
        Cmd::All(a) => (
            a,
            Sections {
                ingest: true,
                queries: true,
                corpus: true,
            },
            "all",
        ),
        Cmd::Ingest(a) => (
            a,
            Sections {
                ingest: true,
                queries: false,
                corpus: false,
            },
            "ingest",
        ),
        Cmd::Queries(a) => (
            a,
            Sections {
                ingest: false,
                queries: true,
                corpus: false,
            },
            "queries",
        ),
        Cmd::Corpus(a) => (
            a,
            Sections {
                ingest: false,
                queries: false,
                corpus: true,
            },
            "corpus",
        ),
    };
    let bin = match &args.loupe {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("loupe"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first (`cargo build --release --bin loupe`) or pass --loupe",
            bin.display()
        );
    }
    let scale = args.scale.scale();
    let peers = Peers::new()?;
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("loupe-bench-cache"));
    std::fs::create_dir_all(&cache)?;
    let corpus = if sections.corpus {
        storage::corpus(&args.datasets, &cache, &peers).unwrap_or_else(|e| {
            eprintln!("real corpus unavailable: {e:#}");
            None
        })
    } else {
        None
    };
    let started = Instant::now();
    let mut runs = Vec::new();
    for run in 0..args.runs.max(1) {
        eprintln!(
            "== run {} of {} ({:?})",
            run + 1,
            args.runs.max(1),
            args.scale
        );
        runs.push(one_run(
            &bin,
            &scale,
            sections,
            &peers,
            corpus.as_deref(),
            run as u64 + 1,
        )?);
    }
    let rows = report::medians(&runs);
    let header = format!(
        "loupe-bench {command} --scale {:?}: medians of {} run(s), {:.0}s, load average {}",
        args.scale,
        runs.len(),
        started.elapsed().as_secs_f64(),
        load_average()
    )
    .to_lowercase();
    let table = report::markdown(&rows, &header);
    println!("{table}");
    report::write(&args.out, &rows, &header)?;
    eprintln!("wrote {}/latest.json and latest.md", args.out.display());
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One pass over every section.
fn one_run(
    bin: &Path,
    scale: &Scale,
    sections: Sections,
    peers: &Peers,
    corpus: Option<&Path>,
    seed: u64,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    if sections.ingest {
        rows.extend(ingest::ingest(bin, scale, seed)?);
    }
    if sections.queries {
        rows.extend(queries(bin, scale, peers, seed)?);
    }
    if let Some(corpus) = corpus {
        rows.extend(storage::load_corpus(
            bin,
            corpus,
            scale.corpus_lines,
            peers,
        )?);
    }
    Ok(rows)
}

/// One loaded server: freshness while loading, /problems, then search,
/// SQL and trace by id against the peers, and storage of its logs.
fn queries(bin: &Path, scale: &Scale, peers: &Peers, seed: u64) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let data = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;

    // The data the questions are asked of, with freshness probes while it loads.
    let server = Loupe::start(bin, data.path(), &[])?;
    let loading = Arc::new(AtomicBool::new(true));
    let load = {
        let (bin, grpc, loading) = (bin.to_path_buf(), server.grpc.clone(), loading.clone());
        let args = [
            "--signals".to_string(),
            "all".into(),
            // Errors from a third of the way in, for the join of erroring
            // spans to their logs.
            "--scenario".into(),
            "payment-errors".into(),
            "--rate".into(),
            scale.load_rate.to_string(),
            "--duration".into(),
            format!("{}s", scale.load_secs),
            "--concurrency".into(),
            "8".into(),
            "--batch".into(),
            "50".into(),
            "--seed".into(),
            seed.to_string(),
        ];
        std::thread::spawn(move || {
            let out = std::process::Command::new(bin)
                .args(["gen", "--protocol", "grpc", "--quiet", "--json"])
                .args(["--endpoint", &format!("http://{grpc}")])
                .args(args)
                .output();
            loading.store(false, Ordering::SeqCst);
            out
        })
    };
    let fresh = ingest::freshness(&server, scale.freshness_probes, &|| {
        loading.load(Ordering::SeqCst)
    });
    let out = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("gen: {}", String::from_utf8_lossy(&out.stderr)))?;
    rows.extend(fresh?);
    eprintln!(
        "loaded {} spans, {} logs, {} data points",
        report["spans"], report["logs"], report["data_points"]
    );
    // A failed /problems call is a figure of its own, not the end of
    // the run: the other sections still measure.
    let problems = queries::problems(&server, work.path(), scale.incident_secs, scale.query_runs);
    if let Err(e) = &problems {
        eprintln!("/problems failed: {e:#}");
    }
    rows.push(report::Row::new(
        "/problems: answered without an error",
        "yes=1",
        f64::from(u8::from(problems.is_ok())),
        report::Better::Higher,
    ));
    rows.extend(problems.unwrap_or_default());

    // Flush everything, let compaction settle, and point the peers at the live files.
    server.stop()?;
    let server = Loupe::start(
        bin,
        data.path(),
        &["--compaction-interval", "2s", "--compaction-min-files", "2"],
    )?;
    for signal in ["spans", "logs"] {
        let n = server.settle(signal, Duration::from_secs(300))?;
        eprintln!("{signal}: {n} live files after compaction");
    }
    let logs = server.live_files("logs")?;
    let spans = server.live_files("spans")?;
    link_files(
        &logs.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        &work.path().join("logs"),
    )?;
    link_files(
        &spans.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        &work.path().join("spans"),
    )?;

    rows.extend(queries::search(
        &server,
        peers,
        work.path(),
        scale.query_runs,
    )?);
    rows.extend(queries::sql(&server, peers, work.path(), scale.query_runs)?);
    rows.extend(storage::rows("generated logs", &logs, peers, work.path())?);
    server.stop()?;
    Ok(rows)
}
