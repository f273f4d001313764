//! What a chaos run's calls add up to: how many were sent, succeeded,
//! failed (by gRPC code) or went unanswered, the retries grymd made, when
//! the failures were due, and which model took the first attempt.
//!
//! Pure: it reads the calls and counts, so it is tested without processes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::calls::{Answer, Call};

/// The retry budget at grymd's defaults (`[retries] budget_ratio`): retries
/// may be at most this share of calls...
pub(crate) const BUDGET_RATIO: f64 = 0.2;
/// ...plus this many a second per model (`[retries] min_per_second`).
pub(crate) const BUDGET_FLOOR_PER_S: f64 = 10.0;

/// The sums of one run's calls.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Tally {
    /// Calls sent.
    pub(crate) sent: u64,
    /// Calls whose result succeeded.
    pub(crate) succeeded: u64,
    /// Calls that failed, by gRPC code: a result's error code as it is
    /// (`UNAVAILABLE`), a failed call's own status as `CODE (rpc)`.
    pub(crate) failed: BTreeMap<String, u64>,
    /// Calls without an answer within their deadline and the grace.
    pub(crate) unanswered: u64,
    /// Attempts beyond the first, summed over every result.
    pub(crate) retries: u64,
    /// When the first and the last failed or unanswered call were due,
    /// in seconds from the start.
    pub(crate) failing_s: Option<(f64, f64)>,
    /// Where first attempts went, when the run asks.
    pub(crate) first_choice: Option<FirstChoice>,
}

/// How many calls after the first few went first to one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct FirstChoice {
    /// The model.
    pub(crate) model: String,
    /// Calls left out at the start, in the order they were due.
    pub(crate) after: usize,
    /// Calls after those whose first attempt went to the model.
    pub(crate) chosen: u64,
    /// Calls after those.
    pub(crate) of: u64,
}

impl FirstChoice {
    /// `chosen / of`, in [0, 1]; 0 with no calls.
    pub(crate) fn share(&self) -> f64 {
        if self.of == 0 {
            0.0
        } else {
            self.chosen as f64 / self.of as f64
        }
    }
}

impl Tally {
    /// Sums `calls`, in the order they were due; with `first_choice`
    /// `(model, after)`, also counts the calls after the first `after` whose
    /// first attempt went to `model` (a call without a result counts as not).
    pub(crate) fn of(calls: &[Call], first_choice: Option<(&str, usize)>) -> Self {
        let mut tally = Self {
            sent: calls.len() as u64,
            succeeded: 0,
            failed: BTreeMap::new(),
            unanswered: 0,
            retries: 0,
            failing_s: None,
            first_choice: None,
        };
        for call in calls {
            let failed = match &call.answer {
                Answer::Result { failure, attempts } => {
                    tally.retries += attempts.len().saturating_sub(1) as u64;
                    match failure {
                        None => tally.succeeded += 1,
                        Some(code) => *tally.failed.entry(code.clone()).or_default() += 1,
                    }
                    failure.is_some()
                }
                Answer::Status { code } => {
                    *tally.failed.entry(format!("{code} (rpc)")).or_default() += 1;
                    true
                }
                Answer::Unanswered => {
                    tally.unanswered += 1;
                    true
                }
            };
            if failed {
                let due = call.due.as_secs_f64();
                tally.failing_s = Some(
                    tally
                        .failing_s
                        .map_or((due, due), |(first, _)| (first, due)),
                );
            }
        }
        tally.first_choice = first_choice.map(|(model, after)| {
            let later = calls.get(after..).unwrap_or_default();
            FirstChoice {
                model: model.to_owned(),
                after,
                chosen: later
                    .iter()
                    .filter(|call| {
                        matches!(&call.answer, Answer::Result { attempts, .. }
                            if attempts.first().is_some_and(|first| first == model))
                    })
                    .count() as u64,
                of: later.len() as u64,
            }
        });
        tally
    }

    /// Calls that failed, all codes together.
    pub(crate) fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// The retry budget at grymd's defaults over a run of `seconds` with
    /// `models` models.
    pub(crate) fn budget(&self, seconds: f64, models: usize) -> f64 {
        BUDGET_RATIO * self.sent as f64 + BUDGET_FLOOR_PER_S * seconds * models as f64
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn call(due_ms: u64, answer: Answer) -> Call {
        Call {
            due: Duration::from_millis(due_ms),
            answer,
        }
    }

    fn result(failure: Option<&str>, attempts: &[&str]) -> Answer {
        Answer::Result {
            failure: failure.map(str::to_owned),
            attempts: attempts.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    #[test]
    fn calls_are_counted_by_outcome_and_retries_by_extra_attempts() {
        let calls = [
            call(0, result(None, &["sim"])),
            call(100, result(None, &["sim", "sim"])),
            call(200, result(Some("UNAVAILABLE"), &["sim", "sim", "sim"])),
            call(
                300,
                Answer::Status {
                    code: "UNAVAILABLE".to_owned(),
                },
            ),
            call(400, Answer::Unanswered),
            call(500, result(None, &["sim"])),
        ];
        let tally = Tally::of(&calls, None);
        assert_eq!(tally.sent, 6);
        assert_eq!(tally.succeeded, 3);
        assert_eq!(
            tally.failed,
            BTreeMap::from([
                ("UNAVAILABLE".to_owned(), 1),
                ("UNAVAILABLE (rpc)".to_owned(), 1)
            ])
        );
        assert_eq!(tally.failures(), 2);
        assert_eq!(tally.unanswered, 1);
        assert_eq!(tally.retries, 3);
        assert_eq!(tally.failing_s, Some((0.2, 0.4)));
        assert_eq!(tally.first_choice, None);
    }

    #[test]
    fn a_run_without_failures_has_no_failing_span() {
        let tally = Tally::of(&[call(0, result(None, &["sim"]))], None);
        assert_eq!(tally.failing_s, None);
        assert_eq!(tally.failures(), 0);
    }

    #[test]
    fn first_choices_are_counted_after_the_first_calls_only() {
        let mut calls = vec![call(0, result(Some("DEADLINE_EXCEEDED"), &["hung"])); 3];
        calls.push(call(0, result(None, &["backup"])));
        calls.push(call(0, result(Some("DEADLINE_EXCEEDED"), &["hung"])));
        calls.push(call(0, Answer::Unanswered));
        calls.push(call(0, result(None, &["backup", "hung"])));
        let tally = Tally::of(&calls, Some(("backup", 3)));
        let choice = tally.first_choice.unwrap();
        assert_eq!((choice.chosen, choice.of), (2, 4));
        assert!((choice.share() - 0.5).abs() < 1e-12);
        let none = Tally::of(&calls[..2], Some(("backup", 3))).first_choice;
        assert_eq!(none.map(|c| (c.of, c.share())), Some((0, 0.0)));
    }

    #[test]
    fn the_budget_is_a_share_of_calls_plus_a_floor_per_model_and_second() {
        let calls = vec![call(0, result(None, &["sim"])); 10_000];
        let tally = Tally::of(&calls, None);
        assert!((tally.budget(20.0, 1) - 2_200.0).abs() < 1e-9);
        assert!((tally.budget(20.0, 2) - 2_400.0).abs() < 1e-9);
    }
}
