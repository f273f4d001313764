//! The open-loop schedule: when each request is due.
//!
//! Request `i` of a run at `rate` per second is due `i / rate` seconds after
//! the run starts, whatever happened to the requests before it. Its latency
//! is measured from that intended time, not from when it was actually sent,
//! so a server that stalls is charged for every request that should have
//! gone out during the stall (no coordinated omission, as wrk2 and ghz
//! measure).

use std::time::Duration;

/// A fixed arrival rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Schedule {
    rate: f64,
}

impl Schedule {
    /// A schedule of `rate` requests per second; `None` unless the rate is
    /// positive and finite.
    pub(crate) fn new(rate: f64) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then_some(Self { rate })
    }

    /// When request `index` is due, from the start of the run.
    pub(crate) fn offset(&self, index: u64) -> Duration {
        Duration::from_secs_f64(index as f64 / self.rate)
    }

    /// How many requests are due by `elapsed` (those whose offset is at
    /// most `elapsed`): the index of the first request not yet due.
    pub(crate) fn due_by(&self, elapsed: Duration) -> u64 {
        // The offsets are computed the same way, so a request exactly on
        // time counts as due.
        let mut due = (elapsed.as_secs_f64() * self.rate).floor() as u64 + 1;
        while due > 0 && self.offset(due - 1) > elapsed {
            due -= 1;
        }
        while self.offset(due) <= elapsed {
            due += 1;
        }
        due
    }

    /// How many requests a run of `span` sends: those due before its end.
    pub(crate) fn count_within(&self, span: Duration) -> u64 {
        let mut count = (span.as_secs_f64() * self.rate).ceil() as u64;
        while count > 0 && self.offset(count - 1) >= span {
            count -= 1;
        }
        while self.offset(count) < span {
            count += 1;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced_from_the_start() {
        let schedule = Schedule::new(1000.0).unwrap();
        assert_eq!(schedule.offset(0), Duration::ZERO);
        assert_eq!(schedule.offset(1), Duration::from_millis(1));
        assert_eq!(schedule.offset(2500), Duration::from_millis(2500));
    }

    #[test]
    fn the_first_request_is_due_at_once_and_each_on_its_time() {
        let schedule = Schedule::new(1000.0).unwrap();
        assert_eq!(schedule.due_by(Duration::ZERO), 1);
        assert_eq!(schedule.due_by(Duration::from_micros(999)), 1);
        assert_eq!(schedule.due_by(Duration::from_millis(1)), 2);
        assert_eq!(schedule.due_by(Duration::from_micros(10_500)), 11);
    }

    #[test]
    fn a_late_pacer_finds_every_missed_request_due_at_once() {
        let schedule = Schedule::new(10_000.0).unwrap();
        // Woken 1 ms late after request 0: requests 1 to 10 are all due.
        assert_eq!(schedule.due_by(Duration::from_millis(1)), 11);
    }

    #[test]
    fn a_run_sends_rate_times_span_requests() {
        let schedule = Schedule::new(1000.0).unwrap();
        assert_eq!(schedule.count_within(Duration::from_secs(5)), 5000);
        assert_eq!(schedule.count_within(Duration::ZERO), 0);
        let odd = Schedule::new(3.0).unwrap();
        // Due at 0, 1/3 and 2/3 s: three within one second, one within 0.1 s.
        assert_eq!(odd.count_within(Duration::from_secs(1)), 3);
        assert_eq!(odd.count_within(Duration::from_millis(100)), 1);
    }

    #[test]
    fn rates_must_be_positive_and_finite() {
        assert!(Schedule::new(0.0).is_none());
        assert!(Schedule::new(-5.0).is_none());
        assert!(Schedule::new(f64::INFINITY).is_none());
        assert!(Schedule::new(f64::NAN).is_none());
        assert_eq!(Schedule::new(2.5).map(|s| s.rate), Some(2.5));
    }
}
