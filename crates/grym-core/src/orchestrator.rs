//! The orchestrator: takes a task along its way and returns its one result.
//!
//! A request that cannot be accepted is an [`Error`]; from the moment a model
//! is chosen, every outcome (success, worker failure, timeout) is a
//! [`TaskResult`], so the caller always learns how its task ended.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::analysis;
use crate::client::{InferCall, WorkerError, WorkerErrorKind};
use crate::error::Error;
use crate::registry::Registry;
use crate::selection::{self, Candidate};
use crate::task::{
    Attempt, AttemptOutcome, Metrics, Output, Task, TaskError, TaskResult, TaskStatus,
};

/// Settings of the orchestrator.
#[derive(Debug, Clone, Copy)]
pub struct OrchestratorSettings {
    /// The longest one worker call may take when the caller set no earlier
    /// deadline.
    pub worker_timeout: Duration,
}

impl Default for OrchestratorSettings {
    fn default() -> Self {
        Self {
            worker_timeout: Duration::from_secs(30),
        }
    }
}

/// Runs tasks on the models of a registry.
#[derive(Debug)]
pub struct Orchestrator {
    registry: Arc<Registry>,
    settings: OrchestratorSettings,
}

/// What the one attempt of a task came to.
enum CallEnd {
    Answered(Output),
    Failed(WorkerError),
    /// The caller's own deadline passed.
    CallerDeadline,
    /// The orchestrator's worker timeout passed.
    WorkerTimeout,
}

impl Orchestrator {
    /// An orchestrator over `registry`.
    pub fn new(registry: Arc<Registry>, settings: OrchestratorSettings) -> Self {
        Self { registry, settings }
    }

    /// The registry of models.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
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
            let chosen = tracing::info_span!("plan").in_scope(|| self.choose(&task))?;
            tracing::Span::current().record("model", chosen.model.id().as_str());

            let worker_deadline = arrived + self.settings.worker_timeout;
            let (call_deadline, caller_bound) = match deadline {
                Some(d) if d <= worker_deadline => (d, true),
                _ => (worker_deadline, false),
            };
            let call = InferCall {
                task_id: task.id.clone(),
                task_type: task.task_type,
                input: task.input,
                parameters: task.parameters,
                context: serde_json::Map::new(),
                deadline: call_deadline,
            };

            let started = Instant::now();
            let end =
                match tokio::time::timeout_at(call_deadline, chosen.model.client().infer(call))
                    .instrument(tracing::info_span!("attempt", model = %chosen.model.id()))
                    .await
                {
                    Ok(Ok(output)) => CallEnd::Answered(output),
                    // A failure that comes as the caller's deadline passes
                    // (the worker giving up on the same deadline) is that
                    // deadline.
                    Ok(Err(_)) if caller_bound && Instant::now() >= call_deadline => {
                        CallEnd::CallerDeadline
                    }
                    Ok(Err(error)) => CallEnd::Failed(error),
                    Err(_) if caller_bound => CallEnd::CallerDeadline,
                    Err(_) => CallEnd::WorkerTimeout,
                };
            let latency = started.elapsed();

            let result = self.finish(task.id, &chosen, end, latency, arrived);
            tracing::Span::current().record("status", tracing::field::debug(result.status));
            Ok(result)
        }
        .instrument(span)
        .await
    }

    /// The best candidate for the task, or the error that none serves it.
    fn choose(&self, task: &Task) -> Result<Candidate, Error> {
        selection::rank(&task.task_type, &self.registry)
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoModelForTaskType {
                task_type: task.task_type.clone(),
            })
    }

    fn finish(
        &self,
        task_id: crate::task::TaskId,
        chosen: &Candidate,
        end: CallEnd,
        latency: Duration,
        arrived: Instant,
    ) -> TaskResult {
        let model_id = chosen.model.id().clone();
        let (status, outcome, output, error) = match end {
            CallEnd::Answered(output) => (
                TaskStatus::Succeeded,
                AttemptOutcome::Succeeded,
                Some(output),
                None,
            ),
            CallEnd::Failed(error) => {
                let outcome = if error.kind == WorkerErrorKind::Timeout {
                    AttemptOutcome::TimedOut
                } else {
                    AttemptOutcome::Failed
                };
                let error = TaskError {
                    code: error.code,
                    message: format!("model `{model_id}` failed: {}", error.message),
                };
                (TaskStatus::Failed, outcome, None, Some(error))
            }
            CallEnd::CallerDeadline => (
                TaskStatus::DeadlineExceeded,
                AttemptOutcome::TimedOut,
                None,
                Some(TaskError {
                    code: "DEADLINE_EXCEEDED",
                    message: format!("the deadline passed while model `{model_id}` was running"),
                }),
            ),
            CallEnd::WorkerTimeout => (
                TaskStatus::Failed,
                AttemptOutcome::TimedOut,
                None,
                Some(TaskError {
                    code: "DEADLINE_EXCEEDED",
                    message: format!(
                        "model `{model_id}` did not answer within {:?}",
                        self.settings.worker_timeout
                    ),
                }),
            ),
        };
        if let Some(error) = &error {
            tracing::warn!(model = %model_id, code = error.code, message = %error.message, "task did not succeed");
        }
        TaskResult {
            task_id,
            status,
            model_id: Some(model_id.clone()),
            output,
            metrics: Metrics {
                total_latency: arrived.elapsed(),
                worker_latency: latency,
                attempts: vec![Attempt {
                    model_id,
                    outcome,
                    latency,
                    error: error.clone(),
                }],
            },
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{TaskId, TaskInput, TaskType};
    use crate::testing::{Behaviour, FakeModel};

    fn task(task_type: &str) -> Task {
        Task {
            id: TaskId::new("t1").unwrap(),
            task_type: TaskType::new(task_type).unwrap(),
            input: TaskInput::Text("hello".to_owned()),
            parameters: serde_json::Map::new(),
        }
    }

    fn orchestrator(models: &[&FakeModel]) -> Orchestrator {
        let registry = Registry::new(models.iter().map(|m| m.described_entry())).unwrap();
        Orchestrator::new(Arc::new(registry), OrchestratorSettings::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_runs_on_the_most_confident_model() {
        let low = FakeModel::serving("low", "text_generation", 0.5);
        let high = FakeModel::serving("high", "text_generation", 0.9);
        let result = orchestrator(&[&low, &high])
            .execute(task("text_generation"), None)
            .await
            .unwrap();
        assert_eq!(result.status, TaskStatus::Succeeded);
        assert_eq!(result.model_id.unwrap().as_str(), "high");
        assert_eq!(
            result.output.unwrap().text.as_deref(),
            Some("text_generation")
        );
        assert_eq!(high.calls().len(), 1);
        assert!(low.calls().is_empty());
        assert_eq!(result.metrics.attempts.len(), 1);
        assert_eq!(
            result.metrics.attempts[0].outcome,
            AttemptOutcome::Succeeded
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unserved_task_type_is_a_failed_precondition_naming_it() {
        let model = FakeModel::serving("gama", "audio_analysis", 0.9);
        let err = orchestrator(&[&model])
            .execute(task("transcription"), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
        assert!(err.to_string().contains("`transcription`"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_error_is_a_failed_result_with_its_message() {
        let model = FakeModel::serving("gama", "audio_analysis", 0.9);
        model.behave(Behaviour::Fail(WorkerError {
            kind: WorkerErrorKind::Unavailable,
            code: "UNAVAILABLE",
            message: "connection refused".to_owned(),
        }));
        let result = orchestrator(&[&model])
            .execute(task("audio_analysis"), None)
            .await
            .unwrap();
        assert_eq!(result.status, TaskStatus::Failed);
        let error = result.error.unwrap();
        assert_eq!(error.code, "UNAVAILABLE");
        assert!(
            error.message.contains("connection refused"),
            "{}",
            error.message
        );
        assert_eq!(result.metrics.attempts[0].outcome, AttemptOutcome::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_callers_deadline_ends_a_slow_call_as_deadline_exceeded() {
        let model = FakeModel::serving("slow", "audio_analysis", 0.9);
        model.behave(Behaviour::Answer(Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_millis(200);
        let result = orchestrator(&[&model])
            .execute(task("audio_analysis"), Some(deadline))
            .await
            .unwrap();
        assert_eq!(result.status, TaskStatus::DeadlineExceeded);
        assert_eq!(result.metrics.attempts[0].outcome, AttemptOutcome::TimedOut);
        assert_eq!(model.calls()[0].deadline, deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_giving_up_at_the_callers_deadline_is_deadline_exceeded() {
        let model = FakeModel::serving("slow", "audio_analysis", 0.9);
        model.behave(Behaviour::FailAfter(
            Duration::from_millis(200),
            WorkerError {
                kind: WorkerErrorKind::Unavailable,
                code: "CANCELLED",
                message: "Timeout expired".to_owned(),
            },
        ));
        let deadline = Instant::now() + Duration::from_millis(200);
        let result = orchestrator(&[&model])
            .execute(task("audio_analysis"), Some(deadline))
            .await
            .unwrap();
        assert_eq!(result.status, TaskStatus::DeadlineExceeded);
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_timeout_bounds_a_call_without_a_deadline() {
        let model = FakeModel::serving("slow", "audio_analysis", 0.9);
        model.behave(Behaviour::Answer(Duration::from_secs(3600)));
        let result = orchestrator(&[&model])
            .execute(task("audio_analysis"), None)
            .await
            .unwrap();
        assert_eq!(result.status, TaskStatus::Failed);
        assert_eq!(result.error.unwrap().code, "DEADLINE_EXCEEDED");
        assert_eq!(result.metrics.worker_latency, Duration::from_secs(30));
    }
}
