//! The alerting HTTP API under `/api/v1/alerts`: rules (checked by running
//! their SQL once through the sandbox), receivers (secrets never shown),
//! built-in rule templates, alert instances and history.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use loupe_base::clock::{now_ms, rfc3339_ms};

use crate::engine::Alerts;
use crate::error::AlertError;
use crate::receiver::ReceiverSpec;
use crate::rule::{self, RuleSpec};
use crate::store::{RECEIVERS, RULES};
use crate::templates;

type Reply = Result<Response, AlertError>;
type Shared = State<Arc<Alerts>>;

/// The alerting routes, to merge into the server's API router.
pub fn router(alerts: Arc<Alerts>) -> Router {
    Router::new()
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/history", get(history))
        .route("/api/v1/alerts/rules", get(list_rules))
        .route("/api/v1/alerts/rules/from-template", post(from_template))
        .route(
            "/api/v1/alerts/rules/{name}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .route("/api/v1/alerts/receivers", get(list_receivers))
        .route(
            "/api/v1/alerts/receivers/{name}",
            get(get_receiver).put(put_receiver).delete(delete_receiver),
        )
        .with_state(alerts)
}

impl IntoResponse for AlertError {
    fn into_response(self) -> Response {
        self.kind().reply(&self).into_response()
    }
}

fn ok(value: impl serde::Serialize) -> Reply {
    Ok(axum::Json(value).into_response())
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, AlertError> {
    serde_json::from_str(text).map_err(|e| AlertError::Invalid(format!("bad JSON body: {e}")))
}

fn check_name(name: &str) -> Result<(), AlertError> {
    if rule::valid_label_name(name) {
        Ok(())
    } else {
        Err(AlertError::Invalid(format!(
            "{name:?} is not a valid name: use letters, digits and underscores"
        )))
    }
}

/// A rule as the API shows it: its spec, health and instances.
async fn rule_view(alerts: &Alerts, name: &str, rule: &RuleSpec) -> Result<Value, AlertError> {
    let instances = alerts.store.instances(Some(name)).await?;
    let state = if instances
        .iter()
        .any(|i| i.life.state == crate::AlertState::Firing)
    {
        "firing"
    } else if instances
        .iter()
        .any(|i| i.life.state == crate::AlertState::Pending)
    {
        "pending"
    } else {
        "inactive"
    };
    let status = alerts.store.status(name).await?;
    Ok(json!({
        "name": name,
        "rule": rule,
        "state": state,
        "health": status.as_ref().map_or("unknown", |s| s.health),
        "last_evaluation": status.map(|s| json!({
            "time": rfc3339_ms(s.last_eval_at_ms), "duration_ms": s.duration_ms, "error": s.last_error,
        })),
        "alerts": instances.len(),
    }))
}

async fn list_rules(State(a): Shared) -> Reply {
    let mut out = Vec::new();
    for (name, rule) in a.store.list(&RULES).await? {
        out.push(rule_view(&a, &name, &rule).await?);
    }
    ok(out)
}

async fn get_rule(State(a): Shared, Path(name): Path<String>) -> Reply {
    let rule = a
        .store
        .get(&RULES, &name)
        .await?
        .ok_or_else(|| AlertError::NotFound(format!("no rule {name}")))?;
    ok(rule_view(&a, &name, &rule).await?)
}

/// Validates and saves a rule: its receivers must exist and its SQL must
/// run (through the SQL API's sandbox) and have the condition's column.
async fn save_rule(a: &Alerts, name: &str, rule: RuleSpec) -> Result<Value, AlertError> {
    check_name(name)?;
    if let Some(problem) = rule.problems() {
        return Err(AlertError::Invalid(problem));
    }
    for receiver in &rule.receivers {
        if a.store.get(&RECEIVERS, receiver).await?.is_none() {
            return Err(AlertError::Invalid(format!(
                "no receiver {receiver}: create it first"
            )));
        }
    }
    let rows = a
        .telemetry
        .rows(rule.sql.clone())
        .await
        .map_err(|e| AlertError::Invalid(format!("sql: {e}")))?;
    rule::observe(name, &rule, &rows).map_err(AlertError::Invalid)?;
    a.store.put(&RULES, name, &rule, now_ms()).await?;
    rule_view(a, name, &rule).await
}

async fn put_rule(State(a): Shared, Path(name): Path<String>, body: String) -> Reply {
    let rule: RuleSpec = parse(&body)?;
    ok(save_rule(&a, &name, rule).await?)
}

async fn delete_rule(State(a): Shared, Path(name): Path<String>) -> Reply {
    if !a.store.delete_rule(&name).await? {
        return Err(AlertError::NotFound(format!("no rule {name}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `{"template": "error_rate", "name"?, "receivers"?, …parameters}`.
async fn from_template(State(a): Shared, body: String) -> Reply {
    let request: Value = parse(&body)?;
    let (name, rule) = templates::build(&request).map_err(AlertError::Invalid)?;
    let view = save_rule(&a, &name, rule).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

async fn list_receivers(State(a): Shared) -> Reply {
    let out: Vec<Value> = a
        .store
        .list(&RECEIVERS)
        .await?
        .into_iter()
        .map(|(name, r)| {
            let mut v = r.public_view();
            v["name"] = json!(name);
            v
        })
        .collect();
    ok(out)
}

async fn get_receiver(State(a): Shared, Path(name): Path<String>) -> Reply {
    let r = a
        .store
        .get(&RECEIVERS, &name)
        .await?
        .ok_or_else(|| AlertError::NotFound(format!("no receiver {name}")))?;
    ok(r.public_view())
}

/// Saves a receiver. Changing its URL requires stating the secret again
/// (so a secret is never sent somewhere its owner did not choose); leaving
/// the URL as it was keeps the stored secret when none is given.
async fn put_receiver(State(a): Shared, Path(name): Path<String>, body: String) -> Reply {
    check_name(&name)?;
    let mut r: ReceiverSpec = parse(&body)?;
    if let Some(problem) = r.problems() {
        return Err(AlertError::Invalid(problem));
    }
    a.check_url(&r.endpoint()).await?;
    if r.secret.is_none()
        && let Some(old) = a.store.get(&RECEIVERS, &name).await?
        && old.secret.is_some()
    {
        if old.url != r.url {
            return Err(AlertError::Invalid(
                "url changed: state the secret again (the stored one is not sent to a new URL)"
                    .into(),
            ));
        }
        r.secret = old.secret;
    }
    a.store.put(&RECEIVERS, &name, &r, now_ms()).await?;
    ok(r.public_view())
}

async fn delete_receiver(State(a): Shared, Path(name): Path<String>) -> Reply {
    if !a.store.delete_receiver(&name).await? {
        return Err(AlertError::NotFound(format!("no receiver {name}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct AlertParams {
    rule: Option<String>,
    state: Option<String>,
}

async fn list_alerts(State(a): Shared, Query(p): Query<AlertParams>) -> Reply {
    let out: Vec<Value> = a
        .store
        .instances(p.rule.as_deref())
        .await?
        .into_iter()
        .filter(|i| {
            p.state
                .as_deref()
                .is_none_or(|s| s == i.life.state.as_str())
        })
        .map(|i| {
            json!({
                "rule": i.rule, "fingerprint": i.fingerprint, "state": i.life.state,
                "labels": i.labels, "annotations": i.annotations, "value": i.value,
                "active_since": rfc3339_ms(i.life.active_at),
                "firing_since": i.life.fired_at.map(rfc3339_ms),
                "resolved_at": i.life.resolved_at.map(rfc3339_ms),
            })
        })
        .collect();
    ok(out)
}

#[derive(Deserialize)]
struct HistoryParams {
    limit: Option<usize>,
}

async fn history(State(a): Shared, Query(p): Query<HistoryParams>) -> Reply {
    ok(a.store.history(p.limit.unwrap_or(100).min(1000)).await?)
}
