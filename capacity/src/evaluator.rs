//! The evaluation loop: every policy's `evaluation_interval`, per service
//! (or per region of it), measure the signals, run the HPA decision with
//! the schedules' floor, record the decision, and — when the count changes
//! — commit a scale task whose webhook the delivery worker sends.
//!
//! Policies, baselines and schedules are read from SQLite on every tick, so
//! API changes take effect without a restart. An evaluation that cannot
//! read any signal fails; after three failures in a row the policy's
//! fallback applies and an alert event is raised (and sent to the webhook).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::error::{CapacityError, Result};
use crate::hpa::{self, History, SignalReading};
use crate::load::{self, Scope, Telemetry, Window};
use crate::policy::{Fallback, PolicySpec, SignalSpec};
use crate::schedule;
use crate::store::{CapacityStore, Endpoint, NewTask};
pub use loupe_base::clock::now_ms;
use loupe_base::clock::rfc3339_ms as rfc3339;

/// Spans reach storage a few seconds after they end (SDK batching), so the
/// load window ends this long before now.
const INGEST_DELAY: Duration = Duration::from_secs(5);
/// Consecutive failed evaluations before the fallback applies.
const FAILURES_BEFORE_FALLBACK: u32 = 3;
/// How often the loop looks for due evaluations.
const TICK: Duration = Duration::from_millis(250);

/// What the loop remembers per (service, region) between evaluations.
#[derive(Default)]
struct Unit {
    history: Option<History>,
    failures: u32,
    in_fallback: bool,
}

/// What an evaluation concluded, before it is recorded.
struct Verdict {
    current: u32,
    desired: u32,
    replicas: u32,
    reason: String,
    evidence: Value,
    /// `decision` or `fallback`: where a resulting task came from.
    origin: &'static str,
}

/// Capacity planning at run time: the state, the telemetry it reads and
/// the webhook worker it wakes.
pub struct Capacity {
    pub store: Arc<CapacityStore>,
    pub telemetry: Arc<dyn Telemetry>,
    notifier: Option<loupe_notify::Worker>,
    units: Mutex<HashMap<(String, String), Unit>>,
    /// When each service was last evaluated (ms).
    last_pass: Mutex<HashMap<String, i64>>,
}

fn since_epoch(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

impl Capacity {
    pub fn new(
        store: Arc<CapacityStore>,
        telemetry: Arc<dyn Telemetry>,
        notifier: Option<loupe_notify::Worker>,
    ) -> Capacity {
        Capacity {
            store,
            telemetry,
            notifier,
            units: Mutex::new(HashMap::new()),
            last_pass: Mutex::new(HashMap::new()),
        }
    }

    fn units(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Unit>> {
        self.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn last_pass(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.last_pass.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the worker a webhook is waiting.
    pub fn wake_worker(&self) {
        if let Some(worker) = &self.notifier {
            worker.wake();
        }
    }

    /// Forgets the in-memory history of a unit so the next evaluation
    /// reloads it from the store (after a manual task changed the count).
    pub fn forget(&self, service: &str, region: &str) {
        if let Some(unit) = self
            .units()
            .get_mut(&(service.to_string(), region.to_string()))
        {
            unit.history = None;
        }
    }

    /// Evaluates whatever is due until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.evaluate_due(now_ms()).await {
                tracing::warn!(error = %e, "capacity evaluation pass failed");
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Evaluates every policy whose interval has passed at `now_ms`.
    pub async fn evaluate_due(&self, now_ms: i64) -> Result<()> {
        for (service, policy) in self.store.policies()? {
            // Due per service, before any query: regions are listed (and
            // evaluated) once per interval, not on every tick.
            let due = self
                .last_pass()
                .get(&service)
                .is_none_or(|last| now_ms - last >= policy.evaluation_interval.as_millis() as i64);
            if !due {
                continue;
            }
            self.last_pass().insert(service.clone(), now_ms);
            let regions = if policy.split_by_region {
                let window = Window {
                    end_ns: now_ms * 1_000_000,
                    length: policy.load_window,
                };
                match load::regions(self.telemetry.as_ref(), &service, window).await {
                    Ok(mut regions) => {
                        // Regions that went quiet are still decided for.
                        regions.extend(self.store.known_regions(&service)?);
                        regions.sort();
                        regions.dedup();
                        regions
                    }
                    Err(e) => {
                        tracing::warn!(service, error = %e, "cannot list regions; skipping");
                        continue;
                    }
                }
            } else {
                vec![String::new()]
            };
            for region in regions {
                if let Err(e) = self.evaluate(&service, &region, &policy, now_ms).await {
                    tracing::warn!(service, region, error = %e, "capacity evaluation failed");
                }
            }
        }
        Ok(())
    }

    /// One evaluation of (service, region); returns the recorded decision.
    pub async fn evaluate(
        &self,
        service: &str,
        region: &str,
        policy: &PolicySpec,
        now_ms: i64,
    ) -> Result<Value> {
        let scope = Scope {
            service,
            region: (!region.is_empty()).then_some(region),
        };
        let now_ns = now_ms * 1_000_000;
        let window = Window {
            end_ns: now_ns - INGEST_DELAY.as_nanos() as i64,
            length: policy.load_window,
        };
        let t = self.telemetry.as_ref();
        let ready = load::ready_instances(t, scope, now_ns, policy.instance_window).await;
        let baseline = self.store.baseline(service)?;
        let mut readings = Vec::new();
        let mut errors = Vec::new();
        for signal in &policy.signals {
            let target = match signal {
                SignalSpec::Rps { .. } => baseline
                    .as_ref()
                    .map(|b| policy.target_utilization * b.max_rps_per_instance),
                SignalSpec::Cpu { target, .. }
                | SignalSpec::Concurrency { target }
                | SignalSpec::Sql { target, .. } => Some(*target),
            };
            let value = match target {
                None => Err(CapacityError::Unprocessable(format!(
                    "no baseline for {service}: PUT /api/v1/capacity/baselines/{service}"
                ))),
                Some(_) => load::read_signal(t, signal, scope, window).await,
            };
            let value = match value {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(json!({"signal": signal.name(), "error": e.to_string()}));
                    None
                }
            };
            readings.push(SignalReading {
                name: signal.name(),
                value,
                target: target.unwrap_or(0.0),
            });
        }
        let ready = match ready {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(json!({"signal": "ready_instances", "error": e.to_string()}));
                None
            }
        };
        // No instance reporting and no spans is a telemetry outage, not an
        // idle service: span-based signals count as missing, so the count
        // holds instead of falling to `min`.
        if ready == Some(0) {
            for (signal, reading) in policy.signals.iter().zip(&mut readings) {
                let from_spans = matches!(
                    signal,
                    SignalSpec::Rps {
                        source: crate::policy::RateSource::Spans
                    } | SignalSpec::Concurrency { .. }
                );
                if from_spans && reading.value == Some(0.0) {
                    reading.value = None;
                    errors.push(json!({"signal": signal.name(), "error": format!(
                        "no telemetry from {service} in the last {}",
                        loupe_base::duration::format(policy.instance_window)
                    )}));
                }
            }
        }
        let key = (service.to_string(), region.to_string());
        let current = match self.store.current(service, region)? {
            Some(n) => n,
            None => ready.filter(|n| *n > 0).unwrap_or(policy.min),
        };
        let schedules = self.store.schedules()?;
        let now_utc = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        let (floor, windows) = schedule::floor(&schedules, service, now_utc);
        let hold = self.store.hold_until(service, region, now_ms)?;
        // With no signal readable the evaluation failed — but a scheduled
        // window above the current count still applies (it needs no
        // metrics), and an operator's hold is never overridden by fallback.
        if readings.iter().all(|r| r.value.is_none()) && floor <= current && hold.is_none() {
            return self
                .failed(service, region, policy, current, ready, errors, now_ms)
                .await;
        }
        if readings.iter().any(|r| r.value.is_some()) {
            let mut units = self.units();
            let unit = units.entry(key.clone()).or_default();
            unit.failures = 0;
            unit.in_fallback = false;
        }
        let decision = if hold.is_some() {
            hpa::Decision {
                current,
                desired: current,
                replicas: current,
                reason: hpa::Reason::WithinTolerance,
                proposals: Vec::new(),
            }
        } else {
            let mut history = self.history(service, region, policy, now_ms)?;
            let d = hpa::decide(
                current,
                &readings,
                floor,
                &policy.limits(),
                &policy.behavior(),
                &mut history,
                since_epoch(now_ms),
            );
            self.units().entry(key.clone()).or_default().history = Some(history);
            d
        };
        let reason = if hold.is_some() {
            "ManualOverride".to_string()
        } else {
            format!("{:?}", decision.reason)
        };
        let signals: Vec<Value> = decision
            .proposals
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "value": p.value,
                    "target_per_instance": p.target,
                    "ratio": p.ratio,
                    "proposal": p.replicas,
                })
            })
            .collect();
        let evidence = json!({
            "signals": signals,
            "errors": errors,
            "ready_instances": ready,
            "baseline": baseline.as_ref().map(|b| json!({
                "max_rps_per_instance": b.max_rps_per_instance,
                "target_utilization": policy.target_utilization,
                "slo": b.slo,
            })),
            "schedule": {"floor": floor, "windows": windows},
            "hold_until": hold.map(rfc3339),
            "window": loupe_base::duration::format(policy.load_window),
        });
        self.commit(
            service,
            region,
            policy,
            Verdict {
                current,
                desired: decision.desired,
                replicas: decision.replicas,
                reason,
                evidence,
                origin: "decision",
            },
            now_ms,
        )
    }

    /// The unit's HPA history, reloaded from the store after a restart.
    fn history(
        &self,
        service: &str,
        region: &str,
        policy: &PolicySpec,
        now_ms: i64,
    ) -> Result<History> {
        let key = (service.to_string(), region.to_string());
        if let Some(h) = self.units().get_mut(&key).and_then(|u| u.history.take()) {
            return Ok(h);
        }
        let behavior = policy.behavior();
        let window = behavior.longest_stabilization();
        let period = behavior.longest_period();
        let recs = self
            .store
            .recommendations(service, region, now_ms - window.as_millis() as i64)?
            .into_iter()
            .map(|(at, r)| (since_epoch(at), r))
            .collect();
        let events = self
            .store
            .scale_events(service, region, now_ms - period.as_millis() as i64)?
            .into_iter()
            .map(|(at, change)| (since_epoch(at), change))
            .collect();
        Ok(History::restore(recs, events))
    }

    /// Counts a failed evaluation; the third in a row applies the fallback
    /// once and raises an alert event.
    #[allow(clippy::too_many_arguments)]
    async fn failed(
        &self,
        service: &str,
        region: &str,
        policy: &PolicySpec,
        current: u32,
        ready: Option<u32>,
        errors: Vec<Value>,
        now_ms: i64,
    ) -> Result<Value> {
        let failures = {
            let mut units = self.units();
            let unit = units
                .entry((service.to_string(), region.to_string()))
                .or_default();
            unit.failures += 1;
            if unit.failures < FAILURES_BEFORE_FALLBACK || unit.in_fallback {
                None
            } else {
                unit.in_fallback = true;
                Some(unit.failures)
            }
        };
        let message = errors
            .iter()
            .filter_map(|e| e["error"].as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let Some(failures) = failures else {
            return Err(CapacityError::Unprocessable(format!(
                "no signal could be read: {message}"
            )));
        };
        let (to, what) = match policy.fallback {
            Fallback::Keep => (current, format!("keeping {current} instances")),
            Fallback::Static { instances } => {
                let to = instances.clamp(policy.min, policy.max);
                (to, format!("going to the static {to} instances"))
            }
        };
        let text = format!(
            "{failures} evaluations of {service} failed in a row ({message}); fallback: {what}"
        );
        tracing::warn!(service, region, "{text}");
        let evidence =
            json!({"errors": errors, "ready_instances": ready, "fallback": policy.fallback});
        self.store.raise_alert(
            service,
            region,
            "fallback",
            &text,
            &evidence,
            &endpoint(policy),
            now_ms,
        )?;
        self.wake_worker();
        self.commit(
            service,
            region,
            policy,
            Verdict {
                current,
                desired: to,
                replicas: to,
                reason: "Fallback".into(),
                evidence,
                origin: "fallback",
            },
            now_ms,
        )
    }

    /// Records a decision for (service, region) and, when it changes the
    /// count, its scale task (whose webhook the worker is woken to send).
    fn commit(
        &self,
        service: &str,
        region: &str,
        policy: &PolicySpec,
        v: Verdict,
        now_ms: i64,
    ) -> Result<Value> {
        let record = json!({
            "service": service,
            "region": region,
            "time": rfc3339(now_ms),
            "current": v.current,
            "desired": v.desired,
            "replicas": v.replicas,
            "reason": v.reason,
            "evidence": v.evidence,
        });
        let task = (v.replicas != v.current).then(|| {
            (
                NewTask {
                    service: service.into(),
                    region: region.into(),
                    from: v.current,
                    to: v.replicas,
                    reason: v.reason.clone(),
                    evidence: v.evidence.clone(),
                    origin: v.origin,
                    hold_until_ms: None,
                },
                endpoint(policy),
            )
        });
        let created = self.store.commit_decision(
            service, region, &record, v.desired, v.replicas, task, now_ms,
        )?;
        if let Some(task) = created {
            tracing::info!(service, region, from = task.from, to = task.to, reason = %task.reason, "scale task");
            self.wake_worker();
        }
        Ok(record)
    }
}

pub fn endpoint(policy: &PolicySpec) -> Endpoint {
    Endpoint {
        url: policy.webhook_url.clone(),
        secret: policy.webhook_secret.clone(),
    }
}
