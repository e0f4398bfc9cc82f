//! OTLP ingest: gRPC and HTTP receivers that decode, validate and convert
//! traces, metrics and logs to Arrow, then hand them to storage.

mod admission;
mod anyvalue;
mod convert;
mod error;
pub mod grpc;
pub mod http;
mod ingestor;
mod otlp;
mod reserving_body;
mod wire_count;

pub use admission::{Admitted, InFlight, WORKING_MEMORY_PER_BODY_BYTE};
pub use error::{IngestError, retry_status};
pub use ingestor::{AcceptWindow, Ingestor, Outcome, Transport};
pub use otlp::OtlpExport;
pub use reserving_body::{Reservation, ReservingBody};

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// Decodes an OTLP export body the way the HTTP receiver does (records
/// counted on the wire first, then protobuf or JSON) and converts it to an
/// Arrow batch as the ingestor would, without storing it; returns the rows
/// built and the records rejected. Public for the fuzz targets (`fuzz/`).
pub fn decode_and_convert<R: OtlpExport>(
    body: &[u8],
    json: bool,
) -> Result<(usize, usize), IngestError> {
    let request = http::decode::<R>(json, body)?;
    if request.record_count() > ingestor::MAX_RECORDS_PER_REQUEST {
        return Err(IngestError::TooManyRecords {
            count: request.record_count(),
            limit: ingestor::MAX_RECORDS_PER_REQUEST,
        });
    }
    let now = loupe_base::clock::now_nanos();
    let converted = request
        .convert(AcceptWindow::UNBOUNDED.arrival(R::SIGNAL, now))
        .map_err(|e| IngestError::Internal(format!("building {} batch: {e}", R::SIGNAL)))?;
    Ok((converted.batch.num_rows(), converted.rejected.count))
}

/// The three gRPC export services, each behind `interceptor` (the access
/// check), ready to add to a `tonic` server that may serve other services
/// under other rules.
pub fn grpc_routes<I>(
    ingestor: Arc<Ingestor>,
    max_message_bytes: usize,
    interceptor: I,
) -> tonic::service::Routes
where
    I: tonic::service::Interceptor + Clone + Send + Sync + 'static,
{
    use tonic::service::interceptor::InterceptedService;
    tonic::service::Routes::new(InterceptedService::new(
        grpc::OtlpGrpc::<ExportTraceServiceRequest>::new(ingestor.clone(), max_message_bytes),
        interceptor.clone(),
    ))
    .add_service(InterceptedService::new(
        grpc::OtlpGrpc::<ExportMetricsServiceRequest>::new(ingestor.clone(), max_message_bytes),
        interceptor.clone(),
    ))
    .add_service(InterceptedService::new(
        grpc::OtlpGrpc::<ExportLogsServiceRequest>::new(ingestor, max_message_bytes),
        interceptor,
    ))
}
