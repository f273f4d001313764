//! The state of a composite while its steps run: which ended how, which
//! are ready, and how the composite ends once every step has.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::super::job::{Ending, Job, emit};
use crate::context::Upstream;
use crate::error::FailureKind;
use crate::ids::{ModelId, StepId};
use crate::plan::graph::{Graph, Node};
use crate::task::{
    FailurePolicy, Output, StepResult, TaskError, TaskEvent, TaskInput, TaskResult, TaskStatus,
};

/// A step that ended.
pub(super) struct Ended {
    pub(super) result: StepResult,
    /// Its own output as context, for the next models' kinds to reshape;
    /// or, when it was skipped, what it would have received.
    pub(super) passed_on: Vec<Arc<Upstream>>,
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

/// The name of a status as conditions and messages read it: `SUCCEEDED`.
fn status_name(status: TaskStatus) -> String {
    status.as_str().to_ascii_uppercase()
}

/// The composite's input as conditions read it: audio by its type and
/// size, never its bytes.
pub(super) fn input_value(input: &TaskInput) -> Value {
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
pub(super) fn not_run(node: &Node, status: TaskStatus, error: Option<TaskError>) -> StepResult {
    StepResult {
        step: node.spec.id.clone(),
        task_type: node.spec.task.task_type.clone(),
        status,
        model_id: None,
        output: None,
        error,
        latency: Duration::ZERO,
        queue_wait: Duration::ZERO,
        attempts: 0,
        routing: None,
        budget: None,
    }
}

/// What steps waiting for `node` receive from the steps it waits for, in
/// list order, each once.
pub(super) fn handoffs_for(node: &Node, ended: &[Option<Ended>]) -> Vec<Arc<Upstream>> {
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
pub(super) fn step_input(node: &Node, ended: &[Option<Ended>], composite: &TaskInput) -> TaskInput {
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
pub(super) struct StepCalls {
    pub(super) attempts: u32,
    /// The last model called.
    pub(super) last: Option<ModelId>,
    /// The models called, in order, each once.
    pub(super) models: Vec<ModelId>,
}

/// The calls made for `step` so far, read in one pass over the task's.
pub(super) fn attempts_of(job: Job<'_>, step: &StepId) -> StepCalls {
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
pub(in crate::exec) fn settle_steps(
    graph: &Graph,
    result: &mut TaskResult,
    events: Option<&tokio::sync::mpsc::UnboundedSender<TaskEvent>>,
) {
    for node in &graph.nodes {
        if !result.steps.iter().any(|s| s.step == node.spec.id) {
            let step = not_run(
                node,
                TaskStatus::Cancelled,
                Some(TaskError::new(
                    FailureKind::Cancelled,
                    "the composite ended before this step did",
                )),
            );
            emit(events, || TaskEvent::StepFinished(Box::new(step.clone())));
            insert_in_order(graph, &mut result.steps, step);
        }
    }
}

/// The state of a composite while its steps run.
pub(super) struct Progress<'a> {
    graph: &'a Graph,
    pub(super) ended: Vec<Option<Ended>>,
    /// For each step, how many of its waits have not ended.
    waiting: Vec<usize>,
    pub(super) ready: VecDeque<usize>,
    /// The steps running now.
    pub(super) running: Vec<bool>,
    /// Why the steps not yet ended are cancelled, once fail fast stops.
    pub(super) stopped: Option<String>,
    /// The step whose failure stopped the composite.
    cause: Option<usize>,
}

impl<'a> Progress<'a> {
    /// Nothing has run yet: the steps that wait for none are ready.
    pub(super) fn new(graph: &'a Graph) -> Self {
        Self {
            graph,
            ended: graph.nodes.iter().map(|_| None).collect(),
            waiting: graph.nodes.iter().map(|n| n.after.len()).collect(),
            ready: (0..graph.nodes.len())
                .filter(|&i| graph.nodes[i].after.is_empty())
                .collect(),
            running: vec![false; graph.nodes.len()],
            stopped: None,
            cause: None,
        }
    }

    /// Ends the running steps as cancelled, once fail fast stopped the
    /// composite and their futures were dropped.
    pub(super) fn cancel_running(&mut self, job: Job<'_>) {
        let reason = self.stopped.clone().unwrap_or_default();
        for j in 0..self.running.len() {
            if !self.running[j] {
                continue;
            }
            let node = &self.graph.nodes[j];
            let calls = attempts_of(job, &node.spec.id);
            let result = StepResult {
                attempts: calls.attempts,
                model_id: calls.last,
                ..not_run(
                    node,
                    TaskStatus::Cancelled,
                    Some(TaskError::new(
                        FailureKind::Cancelled,
                        format!("{reason}; this step was cancelled"),
                    )),
                )
            };
            let ended = Ended {
                result,
                passed_on: Vec::new(),
            };
            self.end(j, ended, job);
        }
    }

    /// Records a step's end, tells the caller, and readies the steps whose
    /// waits are now met.
    pub(super) fn end(&mut self, i: usize, ended: Ended, job: Job<'_>) {
        self.running[i] = false;
        let graph = self.graph;
        job.live.update(|snapshot| {
            insert_in_order(graph, &mut snapshot.steps, ended.result.clone());
        });
        job.emit(|| TaskEvent::StepFinished(Box::new(ended.result.clone())));
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
    pub(super) fn verdict(&self, node: &Node, input: &Value) -> Option<StepResult> {
        if let Some(reason) = &self.stopped {
            return Some(not_run(
                node,
                TaskStatus::Cancelled,
                Some(TaskError::new(
                    FailureKind::Cancelled,
                    format!("{reason}; this step did not run"),
                )),
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
                Some(TaskError::new(
                    FailureKind::Precondition,
                    format!(
                        "step `{}` ended {}; this step did not run",
                        failed.result.step,
                        status_name(failed.result.status)
                    ),
                )),
            ));
        };
        let steps = steps_value(self.graph, &self.ended, condition.steps());
        match condition.evaluate(input, &steps) {
            Ok(true) => None,
            Ok(false) => Some(not_run(node, TaskStatus::Skipped, None)),
            Err(problem) => Some(not_run(
                node,
                TaskStatus::Failed,
                Some(TaskError::new(
                    FailureKind::Precondition,
                    format!("its condition could not be evaluated: {problem}"),
                )),
            )),
        }
    }

    /// How the composite ends, once every step has.
    ///
    /// Its output step is the named one; else, in a conditional composite,
    /// the last branch (in list order) that ran; else the last step that
    /// was not skipped. The composite ends as that step did.
    pub(super) fn ending(&self) -> Ending {
        let graph = self.graph;
        let results: Vec<&StepResult> = self.ended.iter().flatten().map(|e| &e.result).collect();
        if let Some(cause) = self.cause.and_then(|i| results.get(i)) {
            let (kind, message) = kind_and_message(cause);
            return Ending::failed(
                cause.status,
                kind,
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
                return Ending::failed(
                    TaskStatus::Failed,
                    FailureKind::Precondition,
                    format!("no branch matched: {}", tried.join(", ")),
                );
            }
            matched
        } else {
            (0..results.len()).rev().find(|i| ran(i))
        };
        let Some(result) = output.and_then(|i| results.get(i)) else {
            return Ending::failed(
                TaskStatus::Failed,
                FailureKind::Precondition,
                "every step was skipped, so there is no output".to_owned(),
            );
        };
        match result.status {
            TaskStatus::Succeeded => {
                Ending::succeeded(result.output.clone(), result.model_id.clone())
            }
            TaskStatus::Skipped => Ending::failed(
                TaskStatus::Failed,
                FailureKind::Precondition,
                format!(
                    "the output step `{}` was skipped: its condition was false",
                    result.step
                ),
            ),
            status => {
                let (kind, message) = kind_and_message(result);
                Ending::failed(
                    status,
                    kind,
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

/// A step's failure, or `unknown` when it gave no reason.
fn kind_and_message(step: &StepResult) -> (FailureKind, &str) {
    step.error
        .as_ref()
        .map_or((FailureKind::Unknown, "no reason given"), |e| {
            (e.kind, e.message.as_str())
        })
}
