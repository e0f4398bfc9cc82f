//! What the e2e tests and the benchmarks (`benches/common`, through
//! `#[path]`) both need: starting `loupe serve` on ephemeral ports, and
//! generating a fault scenario.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::Path;

/// `loupe serve` flags binding every listener to an ephemeral port; the
/// first stdout line (`loupe listening …`) then names the ports.
pub const EPHEMERAL_PORTS: [&str; 6] = [
    "--otlp-grpc",
    "127.0.0.1:0",
    "--otlp-http",
    "127.0.0.1:0",
    "--http",
    "127.0.0.1:0",
];

/// The address `key` (`otlp_grpc`, `otlp_http` or `http`) in the
/// `loupe listening …` line.
pub fn listening_addr<'a>(line: &'a str, key: &str) -> &'a str {
    listening_addr_if_any(line, key).unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// Like [`listening_addr`], for a listener the server may not have (a
/// node without the ingest role has no OTLP ones).
pub fn listening_addr_if_any<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// How long an incident's fault lasts, from the truth's
/// `fault.start_unix_nano`.
pub const FAULT_NS: i64 = 6_000_000_000;

/// `loupe gen` flags for an incident: `scenario` for 12 s at 120 requests
/// per second, the fault from 6 s on, ground truth written to `truth`.
pub fn incident_args(scenario: &str, seed: &str, truth: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--scenario",
        scenario,
        "--rate",
        "120",
        "--duration",
        "12s",
        "--fault-at",
        "6s",
        "--seed",
        seed,
        "--truth",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(truth.into());
    args
}
