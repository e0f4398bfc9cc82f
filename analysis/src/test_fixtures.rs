//! Hand-built window statistics shared by the problem-location unit tests.

use crate::problem_windows::Stats;
use crate::subject::Subject;

/// Statistics of `spans` spans with `errors` errors starting there and
/// `self_ms` of self time each.
pub(crate) fn stats(spans: f64, errors: f64, self_ms: f64) -> Stats {
    Stats {
        spans,
        origin_errors: errors,
        self_ns: self_ms * 1e6 * spans,
        self_sq: (self_ms * 1e6).powi(2) * spans,
    }
}

/// The subject of a whole service.
pub(crate) fn service(s: &str) -> Subject {
    Subject::Service { service: s.into() }
}
