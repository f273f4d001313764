//! Which replica of a model takes a call: power of two choices over a
//! peak-EWMA of latency, the balancer of Finagle and Linkerd (tower's
//! `balance::p2c` over `load::PeakEwma`).
//!
//! Each replica keeps an estimate of its latency, a [`PeakEwma`]:
//! - a call that answers slower than the estimate replaces it at once (the
//!   peak), so a replica turning slow loses traffic from its next answer;
//! - a faster answer pulls it down by `1 - e^(-Δ/τ)`, Δ the time since a
//!   call last ended there and τ = [`DECAY`];
//! - between calls it decays towards zero with the same τ, so a replica
//!   that was slow once, and then drew no traffic, is tried again;
//! - a call that failed or was abandoned only says the replica is at least
//!   that slow: it may raise the estimate, never lower it, so a replica
//!   that fails fast draws no traffic for it (outlier ejection takes it
//!   out).
//!
//! A replica's [`cost`] is its estimate times its calls in flight plus one;
//! [`pick`] draws two distinct candidates at random and takes the cheaper.
//! Two random choices nearly match always taking the least loaded, without
//! the herd that forms on it when every caller reads the same loads.
//!
//! The estimate is one atomic word read lock-free on the request path:
//! it is kept as `ln(estimate) + t/τ` (t since the replica was made), so
//! that decaying it needs no write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// The time constant of a latency estimate, Linkerd's and Finagle's.
pub(crate) const DECAY: Duration = Duration::from_secs(10);

/// The estimate of a replica nothing is known of yet, nor of its peers:
/// Linkerd's default. A replica joining a pool starts at its peers' mean
/// instead.
pub(crate) const DEFAULT_LATENCY: Duration = Duration::from_millis(30);

/// The least latency a cost counts, so that estimates decayed to nothing
/// while a model sat idle still weigh their calls in flight.
const FLOOR_NS: f64 = 1_000.0;

/// A replica's peak-EWMA latency estimate, in nanoseconds.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    born: Instant,
    /// `ln(estimate_ns) + t/τ`, t in seconds since `born`: the estimate at
    /// any later time is `exp(log - t/τ)`.
    log: AtomicU64,
    /// When a call last ended, in nanoseconds since `born`.
    last_end: AtomicU64,
}

fn seconds(since: Duration) -> f64 {
    since.as_secs_f64()
}

fn nanos(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e9
}

impl PeakEwma {
    /// An estimate of `latency` at `now`.
    pub(crate) fn new(now: Instant, latency: Duration) -> Self {
        let estimate = Self {
            born: now,
            log: AtomicU64::new(0),
            last_end: AtomicU64::new(0),
        };
        estimate.reset(now, nanos(latency));
        estimate
    }

    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.born)
    }

    fn encode(&self, now: Instant, estimate_ns: f64) -> u64 {
        let tau = seconds(DECAY);
        (estimate_ns.max(1.0).ln() + seconds(self.age(now)) / tau).to_bits()
    }

    fn decode(&self, now: Instant, bits: u64) -> f64 {
        (f64::from_bits(bits) - seconds(self.age(now)) / seconds(DECAY)).exp()
    }

    /// Starts the estimate over at `estimate_ns`.
    pub(crate) fn reset(&self, now: Instant, estimate_ns: f64) {
        self.log
            .store(self.encode(now, estimate_ns), Ordering::Relaxed);
    }

    /// The estimate at `now`, in nanoseconds.
    pub(crate) fn estimate(&self, now: Instant) -> f64 {
        self.decode(now, self.log.load(Ordering::Relaxed))
    }

    /// Records a call that ended at `now` after `latency`; `answered` when
    /// it answered, otherwise `latency` is only a lower bound.
    pub(crate) fn observe(&self, now: Instant, latency: Duration, answered: bool) {
        let sample = nanos(latency);
        let age = self.age(now);
        let age_ns = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
        let previous = self.last_end.swap(age_ns, Ordering::Relaxed);
        let since = age_ns.saturating_sub(previous);
        // Nanoseconds as seconds: a count of nanoseconds below 2^53 (104
        // days) converts exactly, and beyond that the weight is 1 anyway.
        #[expect(clippy::cast_precision_loss)]
        let weight = 1.0 - (-(since as f64) / nanos(DECAY)).exp();
        let mut bits = self.log.load(Ordering::Relaxed);
        loop {
            let current = self.decode(now, bits);
            let next = if sample > current {
                sample
            } else if answered {
                current + (sample - current) * weight
            } else {
                return;
            };
            match self.log.compare_exchange_weak(
                bits,
                self.encode(now, next),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => bits = seen,
            }
        }
    }
}

/// What a call to a replica is expected to cost: its latency estimate
/// times the calls it would then run. Pure.
pub(crate) fn cost(estimate_ns: f64, in_flight: u32) -> f64 {
    estimate_ns.max(FLOOR_NS) * (f64::from(in_flight) + 1.0)
}

/// Power of two choices among `candidates` (given by position): two
/// distinct ones drawn with `rng`, the cheaper by `cost`, a tie going to
/// the one listed first; with one candidate, that one. Pure but for the
/// draws.
pub(crate) fn pick(
    candidates: usize,
    rng: &mut impl Rng,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    match candidates {
        0 => None,
        1 => Some(0),
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (first, second) = (a.min(b), a.max(b));
            Some(if cost(second) < cost(first) {
                second
            } else {
                first
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::SmallRng;

    use super::*;

    const MS: f64 = 1e6;

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * 1e-6
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_is_the_estimate_at_once_and_it_decays_with_the_time_constant() {
        let start = Instant::now();
        let ewma = PeakEwma::new(start, Duration::from_millis(10));
        assert!(close(ewma.estimate(start), 10.0 * MS));
        ewma.observe(start, Duration::from_millis(400), true);
        assert!(
            close(ewma.estimate(start), 400.0 * MS),
            "the peak counts at once"
        );

        tokio::time::advance(DECAY).await;
        let decayed = ewma.estimate(Instant::now());
        assert!(
            close(decayed, 400.0 * MS / std::f64::consts::E),
            "{decayed}"
        );
        tokio::time::advance(DECAY * 5).await;
        assert!(ewma.estimate(Instant::now()) < 3.0 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn fast_answers_pull_the_estimate_down_by_the_time_between_them() {
        let start = Instant::now();
        let ewma = PeakEwma::new(start, Duration::from_millis(10));
        ewma.observe(start, Duration::from_millis(100), true);
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        let before = ewma.estimate(now);
        ewma.observe(now, Duration::from_millis(20), true);
        let weight = 1.0 - (-0.1_f64).exp();
        let expected = before + (20.0 * MS - before) * weight;
        assert!(
            close(ewma.estimate(now), expected),
            "{}",
            ewma.estimate(now)
        );
        assert!(ewma.estimate(now) < before);
        assert!(
            ewma.estimate(now) > 20.0 * MS,
            "one answer does not erase the past"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_may_raise_the_estimate_but_never_lowers_it() {
        let start = Instant::now();
        let ewma = PeakEwma::new(start, Duration::from_millis(50));
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        let before = ewma.estimate(now);
        ewma.observe(now, Duration::from_millis(1), false);
        assert!(
            close(ewma.estimate(now), before),
            "a fast failure says nothing"
        );
        ewma.observe(now, Duration::from_secs(2), false);
        assert!(
            close(ewma.estimate(now), 2_000.0 * MS),
            "a timeout is a peak"
        );
    }

    #[test]
    fn the_cost_grows_with_the_calls_in_flight_and_an_idle_estimate_still_counts_them() {
        assert!(close(cost(10.0 * MS, 0), 10.0 * MS));
        assert!(close(cost(10.0 * MS, 3), 40.0 * MS));
        assert!(cost(0.0, 2) > cost(0.0, 1));
    }

    #[test]
    fn two_choices_take_the_cheaper_of_two_distinct_candidates() {
        let costs = [5.0, 1.0, 9.0, 3.0];
        let mut rng = SmallRng::seed_from_u64(7);
        let mut picked = [0_usize; 4];
        for _ in 0..4_000 {
            let i = pick(costs.len(), &mut rng, |i| costs[i]).unwrap();
            picked[i] += 1;
        }
        // The dearest is never picked: it always loses its pair. The
        // cheapest wins every pair it is in: half the draws.
        assert_eq!(picked[2], 0);
        assert!((1_800..2_200).contains(&picked[1]), "{picked:?}");
        assert!(picked[3] > picked[0], "{picked:?}");
        assert_eq!(pick(0, &mut rng, |_| 0.0), None);
        assert_eq!(pick(1, &mut rng, |_| 0.0), Some(0));
    }

    #[test]
    fn a_tie_goes_to_the_candidate_listed_first_and_draws_repeat_with_a_seed() {
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(pick(2, &mut rng, |_| 1.0), Some(0));
        }
        let draws = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..50)
                .map(|_| pick(5, &mut rng, |i| [3.0, 1.0, 4.0, 1.0, 5.0][i]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
    }
}
