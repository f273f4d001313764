//! The retry budget of one model: how many calls beyond a task's first the
//! model's failures may cause.
//!
//! Linkerd's and Finagle's rule: over a sliding window of
//! [`WINDOW_SECONDS`], retries may be at most `budget_ratio` of the calls
//! that were not retries, plus `min_per_second` each second of the window
//! as a floor for quiet models. When a model fails everything, retries
//! stop once they reach that share, so they cannot multiply its outage;
//! when it fails now and then, every failure is retried.
//!
//! Calls and retries are counted in one-second buckets under a short lock.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::SettingError;

/// The seconds a budget looks back over.
pub(crate) const WINDOW_SECONDS: usize = 10;

/// Settings of retries: the `[retries]` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Retries allowed per call that was not one, over the window, in
    /// [0, 1].
    pub budget_ratio: f64,
    /// Retries allowed each second whatever the traffic.
    pub min_per_second: f64,
    /// The wait before the first retry; it doubles with each one, with
    /// jitter.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest wait before a retry.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            budget_ratio: 0.2,
            min_per_second: 10.0,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl RetrySettings {
    /// Checks the ranges the types do not.
    pub fn validate(&self) -> Result<(), SettingError> {
        if !(0.0..=1.0).contains(&self.budget_ratio) {
            return Err(SettingError::new("budget_ratio", "must be within 0 and 1"));
        }
        if !(self.min_per_second >= 0.0 && self.min_per_second.is_finite()) {
            return Err(SettingError::new(
                "min_per_second",
                "must be a number of 0 or more",
            ));
        }
        if self.max_backoff < self.backoff {
            return Err(SettingError::new(
                "max_backoff",
                "must be at least `backoff`",
            ));
        }
        Ok(())
    }

    /// The wait before retry number `retry` (from 1): the backoff doubled
    /// for each earlier retry, capped, then drawn from its upper half by
    /// `jitter` in [0, 1], so retries of many tasks spread out.
    pub(crate) fn backoff_before(&self, retry: u32, jitter: f64) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1_u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        doubled.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// What a window holds: calls and retries per second.
#[derive(Debug, Default)]
struct Window {
    /// The second the newest bucket counts, from `origin`.
    second: u64,
    origin: Option<Instant>,
    calls: [u32; WINDOW_SECONDS],
    retries: [u32; WINDOW_SECONDS],
}

impl Window {
    /// Moves the window to `now`, emptying the buckets it passed.
    fn advance(&mut self, now: Instant) -> usize {
        let origin = *self.origin.get_or_insert(now);
        let second = now.saturating_duration_since(origin).as_secs();
        let passed = second.saturating_sub(self.second);
        if passed > 0 {
            let cleared = usize::try_from(passed)
                .unwrap_or(WINDOW_SECONDS)
                .min(WINDOW_SECONDS);
            for step in 1..=cleared {
                let index = bucket(self.second + step as u64);
                self.calls[index] = 0;
                self.retries[index] = 0;
            }
            self.second = second;
        }
        bucket(self.second)
    }
}

fn bucket(second: u64) -> usize {
    // The remainder of a division by a small constant fits any usize.
    #[expect(clippy::cast_possible_truncation)]
    let index = (second % WINDOW_SECONDS as u64) as usize;
    index
}

/// One model's budget.
#[derive(Debug, Default)]
pub(crate) struct RetryBudget {
    window: Mutex<Window>,
}

/// What a budget holds now, for views and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetUse {
    /// Calls in the window that were not retries.
    pub calls: u32,
    /// Retries in the window.
    pub retries: u32,
}

impl RetryBudget {
    /// Counts a call that was not a retry.
    pub(crate) fn deposit(&self, now: Instant) {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let index = window.advance(now);
        window.calls[index] = window.calls[index].saturating_add(1);
    }

    /// Takes one retry from the budget if it has one left.
    pub(crate) fn withdraw(&self, now: Instant, settings: &RetrySettings) -> bool {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let index = window.advance(now);
        let calls: u32 = window.calls.iter().sum();
        let retries: u32 = window.retries.iter().sum();
        let allowed = settings.min_per_second * WINDOW_SECONDS as f64
            + settings.budget_ratio * f64::from(calls);
        if f64::from(retries) + 1.0 > allowed {
            return false;
        }
        window.retries[index] = window.retries[index].saturating_add(1);
        true
    }

    /// Calls and retries in the window at `now`.
    pub(crate) fn used(&self, now: Instant) -> BudgetUse {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        window.advance(now);
        BudgetUse {
            calls: window.calls.iter().sum(),
            retries: window.retries.iter().sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_model_may_retry_at_the_floor_rate() {
        let settings = RetrySettings {
            min_per_second: 1.0,
            ..RetrySettings::default()
        };
        let budget = RetryBudget::default();
        let now = Instant::now();
        let allowed = (0..20).filter(|_| budget.withdraw(now, &settings)).count();
        assert_eq!(allowed, WINDOW_SECONDS);
    }

    #[test]
    fn retries_are_a_share_of_calls_beyond_the_floor() {
        let settings = RetrySettings {
            min_per_second: 0.0,
            budget_ratio: 0.2,
            ..RetrySettings::default()
        };
        let budget = RetryBudget::default();
        let now = Instant::now();
        for _ in 0..100 {
            budget.deposit(now);
        }
        let allowed = (0..100).filter(|_| budget.withdraw(now, &settings)).count();
        assert_eq!(allowed, 20);
        assert_eq!(
            budget.used(now),
            BudgetUse {
                calls: 100,
                retries: 20
            }
        );
    }

    #[test]
    fn the_window_forgets_what_is_older_than_ten_seconds() {
        let settings = RetrySettings {
            min_per_second: 0.0,
            ..RetrySettings::default()
        };
        let budget = RetryBudget::default();
        let start = Instant::now();
        for _ in 0..50 {
            budget.deposit(start);
        }
        assert!(budget.withdraw(start, &settings));
        let later = start + Duration::from_secs(11);
        assert_eq!(budget.used(later), BudgetUse::default());
        assert!(!budget.withdraw(later, &settings));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_in_its_upper_half() {
        let settings = RetrySettings::default();
        assert_eq!(settings.backoff_before(1, 1.0), Duration::from_millis(10));
        assert_eq!(settings.backoff_before(1, 0.0), Duration::from_millis(5));
        assert_eq!(settings.backoff_before(3, 1.0), Duration::from_millis(40));
        assert_eq!(settings.backoff_before(30, 1.0), Duration::from_millis(200));
    }
}
