//! Arbitrary bytes as a composite step's `when`: compiled with the default
//! limits when a task is planned and, when it compiles, evaluated over a
//! fixed input and the output of the step before. Nothing may panic or
//! overflow the worker's stack; a refusal is an answer.

#![no_main]

mod common;

use grym_core::{
    CompositeSpec, Deadline, FailurePolicy, StepId, StepSpec, StepTask, Strategy, Task, TaskId,
    TaskInput, TaskType,
};
use libfuzzer_sys::fuzz_target;

fn task(when: String) -> Task {
    let step = |id: &'static str, when: Option<String>| StepSpec {
        id: StepId::new(id).unwrap_or_else(|e| panic!("{e}")),
        task: StepTask::of(TaskType::new("echo").unwrap_or_else(|e| panic!("{e}"))),
        after: Vec::new(),
        when,
    };
    let mut task = Task::new(
        TaskId::generate(),
        TaskType::new("pipeline").unwrap_or_else(|e| panic!("{e}")),
        TaskInput::Json(serde_json::json!({"clip": "rain.wav", "tags": ["a", "b"], "n": 3})),
    );
    task.composite = Some(Box::new(CompositeSpec {
        strategy: Strategy::Sequential,
        steps: vec![step("first", None), step("second", Some(when))],
        failure_policy: FailurePolicy::FailFast,
        output_step: None,
    }));
    task
}

fuzz_target!(|data: &[u8]| {
    let Ok(when) = std::str::from_utf8(data) else {
        return;
    };
    let (runtime, orchestrator) = common::answering();
    let orchestrator = orchestrator.clone();
    let when = when.to_owned();
    common::on_worker(runtime, async move {
        if orchestrator.plan(task(when.clone())).is_err() {
            return;
        }
        let _ = orchestrator.execute(task(when), Deadline::NONE, None).await;
    });
});
