//! The API port's routes: the query and analysis APIs plus health, readiness and
//! self-metrics, with JSON 404s for every other `/api/` path; any other
//! path is the web UI (`ui.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use loupe_base::self_metrics::Registry;
use loupe_query::QueryEngine;
use loupe_storage::{Signal, Storage};

#[derive(Clone)]
struct AppState {
    storage: Arc<Storage>,
    registry: Registry,
}

pub fn api_router(
    storage: Arc<Storage>,
    engine: Arc<QueryEngine>,
    registry: Registry,
    capacity: Arc<loupe_capacity::Capacity>,
    alerts: Arc<loupe_alerts::Alerts>,
) -> Router {
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/splits", get(splits))
        .with_state(AppState { storage, registry });
    loupe_query::routes(engine.clone())
        .merge(loupe_analysis::routes(engine))
        .merge(loupe_capacity::api::router(capacity))
        .merge(loupe_alerts::api::router(alerts))
        .merge(ops)
        .fallback(crate::ui::serve)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.storage.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// The Parquet files of every signal, as the catalog lists them.
async fn splits(State(state): State<AppState>) -> Response {
    let mut out = serde_json::Map::new();
    for signal in Signal::ALL {
        let snapshot = state.storage.snapshot(signal);
        let list: Vec<serde_json::Value> = snapshot
            .splits
            .iter()
            .map(|s| serde_json::to_value(s.as_ref()).unwrap_or_default())
            .collect();
        out.insert(signal.name().to_string(), serde_json::Value::Array(list));
    }
    axum::Json(serde_json::Value::Object(out)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.registry.render(),
    )
        .into_response()
}
