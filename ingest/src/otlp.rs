//! What differs between the three OTLP export services, in one trait, so
//! that the gRPC and HTTP receivers and the ingestor are written once.

use arrow::error::ArrowError;
use loupe_storage::Signal;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde::de::DeserializeOwned;

use crate::convert::{self, Converted};

/// An OTLP export request type (logs, traces or metrics).
pub trait OtlpExport: prost::Message + DeserializeOwned + Default + Send + Sync + 'static {
    const SIGNAL: Signal;
    /// gRPC service name, e.g. `opentelemetry.proto.collector.logs.v1.LogsService`.
    const GRPC_SERVICE: &'static str;
    /// Name of the rejected-count field in the JSON `partialSuccess`.
    const REJECTED_JSON_FIELD: &'static str;
    type Response: prost::Message + Default + Send + Sync + 'static;

    /// Converts to Arrow; `received` (ns) fills in missing timestamps.
    fn convert(&self, received: i64) -> Result<Converted, ArrowError>;
    /// The response, with `partial_success` set when records were rejected.
    fn response(rejected: usize, message: String) -> Self::Response;
}

impl OtlpExport for ExportLogsServiceRequest {
    const SIGNAL: Signal = Signal::Logs;
    const GRPC_SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const REJECTED_JSON_FIELD: &'static str = "rejectedLogRecords";
    type Response = ExportLogsServiceResponse;

    fn convert(&self, received: i64) -> Result<Converted, ArrowError> {
        convert::logs::convert(self, received)
    }

    fn response(rejected: usize, message: String) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: (rejected > 0).then_some(ExportLogsPartialSuccess {
                rejected_log_records: rejected as i64,
                error_message: message,
            }),
        }
    }
}

impl OtlpExport for ExportTraceServiceRequest {
    const SIGNAL: Signal = Signal::Spans;
    const GRPC_SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const REJECTED_JSON_FIELD: &'static str = "rejectedSpans";
    type Response = ExportTraceServiceResponse;

    fn convert(&self, _received: i64) -> Result<Converted, ArrowError> {
        convert::traces::convert(self)
    }

    fn response(rejected: usize, message: String) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: (rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: rejected as i64,
                error_message: message,
            }),
        }
    }
}

impl OtlpExport for ExportMetricsServiceRequest {
    const SIGNAL: Signal = Signal::Metrics;
    const GRPC_SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const REJECTED_JSON_FIELD: &'static str = "rejectedDataPoints";
    type Response = ExportMetricsServiceResponse;

    fn convert(&self, received: i64) -> Result<Converted, ArrowError> {
        convert::metrics::convert(self, received)
    }

    fn response(rejected: usize, message: String) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: (rejected > 0).then_some(ExportMetricsPartialSuccess {
                rejected_data_points: rejected as i64,
                error_message: message,
            }),
        }
    }
}
