//! The part of ingest both transports share: convert a decoded request,
//! append it durably, count what happened.

use std::collections::HashMap;
use std::sync::Arc;

use loupe_base::self_metrics::{Counter, Registry};
use loupe_storage::{Signal, Storage};

use crate::admission::{Admitted, InFlight, working_memory};
use crate::convert::Arrival;
use crate::error::IngestError;
use crate::otlp::{OtlpExport, Payload};
use crate::reserving_body::Reservation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Grpc,
    Http,
    /// Loupe's own events (e.g. capacity fallbacks), stored as telemetry.
    Internal,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
            Transport::Internal => "internal",
        }
    }
}

/// What became of a request that was (at least partly) stored.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rejected: usize,
    pub message: String,
}

struct Counters {
    records_accepted: Arc<Counter>,
    records_rejected: Arc<Counter>,
    bytes_accepted: Arc<Counter>,
    bytes_rejected: Arc<Counter>,
    requests_failed: Arc<Counter>,
    requests_overloaded: Arc<Counter>,
}

/// Which record times are accepted, relative to arrival: no older than the
/// signal's retention (it would be deleted at once), no further ahead than
/// `future` (clock skew, not a client's typo of a year).
#[derive(Debug, Clone, Copy)]
pub struct AcceptWindow {
    /// Per signal, in `Signal::ALL` order.
    pub past: [std::time::Duration; 3],
    pub future: std::time::Duration,
}

impl AcceptWindow {
    /// Everything accepted (for tests and replaying old data).
    pub const UNBOUNDED: AcceptWindow = AcceptWindow {
        past: [std::time::Duration::MAX; 3],
        future: std::time::Duration::MAX,
    };

    pub(crate) fn arrival(&self, signal: Signal, received: i64) -> Arrival {
        let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Arrival {
            received,
            earliest: received.saturating_sub(nanos(self.past[signal.index()])),
            latest: received.saturating_add(nanos(self.future)),
        }
    }
}

/// Records one request may hold. Each becomes a row that repeats its
/// resource and scope, so millions of near-empty records in one 16 MiB
/// body would cost gigabytes to build; SDKs and the Collector send
/// batches of hundreds to a few thousand.
pub const MAX_RECORDS_PER_REQUEST: usize = 200_000;

/// Converts and stores export requests. Shared by the gRPC and HTTP receivers.
pub struct Ingestor {
    storage: Arc<Storage>,
    counters: HashMap<(Signal, Transport), Counters>,
    window: AcceptWindow,
    in_flight: InFlight,
}

impl Ingestor {
    /// `in_flight_bytes` is the working memory requests being decoded,
    /// converted and written may hold together (see [`InFlight`]).
    pub fn new(
        storage: Arc<Storage>,
        registry: &Registry,
        window: AcceptWindow,
        in_flight_bytes: usize,
    ) -> Ingestor {
        let mut counters = HashMap::new();
        for signal in Signal::ALL {
            for transport in [Transport::Grpc, Transport::Http, Transport::Internal] {
                let labels = [("signal", signal.name()), ("transport", transport.name())];
                let with = |outcome: &'static str| [labels[0], labels[1], ("outcome", outcome)];
                let records = |outcome| {
                    registry.counter(
                        "loupe_ingest_records_total",
                        "Records (log records, spans, data points) received.",
                        &with(outcome),
                    )
                };
                let bytes = |outcome| {
                    registry.counter(
                        "loupe_ingest_bytes_total",
                        "Uncompressed request bytes received.",
                        &with(outcome),
                    )
                };
                counters.insert(
                    (signal, transport),
                    Counters {
                        records_accepted: records("accepted"),
                        records_rejected: records("rejected"),
                        bytes_accepted: bytes("accepted"),
                        bytes_rejected: bytes("rejected"),
                        requests_failed: registry.counter(
                            "loupe_ingest_failed_requests_total",
                            "Export requests refused as a whole (bad input, overload, errors).",
                            &labels,
                        ),
                        requests_overloaded: registry.counter(
                            "loupe_ingest_overloaded_requests_total",
                            "Export requests refused with 429 / RESOURCE_EXHAUSTED because the memory budget's ingest share was spent (in-flight requests or unflushed data).",
                            &labels,
                        ),
                    },
                );
            }
        }
        Ingestor {
            storage,
            counters,
            window,
            in_flight: InFlight::new(in_flight_bytes),
        }
    }

    /// Whether the in-flight budget is spent right now (a receiver may
    /// refuse before reading the body).
    pub fn is_saturated(&self) -> bool {
        self.in_flight.is_full()
    }

    /// Bytes of working memory reserved by the requests in flight.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight.used()
    }

    /// Reserves the working memory of a request of `body_bytes` before it
    /// is decoded; refused requests are counted as overloaded.
    pub fn admit(
        &self,
        signal: Signal,
        transport: Transport,
        body_bytes: usize,
    ) -> Result<Admitted, IngestError> {
        self.in_flight.admit(body_bytes).inspect_err(|_| {
            self.count_failure(signal, transport, body_bytes);
            self.count_overload(signal, transport);
        })
    }

    /// An empty reservation of in-flight memory for one request, grown as
    /// its body arrives ([`crate::ReservingBody`]) and when it is decoded
    /// ([`Ingestor::reserve_working_memory`]).
    pub fn reservation(&self) -> Reservation {
        Reservation::new(self.in_flight.empty())
    }

    /// Grows `reservation` to the working memory of a request of
    /// `body_bytes` (uncompressed) before it is decoded; refused requests
    /// are counted as overloaded.
    pub fn reserve_working_memory(
        &self,
        reservation: &Reservation,
        signal: Signal,
        transport: Transport,
        body_bytes: usize,
    ) -> Result<(), IngestError> {
        reservation
            .reserve(working_memory(body_bytes))
            .inspect_err(|_| {
                self.count_failure(signal, transport, body_bytes);
                self.count_overload(signal, transport);
            })
    }

    /// Counts a request refused because the server is overloaded.
    pub fn count_overload(&self, signal: Signal, transport: Transport) {
        if let Some(c) = self.counters.get(&(signal, transport)) {
            c.requests_overloaded.inc();
        }
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Stores every valid record of `payload`; `wire_bytes` is its
    /// uncompressed size as sent, for accounting.
    pub async fn export<R: OtlpExport>(
        &self,
        payload: Payload<R>,
        transport: Transport,
        wire_bytes: usize,
    ) -> Result<Outcome, IngestError> {
        let received = loupe_base::clock::now_nanos();
        let converted = match payload.convert(self.window.arrival(R::SIGNAL, received)) {
            Ok(converted) => converted,
            Err(e) => {
                self.count_failure(R::SIGNAL, transport, wire_bytes);
                return Err(e);
            }
        };
        let accepted = converted.batch.num_rows();
        let stored = self.storage.append(R::SIGNAL, converted.batch).await;
        let counters = self.counters.get(&(R::SIGNAL, transport));
        match stored {
            Ok(()) => {
                if let Some(c) = counters {
                    c.records_accepted.inc_by(accepted as u64);
                    c.records_rejected.inc_by(converted.rejected.count as u64);
                    c.bytes_accepted.inc_by(wire_bytes as u64);
                }
                Ok(Outcome {
                    rejected: converted.rejected.count,
                    message: converted.rejected.message(),
                })
            }
            Err(e) => {
                self.count_failure(R::SIGNAL, transport, wire_bytes);
                let e = IngestError::from(e);
                if matches!(e, IngestError::Overloaded(_)) {
                    self.count_overload(R::SIGNAL, transport);
                }
                Err(e)
            }
        }
    }

    /// Counts a request refused before it could be decoded.
    pub fn count_failure(&self, signal: Signal, transport: Transport, wire_bytes: usize) {
        if let Some(c) = self.counters.get(&(signal, transport)) {
            c.requests_failed.inc();
            c.bytes_rejected.inc_by(wire_bytes as u64);
        }
    }
}
