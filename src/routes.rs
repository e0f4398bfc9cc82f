//! The API port's routes: the query and analysis APIs plus health, readiness,
//! self-metrics, splits and nodes, with JSON 404s for every other `/api/`
//! path; any other path is the web UI (`ui.rs`). A node without the `query`
//! role serves only the operational routes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use loupe_base::self_metrics::Registry;
use loupe_query::QueryEngine;
use loupe_storage::{Signal, Storage};
use serde_json::json;
use tokio::sync::watch;

use crate::roles::Roles;

/// What `GET /api/v1/nodes` tells about this node.
#[derive(Clone)]
pub struct NodeStatus {
    pub roles: Roles,
    pub http_addr: String,
    /// True while this node is the maintenance leader.
    pub leading: watch::Receiver<bool>,
}

#[derive(Clone)]
struct AppState {
    storage: Arc<Storage>,
    registry: Registry,
    node: NodeStatus,
}

/// Health, readiness, self-metrics, splits and nodes: on every node.
pub fn ops_router(storage: Arc<Storage>, registry: Registry, node: NodeStatus) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/splits", get(splits))
        .route("/api/v1/nodes", get(nodes))
        .with_state(AppState {
            storage,
            registry,
            node,
        })
}

/// The query, analysis, capacity and alert APIs and the UI: on `query` nodes.
pub fn query_router(
    engine: Arc<QueryEngine>,
    capacity: Arc<loupe_capacity::Capacity>,
    alerts: Arc<loupe_alerts::Alerts>,
) -> Router {
    loupe_query::routes(engine.clone())
        .merge(loupe_analysis::routes(engine))
        .merge(loupe_capacity::api::router(capacity))
        .merge(loupe_alerts::api::router(alerts))
        .fallback(crate::ui::serve)
}

/// Every other path on a node without the `query` role: a clear refusal.
pub async fn not_a_query_node() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "error": "this node serves no queries (its --role lacks query): ask a query node"
        })),
    )
        .into_response()
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

/// A node is listed while its heartbeat is at most this old (three beats).
const LIVE_WITHIN: Duration = Duration::from_secs(15);

/// The live nodes with their roles, and which of them leads maintenance:
/// from the `nodes` and `leases` tables on a shared catalog, else just
/// this node.
async fn nodes(State(state): State<AppState>) -> Response {
    let node = &state.node;
    let me = state.storage.node_id().to_string();
    let Some(db) = state.storage.postgres() else {
        let leading = *node.leading.borrow();
        return axum::Json(json!({
            "leader": leading.then(|| json!({ "node": me, "epoch": null })),
            "nodes": [{
                "id": me,
                "http_addr": node.http_addr,
                "roles": node.roles.to_string(),
                "heartbeat_age_secs": 0.0,
                "leader": leading,
            }],
        }))
        .into_response();
    };
    let read = async {
        let live = loupe_catalog::pg::live_nodes(&db, LIVE_WITHIN).await?;
        let holder = loupe_catalog::lease::holder(&db, loupe_catalog::lease::MAINTENANCE).await?;
        Ok::<_, loupe_catalog::CatalogDbError>((live, holder))
    };
    let (live, holder) = match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return unavailable(&e.to_string()),
        Err(_) => return unavailable("the catalog did not answer within 5s"),
    };
    let leader_id = holder.as_ref().map(|(id, _)| id.as_str());
    let list: Vec<serde_json::Value> = live
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "http_addr": n.http_addr,
                "roles": n.roles,
                "grpc_addr": (!n.grpc_addr.is_empty()).then_some(&n.grpc_addr),
                "heartbeat_age_secs": n.heartbeat_age_secs,
                "leader": leader_id == Some(n.id.as_str()),
            })
        })
        .collect();
    axum::Json(json!({
        "leader": holder.map(|(id, epoch)| json!({ "node": id, "epoch": epoch })),
        "nodes": list,
    }))
    .into_response()
}

fn unavailable(why: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "error": format!("cannot read the nodes from the catalog: {why}") })),
    )
        .into_response()
}
