//! OTLP/HTTP receiver: `POST /v1/traces`, `/v1/metrics`, `/v1/logs` with
//! protobuf or JSON bodies, optionally gzip-compressed. Responses and
//! errors use the request's encoding, as the OTLP specification asks.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, Limited};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::error::IngestError;
use crate::ingestor::{Ingestor, Outcome, Transport};
use crate::otlp::{OtlpExport, Payload};
use crate::reserving_body::ReservingBody;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

#[derive(Clone)]
struct HttpState {
    ingestor: Arc<Ingestor>,
    max_body_bytes: usize,
    body_timeout: Duration,
}

/// The OTLP/HTTP routes; bodies larger than `max_body_bytes` (before or
/// after decompression) are refused with 413, bodies that take longer than
/// `body_timeout` to arrive with 408.
pub fn router(ingestor: Arc<Ingestor>, max_body_bytes: usize, body_timeout: Duration) -> Router {
    Router::new()
        .route("/v1/traces", post(export::<ExportTraceServiceRequest>))
        .route("/v1/metrics", post(export::<ExportMetricsServiceRequest>))
        .route("/v1/logs", post(export::<ExportLogsServiceRequest>))
        .layer(DefaultBodyLimit::disable())
        .with_state(HttpState {
            ingestor,
            max_body_bytes,
            body_timeout,
        })
}

async fn export<R: OtlpExport>(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Errors are reported in the request's encoding; protobuf if unknown.
    let encoding = match request_encoding(&headers) {
        Ok(e) => e,
        Err(err) => {
            state.ingestor.count_failure(R::SIGNAL, Transport::Http, 0);
            return error_response(Encoding::Protobuf, &err);
        }
    };
    let result = async {
        if state.ingestor.is_saturated()
            && let Err(refused) = state.ingestor.admit(R::SIGNAL, Transport::Http, 1)
        {
            // Refused before the body is kept: it is read and dropped as it
            // arrives, so a client still sending gets the 429 rather than a
            // connection closed under it.
            let discard = discard(body, state.max_body_bytes);
            let _ = tokio::time::timeout(state.body_timeout, discard).await;
            return Err(refused);
        }
        // The body's bytes count against the in-flight budget as they
        // arrive; its working memory once it is inflated.
        let (body, reservation) =
            ReservingBody::new(body, state.ingestor.clone(), R::SIGNAL, Transport::Http);
        let raw =
            tokio::time::timeout(state.body_timeout, read_limited(body, state.max_body_bytes))
                .await
                .map_err(|_| IngestError::Timeout(state.body_timeout))??;
        let bytes = decompress_off_workers(&headers, raw, state.max_body_bytes).await?;
        let wire_bytes = bytes.len();
        state.ingestor.reserve_working_memory(
            &reservation,
            R::SIGNAL,
            Transport::Http,
            wire_bytes,
        )?;
        let request = match decode::<R>(encoding == Encoding::Json, bytes) {
            Ok(r) => r,
            Err(e) => {
                state
                    .ingestor
                    .count_failure(R::SIGNAL, Transport::Http, wire_bytes);
                return Err(e);
            }
        };
        state
            .ingestor
            .export(request, Transport::Http, wire_bytes)
            .await
    }
    .await;
    match result {
        Ok(outcome) => success_response::<R>(encoding, outcome),
        Err(err) => error_response(encoding, &err),
    }
}

fn request_encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(IngestError::UnsupportedMediaType(format!(
            "unsupported content type {content_type:?}: send application/x-protobuf or application/json"
        ))),
    }
}

/// Reads a body to its end (or `limit` bytes), keeping none of it.
async fn discard(body: Body, limit: usize) {
    let mut body = Limited::new(body, limit);
    while let Some(Ok(_)) = body.frame().await {}
}

async fn read_limited(body: ReservingBody<Body>, limit: usize) -> Result<Bytes, IngestError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(IngestError::TooLarge { limit, after: "" })
        }
        Err(e) => match e.downcast::<IngestError>() {
            // Refused by the in-flight budget while arriving.
            Ok(refused) => Err(*refused),
            Err(e) => Err(IngestError::InvalidArgument(format!(
                "reading request body: {e}"
            ))),
        },
    }
}

/// Compressed bodies above this size are inflated on the blocking pool, so
/// a 16 MiB inflation never stalls an async worker other requests share.
const INLINE_INFLATE_BYTES: usize = 64 << 10;

/// [`decompress`], on the blocking pool for large compressed bodies.
async fn decompress_off_workers(
    headers: &HeaderMap,
    raw: Bytes,
    limit: usize,
) -> Result<Bytes, IngestError> {
    let identity = headers.get(header::CONTENT_ENCODING).is_none();
    if identity || raw.len() <= INLINE_INFLATE_BYTES {
        return decompress(headers, raw, limit);
    }
    let headers = headers.clone();
    tokio::task::spawn_blocking(move || decompress(&headers, raw, limit))
        .await
        .map_err(|e| IngestError::Internal(format!("decompression task failed: {e}")))?
}

/// Undoes `Content-Encoding: gzip`, refusing output beyond `limit` bytes so
/// a small compressed body cannot expand without bound.
fn decompress(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Bytes, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity((raw.len() * 4).min(limit));
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| IngestError::InvalidArgument(format!("invalid gzip body: {e}")))?;
            if out.len() > limit {
                return Err(IngestError::TooLarge {
                    limit,
                    after: " after gzip decompression",
                });
            }
            Ok(Bytes::from(out))
        }
        other => Err(IngestError::UnsupportedMediaType(format!(
            "unsupported content encoding {other:?}: send gzip or no compression"
        ))),
    }
}

/// Counts a body's records on the wire, then decodes it if it is JSON; a
/// protobuf body is left for the ingestor to read ([`Payload::convert`]).
pub(crate) fn decode<R: OtlpExport>(json: bool, bytes: Bytes) -> Result<Payload<R>, IngestError> {
    if !json {
        crate::wire_count::check_protobuf(&bytes, R::RECORD_PATH, R::SIGNAL.name())?;
        return Ok(Payload::Protobuf(bytes));
    }
    crate::wire_count::check_json(&bytes)?;
    serde_json::from_slice(&bytes)
        .map(Payload::Decoded)
        .map_err(|e| {
            IngestError::InvalidArgument(format!("malformed OTLP JSON {}: {e}", R::SIGNAL))
        })
}

fn success_response<R: OtlpExport>(encoding: Encoding, outcome: Outcome) -> Response {
    let body = match encoding {
        Encoding::Protobuf => R::response(outcome.rejected, outcome.message).encode_to_vec(),
        Encoding::Json => {
            let json = if outcome.rejected > 0 {
                serde_json::json!({"partialSuccess": {
                    R::REJECTED_JSON_FIELD: outcome.rejected.to_string(),
                    "errorMessage": outcome.message,
                }})
            } else {
                serde_json::json!({})
            };
            json.to_string().into_bytes()
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

fn error_response(encoding: Encoding, err: &IngestError) -> Response {
    // `google.rpc.Status`, the body of OTLP/HTTP error responses.
    let status = tonic_types::Status {
        code: err.grpc_status().code() as i32,
        message: err.to_string(),
        details: Vec::new(),
    };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => serde_json::json!({"code": status.code, "message": status.message})
            .to_string()
            .into_bytes(),
    };
    let mut response = (
        err.http_status(),
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if let Some(secs) = err.retry_after_secs() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_bombs_are_cut_off_at_the_limit() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 1 << 20]).unwrap();
        let small = Bytes::from(gz.finish().unwrap());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let err = decompress(&headers, small.clone(), 1000).unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { .. }), "{err}");
        assert_eq!(decompress(&headers, small, 2 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn content_types_with_parameters_are_understood() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(request_encoding(&headers).unwrap(), Encoding::Json);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(
            request_encoding(&headers),
            Err(IngestError::UnsupportedMediaType(_))
        ));
    }
}
