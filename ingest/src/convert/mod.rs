//! OTLP → Arrow: one module per signal, each producing a batch in the
//! storage schema plus an account of the records it had to reject.

mod ids;
pub mod in_place;
pub mod logs;
pub mod metrics;
pub mod traces;

use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::anyvalue::{Text, service_name};

pub use ids::{HexId, hex_id, optional_id};

/// The result of converting one request.
pub struct Converted {
    pub batch: RecordBatch,
    pub rejected: Rejections,
}

/// Records dropped as individually invalid, reported to the client through
/// OTLP `partial_success`.
#[derive(Debug, Default)]
pub struct Rejections {
    pub count: usize,
    /// The first few reasons, to name the problem without unbounded text.
    reasons: Vec<String>,
}

const MAX_REASONS: usize = 3;

impl Rejections {
    pub fn reject(&mut self, n: usize, reason: impl FnOnce() -> String) {
        self.count += n;
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(reason());
        }
    }

    /// The `partial_success.error_message` text.
    pub fn message(&self) -> String {
        if self.count == 0 {
            return String::new();
        }
        let mut msg = format!(
            "{} record(s) rejected: {}",
            self.count,
            self.reasons.join("; ")
        );
        if self.count > self.reasons.len() {
            msg.push_str("; …");
        }
        msg
    }
}

/// When a request arrived and which record times it may carry. Records
/// outside `[earliest, latest]` are rejected through partial success: a
/// client clock years off (or a hostile one) would otherwise create a file
/// per hour it names, and future hours that retention never removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Stands in for missing timestamps (ns).
    pub received: i64,
    pub earliest: i64,
    pub latest: i64,
}

impl Arrival {
    /// Any time accepted (for tests and tools that replay old data).
    pub fn unbounded(received: i64) -> Arrival {
        Arrival {
            received,
            earliest: i64::MIN,
            latest: i64::MAX,
        }
    }

    /// Why `time` is refused, if it is.
    pub fn refuse(&self, time: i64) -> Option<String> {
        let text = |t: i64| {
            chrono::DateTime::from_timestamp_nanos(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        (time < self.earliest || time > self.latest).then(|| {
            format!(
                "time {} is outside the accepted window {} to {}",
                text(time),
                text(self.earliest),
                text(self.latest)
            )
        })
    }
}

/// OTLP times are u64 ns; Arrow's are i64. Anything past 2262 is clamped.
pub fn to_nanos(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Where records come from: their resource (its attributes and service) and
/// instrumentation scope, shared by every record under them.
pub struct Origin<'a> {
    pub resource: Vec<(&'a str, Text<'a>)>,
    pub service: String,
    pub scope_name: &'a str,
    pub scope_version: &'a str,
}

impl<'a> Origin<'a> {
    pub fn new(resource: Option<&'a Resource>, scope: Option<&'a InstrumentationScope>) -> Self {
        let attrs = resource_attributes(resource);
        let (scope_name, scope_version) = scope_name_version(scope);
        Origin {
            resource: attrs
                .iter()
                .map(|kv| (kv.key.as_str(), Text::of(kv.value.as_ref())))
                .collect(),
            service: service_name(attrs),
            scope_name,
            scope_version,
        }
    }
}

/// A resource's attributes; none without a resource.
pub fn resource_attributes(resource: Option<&Resource>) -> &[KeyValue] {
    resource
        .map(|r| r.attributes.as_slice())
        .unwrap_or_default()
}

/// A scope's name and version; empty without a scope.
pub fn scope_name_version(scope: Option<&InstrumentationScope>) -> (&str, &str) {
    scope
        .map(|s| (s.name.as_str(), s.version.as_str()))
        .unwrap_or_default()
}
