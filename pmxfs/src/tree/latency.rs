//! Latency histograms `pmxfs status` reports: where a replicated write's time goes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Log-linear buckets of microseconds: every power of two is split in 4, so a bucket
/// is at most a quarter of its lower bound wide; 0–3 µs have a bucket each.
const SUB: u32 = 4;
const BUCKETS: usize = 252;

/// A lock-free histogram of durations: recording is a few relaxed atomic adds, so the
/// cluster thread can time every write; a quantile is reported as its bucket's upper
/// bound (at most 25% above the true value), which is fine enough to tell corosync's
/// share from pmxfs's, and a slow network or disk from a busy host.
#[derive(Debug)]
pub struct Latency {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

/// What a [`Latency`] holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Durations recorded.
    pub count: u64,
    /// Their mean, µs.
    pub mean_us: u64,
    /// Upper bound of the bucket the median falls in, µs (never above `max_us`).
    pub p50_us: u64,
    /// The same for the 99th percentile.
    pub p99_us: u64,
    /// The longest, µs.
    pub max_us: u64,
}

fn bucket_of(us: u64) -> usize {
    if us < u64::from(SUB) {
        return us as usize;
    }
    let e = 63 - us.leading_zeros(); // the highest set bit, >= 2
    let sub = (us >> (e - 2)) & u64::from(SUB - 1);
    ((e - 1) * SUB) as usize + sub as usize
}

/// The first value above bucket `i`.
fn upper_of(i: usize) -> u64 {
    if i < SUB as usize {
        return i as u64 + 1;
    }
    let (e, sub) = (i as u32 / SUB + 1, i as u64 % u64::from(SUB));
    let upper = u128::from(u64::from(SUB) + 1 + sub) << (e - 2);
    u64::try_from(upper).unwrap_or(u64::MAX)
}

impl Latency {
    /// Count one duration.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Count, mean, median, 99th percentile and maximum so far.
    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        // The buckets and the total are read apart, so under concurrent recording the
        // quantiles use the buckets' own sum.
        let n: u64 = counts.iter().sum();
        let max_us = self.max_us.load(Ordering::Relaxed);
        let quantile = |q: f64| -> u64 {
            if n == 0 {
                return 0;
            }
            let rank = ((n as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return upper_of(i).min(max_us);
                }
            }
            max_us
        };
        Summary {
            count: n,
            mean_us: self.sum_us.load(Ordering::Relaxed) / n.max(1),
            p50_us: quantile(0.5),
            p99_us: quantile(0.99),
            max_us,
        }
    }

    /// [`Latency::summary`] as the status JSON shows it.
    pub fn json(&self) -> serde_json::Value {
        let s = self.summary();
        serde_json::json!({
            "count": s.count,
            "mean_us": s.mean_us,
            "p50_us": s.p50_us,
            "p99_us": s.p99_us,
            "max_us": s.max_us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_reports_zeros() {
        let l = Latency::default();
        assert_eq!(
            l.summary(),
            Summary {
                count: 0,
                mean_us: 0,
                p50_us: 0,
                p99_us: 0,
                max_us: 0
            }
        );
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds_capped_at_the_maximum() {
        let l = Latency::default();
        // 98 writes of 300 µs (bucket 256..320) and 2 of 40 ms (bucket 32768..40960).
        for _ in 0..98 {
            l.record(Duration::from_micros(300));
        }
        for _ in 0..2 {
            l.record(Duration::from_millis(40));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.mean_us, (98 * 300 + 2 * 40_000) / 100);
        assert_eq!(s.p50_us, 320, "the median's bucket is 256..320 µs");
        assert_eq!(
            s.p99_us, 40_000,
            "the 99th is in the 40 ms bucket, capped at the max"
        );
        assert_eq!(s.max_us, 40_000);
    }

    #[test]
    fn buckets_cover_the_whole_range_each_at_most_a_quarter_wide() {
        for us in [0u64, 1, 2, 3] {
            assert_eq!(bucket_of(us), us as usize);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        let mut prev = 0;
        for i in 0..BUCKETS {
            let up = upper_of(i);
            assert!(up > prev || up == u64::MAX, "bucket {i} is empty");
            assert!(
                prev < 4 || (up - prev) <= prev / 4 + 1,
                "bucket {i} is too wide"
            );
            assert_eq!(
                bucket_of(prev),
                i,
                "bucket {i} starts where {} ends",
                i.max(1) - 1
            );
            assert_eq!(
                bucket_of(up.saturating_sub(1)),
                i,
                "bucket {i} ends below {up}"
            );
            prev = up;
        }
        let l = Latency::default();
        l.record(Duration::from_secs(u64::MAX / 2));
        let s = l.summary();
        assert_eq!((s.count, s.p50_us, s.p99_us), (1, s.max_us, s.max_us));
    }
}
