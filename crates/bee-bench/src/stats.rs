//! Latency statistics: percentiles over recorded samples, in microseconds.

use std::time::Duration;

use serde::Serialize;

/// Recorded latencies of one run.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    nanos: Vec<u64>,
}

/// The summary of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl Latencies {
    /// Room for `n` samples, so recording does not allocate while measuring.
    pub fn with_capacity(n: usize) -> Latencies {
        Latencies {
            nanos: Vec::with_capacity(n),
        }
    }

    /// Record one sample.
    pub fn record(&mut self, d: Duration) {
        self.nanos
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Add every sample of `other`.
    pub fn extend(&mut self, other: &Latencies) {
        self.nanos.extend_from_slice(&other.nanos);
    }

    /// Number of samples so far.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// Percentiles, mean and maximum (all zero when empty).
    pub fn summary(&self) -> LatencySummary {
        let mut sorted = self.nanos.clone();
        sorted.sort_unstable();
        let us = |ns: u64| ns as f64 / 1e3;
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().map(|&n| n as f64).sum::<f64>() / sorted.len() as f64 / 1e3
        };
        LatencySummary {
            count: sorted.len(),
            p50_us: us(percentile(&sorted, 0.50)),
            p99_us: us(percentile(&sorted, 0.99)),
            mean_us: mean,
            max_us: us(sorted.last().copied().unwrap_or(0)),
        }
    }
}

/// The `q` quantile (0.0..=1.0) of sorted samples by the nearest-rank method: the
/// smallest sample with at least `q` of all samples at or below it. 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn summary_in_microseconds() {
        let mut l = Latencies::with_capacity(4);
        for us in [40u64, 10, 30, 20] {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(s.count, 4);
        assert_eq!(s.p50_us, 20.0);
        assert_eq!(s.p99_us, 40.0);
        assert_eq!(s.max_us, 40.0);
        assert!((s.mean_us - 25.0).abs() < 1e-9);
    }
}
