//! The score of each candidate model for a task: pure arithmetic over a
//! snapshot, with every part kept so a caller can see why a model won.
//!
//! A model's score starts as its declared confidence `c`. With measured
//! performance,
//!
//! ```text
//! perf  = 0.4 · success_rate + 0.3 · (1 − normalized_latency) + 0.3 · (1 − error_rate)
//! w     = min(0.8, samples / 100)
//! score = c · (1 − w) + perf · w
//! ```
//!
//! where `samples` is the number of the model's outcomes, faded while it is
//! idle, and the rates follow its last outcomes (at most 50, fewer right
//! after a change; see [`registry::stats`](crate::registry)).
//!
//! **Expected latency** is the measured mean latency (of answers, and of
//! timeouts counted as at least the time they ran; see
//! [`registry::stats`](crate::registry); while there is no answer, the
//! declared estimate or the timeouts' mean, whichever is longer) times a
//! load factor
//! `1 + in_flight / capacity`, where `capacity` is the declared concurrency
//! of the model's replicas that are not down, added up: a model with as
//! many calls in flight as it runs at once is expected to take twice as
//! long, so a saturated model sheds share to an idle peer. A model that
//! declares no limit gets no load factor.
//!
//! **Normalised latency** is a candidate's expected latency divided by the
//! largest expected latency among the candidates for the same task, in
//! (0, 1]: the slowest candidate reads 1, one half as fast reads 0.5. Scores
//! are only ever compared within one task's candidates, so the scale is
//! theirs. With every weight in [0, 1] and summing to 1, scores stay in
//! [0, 1].

use std::time::Duration;

use crate::registry::StatsSnapshot;
use crate::task::ScoreBreakdown;

/// The weights of the formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoringSettings {
    /// Weight of the success rate in `perf`.
    pub success_weight: f64,
    /// Weight of `1 − normalized_latency` in `perf`.
    pub latency_weight: f64,
    /// Weight of `1 − error_rate` in `perf`.
    pub error_weight: f64,
    /// The most `perf` may weigh against the declared confidence.
    pub max_performance_weight: f64,
    /// The divisor of `w = min(max_performance_weight, samples / full_weight_samples)`.
    pub full_weight_samples: f64,
}

impl Default for ScoringSettings {
    fn default() -> Self {
        Self {
            success_weight: 0.4,
            latency_weight: 0.3,
            error_weight: 0.3,
            max_performance_weight: 0.8,
            full_weight_samples: 100.0,
        }
    }
}

/// What the scorer knows of one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScoreInput {
    /// Declared confidence for the task type, in [0, 1].
    pub confidence: f64,
    /// Declared latency estimate.
    pub estimated_latency: Duration,
    /// Calls the model's live replicas take at once; `None` when unlimited.
    pub capacity: Option<u32>,
    /// Recent performance.
    pub stats: StatsSnapshot,
    /// Calls in flight now.
    pub in_flight: u32,
}

/// Scores every candidate for one task, as selection does in two passes.
#[cfg(test)]
pub(crate) fn score_all(settings: &ScoringSettings, inputs: &[ScoreInput]) -> Vec<ScoreBreakdown> {
    let mut breakdowns: Vec<ScoreBreakdown> = inputs
        .iter()
        .map(|input| measure(settings, input))
        .collect();
    let slowest = breakdowns
        .iter()
        .map(|breakdown| breakdown.expected_latency)
        .max()
        .unwrap_or_default();
    for breakdown in &mut breakdowns {
        finish(settings, breakdown, slowest);
    }
    breakdowns
}

/// The parts of a candidate's score that need no other candidate: all but
/// the normalised latency, the performance and the score, which
/// [`finish`] adds. The confidence is kept as declared until then.
pub(crate) fn measure(settings: &ScoringSettings, input: &ScoreInput) -> ScoreBreakdown {
    let stats = &input.stats;
    ScoreBreakdown {
        confidence: input.confidence,
        success_rate: stats.success_rate(),
        error_rate: stats.error_rate(),
        samples: stats.samples,
        expected_latency: expected_latency(input),
        normalized_latency: 0.0,
        performance: 0.0,
        performance_weight: settings
            .max_performance_weight
            .min(stats.samples / settings.full_weight_samples)
            .max(0.0),
        score: 0.0,
    }
}

/// Completes a [`measure`]d breakdown once `slowest`, the largest expected
/// latency among the task's candidates, is known.
pub(crate) fn finish(
    settings: &ScoringSettings,
    breakdown: &mut ScoreBreakdown,
    slowest: Duration,
) {
    breakdown.normalized_latency = if slowest.is_zero() {
        0.0
    } else {
        breakdown.expected_latency.as_secs_f64() / slowest.as_secs_f64()
    };
    breakdown.performance = settings.success_weight * breakdown.success_rate
        + settings.latency_weight * (1.0 - breakdown.normalized_latency)
        + settings.error_weight * (1.0 - breakdown.error_rate);
    breakdown.set_confidence(breakdown.confidence);
}

fn expected_latency(input: &ScoreInput) -> Duration {
    let stats = &input.stats;
    // Timeouts only bound a latency from below: without an answer the
    // declared estimate stands, unless they already exceed it.
    let base = if stats.successes > 0.0 {
        stats.mean_latency
    } else {
        input.estimated_latency.max(stats.mean_latency)
    };
    match input.capacity {
        Some(capacity) => {
            base.mul_f64(1.0 + f64::from(input.in_flight) / f64::from(capacity.max(1)))
        }
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stats(attempts: f64, successes: f64, mean_ms: u64) -> StatsSnapshot {
        StatsSnapshot {
            samples: attempts,
            attempts,
            successes,
            failures: attempts - successes,
            timeouts: 0.0,
            mean_latency: Duration::from_millis(mean_ms),
            p50: Duration::ZERO,
            p95: Duration::ZERO,
            p99: Duration::ZERO,
        }
    }

    fn input(confidence: f64, stats: StatsSnapshot) -> ScoreInput {
        ScoreInput {
            confidence,
            estimated_latency: Duration::from_millis(100),
            capacity: Some(4),
            stats,
            in_flight: 0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn without_samples_the_score_is_the_declared_confidence() {
        let scores = score_all(
            &ScoringSettings::default(),
            &[input(0.95, stats(0.0, 0.0, 0))],
        );
        assert!(close(scores[0].score, 0.95));
        assert_eq!(scores[0].performance_weight, 0.0);
    }

    #[test]
    fn worked_example_matches_the_formula() {
        // A: c 0.9, 50 calls, 40 answered, mean 200 ms (the slowest).
        // B: c 0.7, 200 calls, all answered, mean 100 ms.
        let scores = score_all(
            &ScoringSettings::default(),
            &[
                input(0.9, stats(50.0, 40.0, 200)),
                input(0.7, stats(200.0, 200.0, 100)),
            ],
        );
        // A: perf = 0.4·0.8 + 0.3·(1 − 1) + 0.3·(1 − 0.2) = 0.56; w = 0.5
        //    score = 0.9·0.5 + 0.56·0.5 = 0.73
        assert!(close(scores[0].performance, 0.56));
        assert!(close(scores[0].performance_weight, 0.5));
        assert!(close(scores[0].score, 0.73));
        // B: perf = 0.4 + 0.3·0.5 + 0.3 = 0.85; w = 0.8 (capped)
        //    score = 0.7·0.2 + 0.85·0.8 = 0.82
        assert!(close(scores[1].normalized_latency, 0.5));
        assert!(close(scores[1].performance, 0.85));
        assert!(close(scores[1].score, 0.82));
    }

    #[test]
    fn in_flight_work_raises_expected_latency_and_sheds_share() {
        let busy = ScoreInput {
            in_flight: 4,
            ..input(0.8, stats(100.0, 100.0, 100))
        };
        let idle = input(0.8, stats(100.0, 100.0, 100));
        let scores = score_all(&ScoringSettings::default(), &[busy, idle]);
        assert_eq!(scores[0].expected_latency, Duration::from_millis(200));
        assert!(close(scores[1].normalized_latency, 0.5));
        assert!(scores[1].score > scores[0].score);
    }

    #[test]
    fn timeouts_alone_raise_the_expected_latency_above_the_estimate_only() {
        let timed_out = |mean_ms| StatsSnapshot {
            failures: 0.0,
            timeouts: 3.0,
            ..stats(3.0, 0.0, mean_ms)
        };
        // The declared 100 ms stand against timeouts after 40 ms ...
        let early = score_all(&ScoringSettings::default(), &[input(0.8, timed_out(40))]);
        assert_eq!(early[0].expected_latency, Duration::from_millis(100));
        // ... but a model cut after 1 s took at least that.
        let hung = score_all(&ScoringSettings::default(), &[input(0.8, timed_out(1_000))]);
        assert_eq!(hung[0].expected_latency, Duration::from_secs(1));
    }

    fn arb_stats() -> impl Strategy<Value = StatsSnapshot> {
        (0.0..500.0_f64, 0.0..=1.0_f64, 0_u64..5_000)
            .prop_map(|(attempts, share, mean)| stats(attempts, attempts * share, mean))
    }

    fn arb_input() -> impl Strategy<Value = ScoreInput> {
        (
            0.0..=1.0_f64,
            arb_stats(),
            0_u64..5_000,
            proptest::option::of(1_u32..64),
            0_u32..100,
        )
            .prop_map(
                |(confidence, stats, estimate, capacity, in_flight)| ScoreInput {
                    confidence,
                    estimated_latency: Duration::from_millis(estimate),
                    capacity,
                    stats,
                    in_flight,
                },
            )
    }

    proptest! {
        #[test]
        fn scores_stay_in_the_unit_interval(inputs in proptest::collection::vec(arb_input(), 1..12)) {
            for breakdown in score_all(&ScoringSettings::default(), &inputs) {
                prop_assert!((0.0..=1.0).contains(&breakdown.score), "{breakdown:?}");
                prop_assert!((0.0..=1.0).contains(&breakdown.normalized_latency));
            }
        }

        #[test]
        fn a_better_success_rate_never_lowers_a_score(
            inputs in proptest::collection::vec(arb_input(), 1..8),
            which in any::<prop::sample::Index>(),
            gain in 0.0..=1.0_f64,
        ) {
            let settings = ScoringSettings::default();
            let i = which.index(inputs.len());
            let before = score_all(&settings, &inputs)[i].score;
            let mut better = inputs.clone();
            let s = &mut better[i].stats;
            let moved = s.failures * gain;
            s.successes += moved;
            s.failures -= moved;
            let after = score_all(&settings, &better)[i].score;
            prop_assert!(after >= before - 1e-12, "{before} -> {after}");
        }
    }
}
