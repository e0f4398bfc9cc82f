//! OTLP metrics → the `metrics` table: one row per data point, whatever
//! the metric kind, with the kind-specific columns left null elsewhere.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, ListBuilder, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use loupe_storage::Signal;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, metric::Data, number_data_point,
};

use super::{Arrival, Converted, Rejections, resource_attributes, scope_name_version, to_nanos};
use crate::anyvalue::{
    AttrBuilder, append_attributes, instance_id, new_attr_builder, service_name,
};

fn temporality_name(t: i32) -> Option<&'static str> {
    match t {
        1 => Some("delta"),
        2 => Some("cumulative"),
        _ => None,
    }
}

struct Columns {
    time: TimestampNanosecondBuilder,
    start_time: TimestampNanosecondBuilder,
    service: StringBuilder,
    name: StringBuilder,
    description: StringBuilder,
    kind: StringBuilder,
    unit: StringBuilder,
    value: Float64Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_bounds: ListBuilder<Float64Builder>,
    bucket_counts: ListBuilder<UInt64Builder>,
    exp_scale: Int32Builder,
    exp_zero_count: UInt64Builder,
    exp_positive_offset: Int32Builder,
    exp_positive_counts: ListBuilder<UInt64Builder>,
    exp_negative_offset: Int32Builder,
    exp_negative_counts: ListBuilder<UInt64Builder>,
    quantiles: ListBuilder<Float64Builder>,
    quantile_values: ListBuilder<Float64Builder>,
    temporality: StringBuilder,
    is_monotonic: BooleanBuilder,
    flags: UInt32Builder,
    attributes: AttrBuilder,
    resource_attributes: AttrBuilder,
    instance: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
}

/// What every data point shares with its metric, resource and scope.
struct Context<'a> {
    service: &'a str,
    instance: Option<&'a str>,
    resource_attrs: &'a [KeyValue],
    scope: (&'a str, &'a str),
    metric: &'a Metric,
    received: i64,
}

/// The columns every kind of data point fills.
struct Point<'a> {
    kind: &'static str,
    time: u64,
    start_time: u64,
    flags: u32,
    attributes: &'a [KeyValue],
    temporality: Option<&'static str>,
    is_monotonic: Option<bool>,
}

/// A histogram or exponential-histogram point: the fields both kinds share.
trait DistributionPoint {
    /// The shared row fields, for a point of `kind` with `temporality`.
    fn point(&self, kind: &'static str, temporality: i32) -> Point<'_>;
    fn count(&self) -> u64;
    fn sum(&self) -> Option<f64>;
    fn min(&self) -> Option<f64>;
    fn max(&self) -> Option<f64>;
}

macro_rules! distribution_point {
    ($point:ty) => {
        impl DistributionPoint for $point {
            fn point(&self, kind: &'static str, temporality: i32) -> Point<'_> {
                Point {
                    kind,
                    time: self.time_unix_nano,
                    start_time: self.start_time_unix_nano,
                    flags: self.flags,
                    attributes: &self.attributes,
                    temporality: temporality_name(temporality),
                    is_monotonic: None,
                }
            }
            fn count(&self) -> u64 {
                self.count
            }
            fn sum(&self) -> Option<f64> {
                self.sum
            }
            fn min(&self) -> Option<f64> {
                self.min
            }
            fn max(&self) -> Option<f64> {
                self.max
            }
        }
    };
}

distribution_point!(HistogramDataPoint);
distribution_point!(ExponentialHistogramDataPoint);

impl Columns {
    fn new() -> Self {
        Columns {
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            start_time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            service: StringBuilder::new(),
            name: StringBuilder::new(),
            description: StringBuilder::new(),
            kind: StringBuilder::new(),
            unit: StringBuilder::new(),
            value: Float64Builder::new(),
            count: UInt64Builder::new(),
            sum: Float64Builder::new(),
            min: Float64Builder::new(),
            max: Float64Builder::new(),
            bucket_bounds: ListBuilder::new(Float64Builder::new()),
            bucket_counts: ListBuilder::new(UInt64Builder::new()),
            exp_scale: Int32Builder::new(),
            exp_zero_count: UInt64Builder::new(),
            exp_positive_offset: Int32Builder::new(),
            exp_positive_counts: ListBuilder::new(UInt64Builder::new()),
            exp_negative_offset: Int32Builder::new(),
            exp_negative_counts: ListBuilder::new(UInt64Builder::new()),
            quantiles: ListBuilder::new(Float64Builder::new()),
            quantile_values: ListBuilder::new(Float64Builder::new()),
            temporality: StringBuilder::new(),
            is_monotonic: BooleanBuilder::new(),
            flags: UInt32Builder::new(),
            attributes: new_attr_builder(),
            resource_attributes: new_attr_builder(),
            instance: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
        }
    }

    /// Appends the shared columns of one row; the caller then appends
    /// exactly one value (or null) to every kind-specific column.
    fn common(&mut self, ctx: &Context<'_>, p: Point<'_>) {
        let time = match to_nanos(p.time) {
            0 => ctx.received,
            t => t,
        };
        self.time.append_value(time);
        self.start_time
            .append_option(Some(to_nanos(p.start_time)).filter(|t| *t != 0));
        self.service.append_value(ctx.service);
        self.name.append_value(&ctx.metric.name);
        self.description
            .append_option(Some(ctx.metric.description.as_str()).filter(|s| !s.is_empty()));
        self.kind.append_value(p.kind);
        self.unit
            .append_option(Some(ctx.metric.unit.as_str()).filter(|s| !s.is_empty()));
        self.temporality.append_option(p.temporality);
        self.is_monotonic.append_option(p.is_monotonic);
        self.flags.append_value(p.flags);
        append_attributes(&mut self.attributes, p.attributes);
        append_attributes(&mut self.resource_attributes, ctx.resource_attrs);
        self.instance.append_option(ctx.instance);
        self.scope_name.append_value(ctx.scope.0);
        self.scope_version.append_value(ctx.scope.1);
    }

    /// The columns every distribution kind fills (and `value`, which none does).
    fn distribution(&mut self, count: u64, sum: Option<f64>, min: Option<f64>, max: Option<f64>) {
        self.value.append_null();
        self.count.append_value(count);
        self.sum.append_option(sum);
        self.min.append_option(min);
        self.max.append_option(max);
    }

    /// `common` and `distribution` for a histogram or exponential-histogram
    /// point; the caller appends the kind-specific columns.
    fn distribution_point(
        &mut self,
        ctx: &Context<'_>,
        dp: &impl DistributionPoint,
        kind: &'static str,
        temporality: i32,
    ) {
        self.common(ctx, dp.point(kind, temporality));
        self.distribution(dp.count(), dp.sum(), dp.min(), dp.max());
    }

    fn null_histogram(&mut self) {
        self.bucket_bounds.append_null();
        self.bucket_counts.append_null();
    }

    fn null_exponential(&mut self) {
        self.exp_scale.append_null();
        self.exp_zero_count.append_null();
        self.exp_positive_offset.append_null();
        self.exp_positive_counts.append_null();
        self.exp_negative_offset.append_null();
        self.exp_negative_counts.append_null();
    }

    fn null_summary(&mut self) {
        self.quantiles.append_null();
        self.quantile_values.append_null();
    }

    fn buckets(
        list: &mut ListBuilder<UInt64Builder>,
        offset: &mut Int32Builder,
        buckets: Option<&Buckets>,
    ) {
        match buckets {
            Some(b) => {
                offset.append_value(b.offset);
                list.values().append_slice(&b.bucket_counts);
                list.append(true);
            }
            None => {
                offset.append_null();
                list.append_null();
            }
        }
    }

    fn add_metric(&mut self, ctx: &Context<'_>) -> usize {
        let Some(data) = &ctx.metric.data else {
            return 0;
        };
        match data {
            Data::Gauge(g) => self.numbers(ctx, "gauge", &g.data_points, None, None),
            Data::Sum(s) => self.numbers(
                ctx,
                "sum",
                &s.data_points,
                temporality_name(s.aggregation_temporality),
                Some(s.is_monotonic),
            ),
            Data::Histogram(h) => {
                for dp in &h.data_points {
                    self.distribution_point(ctx, dp, "histogram", h.aggregation_temporality);
                    self.bucket_bounds
                        .values()
                        .append_slice(&dp.explicit_bounds);
                    self.bucket_bounds.append(true);
                    self.bucket_counts.values().append_slice(&dp.bucket_counts);
                    self.bucket_counts.append(true);
                    self.null_exponential();
                    self.null_summary();
                }
                h.data_points.len()
            }
            Data::ExponentialHistogram(h) => {
                for dp in &h.data_points {
                    self.distribution_point(
                        ctx,
                        dp,
                        "exponential_histogram",
                        h.aggregation_temporality,
                    );
                    self.null_histogram();
                    self.exp_scale.append_value(dp.scale);
                    self.exp_zero_count.append_value(dp.zero_count);
                    Self::buckets(
                        &mut self.exp_positive_counts,
                        &mut self.exp_positive_offset,
                        dp.positive.as_ref(),
                    );
                    Self::buckets(
                        &mut self.exp_negative_counts,
                        &mut self.exp_negative_offset,
                        dp.negative.as_ref(),
                    );
                    self.null_summary();
                }
                h.data_points.len()
            }
            Data::Summary(s) => {
                for dp in &s.data_points {
                    self.common(
                        ctx,
                        Point {
                            kind: "summary",
                            time: dp.time_unix_nano,
                            start_time: dp.start_time_unix_nano,
                            flags: dp.flags,
                            attributes: &dp.attributes,
                            temporality: None,
                            is_monotonic: None,
                        },
                    );
                    self.distribution(dp.count, Some(dp.sum), None, None);
                    self.null_histogram();
                    self.null_exponential();
                    for q in &dp.quantile_values {
                        self.quantiles.values().append_value(q.quantile);
                        self.quantile_values.values().append_value(q.value);
                    }
                    self.quantiles.append(true);
                    self.quantile_values.append(true);
                }
                s.data_points.len()
            }
        }
    }

    fn numbers(
        &mut self,
        ctx: &Context<'_>,
        kind: &'static str,
        points: &[opentelemetry_proto::tonic::metrics::v1::NumberDataPoint],
        temporality: Option<&'static str>,
        is_monotonic: Option<bool>,
    ) -> usize {
        for dp in points {
            self.common(
                ctx,
                Point {
                    kind,
                    time: dp.time_unix_nano,
                    start_time: dp.start_time_unix_nano,
                    flags: dp.flags,
                    attributes: &dp.attributes,
                    temporality,
                    is_monotonic,
                },
            );
            self.value.append_option(dp.value.map(|v| match v {
                number_data_point::Value::AsDouble(d) => d,
                number_data_point::Value::AsInt(i) => i as f64,
            }));
            self.count.append_null();
            self.sum.append_null();
            self.min.append_null();
            self.max.append_null();
            self.null_histogram();
            self.null_exponential();
            self.null_summary();
        }
        points.len()
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bucket_bounds.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.exp_scale.finish()),
            Arc::new(self.exp_zero_count.finish()),
            Arc::new(self.exp_positive_offset.finish()),
            Arc::new(self.exp_positive_counts.finish()),
            Arc::new(self.exp_negative_offset.finish()),
            Arc::new(self.exp_negative_counts.finish()),
            Arc::new(self.quantiles.finish()),
            Arc::new(self.quantile_values.finish()),
            Arc::new(self.temporality.finish()),
            Arc::new(self.is_monotonic.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.instance.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
        ];
        RecordBatch::try_new(Signal::Metrics.schema(), columns)
    }
}

/// Data points in a whole request (a metric without data counts as one).
pub fn data_point_total(request: &ExportMetricsServiceRequest) -> usize {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| data_point_count(m).max(1))
        .sum()
}

fn data_point_count(metric: &Metric) -> usize {
    match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Every data point's time (0 when unset).
fn point_times(metric: &Metric) -> Vec<u64> {
    match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.iter().map(|p| p.time_unix_nano).collect(),
        Some(Data::Sum(s)) => s.data_points.iter().map(|p| p.time_unix_nano).collect(),
        Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.time_unix_nano).collect(),
        Some(Data::ExponentialHistogram(h)) => {
            h.data_points.iter().map(|p| p.time_unix_nano).collect()
        }
        Some(Data::Summary(s)) => s.data_points.iter().map(|p| p.time_unix_nano).collect(),
        None => Vec::new(),
    }
}

/// Converts a request; `arrival.received` stands in for a missing point
/// time, and a metric with a point outside its window is rejected whole.
pub fn convert(
    request: &ExportMetricsServiceRequest,
    arrival: Arrival,
) -> Result<Converted, ArrowError> {
    let received = arrival.received;
    let mut c = Columns::new();
    let mut rejected = Rejections::default();
    for resource_metrics in &request.resource_metrics {
        let resource_attrs = resource_attributes(resource_metrics.resource.as_ref());
        let service = service_name(resource_attrs);
        let instance = instance_id(resource_attrs);
        for scope_metrics in &resource_metrics.scope_metrics {
            let scope = scope_name_version(scope_metrics.scope.as_ref());
            for metric in &scope_metrics.metrics {
                if metric.name.is_empty() {
                    let n = data_point_count(metric).max(1);
                    rejected.reject(n, || {
                        format!("metric of service {service:?} has an empty name")
                    });
                    continue;
                }
                if metric.data.is_none() {
                    rejected.reject(1, || format!("metric {:?} has no data", metric.name));
                    continue;
                }
                let refused = point_times(metric)
                    .into_iter()
                    .filter(|t| *t != 0)
                    .find_map(|t| arrival.refuse(to_nanos(t)));
                if let Some(reason) = refused {
                    let n = data_point_count(metric);
                    rejected.reject(n, || format!("metric {:?}: {reason}", metric.name));
                    continue;
                }
                let ctx = Context {
                    service: &service,
                    instance: instance.as_deref(),
                    resource_attrs,
                    scope,
                    metric,
                    received,
                };
                c.add_metric(&ctx);
            }
        }
    }
    Ok(Converted {
        batch: super::fitted(c.finish()?)?,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, ListArray};
    use arrow::datatypes::{Float64Type, UInt64Type};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };

    #[test]
    fn one_row_per_point_with_kind_specific_columns() {
        let gauge = Metric {
            name: "cpu".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    time_unix_nano: 10,
                    value: Some(number_data_point::Value::AsInt(3)),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        };
        let hist = Metric {
            name: "latency".into(),
            data: Some(Data::Histogram(Histogram {
                aggregation_temporality: 2,
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: 20,
                    count: 5,
                    sum: Some(1.5),
                    explicit_bounds: vec![0.1, 1.0],
                    bucket_counts: vec![1, 3, 1],
                    ..Default::default()
                }],
            })),
            ..Default::default()
        };
        let empty = Metric {
            name: "nothing".into(),
            ..Default::default()
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![gauge, hist, empty],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let out = convert(&request, Arrival::unbounded(1)).unwrap();
        let b = &out.batch;
        assert_eq!((b.num_rows(), out.rejected.count), (2, 1));
        let kind = b.column_by_name("kind").unwrap().as_string::<i32>();
        assert_eq!((kind.value(0), kind.value(1)), ("gauge", "histogram"));
        // No resource, so no instance.
        assert_eq!(b.column_by_name("instance").unwrap().null_count(), 2);
        assert_eq!(
            b.column_by_name("value")
                .unwrap()
                .as_primitive::<Float64Type>()
                .value(0),
            3.0
        );
        assert_eq!(
            b.column_by_name("count")
                .unwrap()
                .as_primitive::<UInt64Type>()
                .value(1),
            5
        );
        let temporality = b.column_by_name("temporality").unwrap().as_string::<i32>();
        assert_eq!(temporality.value(1), "cumulative");
        let counts = b.column_by_name("bucket_counts").unwrap();
        let counts = counts.as_any().downcast_ref::<ListArray>().unwrap();
        assert!(counts.is_null(0));
        assert_eq!(
            counts
                .value(1)
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec(),
            vec![1, 3, 1]
        );
    }
}
