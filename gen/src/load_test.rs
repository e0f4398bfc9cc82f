//! The `load-test-ramp` model: one checkout instance with a fixed real
//! capacity, driven at stepped concurrency. Throughput follows the
//! Universal Scalability Law, X(N) = λN / (1 + σ(N−1) + κN(N−1)), so it
//! rises, flattens at the instance's capacity and then falls, while
//! latency (Little's law, R = N / X) climbs.

use serde_json::{Value, json};

pub const TARGET_SERVICE: &str = "checkout";
pub const TARGET_INSTANCE: &str = "checkout-1";
const SIGMA: f64 = 0.03;
const KAPPA: f64 = 0.0005;
const STEPS: [u32; 11] = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128];

#[derive(Debug, Clone)]
pub struct LoadTest {
    pub sigma: f64,
    pub kappa: f64,
    pub lambda: f64,
    pub step_secs: f64,
}

impl LoadTest {
    /// A ramp whose peak throughput is `capacity_rps`.
    pub fn new(capacity_rps: f64, step_secs: f64) -> Self {
        let mut lt = LoadTest {
            sigma: SIGMA,
            kappa: KAPPA,
            lambda: 1.0,
            step_secs,
        };
        lt.lambda = capacity_rps / lt.throughput(lt.n_max());
        lt
    }

    /// The concurrency with the highest throughput (continuous).
    pub fn n_max(&self) -> f64 {
        ((1.0 - self.sigma) / self.kappa).sqrt()
    }

    pub fn throughput(&self, n: f64) -> f64 {
        self.lambda * n / (1.0 + self.sigma * (n - 1.0) + self.kappa * n * (n - 1.0))
    }

    /// Mean latency in seconds at concurrency `n`.
    pub fn latency_secs(&self, n: f64) -> f64 {
        n / self.throughput(n)
    }

    /// Share of requests failing at concurrency `n`: none below the
    /// saturation point, rising past it (timeouts under overload).
    pub fn error_rate(&self, n: f64) -> f64 {
        ((n - self.n_max()) / n).max(0.0) * 0.2
    }

    pub fn duration_secs(&self) -> f64 {
        STEPS.len() as f64 * self.step_secs
    }

    /// The step (index, concurrency) running at scenario time `t`.
    pub fn step_at(&self, t: f64) -> Option<(usize, u32)> {
        let i = (t / self.step_secs) as usize;
        STEPS.get(i).map(|n| (i, *n))
    }

    pub fn truth(&self, start_unix_nano: i64) -> Value {
        let steps: Vec<Value> = STEPS
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let n = *n as f64;
                json!({
                    "step": i,
                    "concurrency": n,
                    "start_unix_nano": start_unix_nano + (i as f64 * self.step_secs * 1e9) as i64,
                    "end_unix_nano": start_unix_nano + ((i + 1) as f64 * self.step_secs * 1e9) as i64,
                    "throughput_rps": self.throughput(n),
                    "mean_latency_ms": self.latency_secs(n) * 1000.0,
                    "error_rate": self.error_rate(n),
                })
            })
            .collect();
        json!({
            "usl": {"sigma": self.sigma, "kappa": self.kappa, "lambda": self.lambda},
            "n_max": self.n_max(),
            "capacity_rps": self.throughput(self.n_max()),
            "step_secs": self.step_secs,
            "steps": steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_throughput_is_the_configured_capacity() {
        let lt = LoadTest::new(200.0, 10.0);
        assert!((lt.throughput(lt.n_max()) - 200.0).abs() < 1e-9);
        assert!(lt.throughput(128.0) < lt.throughput(48.0));
        assert!(lt.latency_secs(128.0) > 10.0 * lt.latency_secs(1.0));
        assert_eq!(lt.error_rate(8.0), 0.0);
        assert_eq!(lt.step_at(25.0), Some((2, 4)));
        assert_eq!(lt.step_at(1000.0), None);
    }
}
