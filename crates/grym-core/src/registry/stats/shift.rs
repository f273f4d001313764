//! Telling a change in a model from chance: two-sided CUSUMs, the
//! sequential tests of statistical process control, on its error rate and
//! on its latency.
//!
//! **Errors.** Against the error rate `p` the long memory expects (held
//! within [`FLOOR`] and `1 − FLOOR`), each outcome adds its log-likelihood
//! ratio for a rate one [`STEP`] higher (and, where there is room, one
//! lower): `ln(p₁ / p)` for an error, `ln((1 − p₁) / (1 − p))` for an
//! answer. A sum that would go below zero restarts at zero, so old calm
//! does not hide a new change. Past [`ERROR_BOUND`] the outcomes since the
//! sum last restarted are `e^5` ≈ 150 times likelier under the stepped
//! rate: the rate has shifted. A model failing 3% of its calls that starts
//! failing half of them is seen after 7 outcomes on average (9 in 10 within
//! 12), one that starts failing every call after 3; a steady model raises a
//! false alarm about once in 6,000 outcomes (once in 1,500 at 10% errors).
//!
//! **Latency.** Each answer's or timeout's latency is compared with the
//! long memory's as a ratio: `z` is its logarithm's distance from the mean
//! of logarithms, in their spread (at least [`MIN_LOG_SPREAD`], and clipped
//! to ±[`CLIP`] so one outlier cannot decide). `z − SLACK` adds up for
//! slower, `−z − SLACK` for faster; past [`LATENCY_BOUND`] the latency has
//! shifted. With latencies within ±20% of their mean, a model that turns
//! 1.5 times slower or more is seen after 3 outcomes; with heavy-tailed
//! latencies (log-normal, σ = 1) a threefold slowdown takes about 20, and a
//! false alarm comes about once in 8,000 outcomes.
//!
//! A false alarm costs only a shorter memory for a while.

/// The step in error rate the test looks for.
const STEP: f64 = 0.25;

/// The least error rate (and the least rate of answers) the test assumes:
/// a model that never failed still may.
const FLOOR: f64 = 0.05;

/// The evidence, in nats, that says the error rate shifted.
const ERROR_BOUND: f64 = 5.0;

/// The least spread of log latencies the test assumes (5%): latencies that
/// never varied still may, a little.
const MIN_LOG_SPREAD: f64 = 0.05;

/// The most one latency counts for, in spreads.
const CLIP: f64 = 3.0;

/// The drift, in spreads, a latency must exceed to count towards a shift.
const SLACK: f64 = 1.0;

/// The sum, in spreads, that says the latency shifted.
const LATENCY_BOUND: f64 = 4.0;

/// The running sums of the tests.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Shift {
    more_errors: f64,
    fewer_errors: f64,
    slower: f64,
    faster: f64,
}

impl Shift {
    /// Adds one outcome, an error or not, against the expected error rate;
    /// true when the rate has shifted (the sums then restart).
    pub(super) fn errors(&mut self, expected: f64, error: bool) -> bool {
        let p = expected.clamp(FLOOR, 1.0 - FLOOR);
        let evidence = |stepped: f64| {
            if error {
                (stepped / p).ln()
            } else {
                ((1.0 - stepped) / (1.0 - p)).ln()
            }
        };
        self.more_errors = (self.more_errors + evidence((p + STEP).min(1.0 - FLOOR))).max(0.0);
        self.fewer_errors = if p - STEP >= FLOOR {
            (self.fewer_errors + evidence(p - STEP)).max(0.0)
        } else {
            0.0
        };
        self.restart_if(self.more_errors > ERROR_BOUND || self.fewer_errors > ERROR_BOUND)
    }

    /// Adds one latency, as the logarithm of its seconds, against the mean
    /// and spread of the log latencies expected; true when the latency has
    /// shifted (the sums then restart).
    pub(super) fn latency(&mut self, (mean, spread): (f64, f64), log: f64) -> bool {
        let z = ((log - mean) / spread.max(MIN_LOG_SPREAD)).clamp(-CLIP, CLIP);
        self.slower = (self.slower + z - SLACK).max(0.0);
        self.faster = (self.faster - z - SLACK).max(0.0);
        self.restart_if(self.slower > LATENCY_BOUND || self.faster > LATENCY_BOUND)
    }

    fn restart_if(&mut self, shifted: bool) -> bool {
        if shifted {
            *self = Self::default();
        }
        shifted
    }
}
