//! When a task arriving now could start on its model, and whether it may
//! wait that long: pure arithmetic over what the scheduler counts and what
//! the statistics measured, no clock and no locks of its own.
//!
//! A model with `limit` slots, each call taking `service` on average,
//! finishes about `limit / service` calls a second. A task with `ahead`
//! tasks before it in line and `running` calls running starts once
//! `ahead + 1` slots have come free beyond the ones free now, so it waits
//! about `(ahead + 1 - free) * service / limit`; it then takes `service`
//! more. The estimate is the mean, not a bound: it refuses what would
//! almost surely miss its deadline, and admits what may just make it.

use std::time::Duration;

/// How long a task with `ahead` tasks before it waits for a slot of a model
/// that runs `running` of `limit` calls at once, each taking `service`.
pub(crate) fn queue_wait(ahead: usize, running: u32, limit: u32, service: Duration) -> Duration {
    let limit = limit.max(1);
    let free = limit.saturating_sub(running) as usize;
    let starts_before = (ahead + 1).saturating_sub(free);
    if starts_before == 0 {
        return Duration::ZERO;
    }
    let calls = u32::try_from(starts_before).unwrap_or(u32::MAX);
    service.saturating_mul(calls) / limit
}

/// Why a task may not wait in a model's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TooLong {
    /// It could not start early enough to finish before its deadline.
    Deadline,
    /// The wait is longer than `max_queue_wait`.
    QueueWait,
}

/// Whether a task that would wait `wait` and then run for `service` may
/// wait: within `max_queue_wait`, and within its deadline, `left` from now,
/// if it has one. A task that waits for nothing is always let in: whether
/// its call is worth sending is decided when it has its slot.
pub(crate) fn verdict(
    wait: Duration,
    service: Duration,
    left: Option<Duration>,
    max_queue_wait: Duration,
) -> Result<(), TooLong> {
    if wait.is_zero() {
        return Ok(());
    }
    if left.is_some_and(|left| wait.saturating_add(service) > left) {
        return Err(TooLong::Deadline);
    }
    if wait > max_queue_wait {
        return Err(TooLong::QueueWait);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_free_slot_means_no_wait() {
        assert_eq!(queue_wait(0, 0, 4, 50 * MS), Duration::ZERO);
        assert_eq!(queue_wait(2, 1, 4, 50 * MS), Duration::ZERO);
    }

    #[test]
    fn the_wait_is_the_work_ahead_over_the_throughput() {
        // 4 slots of 50 ms: 80 calls a second. All busy and 7 ahead: the
        // 8th completion frees this task's slot, 8 * 50 / 4 = 100 ms.
        assert_eq!(queue_wait(7, 4, 4, 50 * MS), 100 * MS);
        // 400 ahead is five seconds of work.
        assert_eq!(queue_wait(399, 4, 4, 50 * MS), 5_000 * MS);
        // A zero limit counts as one slot, not a division by zero.
        assert_eq!(queue_wait(0, 1, 0, 50 * MS), 50 * MS);
    }

    #[test]
    fn a_task_that_cannot_finish_before_its_deadline_is_refused() {
        let max = 2_000 * MS;
        assert_eq!(
            verdict(960 * MS, 50 * MS, Some(1_000 * MS), max),
            Err(TooLong::Deadline)
        );
        assert_eq!(verdict(900 * MS, 50 * MS, Some(1_000 * MS), max), Ok(()));
    }

    #[test]
    fn a_wait_beyond_max_queue_wait_is_refused_with_or_without_a_deadline() {
        let max = 2_000 * MS;
        assert_eq!(
            verdict(2_100 * MS, 50 * MS, None, max),
            Err(TooLong::QueueWait)
        );
        assert_eq!(
            verdict(2_100 * MS, 50 * MS, Some(10_000 * MS), max),
            Err(TooLong::QueueWait)
        );
        assert_eq!(verdict(1_900 * MS, 50 * MS, None, max), Ok(()));
    }

    #[test]
    fn no_wait_is_always_let_in() {
        assert_eq!(verdict(Duration::ZERO, 50 * MS, Some(MS), MS), Ok(()));
    }
}
