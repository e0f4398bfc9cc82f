//! Log-pattern accuracy on real logs: the Loghub 2k samples (16 systems,
//! 2,000 lines each, with ground-truth event ids) from the shared real-log
//! corpus. Each system's message texts go through Loupe's template miner,
//! and grouping accuracy is measured as in the LogPAI benchmark: a line is
//! right when the set of lines sharing its template is exactly the set
//! sharing its event id. The single-line masking Loupe used before the
//! miner (every token holding a digit masked, identical results grouped)
//! runs beside it as the peer.
//!
//! Run: `cargo bench --bench log_patterns` (env `REAL_LOGS`: the
//! `real-logs.tar.zst` bundle, default `../shared/datasets/…`;
//! `DEBUG_SYSTEM=Linux` prints that system's events split over several
//! templates and templates merging several events).

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::read_csv;
use loupe_query::template_miner::TemplateMiner;

const SYSTEMS: [&str; 16] = [
    "Android",
    "Apache",
    "BGL",
    "HDFS",
    "HPC",
    "Hadoop",
    "HealthApp",
    "Linux",
    "Mac",
    "OpenSSH",
    "OpenStack",
    "Proxifier",
    "Spark",
    "Thunderbird",
    "Windows",
    "Zookeeper",
];

/// The bundle unpacked into a temporary directory (never into the repo).
fn extract() -> (tempfile::TempDir, PathBuf) {
    let bundle = std::env::var("REAL_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/real-logs.tar.zst")
        });
    assert!(
        bundle.exists(),
        "{} is missing (set REAL_LOGS)",
        bundle.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$0\" | tar x -C \"$1\" real-logs/loghub-2k")
        .arg(&bundle)
        .arg(dir.path())
        .status()
        .expect("run zstd and tar");
    assert!(status.success(), "extracting {} failed", bundle.display());
    let root = dir.path().join("real-logs/loghub-2k");
    (dir, root)
}

/// `(Content, EventId)` of every line of one system.
fn load(root: &Path, system: &str) -> Vec<(String, String)> {
    let rows = read_csv(
        &root
            .join(system)
            .join(format!("{system}_2k.log_structured.csv")),
    );
    let header = &rows[0];
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{system}: no {name} column"))
    };
    let (content, event) = (col("Content"), col("EventId"));
    rows[1..]
        .iter()
        .filter(|r| r.len() > content.max(event))
        .map(|r| (r[content].clone(), r[event].clone()))
        .collect()
}

/// Share of lines whose predicted group equals their true group.
fn grouping_accuracy<P: Hash + Eq, T: Hash + Eq>(predicted: &[P], truth: &[T]) -> f64 {
    let mut by_pred: HashMap<&P, Vec<usize>> = HashMap::new();
    let mut by_truth: HashMap<&T, Vec<usize>> = HashMap::new();
    for (i, (p, t)) in predicted.iter().zip(truth).enumerate() {
        by_pred.entry(p).or_default().push(i);
        by_truth.entry(t).or_default().push(i);
    }
    let right = predicted
        .iter()
        .zip(truth)
        .filter(|(p, t)| by_pred[p] == by_truth[t])
        .count();
    right as f64 / predicted.len().max(1) as f64
}

fn main() {
    let (_dir, root) = extract();
    println!(
        "| system | lines | events | Loupe miner | templates | peer: masked line | templates |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let (mut ours_sum, mut peer_sum) = (0.0, 0.0);
    let mut mining = std::time::Duration::ZERO;
    for system in SYSTEMS {
        let lines = load(&root, system);
        let truth: Vec<&str> = lines.iter().map(|(_, e)| e.as_str()).collect();
        let mut miner = TemplateMiner::default();
        let started = std::time::Instant::now();
        let ours: Vec<usize> = lines.iter().map(|(l, _)| miner.add("", l)).collect();
        mining += started.elapsed();
        if std::env::var("DEBUG_SYSTEM").is_ok_and(|s| s == system) {
            let mut by_event: HashMap<&str, HashMap<usize, (usize, &str)>> = HashMap::new();
            for ((l, e), id) in lines.iter().zip(&ours) {
                let entry = by_event
                    .entry(e.as_str())
                    .or_default()
                    .entry(*id)
                    .or_insert((0, l.as_str()));
                entry.0 += 1;
            }
            for (e, ids) in &by_event {
                if ids.len() > 1 {
                    println!("SPLIT {e}");
                    for (id, (n, l)) in ids {
                        println!(
                            "    {n} {} | {}",
                            miner.template(*id),
                            &l[..l.len().min(140)]
                        );
                    }
                }
            }
            let mut by_id: HashMap<usize, HashMap<&str, usize>> = HashMap::new();
            for ((_, e), id) in lines.iter().zip(&ours) {
                *by_id.entry(*id).or_default().entry(e.as_str()).or_default() += 1;
            }
            for (id, events) in &by_id {
                if events.len() > 1 {
                    println!("MERGED {} {:?}", miner.template(*id), events);
                }
            }
        }
        let peer: Vec<String> = lines.iter().map(|(l, _)| legacy_template(l)).collect();
        let (a, b) = (
            grouping_accuracy(&ours, &truth),
            grouping_accuracy(&peer, &truth),
        );
        ours_sum += a;
        peer_sum += b;
        let events = truth.iter().collect::<std::collections::HashSet<_>>().len();
        let peer_groups = peer.iter().collect::<std::collections::HashSet<_>>().len();
        println!(
            "| {system} | {} | {events} | {a:.3} | {} | {b:.3} | {peer_groups} |",
            lines.len(),
            miner.len()
        );
    }
    let n = SYSTEMS.len() as f64;
    println!(
        "| **average** | | | **{:.3}** | | **{:.3}** | |",
        ours_sum / n,
        peer_sum / n
    );
    println!(
        "mining time, all systems: {:.0} ms",
        mining.as_secs_f64() * 1e3
    );
}

/// Loupe's grouping before the miner: tokens holding a digit (or longer
/// than 40 bytes) masked whole, runs of masks collapsed, identical results
/// grouped.
fn legacy_template(line: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for token in line.split_whitespace() {
        let masked = if token.bytes().any(|b| b.is_ascii_digit()) || token.len() > 40 {
            "<*>"
        } else {
            token
        };
        if !(masked == "<*>" && out.last() == Some(&"<*>")) {
            out.push(masked);
        }
    }
    out.join(" ")
}
