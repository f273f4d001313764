//! Outlier ejection per replica, on the orchestrator's own evidence: the
//! calls it makes, not only the health checks between them.
//!
//! The semantics are Envoy's outlier detection:
//! - a replica is ejected after `consecutive_failures` failures in a row,
//!   or when at least `min_calls` calls in one `window` failed at a share of
//!   `failure_rate` or more;
//! - it stays out for `base_time` times the number of its ejections
//!   (capped at `max_time`); each `base_time` it then stays in takes one
//!   ejection off its count, so a replica that failed once long ago starts
//!   again from the base time;
//! - no more than `max_share` of a model's replicas (at least one) are out
//!   at a time, and never the last one that can serve;
//! - when its time is up, or as soon as a health check finds a replica that
//!   was down serving again, it is half-open: the next call is sent to it
//!   alone, as a probe; if it answers the replica is back, otherwise it is
//!   ejected again for longer.
//!
//! What counts: failures the model caused (unreachable, an internal error,
//! a timeout). A refusal of the input, back-pressure (`RESOURCE_EXHAUSTED`
//! says the replica is busy, not broken) and a caller who left say nothing
//! of the replica.
//!
//! Readers on the request path check one atomic flag; the evidence behind
//! it sits under a short lock per replica, never held across an await.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::SettingError;

/// Settings of outlier ejection: the `[ejection]` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EjectionSettings {
    /// Failures in a row that eject a replica; 0 turns this rule off.
    pub consecutive_failures: u32,
    /// The share of failed calls in one window that ejects a replica, in
    /// (0, 1].
    pub failure_rate: f64,
    /// Calls a window needs before its failure rate counts; 0 turns the
    /// failure-rate rule off.
    pub min_calls: u32,
    /// The window the failure rate is measured over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a first ejection lasts; later ones last a multiple of it.
    #[serde(with = "humantime_serde")]
    pub base_time: Duration,
    /// The longest an ejection lasts.
    #[serde(with = "humantime_serde")]
    pub max_time: Duration,
    /// The largest share of a model's replicas out at once, in [0, 1]; at
    /// least one may always be ejected while another can serve.
    pub max_share: f64,
}

impl Default for EjectionSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(10),
            base_time: Duration::from_secs(10),
            max_time: Duration::from_secs(300),
            max_share: 0.5,
        }
    }
}

impl EjectionSettings {
    /// Checks the ranges the types do not.
    pub fn validate(&self) -> Result<(), SettingError> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(SettingError::new(
                "failure_rate",
                "must be above 0 and at most 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.max_share) {
            return Err(SettingError::new("max_share", "must be within 0 and 1"));
        }
        if self.window.is_zero() {
            return Err(SettingError::new("window", "must be longer than zero"));
        }
        if self.base_time.is_zero() {
            return Err(SettingError::new("base_time", "must be longer than zero"));
        }
        if self.max_time < self.base_time {
            return Err(SettingError::new(
                "max_time",
                "must be at least `base_time`",
            ));
        }
        Ok(())
    }

    /// How many of `replicas` may be out at once.
    pub(crate) fn most_ejected(&self, replicas: usize) -> usize {
        // The product of a share in [0, 1] and a small count: the cast
        // neither truncates a large value nor sees a negative one.
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let share = (self.max_share * replicas as f64).floor() as usize;
        share.max(1)
    }
}

/// What one call says of the replica that served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It answered.
    Answered,
    /// It failed in a way that is the replica's doing.
    Failed,
    /// Nothing: the request was refused, the replica was busy, or the
    /// caller left.
    Neither,
}

/// Where a replica stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Taking calls.
    In,
    /// Out until then.
    Out { until: Instant },
    /// Half-open: its time is up and one probe call may go to it; `probing`
    /// while that call runs.
    Trial { probing: bool },
}

/// Why a replica was ejected, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// This many failures in a row.
    InARow(u32),
    /// This many of this many calls in a window failed.
    Rate { failed: u32, calls: u32 },
    /// The probe call failed.
    Probe,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InARow(failures) => write!(f, "{failures} failures in a row"),
            Self::Rate { failed, calls } => write!(f, "{failed} of {calls} calls failed"),
            Self::Probe => f.write_str("its probe call failed"),
        }
    }
}

/// A replica's record: what its calls said, and whether it is out.
#[derive(Debug, Clone)]
pub(crate) struct Evidence {
    standing: Standing,
    in_a_row: u32,
    window_start: Option<Instant>,
    calls: u32,
    failures: u32,
    /// Ejections not yet forgiven: the multiplier of the next one's length.
    ejections: u32,
    /// When it last came back in.
    back_since: Option<Instant>,
}

impl Default for Evidence {
    fn default() -> Self {
        Self {
            standing: Standing::In,
            in_a_row: 0,
            window_start: None,
            calls: 0,
            failures: 0,
            ejections: 0,
            back_since: None,
        }
    }
}

/// How a replica may take the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// As any call.
    Open,
    /// As the probe of a half-open replica; it is due now.
    Probe,
    /// Not at all: it is out, or its probe is running.
    Closed,
}

impl Evidence {
    /// Whether the replica is ejected or half-open.
    pub(crate) fn is_out(&self) -> bool {
        self.standing != Standing::In
    }

    /// How the replica may take a call at `now`; its time out ending makes
    /// it half-open.
    pub(crate) fn admission(&mut self, now: Instant) -> Admission {
        match self.standing {
            Standing::In => Admission::Open,
            Standing::Out { until } if now >= until => {
                self.standing = Standing::Trial { probing: false };
                Admission::Probe
            }
            Standing::Trial { probing: false } => Admission::Probe,
            Standing::Out { .. } | Standing::Trial { probing: true } => Admission::Closed,
        }
    }

    /// Marks the probe as running, once [`admission`](Self::admission) said
    /// it is due.
    pub(crate) fn start_probe(&mut self) {
        if self.standing == (Standing::Trial { probing: false }) {
            self.standing = Standing::Trial { probing: true };
        }
    }

    /// Frees the probe slot when the probe call ended without a verdict.
    pub(crate) fn abandon_probe(&mut self) {
        if self.standing == (Standing::Trial { probing: true }) {
            self.standing = Standing::Trial { probing: false };
        }
    }

    /// Makes an ejected replica half-open at once: a health check found it
    /// serving again after it was down, so it need not sit out its time.
    pub(crate) fn readmit(&mut self) {
        if let Standing::Out { .. } = self.standing {
            self.standing = Standing::Trial { probing: false };
        }
    }

    /// Records one call's verdict. Returns why the replica is to be ejected,
    /// if it is; the caller decides whether it may be, and then calls
    /// [`eject`](Self::eject).
    pub(crate) fn record(
        &mut self,
        verdict: Verdict,
        now: Instant,
        settings: &EjectionSettings,
    ) -> Option<Cause> {
        if let Standing::Trial { probing: true } = self.standing {
            return match verdict {
                Verdict::Answered => {
                    self.come_back(now);
                    None
                }
                Verdict::Failed => Some(Cause::Probe),
                Verdict::Neither => {
                    self.abandon_probe();
                    None
                }
            };
        }
        // Calls that were running when the replica went out end after it:
        // they are not evidence for its next trial.
        if self.standing != Standing::In || verdict == Verdict::Neither {
            return None;
        }
        if self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= settings.window)
        {
            self.window_start = Some(now);
            self.calls = 0;
            self.failures = 0;
        }
        self.calls += 1;
        if verdict == Verdict::Answered {
            self.in_a_row = 0;
            return None;
        }
        self.failures += 1;
        self.in_a_row += 1;
        if settings.consecutive_failures > 0 && self.in_a_row >= settings.consecutive_failures {
            return Some(Cause::InARow(self.in_a_row));
        }
        let rate = f64::from(self.failures) / f64::from(self.calls);
        (settings.min_calls > 0
            && self.calls >= settings.min_calls
            && rate >= settings.failure_rate)
            .then_some(Cause::Rate {
                failed: self.failures,
                calls: self.calls,
            })
    }

    /// Ejects the replica at `now`; returns for how long.
    pub(crate) fn eject(&mut self, now: Instant, settings: &EjectionSettings) -> Duration {
        if let Some(back) = self.back_since {
            let periods = now.saturating_duration_since(back).as_nanos()
                / settings.base_time.as_nanos().max(1);
            self.ejections = self
                .ejections
                .saturating_sub(u32::try_from(periods).unwrap_or(u32::MAX));
        }
        self.ejections = self.ejections.saturating_add(1);
        let time = settings
            .base_time
            .saturating_mul(self.ejections)
            .min(settings.max_time);
        self.standing = Standing::Out { until: now + time };
        self.back_since = None;
        self.reset_window();
        time
    }

    /// Takes the replica back in, its evidence cleared.
    pub(crate) fn come_back(&mut self, now: Instant) {
        self.standing = Standing::In;
        self.back_since = Some(now);
        self.reset_window();
    }

    /// Clears what the calls said, leaving the replica where it stands.
    pub(crate) fn start_over(&mut self) {
        self.reset_window();
    }

    fn reset_window(&mut self) {
        self.in_a_row = 0;
        self.window_start = None;
        self.calls = 0;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EjectionSettings {
        EjectionSettings::default()
    }

    #[test]
    fn five_failures_in_a_row_eject_and_an_answer_in_between_does_not() {
        let now = Instant::now();
        let mut evidence = Evidence::default();
        for _ in 0..4 {
            assert_eq!(evidence.record(Verdict::Failed, now, &settings()), None);
        }
        assert_eq!(evidence.record(Verdict::Answered, now, &settings()), None);
        for _ in 0..4 {
            assert_eq!(evidence.record(Verdict::Failed, now, &settings()), None);
        }
        assert_eq!(
            evidence.record(Verdict::Failed, now, &settings()),
            Some(Cause::InARow(5))
        );
    }

    #[test]
    fn half_the_calls_of_a_window_failing_ejects() {
        let now = Instant::now();
        let mut evidence = Evidence::default();
        let mut cause = None;
        for i in 0..10 {
            let verdict = if i % 2 == 1 {
                Verdict::Failed
            } else {
                Verdict::Answered
            };
            cause = evidence.record(verdict, now, &settings());
        }
        assert_eq!(
            cause,
            Some(Cause::Rate {
                failed: 5,
                calls: 10
            })
        );
    }

    #[test]
    fn refusals_and_busy_answers_say_nothing() {
        let now = Instant::now();
        let mut evidence = Evidence::default();
        for _ in 0..50 {
            assert_eq!(evidence.record(Verdict::Neither, now, &settings()), None);
        }
        assert_eq!(evidence.calls, 0);
    }

    #[test]
    fn an_ejection_lasts_longer_each_time_and_is_forgiven_in_time() {
        let settings = settings();
        let start = Instant::now();
        let mut evidence = Evidence::default();
        assert_eq!(evidence.eject(start, &settings), Duration::from_secs(10));
        evidence.come_back(start);
        assert_eq!(evidence.eject(start, &settings), Duration::from_secs(20));
        evidence.come_back(start);
        // Two base times in: both earlier ejections are forgiven.
        let later = start + Duration::from_secs(25);
        assert_eq!(evidence.eject(later, &settings), Duration::from_secs(10));
        evidence.ejections = 1_000;
        assert_eq!(evidence.eject(later, &settings), settings.max_time);
    }

    #[test]
    fn an_ejected_replica_takes_one_probe_when_its_time_is_up() {
        let settings = settings();
        let start = Instant::now();
        let mut evidence = Evidence::default();
        let time = evidence.eject(start, &settings);
        assert_eq!(evidence.admission(start), Admission::Closed);
        let due = start + time;
        assert_eq!(evidence.admission(due), Admission::Probe);
        evidence.start_probe();
        assert_eq!(
            evidence.admission(due),
            Admission::Closed,
            "one probe at a time"
        );
        assert_eq!(evidence.record(Verdict::Answered, due, &settings), None);
        assert_eq!(evidence.admission(due), Admission::Open);
        assert!(!evidence.is_out());
    }

    #[test]
    fn a_failed_probe_asks_for_a_longer_ejection() {
        let settings = settings();
        let start = Instant::now();
        let mut evidence = Evidence::default();
        let first = evidence.eject(start, &settings);
        let due = start + first;
        assert_eq!(evidence.admission(due), Admission::Probe);
        evidence.start_probe();
        assert_eq!(
            evidence.record(Verdict::Failed, due, &settings),
            Some(Cause::Probe)
        );
        assert_eq!(evidence.eject(due, &settings), first * 2);
    }

    #[test]
    fn a_probe_that_ends_without_a_verdict_frees_the_trial() {
        let settings = settings();
        let start = Instant::now();
        let mut evidence = Evidence::default();
        evidence.eject(start, &settings);
        evidence.readmit();
        assert_eq!(evidence.admission(start), Admission::Probe);
        evidence.start_probe();
        assert_eq!(evidence.record(Verdict::Neither, start, &settings), None);
        assert_eq!(evidence.admission(start), Admission::Probe);
    }

    #[test]
    fn at_least_one_replica_may_be_out() {
        let settings = settings();
        assert_eq!(settings.most_ejected(1), 1);
        assert_eq!(settings.most_ejected(2), 1);
        assert_eq!(settings.most_ejected(5), 2);
        let none = EjectionSettings {
            max_share: 0.0,
            ..settings
        };
        assert_eq!(none.most_ejected(4), 1);
    }
}
