//! Step 5 and 7 of a task's way: calling the models of a plan, in order,
//! and feeding every outcome back into the statistics.
//!
//! A failure the request did not cause (unavailable, overloaded, timed out,
//! a crash inside the model) moves on to the next model while the caller's
//! deadline allows; a failure the request caused (the worker refused the
//! input) ends the task, since another model would refuse it too. Each
//! attempt has its own `worker_timeout` within the caller's deadline. Every
//! attempt's outcome reaches the model's statistics before the next
//! selection reads them, except a refusal of the input and a call the
//! caller's deadline cut short, which say nothing of the model.
//!
//! A call that could not finish in the time left (less than the model is
//! expected to take) is never sent: the model is skipped, unsent and
//! unrecorded, for a fallback that fits, and the task ends
//! `DEADLINE_EXCEEDED` when none does.

use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::Orchestrator;
use super::job::{Ending, Job, session_entry};
use crate::client::{InferCall, WorkerError};
use crate::deadline::Deadline;
use crate::error::FailureKind;
use crate::ids::ModelId;
use crate::limits::{Limits, object_depth};
use crate::plan::selection::{Candidate, Plan};
use crate::registry::{CallOutcome, ModelEntry};
use crate::schedule::queue::QueueKey;
use crate::schedule::slots::Slot;
use crate::task::{Attempt, AttemptOutcome, TaskError, TaskEvent, TaskStatus};

/// How one attempt ended.
enum CallEnd {
    Answered(crate::task::Output),
    Failed(WorkerError),
    /// The caller's own deadline passed.
    CallerDeadline,
    /// The orchestrator's worker timeout passed.
    WorkerTimeout,
}

impl CallEnd {
    /// What the attempt says of the model, if anything.
    fn feedback(&self) -> Option<CallOutcome> {
        match self {
            Self::Answered(_) => Some(CallOutcome::Success),
            Self::Failed(error) if error.kind.blames_request() => None,
            Self::Failed(error) if error.kind == FailureKind::DeadlineExceeded => {
                Some(CallOutcome::Timeout)
            }
            Self::Failed(_) => Some(CallOutcome::Failure),
            // The caller's deadline cut the call short: that says nothing of
            // the model.
            Self::CallerDeadline => None,
            Self::WorkerTimeout => Some(CallOutcome::Timeout),
        }
    }

    /// The attempt's outcome as metrics name it.
    fn label(&self) -> &'static str {
        match self {
            Self::Answered(_) => "success",
            Self::Failed(error) if error.kind.blames_request() => "rejected",
            Self::Failed(_) => "failure",
            Self::CallerDeadline | Self::WorkerTimeout => "timeout",
        }
    }
}

impl Orchestrator {
    /// Tries the plan's models in order until one answers, the failure is
    /// final, or time runs out. The first model's slot is held already;
    /// each fallback waits for a slot of its own.
    pub(super) async fn run(
        &self,
        job: Job<'_>,
        plan: &Plan,
        key: QueueKey,
        first_slot: Slot,
    ) -> Ending {
        let mut first_slot = Some(first_slot);
        let mut last_error: Option<TaskError> = None;
        let mut tried = 0_usize;
        // The model that failed last, for the fallback count.
        let mut failed: Option<&ModelId> = None;
        // Why the last model was not called, if it was not.
        let mut unsent: Option<TaskError> = None;
        for candidate in &plan.candidates {
            let held = first_slot.take();
            if job.deadline.has_passed(Instant::now()) {
                break;
            }
            if let Some(error) = self.doomed(job, &candidate.model) {
                unsent = Some(error);
                continue;
            }
            if let (Some(from), Some(error)) = (failed.take(), &last_error) {
                self.instruments.fell_back(
                    from,
                    candidate.model.id(),
                    (self.failure_names)(error.kind),
                );
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
                            unsent = Some(error);
                            continue;
                        }
                        slot
                    }
                    Err(ending) => return ending,
                },
            };
            unsent = None;
            // A model whose every replica went down since planning is skipped.
            let Some((end, latency)) = self.attempt(job, candidate).await else {
                continue;
            };
            tried += 1;
            let model = &candidate.model;
            if let Some(outcome) = end.feedback() {
                tracing::debug_span!("feedback", model = %model.id(), outcome = ?outcome).in_scope(
                    || {
                        self.planner.selector.record(
                            model,
                            &job.task.task_type,
                            Instant::now(),
                            outcome,
                            latency,
                        );
                        self.share(model.id(), &job.task.task_type, outcome, latency);
                    },
                );
            }
            let (outcome, error) = self.attempt_error(&end, model.id());
            let attempt = Attempt {
                model_id: model.id().clone(),
                outcome,
                latency,
                error: error.clone(),
                step: job.step.cloned(),
            };
            job.live.update(|snapshot| {
                snapshot.metrics.worker_latency += latency;
                snapshot.metrics.attempts.push(attempt.clone());
                snapshot.model_id = Some(model.id().clone());
            });
            job.emit(|| TaskEvent::AttemptFinished(attempt));
            let error = match (end, error) {
                (CallEnd::Answered(output), _) => {
                    // A composite's steps read the session but do not write
                    // it: each sees only the steps it waits for, and the
                    // composite records its one output at its end.
                    if let Some(session) =
                        job.task.session_id.as_ref().filter(|_| job.step.is_none())
                    {
                        self.keep_in_session(
                            &job.task.tenant,
                            session,
                            model.description().kind.clone(),
                            session_entry(job.task, model.id(), &output),
                        )
                        .await;
                    }
                    return Ending::succeeded(Some(output), None);
                }
                (CallEnd::CallerDeadline, Some(error)) => {
                    return Ending::with_error(TaskStatus::DeadlineExceeded, error);
                }
                (CallEnd::Failed(failure), Some(error)) if failure.kind.blames_request() => {
                    return Ending::with_error(TaskStatus::Failed, error);
                }
                (_, error) => error,
            };
            if let Some(error) = &error {
                tracing::info!(task.id = %job.task.id, model = %model.id(), code = (self.failure_names)(error.kind), "attempt failed, trying the next model");
            }
            last_error = error;
            failed = Some(model.id());
        }
        if let Some(error) = unsent {
            return Ending::with_error(TaskStatus::DeadlineExceeded, error);
        }
        if job.deadline.has_passed(Instant::now()) {
            return Ending::failed(
                TaskStatus::DeadlineExceeded,
                FailureKind::DeadlineExceeded,
                format!("the deadline passed after {tried} attempt(s)"),
            );
        }
        let error = match last_error {
            Some(last) if tried > 1 => TaskError::new(
                last.kind,
                format!(
                    "all {tried} models tried failed; the last: {}",
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

    /// An attempt's outcome, and its error when it did not succeed.
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

    /// One call to one candidate, within the caller's deadline and the
    /// worker timeout; `None` when no replica of it is up.
    async fn attempt(&self, job: Job<'_>, candidate: &Candidate) -> Option<(CallEnd, Duration)> {
        let task = job.task;
        let replica = candidate.model.pick_replica()?;
        let worker_deadline = Instant::now() + self.worker_timeout;
        let (call_deadline, caller_bound) = match job.deadline.instant() {
            Some(d) if d <= worker_deadline => (d, true),
            _ => (worker_deadline, false),
        };
        let model = candidate.model.id();
        let span = tracing::debug_span!(
            "attempt",
            model = %model,
            endpoint = replica.endpoint(),
            grym.task.r#type = %task.task_type,
            gen_ai.request.model = %model,
            attempt.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let target_kind = candidate.model.description().kind.clone();
        let prepare_span = tracing::debug_span!(
            parent: &span,
            "prepare context",
            target.kind = %target_kind,
            cache.hits = tracing::field::Empty,
            cache.misses = tracing::field::Empty,
        );
        let prepared = self
            .context
            .prepare(
                &task.tenant,
                job.context_hash.map(|hash| (&task.context, hash)),
                task.session_id.as_ref(),
                job.upstream,
                &target_kind,
            )
            .instrument(prepare_span.clone())
            .await;
        prepare_span.record("cache.hits", prepared.cache_hits);
        prepare_span.record("cache.misses", prepared.cache_misses);
        if prepared.cache_hits + prepared.cache_misses > 0 {
            job.live.update(|snapshot| {
                snapshot.metrics.context_cache_hits += prepared.cache_hits;
                snapshot.metrics.context_cache_misses += prepared.cache_misses;
            });
        }
        // What grymd composed around the task's context (a session's
        // history, earlier steps' outputs) must still decode at the worker;
        // when it would not, the request is at fault and the model is not
        // called, so nothing is held against it. A context passed as the
        // task carried it was checked at analysis and needs no second walk.
        let composed = !job.upstream.is_empty()
            || task.session_id.is_some()
            || prepared.cache_hits + prepared.cache_misses > 0;
        let depth = if composed {
            object_depth(&prepared.context)
        } else {
            0
        };
        if depth > Limits::DECODABLE_JSON_DEPTH {
            let error = WorkerError {
                kind: FailureKind::InvalidInput,
                message: format!(
                    "the context composed for the call nests {depth} levels deep, over the \
                     {} that workers decode; earlier steps' outputs or the session's history \
                     nest too deeply",
                    Limits::DECODABLE_JSON_DEPTH
                ),
            };
            span.record("attempt.outcome", "rejected");
            return Some((CallEnd::Failed(error), Duration::ZERO));
        }
        let call = InferCall {
            task_id: task.id.clone(),
            task_type: task.task_type.clone(),
            input: task.input.clone(),
            parameters: task.parameters.clone(),
            context: prepared.context,
            deadline: call_deadline,
            attempt: job.live.runs().max(1),
            tenant: task.tenant.clone(),
        };
        let _in_flight = replica.start_call();
        // The call's own time, without the context's preparation: what the
        // statistics and the worker-call metric describe.
        let started = Instant::now();
        // The client is called inside the span, so the call it makes (and
        // the `traceparent` it sends) is the attempt's child.
        let answer = async {
            Deadline::at(call_deadline)
                .bound(replica.client().infer(call))
                .await
        }
        .instrument(span.clone())
        .await;
        let timed_out = if caller_bound {
            CallEnd::CallerDeadline
        } else {
            CallEnd::WorkerTimeout
        };
        let end = match answer {
            Ok(Ok(output)) => CallEnd::Answered(output),
            // A failure that comes as the deadline passes (the worker or the
            // transport giving up on the same deadline) is that deadline; a
            // refusal of the input stays a refusal.
            Ok(Err(error)) if !error.kind.blames_request() && Instant::now() >= call_deadline => {
                timed_out
            }
            Ok(Err(error)) => CallEnd::Failed(error),
            Err(_) => timed_out,
        };
        let latency = started.elapsed();
        let outcome = end.label();
        span.record("attempt.outcome", outcome);
        if !matches!(end, CallEnd::Answered(_)) {
            span.record("otel.status_code", "ERROR");
        }
        self.instruments.worker_called(model, outcome, latency);
        if matches!(end, CallEnd::Answered(_)) {
            self.watcher.answered(model, latency);
        }
        Some((end, latency))
    }
}
