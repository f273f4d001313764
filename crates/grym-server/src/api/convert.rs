//! Requests of the orchestrator contract turned into the core's types: the
//! only place that reads `grym.orchestrator.v1` request fields. A malformed
//! request becomes `INVALID_ARGUMENT` naming its field.

use std::time::Duration;

use grym_core::{Audio, NameError, Priority, StepId, Task, TaskId, TaskInput, TaskType, Tenant};
use grym_core::{CompositeSpec, FailurePolicy, StepSpec, StepTask, Strategy};
use grym_proto::json::{struct_to_json, value_to_json};
use grym_proto::orchestrator::v1 as api;
use tonic::Status;

use super::status::from_core;

/// The task of a request, submitted by `tenant`.
pub fn task_from_api(task: Option<api::Task>, tenant: Tenant) -> Result<Task, Status> {
    let task = task.ok_or_else(|| Status::invalid_argument("invalid task: is required"))?;
    let id = if task.id.is_empty() {
        TaskId::generate()
    } else {
        name("task.id", task.id)?
    };
    let task_type = name("task.type", task.r#type)?;
    let input = input_from_api(task.input).ok_or_else(|| {
        Status::invalid_argument("invalid task.input: is required (one of text, audio, json)")
    })?;
    let timeout = timeout_from_api(task.timeout)
        .map_err(|problem| Status::invalid_argument(format!("invalid task.timeout: {problem}")))?;
    let composite = task.composite.map(composite_from_api).transpose()?;
    let depends_on = task
        .depends_on
        .into_iter()
        .map(|id| name("task.depends_on", id))
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
            Some(name("task.session_id", task.session_id)?)
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

    let steps = composite
        .steps
        .into_iter()
        .map(|step| {
            let id: StepId = name("task.composite.steps.id", step.id)?;
            let in_step = |field: &str, problem: String| {
                Status::invalid_argument(format!("invalid {field}: step `{id}`: {problem}"))
            };
            let task = step
                .task
                .ok_or_else(|| in_step("task.composite.steps.task", "is required".to_owned()))?;
            let task_type = TaskType::new(task.r#type)
                .map_err(|error| in_step("task.composite.steps.task.type", error.to_string()))?;
            let after = step
                .after
                .into_iter()
                .map(|after| {
                    StepId::new(after)
                        .map_err(|error| in_step("task.composite.steps.after", error.to_string()))
                })
                .collect::<Result<_, _>>()?;
            let input_from = if task.input_from.is_empty() {
                None
            } else {
                Some(StepId::new(task.input_from).map_err(|error| {
                    in_step("task.composite.steps.task.input_from", error.to_string())
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
            Some(name("task.composite.output_step", composite.output_step)?)
        },
    })
}

/// A name read from `field`: a refused one is `INVALID_ARGUMENT` naming
/// the field.
pub(crate) fn name<T: TryFrom<String, Error = NameError>>(
    field: &'static str,
    value: String,
) -> Result<T, Status> {
    T::try_from(value).map_err(|error| from_core(grym_core::Error::invalid_name(field, error)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tonic::Code;

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
        task_from_api(task, Tenant::anonymous())
    }

    fn invalid_message(task: Option<api::Task>) -> String {
        let status = task_from_api(task, Tenant::anonymous()).unwrap_err();
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
}
