//! `POST /api/v1/sql`: `{"sql": "…"}` in; JSON by default, CSV for
//! `Accept: text/csv`, an Arrow IPC stream for
//! `Accept: application/vnd.apache.arrow.stream`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use crate::engine::QueryEngine;
use crate::error::error_response;
use crate::output;

/// The media type of an Arrow IPC stream, asked for with `Accept`.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
}

/// The SQL API's route.
pub fn routes(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql))
        .with_state(engine)
}

enum Format {
    Json,
    Csv,
    Arrow,
}

fn wanted_format(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if accept.contains("text/csv") {
        Format::Csv
    } else if accept.contains(ARROW_STREAM) {
        Format::Arrow
    } else {
        Format::Json
    }
}

async fn sql(State(engine): State<Arc<QueryEngine>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("request body must be JSON like {{\"sql\": \"SELECT …\"}}: {e}"),
            );
        }
    };
    let out = match engine.sql(&request.sql).await {
        Ok(out) => out,
        Err(e) => return e.into_response(),
    };
    let encoded = match wanted_format(&headers) {
        Format::Json => output::to_json(&out).map(|b| ("application/json", b)),
        Format::Csv => output::to_csv(&out).map(|b| ("text/csv; charset=utf-8", b)),
        Format::Arrow => output::to_arrow_ipc(&out).map(|b| (ARROW_STREAM, b)),
    };
    match encoded {
        Ok((content_type, bytes)) => {
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, content_type)],
                bytes,
            )
                .into_response();
            if out.truncated {
                response.headers_mut().insert(
                    "x-loupe-truncated",
                    header::HeaderValue::from_static("true"),
                );
            }
            // Another ingest node was unreachable: its unflushed rows are
            // not in this answer.
            if out.partial {
                response
                    .headers_mut()
                    .insert("x-loupe-partial", header::HeaderValue::from_static("true"));
            }
            response
        }
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding result: {e}"),
        ),
    }
}
