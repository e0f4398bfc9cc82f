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
mod wire_count;

pub use admission::{Admitted, InFlight, WORKING_MEMORY_PER_BODY_BYTE};
pub use error::{IngestError, retry_status};
pub use ingestor::{AcceptWindow, Ingestor, Outcome, Transport};
pub use otlp::OtlpExport;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// The three gRPC export services, ready to add to a `tonic` server.
pub fn grpc_routes(ingestor: Arc<Ingestor>, max_message_bytes: usize) -> tonic::service::Routes {
    tonic::service::Routes::new(grpc::OtlpGrpc::<ExportTraceServiceRequest>::new(
        ingestor.clone(),
        max_message_bytes,
    ))
    .add_service(grpc::OtlpGrpc::<ExportMetricsServiceRequest>::new(
        ingestor.clone(),
        max_message_bytes,
    ))
    .add_service(grpc::OtlpGrpc::<ExportLogsServiceRequest>::new(
        ingestor,
        max_message_bytes,
    ))
}
