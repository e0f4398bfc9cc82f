//! OTLP → Arrow: one module per signal, each producing a batch in the
//! storage schema plus an account of the records it had to reject.

mod ids;
pub mod in_place;
pub mod logs;
pub mod metrics;
pub mod traces;

use std::borrow::Borrow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringBuilder};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::anyvalue::{
    AttrBuilder, Text, append_pairs, instance_id, new_attr_builder, service_name,
};

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

/// Where records come from: their resource (its attributes, service and
/// instance) and instrumentation scope, shared by every record under them.
pub struct Origin<'a> {
    pub resource: Vec<(&'a str, Text<'a>)>,
    pub service: String,
    pub instance: Option<String>,
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
            instance: instance_id(attrs),
            scope_name,
            scope_version,
        }
    }
}

/// The columns every signal's table ends its own with (storage's
/// `attributes_and_scope`): a record's attributes, its resource's (and its
/// instance), and its instrumentation scope.
pub(super) struct OriginColumns {
    attributes: AttrBuilder,
    resource_attributes: AttrBuilder,
    instance: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
}

impl OriginColumns {
    pub(super) fn new() -> Self {
        OriginColumns {
            attributes: new_attr_builder(),
            resource_attributes: new_attr_builder(),
            instance: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
        }
    }

    /// Appends one record's attributes and where it comes from.
    pub(super) fn append<'t, T: Borrow<Text<'t>>>(
        &mut self,
        origin: &Origin<'_>,
        attributes: impl IntoIterator<Item = (&'t str, T)>,
    ) {
        append_pairs(&mut self.attributes, attributes);
        append_pairs(
            &mut self.resource_attributes,
            origin.resource.iter().map(|(k, v)| (*k, v)),
        );
        self.instance.append_option(origin.instance.as_deref());
        self.scope_name.append_value(origin.scope_name);
        self.scope_version.append_value(origin.scope_version);
    }

    /// The five columns, in schema order.
    pub(super) fn finish(&mut self) -> [ArrayRef; 5] {
        [
            Arc::new(self.attributes.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.instance.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
        ]
    }
}

/// A signal's table columns, built a record at a time.
pub(super) trait TableColumns {
    fn new() -> Self;
    fn finish(self) -> Result<RecordBatch, ArrowError>;
}

/// One request's records on their way to a batch: the columns, the
/// records rejected, and the window records must start in. Each signal
/// adds its own `push`.
pub(super) struct Batch<C> {
    pub(super) columns: C,
    pub(super) rejected: Rejections,
    pub(super) arrival: Arrival,
}

impl<C: TableColumns> Batch<C> {
    pub(super) fn new(arrival: Arrival) -> Self {
        Batch {
            columns: C::new(),
            rejected: Rejections::default(),
            arrival,
        }
    }

    pub(super) fn finish(self) -> Result<Converted, ArrowError> {
        Ok(Converted {
            batch: fitted(self.columns.finish()?)?,
            rejected: self.rejected,
        })
    }
}

/// `batch` with each column's buffers cut down to what they hold.
///
/// Arrow's builders start with room for 1024 rows (8 KiB for a time
/// column, about 5 KiB for a text one, more for a map), and a request
/// rarely fills it: a 50-record logs batch held about 72 KiB, 1.4 KiB a
/// log, most of it empty room. The memtable keeps each request's batch
/// and counts its memory, so it flushed and refused load (the memory
/// budget's unflushed share) at a fraction of the rows it could hold.
/// Shrinking is a `realloc` per buffer. Fitted, a flush holds about four
/// times the rows: log ingest took 6 % less CPU per line (three alternated
/// 12 s pairs at batch 50), for about 50 MiB more peak memory at the same
/// `--flush-size`.
pub(super) fn fitted(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let (schema, mut columns, rows) = batch.into_parts();
    for column in &mut columns {
        column.shrink_to_fit();
    }
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
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
