//! The deadline budget of a composite, shared along its critical path.
//!
//! When a step starts, the time left before the composite's deadline is
//! split along the longest estimated path still ahead of it: the step gets
//! the part its own estimate is of that path. The last step of a path gets
//! all that is left; a step that overruns its share ends, rather than
//! spending the time of the steps after it.

use std::time::Duration;

use tokio::time::Instant;

/// The least estimate a step counts for, so steps with no estimate still
/// get a share.
const MIN_ESTIMATE: Duration = Duration::from_millis(1);

/// The estimates to share a deadline by: a step whose model declares no
/// estimate (zero) counts as the mean of those that do, or, when none do,
/// every step counts the same.
pub(crate) fn fill_unknown(estimates: &mut [Duration]) {
    let known: Vec<Duration> = estimates.iter().copied().filter(|e| !e.is_zero()).collect();
    let fill = if known.is_empty() {
        MIN_ESTIMATE
    } else {
        known.iter().sum::<Duration>() / u32::try_from(known.len()).unwrap_or(u32::MAX)
    };
    for estimate in estimates.iter_mut().filter(|e| e.is_zero()) {
        *estimate = fill;
    }
}

/// For each step, the longest estimated path from it (itself included) to
/// the end, given each step's estimate and successors, in a topological
/// `order`.
pub(crate) fn paths_ahead(
    estimates: &[Duration],
    successors: &[Vec<usize>],
    order: &[usize],
) -> Vec<Duration> {
    let mut ahead = vec![Duration::ZERO; estimates.len()];
    for &step in order.iter().rev() {
        let longest_after = successors[step]
            .iter()
            .map(|&next| ahead[next])
            .max()
            .unwrap_or_default();
        ahead[step] = estimates[step]
            .max(MIN_ESTIMATE)
            .saturating_add(longest_after);
    }
    ahead
}

/// The deadline of a step starting `now` with `estimate`, when the path
/// ahead of it is estimated at `ahead` and the composite must end by
/// `deadline`.
pub(crate) fn share(
    now: Instant,
    deadline: Instant,
    estimate: Duration,
    ahead: Duration,
) -> Instant {
    let left = deadline.saturating_duration_since(now);
    let ahead = ahead.max(MIN_ESTIMATE);
    let part = estimate.max(MIN_ESTIMATE).as_secs_f64() / ahead.as_secs_f64();
    now + left.mul_f64(part.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_path_ahead_takes_the_longest_branch() {
        // a -> (b | c) -> d, with c the slow branch.
        let estimates = [100 * MS, 50 * MS, 300 * MS, 100 * MS];
        let successors = vec![vec![1, 2], vec![3], vec![3], vec![]];
        let ahead = paths_ahead(&estimates, &successors, &[0, 1, 2, 3]);
        assert_eq!(ahead, [500 * MS, 150 * MS, 400 * MS, 100 * MS]);
    }

    #[test]
    fn unknown_estimates_count_as_the_mean_of_the_known() {
        let mut estimates = [Duration::ZERO, 100 * MS, 300 * MS];
        fill_unknown(&mut estimates);
        assert_eq!(estimates, [200 * MS, 100 * MS, 300 * MS]);
        let mut none = [Duration::ZERO, Duration::ZERO];
        fill_unknown(&mut none);
        assert_eq!(none[0], none[1]);
        assert!(!none[0].is_zero());
    }

    #[test]
    fn a_step_gets_its_part_of_the_time_left_and_the_last_gets_all() {
        let now = Instant::now();
        let deadline = now + 1000 * MS;
        assert_eq!(share(now, deadline, 250 * MS, 1000 * MS), now + 250 * MS);
        assert_eq!(share(now, deadline, 300 * MS, 300 * MS), deadline);
        // Past the deadline nothing is left to share.
        assert_eq!(
            share(deadline + MS, deadline, 300 * MS, 600 * MS),
            deadline + MS
        );
    }
}
