//! A Prometheus histogram on plain atomics: fixed bucket bounds, one counter per bucket and a
//! sum (the count is the buckets' total, added up at scrape time), with no lock, so it can sit
//! on hot paths (every `OK SEND`, every writer batch).
//!
//! The counters are **sharded**: [`SHARDS`] copies, each on its own cache lines, and an
//! observation goes to the shard its caller names (a connection id). A single set of atomics
//! shared by every writer thread was measured to cost ~9% of fan-out throughput on two
//! cores (BENCHMARKS.md, "Metrics"): every `fetch_add` pulled the cache line from the other
//! core. With shards, two threads running at once rarely touch the same line, and a scrape
//! adds the shards up.

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

/// Copies of each counter: enough that the threads running at once on a small machine seldom
/// share one, few enough that a scrape's sum is trivial.
pub const SHARDS: usize = 32;

/// Most bounds a histogram may have (plus `+Inf`).
const MAX_BOUNDS: usize = 16;

/// One shard: its buckets (the last one `+Inf`) and its sum, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    sum: AtomicU64,
}

#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in the histogram's base unit (seconds, lines), ascending.
    bounds: &'static [f64],
    /// The same bounds in observation units (nanoseconds for latencies), for the hot path.
    unit_bounds: Box<[u64]>,
    /// How many observation units one base unit is (1e9 for seconds observed in ns).
    units_per_base: f64,
    shards: Box<[Shard]>,
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
        assert!(bounds.len() <= MAX_BOUNDS, "at most {MAX_BOUNDS} bounds");
        Histogram {
            bounds,
            unit_bounds: bounds
                .iter()
                .map(|b| (b * units_per_base).round() as u64)
                .collect(),
            units_per_base,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    /// Records one observation, in observation units, in the shard of `key` (a connection
    /// id: the same caller keeps to one shard).
    pub fn observe(&self, key: u64, value: u64) {
        let bucket = self
            .unit_bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.unit_bounds.len());
        let shard = &self.shards[key as usize % SHARDS];
        shard.buckets[bucket].fetch_add(1, Relaxed);
        shard.sum.fetch_add(value, Relaxed);
    }

    pub fn observe_duration(&self, key: u64, elapsed: Duration) {
        self.observe(key, elapsed.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// A snapshot: cumulative counts per bound (`+Inf` last), the sum in base units, the
    /// count. Read without a lock, so a scrape racing an observation may see the bucket and
    /// not yet the sum; Prometheus tolerates that, and the next scrape is exact.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.bounds.len() + 1);
        let mut running = 0;
        for bucket in 0..=self.bounds.len() {
            running += self
                .shards
                .iter()
                .map(|shard| shard.buckets[bucket].load(Relaxed))
                .sum::<u64>();
            cumulative.push(running);
        }
        let sum: u64 = self.shards.iter().map(|s| s.sum.load(Relaxed)).sum();
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: sum as f64 / self.units_per_base,
            count: running,
        }
    }
}

/// A counter sharded like [`Histogram`], for counts bumped by every writer thread.
#[derive(Debug)]
pub struct ShardedCounter {
    shards: Box<[PaddedCounter]>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedCounter(AtomicU64);

impl Default for ShardedCounter {
    fn default() -> ShardedCounter {
        ShardedCounter {
            shards: (0..SHARDS).map(|_| PaddedCounter::default()).collect(),
        }
    }
}

impl ShardedCounter {
    pub fn add(&self, key: u64, n: u64) {
        self.shards[key as usize % SHARDS].0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards.iter().map(|shard| shard.0.load(Relaxed)).sum()
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
        histogram.observe_duration(1, Duration::from_micros(40));
        histogram.observe_duration(2, Duration::from_micros(100));
        histogram.observe_duration(3, Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative[0], 1, "40 µs <= 50 µs");
        assert_eq!(snapshot.cumulative[1], 2, "100 µs <= 100 µs");
        assert_eq!(snapshot.cumulative[LATENCY_BUCKETS.len() - 1], 2);
        assert_eq!(*snapshot.cumulative.last().unwrap(), 3, "+Inf holds all");
        assert_eq!(snapshot.count, 3);
        assert!((snapshot.sum - 60.000_14).abs() < 1e-9, "{}", snapshot.sum);
    }

    #[test]
    fn a_sharded_counter_adds_its_shards_up() {
        let counter = ShardedCounter::default();
        for key in 0..100 {
            counter.add(key, 2);
        }
        assert_eq!(counter.get(), 200);
    }
}
