//! Running a composite: each step as its waits are met.
//!
//! Every step ends with exactly one [`StepResult`]: run, skipped on its
//! condition, failed because a step it waits for did, or cancelled by fail
//! fast; if the composite itself ends first (cancelled, or a panic), the
//! steps it never finished are reported cancelled. A step runs like a
//! task of its own: planned when it starts (with the statistics of that
//! moment), queued on its model's slots at the composite's priority, tried
//! with fallbacks, within its share of the composite's deadline.
//!
//! [`plan`] builds the view `PlanTask` shows.

mod plan;

pub use self::plan::{CompositePlan, StepPlan};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{CompositeRun, Ending, Job, Orchestrator, QueuedGuard, emit, session_entry, started};
use crate::composite::{FailurePolicy, Graph, Node, StepId, budget};
use crate::context::Upstream;
use crate::instruments::status_label;
use crate::model::ModelId;
use crate::scheduler::queue::QueueKey;
use crate::task::{
    Output, StepResult, Task, TaskError, TaskEvent, TaskId, TaskInput, TaskResult, TaskStatus,
};

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

/// The steps a condition reads, as it reads them.
fn steps_value(graph: &Graph, ended: &[Option<Ended>], read: &[String]) -> Value {
    let mut steps = Map::new();
    for (node, ended) in graph.nodes.iter().zip(ended) {
        let Some(ended) = ended else { continue };
        if !read.iter().any(|id| id == node.spec.id.as_str()) {
            continue;
        }
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

/// The calls made for a step so far.
#[derive(Default)]
struct StepCalls {
    attempts: u32,
    /// The last model called.
    last: Option<ModelId>,
    /// The models called, in order, each once.
    models: Vec<ModelId>,
}

/// The calls made for `step` so far, read in one pass over the task's.
fn attempts_of(job: Job<'_>, step: &StepId) -> StepCalls {
    let mut calls = StepCalls::default();
    job.live.update(|snapshot| {
        for attempt in &snapshot.metrics.attempts {
            if attempt.step.as_ref() == Some(step) {
                calls.attempts += 1;
                calls.last = Some(attempt.model_id.clone());
                if !calls.models.contains(&attempt.model_id) {
                    calls.models.push(attempt.model_id.clone());
                }
            }
        }
    });
    calls
}

/// Inserts a step's result at its place in list order.
fn insert_in_order(graph: &Graph, steps: &mut Vec<StepResult>, result: StepResult) {
    let position = |step: &StepId| graph.nodes.iter().position(|n| &n.spec.id == step);
    let at = position(&result.step);
    let index = steps
        .iter()
        .position(|s| position(&s.step) > at)
        .unwrap_or(steps.len());
    steps.insert(index, result);
}

/// Reports the steps a finished composite never ended (it was cancelled,
/// or ended on an internal error) as cancelled, to the result and to
/// whoever follows the task.
pub(super) fn settle_steps(
    graph: &Graph,
    result: &mut TaskResult,
    events: Option<&tokio::sync::mpsc::UnboundedSender<TaskEvent>>,
) {
    for node in &graph.nodes {
        if !result.steps.iter().any(|s| s.step == node.spec.id) {
            let step = not_run(
                node,
                TaskStatus::Cancelled,
                "CANCELLED",
                "the composite ended before this step did".to_owned(),
            );
            emit(events, || TaskEvent::StepFinished(Box::new(step.clone())));
            insert_in_order(graph, &mut result.steps, step);
        }
    }
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
        let graph = self.graph;
        job.live.update(|snapshot| {
            insert_in_order(graph, &mut snapshot.steps, ended.result.clone());
        });
        emit(job.events, || {
            TaskEvent::StepFinished(Box::new(ended.result.clone()))
        });
        if !ended.passes()
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
    ///
    /// Under fail fast, nothing runs once a step failed. Otherwise a step
    /// with a condition is judged by it alone, so a condition can run a
    /// step on another's failure (`steps.a.status == 'FAILED'`); a step
    /// without one runs only when the steps it waits for succeeded or were
    /// skipped.
    fn verdict(&self, node: &Node, input: &Value) -> Option<StepResult> {
        if let Some(reason) = &self.stopped {
            return Some(not_run(
                node,
                TaskStatus::Cancelled,
                "CANCELLED",
                format!("{reason}; this step did not run"),
            ));
        }
        let Some(condition) = &node.condition else {
            let failed = node
                .after
                .iter()
                .filter_map(|&j| self.ended[j].as_ref())
                .find(|ended| !ended.passes())?;
            return Some(not_run(
                node,
                TaskStatus::DependencyFailed,
                "FAILED_PRECONDITION",
                format!(
                    "step `{}` ended {}; this step did not run",
                    failed.result.step,
                    status_name(failed.result.status)
                ),
            ));
        };
        let steps = steps_value(self.graph, &self.ended, condition.steps());
        match condition.evaluate(input, &steps) {
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
    ///
    /// Its output step is the named one; else, in a conditional composite,
    /// the last branch (in list order) that ran; else the last step that
    /// was not skipped. The composite ends as that step did.
    fn ending(&self) -> Ending {
        let graph = self.graph;
        let results: Vec<&StepResult> = self.ended.iter().flatten().map(|e| &e.result).collect();
        let failed = |status: TaskStatus, code: &'static str, message: String| Ending {
            model: None,
            ..Ending::failed(status, code, message)
        };
        if let Some(cause) = self.cause.and_then(|i| results.get(i)) {
            let (code, message) = cause
                .error
                .as_ref()
                .map_or(("UNKNOWN", "no reason given"), |e| {
                    (e.code, e.message.as_str())
                });
            return failed(
                cause.status,
                code,
                format!("step `{}` failed: {message}", cause.step),
            );
        }
        let ran = |i: &usize| {
            results
                .get(*i)
                .is_some_and(|r| r.status != TaskStatus::Skipped)
        };
        let output = if let Some(named) = graph.output {
            Some(named)
        } else if graph.needs_a_match() {
            let branches: Vec<usize> = (0..graph.nodes.len())
                .filter(|&i| graph.nodes[i].is_branch())
                .collect();
            let matched = branches.iter().rev().copied().find(|i| ran(i));
            if matched.is_none() {
                let tried: Vec<String> = branches
                    .iter()
                    .filter_map(|&i| {
                        let node = &graph.nodes[i];
                        Some(format!(
                            "`{}` ({})",
                            node.spec.id,
                            node.condition.as_ref()?.source()
                        ))
                    })
                    .collect();
                return failed(
                    TaskStatus::Failed,
                    "FAILED_PRECONDITION",
                    format!("no branch matched: {}", tried.join(", ")),
                );
            }
            matched
        } else {
            (0..results.len()).rev().find(|i| ran(i))
        };
        let Some(result) = output.and_then(|i| results.get(i)) else {
            return failed(
                TaskStatus::Failed,
                "FAILED_PRECONDITION",
                "every step was skipped, so there is no output".to_owned(),
            );
        };
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
            status => {
                let (code, message) = result
                    .error
                    .as_ref()
                    .map_or(("UNKNOWN", "no reason given"), |e| {
                        (e.code, e.message.as_str())
                    });
                failed(
                    status,
                    code,
                    format!(
                        "the output step `{}` ended {}: {message}",
                        result.step,
                        status_name(status)
                    ),
                )
            }
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
        let Job { task, deadline, .. } = job;
        // The composite runs from here; each step counts as queued while it
        // waits for its model.
        drop(queued);
        started(job);

        let graph = &run.graph;
        let ahead = graph.paths_ahead(&run.estimates);
        let input = if graph.nodes.iter().any(|n| n.condition.is_some()) {
            input_value(&task.input)
        } else {
            Value::Null
        };
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
                        let span = tracing::debug_span!(
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
            if progress.stopped.is_some() && !running.is_empty() {
                // Fail fast: the steps still running are cancelled.
                running.clear();
                let reason = progress.stopped.clone().unwrap_or_default();
                for (j, flying) in in_flight.iter_mut().enumerate() {
                    if std::mem::take(flying) {
                        let node = &graph.nodes[j];
                        let calls = attempts_of(job, &node.spec.id);
                        let result = StepResult {
                            attempts: calls.attempts,
                            model_id: calls.last,
                            ..not_run(
                                node,
                                TaskStatus::Cancelled,
                                "CANCELLED",
                                format!("{reason}; this step was cancelled"),
                            )
                        };
                        let ended = Ended {
                            result,
                            passed_on: Vec::new(),
                        };
                        progress.end(j, ended, job);
                    }
                }
                continue;
            }
            let Some((i, ended)) = running.next().await else {
                break;
            };
            in_flight[i] = false;
            progress.end(i, ended, job);
        }
        let ending = progress.ending();
        // The session keeps the composite's one output, not its steps'.
        if let (Some(session), Some(output), Some(model)) =
            (&task.session_id, &ending.output, &ending.model)
        {
            let kind = self
                .registry()
                .get(model)
                .map(|entry| entry.description().kind.clone())
                .unwrap_or_default();
            self.context.record(
                &task.tenant,
                session,
                kind,
                session_entry(task, model, output),
            );
        }
        ending
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
        // A timeout too far out to represent is no bound at all.
        let own = spec.task.timeout.and_then(|t| began.checked_add(t));
        let deadline = match (budget, own) {
            (Some(budget), Some(own)) => Some(budget.min(own)),
            (budget, own) => budget.or(own),
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
        let share = budget.map(|b| b.saturating_duration_since(began));
        let mut routing = None;
        // Counted as queued until it has its slot (or ends waiting).
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let waiting = QueuedGuard(&self.queued);
        let chosen = self
            .plan_and_wait(&task.task_type, None, key, deadline, |plan, _| {
                let first_plan = routing.is_none();
                routing = Some(plan.routing(Vec::new()));
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
                if first_plan {
                    emit(parent.events, || TaskEvent::StepStarted {
                        step: spec.id.clone(),
                        routing: Box::new(plan.routing(Vec::new())),
                        budget: share,
                    });
                }
                None
            })
            .await;
        drop(waiting);
        let (ending, queue_wait, plan) = match chosen {
            Ok((plan, slot)) => {
                let queue_wait = began.elapsed();
                let ending = Box::pin(self.run(job, &plan, key, slot)).await;
                (ending, queue_wait, Some(plan))
            }
            Err(ending) => (ending, began.elapsed(), None),
        };
        let StepCalls {
            attempts,
            last: model_id,
            models,
        } = attempts_of(parent, &spec.id);
        if let Some(routing) = &mut routing {
            routing.fallbacks_taken = models.into_iter().skip(1).collect();
        }
        let passed_on = match (&ending.output, &model_id, plan) {
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
}

#[cfg(test)]
mod tests;
