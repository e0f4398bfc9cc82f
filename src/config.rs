//! Server configuration, defined once: every setting of `loupe serve` is a
//! row of the [`settings!`] table below — its name (the TOML key and, with
//! dashes, the flag), its environment variable, its type and its default,
//! written in the same grammar a user writes. Precedence: command-line flag,
//! then `LOUPE_*` variable (both through clap), then the TOML file given
//! with `--config`, then the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use loupe_notify::AllowList;
use loupe_query::QueryConfig;
use loupe_storage::{StorageConfig, SyncMode};
use serde::Deserialize;

use crate::access::{TokenList, TokenSpec};
use crate::roles::Roles;

/// A duration setting in the shared grammar (`300ms`, `15s`, `1.5h`, `7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSetting(pub Duration);

impl FromStr for DurationSetting {
    type Err = loupe_base::duration::DurationError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        loupe_base::duration::parse(text).map(DurationSetting)
    }
}

/// A byte-size setting (`64MiB`, `1GiB`, `4096`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeSetting(pub usize);

impl FromStr for SizeSetting {
    type Err = loupe_base::size::SizeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        loupe_base::size::parse(text).map(SizeSetting)
    }
}

/// Reads a TOML string through the type's `FromStr`, so the file accepts
/// exactly what the flag does.
macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(DurationSetting, SizeSetting, Roles);

/// Defines the settings struct (flags + env through clap, keys through
/// serde), the resolved struct, and the table of defaults, from one list.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident: $ty:ty = $default:literal, env $env:literal $(, arg($($extra:tt)*))?; )*) => {
        /// Every setting, each optional so that the file and the defaults
        /// can fill what the command line leaves out.
        #[derive(Debug, Default, Clone, Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $(
                #[arg(long, env = $env, $($($extra)*,)? help = concat!($($doc,)+ " [default: ", $default, "]"))]
                pub $name: Option<$ty>,
            )*
        }

        /// Every setting with a value.
        #[derive(Debug, Clone)]
        pub struct Resolved {
            $( pub $name: $ty, )*
        }

        /// `(TOML key, environment variable, default)` of every setting.
        #[cfg(test)]
        pub const DEFAULTS: &[(&str, &str, &str)] = &[$( (stringify!($name), $env, $default), )*];

        impl Settings {
            /// Fills what `self` leaves unset from `file`, then from the defaults.
            fn resolve(self, file: Settings) -> anyhow::Result<Resolved> {
                Ok(Resolved {
                    $( $name: match self.$name.or(file.$name) {
                        Some(v) => v,
                        None => $default
                            .parse()
                            .map_err(|e| anyhow::anyhow!("default of {}: {e}", stringify!($name)))?,
                    }, )*
                })
            }
        }
    };
}

settings! {
    /// Where the WAL, Parquet files and catalog live.
    data_dir: PathBuf = "./loupe-data", env "LOUPE_DATA_DIR";
    /// Where Parquet files and their indexes go: empty for the data
    /// directory, or `s3://bucket/prefix` on any S3-compatible store
    /// (credentials, region, endpoint from `AWS_*` variables).
    storage: String = "", env "LOUPE_STORAGE";
    /// The catalog: empty for the SQLite file in the data directory, or
    /// `postgres://user:password@host:port/db` shared by several nodes.
    catalog: String = "", env "LOUPE_CATALOG", arg(hide_env_values = true);
    /// Local read cache of a remote `storage` (Parquet footers, indexes).
    read_cache_size: SizeSetting = "1GiB", env "LOUPE_READ_CACHE_SIZE";
    /// Stored files no catalog row names are deleted once this old.
    orphan_grace: DurationSetting = "1h", env "LOUPE_ORPHAN_GRACE";
    /// What this node does, comma-separated: `ingest` (OTLP listeners,
    /// WAL, flushing), `query` (query APIs and UI), `compact` (competes
    /// for the maintenance lease: compaction, retention, capacity, alerts).
    role: Roles = "ingest,query,compact", env "LOUPE_ROLE";
    /// OTLP/gRPC listen address.
    otlp_grpc: SocketAddr = "127.0.0.1:4317", env "LOUPE_OTLP_GRPC";
    /// OTLP/HTTP listen address.
    otlp_http: SocketAddr = "127.0.0.1:4318", env "LOUPE_OTLP_HTTP";
    /// API and UI listen address.
    http: SocketAddr = "127.0.0.1:7080", env "LOUPE_HTTP";
    /// The host name or IP other nodes reach this one at, published with
    /// its ports in the catalog's `nodes` table; empty: the listen
    /// address, or the machine's host name when listening on `0.0.0.0`.
    advertise_host: String = "", env "LOUPE_ADVERTISE_HOST";
    /// Largest OTLP request accepted, after decompression too.
    max_request_size: SizeSetting = "16MiB", env "LOUPE_MAX_REQUEST_SIZE";
    /// Time limit for one OTLP request, body upload included.
    request_timeout: DurationSetting = "30s", env "LOUPE_REQUEST_TIMEOUT";
    /// Records timed further ahead than this are rejected (as are records
    /// older than their signal's retention).
    accept_future: DurationSetting = "1h", env "LOUPE_ACCEPT_FUTURE";
    /// `always` (fsync before acknowledging) or `never` (leave it to the OS).
    wal_fsync: SyncMode = "always", env "LOUPE_WAL_FSYNC";
    /// Flush a signal to Parquet once its oldest unflushed data is this old.
    flush_interval: DurationSetting = "60s", env "LOUPE_FLUSH_INTERVAL";
    /// …or once it holds this much data.
    flush_size: SizeSetting = "64MiB", env "LOUPE_FLUSH_SIZE";
    /// Memory the server keeps within: unflushed data, requests in
    /// flight, queries and caches each get a share of it, and ingest
    /// beyond the ingest shares is refused with 429 / RESOURCE_EXHAUSTED.
    memory_budget: SizeSetting = "1GiB", env "LOUPE_MEMORY_BUDGET";
    /// Files one flush of a signal writes at most (one per hour of data);
    /// the rest waits for the next flush.
    flush_max_files: usize = "64", env "LOUPE_FLUSH_MAX_FILES";
    /// Time limit for one SQL query.
    query_timeout: DurationSetting = "30s", env "LOUPE_QUERY_TIMEOUT";
    /// Memory all running SQL queries may use together (0: an eighth of
    /// `memory_budget`).
    query_memory_limit: SizeSetting = "0", env "LOUPE_QUERY_MEMORY_LIMIT";
    /// Bytes of Parquet one partition of a distributed query's scan reads
    /// before the query is spread over another node (PostgreSQL catalog).
    distributed_partition_size: SizeSetting = "16MiB", env "LOUPE_DISTRIBUTED_PARTITION_SIZE";
    /// Rows one SQL response returns at most.
    max_result_rows: usize = "100000", env "LOUPE_MAX_RESULT_ROWS";
    /// Bytes of rows one SQL response holds at most (before encoding).
    max_result_size: SizeSetting = "64MiB", env "LOUPE_MAX_RESULT_SIZE";
    /// How often compaction and retention run.
    compaction_interval: DurationSetting = "60s", env "LOUPE_COMPACTION_INTERVAL";
    /// Size compaction aims for per file.
    compaction_target_size: SizeSetting = "64MiB", env "LOUPE_COMPACTION_TARGET_SIZE";
    /// Small files of one signal and hour that trigger a merge (at least 2).
    compaction_min_files: usize = "8", env "LOUPE_COMPACTION_MIN_FILES";
    /// Maximum age of logs.
    retention_logs: DurationSetting = "7d", env "LOUPE_RETENTION_LOGS";
    /// Maximum age of spans.
    retention_spans: DurationSetting = "7d", env "LOUPE_RETENTION_SPANS";
    /// Maximum age of metrics.
    retention_metrics: DurationSetting = "30d", env "LOUPE_RETENTION_METRICS";
    /// How long problem location may take for a newly firing alert; past
    /// it the notification goes out without suspects rather than late.
    alert_suspects_timeout: DurationSetting = "5s", env "LOUPE_ALERT_SUSPECTS_TIMEOUT";
    /// PEM certificates trusted for https:// webhook and alert receivers,
    /// besides the system's (empty: the system's only).
    webhook_ca_file: PathBuf = "", env "LOUPE_WEBHOOK_CA_FILE";
    /// Internal addresses and networks webhooks and alert receivers may
    /// reach (comma-separated IPs or CIDRs, e.g. `10.1.0.0/16,127.0.0.1`);
    /// loopback, link-local and private addresses are refused otherwise.
    webhook_allow: AllowList = "", env "LOUPE_WEBHOOK_ALLOW";
    /// Access tokens, `SCOPE:SECRET` comma-separated (scopes: ingest,
    /// query, admin); `--token` adds one at a time.
    tokens: TokenList = "", env "LOUPE_TOKENS", arg(hide_env_values = true);
    /// Listen beyond loopback without any token (only behind something
    /// that authenticates requests itself).
    insecure_no_auth: bool = "false", env "LOUPE_INSECURE_NO_AUTH", arg(num_args = 0..=1, default_missing_value = "true");
    /// PEM certificate chain: serve TLS on every listener (with `tls_key`).
    tls_cert: PathBuf = "", env "LOUPE_TLS_CERT";
    /// PEM private key of `tls_cert`.
    tls_key: PathBuf = "", env "LOUPE_TLS_KEY";
    /// A client must send a request's headers (or finish the TLS
    /// handshake) within this time, or the connection is closed.
    header_timeout: DurationSetting = "30s", env "LOUPE_HEADER_TIMEOUT";
    /// Open connections per listener at most; more are closed at once.
    max_connections: usize = "1024", env "LOUPE_MAX_CONNECTIONS";
    /// Concurrent HTTP/2 streams per connection at most.
    http2_max_streams: u32 = "256", env "LOUPE_HTTP2_MAX_STREAMS";
    /// HTTP/2 keepalive: ping an idle connection this often and close it
    /// when the ping is not answered within the same time.
    http2_keepalive: DurationSetting = "30s", env "LOUPE_HTTP2_KEEPALIVE";
    /// OTLP requests per second each token may send (0: no limit); more
    /// are answered 429 / RESOURCE_EXHAUSTED with a retry hint.
    ingest_rate_limit: f64 = "0", env "LOUPE_INGEST_RATE_LIMIT";
}

/// Flags of `loupe serve`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (keys as the long flags, with underscores).
    #[arg(long, env = "LOUPE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
    /// Also run a built-in simulated shop that sends telemetry to this
    /// server, cycling through incidents, so there is data to look at.
    #[arg(long)]
    pub demo: bool,
    /// Requests per second of the demo workload.
    #[arg(long, default_value_t = 20.0)]
    pub demo_rate: f64,
    /// An access token, `SCOPE:SECRET` (repeatable; replaces
    /// `LOUPE_TOKENS` and the file's `tokens` when given).
    #[arg(long = "token", value_name = "SCOPE:SECRET")]
    pub token: Vec<TokenSpec>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub roles: Roles,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub http: SocketAddr,
    /// See [`crate::advertise`].
    pub advertise_host: String,
    pub max_request_bytes: usize,
    /// Working memory OTLP requests being decoded and written may hold
    /// together (a share of the memory budget).
    pub ingest_in_flight_bytes: usize,
    pub request_timeout: Duration,
    /// How far ahead of now a record's time may be.
    pub accept_future: Duration,
    pub storage: StorageConfig,
    pub query: QueryConfig,
    pub webhook_ca_file: Option<PathBuf>,
    pub webhook_allow: AllowList,
    pub alert_suspects_timeout: Duration,
    pub access: AccessConfig,
    pub listen: ListenConfig,
}

/// Who may connect and what they may do.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub tokens: Vec<TokenSpec>,
    pub insecure_no_auth: bool,
    /// Requests per second per token on the OTLP listeners (0: no limit).
    pub ingest_rate_limit: f64,
}

/// How every listener treats connections.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// `(certificate chain, key)` PEM files: TLS on every listener.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub http2_max_streams: u32,
    pub http2_keepalive: Duration,
}

impl ServeArgs {
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => Settings::default(),
        };
        let mut s = self.settings.resolve(file)?;
        if !self.token.is_empty() {
            s.tokens = TokenList(self.token);
        }
        let tls = match (
            s.tls_cert.as_os_str().is_empty(),
            s.tls_key.as_os_str().is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some((s.tls_cert.clone(), s.tls_key.clone())),
            _ => anyhow::bail!("TLS needs both tls_cert and tls_key (--tls-cert, --tls-key)"),
        };
        if !(s.ingest_rate_limit >= 0.0 && s.ingest_rate_limit.is_finite()) {
            anyhow::bail!("ingest_rate_limit must be a number ≥ 0");
        }
        let mut storage = StorageConfig::new(s.data_dir);
        storage.storage_url = s.storage;
        storage.catalog_url = s.catalog;
        storage.read_cache_bytes = s.read_cache_size.0 as u64;
        storage.may_maintain = s.role.compact;
        storage.maintenance.orphan_grace = s.orphan_grace.0;
        storage.wal_sync = s.wal_fsync;
        storage.flush_interval = s.flush_interval.0;
        storage.flush_bytes = s.flush_size.0;
        let shares = MemoryShares::of(s.memory_budget.0);
        storage.max_unflushed_bytes = shares.unflushed;
        storage.log_index_cache_bytes = shares.caches;
        storage.maintenance.memory_limit = shares.compaction;
        storage.max_files_per_flush = s.flush_max_files.max(1);
        let m = &mut storage.maintenance;
        m.interval = s.compaction_interval.0;
        m.target_bytes = s.compaction_target_size.0 as u64;
        m.min_files = s.compaction_min_files.max(2);
        m.retention = [
            s.retention_logs.0,
            s.retention_spans.0,
            s.retention_metrics.0,
        ];
        let query = QueryConfig {
            timeout: s.query_timeout.0,
            memory_limit: match s.query_memory_limit.0 {
                0 => shares.queries,
                set => set,
            },
            max_result_rows: s.max_result_rows.max(1),
            max_result_bytes: s.max_result_size.0.max(1),
            metadata_cache_bytes: shares.caches,
            distributed_partition_bytes: s.distributed_partition_size.0.max(1),
            ..QueryConfig::default()
        };
        Ok(ServeConfig {
            roles: s.role,
            otlp_grpc: s.otlp_grpc,
            otlp_http: s.otlp_http,
            http: s.http,
            advertise_host: s.advertise_host,
            max_request_bytes: s.max_request_size.0,
            ingest_in_flight_bytes: shares.in_flight,
            request_timeout: s.request_timeout.0,
            accept_future: s.accept_future.0,
            storage,
            query,
            webhook_ca_file: (!s.webhook_ca_file.as_os_str().is_empty())
                .then_some(s.webhook_ca_file),
            webhook_allow: s.webhook_allow,
            alert_suspects_timeout: s.alert_suspects_timeout.0,
            access: AccessConfig {
                tokens: s.tokens.0,
                insecure_no_auth: s.insecure_no_auth,
                ingest_rate_limit: s.ingest_rate_limit,
            },
            listen: ListenConfig {
                tls,
                header_timeout: s.header_timeout.0,
                max_connections: s.max_connections.max(1),
                http2_max_streams: s.http2_max_streams.max(1),
                http2_keepalive: s.http2_keepalive.0,
            },
        })
    }
}

/// How the memory budget is divided. What is not handed out here is left
/// for what has no limit of its own: flush encoding, the trace-index
/// cache, buffers of connections, the program itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryShares {
    /// Accepted data not yet in Parquet (memtables and the WAL queue):
    /// an eighth. Every signal is flushed once half of it is used; encoding
    /// a flush takes about as much again.
    pub unflushed: usize,
    /// Requests being decoded, converted and written: a sixteenth.
    pub in_flight: usize,
    /// SQL operators of all running queries: an eighth.
    pub queries: usize,
    /// Loaded full-text indexes, and (as much again) Parquet metadata:
    /// a sixteenth each.
    pub caches: usize,
    /// The running merge of compaction (the files it reads, the file it
    /// writes and that file's index): a quarter, so a merge at the default
    /// budget can still write files of the default target size.
    pub compaction: usize,
}

impl MemoryShares {
    pub fn of(budget: usize) -> MemoryShares {
        MemoryShares {
            unflushed: budget / 8,
            in_flight: budget / 16,
            queries: budget / 8,
            caches: budget / 16,
            compaction: budget / 4,
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// A duration flag of `loupe gen` and other subcommands, in the shared grammar.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    Ok(loupe_base::duration::parse(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loupe.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\nhttp = \"127.0.0.1:9000\"\nquery_timeout = \"1.5h\"\nwal_fsync = \"never\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            settings: Settings {
                http: Some("127.0.0.1:9100".parse().unwrap()),
                ..Default::default()
            },
            ..Default::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.http.port(), 9100);
        assert_eq!(config.storage.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.query.timeout, Duration::from_secs(5400));
        assert_eq!(config.storage.wal_sync, SyncMode::Never);
        assert_eq!(config.otlp_grpc.port(), 4317);
        assert_eq!(config.max_request_bytes, 16 << 20);
        // The default 1 GiB budget, shared out.
        assert_eq!(config.storage.max_unflushed_bytes, 128 << 20);
        assert_eq!(config.ingest_in_flight_bytes, 64 << 20);
        assert_eq!(config.query.memory_limit, 128 << 20);
        assert_eq!(config.storage.log_index_cache_bytes, 64 << 20);
        assert_eq!(config.query.metadata_cache_bytes, 64 << 20);
        assert_eq!(
            config.storage.maintenance.retention[2],
            Duration::from_secs(30 * 86400)
        );
    }

    #[test]
    fn access_settings_come_from_the_file_and_flags_replace_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loupe.toml");
        std::fs::write(
            &path,
            "tokens = [\"ingest:ingest-secret-0001\", \"query:query-secret-00001\"]\n\
             webhook_allow = \"10.0.0.0/8, 127.0.0.1\"\ninsecure_no_auth = true\n\
             tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\ningest_rate_limit = 50\n",
        )
        .unwrap();
        let args = |token: Vec<TokenSpec>| ServeArgs {
            config: Some(path.clone()),
            token,
            ..Default::default()
        };
        let config = args(Vec::new()).resolve().unwrap();
        let scopes: Vec<_> = config.access.tokens.iter().map(|t| t.scope).collect();
        assert_eq!(
            scopes,
            [crate::access::Scope::Ingest, crate::access::Scope::Query]
        );
        assert!(config.access.insecure_no_auth);
        assert_eq!(config.access.ingest_rate_limit, 50.0);
        assert_eq!(
            config.webhook_allow,
            "10.0.0.0/8,127.0.0.1".parse().unwrap()
        );
        assert!(config.listen.tls.is_some());
        let flag: TokenSpec = "admin:admin-secret-00001".parse().unwrap();
        let config = args(vec![flag.clone()]).resolve().unwrap();
        assert_eq!(config.access.tokens, [flag]);
        // A certificate without its key is refused, as is a short secret.
        std::fs::write(&path, "tls_cert = \"/c.pem\"\n").unwrap();
        assert!(args(Vec::new()).resolve().is_err());
        std::fs::write(&path, "tokens = \"admin:short\"\n").unwrap();
        assert!(args(Vec::new()).resolve().is_err());
    }

    #[test]
    fn the_budget_is_shared_out_and_an_explicit_query_limit_wins() {
        let args = |settings| ServeArgs {
            settings,
            ..Default::default()
        };
        let config = args(Settings {
            memory_budget: Some("256MiB".parse().unwrap()),
            ..Default::default()
        })
        .resolve()
        .unwrap();
        assert_eq!(config.storage.max_unflushed_bytes, 32 << 20);
        assert_eq!(config.ingest_in_flight_bytes, 16 << 20);
        assert_eq!(config.query.memory_limit, 32 << 20);
        let shares = MemoryShares::of(256 << 20);
        assert_eq!(config.storage.maintenance.memory_limit, 64 << 20);
        let handed_out = shares.unflushed
            + shares.in_flight
            + shares.queries
            + 2 * shares.caches
            + shares.compaction;
        assert!(handed_out < 256 << 20);
        let config = args(Settings {
            query_memory_limit: Some("1MiB".parse().unwrap()),
            ..Default::default()
        })
        .resolve()
        .unwrap();
        assert_eq!(config.query.memory_limit, 1 << 20);
    }

    #[test]
    fn roles_default_to_all_and_come_from_the_file() {
        let config = ServeArgs::default().resolve().unwrap();
        assert_eq!(config.roles, Roles::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loupe.toml");
        std::fs::write(&path, "role = \"compact, query\"\n").unwrap();
        let args = |role: Option<Roles>| ServeArgs {
            config: Some(path.clone()),
            settings: Settings {
                role,
                ..Default::default()
            },
            ..Default::default()
        };
        let roles = args(None).resolve().unwrap().roles;
        assert_eq!(roles.to_string(), "query,compact");
        let flag = "ingest".parse().unwrap();
        let config = args(Some(flag)).resolve().unwrap();
        assert_eq!(config.roles, flag);
        assert!(
            !config.storage.may_maintain,
            "no compact role: no compaction"
        );
        std::fs::write(&path, "role = \"leader\"\n").unwrap();
        assert!(args(None).resolve().is_err());
    }

    #[test]
    fn the_file_is_checked_like_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "wal_fsync = \"sometimes\"",
            "flush_interval = \"soon\"",
            "flush_size = \"lots\"",
            "no_such_key = 1",
        ] {
            let path = dir.path().join("bad.toml");
            std::fs::write(&path, bad).unwrap();
            let args = ServeArgs {
                config: Some(path),
                ..Default::default()
            };
            assert!(args.resolve().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn every_default_parses_and_the_readme_agrees() {
        Settings::default()
            .resolve(Settings::default())
            .expect("defaults parse");
        let readme = include_str!("../README.md");
        let mut checked = 0;
        for line in readme.lines().filter(|l| l.starts_with("| `--")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | `--a` / `--b` | `LOUPE_A` / `LOUPE_B` | `x` / `y` |
            let flags: Vec<&str> = cells[1].split(" / ").collect();
            let defaults: Vec<&str> = cells[3].split(" / ").collect();
            for (flag, default) in flags.iter().zip(&defaults) {
                let key = flag
                    .trim_matches('`')
                    .trim_start_matches("--")
                    .replace('-', "_");
                let default = default.split('`').nth(1).unwrap_or(default);
                let (_, _, ours) = DEFAULTS
                    .iter()
                    .find(|(k, _, _)| *k == key)
                    .unwrap_or_else(|| panic!("README lists unknown setting {key}"));
                assert_eq!(*ours, default, "README default of {key}");
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} README defaults found");
    }
}
