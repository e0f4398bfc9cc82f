//! Accumulates generated spans and logs per exporting instance and turns
//! them into OTLP export requests, one resource per instance.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::topology::{Instance, version_of};

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}

pub fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

/// Who exports: an instance, running its normal or its newly deployed version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exporter {
    pub instance: usize,
    pub new_version: bool,
}

pub fn resource(instance: &Instance, version: &str) -> Resource {
    Resource {
        attributes: vec![
            s("service.name", instance.service),
            s("service.instance.id", instance.id.clone()),
            s("service.version", version),
            s("host.name", instance.host.clone()),
            s("cloud.region", instance.region),
            s("deployment.environment.name", "production"),
            s("telemetry.sdk.language", "rust"),
        ],
        ..Default::default()
    }
}

/// Spans and logs waiting to be sent.
#[derive(Default)]
pub struct Pending {
    spans: Vec<(Exporter, Span)>,
    logs: Vec<(Exporter, LogRecord)>,
}

impl Pending {
    pub fn span(&mut self, exporter: Exporter, span: Span) {
        self.spans.push((exporter, span));
    }

    pub fn log(&mut self, exporter: Exporter, log: LogRecord) {
        self.logs.push((exporter, log));
    }

    /// Builds the export requests and empties the buffer.
    pub fn take_requests(&mut self, instances: &[Instance], new_version: &str) -> Requests {
        let scope = |service: &str| InstrumentationScope {
            name: format!("shop.{service}"),
            version: "1.0.0".into(),
            ..Default::default()
        };
        let resource_of = |e: Exporter| {
            let inst = &instances[e.instance];
            let version = if e.new_version {
                new_version.to_string()
            } else {
                version_of(inst.service).to_string()
            };
            (resource(inst, &version), scope(inst.service))
        };
        let spans = std::mem::take(&mut self.spans);
        let logs = std::mem::take(&mut self.logs);
        Requests {
            span_count: spans.len() as u64,
            log_count: logs.len() as u64,
            traces: ExportTraceServiceRequest {
                resource_spans: by_exporter(
                    spans,
                    |e| {
                        let (resource, scope) = resource_of(e);
                        ResourceSpans {
                            resource: Some(resource),
                            scope_spans: vec![ScopeSpans {
                                scope: Some(scope),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }
                    },
                    |r, span| r.scope_spans[0].spans.push(span),
                ),
            },
            logs: ExportLogsServiceRequest {
                resource_logs: by_exporter(
                    logs,
                    |e| {
                        let (resource, scope) = resource_of(e);
                        ResourceLogs {
                            resource: Some(resource),
                            scope_logs: vec![ScopeLogs {
                                scope: Some(scope),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }
                    },
                    |r, log| r.scope_logs[0].log_records.push(log),
                ),
            },
        }
    }
}

/// Pending spans and logs as export requests, with how many of each.
pub struct Requests {
    pub traces: ExportTraceServiceRequest,
    pub span_count: u64,
    pub logs: ExportLogsServiceRequest,
    pub log_count: u64,
}

/// One group (`new_group`) per exporter, in exporter order, holding that
/// exporter's items in their original order (`push`).
fn by_exporter<T, G>(
    mut items: Vec<(Exporter, T)>,
    new_group: impl Fn(Exporter) -> G,
    push: impl Fn(&mut G, T),
) -> Vec<G> {
    items.sort_by_key(|(e, _)| (e.instance, e.new_version));
    let mut groups: Vec<(Exporter, G)> = Vec::new();
    for (exporter, item) in items {
        if groups.last().is_none_or(|(e, _)| *e != exporter) {
            groups.push((exporter, new_group(exporter)));
        }
        if let Some((_, group)) = groups.last_mut() {
            push(group, item);
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}
