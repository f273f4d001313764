//! Performance statistics per (model, task type), following recent
//! behaviour by outcomes as well as by time.
//!
//! **Rates** (success, error, timeout) and the **mean latency** rest on a
//! model's last outcomes, counted: the history before each new outcome is
//! bounded to [`MEMORY`] − 1 outcomes' weight, so the newest weighs at least
//! 1/[`MEMORY`] of the whole, at 1 call a second as at 1,000. Counting
//! outcomes, not seconds, is what lets a model that starts failing at 100
//! calls a second show it within its next calls, where a half-life in
//! seconds would have hundreds of older successes outweigh them.
//!
//! **A change is followed at once.** Beside the memory, sequential tests
//! ([`shift`]: CUSUMs, as in statistical process control) weigh each
//! outcome against what the memory expects, for a step in the error rate
//! and for a shift in latency. When one has more evidence than chance
//! gives (a false alarm once in thousands of outcomes of a steady model),
//! the memory is cut to [`FOLLOW`] outcomes' weight: it keeps what it
//! says, but the next outcomes move it almost alone, and it lengthens
//! again by one outcome per call. Steady, the memory smooths the noise of
//! [`MEMORY`] outcomes, so the ranking of close models does not flap;
//! changed, it follows within a few outcomes. (Balancers do the same with
//! two speeds: Finagle and Linkerd accrue consecutive failures beside a
//! smoothed success rate; here the test is one that knows chance.)
//!
//! **Time acts on idle models.** A model that gets no outcome for
//! [`IDLE_FADE`] half-lives (a minute by default) is idle; from then on its
//! whole history, rates and sample size alike, halves every half-life. A
//! model shunned after failures thus counts less and less, is tried again
//! when its sample size has faded (its declared confidence then outweighs
//! its old numbers), and its next outcomes decide whether it regains
//! traffic. A model called at least once a minute forgets by count only.
//!
//! The **sample size**, which decides how much measured performance weighs
//! against declared confidence, is the number of outcomes, faded only while
//! idle: at low traffic a model's history still counts in full.
//!
//! **Latency** is of answers and timeouts. A timeout (a call that ran out
//! of time) counts as the time it ran or the mean so far, whichever is
//! longer: the call would have taken at least that long, so a hung or
//! suddenly slow model looks slow, not only failing, and a timeout never
//! makes a model look faster. Failures carry no latency: a model that fails
//! fast must not look fast. The tail quantiles are of the last
//! [`LATENCY_WINDOW`] answers only.
//!
//! Decay is applied lazily, when a cell is updated or read, from the time the
//! caller passes in: the statistics hold no clock and work the same in
//! simulations that run faster than real time.
//!
//! Each cell has its own small lock, held for a few arithmetic operations and
//! never across an await: updating one model's statistics never waits on
//! another's.

mod memory;
mod shift;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use self::memory::{Memory, log_seconds};
use self::shift::Shift;

/// How many recent latencies the tail quantiles are computed from.
pub(crate) const LATENCY_WINDOW: usize = 256;

/// How many outcomes the rates and the mean latency rest on, at most.
pub(crate) const MEMORY: f64 = 50.0;

/// What the memory weighs, in outcomes, once a change is seen.
pub(crate) const FOLLOW: f64 = 2.0;

/// How many outcomes the memory must hold before the tests for a change
/// run: a shorter one follows fast anyway, and its spread means little.
const MIN_HISTORY: f64 = 10.0;

/// How many half-lives without an outcome make a model idle, after which its
/// history halves every half-life.
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

/// The statistics of one (model, task type).
#[derive(Debug, Clone)]
pub(crate) struct PerformanceStats {
    updated: Option<Instant>,
    /// Outcomes recorded, faded while idle.
    samples: f64,
    /// What the rates and the mean latency are read from.
    long: Memory,
    /// `long`'s mean latency, kept as a duration when it changes: selection
    /// reads it on every request.
    mean_latency: Duration,
    /// Watches the error rate and the latency for a change.
    shift: Shift,
    recent: VecDeque<Duration>,
}

/// A read of `PerformanceStats` at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsSnapshot {
    /// Outcomes recorded, faded while the model is idle: the sample size.
    pub samples: f64,
    /// The calls the rates rest on (at most [`MEMORY`], fewer after a
    /// change or while idle).
    pub attempts: f64,
    /// Of those, the calls that answered.
    pub successes: f64,
    /// Of those, the calls that failed.
    pub failures: f64,
    /// Of those, the calls that ran out of time.
    pub timeouts: f64,
    /// Mean latency of the calls that answered or ran out of time, a
    /// timeout counting at least as the time it ran; zero without any.
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
            samples: 0.0,
            long: Memory::default(),
            mean_latency: Duration::ZERO,
            shift: Shift::default(),
            recent: VecDeque::with_capacity(LATENCY_WINDOW),
        }
    }
}

impl PerformanceStats {
    /// Records one call that ended at `now`, after `latency`.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        half_life: Duration,
        outcome: CallOutcome,
        latency: Duration,
    ) {
        let factor = self.idle_factor(now, half_life);
        self.updated = Some(now);
        self.samples = self.samples * factor + 1.0;
        self.long.scale(factor);
        self.long.bound(MEMORY - 1.0);
        let seconds = match outcome {
            CallOutcome::Timeout => latency.as_secs_f64().max(self.long.mean_latency()),
            CallOutcome::Success | CallOutcome::Failure => latency.as_secs_f64(),
        };
        if self.long.attempts() >= MIN_HISTORY && self.shifts(outcome, seconds) {
            self.long.bound(FOLLOW);
        }
        self.long.add(outcome, seconds);
        self.mean_latency = Duration::from_secs_f64(self.long.mean_latency());
        if outcome == CallOutcome::Success {
            if self.recent.len() == LATENCY_WINDOW {
                self.recent.pop_front();
            }
            self.recent.push_back(latency);
        }
    }

    /// Whether this outcome shows a change, against what the memory
    /// expected before it.
    fn shifts(&mut self, outcome: CallOutcome, seconds: f64) -> bool {
        let error = outcome != CallOutcome::Success;
        let mut shifted = self.shift.errors(self.long.error_rate(), error);
        if outcome != CallOutcome::Failure
            && let Some(expected) = self.long.log_latency()
        {
            shifted |= self.shift.latency(expected, log_seconds(seconds));
        }
        shifted
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
        let factor = self.idle_factor(now, half_life);
        let long = &self.long;
        StatsSnapshot {
            samples: self.samples * factor,
            attempts: long.attempts() * factor,
            successes: long.successes * factor,
            failures: long.failures * factor,
            timeouts: long.timeouts * factor,
            mean_latency: self.mean_latency,
            p50: Duration::ZERO,
            p95: Duration::ZERO,
            p99: Duration::ZERO,
        }
    }

    /// What the history weighs at `now`: 1 until the model has been idle for
    /// [`IDLE_FADE`] half-lives, then halving every half-life.
    fn idle_factor(&self, now: Instant, half_life: Duration) -> f64 {
        match self.updated {
            Some(updated) if !half_life.is_zero() => {
                let idle = now.saturating_duration_since(updated).as_secs_f64()
                    / half_life.as_secs_f64()
                    - IDLE_FADE;
                // A model still in use, the common case, costs no power.
                if idle > 0.0 { 0.5_f64.powf(idle) } else { 1.0 }
            }
            _ => 1.0,
        }
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
