//! A memory of outcomes bounded by a count.
//!
//! A [`Memory`] holds weighted sums of outcomes. Before each new outcome it
//! is bounded to `most − 1` outcomes' weight, so the newest weighs at least
//! `1 / most` of the whole: an exponentially weighted mean whose window is a
//! count of outcomes, the same at 1 call a second as at 1,000. Scaling every
//! sum alike (for an idle model, or to follow a change) leaves the rates and
//! the mean as they were and changes only the weight they rest on.
//!
//! Latency is of the outcomes that took a known time, answers and timeouts;
//! failures carry none.

use super::CallOutcome;

/// The logarithm of a latency in seconds, for a latency of at least a
/// microsecond (so a zero latency has one).
pub(super) fn log_seconds(seconds: f64) -> f64 {
    seconds.max(1e-6).ln()
}

/// Weighted sums of outcomes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Memory {
    pub(super) successes: f64,
    pub(super) failures: f64,
    pub(super) timeouts: f64,
    /// Weighted sum of the latency seconds of answers and timeouts.
    latency_sum: f64,
    /// Weighted sums of their logarithms and of the logarithms' squares,
    /// for the spread of latencies as ratios.
    log_sum: f64,
    log_squares: f64,
}

impl Memory {
    /// Outcomes of every kind.
    pub(super) fn attempts(&self) -> f64 {
        self.successes + self.failures + self.timeouts
    }

    /// Share of outcomes that failed or timed out; 0 when empty.
    pub(super) fn error_rate(&self) -> f64 {
        let attempts = self.attempts();
        if attempts > 0.0 {
            ((self.failures + self.timeouts) / attempts).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Mean latency in seconds of answers and timeouts; 0 without any.
    pub(super) fn mean_latency(&self) -> f64 {
        let timed = self.successes + self.timeouts;
        if timed > 0.0 {
            (self.latency_sum / timed).max(0.0)
        } else {
            0.0
        }
    }

    /// Mean and spread of the logarithms of latencies in seconds; `None`
    /// without any.
    pub(super) fn log_latency(&self) -> Option<(f64, f64)> {
        let timed = self.successes + self.timeouts;
        (timed > 0.0).then(|| {
            let mean = self.log_sum / timed;
            let spread = (self.log_squares / timed - mean * mean).max(0.0).sqrt();
            (mean, spread)
        })
    }

    /// Multiplies every sum by `factor`.
    pub(super) fn scale(&mut self, factor: f64) {
        self.successes *= factor;
        self.failures *= factor;
        self.timeouts *= factor;
        self.latency_sum *= factor;
        self.log_sum *= factor;
        self.log_squares *= factor;
    }

    /// Scales the sums down to `most` outcomes' weight, if they weigh more.
    pub(super) fn bound(&mut self, most: f64) {
        let attempts = self.attempts();
        if attempts > most {
            self.scale(most / attempts);
        }
    }

    /// Adds one outcome; `latency`, in seconds, counts for answers and
    /// timeouts only.
    pub(super) fn add(&mut self, outcome: CallOutcome, latency: f64) {
        match outcome {
            CallOutcome::Success => self.successes += 1.0,
            CallOutcome::Timeout => self.timeouts += 1.0,
            CallOutcome::Failure => {
                self.failures += 1.0;
                return;
            }
        }
        self.latency_sum += latency;
        let log = log_seconds(latency);
        self.log_sum += log;
        self.log_squares += log * log;
    }
}
