//! The Prometheus text exposition format (version 0.0.4): for each metric a `# HELP` and a
//! `# TYPE` line, then its samples; a histogram's buckets are cumulative, end with
//! `le="+Inf"`, and are followed by `_sum` and `_count`.

use std::fmt::Write;

use super::Histogram;

#[derive(Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    /// The `# HELP` and `# TYPE` lines of a metric whose samples follow.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample. Label values here are fixed words, so they need no escaping.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{value}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, "histogram", help);
        let snapshot = histogram.snapshot();
        let bucket = format!("{name}_bucket");
        for (bound, count) in snapshot.bounds.iter().zip(&snapshot.cumulative) {
            self.sample(&bucket, &[("le", &bound.to_string())], count);
        }
        let total = snapshot.cumulative.last().copied().unwrap_or(0);
        self.sample(&bucket, &[("le", "+Inf")], total);
        self.sample(&format!("{name}_sum"), &[], snapshot.sum);
        // The count is the +Inf bucket, so the two always agree within a scrape.
        self.sample(&format!("{name}_count"), &[], total);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_histogram_has_cumulative_buckets_sum_and_count() {
        let histogram = Histogram::latency();
        histogram.observe_duration(0, Duration::from_millis(2));
        histogram.observe_duration(1, Duration::from_millis(20));
        let mut out = Encoder::default();
        out.histogram("x_seconds", "Test.", &histogram);
        let text = out.finish();
        assert!(text.starts_with("# HELP x_seconds Test.\n# TYPE x_seconds histogram\n"));
        assert!(
            text.contains("x_seconds_bucket{le=\"0.001\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.0025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.025\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_sum 0.022\n"), "{text}");
        assert!(text.ends_with("x_seconds_count 2\n"), "{text}");
    }

    #[test]
    fn labels_are_written_in_braces() {
        let mut out = Encoder::default();
        out.sample("a_total", &[("reason", "x"), ("transport", "tcp")], 3);
        assert_eq!(out.finish(), "a_total{reason=\"x\",transport=\"tcp\"} 3\n");
    }
}
