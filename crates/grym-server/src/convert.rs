//! Conversions between the gRPC contracts and the core's types, in both
//! directions and for both contracts. The only place that touches `pb::`
//! fields; a malformed request becomes `INVALID_ARGUMENT` naming its field.

use std::time::Duration;

use grym_core::analysis::{Modality, Requirements};
use grym_core::bottleneck::Finding;
use grym_core::composite::recipe::RecipeUse;
use grym_core::composite::{CompositeSpec, FailurePolicy, StepId, StepSpec, StepTask, Strategy};
use grym_core::context::cache::CacheStats;
use grym_core::context::session::SessionSnapshot;
use grym_core::orchestrator::CompositePlan;
use grym_core::selection::{Reason, Routing};
use grym_core::stats::StatsSnapshot;
use grym_core::{
    Attempt, AttemptOutcome, Audio, Capability, CapabilitySource, Description, Health, InferCall,
    ModelEntry, ModelId, Output, Policy, Priority, Registry, StepResult, Task, TaskError,
    TaskEvent, TaskId, TaskInput, TaskResult, TaskStatus, TaskType, WorkerError, WorkerErrorKind,
};
use grym_proto::json::{json_to_struct, json_to_value, struct_to_json, value_to_json};
use grym_proto::orchestrator::v1 as api;
use grym_proto::worker::v1 as wire;
use std::time::SystemTime;
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::status::from_core;

fn duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

fn from_duration(d: Option<prost_types::Duration>) -> Duration {
    d.and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default()
}

// ---- orchestrator API -> core ----

/// The task of a request, submitted by `tenant`.
pub fn task_from_api(task: Option<api::Task>, tenant: String) -> Result<Task, Status> {
    let task = task.ok_or_else(|| Status::invalid_argument("invalid task: is required"))?;
    let id = if task.id.is_empty() {
        TaskId::generate()
    } else {
        TaskId::new(task.id).map_err(from_core)?
    };
    let task_type = TaskType::new(task.r#type).map_err(from_core)?;
    let input = input_from_api(task.input).ok_or_else(|| {
        Status::invalid_argument("invalid task.input: is required (one of text, audio, json)")
    })?;
    let timeout = timeout_from_api(task.timeout)
        .map_err(|problem| Status::invalid_argument(format!("invalid task.timeout: {problem}")))?;
    let composite = task.composite.map(composite_from_api).transpose()?;
    let depends_on = task
        .depends_on
        .into_iter()
        .map(|id| {
            TaskId::new(id).map_err(|error| {
                Status::invalid_argument(format!("invalid task.depends_on: {}", reason(error)))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Task {
        id,
        task_type,
        input,
        parameters: task.parameters.map(struct_to_json).unwrap_or_default(),
        priority: match api::Priority::try_from(task.priority) {
            Ok(api::Priority::Low) => Priority::Low,
            Ok(api::Priority::High) => Priority::High,
            Ok(api::Priority::Critical) => Priority::Critical,
            Ok(api::Priority::Normal | api::Priority::Unspecified) => Priority::Normal,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "invalid task.priority: unknown value {}",
                    task.priority
                )));
            }
        },
        timeout,
        depends_on,
        context: task.context.map(struct_to_json).unwrap_or_default(),
        session_id: if task.session_id.is_empty() {
            None
        } else {
            Some(session_id(task.session_id, "task.session_id")?)
        },
        tenant,
        composite: composite.map(Box::new),
    })
}

fn input_from_api(input: Option<api::TaskInput>) -> Option<TaskInput> {
    Some(match input?.kind? {
        api::task_input::Kind::Text(text) => TaskInput::Text(text),
        api::task_input::Kind::Audio(audio) => TaskInput::Audio(Audio {
            data: audio.data,
            mime_type: audio.mime_type,
        }),
        api::task_input::Kind::Json(value) => TaskInput::Json(value_to_json(value)),
    })
}

/// A timeout, if set; what is wrong with it otherwise.
fn timeout_from_api(timeout: Option<prost_types::Duration>) -> Result<Option<Duration>, String> {
    timeout
        .map(|timeout| {
            Duration::try_from(timeout)
                .ok()
                .filter(|timeout| !timeout.is_zero())
                .ok_or_else(|| "must be positive".to_owned())
        })
        .transpose()
}

/// A composite's steps; a problem names the field and the step.
fn composite_from_api(composite: api::Composite) -> Result<CompositeSpec, Status> {
    let strategy = match api::Strategy::try_from(composite.strategy) {
        Ok(api::Strategy::Sequential) => Strategy::Sequential,
        Ok(api::Strategy::Parallel) => Strategy::Parallel,
        Ok(api::Strategy::Conditional) => Strategy::Conditional,
        Ok(api::Strategy::Unspecified) | Err(_) => {
            return Err(Status::invalid_argument(
                "invalid task.composite.strategy: is required (STRATEGY_SEQUENTIAL, STRATEGY_PARALLEL or STRATEGY_CONDITIONAL)",
            ));
        }
    };
    let failure_policy = match api::FailurePolicy::try_from(composite.failure_policy) {
        Ok(api::FailurePolicy::Continue) => FailurePolicy::Continue,
        Ok(api::FailurePolicy::FailFast | api::FailurePolicy::Unspecified) => {
            FailurePolicy::FailFast
        }
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "invalid task.composite.failure_policy: unknown value {}",
                composite.failure_policy
            )));
        }
    };
    let step_id = |id: String, field: &str| {
        StepId::new(id).map_err(|error| {
            Status::invalid_argument(format!("invalid {field}: {}", reason(error)))
        })
    };
    let steps = composite
        .steps
        .into_iter()
        .map(|step| {
            let id = step_id(step.id, "task.composite.steps.id")?;
            let in_step = |field: &str, problem: String| {
                Status::invalid_argument(format!("invalid {field}: step `{id}`: {problem}"))
            };
            let task = step
                .task
                .ok_or_else(|| in_step("task.composite.steps.task", "is required".to_owned()))?;
            let task_type = TaskType::new(task.r#type)
                .map_err(|error| in_step("task.composite.steps.task.type", reason(error)))?;
            let after = step
                .after
                .into_iter()
                .map(|after| {
                    StepId::new(after)
                        .map_err(|error| in_step("task.composite.steps.after", reason(error)))
                })
                .collect::<Result<_, _>>()?;
            let input_from = if task.input_from.is_empty() {
                None
            } else {
                Some(StepId::new(task.input_from).map_err(|error| {
                    in_step("task.composite.steps.task.input_from", reason(error))
                })?)
            };
            let input = match task.input {
                None => None,
                Some(input) => Some(input_from_api(Some(input)).ok_or_else(|| {
                    in_step(
                        "task.composite.steps.task.input",
                        "names no kind (one of text, audio, json)".to_owned(),
                    )
                })?),
            };
            let timeout = timeout_from_api(task.timeout)
                .map_err(|problem| in_step("task.composite.steps.task.timeout", problem))?;
            Ok(StepSpec {
                task: StepTask {
                    task_type,
                    input,
                    input_from,
                    parameters: task.parameters.map(struct_to_json).unwrap_or_default(),
                    context: task.context.map(struct_to_json).unwrap_or_default(),
                    timeout,
                },
                after,
                when: (!step.when.trim().is_empty()).then_some(step.when),
                id,
            })
        })
        .collect::<Result<_, Status>>()?;
    Ok(CompositeSpec {
        strategy,
        steps,
        failure_policy,
        output_step: if composite.output_step.is_empty() {
            None
        } else {
            Some(step_id(
                composite.output_step,
                "task.composite.output_step",
            )?)
        },
    })
}

/// A session id, checked like a task id; `field` names it in errors.
pub(crate) fn session_id(id: String, field: &str) -> Result<String, Status> {
    TaskId::new(id)
        .map(|id| id.as_str().to_owned())
        .map_err(|error| Status::invalid_argument(format!("invalid {field}: {}", reason(error))))
}

/// The response of `GetContextStats`.
pub(crate) fn context_stats_response(stats: CacheStats) -> api::GetContextStatsResponse {
    api::GetContextStatsResponse {
        cache_hits: stats.hits,
        cache_misses: stats.misses,
        cache_evictions: stats.evictions,
        cache_bytes: stats.bytes,
        cache_entries: stats.entries,
    }
}

/// The response of `GetBottlenecks`.
pub(crate) fn bottlenecks_response(
    findings: &[Finding],
    interval: Duration,
) -> api::GetBottlenecksResponse {
    api::GetBottlenecksResponse {
        bottlenecks: findings
            .iter()
            .map(|finding| api::Bottleneck {
                kind: finding.kind.as_str().to_owned(),
                subject: finding.subject.clone(),
                value: finding.value,
                threshold: finding.threshold,
                message: finding.message.clone(),
                since: Some(timestamp(finding.since)),
            })
            .collect(),
        interval: duration(interval),
    }
}

/// A session as the API shows it.
pub(crate) fn session_to_api(id: &str, session: &SessionSnapshot) -> api::Session {
    api::Session {
        session_id: id.to_owned(),
        context: Some(json_to_struct((*session.context).clone())),
        entries: session
            .entries
            .iter()
            .map(|entry| api::SessionEntry {
                model_kind: entry.kind.clone(),
                context: Some(json_to_struct(entry.context.clone())),
            })
            .collect(),
    }
}

fn reason(error: grym_core::Error) -> String {
    match error {
        grym_core::Error::InvalidRequest { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// The task id of a `GetTask` or `CancelTask` request.
pub(crate) fn task_id(id: String) -> Result<TaskId, Status> {
    TaskId::new(id)
        .map_err(|error| Status::invalid_argument(format!("invalid task_id: {}", reason(error))))
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

/// The response of `SubmitTask`.
pub(crate) fn submit_response(id: &TaskId) -> api::SubmitTaskResponse {
    api::SubmitTaskResponse {
        task_id: id.to_string(),
    }
}

/// The response of `GetTask`.
pub(crate) fn get_response(result: TaskResult) -> api::GetTaskResponse {
    api::GetTaskResponse {
        result: Some(result_to_api(result)),
    }
}

/// The response of `CancelTask`.
pub(crate) fn cancel_response(result: TaskResult) -> api::CancelTaskResponse {
    api::CancelTaskResponse {
        result: Some(result_to_api(result)),
    }
}

/// One event of `StreamTask`.
pub(crate) fn stream_event(id: &TaskId, event: TaskEvent) -> api::StreamTaskResponse {
    use api::stream_task_response::Event;
    api::StreamTaskResponse {
        task_id: id.to_string(),
        event: Some(match event {
            TaskEvent::Queued => Event::Queued(api::TaskQueued {}),
            TaskEvent::ModelChosen(routing) => Event::ModelChosen(routing_to_api(&routing)),
            TaskEvent::Started => Event::Started(api::TaskStarted {}),
            TaskEvent::AttemptFinished(attempt) => Event::AttemptFinished(attempt_to_api(attempt)),
            TaskEvent::StepStarted {
                step,
                routing,
                budget,
            } => Event::StepStarted(api::StepStarted {
                step_id: step.to_string(),
                routing: Some(routing_to_api(&routing)),
                budget: budget.and_then(duration),
            }),
            TaskEvent::StepFinished(step) => Event::StepFinished(step_result_to_api(*step)),
            TaskEvent::Finished(result) => Event::Result(result_to_api(*result)),
        }),
    }
}

// ---- core -> orchestrator API ----

fn api_error(error: TaskError) -> api::TaskError {
    api::TaskError {
        code: error.code.to_owned(),
        message: error.message,
    }
}

/// The response of `ExecuteTask`.
pub(crate) fn execute_response(result: TaskResult) -> api::ExecuteTaskResponse {
    api::ExecuteTaskResponse {
        result: Some(result_to_api(result)),
    }
}

/// The response of `PlanTask`.
pub(crate) fn plan_response(
    analysis: Requirements,
    routing: &Routing,
    composite: Option<CompositePlan>,
) -> api::PlanTaskResponse {
    api::PlanTaskResponse {
        analysis: Some(analysis_to_api(analysis)),
        routing: Some(routing_to_api(routing)),
        composite: composite.map(composite_plan_to_api),
    }
}

fn strategy_to_api(strategy: Strategy) -> api::Strategy {
    match strategy {
        Strategy::Sequential => api::Strategy::Sequential,
        Strategy::Parallel => api::Strategy::Parallel,
        Strategy::Conditional => api::Strategy::Conditional,
    }
}

fn failure_policy_to_api(policy: FailurePolicy) -> api::FailurePolicy {
    match policy {
        FailurePolicy::FailFast => api::FailurePolicy::FailFast,
        FailurePolicy::Continue => api::FailurePolicy::Continue,
    }
}

fn recipe_to_api(recipe: RecipeUse) -> api::Recipe {
    api::Recipe {
        task_type: recipe.task_type.to_string(),
        chain: recipe.chain.iter().map(ToString::to_string).collect(),
        reason: recipe.reason,
    }
}

fn composite_plan_to_api(plan: CompositePlan) -> api::CompositePlan {
    let ids = |ids: Vec<StepId>| ids.into_iter().map(|id| id.to_string()).collect();
    api::CompositePlan {
        strategy: strategy_to_api(plan.strategy) as i32,
        failure_policy: failure_policy_to_api(plan.failure_policy) as i32,
        steps: plan
            .steps
            .into_iter()
            .map(|step| api::StepPlan {
                step_id: step.step.to_string(),
                r#type: step.task_type.to_string(),
                after: ids(step.after),
                when: step.when.unwrap_or_default(),
                stage: step.stage,
                routing: step.routing.as_ref().map(routing_to_api),
                critical: step.critical,
            })
            .collect(),
        stages: plan
            .stages
            .into_iter()
            .map(|stage| api::Stage {
                step_ids: ids(stage),
            })
            .collect(),
        critical_path: ids(plan.critical_path),
        estimated_latency: duration(plan.estimated_latency),
        output_step: plan
            .output_step
            .map(|id| id.to_string())
            .unwrap_or_default(),
        recipe: plan.recipe.map(recipe_to_api),
    }
}

/// The response of `ListModels`: every model with its statistics as they
/// stand now.
pub(crate) fn list_models_response(
    registry: &Registry,
    half_life: Duration,
) -> api::ListModelsResponse {
    let now = Instant::now();
    api::ListModelsResponse {
        models: registry
            .models()
            .map(|entry| model_to_api(entry, now, half_life))
            .collect(),
    }
}

/// A task's result as the API returns it.
fn result_to_api(result: TaskResult) -> api::TaskResult {
    let models_used = result
        .metrics
        .models_used()
        .into_iter()
        .map(ToString::to_string)
        .collect();
    api::TaskResult {
        task_id: result.task_id.to_string(),
        status: status_to_api(result.status) as i32,
        steps: result.steps.into_iter().map(step_result_to_api).collect(),
        recipe: result.recipe.map(recipe_to_api),
        queued_at: Some(timestamp(result.queued_at)),
        started_at: result.started_at.map(timestamp),
        finished_at: result.finished_at.map(timestamp),
        model_id: result.model_id.map(|m| m.to_string()).unwrap_or_default(),
        output: result.output.map(output_to_api),
        error: result.error.map(api_error),
        routing: Some(routing_to_api(&result.routing)),
        metrics: Some(api::OrchestrationMetrics {
            total_latency: duration(result.metrics.total_latency),
            queue_wait: duration(result.metrics.queue_wait),
            context_cache_hits: result.metrics.context_cache_hits,
            context_cache_misses: result.metrics.context_cache_misses,
            worker_latency: duration(result.metrics.worker_latency),
            models_used,
            attempts: result
                .metrics
                .attempts
                .into_iter()
                .map(attempt_to_api)
                .collect(),
        }),
    }
}

fn status_to_api(status: TaskStatus) -> api::TaskStatus {
    match status {
        TaskStatus::Queued => api::TaskStatus::Queued,
        TaskStatus::Running => api::TaskStatus::Running,
        TaskStatus::Succeeded => api::TaskStatus::Succeeded,
        TaskStatus::Failed => api::TaskStatus::Failed,
        TaskStatus::DeadlineExceeded => api::TaskStatus::DeadlineExceeded,
        TaskStatus::Cancelled => api::TaskStatus::Cancelled,
        TaskStatus::DependencyFailed => api::TaskStatus::DependencyFailed,
        TaskStatus::Skipped => api::TaskStatus::Skipped,
    }
}

fn output_to_api(output: Output) -> api::TaskOutput {
    api::TaskOutput {
        text: output.text,
        json: output.json.map(json_to_value),
        data: output.data,
        data_mime_type: output.data_mime_type,
    }
}

fn step_result_to_api(step: StepResult) -> api::StepResult {
    api::StepResult {
        step_id: step.step.to_string(),
        r#type: step.task_type.to_string(),
        status: status_to_api(step.status) as i32,
        model_id: step.model_id.map(|m| m.to_string()).unwrap_or_default(),
        output: step.output.map(output_to_api),
        error: step.error.map(api_error),
        latency: duration(step.latency),
        queue_wait: duration(step.queue_wait),
        attempts: step.attempts,
        routing: step.routing.as_ref().map(routing_to_api),
        budget: step.budget.and_then(duration),
    }
}

fn attempt_to_api(attempt: Attempt) -> api::Attempt {
    api::Attempt {
        model_id: attempt.model_id.to_string(),
        outcome: match attempt.outcome {
            AttemptOutcome::Succeeded => api::AttemptOutcome::Succeeded,
            AttemptOutcome::Failed => api::AttemptOutcome::Failed,
            AttemptOutcome::TimedOut => api::AttemptOutcome::TimedOut,
        } as i32,
        latency: duration(attempt.latency),
        error: attempt.error.map(api_error),
        step_id: attempt
            .step
            .map(|step| step.to_string())
            .unwrap_or_default(),
    }
}

fn health_to_api(health: Health) -> api::ModelHealth {
    match health {
        Health::Unknown => api::ModelHealth::Unspecified,
        Health::Serving => api::ModelHealth::Serving,
        Health::NotServing => api::ModelHealth::NotServing,
    }
}

/// A routing decision as the API shows it.
fn routing_to_api(routing: &Routing) -> api::Routing {
    api::Routing {
        policy: match routing.policy {
            Policy::Scored => api::SelectionPolicy::Scored,
            Policy::Thompson => api::SelectionPolicy::Thompson,
        } as i32,
        reason: match routing.reason {
            Reason::Route => api::RoutingReason::Route,
            Reason::HighestScore => api::RoutingReason::HighestScore,
            Reason::HighestSample => api::RoutingReason::HighestSample,
            Reason::Composite => api::RoutingReason::Composite,
            Reason::Recipe => api::RoutingReason::Recipe,
        } as i32,
        explanation: routing.explanation(),
        chosen_model_id: routing
            .chosen()
            .map(ToString::to_string)
            .unwrap_or_default(),
        estimated_latency: duration(routing.estimated_latency),
        candidates: routing
            .candidates
            .iter()
            .map(|c| {
                let b = &c.breakdown;
                api::CandidateScore {
                    model_id: c.model_id.to_string(),
                    health: health_to_api(c.health) as i32,
                    in_flight: c.in_flight,
                    confidence: b.confidence,
                    success_rate: b.success_rate,
                    error_rate: b.error_rate,
                    samples: b.samples,
                    expected_latency: duration(b.expected_latency),
                    normalized_latency: b.normalized_latency,
                    performance: b.performance,
                    performance_weight: b.performance_weight,
                    score: b.score,
                    sample: c.sample,
                }
            })
            .collect(),
        fallbacks_taken: routing
            .fallbacks_taken
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// What analysis recognised, as `PlanTask` shows it.
fn analysis_to_api(requirements: Requirements) -> api::TaskAnalysis {
    api::TaskAnalysis {
        modality: match requirements.modality {
            Modality::Text => api::Modality::Text,
            Modality::Audio => api::Modality::Audio,
            Modality::Json => api::Modality::Json,
        } as i32,
        mime_type: requirements.mime_type.unwrap_or_default(),
    }
}

fn stats_to_api(stats: &StatsSnapshot) -> api::PerformanceStats {
    api::PerformanceStats {
        attempts: stats.attempts,
        successes: stats.successes,
        failures: stats.failures,
        timeouts: stats.timeouts,
        success_rate: stats.success_rate(),
        error_rate: stats.error_rate(),
        mean_latency: duration(stats.mean_latency),
        p50_latency: duration(stats.p50),
        p95_latency: duration(stats.p95),
        p99_latency: duration(stats.p99),
    }
}

/// A registered model as `ListModels` shows it, with its statistics at
/// `now`.
fn model_to_api(entry: &ModelEntry, now: Instant, half_life: Duration) -> api::Model {
    let description = entry.description();
    api::Model {
        id: entry.id().to_string(),
        kind: description.kind.clone(),
        replicas: entry
            .replicas()
            .iter()
            .map(|replica| api::Replica {
                endpoint: replica.endpoint().to_owned(),
                health: health_to_api(replica.health()) as i32,
                in_flight: replica.in_flight(),
            })
            .collect(),
        in_flight: entry.in_flight(),
        capabilities: description
            .capabilities
            .iter()
            .map(|c| api::Capability {
                task_type: c.task_type.to_string(),
                confidence: c.confidence,
                estimated_latency: duration(c.estimated_latency),
                max_concurrency: c.max_concurrency.unwrap_or(0),
                stats: Some(stats_to_api(&entry.stats(&c.task_type, now, half_life))),
            })
            .collect(),
        health: health_to_api(entry.health()) as i32,
        capability_source: match description.source {
            CapabilitySource::Unknown => api::CapabilitySource::Unspecified,
            CapabilitySource::Worker => api::CapabilitySource::Worker,
            CapabilitySource::Config => api::CapabilitySource::Config,
        } as i32,
    }
}

// ---- core -> worker contract ----

/// The Infer request for one call.
pub(crate) fn infer_request(call: InferCall) -> wire::InferRequest {
    let kind = match call.input {
        TaskInput::Text(text) => wire::input::Kind::Text(text),
        TaskInput::Audio(audio) => wire::input::Kind::Audio(wire::Audio {
            data: audio.data,
            mime_type: audio.mime_type,
        }),
        TaskInput::Json(value) => wire::input::Kind::Json(json_to_value(value)),
    };
    wire::InferRequest {
        task_id: call.task_id.to_string(),
        task_type: call.task_type.to_string(),
        input: Some(wire::Input { kind: Some(kind) }),
        parameters: Some(json_to_struct(call.parameters)),
        context: Some(json_to_struct(call.context)),
    }
}

// ---- worker contract -> core ----

/// A worker's output.
pub(crate) fn output_from_worker(output: Option<wire::Output>) -> Output {
    let output = output.unwrap_or_default();
    Output {
        text: output.text,
        json: output.json.map(value_to_json),
        data: output.data,
        data_mime_type: output.data_mime_type,
    }
}

/// What a worker said of itself; a malformed capability fails the whole
/// answer, naming the field.
pub(crate) fn description_from_worker(
    response: wire::DescribeResponse,
) -> Result<Description, WorkerError> {
    let capabilities = response
        .capabilities
        .into_iter()
        .map(|c| {
            let capability = Capability {
                task_type: TaskType::new(c.task_type).map_err(malformed)?,
                confidence: c.confidence,
                estimated_latency: from_duration(c.estimated_latency),
                max_concurrency: (c.max_concurrency > 0).then_some(c.max_concurrency),
            };
            capability
                .validate("capabilities.confidence")
                .map_err(malformed)?;
            Ok(capability)
        })
        .collect::<Result<_, WorkerError>>()?;
    Ok(Description {
        kind: response.kind,
        capabilities,
        source: CapabilitySource::Worker,
    })
}

fn malformed(error: grym_core::Error) -> WorkerError {
    WorkerError {
        kind: WorkerErrorKind::Internal,
        code: "INTERNAL",
        message: format!("malformed Describe answer: {error}"),
    }
}

/// A failed worker call, classified for the orchestrator's decisions.
pub(crate) fn worker_error(model: &ModelId, status: &Status) -> WorkerError {
    // tonic reports a connection broken mid-call (the worker died) as
    // UNKNOWN with the transport error as its source: it is unavailability.
    let broken_connection = std::error::Error::source(status)
        .is_some_and(|source| source.is::<tonic::transport::Error>());
    if broken_connection {
        return WorkerError {
            kind: WorkerErrorKind::Unavailable,
            code: code_name(Code::Unavailable),
            message: format!("the connection to the worker of `{model}` broke: {status}"),
        };
    }
    let kind = match status.code() {
        Code::Unavailable | Code::Cancelled | Code::Aborted => WorkerErrorKind::Unavailable,
        Code::DeadlineExceeded => WorkerErrorKind::Timeout,
        Code::ResourceExhausted => WorkerErrorKind::Overloaded,
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Unimplemented => WorkerErrorKind::Rejected,
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => WorkerErrorKind::Internal,
    };
    let message = if status.message().is_empty() {
        format!("worker of `{model}` answered {}", code_name(status.code()))
    } else {
        status.message().to_owned()
    };
    WorkerError {
        kind,
        code: code_name(status.code()),
        message,
    }
}

/// The canonical name of a gRPC status code.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn request(task: Option<api::Task>) -> Option<api::Task> {
        task
    }

    fn text_task(task_type: &str) -> api::Task {
        api::Task {
            r#type: task_type.to_owned(),
            input: Some(api::TaskInput {
                kind: Some(api::task_input::Kind::Text("hi".to_owned())),
            }),
            ..api::Task::default()
        }
    }

    #[test]
    fn scheduling_fields_are_read_and_checked() {
        let task = task_from_api_test(Some(api::Task {
            priority: api::Priority::High as i32,
            timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            depends_on: vec!["a".into(), "b".into()],
            ..text_task("transcription")
        }))
        .unwrap();
        assert_eq!(task.priority, Priority::High);
        assert_eq!(task.timeout, Some(Duration::from_secs(2)));
        assert_eq!(task.depends_on.len(), 2);

        let unset = task_from_api_test(Some(text_task("transcription"))).unwrap();
        assert_eq!(unset.priority, Priority::Normal);

        let negative = Some(api::Task {
            timeout: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..text_task("transcription")
        });
        assert!(invalid_message(negative).contains("task.timeout"));
        let bad_dep = Some(api::Task {
            depends_on: vec!["has space".into()],
            ..text_task("transcription")
        });
        assert!(invalid_message(bad_dep).contains("task.depends_on"));
        let bad_priority = Some(api::Task {
            priority: 42,
            ..text_task("transcription")
        });
        assert!(invalid_message(bad_priority).contains("task.priority"));
    }

    fn task_from_api_test(task: Option<api::Task>) -> Result<Task, Status> {
        task_from_api(task, String::new())
    }

    fn invalid_message(task: Option<api::Task>) -> String {
        let status = task_from_api(task, String::new()).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        status.message().to_owned()
    }

    #[test]
    fn a_missing_task_type_or_input_names_the_field() {
        assert!(invalid_message(request(None)).contains("task"));
        assert!(invalid_message(request(Some(text_task("")))).contains("task.type"));
        let no_input = api::Task {
            input: None,
            ..text_task("transcription")
        };
        assert!(invalid_message(request(Some(no_input))).contains("task.input"));
    }

    #[test]
    fn an_empty_id_is_assigned_and_audio_bytes_are_shared() {
        let data = Bytes::from_static(b"RIFF....WAVE");
        let task = task_from_api_test(request(Some(api::Task {
            input: Some(api::TaskInput {
                kind: Some(api::task_input::Kind::Audio(api::Audio {
                    data: data.clone(),
                    mime_type: "audio/wav".to_owned(),
                })),
            }),
            ..text_task("audio_analysis")
        })))
        .unwrap();
        assert!(!task.id.as_str().is_empty());
        let TaskInput::Audio(audio) = task.input else {
            panic!("audio expected");
        };
        assert_eq!(
            audio.data.as_ptr(),
            data.as_ptr(),
            "the payload is not copied"
        );
    }

    #[test]
    fn worker_statuses_are_classified_for_fallback() {
        let model = ModelId::new("gama").unwrap();
        let unavailable = worker_error(&model, &Status::unavailable("down"));
        assert_eq!(unavailable.kind, WorkerErrorKind::Unavailable);
        assert_eq!(unavailable.code, "UNAVAILABLE");
        assert!(unavailable.kind.is_retriable());
        let rejected = worker_error(&model, &Status::invalid_argument("bad wav"));
        assert_eq!(rejected.kind, WorkerErrorKind::Rejected);
        assert!(!rejected.kind.is_retriable());
        assert_eq!(rejected.message, "bad wav");
    }

    #[test]
    fn a_describe_answer_with_a_bad_confidence_is_refused() {
        let err = description_from_worker(wire::DescribeResponse {
            model_id: "gama".into(),
            kind: "audio-language".into(),
            capabilities: vec![wire::Capability {
                task_type: "audio_analysis".into(),
                confidence: 2.0,
                estimated_latency: None,
                max_concurrency: 0,
            }],
        })
        .unwrap_err();
        assert!(err.message.contains("confidence"), "{}", err.message);
    }
}
