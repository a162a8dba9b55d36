//! A Prometheus histogram on plain atomics: fixed bucket bounds, one counter per bucket and a
//! sum (the count is the buckets' total, added up at scrape time). Observing is a short scan
//! of the bounds and two relaxed `fetch_add`s, with no lock, so it can sit on hot paths (every
//! `OK SEND`, every writer batch), where each atomic shared by all threads costs a cache-line
//! transfer between cores.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bounds for latencies, in seconds: 50 µs to 10 s, roughly ×2.5 apart, so both an
/// in-memory post (tens of µs) and an fsync on a slow disk (tens of ms) land mid-scale.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Bounds for queue depths, in lines: powers of four up to the largest `--channel-capacity`
/// worth having.
pub const DEPTH_BUCKETS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0];

#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in the histogram's base unit (seconds, lines), ascending.
    bounds: &'static [f64],
    /// The same bounds in observation units (nanoseconds for latencies), for the hot path.
    unit_bounds: Box<[u64]>,
    /// How many observation units one base unit is (1e9 for seconds observed in ns).
    units_per_base: f64,
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    buckets: Box<[AtomicU64]>,
    /// The sum of observations, in observation units.
    sum: AtomicU64,
}

impl Histogram {
    /// A latency histogram: observed with [`Histogram::observe_duration`], reported in
    /// seconds.
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BUCKETS, 1e9)
    }

    /// A count histogram (queue depths), observed with [`Histogram::observe`].
    pub fn depth() -> Histogram {
        Histogram::new(DEPTH_BUCKETS, 1.0)
    }

    fn new(bounds: &'static [f64], units_per_base: f64) -> Histogram {
        Histogram {
            bounds,
            unit_bounds: bounds
                .iter()
                .map(|b| (b * units_per_base).round() as u64)
                .collect(),
            units_per_base,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation, in observation units.
    pub fn observe(&self, value: u64) {
        let bucket = self
            .unit_bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.unit_bounds.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// A snapshot: cumulative counts per bound (`+Inf` last), the sum in base units, the
    /// count. Read without a lock, so a scrape racing an observation may see the bucket and
    /// not yet the sum; Prometheus tolerates that, and the next scrape is exact.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut running = 0;
        for bucket in self.buckets.iter() {
            running += bucket.load(Relaxed);
            cumulative.push(running);
        }
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: self.sum.load(Relaxed) as f64 / self.units_per_base,
            count: running,
        }
    }
}

pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    /// One per bound, then `+Inf`.
    pub cumulative: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::latency();
        histogram.observe_duration(Duration::from_micros(40));
        histogram.observe_duration(Duration::from_micros(100));
        histogram.observe_duration(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative[0], 1, "40 µs <= 50 µs");
        assert_eq!(snapshot.cumulative[1], 2, "100 µs <= 100 µs");
        assert_eq!(snapshot.cumulative[LATENCY_BUCKETS.len() - 1], 2);
        assert_eq!(*snapshot.cumulative.last().unwrap(), 3, "+Inf holds all");
        assert_eq!(snapshot.count, 3);
        assert!((snapshot.sum - 60.000_14).abs() < 1e-9, "{}", snapshot.sum);
    }
}
