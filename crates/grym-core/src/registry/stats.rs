//! Performance statistics per (model, task type), following recent
//! behaviour.
//!
//! Rates decay exponentially with time: an outcome `t` seconds old weighs
//! `0.5^(t / half_life)` (default half-life 10 s), so at a steady 10 calls a
//! second a model's rates reflect roughly its last 15 seconds, and a model
//! that starts failing loses its traffic within seconds. The mean latency,
//! decayed the same way, and the tail quantiles (from the last
//! [`LATENCY_WINDOW`] answers) are of successful calls only: a model that
//! fails fast must not look fast.
//!
//! The sample size, which decides how much measured performance weighs, is
//! the number of outcomes recorded, faded only by the time since the last
//! one, with [`IDLE_FADE`] times the half-life (a minute by default): at low
//! traffic a model's history still counts in full, and a model that got no
//! calls for a while (one shunned after failures, say) counts less and less
//! until it is tried again and its numbers renewed.
//!
//! Decay is applied lazily, when a cell is updated or read, from the time the
//! caller passes in: the statistics hold no clock and work the same in
//! simulations that run faster than real time.
//!
//! Each cell has its own small lock, held for a few arithmetic operations and
//! never across an await: updating one model's statistics never waits on
//! another's.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How many recent latencies the tail quantiles are computed from.
pub(crate) const LATENCY_WINDOW: usize = 256;

/// How many half-lives an idle model's sample size takes to halve.
pub(crate) const IDLE_FADE: f64 = 6.0;

/// How one call ended, for the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CallOutcome {
    /// It answered.
    Success,
    /// It failed (unavailable, overloaded, internal error).
    Failure,
    /// It ran out of time.
    Timeout,
}

/// The decayed statistics of one (model, task type).
#[derive(Debug, Clone)]
pub(crate) struct PerformanceStats {
    updated: Option<Instant>,
    /// Outcomes recorded, not decayed.
    count: u64,
    attempts: f64,
    successes: f64,
    failures: f64,
    timeouts: f64,
    /// Decayed sum of the latency seconds of successful calls.
    latency_sum: f64,
    recent: VecDeque<Duration>,
}

/// A read of `PerformanceStats` at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsSnapshot {
    /// Outcomes recorded, decayed by the time since the last one: the sample
    /// size.
    pub samples: f64,
    /// Decayed number of calls.
    pub attempts: f64,
    /// Decayed number of calls that answered.
    pub successes: f64,
    /// Decayed number of calls that failed.
    pub failures: f64,
    /// Decayed number of calls that ran out of time.
    pub timeouts: f64,
    /// Decayed mean latency of successful calls; zero without any.
    pub mean_latency: Duration,
    /// Median of the recent latencies.
    pub p50: Duration,
    /// 95th percentile of the recent latencies.
    pub p95: Duration,
    /// 99th percentile of the recent latencies.
    pub p99: Duration,
}

impl StatsSnapshot {
    /// Share of calls that answered, in [0, 1]; 0 without samples.
    pub fn success_rate(&self) -> f64 {
        ratio(self.successes, self.attempts)
    }

    /// Share of calls that failed or timed out, in [0, 1]; 0 without samples.
    pub fn error_rate(&self) -> f64 {
        ratio(self.failures + self.timeouts, self.attempts)
    }
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

impl Default for PerformanceStats {
    fn default() -> Self {
        Self {
            updated: None,
            count: 0,
            attempts: 0.0,
            successes: 0.0,
            failures: 0.0,
            timeouts: 0.0,
            latency_sum: 0.0,
            recent: VecDeque::with_capacity(LATENCY_WINDOW),
        }
    }
}

impl PerformanceStats {
    /// Records one call that ended at `now`.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        half_life: Duration,
        outcome: CallOutcome,
        latency: Duration,
    ) {
        self.decay_to(now, half_life);
        self.count += 1;
        self.attempts += 1.0;
        match outcome {
            CallOutcome::Success => {
                self.successes += 1.0;
                self.latency_sum += latency.as_secs_f64();
                if self.recent.len() == LATENCY_WINDOW {
                    self.recent.pop_front();
                }
                self.recent.push_back(latency);
            }
            CallOutcome::Failure => self.failures += 1.0,
            CallOutcome::Timeout => self.timeouts += 1.0,
        }
    }

    /// The statistics as they stand at `now`.
    pub(crate) fn snapshot(&self, now: Instant, half_life: Duration) -> StatsSnapshot {
        let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        StatsSnapshot {
            p50: quantile(&sorted, 0.50),
            p95: quantile(&sorted, 0.95),
            p99: quantile(&sorted, 0.99),
            ..self.rates(now, half_life)
        }
    }

    /// [`snapshot`](Self::snapshot) without the tail quantiles (zero),
    /// which take sorting the latency window: what selection reads on every
    /// request.
    pub(crate) fn rates(&self, now: Instant, half_life: Duration) -> StatsSnapshot {
        let factor = self.decay_factor(now, half_life);
        let attempts = self.attempts * factor;
        StatsSnapshot {
            samples: self.count as f64 * factor.powf(1.0 / IDLE_FADE),
            attempts,
            successes: self.successes * factor,
            failures: self.failures * factor,
            timeouts: self.timeouts * factor,
            mean_latency: if self.successes > 0.0 {
                Duration::from_secs_f64(self.latency_sum / self.successes)
            } else {
                Duration::ZERO
            },
            p50: Duration::ZERO,
            p95: Duration::ZERO,
            p99: Duration::ZERO,
        }
    }

    fn decay_factor(&self, now: Instant, half_life: Duration) -> f64 {
        match self.updated {
            Some(updated) if !half_life.is_zero() => {
                let age = now.saturating_duration_since(updated).as_secs_f64();
                0.5_f64.powf(age / half_life.as_secs_f64())
            }
            _ => 1.0,
        }
    }

    fn decay_to(&mut self, now: Instant, half_life: Duration) {
        let factor = self.decay_factor(now, half_life);
        self.attempts *= factor;
        self.successes *= factor;
        self.failures *= factor;
        self.timeouts *= factor;
        self.latency_sum *= factor;
        self.updated = Some(now);
    }
}

/// A mean that follows recent values: each weighs `0.5^(age / half_life)`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DecayedMean {
    updated: Option<Instant>,
    sum: f64,
    weight: f64,
    count: u64,
}

impl DecayedMean {
    /// Records `value` at `now`.
    pub(crate) fn record(&mut self, value: Duration, now: Instant, half_life: Duration) {
        self.record_value(value.as_secs_f64(), now, half_life);
    }

    /// Records a plain number at `now`.
    pub(crate) fn record_value(&mut self, value: f64, now: Instant, half_life: Duration) {
        let factor = self.factor(now, half_life);
        self.sum = self.sum * factor + value;
        self.weight = self.weight * factor + 1.0;
        self.count += 1;
        self.updated = Some(now);
    }

    /// The mean, as a duration; zero before any value.
    pub(crate) fn mean(&self) -> Duration {
        Duration::from_secs_f64(self.mean_value().max(0.0))
    }

    /// The mean of plain numbers; zero before any value.
    pub(crate) fn mean_value(&self) -> f64 {
        if self.weight > 0.0 {
            self.sum / self.weight
        } else {
            0.0
        }
    }

    /// The values recorded, decayed to `now`: how much the mean rests on.
    pub(crate) fn weight(&self, now: Instant, half_life: Duration) -> f64 {
        self.weight * self.factor(now, half_life)
    }

    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    fn factor(&self, now: Instant, half_life: Duration) -> f64 {
        match self.updated {
            Some(updated) if !half_life.is_zero() => {
                let age = now.saturating_duration_since(updated).as_secs_f64();
                0.5_f64.powf(age / half_life.as_secs_f64())
            }
            _ => 1.0,
        }
    }
}

/// The nearest-rank quantile of sorted values; zero when empty.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF_LIFE: Duration = Duration::from_secs(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_and_rates_follow_outcomes() {
        let now = Instant::now();
        let mut stats = PerformanceStats::default();
        stats.record(now, HALF_LIFE, CallOutcome::Success, ms(100));
        stats.record(now, HALF_LIFE, CallOutcome::Success, ms(300));
        stats.record(now, HALF_LIFE, CallOutcome::Failure, ms(1));
        stats.record(now, HALF_LIFE, CallOutcome::Timeout, ms(550));
        let snapshot = stats.snapshot(now, HALF_LIFE);
        assert_eq!(snapshot.attempts, 4.0);
        assert_eq!(snapshot.samples, 4.0);
        assert_eq!(snapshot.success_rate(), 0.5);
        assert_eq!(snapshot.error_rate(), 0.5);
        // Latency is of answers only: a fast failure does not look fast.
        assert_eq!(snapshot.mean_latency, ms(200));
        assert_eq!(snapshot.p50, ms(100));
        assert_eq!(snapshot.p99, ms(300));
    }

    #[test]
    fn old_outcomes_weigh_half_after_one_half_life() {
        let start = Instant::now();
        let mut stats = PerformanceStats::default();
        for _ in 0..8 {
            stats.record(start, HALF_LIFE, CallOutcome::Success, ms(10));
        }
        let later = start + HALF_LIFE;
        assert!((stats.snapshot(later, HALF_LIFE).attempts - 4.0).abs() < 1e-9);

        // Four failures now weigh as much as the eight older successes.
        for _ in 0..4 {
            stats.record(later, HALF_LIFE, CallOutcome::Failure, ms(10));
        }
        let snapshot = stats.snapshot(later, HALF_LIFE);
        assert!((snapshot.success_rate() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_model_that_degrades_shows_it_within_seconds() {
        let start = Instant::now();
        let mut stats = PerformanceStats::default();
        // A minute of health at 10 calls a second ...
        for i in 0..600 {
            stats.record(start + ms(100 * i), HALF_LIFE, CallOutcome::Success, ms(20));
        }
        // ... then five seconds of failures.
        let broke = start + Duration::from_secs(60);
        for i in 0..50 {
            stats.record(broke + ms(100 * i), HALF_LIFE, CallOutcome::Failure, ms(20));
        }
        let rate = stats
            .snapshot(broke + Duration::from_secs(5), HALF_LIFE)
            .success_rate();
        assert!(
            rate < 0.75,
            "success rate still {rate} after 5 s of failures"
        );
    }

    #[test]
    fn the_sample_size_holds_at_low_traffic_and_fades_when_idle() {
        let start = Instant::now();
        let mut stats = PerformanceStats::default();
        // One call a second for 100 seconds: rates follow the last seconds,
        // but the whole history counts as samples.
        for i in 0..100 {
            stats.record(
                start + Duration::from_secs(i),
                HALF_LIFE,
                CallOutcome::Success,
                ms(20),
            );
        }
        let last = start + Duration::from_secs(99);
        assert!((stats.snapshot(last, HALF_LIFE).samples - 100.0).abs() < 1e-9);
        assert!(stats.snapshot(last, HALF_LIFE).attempts < 20.0);
        // Idle for six half-lives: half as many samples count.
        let idle = stats.snapshot(last + HALF_LIFE.mul_f64(IDLE_FADE), HALF_LIFE);
        assert!((idle.samples - 50.0).abs() < 1e-9);
    }

    #[test]
    fn the_latency_window_is_bounded() {
        let now = Instant::now();
        let mut stats = PerformanceStats::default();
        for i in 0..(LATENCY_WINDOW as u64 + 100) {
            stats.record(now, HALF_LIFE, CallOutcome::Success, ms(i));
        }
        assert_eq!(stats.recent.len(), LATENCY_WINDOW);
        assert_eq!(stats.snapshot(now, HALF_LIFE).p50, ms(100 + 127));
    }

    #[test]
    fn no_samples_reads_as_zero() {
        let snapshot = PerformanceStats::default().snapshot(Instant::now(), HALF_LIFE);
        assert_eq!(snapshot.attempts, 0.0);
        assert_eq!(snapshot.samples, 0.0);
        assert_eq!(snapshot.success_rate(), 0.0);
        assert_eq!(snapshot.p95, Duration::ZERO);
    }
}
