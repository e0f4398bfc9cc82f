//! Request bodies that reserve their bytes against the in-flight budget as
//! they arrive.
//!
//! Both receivers read a whole body into memory before decoding it (tonic
//! buffers each gRPC message; the HTTP receiver collects the body to
//! inflate it). Reserving only at decoding left every body still arriving
//! outside the budget: a thousand slow senders of 16 MiB bodies would
//! hold 16 GiB while the in-flight share read zero. Wrapped in a
//! [`ReservingBody`], a body that would take the budget past its limit
//! ends with 429 / RESOURCE_EXHAUSTED (and a retry hint) instead of being
//! buffered, and the decoder then grows the same [`Reservation`] to the
//! request's full working memory.

use std::error::Error;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use loupe_storage::Signal;

use crate::admission::Admitted;
use crate::error::IngestError;
use crate::ingestor::{Ingestor, Transport};

type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// One request's share of the in-flight budget, held by its body while it
/// arrives and by the decoded request until it is answered; released when
/// the last holder drops it.
#[derive(Clone, Debug)]
pub struct Reservation(Arc<Mutex<Admitted>>);

impl Reservation {
    pub(crate) fn new(admitted: Admitted) -> Reservation {
        Reservation(Arc::new(Mutex::new(admitted)))
    }

    /// Grows the reservation to `bytes` (see [`Admitted::reserve`]).
    pub fn reserve(&self, bytes: usize) -> Result<(), IngestError> {
        // A panic while holding the lock cannot leave `Admitted` half
        // updated (`reserve` changes it only after the budget agreed).
        let mut admitted = self.0.lock().unwrap_or_else(|e| e.into_inner());
        admitted.reserve(bytes)
    }

    /// Bytes reserved.
    pub fn bytes(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).bytes()
    }
}

/// A body whose data frames are reserved against the in-flight budget as
/// they arrive; see the module docs.
pub struct ReservingBody<B> {
    body: Pin<Box<B>>,
    received: usize,
    reservation: Reservation,
    ingestor: Arc<Ingestor>,
    signal: Signal,
    transport: Transport,
}

impl<B> ReservingBody<B> {
    /// Wraps `body` of a `signal` request on `transport`; the returned
    /// reservation is the one the body grows.
    pub fn new(
        body: B,
        ingestor: Arc<Ingestor>,
        signal: Signal,
        transport: Transport,
    ) -> (ReservingBody<B>, Reservation) {
        let reservation = ingestor.reservation();
        let body = ReservingBody {
            body: Box::pin(body),
            received: 0,
            reservation: reservation.clone(),
            ingestor,
            signal,
            transport,
        };
        (body, reservation)
    }

    /// The refusal, as the transport reports it: tonic turns a body error
    /// that is a `Status` into that status, RetryInfo included.
    fn refuse(&self, refused: IngestError) -> BoxError {
        self.ingestor
            .count_failure(self.signal, self.transport, self.received);
        self.ingestor.count_overload(self.signal, self.transport);
        match self.transport {
            Transport::Grpc => Box::new(refused.grpc_status()),
            Transport::Http | Transport::Internal => Box::new(refused),
        }
    }
}

impl<B> Body for ReservingBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let frame = match ready!(self.body.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            self.received = self.received.saturating_add(data.remaining());
            if let Err(refused) = self.reservation.reserve(self.received) {
                return Poll::Ready(Some(Err(self.refuse(refused))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
