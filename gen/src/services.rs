//! What each simulated service does when it handles a request: its own
//! work, the calls it makes, the logs it writes and how the active faults
//! change it.

use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};

use crate::scenario;
use crate::shop::{NS_PER_MS, Op, Query, RequestGen, Served, Site, SpanSpec, text};
use crate::telemetry::{i, s};
use crate::topology::{KAFKA, POSTGRES, REDIS, cost};

const SELECT_STOCK: Query = Query {
    dependency: &POSTGRES,
    operation: "SELECT",
    statement: "SELECT quantity FROM stock WHERE sku = $1",
    cost: cost(2.0, 0.5),
};

const RESERVE_STOCK: Query = Query {
    dependency: &POSTGRES,
    operation: "UPDATE",
    statement: "UPDATE stock SET quantity = quantity - $1 WHERE sku = $2",
    cost: cost(3.0, 0.5),
};

const ADD_TO_CART: Query = Query {
    dependency: &REDIS,
    operation: "HSET",
    statement: "HSET cart:{id} item qty",
    cost: cost(0.4, 0.4),
};

const READ_CART: Query = Query {
    dependency: &REDIS,
    operation: "HGETALL",
    statement: "HGETALL cart:{id}",
    cost: cost(0.4, 0.4),
};

impl RequestGen<'_> {
    pub(crate) fn handle(
        &mut self,
        op: Op,
        site: &Site,
        start: i64,
        events: &mut Vec<Event>,
    ) -> Served {
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
                let end = self.db_call(site, &SELECT_STOCK, t);
                Served {
                    end: end + self.work(cost(0.3, 0.3), site),
                    status: 200,
                }
            }
            Op::Reserve => {
                let t = start + self.work(cost(1.0, 0.3), site);
                let end = self.db_call(site, &RESERVE_STOCK, t);
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
            t = self.db_call(site, &ADD_TO_CART, t);
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
            t = self.db_call(site, &READ_CART, t);
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
        self.child_span(
            site,
            SpanSpec::new(
                producer_id.clone(),
                "orders publish",
                SpanKind::Producer,
                (start, end),
                attrs,
            ),
        );

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
        let render = SpanSpec::new(
            render_id,
            "render confirmation",
            SpanKind::Internal,
            (render_start, render_end),
            vec![s("app.template", "order-confirmation")],
        );
        let send_id = self.rng.span_id();
        let send = SpanSpec::new(
            send_id,
            "send confirmation email",
            SpanKind::Internal,
            (render_end, send_end),
            vec![s("app.email.provider", "smtp")],
        );
        self.child_span(&consumer, render);
        self.child_span(&consumer, send);
        let attrs = vec![
            s("messaging.system", "kafka"),
            s("messaging.destination.name", "orders"),
            s("messaging.operation.type", "process"),
            s("messaging.consumer.group.name", "email"),
        ];
        let consume = self.span(SpanSpec {
            parent: Some(producer_id),
            ..SpanSpec::new(
                consumer_id,
                "orders process",
                SpanKind::Consumer,
                (consume_start, send_end),
                attrs,
            )
        });
        self.out.span(consumer.exporter, consume);
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
