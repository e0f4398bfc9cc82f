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
    pub fn take_requests(
        &mut self,
        instances: &[Instance],
        new_version: &str,
    ) -> (ExportTraceServiceRequest, ExportLogsServiceRequest) {
        let scope = |service: &str| InstrumentationScope {
            name: format!("shop.{service}"),
            version: "1.0.0".into(),
            ..Default::default()
        };
        let version = |e: Exporter| {
            let inst = &instances[e.instance];
            if e.new_version {
                new_version.to_string()
            } else {
                version_of(inst.service).to_string()
            }
        };
        let mut spans = std::mem::take(&mut self.spans);
        spans.sort_by_key(|(e, _)| (e.instance, e.new_version));
        let mut resource_spans: Vec<(Exporter, ResourceSpans)> = Vec::new();
        for (exporter, span) in spans {
            if resource_spans.last().is_none_or(|(e, _)| *e != exporter) {
                let inst = &instances[exporter.instance];
                resource_spans.push((
                    exporter,
                    ResourceSpans {
                        resource: Some(resource(inst, &version(exporter))),
                        scope_spans: vec![ScopeSpans {
                            scope: Some(scope(inst.service)),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ));
            }
            if let Some((_, last)) = resource_spans.last_mut() {
                last.scope_spans[0].spans.push(span);
            }
        }

        let mut logs = std::mem::take(&mut self.logs);
        logs.sort_by_key(|(e, _)| (e.instance, e.new_version));
        let mut resource_logs: Vec<(Exporter, ResourceLogs)> = Vec::new();
        for (exporter, log) in logs {
            if resource_logs.last().is_none_or(|(e, _)| *e != exporter) {
                let inst = &instances[exporter.instance];
                resource_logs.push((
                    exporter,
                    ResourceLogs {
                        resource: Some(resource(inst, &version(exporter))),
                        scope_logs: vec![ScopeLogs {
                            scope: Some(scope(inst.service)),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ));
            }
            if let Some((_, last)) = resource_logs.last_mut() {
                last.scope_logs[0].log_records.push(log);
            }
        }
        (
            ExportTraceServiceRequest {
                resource_spans: resource_spans.into_iter().map(|(_, r)| r).collect(),
            },
            ExportLogsServiceRequest {
                resource_logs: resource_logs.into_iter().map(|(_, r)| r).collect(),
            },
        )
    }
}
