//! The peers: python3 scripts (shipped in `benches/peers/`, embedded here
//! and written to a temp dir at start) that answer the suite's questions
//! with DuckDB, chDB, DataFusion-python and tantivy-py over the same files.
//! A missing python3 or module makes those rows say "peer not installed".

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const SCRIPTS: [(&str, &str); 4] = [
    ("sql.py", include_str!("../../benches/peers/sql.py")),
    ("search.py", include_str!("../../benches/peers/search.py")),
    ("storage.py", include_str!("../../benches/peers/storage.py")),
    ("corpus.py", include_str!("../../benches/peers/corpus.py")),
];

pub const NOT_INSTALLED: &str = "peer not installed";

pub struct Peers {
    dir: tempfile::TempDir,
}

impl Peers {
    pub fn new() -> Result<Peers> {
        let dir = tempfile::tempdir()?;
        for (name, text) in SCRIPTS {
            std::fs::write(dir.path().join(name), text)?;
        }
        Ok(Peers { dir })
    }

    pub fn script(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `python3 SCRIPT ARGS…` in `cwd` and parses its JSON stdout.
    pub fn run<S: AsRef<OsStr>>(&self, script: &str, args: &[S], cwd: &Path) -> Result<Value> {
        let output = Command::new("python3")
            .arg(self.script(script))
            .args(args)
            .current_dir(cwd)
            .output()
            .context(NOT_INSTALLED)?;
        if !output.status.success() {
            bail!(
                "python3 {script}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "python3 {script} printed no JSON: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }
}

/// Hard-links (or copies) `files` into `dir` as `0.parquet`, `1.parquet`,
/// … so every peer reads exactly the live files through one glob.
pub fn link_files(files: &[PathBuf], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (i, f) in files.iter().enumerate() {
        let to = dir.join(format!("{i}.parquet"));
        if std::fs::hard_link(f, &to).is_err() {
            std::fs::copy(f, &to).with_context(|| format!("copy {}", f.display()))?;
        }
    }
    Ok(())
}

/// Whether two result tables agree: same rows in the same order, numbers
/// equal to 1e-6 relative (engines sum floats in different orders),
/// integers printed as floats equal to integers.
pub fn same_rows(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_rows(p, q))
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
        }
        // chDB prints some numbers as strings.
        (Value::Number(_), Value::String(s)) | (Value::String(s), Value::Number(_)) => s
            .parse::<f64>()
            .is_ok_and(|v| same_rows(&serde_json::json!(v), if a.is_number() { a } else { b })),
        _ => a == b,
    }
}

/// A short description of a table for a "DIFFERENT" note.
pub fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_compare_numbers_with_tolerance_and_strings_exactly() {
        assert!(same_rows(
            &json!([["a", 3, 1.0000000001]]),
            &json!([["a", 3.0, 1.0]])
        ));
        assert!(same_rows(&json!([[5]]), &json!([["5"]])));
        assert!(!same_rows(&json!([["a", 3]]), &json!([["b", 3]])));
        assert!(!same_rows(&json!([[1], [2]]), &json!([[1]])));
        assert!(!same_rows(&json!([[1.0]]), &json!([[1.1]])));
    }
}
