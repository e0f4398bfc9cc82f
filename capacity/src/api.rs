//! The capacity HTTP API under `/api/v1/capacity/`: policies, baselines
//! (manual or from a load test), schedules, decisions, scale tasks (with
//! the executor's ack and manual tasks) and alert events.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::baseline::{self, Baseline, LoadTestRequest};
use crate::error::CapacityError;
use crate::evaluator::{Capacity, endpoint, now_ms};
use crate::load::{self, Scope, Window};
use crate::policy::PolicySpec;
use crate::schedule::Schedule;
use crate::store::{
    AckStatus, BASELINES, Bodies, NewTask, POLICIES, SCHEDULES, TaskOrigin, TaskState,
};

type Reply = Result<Response, CapacityError>;
/// The state every handler gets.
type Shared = State<Arc<Capacity>>;
/// The service, schedule name or task id in the path.
type Key = Path<String>;

/// The capacity routes, to merge into the server's API router.
pub fn router(capacity: Arc<Capacity>) -> Router {
    Router::new()
        .route("/api/v1/capacity/policies", get(list_policies))
        .route(
            "/api/v1/capacity/policies/{service}",
            get(get_policy).put(put_policy).delete(delete_policy),
        )
        .route("/api/v1/capacity/baselines", get(list_baselines))
        .route(
            "/api/v1/capacity/baselines/{service}",
            get(get_baseline).put(put_baseline).delete(delete_baseline),
        )
        .route(
            "/api/v1/capacity/baselines/{service}/from-load-test",
            post(from_load_test),
        )
        .route("/api/v1/capacity/schedules", get(list_schedules))
        .route(
            "/api/v1/capacity/schedules/{name}",
            get(get_schedule).put(put_schedule).delete(delete_schedule),
        )
        .route("/api/v1/capacity/decisions", get(decisions))
        .route("/api/v1/capacity/events", get(events))
        .route("/api/v1/capacity/tasks", get(tasks).post(manual_task))
        .route("/api/v1/capacity/tasks/{id}", get(get_task))
        .route("/api/v1/capacity/tasks/{id}/ack", post(ack_task))
        .with_state(capacity)
}

impl IntoResponse for CapacityError {
    fn into_response(self) -> Response {
        self.kind().reply(&self).into_response()
    }
}

fn ok(value: impl serde::Serialize) -> Reply {
    Ok(axum::Json(value).into_response())
}

/// Parses a JSON body, answering 400 with serde's message (which names the
/// field) rather than axum's generic rejection.
fn body<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, CapacityError> {
    serde_json::from_str(text).map_err(|e| CapacityError::Invalid(format!("bad JSON body: {e}")))
}

/// Parses a JSON body and lets `check` complete and validate it; what it
/// refuses is a 400 with its message.
fn valid<T: DeserializeOwned>(
    text: &str,
    check: impl FnOnce(&mut T) -> Result<(), String>,
) -> Result<T, CapacityError> {
    let mut value: T = body(text)?;
    check(&mut value).map_err(CapacityError::Invalid)?;
    Ok(value)
}

fn not_found(what: &str) -> CapacityError {
    CapacityError::NotFound(format!("no {what}"))
}

/// The body under `key`, or a 404 naming it.
async fn fetch<T: DeserializeOwned>(
    c: &Capacity,
    table: &Bodies<T>,
    key: &str,
) -> Result<T, CapacityError> {
    c.store
        .get(table, key)
        .await?
        .ok_or_else(|| not_found(&format!("{} {key}", table.what)))
}

/// Deletes the body under `key`: 204, or a 404 naming it.
async fn remove<T>(c: &Capacity, table: &Bodies<T>, key: &str) -> Reply {
    if !c.store.delete(table, key).await? {
        return Err(not_found(&format!("{} {key}", table.what)));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every body of a per-service table as `{"service": …, field: body}`.
async fn list_by_service<T: DeserializeOwned + Serialize>(
    c: &Capacity,
    table: &Bodies<T>,
    field: &str,
) -> Reply {
    let list: Vec<Value> = c
        .store
        .list(table)
        .await?
        .into_iter()
        .map(|(service, body)| json!({"service": service, field: body}))
        .collect();
    ok(list)
}

/// A policy as the API shows it: the webhook secret replaced by whether
/// one is set (a secret is written, never read back).
fn policy_view(policy: &PolicySpec) -> Result<Value, CapacityError> {
    let mut value =
        serde_json::to_value(policy).map_err(|e| CapacityError::Internal(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        obj.remove("webhook_secret");
        obj.insert(
            "webhook_secret_set".into(),
            Value::Bool(policy.webhook_secret.is_some()),
        );
    }
    Ok(value)
}

async fn list_policies(State(c): Shared) -> Reply {
    let mut list = Vec::new();
    for (service, policy) in c.store.list(&POLICIES).await? {
        list.push(json!({"service": service, "policy": policy_view(&policy)?}));
    }
    ok(list)
}

async fn get_policy(State(c): Shared, Path(service): Key) -> Reply {
    let policy = fetch(&c, &POLICIES, &service).await?;
    let mut value = policy_view(&policy)?;
    // A 410 from the receiver stops deliveries until the policy is saved
    // again; say so where the user looks.
    if let (Some(reason), Some(obj)) = (
        c.store.webhook_disabled(&policy.webhook_url).await?,
        value.as_object_mut(),
    ) {
        obj.insert("webhook_disabled".into(), Value::String(reason));
    }
    ok(value)
}

/// Saves the policy. Without `webhook_secret` it keeps the stored one —
/// unless the webhook URL changes, which needs the secret stated again (so
/// a secret never signs for a receiver its owner did not choose) — or, for
/// a new policy, generates one: that answer is the only time the generated
/// secret is shown. The URL must pass the SSRF guard.
async fn put_policy(State(c): Shared, Path(service): Key, text: String) -> Reply {
    let text = without_view_fields(text);
    let mut policy = valid(&text, |p: &mut PolicySpec| p.validate())?;
    c.check_webhook_url(&policy.webhook_url).await?;
    check_sql_signals(&c, &service, &policy).await?;
    let mut generated = None;
    if policy.webhook_secret.is_none() {
        match c.store.get(&POLICIES, &service).await? {
            Some(old) if old.webhook_url != policy.webhook_url && old.webhook_secret.is_some() => {
                return Err(CapacityError::Invalid(
                    "webhook_url changed: state webhook_secret again (the stored one is not sent to a new URL)".into(),
                ));
            }
            Some(old) if old.webhook_secret.is_some() => policy.webhook_secret = old.webhook_secret,
            _ => {
                let secret = loupe_notify::signing::generate_secret();
                policy.webhook_secret = Some(secret.clone());
                generated = Some(secret);
            }
        }
    }
    c.store.put_policy(&service, &policy, now_ms()).await?;
    let mut view = policy_view(&policy)?;
    if let (Some(secret), Some(obj)) = (generated, view.as_object_mut()) {
        obj.insert("generated_webhook_secret".into(), Value::String(secret));
    }
    ok(view)
}

/// A policy as the API showed it can be saved back: the fields only the
/// view has are dropped.
fn without_view_fields(text: String) -> String {
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut obj)) => {
            for key in [
                "webhook_secret_set",
                "webhook_disabled",
                "generated_webhook_secret",
            ] {
                obj.remove(key);
            }
            Value::Object(obj).to_string()
        }
        _ => text,
    }
}

/// Runs each SQL signal once, so SQL the sandbox refuses or that does not
/// parse is a 400 now rather than a failed evaluation later. (No data yet is
/// fine.)
async fn check_sql_signals(
    c: &Capacity,
    service: &str,
    policy: &PolicySpec,
) -> Result<(), CapacityError> {
    for signal in &policy.signals {
        if !matches!(signal, crate::policy::SignalSpec::Sql { .. }) {
            continue;
        }
        let scope = Scope::of(service, "");
        let window = Window {
            end_ns: now_ms() * 1_000_000,
            length: policy.load_window,
        };
        if let Err(CapacityError::Query(e)) =
            load::read_signal(c.telemetry.as_ref(), signal, scope, window).await
        {
            return Err(CapacityError::Invalid(format!(
                "signal {}: {e}",
                signal.name()
            )));
        }
    }
    Ok(())
}

async fn delete_policy(State(c): Shared, Path(service): Key) -> Reply {
    remove(&c, &POLICIES, &service).await
}

async fn list_baselines(State(c): Shared) -> Reply {
    list_by_service(&c, &BASELINES, "baseline").await
}

async fn get_baseline(State(c): Shared, Path(service): Key) -> Reply {
    ok(fetch(&c, &BASELINES, &service).await?)
}

async fn put_baseline(State(c): Shared, Path(service): Key, text: String) -> Reply {
    let baseline = valid(&text, |b: &mut Baseline| b.validate())?;
    c.store
        .put(&BASELINES, &service, &baseline, now_ms())
        .await?;
    ok(baseline)
}

async fn delete_baseline(State(c): Shared, Path(service): Key) -> Reply {
    remove(&c, &BASELINES, &service).await
}

/// A time in a request body: a JSON number of ns since the epoch, or any
/// text of the shared time grammar (RFC 3339, `now-1.5h`, `now-1w`, ns).
fn parse_time(value: &Value, now_ms: i64) -> Result<i64, String> {
    match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not a time")),
        Value::String(s) => {
            loupe_base::time_expr::parse(s, now_ms * 1_000_000).map_err(|e| e.to_string())
        }
        other => Err(format!("{other} is not a time")),
    }
}

/// Fits the load test in `[start, end)` and stores the baseline (unless
/// `"dry_run": true`).
async fn from_load_test(State(c): Shared, Path(service): Key, text: String) -> Reply {
    let mut raw: serde_json::Map<String, Value> = body(&text)?;
    let now = now_ms();
    let mut time = |key: &str| -> Result<i64, CapacityError> {
        let value = raw
            .remove(key)
            .ok_or_else(|| CapacityError::Invalid(format!("{key} is required")))?;
        parse_time(&value, now).map_err(|e| CapacityError::Invalid(format!("{key}: {e}")))
    };
    let (start_ns, end_ns) = (time("start")?, time("end")?);
    if end_ns <= start_ns {
        return Err(CapacityError::Invalid("end must be after start".into()));
    }
    let dry_run = raw
        .remove("dry_run")
        .is_some_and(|v| v.as_bool().unwrap_or(false));
    let mut req: LoadTestRequest = serde_json::from_value(Value::Object(raw))
        .map_err(|e| CapacityError::Invalid(e.to_string()))?;
    req.start_ns = start_ns;
    req.end_ns = end_ns;
    let slo = match req.slo.clone() {
        Some(slo) => slo,
        None => c
            .store
            .get(&BASELINES, &service)
            .await?
            .map(|b| b.slo)
            .unwrap_or_default(),
    };
    let steps = baseline::measure_steps(c.telemetry.as_ref(), &service, &req).await?;
    let fit = baseline::fit_steps(steps, &slo)?;
    let baseline = baseline::baseline_from_fit(&fit, slo, &req);
    baseline.validate().map_err(|e| {
        CapacityError::Unprocessable(format!("the fit gives no usable baseline: {e}"))
    })?;
    if !dry_run {
        c.store.put(&BASELINES, &service, &baseline, now).await?;
    }
    ok(json!({"service": service, "baseline": baseline, "fit": fit, "stored": !dry_run}))
}

async fn list_schedules(State(c): Shared) -> Reply {
    ok(c.store.schedules().await?)
}

async fn get_schedule(State(c): Shared, Path(name): Key) -> Reply {
    ok(fetch(&c, &SCHEDULES, &name).await?)
}

async fn put_schedule(State(c): Shared, Path(name): Key, text: String) -> Reply {
    let schedule = valid(&text, |s: &mut Schedule| {
        s.name = name;
        s.validate()
    })?;
    c.store
        .put(&SCHEDULES, &schedule.name, &schedule, now_ms())
        .await?;
    ok(schedule)
}

async fn delete_schedule(State(c): Shared, Path(name): Key) -> Reply {
    remove(&c, &SCHEDULES, &name).await
}

#[derive(Deserialize)]
struct ListParams {
    service: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
}

impl ListParams {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 10_000)
    }
}

async fn decisions(State(c): Shared, Query(p): Query<ListParams>) -> Reply {
    ok(c.store.decisions(p.service.as_deref(), p.limit()).await?)
}

async fn events(State(c): Shared, Query(p): Query<ListParams>) -> Reply {
    ok(c.store.events(p.limit()).await?)
}

async fn tasks(State(c): Shared, Query(p): Query<ListParams>) -> Reply {
    let state = match p.state.as_deref().map(TaskState::parse) {
        None => None,
        Some(Some(state)) => Some(state),
        // A state no task can be in matches none.
        Some(None) => return ok(Vec::<Value>::new()),
    };
    ok(c.store
        .tasks(p.service.as_deref(), state, p.limit())
        .await?)
}

async fn get_task(State(c): Shared, Path(id): Key) -> Reply {
    ok(c.store
        .task(&id)
        .await?
        .ok_or_else(|| not_found(&format!("task {id}")))?)
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ack {
    /// `succeeded` (default) or `failed`.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The executor's callback once it has carried out (or failed) a task.
async fn ack_task(State(c): Shared, Path(id): Key, text: String) -> Reply {
    let ack: Ack = if text.trim().is_empty() {
        Ack::default()
    } else {
        body(&text)?
    };
    let status = match ack.status.as_deref() {
        None => AckStatus::Succeeded,
        Some(text) => AckStatus::parse(text).ok_or_else(|| {
            CapacityError::Invalid(format!("status {text:?}: use succeeded or failed"))
        })?,
    };
    let task = c
        .store
        .ack_task(&id, status, ack.message.as_deref().unwrap_or(""), now_ms())
        .await?
        .ok_or_else(|| not_found(&format!("task {id}")))?;
    ok(task)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualTask {
    service: String,
    #[serde(default)]
    region: String,
    to: u32,
    #[serde(default)]
    reason: Option<String>,
    /// Keep the evaluator from changing the count for this long (`30m`).
    #[serde(default, with = "loupe_base::duration::option")]
    hold: Option<std::time::Duration>,
    /// Go outside the policy's `[min, max]` (the route is admin-only).
    #[serde(default)]
    force: bool,
}

/// An operator's task: scale (service, region) to `to` now, optionally
/// holding it there. Goes out through the policy's webhook like any other.
async fn manual_task(State(c): Shared, text: String) -> Reply {
    let req: ManualTask = body(&text)?;
    let policy = c.store.get(&POLICIES, &req.service).await?.ok_or_else(|| {
        CapacityError::Unprocessable(format!(
            "no policy for {} (it says where tasks go): PUT /api/v1/capacity/policies/{}",
            req.service, req.service
        ))
    })?;
    if !req.force && !(policy.min..=policy.max).contains(&req.to) {
        return Err(CapacityError::Invalid(format!(
            "to = {} is outside the policy's [{}, {}]; add \"force\": true to go there anyway",
            req.to, policy.min, policy.max
        )));
    }
    let now = now_ms();
    let from = match c.store.current(&req.service, &req.region).await? {
        Some(n) => n,
        None => {
            let scope = Scope::of(&req.service, &req.region);
            load::ready_instances(
                c.telemetry.as_ref(),
                scope,
                now * 1_000_000,
                policy.instance_window,
            )
            .await?
        }
    };
    let task = NewTask {
        service: req.service.clone(),
        region: req.region.clone(),
        from,
        to: req.to,
        reason: req.reason.unwrap_or_else(|| "Manual".into()),
        evidence: json!({"manual": true}),
        origin: TaskOrigin::Manual,
        hold_until_ms: req.hold.map(|h| now + h.as_millis() as i64),
    };
    let created = c
        .store
        .commit_manual_task(&task, &endpoint(&policy), now)
        .await?;
    c.forget(&req.service, &req.region);
    c.wake_worker();
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_form() {
        let now_ms = 1_700_000_000_000;
        assert_eq!(parse_time(&json!(5), now_ms), Ok(5));
        assert_eq!(parse_time(&json!("7"), now_ms), Ok(7));
        assert_eq!(
            parse_time(&json!("now-1m"), now_ms),
            Ok((now_ms - 60_000) * 1_000_000)
        );
        assert_eq!(
            parse_time(&json!("1970-01-01T00:00:01Z"), now_ms),
            Ok(1_000_000_000)
        );
        assert_eq!(
            parse_time(&json!("now-1w"), now_ms),
            Ok((now_ms - 7 * 86_400_000) * 1_000_000)
        );
        assert_eq!(
            parse_time(&json!("now-1.5h"), now_ms),
            Ok((now_ms - 5_400_000) * 1_000_000)
        );
        assert!(parse_time(&json!("yesterday"), now_ms).is_err());
        assert!(parse_time(&json!(true), now_ms).is_err());
    }
}
