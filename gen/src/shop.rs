//! What one user request does in the shop: the spans each service records,
//! the logs it writes and the metrics it feeds, with latencies and failures
//! shaped by the active faults.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, status::StatusCode};

use crate::load_test::{LoadTest, TARGET_INSTANCE};
use crate::metrics::MetricsState;
use crate::random::Random;
use crate::scenario::{self, Faults};
use crate::telemetry::{Exporter, Pending, i, s};
use crate::topology::{Cost, Dependency, Instance, POSTGRES, cost};

pub(crate) const NS_PER_MS: i64 = 1_000_000;

/// Where a piece of work runs: the instance and its current span.
#[derive(Clone)]
pub(crate) struct Site {
    pub(crate) instance: usize,
    pub(crate) span_id: Vec<u8>,
    pub(crate) exporter: Exporter,
}

/// A database or cache statement a service runs, and what it costs.
#[derive(Clone, Copy)]
pub(crate) struct Query {
    pub(crate) dependency: &'static Dependency,
    pub(crate) operation: &'static str,
    pub(crate) statement: &'static str,
    pub(crate) cost: Cost,
}

/// What a span is, before the trace it belongs to is filled in.
pub(crate) struct SpanSpec<'a> {
    pub(crate) span_id: Vec<u8>,
    pub(crate) parent: Option<Vec<u8>>,
    pub(crate) name: &'a str,
    pub(crate) kind: SpanKind,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) error: bool,
    pub(crate) events: Vec<Event>,
}

impl<'a> SpanSpec<'a> {
    /// A successful span without events or parent.
    pub(crate) fn new(
        span_id: Vec<u8>,
        name: &'a str,
        kind: SpanKind,
        (start, end): (i64, i64),
        attributes: Vec<KeyValue>,
    ) -> Self {
        SpanSpec {
            span_id,
            parent: None,
            name,
            kind,
            start,
            end,
            attributes,
            error: false,
            events: Vec::new(),
        }
    }
}

/// The result of handling a request.
pub(crate) struct Served {
    pub(crate) end: i64,
    pub(crate) status: i64,
}

#[derive(Clone, Copy)]
pub(crate) enum Op {
    Home,
    ViewCart,
    AddToCart,
    Checkout,
    Recommend,
    CartGet,
    CartAdd,
    Stock,
    Reserve,
    Charge,
    Quote,
}

const ROOTS: [((Op, &str, &str), u32); 4] = [
    ((Op::Home, "GET", "/"), 40),
    ((Op::ViewCart, "GET", "/cart"), 25),
    ((Op::AddToCart, "POST", "/cart"), 20),
    ((Op::Checkout, "POST", "/checkout"), 15),
];

/// The simulated shop's instances, indexed by service.
pub struct Shop {
    pub instances: Vec<Instance>,
}

impl Shop {
    pub fn new() -> Self {
        Shop {
            instances: crate::topology::instances(),
        }
    }

    fn of(&self, service: &str) -> Vec<usize> {
        (0..self.instances.len())
            .filter(|i| self.instances[*i].service == service)
            .collect()
    }
}

impl Default for Shop {
    fn default() -> Self {
        Self::new()
    }
}

/// Generates one trace (and its logs and metric updates) per call.
pub struct RequestGen<'a> {
    pub rng: &'a mut Random,
    pub shop: &'a Shop,
    pub faults: Faults,
    pub out: &'a mut Pending,
    pub metrics: &'a mut MetricsState,
    pub(crate) trace_id: Vec<u8>,
}

impl<'a> RequestGen<'a> {
    pub fn new(
        rng: &'a mut Random,
        shop: &'a Shop,
        faults: Faults,
        out: &'a mut Pending,
        metrics: &'a mut MetricsState,
    ) -> Self {
        RequestGen {
            rng,
            shop,
            faults,
            out,
            metrics,
            trace_id: Vec::new(),
        }
    }

    /// One user request arriving at the frontend at `start` (ns).
    pub fn user_request(&mut self, start: i64) {
        self.trace_id = self.rng.trace_id();
        let (op, method, route) = *self.rng.weighted(&ROOTS);
        self.http_call(None, "frontend", method, route, op, start);
    }

    /// One load-test request against the target instance at concurrency `n`.
    pub fn load_test_request(&mut self, start: i64, lt: &LoadTest, step: usize, n: u32) {
        self.trace_id = self.rng.trace_id();
        let instance = self
            .shop
            .instances
            .iter()
            .position(|i| i.id == TARGET_INSTANCE)
            .unwrap_or(0);
        let mean = lt.latency_secs(n as f64) * 1000.0;
        let duration = self.rng.latency_ns(cost(mean, 0.25), 1.0);
        let failed = self.rng.chance(lt.error_rate(n as f64));
        let status = if failed { 503 } else { 200 };
        let span_id = self.rng.span_id();
        let mut attrs = vec![
            s("http.request.method", "POST"),
            s("http.route", "/api/checkout"),
            i("http.response.status_code", status),
            s("user_agent.original", "k6/0.52.0"),
            s("loadtest.id", "ramp"),
            i("loadtest.step", step as i64),
            i("loadtest.concurrency", n as i64),
        ];
        if failed {
            attrs.push(s("error.type", "503"));
        }
        let exporter = Exporter {
            instance,
            new_version: false,
        };
        self.out.span(
            exporter,
            self.span(SpanSpec {
                error: failed,
                ..SpanSpec::new(
                    span_id,
                    "POST /api/checkout",
                    SpanKind::Server,
                    (start, start + duration),
                    attrs,
                )
            }),
        );
        self.metrics.request(
            instance,
            "POST",
            "/api/checkout",
            status,
            duration as f64 / 1e9,
        );
    }

    pub(crate) fn span(&self, spec: SpanSpec<'_>) -> Span {
        Span {
            trace_id: self.trace_id.clone(),
            span_id: spec.span_id,
            parent_span_id: spec.parent.unwrap_or_default(),
            name: spec.name.into(),
            kind: spec.kind as i32,
            start_time_unix_nano: spec.start as u64,
            end_time_unix_nano: spec.end as u64,
            attributes: spec.attributes,
            events: spec.events,
            status: Some(Status {
                code: if spec.error {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                } as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }

    /// Emits a successful, event-less child span of `site`, exported as
    /// `site` is.
    pub(crate) fn child_span(&mut self, site: &Site, spec: SpanSpec<'_>) {
        let span = self.span(SpanSpec {
            parent: Some(site.span_id.clone()),
            ..spec
        });
        self.out.span(site.exporter, span);
    }

    pub(crate) fn net(&mut self) -> i64 {
        self.rng.range(100_000, 600_000) as i64
    }

    pub(crate) fn pick(&mut self, service: &str) -> usize {
        let candidates = self.shop.of(service);
        candidates[self.rng.below(candidates.len())]
    }

    pub(crate) fn exporter(&self, instance: usize) -> Exporter {
        let service = self.shop.instances[instance].service;
        Exporter {
            instance,
            new_version: self.faults.bad_deploy && service == scenario::BAD_DEPLOY_SERVICE,
        }
    }

    /// An HTTP call from `from` (None: the user) to `service`: a CLIENT span
    /// on the caller, a SERVER span on the callee, and the callee's work.
    pub(crate) fn http_call(
        &mut self,
        from: Option<&Site>,
        service: &'static str,
        method: &'static str,
        route: &'static str,
        op: Op,
        start: i64,
    ) -> Served {
        let instance = self.pick(service);
        let exporter = self.exporter(instance);
        let server_id = self.rng.span_id();
        let client_id = from.map(|_| self.rng.span_id());
        let server_start = if from.is_some() {
            start + self.net()
        } else {
            start
        };
        let site = Site {
            instance,
            span_id: server_id.clone(),
            exporter,
        };
        let mut events = Vec::new();
        let served = self.handle(op, &site, server_start, &mut events);
        let failed = served.status >= 500;
        let mut attrs = vec![
            s("http.request.method", method),
            s("http.route", route),
            s("url.path", route),
            i("http.response.status_code", served.status),
            s("server.address", service),
            i("server.port", 8080),
            s("network.protocol.version", "1.1"),
        ];
        if failed {
            attrs.push(s("error.type", served.status.to_string()));
        }
        let parent = client_id.clone();
        let name = format!("{method} {route}");
        let span = self.span(SpanSpec {
            parent,
            error: failed,
            events,
            ..SpanSpec::new(
                server_id,
                &name,
                SpanKind::Server,
                (server_start, served.end),
                attrs,
            )
        });
        self.out.span(exporter, span);
        self.metrics.request(
            instance,
            method,
            route,
            served.status,
            (served.end - server_start) as f64 / 1e9,
        );

        let (Some(caller), Some(client_id)) = (from, client_id) else {
            return served;
        };
        let end = served.end + self.net();
        let mut attrs = vec![
            s("http.request.method", method),
            s("server.address", service),
            i("server.port", 8080),
            s("url.full", format!("http://{service}:8080{route}")),
            i("http.response.status_code", served.status),
            s("peer.service", service),
        ];
        if failed {
            attrs.push(s("error.type", served.status.to_string()));
        }
        let span = self.span(SpanSpec {
            parent: Some(caller.span_id.clone()),
            error: failed,
            ..SpanSpec::new(client_id, method, SpanKind::Client, (start, end), attrs)
        });
        self.out.span(caller.exporter, span);
        Served {
            end,
            status: served.status,
        }
    }

    /// A database or cache call: one CLIENT span on the caller.
    pub(crate) fn db_call(&mut self, site: &Site, query: &Query, start: i64) -> i64 {
        let Query {
            dependency: dep,
            operation,
            statement,
            cost: c,
        } = *query;
        let slow = self.faults.db_slow && dep.server_address == POSTGRES.server_address;
        let factor = if slow { scenario::SLOW_DB_FACTOR } else { 1.0 };
        let duration = self.rng.latency_ns(c, factor);
        let end = start + duration;
        let system = dep.db_system.unwrap_or("other_sql");
        let mut attrs = vec![
            s("db.system", system),
            s("db.system.name", system),
            s("db.operation.name", operation),
            s("db.query.text", statement),
            s("db.statement", statement),
            s("server.address", dep.server_address),
            i("server.port", dep.server_port),
        ];
        if system == "postgresql" {
            attrs.push(s("db.namespace", "inventory"));
        }
        let name = if system == "redis" {
            operation.to_string()
        } else {
            format!("{operation} inventory.stock")
        };
        let id = self.rng.span_id();
        self.child_span(
            site,
            SpanSpec::new(id, &name, SpanKind::Client, (start, end), attrs),
        );
        self.metrics.db_time(site.instance, duration as f64 / 1e9);
        if duration > 100 * NS_PER_MS {
            self.log(
                site,
                end,
                13,
                text(format!(
                    "slow query took {}ms: {statement}",
                    duration / NS_PER_MS
                )),
                vec![s("db.system", system)],
            );
        }
        end
    }

    pub(crate) fn work(&mut self, c: Cost, site: &Site) -> i64 {
        let service = self.shop.instances[site.instance].service;
        let factor = if self.faults.bad_deploy && service == scenario::BAD_DEPLOY_SERVICE {
            scenario::BAD_DEPLOY_LATENCY
        } else {
            1.0
        };
        self.rng.latency_ns(c, factor)
    }

    pub(crate) fn log(
        &mut self,
        site: &Site,
        time: i64,
        severity: i32,
        body: AnyValue,
        attributes: Vec<KeyValue>,
    ) {
        let severity_text = match severity {
            1..=8 => "DEBUG",
            9..=12 => "INFO",
            13..=16 => "WARN",
            _ => "ERROR",
        };
        self.out.log(
            site.exporter,
            LogRecord {
                time_unix_nano: time as u64,
                observed_time_unix_nano: time as u64,
                severity_number: severity,
                severity_text: severity_text.into(),
                body: Some(body),
                attributes,
                trace_id: self.trace_id.clone(),
                span_id: site.span_id.clone(),
                flags: 1,
                ..Default::default()
            },
        );
    }

    pub(crate) fn exception(
        &mut self,
        site: &Site,
        time: i64,
        events: &mut Vec<Event>,
        kind: &str,
        message: &str,
        frame: &str,
    ) {
        let stack = format!(
            "{kind}: {message}\n    at {frame}\n    at com.shop.http.Handler.handle(Handler.java:88)\n    at com.shop.http.Server.dispatch(Server.java:214)"
        );
        events.push(Event {
            time_unix_nano: time as u64,
            name: "exception".into(),
            attributes: vec![
                s("exception.type", kind),
                s("exception.message", message),
                s("exception.stacktrace", stack.clone()),
            ],
            ..Default::default()
        });
        self.log(
            site,
            time,
            17,
            text(format!("{kind}: {message}")),
            vec![s("exception.type", kind), s("exception.stacktrace", stack)],
        );
    }
}

pub(crate) fn text(body: String) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(body)),
    }
}
