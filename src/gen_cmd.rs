//! `loupe gen`: command-line front of the `loupe-gen` workload generator.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Args;
use loupe_gen::{GenConfig, Protocol, Report, Scenario};

use crate::config::parse_duration;

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Receiver base URL [default: http://127.0.0.1:4317 for grpc, :4318 for http]; `null` encodes and discards.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// grpc, http-protobuf or http-json.
    #[arg(long, default_value = "grpc")]
    pub protocol: Protocol,
    /// Compress requests with gzip.
    #[arg(long)]
    pub gzip: bool,
    /// User requests (traces) per second, e.g. `200` or `200/s`.
    #[arg(long, default_value = "50")]
    pub rate: String,
    /// Stop after this long (e.g. `30s`, `5m`); runs until Ctrl-C if absent. A run that cannot keep its rate stops at most 1 s later.
    #[arg(long)]
    pub duration: Option<String>,
    /// steady, db-slow, payment-errors, bad-deploy, traffic-spike, load-test-ramp or demo.
    #[arg(long, default_value = "steady")]
    pub scenario: Scenario,
    /// Same seed, same ids and values (timestamps aside).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Export requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Traces per export request.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// When the fault starts [default: a third of --duration, or 2m].
    #[arg(long)]
    pub fault_at: Option<String>,
    /// How long the traffic spike lasts.
    #[arg(long, default_value = "30s")]
    pub spike_duration: String,
    /// How often each instance exports metrics.
    #[arg(long, default_value = "10s")]
    pub metrics_interval: String,
    /// Write the scenario's ground truth as JSON to this file.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// load-test-ramp: the target instance's real capacity in requests/s.
    #[arg(long, default_value_t = 200.0)]
    pub capacity: f64,
    /// load-test-ramp: how long each concurrency step lasts.
    #[arg(long, default_value = "10s")]
    pub step_duration: String,
    /// Signals to send: any of traces, logs, metrics (comma-separated), or all.
    #[arg(long, default_value = "all")]
    pub signals: loupe_gen::Signals,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Access token (ingest scope) when the server asks for one.
    #[arg(long, env = "LOUPE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl GenArgs {
    pub fn config(&self) -> anyhow::Result<GenConfig> {
        let rate: f64 = self.rate.trim_end_matches("/s").parse().with_context(|| {
            format!(
                "--rate {:?} is not a number of requests per second",
                self.rate
            )
        })?;
        let endpoint = self
            .endpoint
            .clone()
            .unwrap_or_else(|| match self.protocol {
                Protocol::Grpc => "http://127.0.0.1:4317".into(),
                _ => "http://127.0.0.1:4318".into(),
            });
        Ok(GenConfig {
            endpoint,
            protocol: self.protocol,
            gzip: self.gzip,
            rate,
            duration: self.duration.as_deref().map(parse_duration).transpose()?,
            scenario: self.scenario,
            seed: self.seed,
            concurrency: self.concurrency,
            batch: self.batch,
            fault_at: self
                .fault_at
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .map(|d| d.as_secs_f64()),
            spike_secs: parse_duration(&self.spike_duration)?.as_secs_f64(),
            metrics_interval: parse_duration(&self.metrics_interval)?,
            truth: self.truth.clone(),
            capacity_rps: self.capacity,
            step_secs: parse_duration(&self.step_duration)?.as_secs_f64(),
            progress: !self.quiet,
            signals: self.signals,
            token: self.token.clone(),
        })
    }
}

pub async fn run(args: GenArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    let terminated = crate::serve::termination()?;
    tokio::spawn(async move {
        terminated.await;
        on_signal.store(true, Ordering::Relaxed);
    });
    let report = loupe_gen::run(config, stop).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    if report.errors > 0 {
        anyhow::bail!(
            "{} export request(s) failed; first error: {}",
            report.errors,
            report.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "{} for {:.1}s: {} traces ({:.0}/s, target {:.0}/s), {} spans ({:.0}/s), {} logs ({:.0}/s), {} data points",
        r.scenario,
        r.elapsed_secs,
        r.traces,
        r.traces_per_sec,
        r.target_rate,
        r.spans,
        r.spans_per_sec,
        r.logs,
        r.logs_per_sec,
        r.data_points
    );
    println!(
        "{} requests, {} errors, {} retries, {:.1} MB; ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.requests,
        r.errors,
        r.retries,
        r.bytes as f64 / 1e6,
        r.ack_latency.p50_ms,
        r.ack_latency.p99_ms,
        r.ack_latency.max_ms
    );
}
