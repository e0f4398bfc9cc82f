//! Seeded randomness: ids, log-normal latencies, choices. Everything the
//! generator draws comes from one `StdRng`, so a seed fixes the data.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::topology::Cost;

pub struct Random(StdRng);

impl Random {
    pub fn new(seed: u64) -> Self {
        Random(StdRng::seed_from_u64(seed))
    }

    pub fn trace_id(&mut self) -> Vec<u8> {
        let mut id = [0u8; 16];
        self.0.fill_bytes(&mut id);
        id[0] |= 1;
        id.to_vec()
    }

    pub fn span_id(&mut self) -> Vec<u8> {
        let mut id = [0u8; 8];
        self.0.fill_bytes(&mut id);
        id[0] |= 1;
        id.to_vec()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.0.random_bool(p.clamp(0.0, 1.0))
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n.max(1))
    }

    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0.random_range(lo..hi.max(lo + 1))
    }

    pub fn uniform(&mut self) -> f64 {
        self.0.random::<f64>()
    }

    fn normal(&mut self) -> f64 {
        // Box–Muller.
        let u1: f64 = self.0.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.0.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A long-tailed latency in ns: log-normal around the median.
    pub fn latency_ns(&mut self, cost: Cost, factor: f64) -> i64 {
        let ms = cost.median_ms * (cost.sigma * self.normal()).exp() * factor;
        (ms * 1e6).max(1_000.0) as i64
    }

    /// Picks one element by weight.
    pub fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u32 = items.iter().map(|(_, w)| *w).sum();
        let mut pick = self.0.random_range(0..total.max(1));
        for (item, w) in items {
            if pick < *w {
                return item;
            }
            pick -= w;
        }
        &items[items.len() - 1].0
    }
}
