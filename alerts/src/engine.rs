//! The alerting loop: evaluates each rule when its interval is due, moves
//! its instances through their life, then lets every receiver's groups
//! decide whether to notify. Notifications go through notify's durable
//! outbox, committed with the group state that caused them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loupe_base::clock::now_ms;
use loupe_base::telemetry_port::Telemetry;
use loupe_notify::outbox;
use tokio::sync::watch;

use crate::error::{AlertError, Result};
use crate::grouping::{self, AlertView, GroupState};
use crate::lifecycle::{self, AlertState, Timing};
use crate::receiver::{ReceiverKind, ReceiverSpec};
use crate::rule::{self, RuleSpec};
use crate::store::{AlertStore, Instance, Outgoing, RECEIVERS, RULES};

/// How long a resolved alert is kept for notifications (as Prometheus).
const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// How long one rule's SQL may run at most.
const MAX_EVALUATION: Duration = Duration::from_secs(30);

/// Problem location for an alert looks at the incident from this long
/// before the alert became active until now ...
const INCIDENT_LEAD_MS: i64 = 15 * 1000;

/// ... against the baseline of this long before that.
const SUSPECT_BASELINE_MS: i64 = 10 * 60 * 1000;

/// Finds the likely causes of what happened in a window: Loupe's problem
/// location, behind a port so this crate never links the query engine.
pub trait SuspectFinder: Send + Sync + 'static {
    /// Up to three one-sentence explanations, most likely first, for the
    /// incident `window` against `baseline` (ms), for an alert about
    /// `service` when it has one.
    fn suspects(
        &self,
        window: (i64, i64),
        baseline: (i64, i64),
        service: Option<String>,
    ) -> loupe_base::telemetry_port::BoxFuture<'_, Result<Vec<String>, String>>;
}

/// Whether a resolved alert is past the time it is kept for notifications.
fn expired(life: &lifecycle::Life, now: i64) -> bool {
    life.state == AlertState::Resolved
        && life
            .resolved_at
            .is_some_and(|t| now - t > RESOLVED_RETENTION_MS)
}

/// Alerting: rules, receivers, the evaluation loop and its API state.
pub struct Alerts {
    pub store: Arc<AlertStore>,
    pub telemetry: Arc<dyn Telemetry>,
    worker: Option<loupe_notify::Worker>,
    suspects: Option<Arc<dyn SuspectFinder>>,
    /// How long problem location may take for a newly firing alert: past
    /// it, the alert goes out without suspects rather than late.
    suspects_timeout: Duration,
    /// Loupe's own URL as people reach it, for `externalURL` and links.
    pub external_url: String,
    /// When each rule was last evaluated (ms), in this process.
    last_eval: Mutex<HashMap<String, i64>>,
}

impl Alerts {
    pub fn new(
        store: Arc<AlertStore>,
        telemetry: Arc<dyn Telemetry>,
        worker: Option<loupe_notify::Worker>,
        external_url: String,
    ) -> Alerts {
        Alerts {
            store,
            telemetry,
            worker,
            suspects: None,
            suspects_timeout: Duration::from_secs(5),
            external_url,
            last_eval: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses a receiver URL the delivery worker's SSRF guard would refuse.
    pub async fn check_url(&self, url: &str) -> Result<(), crate::error::AlertError> {
        match &self.worker {
            Some(worker) => worker
                .guard()
                .check_url(url)
                .await
                .map_err(|e| crate::error::AlertError::Invalid(format!("url: {e}"))),
            None => Ok(()),
        }
    }

    /// Attaches problem location: firing alerts of rules with
    /// `attach_suspects` then carry the top suspects as annotations, if
    /// found within `timeout`.
    pub fn with_suspects(mut self, finder: Arc<dyn SuspectFinder>, timeout: Duration) -> Alerts {
        self.suspects = Some(finder);
        self.suspects_timeout = timeout;
        self
    }

    /// Evaluates and notifies until `stop` turns true.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.pass(now_ms()).await {
                tracing::warn!(error = %e, "alerting pass failed");
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// One pass at `now`: due rules, then notifications.
    pub async fn pass(&self, now: i64) -> Result<()> {
        for (name, rule) in self.store.list(&RULES).await? {
            let due = self
                .last_eval()
                .get(&name)
                .is_none_or(|last| now - last >= rule.every.as_millis() as i64);
            if due {
                self.last_eval().insert(name.clone(), now);
                self.evaluate(&name, &rule, now).await?;
            }
        }
        self.notify(now).await?;
        Ok(())
    }

    fn last_eval(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.last_eval.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the rule's SQL (at most [`MAX_EVALUATION`]); on failure the rule
    /// shows `error` and its alerts stay as they were until the next try.
    pub async fn evaluate(&self, name: &str, rule: &RuleSpec, now: i64) -> Result<()> {
        let started = Instant::now();
        let rows = tokio::time::timeout(MAX_EVALUATION, self.telemetry.rows(rule.sql.clone()))
            .await
            .map_err(|_| format!("evaluation took longer than {MAX_EVALUATION:?}"))
            .and_then(|r| r);
        let observed = rows.and_then(|rows| rule::observe(name, rule, &rows));
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let observed = match observed {
            Ok(o) => o,
            Err(e) => return self.store.record_error(name, now, elapsed, &e).await,
        };
        let timing = Timing {
            for_ms: rule.pending_for.as_millis() as i64,
            keep_firing_for_ms: rule.keep_firing_for.as_millis() as i64,
        };
        let mut previous: BTreeMap<String, Instance> = self
            .store
            .instances(Some(name))
            .await?
            .into_iter()
            .map(|i| (i.fingerprint.clone(), i))
            .collect();
        let mut next: Vec<Instance> = Vec::new();
        let mut changed: Vec<usize> = Vec::new();
        let mut found: HashMap<Option<String>, Vec<(String, String)>> = HashMap::new();
        for o in observed {
            let fingerprint = rule::fingerprint(&o.labels);
            let before = previous.remove(&fingerprint);
            let Some(life) = lifecycle::step(before.as_ref().map(|b| b.life), o.holds, now, timing)
            else {
                continue;
            };
            if expired(&life, now) {
                continue;
            }
            let mut annotations: BTreeMap<String, String> = rule
                .annotations
                .iter()
                .map(|(k, t)| (k.clone(), rule::expand(t, &o.labels, o.value)))
                .collect();
            let was = before.as_ref().map(|b| b.life.state);
            if was == Some(AlertState::Firing) {
                // Keep the suspects found when it started firing.
                if let Some(b) = &before {
                    for (k, v) in &b.annotations {
                        if k.starts_with("suspect_") || k == "problems_url" {
                            annotations.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
            } else if life.state == AlertState::Firing && rule.attach_suspects {
                // One search per service label per evaluation, however many
                // instances start firing together.
                let service = o.labels.get("service").cloned();
                if !found.contains_key(&service) {
                    let suspects = self
                        .find_suspects(life.active_at - INCIDENT_LEAD_MS, now, service.clone())
                        .await;
                    found.insert(service.clone(), suspects);
                }
                annotations.extend(found[&service].iter().cloned());
            }
            if was != Some(life.state) {
                changed.push(next.len());
            }
            next.push(Instance {
                rule: name.to_string(),
                fingerprint,
                labels: o.labels,
                annotations,
                value: o.value,
                life,
            });
        }
        // Instances the query no longer returned: their condition is false.
        for (_, before) in previous {
            let Some(life) = lifecycle::step(Some(before.life), false, now, timing) else {
                continue;
            };
            if expired(&life, now) {
                continue;
            }
            if life.state != before.life.state {
                changed.push(next.len());
            }
            next.push(Instance { life, ..before });
        }
        let changes: Vec<&Instance> = changed.iter().map(|&i| &next[i]).collect();
        self.store
            .record_evaluation(name, &next, &changes, now, elapsed)
            .await
    }

    /// `suspect_1` … `suspect_3` and `problems_url` for a window, or nothing
    /// when problem location is not attached, fails or takes too long.
    async fn find_suspects(
        &self,
        start_ms: i64,
        end_ms: i64,
        service: Option<String>,
    ) -> Vec<(String, String)> {
        let Some(finder) = &self.suspects else {
            return Vec::new();
        };
        let baseline = (start_ms - SUSPECT_BASELINE_MS, start_ms);
        let found = tokio::time::timeout(
            self.suspects_timeout,
            finder.suspects((start_ms, end_ms), baseline, service),
        )
        .await;
        let explanations = match found {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "problem location for an alert failed");
                return Vec::new();
            }
            Err(_) => {
                tracing::warn!(
                    "problem location for an alert took too long; sent without suspects"
                );
                return Vec::new();
            }
        };
        let mut out: Vec<(String, String)> = explanations
            .into_iter()
            .take(3)
            .enumerate()
            .map(|(i, e)| (format!("suspect_{}", i + 1), e))
            .collect();
        out.push((
            "problems_url".into(),
            format!(
                "{}/?from={}&to={}",
                self.external_url.trim_end_matches('/'),
                loupe_base::clock::rfc3339_ms(start_ms),
                loupe_base::clock::rfc3339_ms(end_ms)
            ),
        ));
        out
    }

    /// Lets every receiver's groups decide whether to notify at `now`.
    pub async fn notify(&self, now: i64) -> Result<()> {
        let rules: HashMap<String, RuleSpec> = self.store.list(&RULES).await?.into_iter().collect();
        let instances = self.store.instances(None).await?;
        let mut sent = false;
        for (receiver_name, receiver) in self.store.list(&RECEIVERS).await? {
            let mut groups: BTreeMap<String, (BTreeMap<String, String>, Vec<AlertView>)> =
                BTreeMap::new();
            for i in &instances {
                let routed = rules
                    .get(&i.rule)
                    .is_some_and(|r| r.receivers.iter().any(|n| n == &receiver_name));
                if !routed || i.life.state == AlertState::Pending {
                    continue;
                }
                let labels = grouping::group_labels(&receiver, &i.labels);
                let key = grouping::group_key(&labels);
                groups
                    .entry(key)
                    .or_insert_with(|| (labels, Vec::new()))
                    .1
                    .push(self.view(i));
            }
            let mut states = self.store.groups(&receiver_name).await?;
            for key in states.keys().cloned().collect::<Vec<_>>() {
                if !groups.contains_key(&key) {
                    self.store
                        .commit_group(&receiver_name, &key, None, None, now)
                        .await?;
                    states.remove(&key);
                }
            }
            for (key, (labels, alerts)) in groups {
                let stored = states.remove(&key);
                let is_new = stored.is_none();
                let mut state = stored.unwrap_or_else(|| GroupState {
                    first_seen_ms: now,
                    ..GroupState::default()
                });
                let before = state.clone();
                let outgoing = grouping::flush(&receiver, &mut state, &alerts, now)
                    .map(|alerts| self.message(&receiver_name, &receiver, &labels, &alerts, now))
                    .transpose()?;
                if is_new || outgoing.is_some() || state != before {
                    sent |= outgoing.is_some();
                    self.store
                        .commit_group(&receiver_name, &key, Some(&state), outgoing.as_ref(), now)
                        .await?;
                }
            }
        }
        if sent && let Some(worker) = &self.worker {
            worker.wake();
        }
        Ok(())
    }

    fn view(&self, i: &Instance) -> AlertView {
        AlertView {
            fingerprint: i.fingerprint.clone(),
            labels: i.labels.clone(),
            annotations: i.annotations.clone(),
            firing: i.life.state == AlertState::Firing,
            starts_at_ms: i.life.active_at,
            ends_at_ms: i.life.resolved_at,
            generator_url: format!(
                "{}/api/v1/alerts/rules/{}",
                self.external_url.trim_end_matches('/'),
                i.rule
            ),
        }
    }

    fn message(
        &self,
        receiver_name: &str,
        receiver: &ReceiverSpec,
        group_labels: &BTreeMap<String, String>,
        alerts: &[AlertView],
        now: i64,
    ) -> Result<Outgoing> {
        let body = match receiver.kind {
            ReceiverKind::Webhook => grouping::webhook_body(
                receiver_name,
                receiver,
                group_labels,
                alerts,
                &self.external_url,
            ),
            ReceiverKind::Alertmanager => grouping::alertmanager_body(alerts, now),
        };
        Ok(Outgoing {
            message: outbox::Message {
                id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
                url: receiver.endpoint(),
                secret: receiver.secret.clone(),
                event_type: "alert.notification".into(),
                body: serde_json::to_string(&body)
                    .map_err(|e| AlertError::Internal(e.to_string()))?,
                supersede_key: None,
            },
        })
    }
}
