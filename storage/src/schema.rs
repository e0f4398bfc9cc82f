//! The Arrow schemas of the three telemetry tables.
//!
//! Column names and types here are Loupe's public SQL contract (the
//! README's table of tables); ingest builds batches against them, storage persists them and
//! query exposes them as `logs`, `spans` and `metrics`.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, MapBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// One of the three OpenTelemetry signals; each is stored as its own table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Logs,
    Spans,
    Metrics,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Logs, Signal::Spans, Signal::Metrics];

    /// The SQL table name, also used in paths, metrics labels and the catalog.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Spans => "spans",
            Signal::Metrics => "metrics",
        }
    }

    /// Index into per-signal arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The column that places a row in time: used to partition files, to
    /// record each file's time range and to prune files at query time.
    pub fn time_column(self) -> &'static str {
        match self {
            Signal::Spans => "start_time",
            Signal::Logs | Signal::Metrics => "time",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Signal::Logs => LOGS.clone(),
            Signal::Spans => SPANS.clone(),
            Signal::Metrics => METRICS.clone(),
        }
    }

    fn from_u8(v: u8) -> Option<Signal> {
        Signal::ALL.get(v as usize).copied()
    }

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn try_from_u8(v: u8) -> Option<Signal> {
        Self::from_u8(v)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signal::ALL
            .into_iter()
            .find(|sig| sig.name() == s)
            .ok_or_else(|| format!("unknown signal {s:?}"))
    }
}

/// `Timestamp(Nanosecond, UTC)`, the type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `Map<Utf8, Utf8>`: attributes with every value rendered as text, so that
/// `attributes['http.response.status_code'] = '500'` works whatever type the
/// SDK sent. Taken from `MapBuilder` so builders and schema always agree.
pub fn attributes_type() -> DataType {
    static TYPE: LazyLock<DataType> = LazyLock::new(|| {
        MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
            .finish()
            .data_type()
            .clone()
    });
    TYPE.clone()
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn attrs(name: &str) -> Field {
    Field::new(name, attributes_type(), false)
}

/// Text columns with few distinct values, mostly short (service,
/// operation name, kind, status, severity, unit, …): queries read them as
/// views, and splits store them without zstd, their dictionary encoding
/// being compression enough.
pub const DIMENSIONS: [&str; 10] = [
    "service",
    "instance",
    "name",
    "kind",
    "status_code",
    "severity_text",
    "event_name",
    "unit",
    "temporality",
    "description",
];

/// The column holding each row's `service.instance.id` resource attribute.
///
/// The attribute is also in `resource_attributes`; it is promoted because
/// per-instance questions (the Services page's instance counts, problem
/// location's instance suspects, capacity's live load) asked it of every
/// row, and reading it from the map decoded about 16 strings a span: the
/// instance count made the Services endpoint's query 4.5× slower (370 ms
/// against 83 at 2.2 M spans). As a column it is a few bytes of
/// dictionary runs. Files written before it get it from the map when read
/// ([`crate::instance`]).
pub const INSTANCE: &str = "instance";

/// The resource attribute [`INSTANCE`] promotes.
pub const INSTANCE_KEY: &str = "service.instance.id";

/// The columns every signal ends its own with: what the data point says
/// about itself, about its resource (its instance promoted), and which
/// instrumentation scope made it.
fn attributes_and_scope() -> [Field; 5] {
    [
        attrs("attributes"),
        attrs("resource_attributes"),
        text(INSTANCE, true),
        text("scope_name", false),
        text("scope_version", false),
    ]
}

/// `fields` followed by [`attributes_and_scope`].
fn with_attributes_and_scope(mut fields: Vec<Field>) -> SchemaRef {
    fields.extend(attributes_and_scope());
    Arc::new(Schema::new(fields))
}

static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    with_attributes_and_scope(vec![
        ts("time", false),
        ts("observed_time", false),
        text("service", false),
        text("severity_text", false),
        Field::new("severity_number", DataType::Int32, false),
        text("body", true),
        text("trace_id", true),
        text("span_id", true),
        Field::new("flags", DataType::UInt32, false),
        text("event_name", true),
    ])
});

static SPANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        text("trace_id", false),
        text("span_id", false),
        text("parent_span_id", true),
        text("trace_state", true),
        text("service", false),
        text("name", false),
        ts("start_time", false),
        ts("end_time", false),
        Field::new("duration_ns", DataType::Int64, false),
        text("kind", false),
        text("status_code", false),
        text("status_message", true),
    ];
    fields.extend(attributes_and_scope());
    fields.extend([
        // JSON arrays: [{"time": RFC3339, "name": …, "attributes": {…}}]
        text("events", true),
        // JSON arrays: [{"trace_id": …, "span_id": …, "trace_state": …, "attributes": {…}}]
        text("links", true),
    ]);
    Arc::new(Schema::new(fields))
});

static METRICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    with_attributes_and_scope(vec![
        ts("time", false),
        ts("start_time", true),
        text("service", false),
        text("name", false),
        text("description", true),
        text("kind", false),
        text("unit", true),
        Field::new("value", DataType::Float64, true),
        Field::new("count", DataType::UInt64, true),
        Field::new("sum", DataType::Float64, true),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        Field::new("bucket_bounds", list_of(DataType::Float64), true),
        Field::new("bucket_counts", list_of(DataType::UInt64), true),
        Field::new("exp_scale", DataType::Int32, true),
        Field::new("exp_zero_count", DataType::UInt64, true),
        Field::new("exp_positive_offset", DataType::Int32, true),
        Field::new("exp_positive_counts", list_of(DataType::UInt64), true),
        Field::new("exp_negative_offset", DataType::Int32, true),
        Field::new("exp_negative_counts", list_of(DataType::UInt64), true),
        Field::new("quantiles", list_of(DataType::Float64), true),
        Field::new("quantile_values", list_of(DataType::Float64), true),
        text("temporality", true),
        Field::new("is_monotonic", DataType::Boolean, true),
        Field::new("flags", DataType::UInt32, false),
    ])
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_has_its_time_and_service_columns() {
        for signal in Signal::ALL {
            let schema = signal.schema();
            assert!(schema.field_with_name(signal.time_column()).is_ok());
            assert!(schema.field_with_name("service").is_ok());
            assert!(schema.field_with_name(INSTANCE).is_ok());
            assert_eq!(Signal::try_from_u8(signal.to_u8()), Some(signal));
            assert_eq!(signal.name().parse::<Signal>(), Ok(signal));
        }
    }
}
