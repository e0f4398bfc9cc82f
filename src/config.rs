//! Server configuration: command-line flags, then `LOUPE_*` environment
//! variables (both through clap), then an optional TOML file, then
//! defaults — the first that sets a value wins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use loupe_query::QueryConfig;
use loupe_storage::{StorageConfig, SyncMode};
use serde::Deserialize;

/// Flags of `loupe serve`. Every one is optional here so that the TOML
/// file and defaults can fill what the command line leaves out.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (keys as the long flags, with underscores).
    #[arg(long, env = "LOUPE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the WAL, Parquet files and catalog live [default: ./loupe-data].
    #[arg(long, env = "LOUPE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long, env = "LOUPE_OTLP_GRPC")]
    pub otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long, env = "LOUPE_OTLP_HTTP")]
    pub otlp_http: Option<SocketAddr>,
    /// API and UI listen address [default: 127.0.0.1:7080].
    #[arg(long, env = "LOUPE_HTTP")]
    pub http: Option<SocketAddr>,
    /// Largest OTLP request accepted, after decompression too [default: 16MiB].
    #[arg(long, env = "LOUPE_MAX_REQUEST_SIZE")]
    pub max_request_size: Option<String>,
    /// Time limit for one OTLP request, body upload included [default: 30s].
    #[arg(long, env = "LOUPE_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// `always` (fsync before acknowledging) or `never` (leave it to the OS) [default: always].
    #[arg(long, env = "LOUPE_WAL_FSYNC")]
    pub wal_fsync: Option<String>,
    /// Flush a signal to Parquet once its oldest unflushed data is this old [default: 60s].
    #[arg(long, env = "LOUPE_FLUSH_INTERVAL")]
    pub flush_interval: Option<String>,
    /// …or once it holds this much data [default: 64MiB].
    #[arg(long, env = "LOUPE_FLUSH_SIZE")]
    pub flush_size: Option<String>,
    /// Refuse writes with 429 while this much accepted data is unflushed [default: 1GiB].
    #[arg(long, env = "LOUPE_MAX_UNFLUSHED")]
    pub max_unflushed: Option<String>,
    /// Time limit for one SQL query [default: 30s].
    #[arg(long, env = "LOUPE_QUERY_TIMEOUT")]
    pub query_timeout: Option<String>,
    /// Memory one SQL query may use [default: 512MiB].
    #[arg(long, env = "LOUPE_QUERY_MEMORY_LIMIT")]
    pub query_memory_limit: Option<String>,
    /// Rows one SQL response returns at most [default: 100000].
    #[arg(long, env = "LOUPE_MAX_RESULT_ROWS")]
    pub max_result_rows: Option<usize>,
    /// How often compaction and retention run [default: 60s].
    #[arg(long, env = "LOUPE_COMPACTION_INTERVAL")]
    pub compaction_interval: Option<String>,
    /// Size compaction aims for per file [default: 64MiB].
    #[arg(long, env = "LOUPE_COMPACTION_TARGET_SIZE")]
    pub compaction_target_size: Option<String>,
    /// Small files of one signal and hour that trigger a merge [default: 8].
    #[arg(long, env = "LOUPE_COMPACTION_MIN_FILES")]
    pub compaction_min_files: Option<usize>,
    /// Maximum age of logs [default: 7d].
    #[arg(long, env = "LOUPE_RETENTION_LOGS")]
    pub retention_logs: Option<String>,
    /// Maximum age of spans [default: 7d].
    #[arg(long, env = "LOUPE_RETENTION_SPANS")]
    pub retention_spans: Option<String>,
    /// Maximum age of metrics [default: 30d].
    #[arg(long, env = "LOUPE_RETENTION_METRICS")]
    pub retention_metrics: Option<String>,
    /// Also run a built-in simulated shop that sends telemetry to this
    /// server, cycling through incidents, so there is data to look at.
    #[arg(long)]
    pub demo: bool,
    /// Requests per second of the demo workload.
    #[arg(long, default_value_t = 20.0)]
    pub demo_rate: f64,
}

/// The same keys, read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    otlp_grpc: Option<SocketAddr>,
    otlp_http: Option<SocketAddr>,
    http: Option<SocketAddr>,
    max_request_size: Option<String>,
    request_timeout: Option<String>,
    wal_fsync: Option<String>,
    flush_interval: Option<String>,
    flush_size: Option<String>,
    max_unflushed: Option<String>,
    query_timeout: Option<String>,
    query_memory_limit: Option<String>,
    max_result_rows: Option<usize>,
    compaction_interval: Option<String>,
    compaction_target_size: Option<String>,
    compaction_min_files: Option<usize>,
    retention_logs: Option<String>,
    retention_spans: Option<String>,
    retention_metrics: Option<String>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub http: SocketAddr,
    pub max_request_bytes: usize,
    pub request_timeout: Duration,
    pub storage: StorageConfig,
    pub query: QueryConfig,
}

impl ServeArgs {
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let text = |cli: Option<String>, file: Option<String>| cli.or(file);
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./loupe-data"));
        let mut storage = StorageConfig::new(data_dir);
        if let Some(mode) = text(self.wal_fsync, file.wal_fsync) {
            storage.wal_sync = match mode.as_str() {
                "always" => SyncMode::Always,
                "never" => SyncMode::Never,
                other => bail!("wal_fsync must be `always` or `never`, not {other:?}"),
            };
        }
        if let Some(v) = text(self.flush_interval, file.flush_interval) {
            storage.flush_interval = parse_duration(&v).context("flush_interval")?;
        }
        if let Some(v) = text(self.flush_size, file.flush_size) {
            storage.flush_bytes = parse_size(&v).context("flush_size")?;
        }
        if let Some(v) = text(self.max_unflushed, file.max_unflushed) {
            storage.max_unflushed_bytes = parse_size(&v).context("max_unflushed")?;
        }
        let m = &mut storage.maintenance;
        if let Some(v) = text(self.compaction_interval, file.compaction_interval) {
            m.interval = parse_duration(&v).context("compaction_interval")?;
        }
        if let Some(v) = text(self.compaction_target_size, file.compaction_target_size) {
            m.target_bytes = parse_size(&v).context("compaction_target_size")? as u64;
        }
        if let Some(v) = self.compaction_min_files.or(file.compaction_min_files) {
            m.min_files = v.max(2);
        }
        for (i, (cli, file, name)) in [
            (self.retention_logs, file.retention_logs, "retention_logs"),
            (
                self.retention_spans,
                file.retention_spans,
                "retention_spans",
            ),
            (
                self.retention_metrics,
                file.retention_metrics,
                "retention_metrics",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(v) = text(cli, file) {
                m.retention[i] = parse_duration(&v).context(name)?;
            }
        }
        let mut query = QueryConfig::default();
        if let Some(v) = text(self.query_timeout, file.query_timeout) {
            query.timeout = parse_duration(&v).context("query_timeout")?;
        }
        if let Some(v) = text(self.query_memory_limit, file.query_memory_limit) {
            query.memory_limit = parse_size(&v).context("query_memory_limit")?;
        }
        if let Some(v) = self.max_result_rows.or(file.max_result_rows) {
            query.max_result_rows = v.max(1);
        }
        let max_request_bytes = match text(self.max_request_size, file.max_request_size) {
            Some(v) => parse_size(&v).context("max_request_size")?,
            None => 16 << 20,
        };
        let request_timeout = match text(self.request_timeout, file.request_timeout) {
            Some(v) => parse_duration(&v).context("request_timeout")?,
            None => Duration::from_secs(30),
        };
        let addr = |a: Option<SocketAddr>,
                    b: Option<SocketAddr>,
                    default: &str|
         -> anyhow::Result<SocketAddr> {
            match a.or(b) {
                Some(addr) => Ok(addr),
                None => default.parse().context("default address"),
            }
        };
        Ok(ServeConfig {
            otlp_grpc: addr(self.otlp_grpc, file.otlp_grpc, "127.0.0.1:4317")?,
            otlp_http: addr(self.otlp_http, file.otlp_http, "127.0.0.1:4318")?,
            http: addr(self.http, file.http, "127.0.0.1:7080")?,
            max_request_bytes,
            request_timeout,
            storage,
            query,
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// Splits `"15s"` into `(15.0, "s")`.
fn number_and_unit(text: &str) -> anyhow::Result<(f64, &str)> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    Ok((number.parse()?, unit.trim()))
}

/// `300ms`, `15s`, `5m`, `2h`, or a plain number of seconds — the same
/// durations the capacity API takes.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    loupe_capacity::duration_text::parse(text).map_err(anyhow::Error::msg)
}

/// `512MiB`, `16MB`, `1GiB`, `4096`, … (bytes).
pub fn parse_size(text: &str) -> anyhow::Result<usize> {
    let (n, unit) =
        number_and_unit(text).with_context(|| format!("{text:?} is not a size like 64MiB"))?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => bail!("unknown size unit {other:?} in {text:?}: use B, KiB, MiB or GiB"),
    };
    Ok((n * scale) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 fortnights").is_err());
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loupe.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\nhttp = \"127.0.0.1:9000\"\nquery_timeout = \"5s\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            http: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.http.port(), 9100);
        assert_eq!(config.storage.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.query.timeout, Duration::from_secs(5));
        assert_eq!(config.otlp_grpc.port(), 4317);
        assert_eq!(config.max_request_bytes, 16 << 20);
    }
}
