//! Admission control for requests in flight: a byte budget for requests
//! that are being decoded, converted and written. A request reserves its
//! estimated working memory before it is decoded and gives it back when it
//! is answered; when the budget is spent, new requests are refused with
//! 429 / RESOURCE_EXHAUSTED at once instead of piling up in memory.
//!
//! Storage keeps the other ingest share (unflushed data) itself, see
//! `StorageConfig::max_unflushed_bytes`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::IngestError;

/// Working memory of one request per byte of its (uncompressed) body:
/// the body itself, the decoded protobuf/JSON message (owned strings and
/// vectors, a few times the wire size), the Arrow batch and its WAL
/// encoding. Deliberately on the high side: refusing a little early is
/// cheap, an OOM is not.
pub const WORKING_MEMORY_PER_BODY_BYTE: usize = 8;

/// The shared in-flight byte budget. Cheap to clone.
#[derive(Clone, Debug)]
pub struct InFlight {
    inner: Arc<Budget>,
}

#[derive(Debug)]
struct Budget {
    limit: usize,
    used: AtomicUsize,
}

/// Bytes held by one admitted request; released when dropped.
#[derive(Debug)]
pub struct Admitted {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl InFlight {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> InFlight {
        InFlight {
            inner: Arc::new(Budget {
                limit: limit.max(1),
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// Whether the budget is already spent: lets a receiver refuse before
    /// even reading a body.
    pub fn is_full(&self) -> bool {
        self.inner.used.load(Ordering::Acquire) >= self.inner.limit
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// An empty reservation, to grow with [`Admitted::reserve`] as a
    /// request's body arrives and is decoded.
    pub fn empty(&self) -> Admitted {
        Admitted {
            budget: self.inner.clone(),
            bytes: 0,
        }
    }

    /// Reserves the working memory of a request whose body is `body_bytes`
    /// long, or refuses it. A request larger than the whole budget is
    /// admitted only when nothing else is in flight, so the largest
    /// accepted request can always get through eventually.
    pub fn admit(&self, body_bytes: usize) -> Result<Admitted, IngestError> {
        let mut admitted = self.empty();
        admitted.reserve(working_memory(body_bytes))?;
        Ok(admitted)
    }
}

/// The working memory of a request whose (uncompressed) body is
/// `body_bytes` long.
pub fn working_memory(body_bytes: usize) -> usize {
    body_bytes.saturating_mul(WORKING_MEMORY_PER_BODY_BYTE)
}

impl Admitted {
    /// Grows this reservation to `bytes` (never shrinks it), or refuses
    /// and leaves it as it was. Capped at the whole budget, which a
    /// reservation gets only when it is the only one.
    pub fn reserve(&mut self, bytes: usize) -> Result<(), IngestError> {
        let limit = self.budget.limit;
        let target = bytes.clamp(1, limit);
        let Some(extra) = target.checked_sub(self.bytes).filter(|&e| e > 0) else {
            return Ok(());
        };
        let mine = self.bytes;
        let reserved = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + extra <= limit || used == mine).then_some(used + extra)
            });
        match reserved {
            Ok(_) => {
                self.bytes = target;
                Ok(())
            }
            Err(used) => Err(IngestError::Overloaded(format!(
                "server is overloaded: {} MiB of requests are being received or processed (limit {} MiB); retry shortly",
                used >> 20,
                limit >> 20
            ))),
        }
    }

    /// Bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_within_the_budget_and_releases_on_drop() {
        let budget = InFlight::new(1000);
        let a = budget.admit(50).unwrap(); // 400
        let b = budget.admit(50).unwrap(); // 800
        let refused = budget.admit(50).unwrap_err();
        assert_eq!(refused.http_status(), 429);
        assert!(refused.retry_after_secs().is_some());
        drop(a);
        assert_eq!(budget.used(), 400);
        let c = budget.admit(50).unwrap();
        drop((b, c));
        assert_eq!(budget.used(), 0);
        assert!(!budget.is_full());
    }

    #[test]
    fn an_oversized_request_gets_the_whole_budget_only_when_alone() {
        let budget = InFlight::new(1000);
        let small = budget.admit(1).unwrap();
        assert!(budget.admit(10_000).is_err());
        drop(small);
        let big = budget.admit(10_000).unwrap();
        assert!(budget.is_full());
        assert!(budget.admit(1).is_err());
        drop(big);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_reservation_grows_as_a_body_arrives_and_a_refusal_keeps_what_it_had() {
        let budget = InFlight::new(1000);
        let mut arriving = budget.empty();
        arriving.reserve(300).unwrap();
        arriving.reserve(200).unwrap(); // never shrinks
        assert_eq!((arriving.bytes(), budget.used()), (300, 300));
        let mut other = budget.empty();
        other.reserve(600).unwrap();
        let refused = arriving.reserve(500).unwrap_err();
        assert_eq!(refused.http_status(), 429);
        assert_eq!((arriving.bytes(), budget.used()), (300, 900));
        drop(other);
        // Alone, a reservation may take the whole budget, no more.
        arriving.reserve(5000).unwrap();
        assert_eq!((arriving.bytes(), budget.used()), (1000, 1000));
        drop(arriving);
        assert_eq!(budget.used(), 0);
    }
}
