//! The core's results, plans and views turned into responses of the
//! orchestrator contract.

use std::time::{Duration, SystemTime};

use grym_core::{
    Attempt, AttemptOutcome, CacheStats, CapabilitySource, CompositePlan, Finding, Health,
    Modality, ModelView, Output, Policy, Requirements, SessionId, SessionSnapshot, StatsSnapshot,
    StepId, StepResult, TaskError, TaskEvent, TaskId, TaskResult, TaskStatus,
};
use grym_core::{FailurePolicy, Reason, RecipeUse, Routing, Strategy};
use grym_proto::json::{json_ref_to_value, json_to_struct};
use grym_proto::orchestrator::v1 as api;

use super::status::failure_code;

fn duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
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
pub(crate) fn session_to_api(id: &SessionId, session: &SessionSnapshot) -> api::Session {
    api::Session {
        session_id: id.to_string(),
        context: Some(json_to_struct((*session.context).clone())),
        entries: session
            .entries
            .iter()
            .map(|entry| api::SessionEntry {
                model_kind: entry.kind.to_string(),
                context: Some(json_to_struct(entry.context.clone())),
            })
            .collect(),
    }
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
        result: Some(result_to_api(&result)),
    }
}

/// One change of a task followed by `WatchTask`.
pub(crate) fn watch_response(result: TaskResult) -> api::WatchTaskResponse {
    api::WatchTaskResponse {
        result: Some(result_to_api(&result)),
    }
}

/// The response of `CancelTask`.
pub(crate) fn cancel_response(result: TaskResult) -> api::CancelTaskResponse {
    api::CancelTaskResponse {
        result: Some(result_to_api(&result)),
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
            TaskEvent::AttemptFinished(attempt) => Event::AttemptFinished(attempt_to_api(&attempt)),
            TaskEvent::StepStarted {
                step,
                routing,
                budget,
            } => Event::StepStarted(api::StepStarted {
                step_id: step.to_string(),
                routing: Some(routing_to_api(&routing)),
                budget: budget.and_then(duration),
            }),
            TaskEvent::StepFinished(step) => Event::StepFinished(step_result_to_api(&step)),
            TaskEvent::OutputChunk { step, model, chunk } => Event::OutputChunk(api::OutputChunk {
                step_id: step.map(|step| step.to_string()).unwrap_or_default(),
                model_id: model.to_string(),
                text: chunk.text,
                json: chunk.json.as_ref().map(json_ref_to_value),
            }),
            TaskEvent::Finished(result) => Event::Result(result_to_api(&result)),
        }),
    }
}

// ---- core -> orchestrator API ----

fn api_error(error: &TaskError) -> api::TaskError {
    api::TaskError {
        code: failure_code(error.kind).to_owned(),
        message: error.message.clone(),
    }
}

/// The response of `ExecuteTask`, from the result as the history keeps it.
pub(crate) fn execute_response(result: &TaskResult) -> api::ExecuteTaskResponse {
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

fn recipe_to_api(recipe: &RecipeUse) -> api::Recipe {
    api::Recipe {
        task_type: recipe.task_type.to_string(),
        chain: recipe.chain.iter().map(ToString::to_string).collect(),
        reason: recipe.reason.clone(),
        then: recipe
            .then
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
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
        recipe: plan.recipe.as_ref().map(recipe_to_api),
    }
}

/// The response of `ListModels`: every model with its statistics as they
/// stand now.
pub(crate) fn list_models_response(models: Vec<ModelView>) -> api::ListModelsResponse {
    api::ListModelsResponse {
        models: models.into_iter().map(model_to_api).collect(),
    }
}

/// A task's result as the API returns it.
fn result_to_api(result: &TaskResult) -> api::TaskResult {
    let models_used = result
        .metrics
        .models_used()
        .into_iter()
        .map(ToString::to_string)
        .collect();
    api::TaskResult {
        task_id: result.task_id.to_string(),
        status: status_to_api(result.status) as i32,
        steps: result.steps.iter().map(step_result_to_api).collect(),
        recipe: result.recipe.as_ref().map(recipe_to_api),
        queued_at: Some(timestamp(result.queued_at)),
        started_at: result.started_at.map(timestamp),
        finished_at: result.finished_at.map(timestamp),
        model_id: result
            .model_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        output: result.output.as_ref().map(output_to_api),
        error: result.error.as_ref().map(api_error),
        routing: Some(routing_to_api(&result.routing)),
        metrics: Some(api::OrchestrationMetrics {
            total_latency: duration(result.metrics.total_latency),
            queue_wait: duration(result.metrics.queue_wait),
            context_cache_hits: result.metrics.context_cache_hits,
            context_cache_misses: result.metrics.context_cache_misses,
            worker_latency: duration(result.metrics.worker_latency),
            models_used,
            attempts: result.metrics.attempts.iter().map(attempt_to_api).collect(),
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

fn output_to_api(output: &Output) -> api::TaskOutput {
    api::TaskOutput {
        text: output.text.clone(),
        json: output.json.as_ref().map(json_ref_to_value),
        data: output.data.clone(),
        data_mime_type: output.data_mime_type.clone(),
    }
}

fn step_result_to_api(step: &StepResult) -> api::StepResult {
    api::StepResult {
        step_id: step.step.to_string(),
        r#type: step.task_type.to_string(),
        status: status_to_api(step.status) as i32,
        model_id: step
            .model_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        output: step.output.as_ref().map(output_to_api),
        error: step.error.as_ref().map(api_error),
        latency: duration(step.latency),
        queue_wait: duration(step.queue_wait),
        attempts: step.attempts,
        routing: step.routing.as_ref().map(routing_to_api),
        budget: step.budget.and_then(duration),
    }
}

fn attempt_to_api(attempt: &Attempt) -> api::Attempt {
    api::Attempt {
        model_id: attempt.model_id.to_string(),
        outcome: match attempt.outcome {
            AttemptOutcome::Succeeded => api::AttemptOutcome::Succeeded,
            AttemptOutcome::Failed => api::AttemptOutcome::Failed,
            AttemptOutcome::TimedOut => api::AttemptOutcome::TimedOut,
            AttemptOutcome::Abandoned => api::AttemptOutcome::Abandoned,
        } as i32,
        latency: duration(attempt.latency),
        error: attempt.error.as_ref().map(api_error),
        step_id: attempt
            .step
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        endpoint: attempt.endpoint.clone(),
        hedge: attempt.hedge,
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
        excluded: routing
            .excluded
            .iter()
            .map(|excluded| api::ExcludedModel {
                model_id: excluded.model_id.to_string(),
                reason: excluded.reason.clone(),
            })
            .collect(),
    }
}

fn modality_to_api(modality: Modality) -> api::Modality {
    match modality {
        Modality::Text => api::Modality::Text,
        Modality::Audio => api::Modality::Audio,
        Modality::Json => api::Modality::Json,
    }
}

/// What analysis recognised, as `PlanTask` shows it.
fn analysis_to_api(requirements: Requirements) -> api::TaskAnalysis {
    api::TaskAnalysis {
        modality: modality_to_api(requirements.modality) as i32,
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

/// A registered model as `ListModels` shows it.
fn model_to_api(model: ModelView) -> api::Model {
    api::Model {
        id: model.id.to_string(),
        kind: model.kind.to_string(),
        replicas: model
            .replicas
            .into_iter()
            .map(|replica| api::Replica {
                endpoint: replica.endpoint,
                health: health_to_api(replica.health) as i32,
                in_flight: replica.in_flight,
                ejected: replica.ejected,
            })
            .collect(),
        in_flight: model.in_flight,
        capabilities: model
            .capabilities
            .iter()
            .map(|view| {
                let c = &view.capability;
                api::Capability {
                    task_type: c.task_type.to_string(),
                    confidence: c.confidence,
                    estimated_latency: duration(c.estimated_latency),
                    max_concurrency: c.max_concurrency.unwrap_or(0),
                    stats: Some(stats_to_api(&view.stats)),
                    inputs: c
                        .inputs
                        .iter()
                        .map(|&m| modality_to_api(m) as i32)
                        .collect(),
                }
            })
            .collect(),
        health: health_to_api(model.health) as i32,
        capability_source: match model.source {
            CapabilitySource::Unknown => api::CapabilitySource::Unspecified,
            CapabilitySource::Worker => api::CapabilitySource::Worker,
            CapabilitySource::Config => api::CapabilitySource::Config,
        } as i32,
    }
}
