//! `grym stream`: a task's way as it goes. On a terminal, a spinner for the
//! task and one per composite step (indicatif); elsewhere, one line per
//! event on standard error. `--output json` prints each event as a line of
//! JSON on standard output instead.

use std::collections::HashMap;
use std::time::Duration;

use grym_proto::orchestrator::v1 as api;
use grym_proto::orchestrator::v1::stream_task_response::Event;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::{self, Format};

/// Shows the events of one streamed task.
pub(crate) struct Progress {
    format: Format,
    bars: MultiProgress,
    task: ProgressBar,
    steps: HashMap<String, ProgressBar>,
}

impl Progress {
    pub(crate) fn new(format: Format) -> Self {
        let target = if format == Format::Json {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bars = MultiProgress::with_draw_target(target);
        let task = bars.add(spinner());
        task.set_message("submitting");
        Self {
            format,
            bars,
            task,
            steps: HashMap::new(),
        }
    }

    /// A line about the task, above the spinners (or alone on standard
    /// error when they are not drawn).
    fn line(&self, text: String) {
        if self.format == Format::Json {
            return;
        }
        if self.bars.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bars.suspend(|| eprintln!("{text}"));
        }
    }

    /// Shows one event; returns the result when it is the last.
    pub(crate) fn event(
        &mut self,
        event: api::StreamTaskResponse,
    ) -> anyhow::Result<Option<api::TaskResult>> {
        if self.format == Format::Json {
            println!("{}", output::json_line(&event)?);
        }
        let id = event.task_id;
        match event.event {
            Some(Event::Queued(_)) => {
                self.task.set_message(format!("{id}: queued"));
                self.line(format!("{id} queued"));
            }
            Some(Event::ModelChosen(routing)) => {
                self.task
                    .set_message(format!("{id}: {}", routing.chosen_model_id));
                self.line(format!(
                    "{id} model {} chosen: {}",
                    routing.chosen_model_id, routing.explanation
                ));
            }
            Some(Event::Started(_)) => {
                self.task.set_message(format!("{id}: running"));
                self.line(format!("{id} started"));
            }
            Some(Event::AttemptFinished(attempt)) => {
                let outcome = attempt.outcome().as_str_name();
                let outcome = outcome.strip_prefix("ATTEMPT_OUTCOME_").unwrap_or(outcome);
                let step = if attempt.step_id.is_empty() {
                    String::new()
                } else {
                    format!(" step {}", attempt.step_id)
                };
                self.line(format!(
                    "{id}{step} attempt on {} {outcome}",
                    attempt.model_id
                ));
            }
            Some(Event::StepStarted(step)) => {
                let model = step
                    .routing
                    .as_ref()
                    .map_or("-", |r| r.chosen_model_id.as_str());
                let bar = self.bars.add(spinner());
                bar.set_message(format!("step {}: {model}", step.step_id));
                self.line(format!("{id} step {} started on {model}", step.step_id));
                self.steps.insert(step.step_id, bar);
            }
            Some(Event::StepFinished(step)) => {
                let status = output::status_name(step.status());
                if let Some(bar) = self.steps.remove(&step.step_id) {
                    bar.finish_with_message(format!("step {}: {status}", step.step_id));
                }
                self.line(format!("{id} step {} {status}", step.step_id));
            }
            Some(Event::OutputChunk(chunk)) => {
                if let Some(text) = chunk.text {
                    self.line(format!("{id} chunk: {text}"));
                }
                if let Some(json) = chunk.json {
                    let value = grym_proto::json::value_to_json(json);
                    self.line(format!("{id} chunk: {value}"));
                }
            }
            Some(Event::Result(result)) => {
                self.task.finish_and_clear();
                for bar in self.steps.values() {
                    bar.finish_and_clear();
                }
                return Ok(Some(result));
            }
            None => {}
        }
        Ok(None)
    }
}

fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
