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

    /// Reserves the working memory of a request whose body is `body_bytes`
    /// long, or refuses it. A request larger than the whole budget is
    /// admitted only when nothing else is in flight, so the largest
    /// accepted request can always get through eventually.
    pub fn admit(&self, body_bytes: usize) -> Result<Admitted, IngestError> {
        let limit = self.inner.limit;
        let bytes = body_bytes
            .saturating_mul(WORKING_MEMORY_PER_BODY_BYTE)
            .clamp(1, limit);
        let reserved = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= limit).then_some(used + bytes)
            });
        match reserved {
            Ok(_) => Ok(Admitted {
                budget: self.inner.clone(),
                bytes,
            }),
            Err(used) => Err(IngestError::Overloaded(format!(
                "server is overloaded: {} MiB of requests are being processed (limit {} MiB); retry shortly",
                used >> 20,
                limit >> 20
            ))),
        }
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
}
