//! What differs between the three OTLP export services, in one trait, so
//! that the gRPC and HTTP receivers and the ingestor are written once.

use arrow::error::ArrowError;
use bytes::Bytes;
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

use crate::convert::{self, Arrival, Converted};
use crate::error::IngestError;
use crate::ingestor::MAX_RECORDS_PER_REQUEST;
use crate::wire_count::RecordPath;

/// An OTLP export request type (logs, traces or metrics).
pub trait OtlpExport: prost::Message + DeserializeOwned + Default + Send + Sync + 'static {
    const SIGNAL: Signal;
    /// gRPC service name, e.g. `opentelemetry.proto.collector.logs.v1.LogsService`.
    const GRPC_SERVICE: &'static str;
    /// Name of the rejected-count field in the JSON `partialSuccess`.
    const REJECTED_JSON_FIELD: &'static str;
    type Response: prost::Message + Default + Send + Sync + 'static;

    /// Log records, spans or data points in the request, counted before
    /// anything is built from them.
    fn record_count(&self) -> usize;
    /// Where the records sit in the protobuf encoding (see [`crate::wire_count`]).
    const RECORD_PATH: RecordPath;
    /// Converts to Arrow; `arrival` fills in missing timestamps and bounds
    /// the accepted ones.
    fn convert(&self, arrival: Arrival) -> Result<Converted, ArrowError>;
    /// Converts a protobuf body read in place, without decoding it into
    /// structs first, where the signal has such a reader; `None` leaves the
    /// body to prost and [`OtlpExport::convert`].
    fn convert_in_place(body: &[u8], arrival: Arrival) -> Option<Result<Converted, ArrowError>>;
    /// The response, with `partial_success` set when records were rejected.
    fn response(rejected: usize, message: String) -> Self::Response;
}

fn no_in_place_reader(_: &[u8], _: Arrival) -> Option<Result<Converted, ArrowError>> {
    None
}

/// A request as a receiver hands it to the ingestor.
pub enum Payload<R> {
    /// Decoded from JSON.
    Decoded(R),
    /// A protobuf body whose records were counted on the wire
    /// ([`crate::wire_count::check_protobuf`]), not yet decoded.
    Protobuf(Bytes),
}

impl<R: OtlpExport> Payload<R> {
    /// The request's uncompressed protobuf size.
    pub fn wire_bytes(&self) -> usize {
        match self {
            Payload::Decoded(request) => request.encoded_len(),
            Payload::Protobuf(body) => body.len(),
        }
    }

    /// Converts the request to Arrow (see [`OtlpExport::convert`]): a
    /// protobuf body in place where the signal can be read so, otherwise
    /// decoded with prost first.
    pub fn convert(self, arrival: Arrival) -> Result<Converted, IngestError> {
        let building =
            |e: ArrowError| IngestError::Internal(format!("building {} batch: {e}", R::SIGNAL));
        let request = match self {
            Payload::Decoded(request) => request,
            Payload::Protobuf(body) => {
                if let Some(converted) = R::convert_in_place(&body, arrival) {
                    return converted.map_err(building);
                }
                R::decode(body).map_err(|e| {
                    IngestError::InvalidArgument(format!("malformed protobuf {}: {e}", R::SIGNAL))
                })?
            }
        };
        let count = request.record_count();
        if count > MAX_RECORDS_PER_REQUEST {
            return Err(IngestError::TooManyRecords {
                count,
                limit: MAX_RECORDS_PER_REQUEST,
            });
        }
        request.convert(arrival).map_err(building)
    }
}

/// One `OtlpExport` impl: the request type, its signal, gRPC service,
/// JSON rejected-count field, response and partial-success types (with the
/// rejected-count field) and converter.
macro_rules! otlp_export {
    (
        $request:ty,
        $signal:expr,
        $service:literal,
        $json_field:literal,
        $response:ident,
        $partial:ident { $rejected:ident },
        $convert:expr,
        $in_place:expr,
        $count:expr,
        $path:expr $(,)?
    ) => {
        impl OtlpExport for $request {
            const SIGNAL: Signal = $signal;
            const GRPC_SERVICE: &'static str = $service;
            const REJECTED_JSON_FIELD: &'static str = $json_field;
            type Response = $response;
            const RECORD_PATH: RecordPath = $path;

            fn record_count(&self) -> usize {
                $count(self)
            }

            fn convert(&self, arrival: Arrival) -> Result<Converted, ArrowError> {
                $convert(self, arrival)
            }

            fn convert_in_place(
                body: &[u8],
                arrival: Arrival,
            ) -> Option<Result<Converted, ArrowError>> {
                $in_place(body, arrival)
            }

            fn response(rejected: usize, message: String) -> Self::Response {
                $response {
                    partial_success: (rejected > 0).then_some($partial {
                        $rejected: rejected as i64,
                        error_message: message,
                    }),
                }
            }
        }
    };
}

otlp_export!(
    ExportLogsServiceRequest,
    Signal::Logs,
    "opentelemetry.proto.collector.logs.v1.LogsService",
    "rejectedLogRecords",
    ExportLogsServiceResponse,
    ExportLogsPartialSuccess {
        rejected_log_records
    },
    convert::logs::convert,
    convert::in_place::logs,
    |r: &ExportLogsServiceRequest| r
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum::<usize>(),
    // resource_* → scope_* → records
    &[&[1], &[2], &[2]],
);

otlp_export!(
    ExportTraceServiceRequest,
    Signal::Spans,
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "rejectedSpans",
    ExportTraceServiceResponse,
    ExportTracePartialSuccess { rejected_spans },
    convert::traces::convert,
    convert::in_place::traces,
    |r: &ExportTraceServiceRequest| r
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum::<usize>(),
    // resource_* → scope_* → records
    &[&[1], &[2], &[2]],
);

otlp_export!(
    ExportMetricsServiceRequest,
    Signal::Metrics,
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "rejectedDataPoints",
    ExportMetricsServiceResponse,
    ExportMetricsPartialSuccess {
        rejected_data_points
    },
    convert::metrics::convert,
    no_in_place_reader,
    convert::metrics::data_point_total,
    // resource_metrics → scope_metrics → metrics → gauge | sum | histogram |
    // exponential_histogram | summary → data_points
    &[&[1], &[2], &[2], &[5, 7, 9, 10, 11], &[1]],
);
