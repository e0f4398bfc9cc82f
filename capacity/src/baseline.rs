//! Baselines: how many requests per second one instance of a service
//! carries within its SLO — entered by hand, or fitted from a load test
//! whose spans Loupe stored.
//!
//! A load test runs stepped concurrency against one instance. Per step,
//! throughput, p99 latency and error rate come from the SERVER spans; the
//! Universal Scalability Law fitted to (concurrency, throughput) gives the
//! instance's peak X_max, and the SLO knee is the highest step throughput
//! that kept p99 and errors within the SLO. The baseline is the lower one.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{CapacityError, Result};
use crate::load::{Columns, Row, Telemetry, query};
use crate::usl::Usl;
use loupe_base::sql_literal::{quote, timestamp as ts};

/// The latency and error budget a baseline instance must stay within;
/// the load-test fit takes the highest throughput that kept it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    pub p99_ms: f64,
    pub max_error_rate: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            p99_ms: 500.0,
            max_error_rate: 0.01,
        }
    }
}

/// How much one instance carries: the `rps` signal's target is
/// `target_utilization × max_rps_per_instance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub max_rps_per_instance: f64,
    #[serde(default)]
    pub slo: Slo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_test_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_test_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The fit behind a baseline computed from a load test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<Value>,
}

impl Baseline {
    /// Checks what serde cannot, so a baseline that would make every
    /// decision divide by nothing is refused at the API.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_rps_per_instance > 0.0 && self.max_rps_per_instance.is_finite()) {
            return Err("max_rps_per_instance must be a positive number".into());
        }
        if self.slo.p99_ms.is_nan()
            || self.slo.p99_ms <= 0.0
            || !(0.0..=1.0).contains(&self.slo.max_error_rate)
        {
            return Err("slo needs p99_ms > 0 and max_error_rate in [0, 1]".into());
        }
        Ok(())
    }
}

/// One load-test step as measured from spans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Concurrency: the load test's own `loadtest.concurrency` attribute,
    /// else requests in flight by Little's law.
    pub concurrency: f64,
    pub requests: u64,
    /// Requests per second per instance.
    pub throughput: f64,
    pub p99_ms: f64,
    pub error_rate: f64,
    pub within_slo: bool,
}

/// The result of fitting a load test, which becomes the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadTestFit {
    pub steps: Vec<Step>,
    pub sigma: f64,
    pub kappa: f64,
    pub lambda: f64,
    pub n_max: f64,
    pub x_max: f64,
    /// The highest step throughput within the SLO, if any step met it.
    pub slo_knee: Option<f64>,
    /// min(X_max, SLO knee).
    pub max_rps_per_instance: f64,
}

/// Picks the steps within the SLO, fits the USL and derives the baseline.
pub fn fit_steps(mut steps: Vec<Step>, slo: &Slo) -> Result<LoadTestFit> {
    for s in &mut steps {
        s.within_slo = s.p99_ms <= slo.p99_ms && s.error_rate <= slo.max_error_rate;
    }
    let points: Vec<(f64, f64)> = steps
        .iter()
        .filter(|s| s.concurrency > 0.0 && s.throughput > 0.0)
        .map(|s| (s.concurrency, s.throughput))
        .collect();
    let usl = Usl::fit(&points).map_err(|e| CapacityError::Unprocessable(e.to_string()))?;
    let slo_knee = steps
        .iter()
        .filter(|s| s.within_slo)
        .map(|s| s.throughput)
        .fold(None, |best: Option<f64>, x| {
            Some(best.map_or(x, |b| b.max(x)))
        });
    let x_max = usl.x_max();
    let Some(knee) = slo_knee else {
        return Err(CapacityError::Unprocessable(format!(
            "no load-test step met the SLO (p99 ≤ {} ms, errors ≤ {})",
            slo.p99_ms, slo.max_error_rate
        )));
    };
    Ok(LoadTestFit {
        steps,
        sigma: usl.sigma,
        kappa: usl.kappa,
        lambda: usl.lambda,
        n_max: usl.n_max(),
        x_max,
        slo_knee,
        max_rps_per_instance: x_max.min(knee),
    })
}

/// What `from-load-test` is asked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadTestRequest {
    /// The test's window, ns since the epoch (the API accepts times as the
    /// other endpoints do and converts).
    #[serde(skip)]
    pub start_ns: i64,
    #[serde(skip)]
    pub end_ns: i64,
    #[serde(default)]
    pub instance: Option<String>,
    #[serde(default)]
    pub slo: Option<Slo>,
    /// Step length when the spans carry no `loadtest.concurrency`.
    #[serde(default = "ten_seconds", with = "loupe_base::duration")]
    pub step: std::time::Duration,
    #[serde(default)]
    pub load_test_id: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

fn ten_seconds() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

/// One load-test step's aggregates as the step query returns them
/// (missing or null columns read as 0).
struct StepRow {
    /// `loadtest.concurrency` when the load tool recorded it; `None` for
    /// time buckets.
    concurrency: Option<f64>,
    requests: f64,
    first_ns: f64,
    last_ns: f64,
    busy_ns: f64,
    p99_ns: f64,
    error_rate: f64,
    instances: f64,
}

impl StepRow {
    fn read(row: &Row) -> StepRow {
        let n = |column| row.number(column).unwrap_or(0.0);
        StepRow {
            concurrency: row.contains_key("concurrency").then(|| n("concurrency")),
            requests: n("requests"),
            first_ns: n("first_ns"),
            last_ns: n("last_ns"),
            busy_ns: n("busy_ns"),
            p99_ns: n("p99_ns"),
            error_rate: n("error_rate"),
            instances: n("instances"),
        }
    }

    /// The step, from `step_ns`-long buckets when unlabelled; `None` when
    /// too few requests or no time elapsed to measure a rate.
    fn step(&self, step_ns: i64) -> Option<Step> {
        let requests = self.requests;
        if requests < 2.0 {
            return None;
        }
        let instances = self.instances.max(1.0);
        // Labelled: the rate between the first and the last request of the
        // step, (n − 1) intervals over that time.
        let seconds = match self.concurrency {
            Some(_) => (self.last_ns - self.first_ns) / 1e9,
            None => step_ns as f64 / 1e9,
        };
        if seconds <= 0.0 {
            return None;
        }
        let (throughput, concurrency) = match self.concurrency {
            Some(c) => ((requests - 1.0) / seconds / instances, c),
            // Little's law for the unlabelled buckets.
            None => (
                requests / seconds / instances,
                self.busy_ns / 1e9 / seconds / instances,
            ),
        };
        Some(Step {
            concurrency,
            requests: requests as u64,
            throughput,
            p99_ms: self.p99_ns / 1e6,
            error_rate: self.error_rate,
            within_slo: false,
        })
    }
}

/// Measures the load test's steps from the service's SERVER spans: grouped
/// by `loadtest.concurrency` when the load tool recorded it, else by
/// `step`-long time buckets with concurrency from Little's law.
pub async fn measure_steps(
    t: &dyn Telemetry,
    service: &str,
    req: &LoadTestRequest,
) -> Result<Vec<Step>> {
    let mut filter = format!(
        "service = {} AND kind = 'server' AND start_time >= {} AND start_time < {}",
        quote(service),
        ts(req.start_ns),
        ts(req.end_ns)
    );
    if let Some(instance) = &req.instance {
        filter.push_str(&format!(" AND instance = {}", quote(instance)));
    }
    let measures = "count(*) AS requests,
        CAST(min(start_time) AS BIGINT) AS first_ns, CAST(max(start_time) AS BIGINT) AS last_ns,
        sum(duration_ns) AS busy_ns,
        approx_percentile_cont(duration_ns, 0.99) AS p99_ns,
        avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate,
        count(DISTINCT instance) AS instances";
    let labelled = query(
        t,
        format!(
            "SELECT CAST(attributes['loadtest.concurrency'] AS DOUBLE) AS concurrency, {measures}
             FROM spans WHERE {filter} AND attributes['loadtest.concurrency'] IS NOT NULL
             GROUP BY 1 ORDER BY 1"
        ),
    )
    .await?;
    let step_ns = req.step.as_nanos().max(1) as i64;
    let rows = if labelled.len() >= 3 {
        labelled
    } else {
        query(
            t,
            format!(
                "SELECT (CAST(start_time AS BIGINT) - {start}) / {step_ns} AS bucket, {measures}
                 FROM spans WHERE {filter} GROUP BY 1 ORDER BY 1",
                start = req.start_ns
            ),
        )
        .await?
    };
    let steps = rows
        .iter()
        .filter_map(|row| StepRow::read(row).step(step_ns))
        .collect::<Vec<_>>();
    if steps.len() < 3 {
        return Err(CapacityError::Unprocessable(format!(
            "found {} load-test steps of {service} in that window; a fit needs at least 3",
            steps.len()
        )));
    }
    Ok(steps)
}

/// The baseline to store for a fitted load test.
pub fn baseline_from_fit(fit: &LoadTestFit, slo: Slo, req: &LoadTestRequest) -> Baseline {
    Baseline {
        max_rps_per_instance: fit.max_rps_per_instance,
        slo,
        load_test_id: req.load_test_id.clone(),
        load_test_date: chrono::DateTime::from_timestamp_nanos(req.start_ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into(),
        note: req.note.clone(),
        fit: Some(json!(fit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(n: f64, x: f64, p99: f64) -> Step {
        Step {
            concurrency: n,
            requests: 1000,
            throughput: x,
            p99_ms: p99,
            error_rate: 0.0,
            within_slo: false,
        }
    }

    /// The usl-rs README vector, with latencies that breach a 200 ms SLO
    /// from 108 concurrent requests on.
    #[test]
    fn fit_reproduces_usl_rs_and_takes_the_lower_of_peak_and_knee() {
        let points = [
            (1.0, 65.0, 20.0),
            (18.0, 996.0, 25.0),
            (36.0, 1652.0, 40.0),
            (72.0, 1853.0, 120.0),
            (108.0, 1829.0, 250.0),
            (144.0, 1775.0, 400.0),
            (216.0, 1702.0, 800.0),
        ];
        let steps = points.iter().map(|&(n, x, p)| step(n, x, p)).collect();
        let slo = Slo {
            p99_ms: 200.0,
            max_error_rate: 0.01,
        };
        let fit = fit_steps(steps, &slo).unwrap();
        assert!((fit.sigma - 0.028).abs() / 0.028 < 0.01, "{}", fit.sigma);
        assert!(
            (fit.kappa - 1.04e-4).abs() / 1.04e-4 < 0.01,
            "{}",
            fit.kappa
        );
        assert!((fit.lambda - 90.0).abs() / 90.0 < 0.01, "{}", fit.lambda);
        assert_eq!(fit.n_max, 96.0);
        assert!((fit.x_max - 1882.0).abs() / 1882.0 < 0.01, "{}", fit.x_max);
        assert_eq!(fit.slo_knee, Some(1853.0));
        assert_eq!(fit.max_rps_per_instance, 1853.0);
        let loose = Slo {
            p99_ms: 10_000.0,
            max_error_rate: 1.0,
        };
        // A noisy step measured above the fitted peak: the peak wins.
        let mut steps: Vec<Step> = points.iter().map(|&(n, x, p)| step(n, x, p)).collect();
        steps.push(step(80.0, 1950.0, 150.0));
        let noisy = fit_steps(steps, &loose).unwrap();
        assert_eq!(noisy.slo_knee, Some(1950.0));
        assert!(noisy.x_max < 1950.0);
        assert_eq!(noisy.max_rps_per_instance, noisy.x_max);
        let none_ok = points
            .iter()
            .map(|&(n, x, _)| step(n, x, 9_999.0))
            .collect();
        assert!(fit_steps(none_ok, &slo).is_err());
    }
}
