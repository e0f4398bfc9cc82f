//! Delivers export requests over OTLP/gRPC, OTLP/HTTP (protobuf or JSON) or
//! to a sink that only encodes them, retrying what the server asks to be
//! retried, and timing each acknowledgement.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use crate::GenError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grpc" => Ok(Protocol::Grpc),
            "http-protobuf" | "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http-json" | "http/json" => Ok(Protocol::HttpJson),
            other => Err(format!(
                "unknown protocol {other:?}; use grpc, http-protobuf or http-json"
            )),
        }
    }
}

/// One export request of any signal.
pub enum Payload {
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

impl Payload {
    /// Size as uncompressed protobuf, whatever the wire format.
    pub fn encoded_len(&self) -> usize {
        match self {
            Payload::Traces(r) => r.encoded_len(),
            Payload::Logs(r) => r.encoded_len(),
            Payload::Metrics(r) => r.encoded_len(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Payload::Traces(r) => r.encode_to_vec(),
            Payload::Logs(r) => r.encode_to_vec(),
            Payload::Metrics(r) => r.encode_to_vec(),
        }
    }

    fn json(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Payload::Traces(r) => serde_json::to_vec(r),
            Payload::Logs(r) => serde_json::to_vec(r),
            Payload::Metrics(r) => serde_json::to_vec(r),
        }
    }

    fn path(&self) -> &'static str {
        match self {
            Payload::Traces(_) => "/v1/traces",
            Payload::Logs(_) => "/v1/logs",
            Payload::Metrics(_) => "/v1/metrics",
        }
    }
}

enum Transport {
    /// Encodes and discards: measures the generator alone.
    Null,
    Grpc(Box<GrpcClients>),
    Http {
        client: reqwest::Client,
        base: String,
        json: bool,
    },
}

struct GrpcClients {
    traces: TraceServiceClient<Channel>,
    logs: LogsServiceClient<Channel>,
    metrics: MetricsServiceClient<Channel>,
}

/// A gRPC request carrying `authorization` metadata when there is a token.
fn request<T: Clone>(message: &T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message.clone());
    if let Some(value) = authorization.and_then(|a| a.parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

pub struct Sender {
    transport: Transport,
    /// `Bearer …`, when the receiver asks for a token.
    authorization: Option<String>,
}

/// Why one attempt failed, and whether to try again (and when).
struct Attempt {
    message: String,
    retry_after: Option<Duration>,
}

const MAX_ATTEMPTS: u32 = 5;

/// The wait before retrying when the receiver gave no hint.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(250);

/// The wait a gRPC refusal asks for (`google.rpc.RetryInfo`, which Loupe
/// and the Collector send with RESOURCE_EXHAUSTED), else the default.
fn grpc_retry_after(status: &tonic::Status) -> Duration {
    use tonic_types::StatusExt;
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or(DEFAULT_BACKOFF)
}

/// The wait an HTTP `Retry-After` header asks for (delay-seconds; an
/// HTTP date or no header gets the default).
fn http_retry_after(header: Option<&str>) -> Duration {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_BACKOFF, Duration::from_secs)
}

impl Sender {
    /// `endpoint` is a base URL (`http://127.0.0.1:4317`), or `null` to
    /// encode and discard.
    pub async fn connect(
        endpoint: &str,
        protocol: Protocol,
        gzip: bool,
        token: Option<String>,
    ) -> Result<Sender, GenError> {
        let authorization = token.map(|t| format!("Bearer {t}"));
        if endpoint == "null" {
            return Ok(Sender {
                transport: Transport::Null,
                authorization,
            });
        }
        let transport = match protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
                    .map_err(|e| GenError::Endpoint(format!("{endpoint}: {e}")))?
                    .tcp_nodelay(true)
                    .timeout(Duration::from_secs(30))
                    .connect()
                    .await
                    .map_err(|e| {
                        GenError::Endpoint(format!("cannot connect to {endpoint}: {e}"))
                    })?;
                let mut traces =
                    TraceServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
                let mut logs = LogsServiceClient::new(channel.clone());
                let mut metrics = MetricsServiceClient::new(channel);
                if gzip {
                    traces = traces.send_compressed(CompressionEncoding::Gzip);
                    logs = logs.send_compressed(CompressionEncoding::Gzip);
                    metrics = metrics.send_compressed(CompressionEncoding::Gzip);
                }
                Transport::Grpc(Box::new(GrpcClients {
                    traces,
                    logs,
                    metrics,
                }))
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => Transport::Http {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .map_err(|e| GenError::Endpoint(e.to_string()))?,
                base: endpoint.trim_end_matches('/').to_string(),
                json: protocol == Protocol::HttpJson,
            },
        };
        Ok(Sender {
            transport,
            authorization,
        })
    }

    /// Sends one request, retrying throttling and unavailability; returns
    /// the time to the successful acknowledgement and the retries used.
    pub async fn send(&mut self, payload: &Payload) -> Result<(Duration, u32), String> {
        let mut retries = 0;
        loop {
            let started = Instant::now();
            match self.attempt(payload).await {
                Ok(()) => return Ok((started.elapsed(), retries)),
                Err(Attempt {
                    message,
                    retry_after: Some(wait),
                }) if retries + 1 < MAX_ATTEMPTS => {
                    tracing::debug!(%message, "retrying");
                    retries += 1;
                    tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
                }
                Err(a) => return Err(a.message),
            }
        }
    }

    async fn attempt(&mut self, payload: &Payload) -> Result<(), Attempt> {
        match &mut self.transport {
            Transport::Null => {
                std::hint::black_box(payload.encode());
                Ok(())
            }
            Transport::Grpc(clients) => {
                let auth = self.authorization.as_deref();
                let result = match payload {
                    Payload::Traces(r) => clients.traces.export(request(r, auth)).await.map(|_| ()),
                    Payload::Logs(r) => clients.logs.export(request(r, auth)).await.map(|_| ()),
                    Payload::Metrics(r) => {
                        clients.metrics.export(request(r, auth)).await.map(|_| ())
                    }
                };
                result.map_err(|status| {
                    let retry = matches!(
                        status.code(),
                        tonic::Code::ResourceExhausted
                            | tonic::Code::Unavailable
                            | tonic::Code::Aborted
                    );
                    Attempt {
                        message: format!("{}: {}", status.code(), status.message()),
                        retry_after: retry.then(|| grpc_retry_after(&status)),
                    }
                })
            }
            Transport::Http { client, base, json } => {
                let (body, content_type) = if *json {
                    let body = payload.json().map_err(|e| Attempt {
                        message: format!("encoding JSON: {e}"),
                        retry_after: None,
                    })?;
                    (body, "application/json")
                } else {
                    (payload.encode(), "application/x-protobuf")
                };
                let mut post = client
                    .post(format!("{base}{}", payload.path()))
                    .header("content-type", content_type);
                if let Some(auth) = &self.authorization {
                    post = post.header("authorization", auth);
                }
                let response = post.body(body).send().await.map_err(|e| Attempt {
                    message: e.to_string(),
                    retry_after: Some(DEFAULT_BACKOFF),
                })?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let retry_after = matches!(status.as_u16(), 429 | 502 | 503 | 504).then(|| {
                    let header = response.headers().get("retry-after");
                    http_retry_after(header.and_then(|v| v.to_str().ok()))
                });
                Err(Attempt {
                    message: format!("HTTP {status}"),
                    retry_after,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_as_long_as_the_receiver_asks() {
        use tonic_types::StatusExt;
        let details = tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(2)));
        let hinted = tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            "overloaded",
            details,
        );
        assert_eq!(grpc_retry_after(&hinted), Duration::from_secs(2));
        let bare = tonic::Status::resource_exhausted("overloaded");
        assert_eq!(grpc_retry_after(&bare), DEFAULT_BACKOFF);
        assert_eq!(http_retry_after(Some("3")), Duration::from_secs(3));
        assert_eq!(
            http_retry_after(Some("Wed, 21 Oct 2026 07:28:00 GMT")),
            DEFAULT_BACKOFF
        );
        assert_eq!(http_retry_after(None), DEFAULT_BACKOFF);
    }
}
