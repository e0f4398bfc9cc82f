//! OTLP traces → the `spans` table.

use std::borrow::Borrow;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, SecondsFormat, Utc};
use loupe_storage::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use serde_json::{Value as Json, json};

use super::{
    Arrival, Batch, Converted, HexId, Origin, OriginColumns, TableColumns, hex_id, optional_id,
    to_nanos,
};
use crate::anyvalue::{Text, attributes_json};

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

fn rfc3339(ns: u64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(to_nanos(ns)).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(super) fn events_json(events: &[Event]) -> Option<String> {
    if events.is_empty() {
        return None;
    }
    let list: Vec<Json> = events
        .iter()
        .map(|e| json!({"time": rfc3339(e.time_unix_nano), "name": e.name, "attributes": attributes_json(&e.attributes)}))
        .collect();
    Some(Json::Array(list).to_string())
}

pub(super) fn links_json(links: &[Link]) -> Option<String> {
    if links.is_empty() {
        return None;
    }
    let list: Vec<Json> = links
        .iter()
        .map(|l| {
            json!({
                "trace_id": hex::encode(&l.trace_id),
                "span_id": hex::encode(&l.span_id),
                "trace_state": l.trace_state,
                "attributes": attributes_json(&l.attributes),
            })
        })
        .collect();
    Some(Json::Array(list).to_string())
}

pub(super) struct Columns {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    service: StringBuilder,
    name: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    kind: StringBuilder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    origin: OriginColumns,
    events: StringBuilder,
    links: StringBuilder,
}

impl TableColumns for Columns {
    fn new() -> Self {
        Columns {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            service: StringBuilder::new(),
            name: StringBuilder::new(),
            start_time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            end_time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            duration_ns: Int64Builder::new(),
            kind: StringBuilder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            origin: OriginColumns::new(),
            events: StringBuilder::new(),
            links: StringBuilder::new(),
        }
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
        ];
        columns.extend(self.origin.finish());
        columns.push(Arc::new(self.events.finish()));
        columns.push(Arc::new(self.links.finish()));
        RecordBatch::try_new(Signal::Spans.schema(), columns)
    }
}

/// One span's fields as conversion reads them, whether from a decoded
/// request ([`convert`]) or in place from its protobuf body
/// ([`super::in_place`]).
#[derive(Default)]
pub(super) struct SpanRow<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub trace_state: &'a str,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status_code: i32,
    pub status_message: &'a str,
    /// JSON arrays ([`events_json`], [`links_json`]).
    pub events: Option<String>,
    pub links: Option<String>,
}

impl<'a> SpanRow<'a> {
    fn of(span: &'a Span) -> Self {
        let status = span.status.as_ref();
        SpanRow {
            trace_id: &span.trace_id,
            span_id: &span.span_id,
            parent_span_id: &span.parent_span_id,
            trace_state: &span.trace_state,
            name: &span.name,
            kind: span.kind,
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            status_code: status.map_or(0, |s| s.code),
            status_message: status.map_or("", |s| s.message.as_str()),
            events: events_json(&span.events),
            links: links_json(&span.links),
        }
    }

    fn ids(&self) -> Result<(HexId, HexId, Option<HexId>), String> {
        Ok((
            hex_id(self.trace_id, 16, "trace_id")?,
            hex_id(self.span_id, 8, "span_id")?,
            optional_id(self.parent_span_id, 8, "parent_span_id")?,
        ))
    }
}

/// The spans of one request on their way to a batch.
pub(super) type SpanBatch = Batch<Columns>;

impl SpanBatch {
    /// Adds a span, or rejects it for a bad id or a start time outside
    /// the arrival window.
    pub(super) fn push<'t, T: Borrow<Text<'t>>>(
        &mut self,
        origin: &Origin<'_>,
        span: SpanRow<'_>,
        attributes: impl IntoIterator<Item = (&'t str, T)>,
    ) {
        let service = &origin.service;
        let (trace_id, span_id, parent) = match span.ids() {
            Ok(ids) => ids,
            Err(reason) => {
                self.rejected.reject(1, || {
                    format!("span {:?} of service {service:?}: {reason}", span.name)
                });
                return;
            }
        };
        let start = to_nanos(span.start_time_unix_nano);
        let end = to_nanos(span.end_time_unix_nano);
        if let Some(reason) = self.arrival.refuse(start) {
            self.rejected.reject(1, || {
                format!("span {:?} of service {service:?}: {reason}", span.name)
            });
            return;
        }
        let c = &mut self.columns;
        c.trace_id.append_value(&*trace_id);
        c.span_id.append_value(&*span_id);
        c.parent_span_id.append_option(parent.as_deref());
        c.trace_state
            .append_option(Some(span.trace_state).filter(|s| !s.is_empty()));
        c.service.append_value(service);
        c.name.append_value(span.name);
        c.start_time.append_value(start);
        c.end_time.append_value(end);
        c.duration_ns.append_value(end.saturating_sub(start).max(0));
        c.kind.append_value(kind_name(span.kind));
        c.status_code.append_value(status_name(span.status_code));
        c.status_message
            .append_option(Some(span.status_message).filter(|m| !m.is_empty()));
        c.origin.append(origin, attributes);
        c.events.append_option(span.events);
        c.links.append_option(span.links);
    }
}

/// Converts a request; spans starting outside `arrival`'s window are rejected.
pub fn convert(
    request: &ExportTraceServiceRequest,
    arrival: Arrival,
) -> Result<Converted, ArrowError> {
    let mut batch = SpanBatch::new(arrival);
    for resource_spans in &request.resource_spans {
        for scope_spans in &resource_spans.scope_spans {
            let origin = Origin::new(resource_spans.resource.as_ref(), scope_spans.scope.as_ref());
            for span in &scope_spans.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.as_str(), Text::of(kv.value.as_ref())));
                batch.push(&origin, SpanRow::of(span), attributes);
            }
        }
    }
    batch.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    #[test]
    fn maps_kind_status_events_and_rejects_bad_ids() {
        let span = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            name: "GET /cart".into(),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 4_000,
            status: Some(Status {
                code: 2,
                message: "timeout".into(),
            }),
            events: vec![Event {
                time_unix_nano: 2_000,
                name: "exception".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bad = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span, bad],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let out = convert(&request, Arrival::unbounded(0)).unwrap();
        let b = &out.batch;
        assert_eq!((b.num_rows(), out.rejected.count), (1, 1));
        let s = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_string::<i32>()
                .value(0)
                .to_string()
        };
        assert_eq!(s("service"), "unknown_service");
        assert_eq!(s("kind"), "server");
        assert_eq!(s("status_code"), "error");
        assert_eq!(s("status_message"), "timeout");
        assert!(b.column_by_name("parent_span_id").unwrap().is_null(0));
        assert!(
            s("events").contains(r#""name":"exception""#),
            "{}",
            s("events")
        );
        let d = b
            .column_by_name("duration_ns")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0);
        assert_eq!(d, 3_000);
    }
}
