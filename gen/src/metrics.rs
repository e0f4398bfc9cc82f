//! The metrics each instance would export: request-duration histograms and
//! request counters per route and status (cumulative, as SDKs send by
//! default), CPU and memory gauges, Kafka consumer lag and DB pool usage.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};

use crate::random::Random;
use crate::telemetry::{i, resource, s};
use crate::topology::{Instance, version_of};

/// Default `http.server.request.duration` buckets (seconds), per semconv.
const BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone)]
struct Series {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    buckets: [u64; BOUNDS.len() + 1],
}

impl Default for Series {
    fn default() -> Self {
        Series {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: 0.0,
            buckets: [0; BOUNDS.len() + 1],
        }
    }
}

#[derive(Default)]
struct InstanceState {
    /// (method, route, status) → cumulative histogram.
    requests: BTreeMap<(&'static str, &'static str, i64), Series>,
    in_interval: u64,
    busy_secs_in_interval: f64,
    db_busy_secs_in_interval: f64,
    lag: f64,
}

pub struct MetricsState {
    start_unix_nano: u64,
    instances: Vec<InstanceState>,
}

impl MetricsState {
    pub fn new(count: usize, start_unix_nano: i64) -> Self {
        MetricsState {
            start_unix_nano: start_unix_nano as u64,
            instances: (0..count).map(|_| InstanceState::default()).collect(),
        }
    }

    /// Records one served request.
    pub fn request(
        &mut self,
        instance: usize,
        method: &'static str,
        route: &'static str,
        status: i64,
        secs: f64,
    ) {
        let Some(state) = self.instances.get_mut(instance) else {
            return;
        };
        let series = state.requests.entry((method, route, status)).or_default();
        series.count += 1;
        series.sum += secs;
        series.min = series.min.min(secs);
        series.max = series.max.max(secs);
        let bucket = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        series.buckets[bucket] += 1;
        state.in_interval += 1;
        state.busy_secs_in_interval += secs;
    }

    pub fn db_time(&mut self, instance: usize, secs: f64) {
        if let Some(state) = self.instances.get_mut(instance) {
            state.db_busy_secs_in_interval += secs;
        }
    }

    pub fn consumer_lag(&mut self, instance: usize, messages: f64) {
        if let Some(state) = self.instances.get_mut(instance) {
            state.lag = messages;
        }
    }

    /// One export of every instance's metrics at `now` (ns), covering an
    /// interval of `interval_secs`, and how many data points it holds;
    /// resets the per-interval gauges' inputs.
    pub fn export(
        &mut self,
        instances: &[Instance],
        now: i64,
        interval_secs: f64,
        versions: impl Fn(&Instance) -> String,
        rng: &mut Random,
    ) -> (ExportMetricsServiceRequest, u64) {
        let now = now as u64;
        let mut data_points = 0;
        let start = self.start_unix_nano;
        let mut resource_metrics = Vec::with_capacity(instances.len());
        for (inst, state) in instances.iter().zip(self.instances.iter_mut()) {
            let mut duration_points = Vec::new();
            let mut count_points = Vec::new();
            for ((method, route, status), series) in &state.requests {
                let attrs = vec![
                    s("http.request.method", *method),
                    s("http.route", *route),
                    i("http.response.status_code", *status),
                ];
                duration_points.push(HistogramDataPoint {
                    attributes: attrs.clone(),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: series.count,
                    sum: Some(series.sum),
                    bucket_counts: series.buckets.to_vec(),
                    explicit_bounds: BOUNDS.to_vec(),
                    min: Some(series.min),
                    max: Some(series.max),
                    ..Default::default()
                });
                count_points.push(number(attrs, start, now, series.count as f64));
            }
            // One histogram and one sum point per series.
            data_points += duration_points.len() + count_points.len();
            let rps = state.in_interval as f64 / interval_secs.max(1e-9);
            let cpu = (0.04
                + state.busy_secs_in_interval / interval_secs.max(1e-9) * 0.35
                + rng.uniform() * 0.02)
                .min(1.0);
            let memory = 180e6 + rps * 1.5e5 + rng.uniform() * 8e6;
            let mut gauges = vec![
                gauge(
                    "process.cpu.utilization",
                    "CPU time used / available.",
                    "1",
                    number(vec![], start, now, cpu),
                ),
                gauge(
                    "process.memory.usage",
                    "Resident memory.",
                    "By",
                    number(vec![], start, now, memory),
                ),
            ];
            let mut metrics = vec![
                metric(
                    "http.server.request.duration",
                    "Duration of HTTP server requests.",
                    "s",
                    Data::Histogram(Histogram {
                        data_points: duration_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    }),
                ),
                metric(
                    "http.server.request.count",
                    "HTTP server requests served.",
                    "{request}",
                    Data::Sum(Sum {
                        data_points: count_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    }),
                ),
            ];
            if inst.service == "email" {
                let lag = number(
                    vec![s("messaging.destination.name", "orders")],
                    start,
                    now,
                    state.lag,
                );
                gauges.push(gauge(
                    "messaging.kafka.consumer.lag",
                    "Messages not yet consumed.",
                    "{message}",
                    lag,
                ));
            }
            if inst.service == "inventory" || inst.service == "cart" {
                let used = (state.db_busy_secs_in_interval / interval_secs.max(1e-9)).min(20.0);
                let pool = if inst.service == "inventory" {
                    "postgres-inventory"
                } else {
                    "redis-cart"
                };
                let attrs = |st: &str| {
                    vec![
                        s("db.client.connection.state", st),
                        s("db.client.connection.pool.name", pool),
                    ]
                };
                gauges.push(gauge(
                    "db.client.connection.count",
                    "Connections in the pool by state.",
                    "{connection}",
                    NumberDataPoint {
                        ..number(attrs("used"), start, now, used.ceil())
                    },
                ));
            }
            // A gauge is one point.
            data_points += gauges.len();
            metrics.extend(gauges);
            state.in_interval = 0;
            state.busy_secs_in_interval = 0.0;
            state.db_busy_secs_in_interval = 0.0;
            resource_metrics.push(ResourceMetrics {
                resource: Some(resource(inst, &versions(inst))),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: format!("shop.{}", inst.service),
                        version: version_of(inst.service).into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        (
            ExportMetricsServiceRequest { resource_metrics },
            data_points as u64,
        )
    }
}

fn number(attributes: Vec<KeyValue>, start: u64, now: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn metric(name: &str, description: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        description: description.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

fn gauge(name: &str, description: &str, unit: &str, point: NumberDataPoint) -> Metric {
    metric(
        name,
        description,
        unit,
        Data::Gauge(Gauge {
            data_points: vec![point],
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shop::Shop;

    /// The count `export` reports is the number of points it built.
    #[test]
    fn export_counts_its_data_points() {
        let shop = Shop::new();
        let mut state = MetricsState::new(shop.instances.len(), 0);
        for instance in 0..shop.instances.len() {
            state.request(instance, "GET", "/api/cart", 200, 0.01);
            state.request(instance, "POST", "/api/checkout", 500, 0.2);
            state.db_time(instance, 0.003);
        }
        let mut rng = Random::new(7);
        let (request, count) = state.export(
            &shop.instances,
            1_000_000_000,
            10.0,
            |inst| version_of(inst.service).to_string(),
            &mut rng,
        );
        let points: usize = request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(Data::Histogram(h)) => h.data_points.len(),
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Gauge(g)) => g.data_points.len(),
                other => panic!("gen exports no {other:?}"),
            })
            .sum();
        assert!(points > 0);
        assert_eq!(count, points as u64);
    }
}
