//! The API port's routes: the query API plus health, readiness and
//! self-metrics, with JSON 404s for everything else.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use loupe_query::QueryEngine;
use loupe_query::api::error_response;
use loupe_storage::Storage;
use loupe_storage::metrics::Registry;

#[derive(Clone)]
struct AppState {
    storage: Arc<Storage>,
    registry: Registry,
}

pub fn api_router(storage: Arc<Storage>, engine: Arc<QueryEngine>, registry: Registry) -> Router {
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { storage, registry });
    loupe_query::api::router(engine)
        .merge(ops)
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "no such endpoint") })
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.storage.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
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
