//! Running a composite: each step as its waits are met.
//!
//! Every step ends with exactly one [`StepResult`]: run, skipped on its
//! condition, failed because a step it waits for did, or cancelled by fail
//! fast; if the composite itself ends first (cancelled, or a panic), the
//! steps it never finished are reported cancelled. A step runs like a
//! task of its own: admitted (it counts against `max_queue` while it waits
//! for its model), planned when it starts (with the statistics of that
//! moment), queued on its model's slots at the composite's priority, tried
//! with fallbacks, within its share of the composite's deadline.
//!
//! [`progress`] keeps the state of the steps and decides the composite's
//! ending.

mod progress;

use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument as _;

pub(super) use self::progress::settle_steps;
use self::progress::{
    Ended, Progress, StepCalls, attempts_of, handoffs_for, input_value, step_input,
};
use super::Orchestrator;
use super::job::{Ending, Job, session_entry};
use crate::context::{ContentHash, Upstream};
use crate::deadline::Deadline;
use crate::error::FailureKind;
use crate::ids::TaskId;
use crate::plan::CompositeRun;
use crate::plan::graph::{Node, budget};
use crate::schedule::Queued;
use crate::task::{StepResult, Task, TaskEvent, TaskInput, TaskStatus};

impl Orchestrator {
    /// Runs a composite's steps as their waits are met, and ends it.
    pub(super) async fn run_composite(
        &self,
        job: Job<'_>,
        run: &CompositeRun,
        queued: Queued,
    ) -> Ending {
        let task = job.task;
        // The composite runs from here; each step counts as queued while it
        // waits for its model.
        drop(queued);
        self.start(job).await;

        let graph = &run.graph;
        let ahead = graph.paths_ahead(&run.estimates);
        let input = if graph.nodes.iter().any(|n| n.condition.is_some()) {
            input_value(&task.input)
        } else {
            Value::Null
        };
        let mut progress = Progress::new(graph);
        // Steps that ended in an earlier run, before a restart, are not run
        // again: they end now as they ended then.
        let mut resumed = Vec::new();
        job.live
            .update(|snapshot| resumed = std::mem::take(&mut snapshot.steps));
        let mut running = FuturesUnordered::new();
        loop {
            while let Some(i) = progress.ready.pop_front() {
                let node = &graph.nodes[i];
                let handoffs = handoffs_for(node, &progress.ended);
                let earlier = resumed
                    .iter()
                    .position(|step: &StepResult| step.step == node.spec.id)
                    .map(|at| resumed.swap_remove(at));
                if let Some(result) = earlier {
                    let passed_on = self.handed_on(task, node, &result, handoffs);
                    progress.end(i, Ended { result, passed_on }, job);
                    continue;
                }
                if let Some(result) = progress.verdict(node, &input) {
                    // A skipped step hands on what it would have received.
                    let passed_on = if result.status == TaskStatus::Skipped {
                        handoffs
                    } else {
                        Vec::new()
                    };
                    progress.end(i, Ended { result, passed_on }, job);
                    continue;
                }
                let budget = job.deadline.instant().map(|deadline| {
                    budget::share(Instant::now(), deadline, run.estimates[i], ahead[i])
                });
                let input = step_input(node, &progress.ended, &task.input);
                progress.running[i] = true;
                let span = tracing::debug_span!(
                    "step",
                    grym.step.id = %node.spec.id,
                    grym.task.r#type = %node.spec.task.task_type,
                    grym.step.status = tracing::field::Empty,
                );
                running.push(
                    async move {
                        let ended = self.run_step(job, node, budget, input, handoffs).await;
                        tracing::Span::current()
                            .record("grym.step.status", ended.result.status.as_str());
                        (i, ended)
                    }
                    .instrument(span),
                );
            }
            if progress.stopped.is_some() && !running.is_empty() {
                // Fail fast: the steps still running are cancelled.
                running.clear();
                progress.cancel_running(job);
                continue;
            }
            let Some((i, ended)) = running.next().await else {
                break;
            };
            progress.end(i, ended, job);
            self.checkpoint(job).await;
        }
        let ending = progress.ending();
        // The session keeps the composite's one output, not its steps'.
        if let (Some(session), Some(output), Some(model)) =
            (&task.session_id, &ending.output, &ending.model)
        {
            let kind = self
                .registry
                .load()
                .get(model)
                .map(|entry| entry.description().kind.clone())
                .unwrap_or_default();
            self.keep_in_session(
                &task.tenant,
                session,
                kind,
                session_entry(task, model, output),
            )
            .await;
        }
        ending
    }

    /// What a step that ended in an earlier run hands on to the steps after
    /// it, as it did then: its output as context, or, skipped, what it
    /// would have received.
    fn handed_on(
        &self,
        task: &Task,
        node: &Node,
        result: &StepResult,
        handoffs: Vec<Arc<Upstream>>,
    ) -> Vec<Arc<Upstream>> {
        match (result.status, &result.output, &result.model_id) {
            (TaskStatus::Skipped, _, _) => handoffs,
            (TaskStatus::Succeeded, Some(output), Some(model)) => {
                let kind = self
                    .registry
                    .load()
                    .get(model)
                    .map(|entry| entry.description().kind.clone())
                    .unwrap_or_default();
                let step = step_task(task, node, TaskInput::Text(String::new()));
                vec![Arc::new(Upstream::new(
                    node.spec.id.to_string(),
                    kind,
                    session_entry(&step, model, output),
                ))]
            }
            _ => Vec::new(),
        }
    }

    /// One step: admitted, planned now, queued at the composite's priority,
    /// tried with fallbacks, within `budget` (its share of the composite's
    /// deadline).
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
        let task = step_task(parent.task, node, input);
        let deadline = Deadline::from_option(budget)
            .earliest(Deadline::after_timeout(began, spec.task.timeout));
        let job = Job {
            task: &task,
            live: parent.live,
            deadline,
            arrived: began,
            events: parent.events,
            context_hash: (!task.context.is_empty()).then(|| ContentHash::of(&task.context)),
            step: Some(&spec.id),
            upstream: &handoffs,
        };
        let key = self.scheduler.key(task.priority, deadline);
        let share = budget.map(|b| b.saturating_duration_since(began));
        let mut routing = None;
        // Counted as queued until it has its slot (or ends waiting), and
        // refused like a task when the queue is full.
        let chosen = match self.scheduler.admit() {
            Err(error) => Err(Ending::failed(
                TaskStatus::Failed,
                FailureKind::Exhausted,
                error.to_string(),
            )),
            Ok(waiting) => {
                let chosen = self
                    .plan_and_wait(
                        &task.task_type,
                        task.input.modality(),
                        None,
                        key,
                        deadline,
                        |plan, _| {
                            let first_plan = routing.is_none();
                            routing = Some(plan.routing());
                            if let Some(ending) = not_in_time(parent.deadline, plan) {
                                return Some(ending);
                            }
                            if first_plan {
                                parent.emit(|| TaskEvent::StepStarted {
                                    step: spec.id.clone(),
                                    routing: Box::new(plan.routing()),
                                    budget: share,
                                });
                            }
                            None
                        },
                    )
                    .await;
                drop(waiting);
                chosen
            }
        };
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

/// The task of a step: its own type and input, the composite's parameters
/// and context with its own over them, at the composite's priority.
fn step_task(composite: &Task, node: &Node, input: TaskInput) -> Task {
    let spec = &node.spec;
    let mut parameters = composite.parameters.clone();
    parameters.extend(spec.task.parameters.clone());
    let mut context = composite.context.clone();
    context.extend(spec.task.context.clone());
    Task {
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
    }
}

/// A step whose share may be short of its estimate is cut there if it runs
/// over; but one that could not finish even with all the time left before
/// the composite's deadline is not sent at all.
fn not_in_time(deadline: Deadline, plan: &crate::plan::selection::Plan) -> Option<Ending> {
    let first = plan.candidates.first()?;
    let left = deadline.remaining(Instant::now())?;
    (left < plan.estimated_latency).then(|| {
        Ending::failed(
            TaskStatus::DeadlineExceeded,
            FailureKind::DeadlineExceeded,
            format!(
                "not sent: {left:?} was left before the composite's deadline, less than the {:?} model `{}` is expected to take",
                plan.estimated_latency,
                first.model.id()
            ),
        )
    })
}

#[cfg(test)]
mod tests;
