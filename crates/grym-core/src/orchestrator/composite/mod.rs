//! Running a composite: each step as its waits are met.
//!
//! Every step ends with exactly one [`StepResult`]: run, skipped on its
//! condition, failed because a step it waits for did, or cancelled by fail
//! fast; if the composite itself ends first (cancelled, or a panic), the
//! steps it never finished are reported cancelled. A step runs like a
//! task of its own: planned when it starts (with the statistics of that
//! moment), queued on its model's slots at the composite's priority, tried
//! with fallbacks, within its share of the composite's deadline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{CompositeRun, Ending, Job, Orchestrator, QueuedGuard, emit, session_entry};
use crate::composite::recipe::RecipeUse;
use crate::composite::{FailurePolicy, Graph, Node, StepId, Strategy, budget};
use crate::context::Upstream;
use crate::instruments::status_label;
use crate::model::ModelId;
use crate::scheduler::queue::QueueKey;
use crate::selection::Routing;
use crate::task::{
    Output, StepResult, Task, TaskError, TaskEvent, TaskId, TaskInput, TaskResult, TaskStatus,
    TaskType,
};

/// How a composite would run, for `PlanTask`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositePlan {
    /// Its strategy.
    pub strategy: Strategy,
    /// Its failure policy.
    pub failure_policy: FailurePolicy,
    /// The steps, in list order.
    pub steps: Vec<StepPlan>,
    /// The steps by stage: those of one stage run in parallel.
    pub stages: Vec<Vec<StepId>>,
    /// The longest estimated path.
    pub critical_path: Vec<StepId>,
    /// The sum of the estimates along it.
    pub estimated_latency: Duration,
    /// The named output step.
    pub output_step: Option<StepId>,
    /// The recipe it stands for, if it is one.
    pub recipe: Option<RecipeUse>,
}

/// How one step would run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    /// The step.
    pub step: StepId,
    /// Its task type.
    pub task_type: TaskType,
    /// The steps it waits for.
    pub after: Vec<StepId>,
    /// Its condition.
    pub when: Option<String>,
    /// Its stage.
    pub stage: u32,
    /// How it would be routed now; absent when no model serves it now.
    pub routing: Option<Routing>,
    /// Whether it is on the critical path.
    pub critical: bool,
}

/// A step that ended.
struct Ended {
    result: StepResult,
    /// Its own output as context, for the next models' kinds to reshape;
    /// or, when it was skipped, what it would have received.
    passed_on: Vec<Arc<Upstream>>,
}

impl Ended {
    /// Whether the steps that wait for it may run.
    fn passes(&self) -> bool {
        matches!(
            self.result.status,
            TaskStatus::Succeeded | TaskStatus::Skipped
        )
    }
}

/// The name of a status as conditions read it.
fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Queued => "QUEUED",
        TaskStatus::Running => "RUNNING",
        TaskStatus::Succeeded => "SUCCEEDED",
        TaskStatus::Failed => "FAILED",
        TaskStatus::DeadlineExceeded => "DEADLINE_EXCEEDED",
        TaskStatus::Cancelled => "CANCELLED",
        TaskStatus::DependencyFailed => "DEPENDENCY_FAILED",
        TaskStatus::Skipped => "SKIPPED",
    }
}

/// The composite's input as conditions read it: audio by its type and
/// size, never its bytes.
fn input_value(input: &TaskInput) -> Value {
    match input {
        TaskInput::Text(text) => Value::String(text.clone()),
        TaskInput::Json(value) => value.clone(),
        TaskInput::Audio(audio) => {
            json!({"mime_type": audio.mime_type, "size_bytes": audio.data.len()})
        }
    }
}

/// The steps ended so far, as conditions read them.
fn steps_value(graph: &Graph, ended: &[Option<Ended>]) -> Value {
    let mut steps = Map::new();
    for (node, ended) in graph.nodes.iter().zip(ended) {
        let Some(ended) = ended else { continue };
        let result = &ended.result;
        let output = result.output.as_ref();
        steps.insert(
            node.spec.id.to_string(),
            json!({
                "status": status_name(result.status),
                "output": output.and_then(|o| o.json.clone()).unwrap_or(Value::Null),
                "text": output.and_then(|o| o.text.clone()).unwrap_or_default(),
                "model": result.model_id.as_ref().map(ModelId::as_str).unwrap_or_default(),
            }),
        );
    }
    Value::Object(steps)
}

/// A step that ended without running.
fn not_run(node: &Node, status: TaskStatus, code: &'static str, message: String) -> StepResult {
    StepResult {
        step: node.spec.id.clone(),
        task_type: node.spec.task.task_type.clone(),
        status,
        model_id: None,
        output: None,
        error: Some(TaskError { code, message }),
        latency: Duration::ZERO,
        queue_wait: Duration::ZERO,
        attempts: 0,
        routing: None,
        budget: None,
    }
}

/// What steps waiting for `node` receive from the steps it waits for, in
/// list order, each once.
fn handoffs_for(node: &Node, ended: &[Option<Ended>]) -> Vec<Arc<Upstream>> {
    let mut handoffs: Vec<Arc<Upstream>> = Vec::new();
    for &j in &node.after {
        let Some(ended) = &ended[j] else { continue };
        for handoff in &ended.passed_on {
            if !handoffs.iter().any(|h| h.step == handoff.step) {
                handoffs.push(Arc::clone(handoff));
            }
        }
    }
    handoffs
}

/// The input of a step: its own; else the text, or else the JSON, output
/// of its `input_from` step; else the composite's.
fn step_input(node: &Node, ended: &[Option<Ended>], composite: &TaskInput) -> TaskInput {
    if let Some(input) = &node.spec.task.input {
        return input.clone();
    }
    let output = node
        .input_from
        .and_then(|j| ended[j].as_ref())
        .and_then(|from| from.result.output.as_ref());
    match output {
        Some(Output {
            text: Some(text), ..
        }) => TaskInput::Text(text.clone()),
        Some(Output {
            json: Some(value), ..
        }) => TaskInput::Json(value.clone()),
        _ => composite.clone(),
    }
}

/// Puts a finished composite's steps in list order, and reports the steps
/// it never finished (it was cancelled, or ended on an internal error) as
/// cancelled.
pub(super) fn settle_steps(graph: &Graph, result: &mut TaskResult) {
    let position = |step: &StepId| graph.nodes.iter().position(|n| &n.spec.id == step);
    for node in &graph.nodes {
        if !result.steps.iter().any(|s| s.step == node.spec.id) {
            result.steps.push(not_run(
                node,
                TaskStatus::Cancelled,
                "CANCELLED",
                "the composite ended before this step did".to_owned(),
            ));
        }
    }
    result.steps.sort_by_key(|s| position(&s.step));
}

/// The state of a composite while its steps run.
struct Progress<'a> {
    graph: &'a Graph,
    ended: Vec<Option<Ended>>,
    waiting: Vec<usize>,
    ready: VecDeque<usize>,
    /// Why the steps not yet ended are cancelled, once fail fast stops.
    stopped: Option<String>,
    /// The step whose failure stopped the composite.
    cause: Option<usize>,
}

impl Progress<'_> {
    /// Records a step's end, tells the caller, and readies the steps whose
    /// waits are now met.
    fn end(&mut self, i: usize, ended: Ended, job: Job<'_>) {
        let result = ended.result.clone();
        let passes = ended.passes();
        job.live
            .update(|snapshot| snapshot.steps.push(result.clone()));
        emit(job.events, || TaskEvent::StepFinished(Box::new(result)));
        if !passes
            && self.graph.failure_policy == FailurePolicy::FailFast
            && self.stopped.is_none()
            && ended.result.status != TaskStatus::Cancelled
        {
            self.stopped = Some(format!(
                "step `{}` failed and the composite fails fast",
                ended.result.step
            ));
            self.cause = Some(i);
        }
        self.ended[i] = Some(ended);
        for &next in &self.graph.nodes[i].successors {
            self.waiting[next] -= 1;
            if self.waiting[next] == 0 {
                self.ready.push_back(next);
            }
        }
    }

    /// How a ready step ends without running, or `None` when it runs.
    fn verdict(&self, node: &Node, input: &Value) -> Option<StepResult> {
        if let Some(reason) = &self.stopped {
            return Some(not_run(
                node,
                TaskStatus::Cancelled,
                "CANCELLED",
                format!("{reason}; this step did not run"),
            ));
        }
        for &j in &node.after {
            if let Some(ended) = &self.ended[j]
                && !ended.passes()
            {
                return Some(not_run(
                    node,
                    TaskStatus::DependencyFailed,
                    "FAILED_PRECONDITION",
                    format!(
                        "step `{}` ended {}; this step did not run",
                        ended.result.step,
                        status_name(ended.result.status)
                    ),
                ));
            }
        }
        let Some(condition) = &node.condition else {
            return None;
        };
        match condition.evaluate(input, &steps_value(self.graph, &self.ended)) {
            Ok(true) => None,
            Ok(false) => Some(StepResult {
                error: None,
                ..not_run(node, TaskStatus::Skipped, "", String::new())
            }),
            Err(problem) => Some(not_run(
                node,
                TaskStatus::Failed,
                "FAILED_PRECONDITION",
                format!("its condition could not be evaluated: {problem}"),
            )),
        }
    }

    /// How the composite ends, once every step has.
    fn ending(&self) -> Ending {
        let results: Vec<&StepResult> = self.ended.iter().flatten().map(|e| &e.result).collect();
        let failed = |status: TaskStatus, code: &'static str, message: String| Ending {
            model: None,
            ..Ending::failed(status, code, message)
        };
        if let Some(i) = self.cause {
            let cause = &results[i];
            let (code, message) = cause
                .error
                .as_ref()
                .map(|e| (e.code, e.message.as_str()))
                .unwrap_or(("UNKNOWN", "no reason given"));
            return failed(
                cause.status,
                code,
                format!("step `{}` failed: {message}", cause.step),
            );
        }
        if self.graph.needs_a_match() {
            let branches: Vec<(&Node, &StepResult)> = self
                .graph
                .nodes
                .iter()
                .zip(&results)
                .filter(|(node, _)| node.condition.is_some())
                .map(|(node, result)| (node, *result))
                .collect();
            if branches
                .iter()
                .all(|(_, result)| result.status == TaskStatus::Skipped)
            {
                let tried: Vec<String> = branches
                    .iter()
                    .filter_map(|(node, _)| {
                        let condition = node.condition.as_ref()?;
                        Some(format!("`{}` ({})", node.spec.id, condition.source()))
                    })
                    .collect();
                return failed(
                    TaskStatus::Failed,
                    "FAILED_PRECONDITION",
                    format!("no branch matched: {}", tried.join(", ")),
                );
            }
        }
        let output = self.graph.output.or_else(|| {
            results
                .iter()
                .rposition(|result| result.status == TaskStatus::Succeeded)
        });
        let Some(output) = output else {
            let first = results
                .iter()
                .find(|r| !matches!(r.status, TaskStatus::Succeeded | TaskStatus::Skipped));
            return match first {
                Some(first) => failed(
                    first.status,
                    first.error.as_ref().map_or("UNKNOWN", |e| e.code),
                    format!(
                        "no step succeeded; step `{}` ended {}",
                        first.step,
                        status_name(first.status)
                    ),
                ),
                None => failed(
                    TaskStatus::Failed,
                    "FAILED_PRECONDITION",
                    "every step was skipped, so there is no output".to_owned(),
                ),
            };
        };
        let result = results[output];
        match result.status {
            TaskStatus::Succeeded => Ending {
                status: TaskStatus::Succeeded,
                output: result.output.clone(),
                error: None,
                model: result.model_id.clone(),
            },
            TaskStatus::Skipped => failed(
                TaskStatus::Failed,
                "FAILED_PRECONDITION",
                format!(
                    "the output step `{}` was skipped: its condition was false",
                    result.step
                ),
            ),
            status => failed(
                status,
                result.error.as_ref().map_or("UNKNOWN", |e| e.code),
                format!(
                    "the output step `{}` ended {}",
                    result.step,
                    status_name(status)
                ),
            ),
        }
    }
}

impl Orchestrator {
    /// Runs a composite's steps as their waits are met, and ends it.
    pub(super) async fn run_composite(
        &self,
        job: Job<'_>,
        run: &CompositeRun,
        queued: QueuedGuard<'_>,
    ) -> Ending {
        let Job {
            task,
            live,
            deadline,
            arrived,
            events,
            ..
        } = job;
        // The composite runs from here; its steps wait in their models'
        // queues on their own.
        drop(queued);
        live.update(|snapshot| {
            snapshot.status = TaskStatus::Running;
            snapshot.started_at = Some(SystemTime::now());
            snapshot.metrics.queue_wait = arrived.elapsed();
        });
        emit(events, || TaskEvent::Started);

        let graph = &run.graph;
        let ahead = graph.paths_ahead(&run.estimates);
        let input = input_value(&task.input);
        let mut progress = Progress {
            graph,
            ended: graph.nodes.iter().map(|_| None).collect(),
            waiting: graph.nodes.iter().map(|n| n.after.len()).collect(),
            ready: (0..graph.nodes.len())
                .filter(|&i| graph.nodes[i].after.is_empty())
                .collect(),
            stopped: None,
            cause: None,
        };
        let mut running = FuturesUnordered::new();
        let mut in_flight = vec![false; graph.nodes.len()];
        loop {
            while let Some(i) = progress.ready.pop_front() {
                let node = &graph.nodes[i];
                let handoffs = handoffs_for(node, &progress.ended);
                match progress.verdict(node, &input) {
                    None => {
                        let budget = deadline.map(|deadline| {
                            budget::share(Instant::now(), deadline, run.estimates[i], ahead[i])
                        });
                        let input = step_input(node, &progress.ended, &task.input);
                        in_flight[i] = true;
                        let span = tracing::info_span!(
                            "step",
                            step.id = %node.spec.id,
                            task.r#type = %node.spec.task.task_type,
                            step.status = tracing::field::Empty,
                        );
                        running.push(
                            async move {
                                let ended = self.run_step(job, node, budget, input, handoffs).await;
                                tracing::Span::current()
                                    .record("step.status", status_label(ended.result.status));
                                (i, ended)
                            }
                            .instrument(span),
                        );
                    }
                    Some(result) => {
                        // A skipped step hands on what it would have received.
                        let passed_on = if result.status == TaskStatus::Skipped {
                            handoffs
                        } else {
                            Vec::new()
                        };
                        progress.end(i, Ended { result, passed_on }, job);
                    }
                }
            }
            let Some((i, ended)) = running.next().await else {
                break;
            };
            in_flight[i] = false;
            progress.end(i, ended, job);
            if progress.stopped.is_some() && !running.is_empty() {
                // Fail fast: the steps still running are cancelled.
                running.clear();
                for (j, flying) in in_flight.iter_mut().enumerate() {
                    if std::mem::take(flying) {
                        let result = not_run(
                            &graph.nodes[j],
                            TaskStatus::Cancelled,
                            "CANCELLED",
                            format!(
                                "{}; this step was cancelled",
                                progress.stopped.clone().unwrap_or_default()
                            ),
                        );
                        progress.end(
                            j,
                            Ended {
                                result,
                                passed_on: Vec::new(),
                            },
                            job,
                        );
                    }
                }
            }
        }
        progress.ending()
    }

    /// One step: planned now, queued at the composite's priority, tried with
    /// fallbacks, within `budget` (its share of the composite's deadline).
    async fn run_step(
        &self,
        parent: Job<'_>,
        node: &Node,
        budget: Option<Instant>,
        input: TaskInput,
        handoffs: Vec<Arc<Upstream>>,
    ) -> Ended {
        let began = Instant::now();
        let spec = &node.spec;
        let composite = parent.task;
        let mut parameters = composite.parameters.clone();
        parameters.extend(spec.task.parameters.clone());
        let mut context = composite.context.clone();
        context.extend(spec.task.context.clone());
        let task = Task {
            id: TaskId::of_step(&composite.id, &spec.id),
            task_type: spec.task.task_type.clone(),
            input,
            parameters,
            priority: composite.priority,
            timeout: None,
            depends_on: Vec::new(),
            context,
            session_id: composite.session_id.clone(),
            tenant: composite.tenant.clone(),
            composite: None,
        };
        let deadline = match (budget, spec.task.timeout) {
            (Some(budget), Some(timeout)) => Some(budget.min(began + timeout)),
            (budget, timeout) => budget.or_else(|| timeout.map(|t| began + t)),
        };
        let job = Job {
            task: &task,
            live: parent.live,
            deadline,
            arrived: began,
            events: parent.events,
            context_hash: (!task.context.is_empty())
                .then(|| crate::context::canonical::ContentHash::of(&task.context)),
            step: Some(&spec.id),
            upstream: &handoffs,
        };
        let key = QueueKey {
            priority: task.priority,
            deadline,
            seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let share = deadline.map(|d| d.saturating_duration_since(began));
        let mut routing = None;
        let chosen = self
            .plan_and_wait(&task.task_type, None, key, deadline, |plan, _| {
                let planned = plan.routing(Vec::new());
                routing = Some(planned.clone());
                // Its share may be short of its estimate (it is cut there if
                // it runs over); but a step that could not finish even with
                // all the time left is not sent at all.
                if let (Some(deadline), Some(first)) = (parent.deadline, plan.candidates.first()) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left < plan.estimated_latency {
                        return Some(Ending::failed(
                            TaskStatus::DeadlineExceeded,
                            "DEADLINE_EXCEEDED",
                            format!(
                                "not sent: {left:?} was left before the composite's deadline, less than the {:?} model `{}` is expected to take",
                                plan.estimated_latency,
                                first.model.id()
                            ),
                        ));
                    }
                }
                emit(parent.events, || TaskEvent::StepStarted {
                    step: spec.id.clone(),
                    routing: Box::new(planned),
                    budget: share,
                });
                None
            })
            .await;
        let (ending, queue_wait, kind) = match chosen {
            Ok((plan, slot)) => {
                let queue_wait = began.elapsed();
                let ending = Box::pin(self.run(job, &plan, key, slot)).await;
                let kind = ending.status == TaskStatus::Succeeded;
                (ending, queue_wait, kind.then_some(plan))
            }
            Err(ending) => (ending, began.elapsed(), None),
        };
        let mut attempts = 0;
        let mut model_id = None;
        parent.live.update(|snapshot| {
            for attempt in &snapshot.metrics.attempts {
                if attempt.step.as_ref() == Some(&spec.id) {
                    attempts += 1;
                    model_id = Some(attempt.model_id.clone());
                }
            }
        });
        if let Some(routing) = &mut routing {
            routing.fallbacks_taken = Vec::new();
        }
        let passed_on = match (&ending.output, &model_id, kind) {
            (Some(output), Some(model), Some(plan)) => {
                let kind = plan
                    .candidates
                    .iter()
                    .find(|c| c.model.id() == model)
                    .map(|c| c.model.description().kind.clone())
                    .unwrap_or_default();
                vec![Arc::new(Upstream::new(
                    spec.id.to_string(),
                    kind,
                    session_entry(&task, model, output),
                ))]
            }
            _ => Vec::new(),
        };
        Ended {
            result: StepResult {
                step: spec.id.clone(),
                task_type: task.task_type.clone(),
                status: ending.status,
                model_id,
                output: ending.output,
                error: ending.error,
                latency: began.elapsed(),
                queue_wait,
                attempts,
                routing,
                budget: share,
            },
            passed_on,
        }
    }

    /// The plan of a composite as it would run now.
    pub(super) fn composite_plan(&self, run: &CompositeRun, now: Instant) -> CompositePlan {
        let graph = &run.graph;
        let registry = self.registry.load();
        let (critical, estimated_latency) = graph.critical_path(&run.estimates);
        let id = |i: usize| graph.nodes[i].spec.id.clone();
        CompositePlan {
            strategy: graph.strategy,
            failure_policy: graph.failure_policy,
            steps: graph
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| StepPlan {
                    step: node.spec.id.clone(),
                    task_type: node.spec.task.task_type.clone(),
                    after: node.after.iter().map(|&j| id(j)).collect(),
                    when: node.condition.as_ref().map(|c| c.source().to_owned()),
                    stage: node.stage,
                    routing: self
                        .selector
                        .plan(&node.spec.task.task_type, &registry, now)
                        .ok()
                        .map(|plan| plan.routing(Vec::new())),
                    critical: critical.contains(&i),
                })
                .collect(),
            stages: graph
                .stages()
                .into_iter()
                .map(|stage| stage.into_iter().map(id).collect())
                .collect(),
            critical_path: critical.iter().map(|&i| id(i)).collect(),
            estimated_latency,
            output_step: graph.output.map(id),
            recipe: run.recipe.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
