//! Step 5 and 7 of a task's way: calling the models of a plan, in order,
//! and feeding every outcome back into the statistics.
//!
//! A failure the request did not cause moves on while the caller's
//! deadline allows:
//! - one that another replica may not share (`UNAVAILABLE`, the worker at
//!   capacity, an aborted call) is tried again on another replica of the
//!   same model first, holding the same slot;
//! - then, and for every other such failure (a crash inside the model, a
//!   timeout), on the next model of the plan.
//!
//! A failure the request caused (the worker refused the input) ends the
//! task, since another model would refuse it too. Each call has its own
//! `worker_timeout` within the caller's deadline.
//!
//! Every call beyond a task's first is a retry: it waits a backoff that
//! doubles with each retry (with jitter), and it is made only while the
//! retry budget of the model whose failure it answers has room
//! ([`RetryBudget`](crate::registry::budget)); when the budget is spent,
//! the task ends with the failure it has. For task types `[hedging]`
//! names, a call still running after the model's usual latency is hedged
//! ([`hedge`](super::hedge)).
//!
//! Every call's outcome reaches the model's statistics before the next
//! selection reads them, and the replica's record, which may eject it
//! ([`outlier`](crate::registry::outlier)). A refusal of the input says
//! nothing of the model; nor does a call the caller's deadline cut short
//! before it had run as long as the model's slowest usual answers
//! ([`usual_latency`](Self::usual_latency)). One cut after that counts as a timeout that took at least as long as it ran, so a model
//! that hangs or turns slow loses traffic although each of its callers
//! gave up first.
//!
//! A call that could not finish in the time left (less than the model is
//! expected to take) is never sent: the model is skipped, unsent and
//! unrecorded, for a fallback that fits, and the task ends
//! `DEADLINE_EXCEEDED` when none does.
//!
//! One call, from its prepared context to how it ended, is [`call`](super::call).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Orchestrator;
use super::call::{Call, CallEnd};
use super::hedge::MEASURED_ANSWERS;
use super::job::{Ending, Job, session_entry};
use crate::client::InferCall;
use crate::error::FailureKind;
use crate::ids::ModelId;
use crate::plan::selection::{Candidate, Plan};
use crate::registry::{Chosen, ModelEntry, Replica};
use crate::schedule::queue::QueueKey;
use crate::schedule::slots::Slot;
use crate::task::{Attempt, AttemptOutcome, TaskError, TaskEvent, TaskStatus};

/// What the run of a plan has seen so far.
#[derive(Default)]
struct Trail<'p> {
    /// Calls made (answered or not).
    calls: u32,
    /// Calls beyond the first, hedges included.
    retries: u32,
    /// Models called.
    models: u32,
    last_error: Option<TaskError>,
    /// The model whose failure the next call answers.
    failed: Option<&'p Arc<ModelEntry>>,
    /// Why the last model was not called, if it was not.
    unsent: Option<TaskError>,
}

/// Where a run goes after a call.
enum Next {
    End(Ending),
    /// Another replica of the same model.
    Replica,
    /// The next model of the plan.
    Model,
}

impl Orchestrator {
    /// Tries the plan's models in order until one answers, the failure is
    /// final, or time or the retry budget runs out. The first model's slot
    /// is held already; each fallback waits for a slot of its own.
    pub(super) async fn run(
        &self,
        job: Job<'_>,
        plan: &Plan,
        key: QueueKey,
        first_slot: Slot,
    ) -> Ending {
        let mut first_slot = Some(first_slot);
        let mut trail = Trail::default();
        'models: for candidate in &plan.candidates {
            let held = first_slot.take();
            if job.deadline.has_passed(Instant::now()) {
                break;
            }
            if let Some(error) = self.doomed(job, &candidate.model) {
                trail.unsent = Some(error);
                continue;
            }
            // A model whose every replica went down since planning is
            // skipped, without a retry spent on it.
            if !candidate.model.can_serve(Instant::now(), &[]) {
                continue;
            }
            if let Some(from) = trail.failed {
                if let Err(ending) = self.before_retry(job, &mut trail, "model").await {
                    return ending;
                }
                if let Some(error) = &trail.last_error {
                    self.instruments.fell_back(
                        from.id(),
                        candidate.model.id(),
                        (self.failure_names)(error.kind),
                    );
                }
            }
            let _slot = match held {
                Some(slot) => slot,
                None => match self
                    .wait_slot(&candidate.model, &job.task.task_type, key, job.deadline)
                    .await
                {
                    Ok(slot) => {
                        // The wait took time: the call may no longer fit.
                        if let Some(error) = self.doomed(job, &candidate.model) {
                            trail.unsent = Some(error);
                            continue;
                        }
                        slot
                    }
                    Err(ending) => return ending,
                },
            };
            trail.unsent = None;
            let mut tried: Vec<Arc<Replica>> = Vec::new();
            loop {
                let Some(chosen) = candidate.model.choose_replica(Instant::now(), &tried) else {
                    continue 'models;
                };
                match self
                    .attempt(job, candidate, chosen, &mut tried, &mut trail)
                    .await
                {
                    Next::End(ending) => return ending,
                    Next::Model => continue 'models,
                    Next::Replica => {}
                }
                if !candidate.model.can_serve(Instant::now(), &tried) {
                    continue 'models;
                }
                if let Err(ending) = self.before_retry(job, &mut trail, "replica").await {
                    return ending;
                }
                if let Some(error) = self.doomed(job, &candidate.model) {
                    trail.unsent = Some(error);
                    continue 'models;
                }
            }
        }
        self.ran_out(job, trail)
    }

    /// The ending of a run that tried every model it could.
    fn ran_out(&self, job: Job<'_>, trail: Trail<'_>) -> Ending {
        if let Some(error) = trail.unsent {
            return Ending::with_error(TaskStatus::DeadlineExceeded, error);
        }
        let calls = trail.calls;
        if job.deadline.has_passed(Instant::now()) {
            return Ending::failed(
                TaskStatus::DeadlineExceeded,
                FailureKind::DeadlineExceeded,
                format!("the deadline passed after {calls} call(s)"),
            );
        }
        let models = trail.models;
        let error = match trail.last_error {
            Some(last) if calls > 1 && calls == models => TaskError::new(
                last.kind,
                format!(
                    "all {models} models tried failed; the last: {}",
                    last.message
                ),
            ),
            Some(last) if calls > 1 => TaskError::new(
                last.kind,
                format!(
                    "all {calls} calls, to {models} model(s), failed; the last: {}",
                    last.message
                ),
            ),
            Some(last) => last,
            None => TaskError::new(
                FailureKind::Unavailable,
                "no replica of any candidate model was available",
            ),
        };
        Ending::with_error(TaskStatus::Failed, error)
    }

    /// Takes a retry from the budget of the model that failed last and
    /// waits its backoff; ends the task with its last failure when the
    /// budget is spent.
    async fn before_retry(
        &self,
        job: Job<'_>,
        trail: &mut Trail<'_>,
        kind: &'static str,
    ) -> Result<(), Ending> {
        let Some(failed) = trail.failed else {
            return Ok(());
        };
        let now = Instant::now();
        if !failed.budget().withdraw(now, &self.retries) {
            self.instruments.retry_refused(failed.id());
            let last = trail.last_error.take().unwrap_or_else(|| {
                TaskError::new(FailureKind::Unavailable, "the call failed".to_owned())
            });
            tracing::info!(task.id = %job.task.id, model = %failed.id(), "retry budget spent; not retried");
            return Err(Ending::with_error(
                TaskStatus::Failed,
                TaskError::new(
                    last.kind,
                    format!(
                        "{}; not retried: model `{}` has used its retry budget (retries may be {}% of its calls plus {} a second)",
                        last.message,
                        failed.id(),
                        self.retries.budget_ratio * 100.0,
                        self.retries.min_per_second
                    ),
                ),
            ));
        }
        trail.retries += 1;
        self.instruments.retried(failed.id(), kind);
        let wait = self
            .retries
            .backoff_before(trail.retries, rand::random::<f64>());
        let wait = job
            .deadline
            .remaining(now)
            .map_or(wait, |left| wait.min(left));
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Why `model` is not to be called now, if it is not: the time left
    /// before the task's deadline is less than a call is expected to take
    /// ([`expected_latency`](Self::expected_latency)). Such a call is never
    /// sent, so it says nothing of the model. A composite's step is left to
    /// the composite's own rule: its deadline is a share of the
    /// composite's, which it may overrun.
    fn doomed(&self, job: Job<'_>, model: &ModelEntry) -> Option<TaskError> {
        if job.step.is_some() {
            return None;
        }
        let now = Instant::now();
        let left = job.deadline.remaining(now)?;
        let expected = self.expected_latency(model, &job.task.task_type, now)?;
        (left < expected).then(|| {
            TaskError::new(
                FailureKind::DeadlineExceeded,
                format!(
                    "not sent to model `{}`: {} ms were left before the deadline, less than the ~{} ms it is expected to take",
                    model.id(),
                    left.as_millis(),
                    expected.as_millis()
                ),
            )
        })
    }

    /// A call's outcome, and its error when it did not succeed.
    fn attempt_error(&self, end: &CallEnd, model: &ModelId) -> (AttemptOutcome, Option<TaskError>) {
        match end {
            CallEnd::Answered(_) => (AttemptOutcome::Succeeded, None),
            CallEnd::Failed(error) => (
                if error.kind == FailureKind::DeadlineExceeded {
                    AttemptOutcome::TimedOut
                } else {
                    AttemptOutcome::Failed
                },
                Some(TaskError::new(
                    error.kind,
                    format!("model `{model}` failed: {}", error.message),
                )),
            ),
            CallEnd::CallerDeadline => (
                AttemptOutcome::TimedOut,
                Some(TaskError::new(
                    FailureKind::DeadlineExceeded,
                    format!("the deadline passed while model `{model}` was running"),
                )),
            ),
            CallEnd::WorkerTimeout => (
                AttemptOutcome::TimedOut,
                Some(TaskError::new(
                    FailureKind::DeadlineExceeded,
                    format!(
                        "model `{model}` did not answer within {:?}",
                        self.worker_timeout
                    ),
                )),
            ),
        }
    }

    /// One attempt on one replica of a candidate: its context prepared,
    /// the call made (and hedged when its task type is), and what came of
    /// it recorded.
    async fn attempt<'p>(
        &self,
        job: Job<'_>,
        candidate: &'p Candidate,
        chosen: Chosen,
        tried: &mut Vec<Arc<Replica>>,
        trail: &mut Trail<'p>,
    ) -> Next {
        if tried.is_empty() {
            trail.models += 1;
        }
        tried.push(Arc::clone(&chosen.replica));
        let span = self.attempt_span(job, candidate, &chosen, false);
        let call = match self.prepare(job, candidate, &span).await {
            Ok(call) => call,
            Err(end) => {
                span.record("grym.attempt.outcome", end.label());
                let call = Call {
                    end,
                    latency: Duration::ZERO,
                    overran: false,
                    replica: Arc::clone(&chosen.replica),
                    hedge: false,
                    _in_flight: None,
                };
                return self.conclude(job, candidate, call, trail).await;
            }
        };
        let now = Instant::now();
        if trail.calls == 0 {
            candidate.model.budget().deposit(now);
        }
        match self.hedge_delay(job, candidate, &chosen) {
            None => {
                let done = self.call(job, candidate, chosen, call, (span, false)).await;
                self.conclude(job, candidate, done, trail).await
            }
            Some(delay) => {
                let first = (Arc::clone(&chosen.replica), Instant::now());
                let hedge = call.clone();
                let call = self.call(job, candidate, chosen, call, (span, false));
                self.hedged(job, candidate, call, first, hedge, delay, tried, trail)
                    .await
            }
        }
    }

    /// How long to wait before hedging a call to `chosen`, when the task
    /// type is hedged and another replica could take the hedge.
    fn hedge_delay(
        &self,
        job: Job<'_>,
        candidate: &Candidate,
        chosen: &Chosen,
    ) -> Option<Duration> {
        let model = &candidate.model;
        if chosen.probe || model.replicas().len() < 2 || !self.hedging.hedges(&job.task.task_type) {
            return None;
        }
        let task_type = &job.task.task_type;
        let stats = self
            .planner
            .selector
            .stats(model, task_type, Instant::now());
        let usual = if stats.successes >= MEASURED_ANSWERS {
            stats.p95
        } else {
            model.description().capability(task_type)?.estimated_latency
        };
        Some(usual.max(self.hedging.min_delay))
    }

    /// A call raced by a hedge on another replica once `delay` passes
    /// without an answer: the first answer wins and the other call is
    /// cancelled; a failure waits for the other call. The hedge takes a
    /// retry from the model's budget, and is not sent without one.
    #[expect(clippy::too_many_arguments)]
    async fn hedged<'p>(
        &self,
        job: Job<'_>,
        candidate: &'p Candidate,
        first: impl Future<Output = Call>,
        (first_replica, first_started): (Arc<Replica>, Instant),
        call: InferCall,
        delay: Duration,
        tried: &mut Vec<Arc<Replica>>,
        trail: &mut Trail<'p>,
    ) -> Next {
        let model = &candidate.model;
        let mut first = std::pin::pin!(first);
        tokio::select! {
            done = &mut first => return self.conclude(job, candidate, done, trail).await,
            () = tokio::time::sleep(delay) => {}
        }
        let now = Instant::now();
        if !model.can_serve(now, tried) || !model.budget().withdraw(now, &self.retries) {
            let done = first.await;
            return self.conclude(job, candidate, done, trail).await;
        }
        let Some(chosen) = model.choose_replica(now, tried) else {
            let done = first.await;
            return self.conclude(job, candidate, done, trail).await;
        };
        trail.retries += 1;
        self.instruments.retried(model.id(), "hedge");
        tried.push(Arc::clone(&chosen.replica));
        let second_replica = Arc::clone(&chosen.replica);
        let second_started = Instant::now();
        let span = self.attempt_span(job, candidate, &chosen, true);
        let mut second = std::pin::pin!(self.call(job, candidate, chosen, call, (span, true)));
        let (done, first_won) = tokio::select! {
            done = &mut first => (done, true),
            done = &mut second => (done, false),
        };
        let (other_replica, other_started, other_hedge) = if first_won {
            (second_replica, second_started, true)
        } else {
            (first_replica, first_started, false)
        };
        let answered = matches!(done.end, CallEnd::Answered(_));
        let next = self.conclude(job, candidate, done, trail).await;
        if answered || matches!(next, Next::End(_)) {
            self.abandoned(job, model, &other_replica, other_started, other_hedge);
            return next;
        }
        let other = if first_won { second.await } else { first.await };
        self.conclude(job, candidate, other, trail).await
    }

    /// Records the call of a hedged pair that lost: it is cancelled as the
    /// caller drops it, and says nothing of the model.
    fn abandoned(
        &self,
        job: Job<'_>,
        model: &ModelEntry,
        replica: &Replica,
        started: Instant,
        hedge: bool,
    ) {
        let attempt = Attempt {
            model_id: model.id().clone(),
            outcome: AttemptOutcome::Abandoned,
            latency: started.elapsed(),
            error: None,
            step: job.step.cloned(),
            endpoint: replica.endpoint().to_owned(),
            hedge,
        };
        job.live
            .update(|snapshot| snapshot.metrics.attempts.push(attempt.clone()));
        job.emit(|| TaskEvent::AttemptFinished(attempt));
    }

    /// Feeds a call's outcome to the statistics and the replica's record,
    /// adds it to the task's attempts, and says where the run goes next.
    async fn conclude<'p>(
        &self,
        job: Job<'_>,
        candidate: &'p Candidate,
        call: Call,
        trail: &mut Trail<'p>,
    ) -> Next {
        trail.calls += 1;
        let model = &candidate.model;
        let now = Instant::now();
        if let Some(outcome) = call.end.feedback(call.overran) {
            tracing::debug_span!("feedback", grym.model = %model.id(), grym.outcome = ?outcome)
                .in_scope(|| {
                    self.planner.selector.record(
                        model,
                        &job.task.task_type,
                        now,
                        outcome,
                        call.latency,
                    );
                    self.share(model.id(), &job.task.task_type, outcome, call.latency);
                });
        }
        if let Some(ejection) = model.judge(
            &call.replica,
            call.end.verdict(call.overran),
            now,
            &self.ejection,
        ) {
            tracing::warn!(
                model = %model.id(),
                endpoint = call.replica.endpoint(),
                cause = %ejection.cause,
                seconds = ejection.time.as_secs_f64(),
                "replica ejected",
            );
            self.instruments
                .ejected(model.id(), call.replica.endpoint());
        }
        let (outcome, error) = self.attempt_error(&call.end, model.id());
        let attempt = Attempt {
            model_id: model.id().clone(),
            outcome,
            latency: call.latency,
            error: error.clone(),
            step: job.step.cloned(),
            endpoint: call.replica.endpoint().to_owned(),
            hedge: call.hedge,
        };
        job.live.update(|snapshot| {
            snapshot.metrics.worker_latency += call.latency;
            snapshot.metrics.attempts.push(attempt.clone());
            snapshot.model_id = Some(model.id().clone());
        });
        job.emit(|| TaskEvent::AttemptFinished(attempt));
        let another_replica = call.end.worth_another_replica();
        let error = match (call.end, error) {
            (CallEnd::Answered(output), _) => {
                // A composite's steps read the session but do not write
                // it: each sees only the steps it waits for, and the
                // composite records its one output at its end.
                if let Some(session) = job.task.session_id.as_ref().filter(|_| job.step.is_none()) {
                    self.keep_in_session(
                        &job.task.tenant,
                        session,
                        model.description().kind.clone(),
                        session_entry(job.task, model.id(), &output),
                    )
                    .await;
                }
                return Next::End(Ending::succeeded(Some(output), None));
            }
            (CallEnd::CallerDeadline, Some(error)) => {
                return Next::End(Ending::with_error(TaskStatus::DeadlineExceeded, error));
            }
            (CallEnd::Failed(failure), Some(error)) if failure.kind.blames_request() => {
                return Next::End(Ending::with_error(TaskStatus::Failed, error));
            }
            (_, error) => error,
        };
        if let Some(error) = &error {
            tracing::info!(task.id = %job.task.id, model = %model.id(), endpoint = call.replica.endpoint(), code = (self.failure_names)(error.kind), "call failed; trying again elsewhere if allowed");
        }
        trail.last_error = error;
        trail.failed = Some(model);
        if another_replica {
            Next::Replica
        } else {
            Next::Model
        }
    }
}
