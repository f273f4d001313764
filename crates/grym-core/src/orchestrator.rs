//! The orchestrator: takes a task along its way and returns its one result.
//!
//! A request that cannot be accepted is an [`Error`]; from the moment a plan
//! exists, every outcome (success, worker failure after fallbacks, timeout)
//! is a [`TaskResult`], so the caller always learns how its task ended.
//!
//! Models are tried in the plan's order. A retriable failure (unavailable,
//! overloaded, timed out) moves on to the next model while the caller's
//! deadline allows; any other failure (the worker refused the input) ends
//! the task, since another model would refuse it too. Each attempt has its
//! own `worker_timeout` within the caller's deadline. Every attempt's outcome
//! is fed back into the model's statistics before the next selection reads
//! them, except a refusal of the input, which says nothing of the model.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tracing::Instrument;

use crate::analysis::{self, Requirements};
use crate::client::{InferCall, WorkerError, WorkerErrorKind};
use crate::error::Error;
use crate::registry::{ModelEntry, Registry};
use crate::selection::{Candidate, Plan, Routing, SelectionSettings, Selector};
use crate::stats::CallOutcome;
use crate::task::{
    Attempt, AttemptOutcome, Metrics, Output, Task, TaskError, TaskResult, TaskStatus,
};

/// Settings of the orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub struct OrchestratorSettings {
    /// The longest one worker call may take.
    pub worker_timeout: Duration,
    /// How models are chosen.
    pub selection: SelectionSettings,
    /// Seeds selection's randomness, for repeatable runs.
    pub seed: Option<u64>,
}

impl Default for OrchestratorSettings {
    fn default() -> Self {
        Self {
            worker_timeout: Duration::from_secs(30),
            selection: SelectionSettings::default(),
            seed: None,
        }
    }
}

/// Runs tasks on the models of a registry.
#[derive(Debug)]
pub struct Orchestrator {
    registry: ArcSwap<Registry>,
    selector: Selector,
    worker_timeout: Duration,
}

/// How one attempt ended.
enum CallEnd {
    Answered(Output),
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
            Self::Failed(error) => match error.kind {
                WorkerErrorKind::Rejected => None,
                WorkerErrorKind::Timeout => Some(CallOutcome::Timeout),
                WorkerErrorKind::Unavailable
                | WorkerErrorKind::Overloaded
                | WorkerErrorKind::Internal => Some(CallOutcome::Failure),
            },
            Self::CallerDeadline | Self::WorkerTimeout => Some(CallOutcome::Timeout),
        }
    }
}

impl Orchestrator {
    /// An orchestrator over `registry`.
    pub fn new(registry: Arc<Registry>, settings: OrchestratorSettings) -> Self {
        Self {
            registry: ArcSwap::new(registry),
            selector: Selector::new(settings.selection, settings.seed),
            worker_timeout: settings.worker_timeout,
        }
    }

    /// The current registry of models.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// Replaces the registry with one of `entries`, keeping the entries (and
    /// so the statistics and health) of models that did not change. Calls in
    /// flight finish on the entries they started with.
    pub fn replace_models(
        &self,
        entries: impl IntoIterator<Item = ModelEntry>,
    ) -> Result<(), Error> {
        let next = self.registry.load().succeed_with(entries)?;
        self.registry.store(Arc::new(next));
        Ok(())
    }

    /// The half-life of the performance statistics.
    pub fn stats_half_life(&self) -> Duration {
        self.selector.settings().half_life
    }

    /// Analyses and plans a task without running it.
    pub fn plan(&self, mut task: Task) -> Result<(Requirements, Routing), Error> {
        let requirements = analysis::analyse(&mut task)?;
        let plan = self
            .selector
            .plan(&task.task_type, &self.registry.load(), Instant::now())?;
        Ok((requirements, plan.routing(Vec::new())))
    }

    /// Runs a task to its end. `deadline` is the caller's, when it set one.
    pub async fn execute(
        &self,
        mut task: Task,
        deadline: Option<Instant>,
    ) -> Result<TaskResult, Error> {
        let arrived = Instant::now();
        let span = tracing::info_span!(
            "task",
            task.id = %task.id,
            task.r#type = %task.task_type,
            model = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        async move {
            tracing::info_span!("analyse").in_scope(|| analysis::analyse(&mut task))?;
            let plan = tracing::info_span!("plan").in_scope(|| {
                self.selector
                    .plan(&task.task_type, &self.registry.load(), Instant::now())
            })?;
            let result = self.run(task, &plan, deadline, arrived).await;
            let span = tracing::Span::current();
            span.record("model", tracing::field::debug(&result.model_id));
            span.record("status", tracing::field::debug(result.status));
            Ok(result)
        }
        .instrument(span)
        .await
    }

    /// Tries the plan's models in order until one answers, the failure is
    /// final, or time runs out.
    async fn run(
        &self,
        task: Task,
        plan: &Plan,
        deadline: Option<Instant>,
        arrived: Instant,
    ) -> TaskResult {
        let mut metrics = Metrics::default();
        let mut ended: Option<(TaskStatus, Option<Output>, Option<TaskError>)> = None;
        for candidate in &plan.candidates {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            let (end, latency) = self.attempt(&task, candidate, deadline).await;
            let model = &candidate.model;
            if let Some(outcome) = end.feedback() {
                model.record(
                    &task.task_type,
                    Instant::now(),
                    self.selector.settings().half_life,
                    outcome,
                    latency,
                );
            }
            let (attempt_outcome, error, retriable) = match &end {
                CallEnd::Answered(_) => (AttemptOutcome::Succeeded, None, false),
                CallEnd::Failed(error) => (
                    if error.kind == WorkerErrorKind::Timeout {
                        AttemptOutcome::TimedOut
                    } else {
                        AttemptOutcome::Failed
                    },
                    Some(TaskError {
                        code: error.code,
                        message: format!("model `{}` failed: {}", model.id(), error.message),
                    }),
                    error.kind.is_retriable(),
                ),
                CallEnd::CallerDeadline => (
                    AttemptOutcome::TimedOut,
                    Some(TaskError {
                        code: "DEADLINE_EXCEEDED",
                        message: format!(
                            "the deadline passed while model `{}` was running",
                            model.id()
                        ),
                    }),
                    false,
                ),
                CallEnd::WorkerTimeout => (
                    AttemptOutcome::TimedOut,
                    Some(TaskError {
                        code: "DEADLINE_EXCEEDED",
                        message: format!(
                            "model `{}` did not answer within {:?}",
                            model.id(),
                            self.worker_timeout
                        ),
                    }),
                    true,
                ),
            };
            metrics.worker_latency += latency;
            metrics.attempts.push(Attempt {
                model_id: model.id().clone(),
                outcome: attempt_outcome,
                latency,
                error: error.clone(),
            });
            match end {
                CallEnd::Answered(output) => {
                    ended = Some((TaskStatus::Succeeded, Some(output), None));
                    break;
                }
                CallEnd::CallerDeadline => {
                    ended = Some((TaskStatus::DeadlineExceeded, None, error));
                    break;
                }
                _ if !retriable => {
                    ended = Some((TaskStatus::Failed, None, error));
                    break;
                }
                _ => {
                    if let Some(error) = &error {
                        tracing::info!(model = %model.id(), code = error.code, "attempt failed, trying the next model");
                    }
                }
            }
        }

        let (status, output, error) = ended.unwrap_or_else(|| self.exhausted(&metrics, deadline));
        if let Some(error) = &error {
            tracing::warn!(code = error.code, message = %error.message, "task did not succeed");
        }
        let fallbacks_taken = metrics.models_used().into_iter().skip(1).cloned().collect();
        metrics.total_latency = arrived.elapsed();
        TaskResult {
            task_id: task.id,
            status,
            model_id: metrics.attempts.last().map(|a| a.model_id.clone()),
            output,
            error,
            routing: plan.routing(fallbacks_taken),
            metrics,
        }
    }

    /// The end of a task whose every retriable attempt failed, or whose
    /// deadline passed between attempts.
    fn exhausted(
        &self,
        metrics: &Metrics,
        deadline: Option<Instant>,
    ) -> (TaskStatus, Option<Output>, Option<TaskError>) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return (
                TaskStatus::DeadlineExceeded,
                None,
                Some(TaskError {
                    code: "DEADLINE_EXCEEDED",
                    message: format!(
                        "the deadline passed after {} attempt(s)",
                        metrics.attempts.len()
                    ),
                }),
            );
        }
        let last = metrics.attempts.last().and_then(|a| a.error.clone());
        let error = match last {
            Some(last) if metrics.attempts.len() > 1 => TaskError {
                code: last.code,
                message: format!(
                    "all {} models tried failed; the last: {}",
                    metrics.attempts.len(),
                    last.message
                ),
            },
            Some(last) => last,
            None => TaskError {
                code: "UNAVAILABLE",
                message: "no replica of any candidate model was available".to_owned(),
            },
        };
        (TaskStatus::Failed, None, Some(error))
    }

    /// One call to one candidate, within the caller's deadline and the
    /// worker timeout.
    async fn attempt(
        &self,
        task: &Task,
        candidate: &Candidate,
        deadline: Option<Instant>,
    ) -> (CallEnd, Duration) {
        let started = Instant::now();
        let Some(replica) = candidate.model.pick_replica() else {
            let error = WorkerError {
                kind: WorkerErrorKind::Unavailable,
                code: "UNAVAILABLE",
                message: "every replica is down".to_owned(),
            };
            return (CallEnd::Failed(error), Duration::ZERO);
        };
        let worker_deadline = started + self.worker_timeout;
        let (call_deadline, caller_bound) = match deadline {
            Some(d) if d <= worker_deadline => (d, true),
            _ => (worker_deadline, false),
        };
        let call = InferCall {
            task_id: task.id.clone(),
            task_type: task.task_type.clone(),
            input: task.input.clone(),
            parameters: task.parameters.clone(),
            context: serde_json::Map::new(),
            deadline: call_deadline,
        };
        let _in_flight = replica.start_call();
        let answer = tokio::time::timeout_at(call_deadline, replica.client().infer(call))
            .instrument(tracing::info_span!(
                "attempt",
                model = %candidate.model.id(),
                endpoint = replica.endpoint()
            ))
            .await;
        let timed_out = || {
            if caller_bound {
                CallEnd::CallerDeadline
            } else {
                CallEnd::WorkerTimeout
            }
        };
        let end = match answer {
            Ok(Ok(output)) => CallEnd::Answered(output),
            // A failure that comes as the deadline passes (the worker or the
            // transport giving up on the same deadline) is that deadline.
            Ok(Err(_)) if Instant::now() >= call_deadline => timed_out(),
            Ok(Err(error)) => CallEnd::Failed(error),
            Err(_) => timed_out(),
        };
        (end, started.elapsed())
    }
}

#[cfg(test)]
mod tests;
