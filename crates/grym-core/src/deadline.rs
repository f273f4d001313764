//! When something must have ended: one type for every deadline of a task,
//! its steps and its calls.
//!
//! A deadline may be unbounded. Combining two keeps the earlier; a timeout
//! too far out to represent is no bound at all. Time comes from tokio, so
//! tests that pause the clock see deadlines pass at once.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// When something must have ended, if ever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

/// A deadline passed before the future it bounded finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl Deadline {
    /// No bound.
    pub const NONE: Self = Self(None);

    /// At `instant`.
    pub fn at(instant: Instant) -> Self {
        Self(Some(instant))
    }

    /// At `instant`, if there is one.
    pub fn from_option(instant: Option<Instant>) -> Self {
        Self(instant)
    }

    /// `timeout` after `start`; unbounded when that is too far out to
    /// represent.
    pub fn after(start: Instant, timeout: Duration) -> Self {
        Self(start.checked_add(timeout))
    }

    /// [`after`](Self::after) `start` when there is a timeout.
    pub fn after_timeout(start: Instant, timeout: Option<Duration>) -> Self {
        timeout.map_or(Self::NONE, |timeout| Self::after(start, timeout))
    }

    /// The instant, when bounded.
    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// The earlier of the two.
    #[must_use]
    pub fn earliest(self, other: Self) -> Self {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Self(Some(a.min(b))),
            (a, b) => Self(a.or(b)),
        }
    }

    /// Whether it has passed at `now`.
    pub fn has_passed(self, now: Instant) -> bool {
        self.0.is_some_and(|at| now >= at)
    }

    /// The time left at `now`, when bounded; zero once passed.
    pub fn remaining(self, now: Instant) -> Option<Duration> {
        self.0.map(|at| at.saturating_duration_since(now))
    }

    /// Runs `future` until it ends or the deadline passes.
    pub async fn bound<F: Future>(self, future: F) -> Result<F::Output, Elapsed> {
        match self.0 {
            Some(at) => tokio::time::timeout_at(at, future)
                .await
                .map_err(|_| Elapsed),
            None => Ok(future.await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_deadline_wins_and_none_is_no_bound() {
        let now = Instant::now();
        let soon = Deadline::at(now + Duration::from_secs(1));
        let later = Deadline::at(now + Duration::from_secs(2));
        assert_eq!(soon.earliest(later), soon);
        assert_eq!(later.earliest(soon), soon);
        assert_eq!(Deadline::NONE.earliest(later), later);
        assert_eq!(Deadline::NONE.earliest(Deadline::NONE), Deadline::NONE);
    }

    #[test]
    fn a_timeout_too_far_out_is_no_bound() {
        assert_eq!(
            Deadline::after(Instant::now(), Duration::MAX),
            Deadline::NONE
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_bound_future_ends_at_the_deadline() {
        let now = Instant::now();
        let deadline = Deadline::after(now, Duration::from_millis(10));
        assert_eq!(deadline.remaining(now), Some(Duration::from_millis(10)));
        let slow = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(deadline.bound(slow).await, Err(Elapsed));
        assert!(deadline.has_passed(Instant::now()));
        assert_eq!(Deadline::NONE.bound(async { 7 }).await, Ok(7));
    }
}
