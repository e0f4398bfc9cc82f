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
mod protobuf_fields;
mod reserving_body;
mod wire_count;

pub use admission::{Admitted, InFlight, WORKING_MEMORY_PER_BODY_BYTE};
pub use error::{IngestError, retry_status};
pub use ingestor::{AcceptWindow, Ingestor, Outcome, Transport};
pub use otlp::{OtlpExport, Payload};
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
    let payload = http::decode::<R>(json, bytes::Bytes::copy_from_slice(body))?;
    let now = loupe_base::clock::now_nanos();
    let converted = payload.convert(AcceptWindow::UNBOUNDED.arrival(R::SIGNAL, now))?;
    Ok((converted.batch.num_rows(), converted.rejected.count))
}

/// Panics if reading `body` in place ([`OtlpExport::convert_in_place`])
/// disagrees with decoding it with prost and converting that: a different
/// batch or rejections, or a body read in place that prost refuses. Public
/// for the fuzz targets (`fuzz/`), which hold the two readers to each other.
pub fn assert_in_place_matches_prost<R: OtlpExport>(body: &[u8]) {
    let arrival = convert::Arrival {
        received: 0,
        earliest: 0,
        latest: i64::MAX,
    };
    let Some(in_place) = R::convert_in_place(body, arrival) else {
        return;
    };
    let decoded = match R::decode(body) {
        Ok(decoded) => decoded.convert(arrival),
        Err(e) => panic!("read in place, but prost refuses it: {e}"),
    };
    match (in_place, decoded) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.batch, b.batch, "batches differ");
            assert_eq!(a.rejected.count, b.rejected.count, "rejections differ");
            assert_eq!(a.rejected.message(), b.rejected.message());
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "one reader failed: in place {:?}, prost {:?}",
            a.err(),
            b.err()
        ),
    }
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
