//! What a run records and how runs are summed up: an HDR histogram of
//! latencies per run, its percentiles, and across repeated runs the median
//! and the spread (min–max) of each figure.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The longest latency a histogram holds exactly; longer ones are recorded
/// as this.
const HIGHEST: Duration = Duration::from_secs(120);

/// The outcomes of one run's measured requests.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    failures: BTreeMap<String, u64>,
    /// How long the failures of each kind took, when that was recorded.
    failure_latency: BTreeMap<String, Histogram<u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// An empty histogram of nanoseconds, 1 ns to two minutes at three
/// significant digits (0.1% resolution).
#[expect(
    clippy::expect_used,
    reason = "constant bounds, valid for hdrhistogram: it cannot fail"
)]
fn histogram() -> Histogram<u64> {
    let highest = u64::try_from(HIGHEST.as_nanos()).unwrap_or(u64::MAX);
    Histogram::new_with_bounds(1, highest, 3).expect("1 ns to 2 min at 3 digits is valid")
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Recorder {
    /// An empty recorder.
    pub(crate) fn new() -> Self {
        Self {
            latency: histogram(),
            send_lag: histogram(),
            failures: BTreeMap::new(),
            failure_latency: BTreeMap::new(),
        }
    }

    /// A request that failed after `latency`, by the name of its failure.
    pub(crate) fn failure_after(&mut self, kind: &str, latency: Duration) {
        self.failure(kind);
        self.failure_latency
            .entry(kind.to_owned())
            .or_insert_with(histogram)
            .saturating_record(nanos(latency));
    }

    /// A request that succeeded after `latency`.
    pub(crate) fn success(&mut self, latency: Duration) {
        self.latency.saturating_record(nanos(latency));
    }

    /// A request that failed, by the name of its failure.
    pub(crate) fn failure(&mut self, kind: &str) {
        *self.failures.entry(kind.to_owned()).or_default() += 1;
    }

    /// How late a request was sent after its intended time (open loop).
    pub(crate) fn send_lag(&mut self, lag: Duration) {
        self.send_lag.saturating_record(nanos(lag));
    }

    /// Adds another recorder's outcomes to this one's.
    pub(crate) fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.send_lag.add(&other.send_lag);
        for (kind, count) in &other.failures {
            *self.failures.entry(kind.clone()).or_default() += count;
        }
        for (kind, latency) in &other.failure_latency {
            let _ = self
                .failure_latency
                .entry(kind.clone())
                .or_insert_with(histogram)
                .add(latency);
        }
    }

    /// Successful requests.
    pub(crate) fn successes(&self) -> u64 {
        self.latency.len()
    }

    /// Failed requests, by kind.
    pub(crate) fn failures(&self) -> &BTreeMap<String, u64> {
        &self.failures
    }

    /// The latency percentiles of the successful requests.
    pub(crate) fn latency(&self) -> Percentiles {
        Percentiles::of(&self.latency)
    }

    /// The latency percentiles of the failures of each kind whose latency
    /// was recorded.
    pub(crate) fn failure_latencies(&self) -> BTreeMap<String, Percentiles> {
        self.failure_latency
            .iter()
            .map(|(kind, histogram)| (kind.clone(), Percentiles::of(histogram)))
            .collect()
    }

    /// The send-lag percentiles; `None` when none was recorded.
    pub(crate) fn send_lag_percentiles(&self) -> Option<Percentiles> {
        (!self.send_lag.is_empty()).then(|| Percentiles::of(&self.send_lag))
    }
}

/// Latency percentiles of one run, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let micros = |nanos: u64| nanos as f64 / 1000.0;
        Self {
            p50: micros(histogram.value_at_quantile(0.50)),
            p90: micros(histogram.value_at_quantile(0.90)),
            p99: micros(histogram.value_at_quantile(0.99)),
            p999: micros(histogram.value_at_quantile(0.999)),
            max: micros(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }

    /// The four quantiles a comparison reports, with their names.
    pub(crate) fn quantiles(&self) -> [(&'static str, f64); 4] {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p999),
        ]
    }
}

/// The median and range of one figure over repeated runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none (or one is NaN).
    pub(crate) fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }

    /// The spread of the paired differences `a[i] - b[i]`: each repetition
    /// ran both paths back to back, so pairing cancels most of the drift of
    /// a noisy machine.
    pub(crate) fn of_differences(a: &[f64], b: &[f64]) -> Option<Self> {
        if a.len() != b.len() {
            return None;
        }
        let differences: Vec<f64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
        Self::of(&differences)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_value() {
        let spread = Spread::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!(
            spread,
            Spread {
                median: 3.0,
                min: 1.0,
                max: 5.0
            }
        );
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let spread = Spread::of(&[4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(spread.median, 3.0);
        assert_eq!((spread.min, spread.max), (1.0, 10.0));
    }

    #[test]
    fn no_values_or_a_nan_have_no_spread() {
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn differences_are_paired_by_repetition() {
        let through = [110.0, 150.0, 120.0];
        let direct = [100.0, 130.0, 115.0];
        let added = Spread::of_differences(&through, &direct).unwrap();
        assert_eq!(
            added,
            Spread {
                median: 10.0,
                min: 5.0,
                max: 20.0
            }
        );
        assert!(Spread::of_differences(&[1.0], &[]).is_none());
    }

    #[test]
    fn percentiles_are_reported_in_microseconds() {
        let mut recorder = Recorder::new();
        for micros in 1..=1000 {
            recorder.success(Duration::from_micros(micros));
        }
        let latency = recorder.latency();
        // Three significant digits: within 0.1%.
        assert!((latency.p50 - 500.0).abs() <= 0.5, "{latency:?}");
        assert!((latency.p99 - 990.0).abs() <= 1.0, "{latency:?}");
        assert!((latency.max - 1000.0).abs() <= 1.0, "{latency:?}");
        assert_eq!(recorder.successes(), 1000);
        assert!(recorder.send_lag_percentiles().is_none());
    }

    #[test]
    fn merged_recorders_add_their_counts_and_failures() {
        let mut a = Recorder::new();
        a.success(Duration::from_micros(100));
        a.failure("UNAVAILABLE");
        let mut b = Recorder::new();
        b.success(Duration::from_micros(300));
        b.failure("UNAVAILABLE");
        b.failure("timeout");
        b.send_lag(Duration::from_micros(20));
        a.merge(&b);
        assert_eq!(a.successes(), 2);
        assert_eq!(a.failures()["UNAVAILABLE"], 2);
        assert_eq!(a.failures()["timeout"], 1);
        assert!(a.send_lag_percentiles().is_some());
    }

    #[test]
    fn failures_keep_their_latency_by_kind() {
        let mut a = Recorder::new();
        a.failure_after("ResourceExhausted", Duration::from_micros(800));
        let mut b = Recorder::new();
        b.failure_after("ResourceExhausted", Duration::from_micros(1200));
        b.failure("timeout");
        a.merge(&b);
        let latencies = a.failure_latencies();
        assert_eq!(a.failures()["ResourceExhausted"], 2);
        assert!((latencies["ResourceExhausted"].max - 1200.0).abs() <= 2.0);
        assert!(!latencies.contains_key("timeout"));
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        assert_eq!(Recorder::new().latency(), Percentiles::default());
    }
}
