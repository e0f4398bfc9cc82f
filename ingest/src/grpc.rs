//! OTLP/gRPC receiver: the three export services, gzip accepted.
//!
//! Written against `tonic::server::Grpc` directly rather than the generated
//! servers so that one generic service covers all signals, and so that a
//! malformed protobuf is answered with INVALID_ARGUMENT (tonic's stock codec
//! says INTERNAL, which exporters would retry forever).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;

use prost::Message;
use tonic::codec::{
    BufferSettings, Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings,
};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstEncoder;

use crate::ingestor::{Ingestor, Transport};
use crate::otlp::{OtlpExport, Payload};
use crate::reserving_body::{Reservation, ReservingBody};

/// The gRPC export service for one signal.
pub struct OtlpGrpc<R> {
    ingestor: Arc<Ingestor>,
    max_message_bytes: usize,
    _request: PhantomData<fn() -> R>,
}

impl<R> Clone for OtlpGrpc<R> {
    fn clone(&self) -> Self {
        OtlpGrpc {
            ingestor: self.ingestor.clone(),
            max_message_bytes: self.max_message_bytes,
            _request: PhantomData,
        }
    }
}

impl<R: OtlpExport> OtlpGrpc<R> {
    pub fn new(ingestor: Arc<Ingestor>, max_message_bytes: usize) -> Self {
        OtlpGrpc {
            ingestor,
            max_message_bytes,
            _request: PhantomData,
        }
    }
}

impl<R: OtlpExport> NamedService for OtlpGrpc<R> {
    const NAME: &'static str = R::GRPC_SERVICE;
}

/// A request's body with the working memory reserved for it, held until
/// it is answered.
struct AdmittedRequest<R> {
    request: Payload<R>,
    _reservation: Reservation,
}

struct Export<R>(Arc<Ingestor>, PhantomData<fn() -> R>);

impl<R: OtlpExport> UnaryService<AdmittedRequest<R>> for Export<R> {
    type Response = R::Response;
    type Future = BoxFuture<Response<R::Response>, Status>;

    fn call(&mut self, request: Request<AdmittedRequest<R>>) -> Self::Future {
        let ingestor = self.0.clone();
        Box::pin(async move {
            let AdmittedRequest {
                request,
                _reservation,
            } = request.into_inner();
            let wire_bytes = request.wire_bytes();
            match ingestor.export(request, Transport::Grpc, wire_bytes).await {
                Ok(outcome) => Ok(Response::new(R::response(
                    outcome.rejected,
                    outcome.message,
                ))),
                Err(e) => Err(e.grpc_status()),
            }
        })
    }
}

impl<R, B> Service<http::Request<B>> for OtlpGrpc<R>
where
    R: OtlpExport,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != format!("/{}/Export", R::GRPC_SERVICE) {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        let mut gzip = EnabledCompressionEncodings::default();
        gzip.enable(CompressionEncoding::Gzip);
        if self.ingestor.is_saturated() {
            // Refused before the body is read (and before tonic buffers it).
            let admitted = self.ingestor.admit(R::SIGNAL, Transport::Grpc, 1);
            if let Err(e) = admitted {
                return Box::pin(async move { Ok(e.grpc_status().into_http()) });
            }
        }
        // The body's bytes count against the in-flight budget as they
        // arrive, not only once tonic has buffered all of them.
        let (parts, body) = req.into_parts();
        let (body, reservation) =
            ReservingBody::new(body, self.ingestor.clone(), R::SIGNAL, Transport::Grpc);
        let req = http::Request::from_parts(parts, body);
        let codec = OtlpCodec::<R::Response, R> {
            ingestor: self.ingestor.clone(),
            reservation,
            _types: PhantomData,
        };
        let mut grpc = tonic::server::Grpc::new(codec)
            .apply_compression_config(gzip, gzip)
            .apply_max_message_size_config(Some(self.max_message_bytes), None);
        let export = Export::<R>(self.ingestor.clone(), PhantomData);
        Box::pin(async move { Ok(grpc.unary(export, req).await) })
    }
}

/// Prost encoding, with decode failures reported as INVALID_ARGUMENT and
/// each message's working memory reserved (in the request's reservation)
/// before decoding.
struct OtlpCodec<E, D> {
    ingestor: Arc<Ingestor>,
    reservation: Reservation,
    _types: PhantomData<fn() -> (E, D)>,
}

impl<E, D> Codec for OtlpCodec<E, D>
where
    E: Message + Send + 'static,
    D: OtlpExport,
{
    type Encode = E;
    type Decode = AdmittedRequest<D>;
    type Encoder = ProstEncoder<E>;
    type Decoder = InvalidArgumentDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        InvalidArgumentDecoder {
            ingestor: self.ingestor.clone(),
            reservation: self.reservation.clone(),
            _decoded: PhantomData,
        }
    }
}

struct InvalidArgumentDecoder<D> {
    ingestor: Arc<Ingestor>,
    reservation: Reservation,
    _decoded: PhantomData<fn() -> D>,
}

impl<D: OtlpExport> Decoder for InvalidArgumentDecoder<D> {
    type Item = AdmittedRequest<D>;
    type Error = Status;

    /// Reserves the message's working memory, then counts the records on
    /// the wire, so an overload or an oversized batch is refused before
    /// decoding allocates anything for it.
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<AdmittedRequest<D>>, Status> {
        use bytes::Buf;
        self.ingestor
            .reserve_working_memory(
                &self.reservation,
                D::SIGNAL,
                Transport::Grpc,
                buf.remaining(),
            )
            .map_err(|e| e.grpc_status())?;
        // Taken from tonic's buffer without a copy; its records are counted
        // in place and the ingestor converts it from there.
        let body = buf.copy_to_bytes(buf.remaining());
        crate::wire_count::check_protobuf(&body, D::RECORD_PATH, D::SIGNAL.name())
            .map_err(|e| e.grpc_status())?;
        Ok(Some(AdmittedRequest {
            request: Payload::Protobuf(body),
            _reservation: self.reservation.clone(),
        }))
    }
}
