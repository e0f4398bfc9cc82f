//! The Universal Scalability Law, X(N) = λN / (1 + σ(N−1) + κN(N−1)),
//! fitted to load-test points (concurrency, throughput) by
//! Levenberg–Marquardt least squares.

/// Fitted USL coefficients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usl {
    /// Contention (serialisation) coefficient.
    pub sigma: f64,
    /// Coherency (crosstalk) coefficient.
    pub kappa: f64,
    /// Throughput of one unit of concurrency without contention.
    pub lambda: f64,
}

/// Why no USL curve came out of the measured steps.
#[derive(Debug, Clone, PartialEq)]
pub enum FitError {
    TooFewPoints,
    DidNotConverge,
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FitError::TooFewPoints => f.write_str("a USL fit needs at least three load-test steps"),
            FitError::DidNotConverge => f.write_str("the USL fit did not converge"),
        }
    }
}

impl std::error::Error for FitError {}

impl Usl {
    /// The curve: throughput at concurrency `n`.
    pub fn throughput(&self, n: f64) -> f64 {
        self.lambda * n / (1.0 + self.sigma * (n - 1.0) + self.kappa * n * (n - 1.0))
    }

    /// The concurrency of peak throughput, sqrt((1 − σ) / κ) (continuous).
    pub fn peak_concurrency(&self) -> f64 {
        if self.kappa > 0.0 {
            ((1.0 - self.sigma) / self.kappa).sqrt()
        } else {
            f64::INFINITY
        }
    }

    /// `N_max = floor(sqrt((1 − σ) / κ))`.
    pub fn n_max(&self) -> f64 {
        self.peak_concurrency().floor()
    }

    /// Peak throughput, at the continuous optimum.
    pub fn x_max(&self) -> f64 {
        let n = self.peak_concurrency();
        if n.is_finite() {
            self.throughput(n)
        } else {
            self.lambda / self.sigma.max(f64::EPSILON)
        }
    }

    /// Least-squares fit of `(concurrency, throughput)` points.
    pub fn fit(points: &[(f64, f64)]) -> Result<Usl, FitError> {
        if points.len() < 3 {
            return Err(FitError::TooFewPoints);
        }
        let lambda0 = points
            .iter()
            .map(|(n, x)| x / n.max(1.0))
            .fold(0.0f64, f64::max);
        let mut p = [0.01, 0.0001, lambda0.max(1e-9)];
        let cost = |p: &[f64; 3]| -> f64 {
            let u = Usl {
                sigma: p[0],
                kappa: p[1],
                lambda: p[2],
            };
            points
                .iter()
                .map(|(n, x)| (x - u.throughput(*n)).powi(2))
                .sum()
        };
        let mut mu = 1e-3;
        let mut current = cost(&p);
        for _ in 0..500 {
            // Jacobian of the model with respect to (σ, κ, λ).
            let mut jtj = [[0.0; 3]; 3];
            let mut jtr = [0.0; 3];
            for (n, x) in points {
                let d = 1.0 + p[0] * (n - 1.0) + p[1] * n * (n - 1.0);
                let model = p[2] * n / d;
                let j = [
                    -p[2] * n * (n - 1.0) / (d * d),
                    -p[2] * n * n * (n - 1.0) / (d * d),
                    n / d,
                ];
                let r = x - model;
                for a in 0..3 {
                    jtr[a] += j[a] * r;
                    for b in 0..3 {
                        jtj[a][b] += j[a] * j[b];
                    }
                }
            }
            let mut improved = false;
            for _ in 0..20 {
                let mut m = jtj;
                for (a, row) in m.iter_mut().enumerate() {
                    row[a] += mu * jtj[a][a].max(1e-12);
                }
                let Some(step) = solve3(m, jtr) else { break };
                let candidate = [
                    (p[0] + step[0]).clamp(0.0, 1.0),
                    (p[1] + step[1]).max(0.0),
                    (p[2] + step[2]).max(1e-12),
                ];
                let c = cost(&candidate);
                if c < current {
                    let done = (current - c) <= 1e-12 * current.max(1.0);
                    p = candidate;
                    current = c;
                    mu = (mu / 3.0).max(1e-12);
                    improved = true;
                    if done {
                        return Ok(Usl {
                            sigma: p[0],
                            kappa: p[1],
                            lambda: p[2],
                        });
                    }
                    break;
                }
                mu *= 4.0;
            }
            if !improved {
                break;
            }
        }
        if current.is_finite() {
            Ok(Usl {
                sigma: p[0],
                kappa: p[1],
                lambda: p[2],
            })
        } else {
            Err(FitError::DidNotConverge)
        }
    }
}

/// Solves a 3×3 linear system by Gaussian elimination with pivoting.
fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|a, b| m[*a][col].abs().total_cmp(&m[*b][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, pivot);
        v.swap(col, pivot);
        for row in col + 1..3 {
            let f = m[row][col] / m[col][col];
            let pivot_row = m[col];
            for (cell, above) in m[row].iter_mut().zip(pivot_row).skip(col) {
                *cell -= f * above;
            }
            v[row] -= f * v[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let s: f64 = (row + 1..3).map(|k| m[row][k] * x[k]).sum();
        x[row] = (v[row] - s) / m[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_the_usl_rs_test_vector() {
        let points = [
            (1.0, 65.0),
            (18.0, 996.0),
            (36.0, 1652.0),
            (72.0, 1853.0),
            (108.0, 1829.0),
            (144.0, 1775.0),
            (216.0, 1702.0),
        ];
        let usl = Usl::fit(&points).unwrap();
        let close = |got: f64, want: f64| (got - want).abs() / want < 0.01;
        assert!(close(usl.sigma, 0.028), "{usl:?}");
        assert!(close(usl.kappa, 1.04e-4), "{usl:?}");
        assert!(close(usl.lambda, 90.0), "{usl:?}");
        assert_eq!(usl.n_max(), 96.0);
        assert!(close(usl.x_max(), 1882.0), "x_max {}", usl.x_max());
    }

    #[test]
    fn recovers_known_coefficients() {
        let truth = Usl {
            sigma: 0.03,
            kappa: 0.0005,
            lambda: 11.0,
        };
        let points: Vec<(f64, f64)> = [
            1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0,
        ]
        .iter()
        .map(|n| (*n, truth.throughput(*n)))
        .collect();
        let fit = Usl::fit(&points).unwrap();
        assert!(
            (fit.x_max() - truth.x_max()).abs() / truth.x_max() < 1e-3,
            "{fit:?}"
        );
        assert!(matches!(
            Usl::fit(&points[..2]),
            Err(FitError::TooFewPoints)
        ));
    }
}
