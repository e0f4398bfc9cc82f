//! OTLP/protobuf spans and log records → their tables, read in place:
//! each record's fields are borrowed from the request body and appended to
//! the batch without first decoding the request into structs. Decoding
//! with prost allocated every name, key and value as its own `String` and
//! was a fifth of span ingest.
//!
//! Only what is per record is read here: resources, scopes, span events and
//! links (one per many records, or rare) are decoded with prost from their
//! bytes. Anything this reader does not follow exactly as prost would (a
//! singular message sent twice, which prost merges; a field of the wrong
//! wire type; text that is not UTF-8) makes it give the body back, and the
//! caller decodes it with prost instead, which then accepts or refuses it.

use arrow::error::ArrowError;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use prost::Message;

use super::logs::{LogBatch, LogRow};
use super::traces::{SpanBatch, SpanRow, events_json, links_json};
use super::{Arrival, Converted, Origin};
use crate::anyvalue::{Text, to_text};
use crate::protobuf_fields::{Fields, Value};

/// The body is left to prost (see the module documentation).
#[derive(Debug, PartialEq, Eq)]
struct NotInPlace;

impl From<crate::protobuf_fields::Malformed> for NotInPlace {
    fn from(_: crate::protobuf_fields::Malformed) -> Self {
        NotInPlace
    }
}

type Read<T> = Result<T, NotInPlace>;

/// Converts an `ExportTraceServiceRequest` body; `None` when it has to be
/// decoded with prost instead.
pub fn traces(body: &[u8], arrival: Arrival) -> Option<Result<Converted, ArrowError>> {
    let mut batch = SpanBatch::new(arrival);
    let mut scratch = Scratch::default();
    let read = for_each_record(body, |origin, span| {
        let row = read_span(span, &mut scratch)?;
        batch.push(origin, row, scratch.attributes.drain(..));
        Ok(())
    });
    read.ok().map(|()| batch.finish())
}

/// Converts an `ExportLogsServiceRequest` body, as [`traces`] does spans.
pub fn logs(body: &[u8], arrival: Arrival) -> Option<Result<Converted, ArrowError>> {
    let mut batch = LogBatch::new(arrival);
    let mut attributes = Vec::new();
    let read = for_each_record(body, |origin, record| {
        let row = read_log_record(record, &mut attributes)?;
        batch.push(origin, row, attributes.drain(..));
        Ok(())
    });
    read.ok().map(|()| batch.finish())
}

/// Calls `record` with each record's bytes and where it comes from. Traces
/// and logs requests nest alike: request → resource (1) → scope (2) →
/// record (2), with the resource and the scope at field 1 of their
/// levels and a schema URL at field 3.
fn for_each_record<'a>(
    body: &'a [u8],
    mut record: impl FnMut(&Origin<'_>, &'a [u8]) -> Read<()>,
) -> Read<()> {
    for field in Fields::new(body) {
        match field? {
            (1, Value::Bytes(resource_records)) => {
                let resource = singular_and_repeated(resource_records)?;
                let scopes = resource.repeated;
                let resource = decode::<Resource>(resource.singular)?;
                for scope_records in scopes {
                    let scope = singular_and_repeated(scope_records)?;
                    let records = scope.repeated;
                    let scope = decode::<InstrumentationScope>(scope.singular)?;
                    let origin = Origin::new(resource.as_ref(), scope.as_ref());
                    for r in records {
                        record(&origin, r)?;
                    }
                }
            }
            (1, _) => return Err(NotInPlace),
            _ => {}
        }
    }
    Ok(())
}

/// A resource or scope level's singular field 1 and repeated field 2.
struct Level<'a> {
    singular: Option<&'a [u8]>,
    repeated: Vec<&'a [u8]>,
}

/// A resource or scope level: its singular field 1, its repeated field 2
/// and its schema URL (field 3, only checked to be text).
fn singular_and_repeated(message: &[u8]) -> Read<Level<'_>> {
    let mut singular = None;
    let mut repeated = Vec::new();
    for field in Fields::new(message) {
        match field? {
            (1, Value::Bytes(b)) => set_once(&mut singular, b)?,
            (2, Value::Bytes(b)) => repeated.push(b),
            (3, Value::Bytes(schema_url)) => {
                utf8(schema_url)?;
            }
            (1..=3, _) => return Err(NotInPlace),
            _ => {}
        }
    }
    Ok(Level { singular, repeated })
}

fn decode<M: Message + Default>(message: Option<&[u8]>) -> Read<Option<M>> {
    message.map(M::decode).transpose().map_err(|_| NotInPlace)
}

/// Buffers reused from span to span.
#[derive(Default)]
struct Scratch<'a> {
    attributes: Vec<(&'a str, Text<'a>)>,
    events: Vec<&'a [u8]>,
    links: Vec<&'a [u8]>,
}

/// A span's own fields; its attributes are left in `scratch`.
fn read_span<'a>(message: &'a [u8], scratch: &mut Scratch<'a>) -> Read<SpanRow<'a>> {
    scratch.attributes.clear();
    scratch.events.clear();
    scratch.links.clear();
    let mut row = SpanRow::default();
    let mut status = None;
    for field in Fields::new(message) {
        match field? {
            (1, Value::Bytes(b)) => row.trace_id = b,
            (2, Value::Bytes(b)) => row.span_id = b,
            (3, Value::Bytes(b)) => row.trace_state = utf8(b)?,
            (4, Value::Bytes(b)) => row.parent_span_id = b,
            (5, Value::Bytes(b)) => row.name = utf8(b)?,
            // An enum is an int32 on the wire, sign-extended to 64 bits.
            (6, Value::Varint(v)) => row.kind = v as i32,
            (7, Value::Fixed64(t)) => row.start_time_unix_nano = t,
            (8, Value::Fixed64(t)) => row.end_time_unix_nano = t,
            (9, Value::Bytes(kv)) => scratch.attributes.push(read_key_value(kv)?),
            (10 | 12 | 14, Value::Varint(_)) => {}
            (11, Value::Bytes(event)) => scratch.events.push(event),
            (13, Value::Bytes(link)) => scratch.links.push(link),
            (15, Value::Bytes(s)) => set_once(&mut status, s)?,
            (16, Value::Fixed32(_)) => {}
            (1..=16, _) => return Err(NotInPlace),
            _ => {}
        }
    }
    if let Some(status) = status {
        for field in Fields::new(status) {
            match field? {
                (2, Value::Bytes(b)) => row.status_message = utf8(b)?,
                (3, Value::Varint(v)) => row.status_code = v as i32,
                (2 | 3, _) => return Err(NotInPlace),
                _ => {}
            }
        }
    }
    row.events = events_json(&decode_each::<Event>(&scratch.events)?);
    row.links = links_json(&decode_each::<Link>(&scratch.links)?);
    Ok(row)
}

/// A log record's own fields; its attributes are left in `attributes`.
fn read_log_record<'a>(
    message: &'a [u8],
    attributes: &mut Vec<(&'a str, Text<'a>)>,
) -> Read<LogRow<'a>> {
    attributes.clear();
    let mut row = LogRow::default();
    let mut body = None;
    for field in Fields::new(message) {
        match field? {
            (1, Value::Fixed64(t)) => row.time_unix_nano = t,
            (2, Value::Varint(v)) => row.severity_number = v as i32,
            (3, Value::Bytes(b)) => row.severity_text = utf8(b)?,
            (5, Value::Bytes(b)) => set_once(&mut body, b)?,
            (6, Value::Bytes(kv)) => attributes.push(read_key_value(kv)?),
            (7, Value::Varint(_)) => {}
            (8, Value::Fixed32(f)) => row.flags = f,
            (9, Value::Bytes(b)) => row.trace_id = b,
            (10, Value::Bytes(b)) => row.span_id = b,
            (11, Value::Fixed64(t)) => row.observed_time_unix_nano = t,
            (12, Value::Bytes(b)) => row.event_name = utf8(b)?,
            (1..=3 | 5..=12, _) => return Err(NotInPlace),
            _ => {}
        }
    }
    row.body = body.map_or(Ok(Text::Null), read_any_value)?;
    Ok(row)
}

/// A `KeyValue`'s key and the text of its value.
fn read_key_value(message: &[u8]) -> Read<(&str, Text<'_>)> {
    let mut key = "";
    let mut value = None;
    for field in Fields::new(message) {
        match field? {
            (1, Value::Bytes(b)) => key = utf8(b)?,
            (2, Value::Bytes(v)) => set_once(&mut value, v)?,
            (3, Value::Varint(_)) => {}
            (1..=3, _) => return Err(NotInPlace),
            _ => {}
        }
    }
    Ok((key, value.map_or(Ok(Text::Null), read_any_value)?))
}

/// The common scalar values read in place; any other (arrays, maps,
/// bytes, a oneof sent more than once) decoded with prost and rendered.
fn read_any_value(message: &[u8]) -> Read<Text<'_>> {
    let mut fields = Fields::new(message);
    let only = (fields.next(), fields.next());
    Ok(match only {
        (Some(Ok((1, Value::Bytes(s)))), None) => Text::Str(utf8(s)?),
        (Some(Ok((2, Value::Varint(b)))), None) => Text::Bool(b != 0),
        (Some(Ok((3, Value::Varint(i)))), None) => Text::Int(i as i64),
        (Some(Ok((4, Value::Fixed64(d)))), None) => Text::Double(f64::from_bits(d)),
        _ => {
            let value = AnyValue::decode(message).map_err(|_| NotInPlace)?;
            to_text(Some(&value)).map_or(Text::Null, Text::Rendered)
        }
    })
}

fn decode_each<M: Message + Default>(messages: &[&[u8]]) -> Read<Vec<M>> {
    messages
        .iter()
        .map(|m| M::decode(*m).map_err(|_| NotInPlace))
        .collect()
}

/// Records a singular message field; a second occurrence, which prost
/// would merge into the first, is left to prost.
fn set_once<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) -> Read<()> {
    if slot.replace(value).is_some() {
        return Err(NotInPlace);
    }
    Ok(())
}

fn utf8(bytes: &[u8]) -> Read<&str> {
    std::str::from_utf8(bytes).map_err(|_| NotInPlace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::traces;
    use arrow::array::AsArray;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        ArrayValue as Array, KeyValue, KeyValueList, any_value,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn kv(key: &str, value: Option<any_value::Value>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value }),
            ..Default::default()
        }
    }

    fn span(n: u8) -> Span {
        use any_value::Value::*;
        Span {
            trace_id: vec![n + 1; 16],
            span_id: vec![n + 2; 8],
            parent_span_id: if n.is_multiple_of(2) {
                vec![]
            } else {
                vec![9; 8]
            },
            trace_state: if n.is_multiple_of(3) {
                "k=v".into()
            } else {
                String::new()
            },
            name: format!("op {n} é"),
            kind: i32::from(n % 6),
            start_time_unix_nano: 1_000 + u64::from(n),
            end_time_unix_nano: 5_000,
            attributes: vec![
                kv("s", Some(StringValue(format!("v{n}")))),
                kv("b", Some(BoolValue(n.is_multiple_of(2)))),
                kv("i", Some(IntValue(-i64::from(n)))),
                kv("d", Some(DoubleValue(f64::from(n) / 3.0))),
                kv("bytes", Some(BytesValue(vec![n, 255]))),
                kv(
                    "array",
                    Some(ArrayValue(Array {
                        values: vec![AnyValue {
                            value: Some(IntValue(1)),
                        }],
                    })),
                ),
                kv(
                    "map",
                    Some(KvlistValue(KeyValueList {
                        values: vec![kv("x", Some(StringValue("y".into())))],
                    })),
                ),
                kv("empty", None),
                KeyValue {
                    key: "absent".into(),
                    ..Default::default()
                },
            ],
            events: if n % 2 == 1 {
                vec![Event {
                    time_unix_nano: 2_000,
                    name: "exception".into(),
                    attributes: vec![kv("exception.message", Some(StringValue("boom".into())))],
                    ..Default::default()
                }]
            } else {
                vec![]
            },
            links: if n % 4 == 1 {
                vec![Link {
                    trace_id: vec![7; 16],
                    span_id: vec![8; 8],
                    ..Default::default()
                }]
            } else {
                vec![]
            },
            status: (n % 3 != 1).then(|| Status {
                code: i32::from(n % 3),
                message: if n % 3 == 2 {
                    "failed".into()
                } else {
                    String::new()
                },
            }),
            flags: 0x100,
            dropped_attributes_count: u32::from(n),
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        use any_value::Value::StringValue;
        let bad_id = Span {
            trace_id: vec![1; 16],
            span_id: vec![0; 8],
            name: "zero span id".into(),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            kv("service.name", Some(StringValue("cart".into()))),
                            kv("host.name", Some(StringValue("h1".into()))),
                            kv("service.instance.id", Some(any_value::Value::IntValue(7))),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "lib".into(),
                                version: "1.2".into(),
                                ..Default::default()
                            }),
                            spans: (0..12).map(span).chain([bad_id]).collect(),
                            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                        },
                        ScopeSpans {
                            spans: vec![span(20)],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(30)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        }
    }

    fn both_ways(body: &[u8]) -> (Option<Converted>, Converted) {
        let arrival = Arrival {
            received: 0,
            earliest: 1_005,
            latest: i64::MAX,
        };
        let decoded = ExportTraceServiceRequest::decode(body).unwrap();
        (
            traces(body, arrival).map(Result::unwrap),
            traces::convert(&decoded, arrival).unwrap(),
        )
    }

    #[test]
    fn reads_the_same_rows_and_rejections_as_prost() {
        let body = request().encode_to_vec();
        let (in_place, decoded) = both_ways(&body);
        let in_place = in_place.expect("read in place");
        assert_eq!(decoded.batch.num_rows(), 9, "3 refused for time, 1 for id");
        assert_eq!(in_place.batch, decoded.batch);
        // The instance is the resource's, as text; the second resource has none.
        let instances = decoded.batch.column_by_name("instance").unwrap();
        let instances: Vec<_> = instances.as_string::<i32>().iter().collect();
        assert_eq!(instances, [[Some("7")].repeat(8), vec![None]].concat());
        // Each row holds its own resource's attributes, in order, as text.
        let resources = decoded
            .batch
            .column_by_name("resource_attributes")
            .unwrap()
            .as_map();
        let entries = |row: usize| -> Vec<(String, String)> {
            let entry = resources.value(row);
            let (keys, values) = (
                entry.column(0).as_string::<i32>(),
                entry.column(1).as_string::<i32>(),
            );
            (0..arrow::array::Array::len(keys))
                .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
                .collect()
        };
        let first: Vec<(String, String)> = [
            ("service.name", "cart"),
            ("host.name", "h1"),
            ("service.instance.id", "7"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        for row in 0..8 {
            assert_eq!(entries(row), first, "row {row}");
        }
        assert_eq!(entries(8), Vec::new());
        assert_eq!(in_place.rejected.count, decoded.rejected.count);
        assert_eq!(in_place.rejected.message(), decoded.rejected.message());
    }

    #[test]
    fn reads_a_body_another_encoder_wrote() {
        // The fuzz seeds, written by hand field by field (their first byte
        // picks the signal): every attribute type, an event, a status, a
        // structured log body.
        let seed = include_bytes!("../../../fuzz/seeds/otlp_proto/spans.pb");
        let (in_place, decoded) = both_ways(&seed[1..]);
        let in_place = in_place.expect("read in place");
        assert_eq!(in_place.batch.num_rows(), 2);
        assert_eq!(in_place.batch, decoded.batch);

        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        let seed = include_bytes!("../../../fuzz/seeds/otlp_proto/logs.pb");
        let arrival = Arrival::unbounded(0);
        let in_place = logs(&seed[1..], arrival).expect("read in place").unwrap();
        let request = ExportLogsServiceRequest::decode(&seed[1..]).unwrap();
        let decoded = crate::convert::logs::convert(&request, arrival).unwrap();
        assert_eq!(in_place.batch.num_rows(), 2);
        assert_eq!(in_place.batch, decoded.batch);
    }

    #[test]
    fn unknown_fields_are_skipped_as_prost_skips_them() {
        let mut body = request().encode_to_vec();
        // Field 99 (varint) and field 100 (length-delimited) at the top level.
        body.extend([0x98, 0x06, 0x01, 0xa2, 0x06, 0x02, b'h', b'i']);
        let (in_place, decoded) = both_ways(&body);
        assert_eq!(in_place.expect("read in place").batch, decoded.batch);
    }

    #[test]
    fn reads_the_same_log_rows_and_rejections_as_prost() {
        use crate::convert::logs;
        use any_value::Value::*;
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let bodies = [
            Some(StringValue("GET /cart 200".into())),
            Some(IntValue(7)),
            Some(KvlistValue(KeyValueList {
                values: vec![kv("msg", Some(StringValue("hi".into())))],
            })),
            None,
        ];
        let record = |n: u8| LogRecord {
            time_unix_nano: if n.is_multiple_of(3) {
                0
            } else {
                2_000 + u64::from(n)
            },
            observed_time_unix_nano: if n.is_multiple_of(5) { 0 } else { 3_000 },
            severity_number: i32::from(n % 25),
            severity_text: if n.is_multiple_of(2) {
                String::new()
            } else {
                "Warning".into()
            },
            body: (n % 7 != 6).then(|| AnyValue {
                value: bodies[usize::from(n) % bodies.len()].clone(),
            }),
            attributes: vec![
                kv("code.lineno", Some(IntValue(i64::from(n)))),
                kv("tag", Some(StringValue(format!("t{n}")))),
            ],
            flags: u32::from(n % 2),
            trace_id: if n.is_multiple_of(4) {
                vec![]
            } else {
                vec![n; 16]
            },
            span_id: match n % 4 {
                0 => vec![],
                3 => vec![1; 3],
                _ => vec![n; 8],
            },
            event_name: if n.is_multiple_of(6) {
                "app.start".into()
            } else {
                String::new()
            },
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Some(StringValue("cart".into())))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "log4j".into(),
                        ..Default::default()
                    }),
                    log_records: (1..30).map(record).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let body = request.encode_to_vec();
        let arrival = Arrival {
            received: 1_500,
            earliest: 1_000,
            latest: 2_020,
        };
        let in_place = logs(&body, arrival).expect("read in place").unwrap();
        let decoded = logs::convert(&request, arrival).unwrap();
        assert!(decoded.rejected.count > 0 && decoded.batch.num_rows() > 10);
        assert_eq!(in_place.batch, decoded.batch);
        assert_eq!(in_place.rejected.count, decoded.rejected.count);
        assert_eq!(in_place.rejected.message(), decoded.rejected.message());
    }

    /// `message` as field `tag` (length-delimited, tag < 16).
    fn field(tag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![tag << 3 | 2];
        prost::encoding::encode_varint(message.len() as u64, &mut out);
        out.extend(message);
        out
    }

    #[test]
    fn what_prost_would_merge_or_refuse_is_left_to_prost() {
        // A span whose status is sent twice: prost merges the two.
        let mut s = span(0).encode_to_vec();
        s.extend(field(
            15,
            &Status {
                code: 2,
                message: String::new(),
            }
            .encode_to_vec(),
        ));
        let body = field(1, &field(2, &field(2, &s)));
        let arrival = Arrival::unbounded(0);
        assert!(traces(&body, arrival).is_none());
        let decoded = ExportTraceServiceRequest::decode(&body[..]).unwrap();
        let spans = &decoded.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].status.as_ref().map(|s| s.code), Some(2));

        // A name that is not UTF-8: prost refuses the body.
        let mut bad = span(2);
        bad.name = "q".into();
        let mut body = field(1, &field(2, &field(2, &bad.encode_to_vec())));
        let at = body.iter().position(|b| *b == b'q').unwrap();
        body[at] = 0xff;
        assert!(traces(&body, arrival).is_none());
        assert!(ExportTraceServiceRequest::decode(&body[..]).is_err());
    }
}
