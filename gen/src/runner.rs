//! Drives a scenario: one producer generates traces at the asked rate
//! (scenario time paces it, so a seed fixes the data), a pool of senders
//! exports them concurrently, and a reporter prints progress.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Mutex, mpsc};

use crate::GenError;
use crate::load_test::LoadTest;
use crate::metrics::MetricsState;
use crate::random::Random;
use crate::scenario::{self, Plan, Scenario};
use crate::sender::{Payload, Protocol, Sender};
use crate::shop::{RequestGen, Shop};
use crate::telemetry::Pending;
use crate::topology::version_of;

/// Everything `loupe gen` can be told.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Base URL of the receiver, or `null` to encode and discard.
    pub endpoint: String,
    pub protocol: Protocol,
    pub gzip: bool,
    /// User requests (traces) per second, before scenario load factors.
    pub rate: f64,
    /// Stop after this much time; `None` runs until stopped.
    pub duration: Option<Duration>,
    pub scenario: Scenario,
    pub seed: u64,
    pub concurrency: usize,
    /// Traces per export request.
    pub batch: usize,
    /// When the fault starts, in seconds after the start.
    pub fault_at: Option<f64>,
    pub spike_secs: f64,
    pub metrics_interval: Duration,
    /// Where to write the ground truth JSON.
    pub truth: Option<PathBuf>,
    /// Load-test capacity of the target instance (requests/s) and step length.
    pub capacity_rps: f64,
    pub step_secs: f64,
    /// Print a progress line every few seconds.
    pub progress: bool,
    /// Which signals to send (all three by default).
    pub signals: Signals,
    /// Access token (ingest scope) sent as `Authorization: Bearer …`.
    pub token: Option<String>,
}

/// A subset of the three signals, e.g. only logs for a log-ingest benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signals {
    pub traces: bool,
    pub logs: bool,
    pub metrics: bool,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            traces: true,
            logs: true,
            metrics: true,
        }
    }
}

impl std::str::FromStr for Signals {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Signals {
            traces: false,
            logs: false,
            metrics: false,
        };
        for part in s.split(',').map(str::trim) {
            match part {
                "traces" | "spans" => out.traces = true,
                "logs" => out.logs = true,
                "metrics" => out.metrics = true,
                "all" => out = Signals::default(),
                other => {
                    return Err(format!(
                        "unknown signal {other:?}; use traces, logs, metrics or all"
                    ));
                }
            }
        }
        Ok(out)
    }
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: Protocol::Grpc,
            gzip: false,
            rate: 50.0,
            duration: None,
            scenario: Scenario::Steady,
            seed: 1,
            concurrency: 4,
            batch: 20,
            fault_at: None,
            spike_secs: 30.0,
            metrics_interval: Duration::from_secs(10),
            truth: None,
            capacity_rps: 200.0,
            step_secs: 10.0,
            progress: true,
            signals: Signals::default(),
            token: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What a run achieved.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub elapsed_secs: f64,
    pub target_rate: f64,
    pub traces: u64,
    pub traces_per_sec: f64,
    pub spans: u64,
    pub spans_per_sec: f64,
    pub logs: u64,
    pub logs_per_sec: f64,
    pub data_points: u64,
    /// Export requests acknowledged and failed.
    pub requests: u64,
    pub errors: u64,
    pub retries: u64,
    /// Uncompressed protobuf bytes acknowledged.
    pub bytes: u64,
    pub ack_latency: Latency,
    pub first_error: Option<String>,
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    spans: AtomicU64,
    logs: AtomicU64,
    points: AtomicU64,
    bytes: AtomicU64,
    traces: AtomicU64,
}

struct Item {
    payload: Payload,
    records: u64,
}

/// Runs until the duration (or the load test) ends or `stop` is set.
pub async fn run(config: GenConfig, stop: Arc<AtomicBool>) -> Result<Report, GenError> {
    if (config.rate.is_nan() || config.rate <= 0.0) && config.scenario != Scenario::LoadTestRamp {
        return Err(GenError::Config("--rate must be above 0".into()));
    }
    let load_test = LoadTest::new(config.capacity_rps, config.step_secs);
    let mut duration = config.duration.map(|d| d.as_secs_f64());
    if config.scenario == Scenario::LoadTestRamp {
        let ramp = load_test.duration_secs();
        duration = Some(duration.map_or(ramp, |d| d.min(ramp)));
    }
    let plan = Plan {
        scenario: config.scenario,
        fault_at: config
            .fault_at
            .unwrap_or_else(|| duration.map_or(120.0, |d| d / 3.0)),
        spike_secs: config.spike_secs,
    };
    let start_ns = loupe_base::clock::now_nanos();
    if let Some(path) = &config.truth {
        let lt = (config.scenario == Scenario::LoadTestRamp).then(|| load_test.truth(start_ns));
        let truth = plan.truth(config.seed, start_ns, lt);
        let text =
            serde_json::to_string_pretty(&truth).map_err(|e| GenError::Config(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| GenError::Config(format!("writing {}: {e}", path.display())))?;
    }

    let mut senders = Vec::new();
    for _ in 0..config.concurrency.max(1) {
        senders.push(
            Sender::connect(
                &config.endpoint,
                config.protocol,
                config.gzip,
                config.token.clone(),
            )
            .await?,
        );
    }
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel::<Item>(config.concurrency.max(1) * 2);
    let rx = Arc::new(Mutex::new(rx));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut workers = Vec::new();
    for mut sender in senders {
        let (rx, stats, first_error) = (rx.clone(), stats.clone(), first_error.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies: Vec<Duration> = Vec::new();
            loop {
                let item = { rx.lock().await.recv().await };
                let Some(item) = item else { break };
                match sender.send(&item.payload).await {
                    Ok((took, retries)) => {
                        latencies.push(took);
                        stats.requests.fetch_add(1, Ordering::Relaxed);
                        stats.retries.fetch_add(retries as u64, Ordering::Relaxed);
                        stats
                            .bytes
                            .fetch_add(item.payload.encoded_len() as u64, Ordering::Relaxed);
                        let counter = match item.payload {
                            Payload::Traces(_) => &stats.spans,
                            Payload::Logs(_) => &stats.logs,
                            Payload::Metrics(_) => &stats.points,
                        };
                        counter.fetch_add(item.records, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            }
            latencies
        }));
    }

    let started = Instant::now();
    let progress = config
        .progress
        .then(|| tokio::spawn(report_progress(stats.clone(), started)));
    produce(
        Production {
            config: &config,
            plan: &plan,
            load_test: &load_test,
            duration,
            start_ns,
            started,
            stop: &stop,
            stats: &stats,
        },
        tx,
    )
    .await;
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap_or_default());
    }
    if let Some(p) = progress {
        p.abort();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let per_sec = |n: u64| n as f64 / elapsed.max(1e-9);
    let first_error = first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(Report {
        scenario: config.scenario.name(),
        elapsed_secs: elapsed,
        target_rate: config.rate,
        traces: get(&stats.traces),
        traces_per_sec: per_sec(get(&stats.traces)),
        spans: get(&stats.spans),
        spans_per_sec: per_sec(get(&stats.spans)),
        logs: get(&stats.logs),
        logs_per_sec: per_sec(get(&stats.logs)),
        data_points: get(&stats.points),
        requests: get(&stats.requests),
        errors: get(&stats.errors),
        retries: get(&stats.retries),
        bytes: get(&stats.bytes),
        ack_latency: percentiles(&mut latencies),
        first_error,
    })
}

/// What the producing loop works from.
struct Production<'a> {
    config: &'a GenConfig,
    plan: &'a Plan,
    load_test: &'a LoadTest,
    /// Seconds to run, or until stopped.
    duration: Option<f64>,
    /// Unix ns of scenario time 0.
    start_ns: i64,
    started: Instant,
    stop: &'a AtomicBool,
    stats: &'a Stats,
}

async fn produce(production: Production<'_>, tx: mpsc::Sender<Item>) {
    let Production {
        config,
        plan,
        load_test,
        duration,
        start_ns,
        started,
        stop,
        stats,
    } = production;
    let shop = Shop::new();
    let mut rng = Random::new(config.seed);
    let mut pending = Pending::default();
    let mut metrics = MetricsState::new(shop.instances.len(), start_ns);
    let metrics_every = config.metrics_interval.as_secs_f64().max(0.1);
    let (mut t, mut next_metrics, mut last_flush, mut in_batch) =
        (0.0f64, metrics_every, 0.0f64, 0usize);
    loop {
        let elapsed = started.elapsed().as_secs_f64();
        if stop.load(Ordering::Relaxed) || duration.is_some_and(|d| over(t, elapsed, d)) {
            break;
        }
        let ahead = t - started.elapsed().as_secs_f64();
        if ahead > 0.002 {
            tokio::time::sleep(Duration::from_secs_f64(ahead)).await;
        }
        let faults = plan.faults_at(t);
        let now_ns = start_ns + (t * 1e9) as i64;
        let step = {
            let mut request = RequestGen::new(&mut rng, &shop, faults, &mut pending, &mut metrics);
            if config.scenario == Scenario::LoadTestRamp {
                match load_test.step_at(t) {
                    Some((i, n)) => {
                        request.load_test_request(now_ns, load_test, i, n);
                        1.0 / load_test.throughput(n as f64)
                    }
                    None => break,
                }
            } else {
                request.user_request(now_ns);
                1.0 / (config.rate * faults.load_factor)
            }
        };
        stats.traces.fetch_add(1, Ordering::Relaxed);
        in_batch += 1;
        let last = stop.load(Ordering::Relaxed) || duration.is_some_and(|d| t + step >= d);
        if config.signals.metrics && (t >= next_metrics || last) {
            let versions = |inst: &crate::topology::Instance| {
                if faults.bad_deploy && inst.service == scenario::BAD_DEPLOY_SERVICE {
                    scenario::BAD_VERSION.to_string()
                } else {
                    version_of(inst.service).to_string()
                }
            };
            let (request, records) =
                metrics.export(&shop.instances, now_ns, metrics_every, versions, &mut rng);
            if tx
                .send(Item {
                    payload: Payload::Metrics(request),
                    records,
                })
                .await
                .is_err()
            {
                break;
            }
            next_metrics += metrics_every;
        }
        if in_batch >= config.batch.max(1) || t - last_flush >= 0.5 {
            if !flush(&mut pending, &shop, config.signals, &tx).await {
                break;
            }
            in_batch = 0;
            last_flush = t;
        }
        t += step;
    }
    flush(&mut pending, &shop, config.signals, &tx).await;
}

/// How far the wall clock may run past a run's duration before it ends
/// the run: one merely late at the end (a busy machine) still ends on
/// scenario time, so a seed's data does not depend on load, while one
/// that cannot keep its rate at all (the receiver or this machine flat
/// out) stops at most this much later.
const LATE_GRACE_SECS: f64 = 1.0;

/// Whether a run of `duration` seconds is over at scenario time `t`,
/// `elapsed` wall seconds after it started. Scenario time paces the data;
/// the wall clock bounds the run too, in case the rate cannot be kept.
fn over(t: f64, elapsed: f64, duration: f64) -> bool {
    t >= duration || elapsed >= duration + LATE_GRACE_SECS
}

/// Hands the pending spans and logs to the senders; false once they are gone.
async fn flush(
    pending: &mut Pending,
    shop: &Shop,
    signals: Signals,
    tx: &mpsc::Sender<Item>,
) -> bool {
    let requests = pending.take_requests(&shop.instances, scenario::BAD_VERSION);
    let spans = if signals.traces {
        requests.span_count
    } else {
        0
    };
    let logs = if signals.logs { requests.log_count } else { 0 };
    if spans > 0
        && tx
            .send(Item {
                payload: Payload::Traces(requests.traces),
                records: spans,
            })
            .await
            .is_err()
    {
        return false;
    }
    logs == 0
        || tx
            .send(Item {
                payload: Payload::Logs(requests.logs),
                records: logs,
            })
            .await
            .is_ok()
}

async fn report_progress(stats: Arc<Stats>, started: Instant) {
    let mut last = (0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = (
            stats.traces.load(Ordering::Relaxed),
            stats.spans.load(Ordering::Relaxed),
            stats.logs.load(Ordering::Relaxed),
        );
        eprintln!(
            "[{:>4.0}s] {:.0} traces/s, {:.0} spans/s, {:.0} logs/s acknowledged, {} errors",
            started.elapsed().as_secs_f64(),
            (now.0 - last.0) as f64 / 5.0,
            (now.1 - last.1) as f64 / 5.0,
            (now.2 - last.2) as f64 / 5.0,
            stats.errors.load(Ordering::Relaxed),
        );
        last = now;
    }
}

fn percentiles(samples: &mut [Duration]) -> Latency {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    Latency {
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_late_at_its_end_still_ends_on_scenario_time() {
        // The last trace of a 12 s run, produced 50 ms late: still sent.
        assert!(!over(11.99, 12.04, 12.0));
        assert!(over(12.0, 12.04, 12.0));
        // A run that cannot keep its rate stops on the wall clock.
        assert!(!over(3.0, 12.5, 12.0));
        assert!(over(3.0, 13.0, 12.0));
    }
}
