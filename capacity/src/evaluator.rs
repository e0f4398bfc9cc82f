//! The evaluation loop: every policy's `evaluation_interval`, per service
//! (or per region of it), measure the signals, run the HPA decision with
//! the schedules' floor, record the decision, and — when the count changes
//! — commit a scale task whose webhook the delivery worker sends.
//!
//! Policies, baselines and schedules are read from the catalog on every tick, so
//! API changes take effect without a restart. An evaluation that cannot
//! read any signal fails; after three failures in a row the policy's
//! fallback applies and an alert event is raised (and sent to the webhook).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::decision::{self, Measurement, Outcome, Unit, Verdict, since_epoch};
use crate::error::{CapacityError, Result};
use crate::hpa::{History, SignalReading};
use crate::load::{self, Scope, Telemetry, Window};
use crate::policy::PolicySpec;
use crate::schedule;
use crate::store::{Alert, BASELINES, CapacityStore, DecisionRow, Endpoint, NewTask, POLICIES};
pub use loupe_base::clock::now_ms;
use loupe_base::clock::rfc3339_ms as rfc3339;

/// Spans reach storage a few seconds after they end (SDK batching), so the
/// load window ends this long before now.
const INGEST_DELAY: Duration = Duration::from_secs(5);
/// How often the loop looks for due evaluations.
const TICK: Duration = Duration::from_millis(250);

/// One evaluation's subject and time, handed through its steps.
#[derive(Clone, Copy)]
struct Evaluation<'a> {
    service: &'a str,
    region: &'a str,
    policy: &'a PolicySpec,
    now_ms: i64,
}

/// Capacity planning at run time: the state, the telemetry it reads and
/// the webhook worker it wakes.
pub struct Capacity {
    pub store: Arc<CapacityStore>,
    pub telemetry: Arc<dyn Telemetry>,
    notifier: Option<loupe_notify::Worker>,
    /// Where fallbacks are also written as Loupe's own log events.
    events: Option<Arc<dyn loupe_base::telemetry_port::SelfEvents>>,
    units: Mutex<HashMap<(String, String), Unit>>,
    /// When each service was last evaluated (ms).
    last_pass: Mutex<HashMap<String, i64>>,
}

impl Capacity {
    /// Capacity over `store`, reading `telemetry`; `notifier` (when the
    /// server runs one) is woken as soon as a webhook is committed.
    pub fn new(
        store: Arc<CapacityStore>,
        telemetry: Arc<dyn Telemetry>,
        notifier: Option<loupe_notify::Worker>,
    ) -> Capacity {
        Capacity {
            store,
            telemetry,
            notifier,
            events: None,
            units: Mutex::new(HashMap::new()),
            last_pass: Mutex::new(HashMap::new()),
        }
    }

    /// Also writes each fallback as a `capacity.fallback` log event of the
    /// service `loupe`, so SQL and alert rules can see it.
    pub fn with_events(
        mut self,
        events: Arc<dyn loupe_base::telemetry_port::SelfEvents>,
    ) -> Capacity {
        self.events = Some(events);
        self
    }

    fn units(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Unit>> {
        self.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn last_pass(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.last_pass.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses a webhook URL the delivery worker's SSRF guard would refuse
    /// (a 400 naming the address, rather than failed deliveries later).
    pub async fn check_webhook_url(&self, url: &str) -> Result<(), crate::error::CapacityError> {
        match &self.notifier {
            Some(worker) => worker
                .guard()
                .check_url(url)
                .await
                .map_err(|e| crate::error::CapacityError::Invalid(format!("webhook_url: {e}"))),
            None => Ok(()),
        }
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
        for (service, policy) in self.store.list(&POLICIES).await? {
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
                        regions.extend(self.store.known_regions(&service).await?);
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

    /// One evaluation of (service, region): measure, decide (pure, see
    /// [`decision::decide`]), record. Returns the recorded decision.
    pub async fn evaluate(
        &self,
        service: &str,
        region: &str,
        policy: &PolicySpec,
        now_ms: i64,
    ) -> Result<Value> {
        let e = Evaluation {
            service,
            region,
            policy,
            now_ms,
        };
        let m = self.measure(&e).await?;
        let key = (service.to_string(), region.to_string());
        let load = m.needs_history()
            && self
                .units()
                .get(&key)
                .is_none_or(|unit| unit.history.is_none());
        let history = match load {
            true => Some(self.load_history(&e).await),
            false => None,
        };
        // From here on nothing awaits until the unit is back: it is out of
        // the map only while it is decided for.
        let mut unit = self.units().remove(&key).unwrap_or_default();
        let loaded = match (&unit.history, history) {
            (None, Some(history)) => history.map(|h| unit.history = Some(h)),
            _ => Ok(()),
        };
        let outcome = loaded.map(|()| decision::decide(service, policy, &m, &mut unit, now_ms));
        self.units().insert(key, unit);
        self.record(&e, outcome?).await
    }

    /// Reads the signals, the ready instances, the current count, the
    /// schedules' floor and any hold. Unreadable signals are noted in the
    /// measurement, not returned as errors.
    async fn measure(&self, e: &Evaluation<'_>) -> Result<Measurement> {
        let Evaluation {
            service,
            region,
            policy,
            now_ms,
        } = *e;
        let scope = Scope::of(service, region);
        let now_ns = now_ms * 1_000_000;
        let window = Window {
            end_ns: now_ns - INGEST_DELAY.as_nanos() as i64,
            length: policy.load_window,
        };
        let t = self.telemetry.as_ref();
        let ready = load::ready_instances(t, scope, now_ns, policy.instance_window).await;
        let mut m = Measurement {
            baseline: self.store.get(&BASELINES, service).await?,
            ..Measurement::default()
        };
        for signal in &policy.signals {
            let target = signal.fixed_target().or_else(|| {
                let b = m.baseline.as_ref()?;
                Some(policy.target_utilization * b.max_rps_per_instance)
            });
            let value = match target {
                None => Err(CapacityError::Unprocessable(format!(
                    "no baseline for {service}: PUT /api/v1/capacity/baselines/{service}"
                ))),
                Some(_) => load::read_signal(t, signal, scope, window).await,
            };
            let value = m.note(&signal.name(), value);
            m.readings.push(SignalReading {
                name: signal.name(),
                value,
                target: target.unwrap_or(0.0),
            });
        }
        m.ready = m.note("ready_instances", ready);
        // No instance reporting and no spans is a telemetry outage, not an
        // idle service: span-based signals count as missing, so the count
        // holds instead of falling to `min`.
        if m.ready == Some(0) {
            for (signal, i) in policy.signals.iter().zip(0..) {
                if signal.from_spans() && m.readings[i].value == Some(0.0) {
                    m.readings[i].value = None;
                    let silent = format!(
                        "no telemetry from {service} in the last {}",
                        loupe_base::duration::format(policy.instance_window)
                    );
                    m.error(&signal.name(), silent);
                }
            }
        }
        m.current = match self.store.current(service, region).await? {
            Some(n) => n,
            None => m.ready.filter(|n| *n > 0).unwrap_or(policy.min),
        };
        let schedules = self.store.schedules().await?;
        let now_utc = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        (m.floor, m.windows) = schedule::floor(&schedules, service, now_utc);
        m.hold_until_ms = self.store.hold_until(service, region, now_ms).await?;
        Ok(m)
    }

    /// The unit's HPA history, reloaded from the store after a restart.
    async fn load_history(&self, e: &Evaluation<'_>) -> Result<History> {
        let behavior = e.policy.behavior();
        let since = |d: Duration| e.now_ms - d.as_millis() as i64;
        let recs = self
            .store
            .recommendations(e.service, e.region, since(behavior.longest_stabilization()))
            .await?;
        let events = self
            .store
            .scale_events(e.service, e.region, since(behavior.longest_period()))
            .await?;
        Ok(History::restore(on_clock(recs), on_clock(events)))
    }

    /// Records what [`decision::decide`] concluded: a failure is an error;
    /// a fallback also raises an alert event (sent to the webhook).
    async fn record(&self, e: &Evaluation<'_>, outcome: Outcome) -> Result<Value> {
        let verdict = match outcome {
            Outcome::Decided(verdict) => verdict,
            Outcome::Failed { message } => {
                return Err(CapacityError::Unprocessable(format!(
                    "no signal could be read: {message}"
                )));
            }
            Outcome::FellBack { verdict, alert } => {
                tracing::warn!(service = e.service, region = e.region, "{alert}");
                let alert = Alert {
                    service: e.service,
                    region: e.region,
                    kind: "fallback",
                    message: &alert,
                    evidence: &verdict.evidence,
                };
                self.store
                    .raise_alert(&alert, &endpoint(e.policy), e.now_ms)
                    .await?;
                self.wake_worker();
                if let Some(events) = self.events.clone() {
                    let event = loupe_base::telemetry_port::SelfEvent {
                        name: "capacity.fallback".into(),
                        message: alert.message.to_string(),
                        attributes: vec![
                            ("capacity.service".into(), e.service.to_string()),
                            ("cloud.region".into(), e.region.to_string()),
                        ],
                    };
                    tokio::spawn(async move {
                        if let Err(err) = events.record(event).await {
                            tracing::warn!(error = %err, "could not store the capacity.fallback event");
                        }
                    });
                }
                verdict
            }
        };
        self.commit(e, verdict).await
    }

    /// Records a decision for (service, region) and, when it changes the
    /// count, its scale task (whose webhook the worker is woken to send).
    async fn commit(&self, e: &Evaluation<'_>, v: Verdict) -> Result<Value> {
        let (service, region) = (e.service, e.region);
        let record = json!({
            "service": service,
            "region": region,
            "time": rfc3339(e.now_ms),
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
                    reason: v.reason.as_str().into(),
                    evidence: v.evidence.clone(),
                    origin: v.origin,
                    hold_until_ms: None,
                },
                endpoint(e.policy),
            )
        });
        let row = DecisionRow {
            service,
            region,
            body: &record,
            desired: v.desired,
            replicas: v.replicas,
        };
        let created = self.store.commit_decision(&row, task, e.now_ms).await?;
        if let Some(task) = created {
            tracing::info!(service, region, from = task.spec.from, to = task.spec.to, reason = %task.spec.reason, "scale task");
            self.wake_worker();
        }
        Ok(record)
    }
}

/// (time ms, value) pairs on HPA's clock.
fn on_clock<V>(pairs: Vec<(i64, V)>) -> Vec<(Duration, V)> {
    pairs
        .into_iter()
        .map(|(at, v)| (since_epoch(at), v))
        .collect()
}

/// Where a policy's tasks and alerts go.
pub fn endpoint(policy: &PolicySpec) -> Endpoint {
    Endpoint {
        url: policy.webhook_url.clone(),
        secret: policy.webhook_secret.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{BoxFuture, Row};

    /// Answers every query with one row (both the ready count `n` and the
    /// span aggregate `v`), or fails when there is none.
    struct FakeTelemetry(Mutex<Option<Row>>);

    impl Telemetry for FakeTelemetry {
        fn rows(&self, _sql: String) -> BoxFuture<'_, std::result::Result<Vec<Row>, String>> {
            let answer = self.0.lock().unwrap().clone();
            Box::pin(async move { answer.map(|row| vec![row]).ok_or("storage down".into()) })
        }
    }

    #[tokio::test]
    async fn measures_decides_and_records_then_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let location = loupe_catalog::db::Location::Sqlite(dir.path().join("catalog.sqlite"));
        let store = Arc::new(CapacityStore::open(&location).await.unwrap());
        let baseline = serde_json::from_value(json!({"max_rps_per_instance": 1.0})).unwrap();
        store.put(&BASELINES, "cart", &baseline, 0).await.unwrap();
        let row = json!({"n": 3, "v": 600}).as_object().unwrap().clone();
        let telemetry = Arc::new(FakeTelemetry(Mutex::new(Some(row))));
        let capacity = Capacity::new(store.clone(), telemetry.clone(), None);
        let policy: PolicySpec =
            serde_json::from_value(json!({"webhook_url": "http://127.0.0.1:9/hook"})).unwrap();
        let now = 1_700_000_000_000;

        // 600 spans in 60 s = 10 rps against 0.7 per instance wants 15; from
        // the 3 ready instances the default rate allows 7.
        let record = capacity.evaluate("cart", "", &policy, now).await.unwrap();
        assert_eq!(
            (record["current"].as_u64(), record["replicas"].as_u64()),
            (Some(3), Some(7))
        );
        assert_eq!(record["reason"], "ScaleUpLimit");
        let tasks = store.tasks(Some("cart"), None, 10).await.unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].spec.origin, crate::store::TaskOrigin::Decision);

        // Telemetry down: two failures, then the fallback (keep 7) once.
        *telemetry.0.lock().unwrap() = None;
        for i in 1..=2 {
            let err = capacity
                .evaluate("cart", "", &policy, now + i * 15_000)
                .await;
            assert!(err.is_err());
        }
        let record = capacity
            .evaluate("cart", "", &policy, now + 45_000)
            .await
            .unwrap();
        assert_eq!(record["reason"], "Fallback");
        assert_eq!(record["replicas"], 7);
        let events = store.events(10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "fallback");
        assert!(
            capacity
                .evaluate("cart", "", &policy, now + 60_000)
                .await
                .is_err()
        );
    }
}
