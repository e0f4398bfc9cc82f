//! OTLP logs → the `logs` table.

use std::borrow::Borrow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use loupe_storage::Signal;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::{
    Arrival, Batch, Converted, HexId, Origin, OriginColumns, TableColumns, optional_id, to_nanos,
};
use crate::anyvalue::{Text, append};

/// `severity_text` for records that only carry a number, per the OTLP
/// severity ranges (1–4 TRACE … 21–24 FATAL).
fn severity_text_for(number: i32) -> &'static str {
    match number {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "",
    }
}

pub(super) struct Columns {
    time: TimestampNanosecondBuilder,
    observed_time: TimestampNanosecondBuilder,
    service: StringBuilder,
    severity_text: StringBuilder,
    severity_number: Int32Builder,
    body: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    flags: UInt32Builder,
    event_name: StringBuilder,
    origin: OriginColumns,
}

impl TableColumns for Columns {
    fn new() -> Self {
        Columns {
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            observed_time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            service: StringBuilder::new(),
            severity_text: StringBuilder::new(),
            severity_number: Int32Builder::new(),
            body: StringBuilder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            flags: UInt32Builder::new(),
            event_name: StringBuilder::new(),
            origin: OriginColumns::new(),
        }
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.observed_time.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.severity_text.finish()),
            Arc::new(self.severity_number.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.event_name.finish()),
        ];
        columns.extend(self.origin.finish());
        RecordBatch::try_new(Signal::Logs.schema(), columns)
    }
}

/// One log record's fields as conversion reads them, whether from a
/// decoded request ([`convert`]) or in place from its protobuf body
/// ([`super::in_place`]).
#[derive(Default)]
pub(super) struct LogRow<'a> {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: &'a str,
    pub body: Text<'a>,
    pub flags: u32,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub event_name: &'a str,
}

impl<'a> LogRow<'a> {
    fn of(record: &'a LogRecord) -> Self {
        LogRow {
            time_unix_nano: record.time_unix_nano,
            observed_time_unix_nano: record.observed_time_unix_nano,
            severity_number: record.severity_number,
            severity_text: &record.severity_text,
            body: Text::of(record.body.as_ref()),
            flags: record.flags,
            trace_id: &record.trace_id,
            span_id: &record.span_id,
            event_name: &record.event_name,
        }
    }

    fn ids(&self) -> Result<(Option<HexId>, Option<HexId>), String> {
        Ok((
            optional_id(self.trace_id, 16, "trace_id")?,
            optional_id(self.span_id, 8, "span_id")?,
        ))
    }
}

/// The log records of one request on their way to a batch.
pub(super) type LogBatch = Batch<Columns>;

impl LogBatch {
    /// Adds a record, or rejects it for a bad id or a time outside the
    /// arrival window; `arrival.received` stands in for missing times.
    pub(super) fn push<'t, T: Borrow<Text<'t>>>(
        &mut self,
        origin: &Origin<'_>,
        record: LogRow<'_>,
        attributes: impl IntoIterator<Item = (&'t str, T)>,
    ) {
        let service = &origin.service;
        let (trace_id, span_id) = match record.ids() {
            Ok(ids) => ids,
            Err(reason) => {
                self.rejected
                    .reject(1, || format!("log record of service {service:?}: {reason}"));
                return;
            }
        };
        let observed = match to_nanos(record.observed_time_unix_nano) {
            0 => self.arrival.received,
            t => t,
        };
        let time = match to_nanos(record.time_unix_nano) {
            0 => observed,
            t => t,
        };
        if let Some(reason) = self.arrival.refuse(time) {
            self.rejected
                .reject(1, || format!("log record of service {service:?}: {reason}"));
            return;
        }
        let c = &mut self.columns;
        c.time.append_value(time);
        c.observed_time.append_value(observed);
        c.service.append_value(service);
        if record.severity_text.is_empty() {
            c.severity_text
                .append_value(severity_text_for(record.severity_number));
        } else {
            c.severity_text.append_value(record.severity_text);
        }
        c.severity_number.append_value(record.severity_number);
        append(&mut c.body, &record.body);
        c.trace_id.append_option(trace_id.as_deref());
        c.span_id.append_option(span_id.as_deref());
        c.flags.append_value(record.flags);
        c.event_name
            .append_option(Some(record.event_name).filter(|s| !s.is_empty()));
        c.origin.append(origin, attributes);
    }
}

/// Converts a request; `arrival.received` stands in for missing
/// timestamps, and records outside its window are rejected.
pub fn convert(
    request: &ExportLogsServiceRequest,
    arrival: Arrival,
) -> Result<Converted, ArrowError> {
    let mut batch = LogBatch::new(arrival);
    for resource_logs in &request.resource_logs {
        for scope_logs in &resource_logs.scope_logs {
            let origin = Origin::new(resource_logs.resource.as_ref(), scope_logs.scope.as_ref());
            for record in &scope_logs.log_records {
                let attributes = record
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.as_str(), Text::of(kv.value.as_ref())));
                batch.push(&origin, LogRow::of(record), attributes);
            }
        }
    }
    batch.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, MapArray};
    use arrow::datatypes::{Int32Type, TimestampNanosecondType};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn maps_fields_fills_times_and_rejects_bad_ids() {
        let good = LogRecord {
            time_unix_nano: 0,
            observed_time_unix_nano: 500,
            severity_number: 17,
            body: Some(AnyValue {
                value: Some(Value::StringValue("boom".into())),
            }),
            attributes: vec![kv("http.response.status_code", Value::IntValue(500))],
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        };
        let bad = LogRecord {
            trace_id: vec![1; 7],
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", Value::StringValue("cart".into())),
                        kv("service.instance.id", Value::StringValue("cart-1".into())),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![good, bad],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let out = convert(&request, Arrival::unbounded(999)).unwrap();
        let b = &out.batch;
        assert_eq!(b.num_rows(), 1);
        assert_eq!(out.rejected.count, 1);
        assert!(
            out.rejected
                .message()
                .contains("trace_id must be 16 bytes, got 7")
        );
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        assert_eq!(
            col("time")
                .as_primitive::<TimestampNanosecondType>()
                .value(0),
            500
        );
        assert_eq!(col("service").as_string::<i32>().value(0), "cart");
        assert_eq!(col("instance").as_string::<i32>().value(0), "cart-1");
        // The batch holds its row, not the builders' room for 1024 (72 KiB).
        assert!(
            b.get_array_memory_size() < 8 << 10,
            "{}",
            b.get_array_memory_size()
        );
        assert_eq!(col("severity_text").as_string::<i32>().value(0), "ERROR");
        assert_eq!(
            col("severity_number").as_primitive::<Int32Type>().value(0),
            17
        );
        assert_eq!(col("trace_id").as_string::<i32>().value(0), "01".repeat(16));
        let attrs = col("attributes");
        let attrs = attrs.as_any().downcast_ref::<MapArray>().unwrap();
        assert_eq!(attrs.value(0).column(1).as_string::<i32>().value(0), "500");
    }
}
