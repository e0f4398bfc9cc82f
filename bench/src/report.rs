//! The suite's one table: rows of Loupe's figure against a peer's (or a
//! goal's), medians over runs, printed to stdout and written as
//! `latest.json` (a list of `{"name","unit","loupe","peer","peer_value","ratio"}`)
//! and `latest.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

/// Which way is better for a figure; the ratio is < 1 when Loupe is better.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Better {
    Lower,
    Higher,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub loupe: f64,
    /// The peer (`duckdb`, `tantivy-py`, …), `goal`, or empty for a figure
    /// with nothing to compare to.
    pub peer: String,
    pub peer_value: Option<f64>,
    pub better: Better,
    /// Whether the answers agreed: `same`, `DIFFERENT: …`, `peer not
    /// installed`, or empty when there is nothing to compare.
    pub check: String,
}

impl Row {
    pub fn new(name: impl Into<String>, unit: &'static str, loupe: f64, better: Better) -> Row {
        Row {
            name: name.into(),
            unit,
            loupe,
            peer: String::new(),
            peer_value: None,
            better,
            check: String::new(),
        }
    }

    pub fn vs(mut self, peer: &str, value: Option<f64>, check: impl Into<String>) -> Row {
        self.peer = peer.to_string();
        self.peer_value = value;
        self.check = check.into();
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        let peer = self.peer_value?;
        let r = match self.better {
            Better::Lower => self.loupe / peer,
            Better::Higher => peer / self.loupe,
        };
        r.is_finite().then_some(r)
    }

    fn key(&self) -> (String, String) {
        (self.name.clone(), self.peer.clone())
    }
}

/// Per (name, peer), the median of each figure over the runs; a check
/// that differed in any run is kept.
pub fn medians(runs: &[Vec<Row>]) -> Vec<Row> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|row| {
            let same: Vec<&Row> = runs
                .iter()
                .filter_map(|rows| rows.iter().find(|r| r.key() == row.key()))
                .collect();
            let loupe = median(same.iter().map(|r| r.loupe).collect());
            let peer_values: Vec<f64> = same.iter().filter_map(|r| r.peer_value).collect();
            let check = same
                .iter()
                .map(|r| r.check.as_str())
                .find(|c| c.starts_with("DIFFERENT"))
                .unwrap_or(row.check.as_str())
                .to_string();
            Row {
                loupe,
                peer_value: (!peer_values.is_empty()).then(|| median(peer_values)),
                check,
                ..row.clone()
            }
        })
        .collect()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Percentile `p` (0–100) by nearest rank.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn num(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// The table as Markdown (also what stdout shows).
pub fn markdown(rows: &[Row], header: &str) -> String {
    let mut out = format!(
        "{header}\n\n| figure | unit | loupe | peer | peer value | ratio | answers |\n|---|---|---:|---|---:|---:|---|\n"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.unit,
            num(r.loupe),
            r.peer,
            r.peer_value.map_or("-".into(), num),
            r.ratio().map_or("-".into(), |x| format!("{x:.2}")),
            r.check
        );
    }
    out.push_str(
        "\nratio < 1: Loupe better (time, size, memory: loupe / peer; throughput: peer / loupe).\n",
    );
    out
}

pub fn to_json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "unit": r.unit,
                    "loupe": finite(r.loupe),
                    "peer": r.peer,
                    "peer_value": r.peer_value.and_then(finite),
                    "ratio": r.ratio(),
                })
            })
            .collect(),
    )
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Writes `latest.json` and `latest.md` into `dir`.
pub fn write(dir: &Path, rows: &[Row], header: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("latest.json"),
        serde_json::to_string_pretty(&to_json(rows))? + "\n",
    )?;
    std::fs::write(dir.join("latest.md"), markdown(rows, header))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_below_one_when_loupe_is_better() {
        let faster = Row::new("q", "ms", 10.0, Better::Lower).vs("duckdb", Some(20.0), "same");
        assert_eq!(faster.ratio(), Some(0.5));
        let more = Row::new("ingest", "MB/CPU-s", 100.0, Better::Higher).vs("goal", Some(50.0), "");
        assert_eq!(more.ratio(), Some(0.5));
        assert_eq!(Row::new("x", "ms", 1.0, Better::Lower).ratio(), None);
    }

    #[test]
    fn medians_keep_a_differing_answer() {
        let run = |v: f64, check: &str| {
            vec![Row::new("q", "ms", v, Better::Lower).vs("duckdb", Some(1.0), check)]
        };
        let m = medians(&[
            run(1.0, "same"),
            run(5.0, "DIFFERENT: 1 vs 2"),
            run(3.0, "same"),
        ]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].loupe, 3.0);
        assert!(m[0].check.starts_with("DIFFERENT"));
    }

    #[test]
    fn json_rows_have_the_documented_keys() {
        let rows = [Row::new("q", "ms", 2.0, Better::Lower).vs("duckdb", Some(4.0), "same")];
        let v = to_json(&rows);
        let keys: Vec<&str> = v[0]
            .as_object()
            .map_or(vec![], |o| o.keys().map(String::as_str).collect());
        assert_eq!(keys.len(), 6);
        for k in ["name", "unit", "loupe", "peer", "peer_value", "ratio"] {
            assert!(keys.contains(&k), "{k}");
        }
        assert_eq!(percentile(vec![3.0, 1.0, 2.0, 4.0], 50.0), 2.0);
    }
}
