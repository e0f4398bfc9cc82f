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
use crate::topology::{Cost, Dependency, Instance, KAFKA, POSTGRES, REDIS, cost};

const NS_PER_MS: i64 = 1_000_000;

/// Where a piece of work runs: the instance and its current span.
#[derive(Clone)]
struct Site {
    instance: usize,
    span_id: Vec<u8>,
    exporter: Exporter,
}

/// The result of handling a request.
struct Served {
    end: i64,
    status: i64,
}

#[derive(Clone, Copy)]
enum Op {
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
    trace_id: Vec<u8>,
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
            self.span(
                span_id,
                None,
                "POST /api/checkout",
                SpanKind::Server,
                start,
                start + duration,
                attrs,
                failed,
                Vec::new(),
            ),
        );
        self.metrics.request(
            instance,
            "POST",
            "/api/checkout",
            status,
            duration as f64 / 1e9,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        span_id: Vec<u8>,
        parent: Option<Vec<u8>>,
        name: &str,
        kind: SpanKind,
        start: i64,
        end: i64,
        attributes: Vec<KeyValue>,
        error: bool,
        events: Vec<Event>,
    ) -> Span {
        Span {
            trace_id: self.trace_id.clone(),
            span_id,
            parent_span_id: parent.unwrap_or_default(),
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: start as u64,
            end_time_unix_nano: end as u64,
            attributes,
            events,
            status: Some(Status {
                code: if error {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                } as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }

    fn net(&mut self) -> i64 {
        self.rng.range(100_000, 600_000) as i64
    }

    fn pick(&mut self, service: &str) -> usize {
        let candidates = self.shop.of(service);
        candidates[self.rng.below(candidates.len())]
    }

    fn exporter(&self, instance: usize) -> Exporter {
        let service = self.shop.instances[instance].service;
        Exporter {
            instance,
            new_version: self.faults.bad_deploy && service == scenario::BAD_DEPLOY_SERVICE,
        }
    }

    /// An HTTP call from `from` (None: the user) to `service`: a CLIENT span
    /// on the caller, a SERVER span on the callee, and the callee's work.
    fn http_call(
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
        let span = self.span(
            server_id,
            parent,
            &name,
            SpanKind::Server,
            server_start,
            served.end,
            attrs,
            failed,
            events,
        );
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
        let span = self.span(
            client_id,
            Some(caller.span_id.clone()),
            method,
            SpanKind::Client,
            start,
            end,
            attrs,
            failed,
            Vec::new(),
        );
        self.out.span(caller.exporter, span);
        Served {
            end,
            status: served.status,
        }
    }

    /// A database or cache call: one CLIENT span on the caller.
    fn db_call(
        &mut self,
        site: &Site,
        dep: &Dependency,
        operation: &str,
        statement: &str,
        c: Cost,
        start: i64,
    ) -> i64 {
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
        let span = self.span(
            id,
            Some(site.span_id.clone()),
            &name,
            SpanKind::Client,
            start,
            end,
            attrs,
            false,
            Vec::new(),
        );
        self.out.span(site.exporter, span);
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

    fn work(&mut self, c: Cost, site: &Site) -> i64 {
        let service = self.shop.instances[site.instance].service;
        let factor = if self.faults.bad_deploy && service == scenario::BAD_DEPLOY_SERVICE {
            scenario::BAD_DEPLOY_LATENCY
        } else {
            1.0
        };
        self.rng.latency_ns(c, factor)
    }

    fn log(
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

    fn exception(
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

    fn handle(&mut self, op: Op, site: &Site, start: i64, events: &mut Vec<Event>) -> Served {
        match op {
            Op::Home | Op::ViewCart | Op::AddToCart => self.frontend(op, site, start),
            Op::Checkout if self.shop.instances[site.instance].service == "frontend" => {
                self.frontend(op, site, start)
            }
            Op::Checkout => self.checkout(site, start),
            Op::Recommend => {
                let end = start + self.work(cost(8.0, 0.5), site);
                if self.rng.chance(0.2) {
                    let n = self.rng.range(3, 9);
                    let user = self.rng.range(1000, 9999);
                    self.log(
                        site,
                        end,
                        5,
                        text(format!("returned {n} recommendations for user u-{user}")),
                        vec![],
                    );
                }
                Served { end, status: 200 }
            }
            Op::CartGet | Op::CartAdd => self.cart(op, site, start, events),
            Op::Stock => {
                let t = start + self.work(cost(1.0, 0.3), site);
                let end = self.db_call(
                    site,
                    &POSTGRES,
                    "SELECT",
                    "SELECT quantity FROM stock WHERE sku = $1",
                    cost(2.0, 0.5),
                    t,
                );
                Served {
                    end: end + self.work(cost(0.3, 0.3), site),
                    status: 200,
                }
            }
            Op::Reserve => {
                let t = start + self.work(cost(1.0, 0.3), site);
                let end = self.db_call(
                    site,
                    &POSTGRES,
                    "UPDATE",
                    "UPDATE stock SET quantity = quantity - $1 WHERE sku = $2",
                    cost(3.0, 0.5),
                    t,
                );
                let qty = self.rng.range(1, 4);
                let sku = self.rng.range(1000, 9999);
                self.log(
                    site,
                    end,
                    9,
                    text(format!("reserved {qty} units of SKU-{sku}")),
                    vec![s("app.sku", format!("SKU-{sku}"))],
                );
                Served {
                    end: end + self.work(cost(0.3, 0.3), site),
                    status: 200,
                }
            }
            Op::Charge => self.charge(site, start, events),
            Op::Quote => {
                let end = start + self.work(cost(6.0, 0.4), site);
                let zip = self.rng.range(10000, 99999);
                let cents = self.rng.range(499, 2999);
                self.log(
                    site,
                    end,
                    9,
                    text(format!(
                        "shipping quote {}.{:02} USD for zip {zip}",
                        cents / 100,
                        cents % 100
                    )),
                    vec![],
                );
                Served { end, status: 200 }
            }
        }
    }

    fn frontend(&mut self, op: Op, site: &Site, start: i64) -> Served {
        let t = start + self.work(cost(1.0, 0.3), site);
        let (own_route, service, method, route, op) = match op {
            Op::Home => (
                "/",
                "recommendation",
                "GET",
                "/api/recommendations",
                Op::Recommend,
            ),
            Op::ViewCart => ("/cart", "cart", "GET", "/api/cart", Op::CartGet),
            Op::AddToCart => ("/cart", "cart", "POST", "/api/cart/items", Op::CartAdd),
            _ => (
                "/checkout",
                "checkout",
                "POST",
                "/api/checkout",
                Op::Checkout,
            ),
        };
        let downstream = self.http_call(Some(site), service, method, route, op, t);
        let end = downstream.end + self.work(cost(0.8, 0.3), site);
        let status = if downstream.status >= 500 {
            502
        } else {
            downstream.status
        };
        let user = self.rng.range(1000, 9999);
        let access = serde_json::json!({
            "event": "http_request", "method": method, "route": own_route, "status": status,
            "duration_ms": ((end - start) as f64 / 1e6 * 100.0).round() / 100.0, "user_id": format!("u-{user}"),
        });
        let severity = if status >= 500 { 13 } else { 9 };
        self.log(
            site,
            end,
            severity,
            text(access.to_string()),
            vec![s("log.type", "access")],
        );
        Served { end, status }
    }

    fn cart(&mut self, op: Op, site: &Site, start: i64, events: &mut Vec<Event>) -> Served {
        let mut t = start + self.work(cost(1.5, 0.4), site);
        let bad = self.faults.bad_deploy && self.rng.chance(scenario::BAD_DEPLOY_ERROR_RATE);
        let cart_id = self.rng.range(10000, 99999);
        if let Op::CartAdd = op {
            let stock = self.http_call(
                Some(site),
                "inventory",
                "GET",
                "/api/stock/{sku}",
                Op::Stock,
                t,
            );
            t = stock.end;
            t = self.db_call(
                site,
                &REDIS,
                "HSET",
                "HSET cart:{id} item qty",
                cost(0.4, 0.4),
                t,
            );
            let sku = self.rng.range(1000, 9999);
            let qty = self.rng.range(1, 4);
            self.log(
                site,
                t,
                9,
                text(format!("added item SKU-{sku} x{qty} to cart c-{cart_id}")),
                vec![i("app.cart.items", qty as i64)],
            );
        } else {
            t = self.db_call(
                site,
                &REDIS,
                "HGETALL",
                "HGETALL cart:{id}",
                cost(0.4, 0.4),
                t,
            );
        }
        let end = t + self.work(cost(0.5, 0.3), site);
        if bad {
            self.exception(
                site,
                end,
                events,
                "NullPointerException",
                &format!("cart line item price is null (cart c-{cart_id})"),
                "com.shop.cart.Pricing.total(Pricing.java:57)",
            );
            return Served { end, status: 500 };
        }
        Served { end, status: 200 }
    }

    fn charge(&mut self, site: &Site, start: i64, events: &mut Vec<Event>) -> Served {
        let end = start + self.work(cost(25.0, 0.6), site);
        let amount = self.rng.range(500, 50000);
        let instance = &self.shop.instances[site.instance].id;
        let failing = self.faults.payment_errors
            && instance == scenario::PAYMENT_BAD_INSTANCE
            && self.rng.chance(scenario::PAYMENT_ERROR_RATE);
        if failing {
            self.exception(
                site,
                end,
                events,
                "PaymentGatewayError",
                "upstream gateway timeout after 3000ms",
                "com.shop.payment.Gateway.charge(Gateway.java:142)",
            );
            return Served { end, status: 503 };
        }
        if self.rng.chance(0.01) {
            self.log(
                site,
                end,
                13,
                text(format!(
                    "card declined for amount {}.{:02} USD",
                    amount / 100,
                    amount % 100
                )),
                vec![],
            );
            return Served { end, status: 402 };
        }
        let last4 = self.rng.range(1000, 9999);
        self.log(
            site,
            end,
            9,
            text(format!(
                "charged {}.{:02} USD to card ending {last4} in {}ms",
                amount / 100,
                amount % 100,
                (end - start) / NS_PER_MS
            )),
            vec![i("app.payment.amount_cents", amount as i64)],
        );
        Served { end, status: 200 }
    }

    fn checkout(&mut self, site: &Site, start: i64) -> Served {
        let order = self.rng.range(100000, 999999);
        let mut t = start + self.work(cost(3.0, 0.4), site);
        let cart = self.http_call(Some(site), "cart", "GET", "/api/cart", Op::CartGet, t);
        t = cart.end;
        let mut failed_at = (cart.status >= 500).then_some("cart");
        if failed_at.is_none() {
            let reserve = self.http_call(
                Some(site),
                "inventory",
                "POST",
                "/api/reserve",
                Op::Reserve,
                t,
            );
            t = reserve.end;
            failed_at = (reserve.status >= 500).then_some("inventory");
        }
        let mut status = 200;
        if failed_at.is_none() {
            let charge =
                self.http_call(Some(site), "payment", "POST", "/api/charge", Op::Charge, t);
            t = charge.end;
            if charge.status >= 500 {
                failed_at = Some("payment");
            } else if charge.status >= 400 {
                status = 402;
            }
        }
        if failed_at.is_none() && status == 200 {
            let quote = self.http_call(Some(site), "shipping", "POST", "/api/quote", Op::Quote, t);
            t = quote.end;
            t = self.publish(site, t, order);
            self.log(
                site,
                t,
                9,
                text(format!("order o-{order} placed")),
                vec![s("app.order.id", format!("o-{order}"))],
            );
        }
        let end = t + self.work(cost(0.5, 0.3), site);
        if let Some(dependency) = failed_at {
            self.log(
                site,
                end,
                17,
                text(format!(
                    "checkout failed for order o-{order}: {dependency} returned an error"
                )),
                vec![s("app.order.id", format!("o-{order}"))],
            );
            status = 500;
        }
        Served { end, status }
    }

    /// Publishes the order to Kafka; the email service consumes it later.
    fn publish(&mut self, site: &Site, start: i64, order: u64) -> i64 {
        let producer_id = self.rng.span_id();
        let end = start + self.rng.latency_ns(cost(1.0, 0.4), 1.0);
        let attrs = vec![
            s(
                "messaging.system",
                KAFKA.messaging_system.unwrap_or("kafka"),
            ),
            s("messaging.destination.name", "orders"),
            s("messaging.operation.type", "publish"),
            s("server.address", KAFKA.server_address),
            i("server.port", KAFKA.server_port),
        ];
        let span = self.span(
            producer_id.clone(),
            Some(site.span_id.clone()),
            "orders publish",
            SpanKind::Producer,
            start,
            end,
            attrs,
            false,
            Vec::new(),
        );
        self.out.span(site.exporter, span);

        let instance = self.pick("email");
        let lag_ms = self.rng.range(5, 40) as i64;
        let consume_start = end + lag_ms * NS_PER_MS;
        let consumer_id = self.rng.span_id();
        let consumer = Site {
            instance,
            span_id: consumer_id.clone(),
            exporter: self.exporter(instance),
        };
        let render_start = consume_start + self.rng.latency_ns(cost(0.5, 0.3), 1.0);
        let render_end = render_start + self.rng.latency_ns(cost(4.0, 0.4), 1.0);
        let send_end = render_end + self.rng.latency_ns(cost(20.0, 0.5), 1.0);
        let render_id = self.rng.span_id();
        let render = self.span(
            render_id,
            Some(consumer_id.clone()),
            "render confirmation",
            SpanKind::Internal,
            render_start,
            render_end,
            vec![s("app.template", "order-confirmation")],
            false,
            Vec::new(),
        );
        let send_id = self.rng.span_id();
        let send = self.span(
            send_id,
            Some(consumer_id.clone()),
            "send confirmation email",
            SpanKind::Internal,
            render_end,
            send_end,
            vec![s("app.email.provider", "smtp")],
            false,
            Vec::new(),
        );
        let attrs = vec![
            s("messaging.system", "kafka"),
            s("messaging.destination.name", "orders"),
            s("messaging.operation.type", "process"),
            s("messaging.consumer.group.name", "email"),
        ];
        let consume = self.span(
            consumer_id,
            Some(producer_id),
            "orders process",
            SpanKind::Consumer,
            consume_start,
            send_end,
            attrs,
            false,
            Vec::new(),
        );
        for span in [render, send, consume] {
            self.out.span(consumer.exporter, span);
        }
        let user = self.rng.range(1000, 9999);
        self.log(
            &consumer,
            send_end,
            9,
            text(format!(
                "sent order confirmation o-{order} to u-{user}@example.com"
            )),
            vec![],
        );
        self.metrics.consumer_lag(instance, lag_ms as f64 / 10.0);
        end
    }
}

fn text(body: String) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(body)),
    }
}
