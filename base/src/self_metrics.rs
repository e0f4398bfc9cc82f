//! Loupe's self-metrics, rendered in the Prometheus text format at
//! `/metrics`. Deliberately tiny: counters, gauges and fixed-bucket
//! histograms with static label sets, registered once and updated with
//! atomics on the hot path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency buckets in seconds, from 100 µs to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.inc_by(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in nanoseconds (or other integer unit) to stay lock-free.
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

impl Metric {
    fn type_name(&self) -> &'static str {
        match self {
            Metric::Counter(_) => "counter",
            Metric::Gauge(_) => "gauge",
            Metric::Histogram(_) => "histogram",
        }
    }
}

struct Family {
    help: &'static str,
    series: BTreeMap<String, Metric>,
}

/// Sets gauges from their source just before they are rendered.
type RenderHook = Box<dyn Fn() + Send + Sync>;

/// All self-metrics of one process. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
    hooks: Arc<Mutex<Vec<RenderHook>>>,
}

type Labels<'a> = &'a [(&'a str, &'a str)];

fn label_string(labels: Labels<'_>) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out
}

impl Registry {
    fn get_or_insert(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Labels<'_>,
        make: impl FnOnce() -> Metric,
    ) -> Metric {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            series: BTreeMap::new(),
        });
        family
            .series
            .entry(label_string(labels))
            .or_insert_with(make)
            .clone()
    }

    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Labels<'_>,
    ) -> Arc<Counter> {
        match self.get_or_insert(name, help, labels, || Metric::Counter(Arc::default())) {
            Metric::Counter(c) => c,
            _ => Arc::default(),
        }
    }

    pub fn gauge(&self, name: &'static str, help: &'static str, labels: Labels<'_>) -> Arc<Gauge> {
        match self.get_or_insert(name, help, labels, || Metric::Gauge(Arc::default())) {
            Metric::Gauge(g) => g,
            _ => Arc::default(),
        }
    }

    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Labels<'_>,
    ) -> Arc<Histogram> {
        let make = || Metric::Histogram(Arc::new(Histogram::new(LATENCY_BUCKETS)));
        match self.get_or_insert(name, help, labels, make) {
            Metric::Histogram(h) => h,
            _ => Arc::new(Histogram::new(LATENCY_BUCKETS)),
        }
    }

    /// Runs `hook` before every [`Registry::render`]: for gauges whose
    /// value is cheaper to read when scraped than to keep up to date.
    pub fn on_render(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(hook));
    }

    /// The Prometheus text exposition of every registered series.
    pub fn render(&self) -> String {
        for hook in self.hooks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            hook();
        }
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            let Some(first) = family.series.values().next() else {
                continue;
            };
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {}", first.type_name());
            for (labels, metric) in &family.series {
                let braces = |extra: &str| -> String {
                    match (labels.is_empty(), extra.is_empty()) {
                        (true, true) => String::new(),
                        (true, false) => format!("{{{extra}}}"),
                        (false, true) => format!("{{{labels}}}"),
                        (false, false) => format!("{{{labels},{extra}}}"),
                    }
                };
                match metric {
                    Metric::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {}", braces(""), c.get());
                    }
                    Metric::Gauge(g) => {
                        let _ = writeln!(out, "{name}{} {}", braces(""), g.get());
                    }
                    Metric::Histogram(h) => {
                        let mut cumulative = 0;
                        for (bound, count) in h.bounds.iter().zip(&h.counts) {
                            cumulative += count.load(Ordering::Relaxed);
                            let le = format!("le=\"{bound}\"");
                            let _ = writeln!(out, "{name}_bucket{} {cumulative}", braces(&le));
                        }
                        let total = h.count();
                        let _ = writeln!(out, "{name}_bucket{} {total}", braces("le=\"+Inf\""));
                        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                        let _ = writeln!(out, "{name}_sum{} {sum}", braces(""));
                        let _ = writeln!(out, "{name}_count{} {total}", braces(""));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        let c = r.counter("loupe_x_total", "Xs.", &[("signal", "logs")]);
        c.inc_by(3);
        // The same name and labels give the same series.
        r.counter("loupe_x_total", "Xs.", &[("signal", "logs")])
            .inc();
        r.histogram("loupe_lat_seconds", "Latency.", &[])
            .observe(Duration::from_millis(2));
        let text = r.render();
        assert!(text.contains("# TYPE loupe_x_total counter\nloupe_x_total{signal=\"logs\"} 4\n"));
        assert!(text.contains("loupe_lat_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("loupe_lat_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("loupe_lat_seconds_count 1\n"));
    }

    #[test]
    fn render_hooks_set_gauges_when_scraped() {
        let r = Registry::default();
        let g = r.gauge("loupe_g_bytes", "G.", &[]);
        let source = Arc::new(AtomicI64::new(5));
        let read = source.clone();
        r.on_render(move || g.set(read.load(Ordering::Relaxed)));
        assert!(r.render().contains("loupe_g_bytes 5\n"));
        source.store(7, Ordering::Relaxed);
        assert!(r.render().contains("loupe_g_bytes 7\n"));
    }
}
