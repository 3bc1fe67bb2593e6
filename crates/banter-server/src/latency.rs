//! `LatencyHistogram`: the histogram of `message_delivery_latency_ms`, a
//! counter per bucket, recorded on every push and rendered at each scrape.
//!
//! The Prometheus recorder keeps every sample of a histogram until a scrape
//! or its upkeep folds them into buckets: eight bytes and an epoch pin per
//! sample, on the path that pushes every message to every device. This one
//! is its buckets and nothing more: a record is two relaxed atomic additions,
//! and its memory does not grow however many messages go by unscraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in ms, the same as every other `_ms`
/// histogram of `/metrics` (`install_metrics`); one more bucket counts what
/// lies above the last.
pub const BUCKETS_MS: [f64; 12] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0];

/// A histogram of whole milliseconds with the fixed buckets [`BUCKETS_MS`].
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Samples per bucket, not cumulative; the last is above every bound.
    counts: [AtomicU64; BUCKETS_MS.len() + 1],
    /// Sum of the samples, in ms.
    sum: AtomicU64,
}

impl LatencyHistogram {
    /// Records one sample of `ms` milliseconds.
    pub fn record(&self, ms: u64) {
        let value = ms as f64;
        let bucket = BUCKETS_MS.iter().position(|&bound| value <= bound).unwrap_or(BUCKETS_MS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(ms, Ordering::Relaxed);
    }

    /// Appends the histogram in the Prometheus text format, as `name`, with
    /// its `help`. Nothing is written before the first sample, as with the
    /// recorder's own histograms.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let counts: [u64; BUCKETS_MS.len() + 1] = std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed));
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut below = 0;
        for (bound, count) in BUCKETS_MS.iter().zip(&counts) {
            below += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {below}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_count {total}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(h: &LatencyHistogram) -> String {
        let mut out = String::new();
        h.render("x_ms", "help text", &mut out);
        out
    }

    #[test]
    fn nothing_is_rendered_before_the_first_sample() {
        assert_eq!(rendered(&LatencyHistogram::default()), "");
    }

    #[test]
    fn samples_land_in_the_first_bucket_that_holds_them_and_buckets_are_cumulative() {
        let h = LatencyHistogram::default();
        for ms in [0, 1, 2, 3, 10, 11, 5000, 5001, 70_000] {
            h.record(ms);
        }
        let text = rendered(&h);
        let line = |le: &str| {
            let prefix = format!("x_ms_bucket{{le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{le}: {text}"));
            line[prefix.len()..].parse::<u64>().unwrap()
        };
        assert_eq!(line("0.25"), 1);
        assert_eq!(line("0.5"), 1);
        assert_eq!(line("1"), 2);
        assert_eq!(line("2"), 3);
        assert_eq!(line("5"), 4);
        assert_eq!(line("10"), 5);
        assert_eq!(line("25"), 6);
        assert_eq!(line("1000"), 6);
        assert_eq!(line("5000"), 7);
        assert_eq!(line("+Inf"), 9);
        assert!(text.contains("x_ms_sum 80028\n"), "{text}");
        assert!(text.contains("x_ms_count 9\n"), "{text}");
        assert!(text.starts_with("# HELP x_ms help text\n# TYPE x_ms histogram\n"), "{text}");
    }
}
