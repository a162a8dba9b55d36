//! Latency histograms and their summaries.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in nanoseconds, from 1 ns to 100 s at 3 significant digits.
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            histogram: Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    pub fn record(&mut self, nanos: u64) {
        self.histogram.saturating_record(nanos.max(1));
    }

    pub fn reset(&mut self) {
        self.histogram.reset();
    }

    /// The value at `quantile` (0.0..=1.0), in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1e6
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |nanos: u64| nanos as f64 / 1e6;
        let h = &self.histogram;
        LatencySummary {
            samples: h.len(),
            mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1e6 },
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// A latency distribution as reported, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Formats a rate with a k/M suffix for the readable output.
pub fn human_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1}k", per_second / 1e3)
    } else {
        format!("{per_second:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_reported_in_milliseconds() {
        let mut latency = Latency::new();
        for micros in 1..=1000u64 {
            latency.record(micros * 1000);
        }
        let summary = latency.summary();
        assert_eq!(summary.samples, 1000);
        assert!((summary.p50_ms - 0.5).abs() < 0.01);
        assert!((summary.p99_ms - 0.99).abs() < 0.01);
        assert!((summary.max_ms - 1.0).abs() < 0.01);
    }
}
