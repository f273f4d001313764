//! Step 1 of a task's way: check what the task carries and recognise its
//! input, so that later steps can rely on it.
//!
//! The one place a task's content is checked before any work: its input,
//! its context and, for a composite, each step's input and context (the
//! step named in the error). Names were checked when the request was read
//! (by their types' constructors) and a composite's structure is checked
//! when its [`Graph`](super::graph) is built.

use serde_json::Value;

use crate::context::ContextManager;
use crate::error::Error;
use crate::ids::Modality;
use crate::limits::Limits;
use crate::task::{Task, TaskInput};

/// What analysis learnt of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// The input's modality.
    pub modality: Modality,
    /// The audio's MIME type, given or recognised; `None` for other inputs.
    pub mime_type: Option<String>,
}

/// Validates a task (its input, recognising audio, its context, and a
/// composite's steps' inputs and contexts) and says what it carries.
pub(crate) fn analyse(
    task: &mut Task,
    context: &ContextManager,
    limits: &Limits,
) -> Result<Requirements, Error> {
    let _span = tracing::debug_span!("analyse").entered();
    let requirements = analyse_input(&mut task.input, &INPUT_FIELDS, limits)?;
    limits.check_object_depth("task.context", &task.context)?;
    context.check("task.context", &task.context)?;
    check_parameters("task.parameters", &task.parameters, limits)?;
    check_depends_on("task.depends_on", task.depends_on.len(), limits)?;
    if let Some(composite) = &mut task.composite {
        if composite.steps.len() > limits.max_steps {
            return Err(Error::invalid(
                "task.composite.steps",
                format!(
                    "{} steps, over the limit of {}",
                    composite.steps.len(),
                    limits.max_steps
                ),
            ));
        }
        for step in &mut composite.steps {
            let step_task = &mut step.task;
            let checked = limits
                .check_object_depth("task.composite.steps.task.context", &step_task.context)
                .and_then(|()| {
                    context.check("task.composite.steps.task.context", &step_task.context)
                })
                .and_then(|()| {
                    check_parameters(
                        "task.composite.steps.task.parameters",
                        &step_task.parameters,
                        limits,
                    )
                })
                .and_then(|()| match &mut step_task.input {
                    Some(input) => analyse_input(input, &STEP_INPUT_FIELDS, limits).map(drop),
                    None => Ok(()),
                });
            checked.map_err(|error| Error::InStep {
                step: step.id.clone(),
                error: Box::new(error),
            })?;
        }
    }
    Ok(requirements)
}

/// The names of an input's fields in errors.
struct InputFields {
    json: &'static str,
    audio_data: &'static str,
    mime_type: &'static str,
}

const INPUT_FIELDS: InputFields = InputFields {
    json: "task.input.json",
    audio_data: "task.input.audio.data",
    mime_type: "task.input.audio.mime_type",
};

const STEP_INPUT_FIELDS: InputFields = InputFields {
    json: "task.composite.steps.task.input.json",
    audio_data: "task.composite.steps.task.input.audio.data",
    mime_type: "task.composite.steps.task.input.audio.mime_type",
};

/// Parameters within their size and depth.
fn check_parameters(
    field: &'static str,
    parameters: &serde_json::Map<String, Value>,
    limits: &Limits,
) -> Result<(), Error> {
    limits.check_object_depth(field, parameters)?;
    let bytes = crate::context::weight(parameters);
    if bytes > limits.max_parameters_bytes {
        return Err(Error::invalid(
            field,
            format!(
                "is {bytes} bytes, over the limit of {}",
                limits.max_parameters_bytes
            ),
        ));
    }
    Ok(())
}

/// A `depends_on` (or `after`) list within its length.
fn check_depends_on(field: &'static str, len: usize, limits: &Limits) -> Result<(), Error> {
    if len > limits.max_depends_on {
        return Err(Error::invalid(
            field,
            format!(
                "lists {len} ids, over the limit of {}",
                limits.max_depends_on
            ),
        ));
    }
    Ok(())
}

/// [`analyse`] for one input; `fields` name its parts in errors.
fn analyse_input(
    input: &mut TaskInput,
    fields: &InputFields,
    limits: &Limits,
) -> Result<Requirements, Error> {
    let (modality, mime_type) = match input {
        TaskInput::Text(_) => (Modality::Text, None),
        TaskInput::Json(value) => {
            limits.check_depth(fields.json, value)?;
            (Modality::Json, None)
        }
        TaskInput::Audio(audio) => {
            if audio.data.is_empty() {
                return Err(Error::invalid(fields.audio_data, "must not be empty"));
            }
            if audio.mime_type.len() > limits.max_mime_type_bytes {
                return Err(Error::invalid(
                    fields.mime_type,
                    format!(
                        "is {} bytes, over the limit of {}",
                        audio.mime_type.len(),
                        limits.max_mime_type_bytes
                    ),
                ));
            }
            if audio.mime_type.is_empty() {
                audio.mime_type = infer::get(&audio.data)
                    .map_or("application/octet-stream", |kind| kind.mime_type())
                    .to_owned();
            }
            (Modality::Audio, Some(audio.mime_type.clone()))
        }
    };
    Ok(Requirements {
        modality,
        mime_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextSettings;
    use crate::ids::{TaskId, TaskType};
    use crate::task::Audio;
    use bytes::Bytes;

    fn audio_task(data: &'static [u8], mime_type: &str) -> Task {
        Task::new(
            TaskId::generate(),
            TaskType::new("audio_analysis").unwrap(),
            TaskInput::Audio(Audio {
                data: Bytes::from_static(data),
                mime_type: mime_type.to_owned(),
            }),
        )
    }

    fn mime_of(task: &Task) -> &str {
        match &task.input {
            TaskInput::Audio(audio) => &audio.mime_type,
            other => panic!("audio expected, got {other:?}"),
        }
    }

    #[test]
    fn wav_is_recognised_by_its_bytes() {
        let mut task = audio_task(b"RIFF\x24\x00\x00\x00WAVEfmt ", "");
        let requirements = analyse(
            &mut task,
            &ContextManager::new(ContextSettings::default()),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(requirements.modality, Modality::Audio);
        assert_eq!(mime_of(&task), "audio/x-wav");
    }

    #[test]
    fn a_given_mime_type_is_kept() {
        let mut task = audio_task(b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav");
        analyse(
            &mut task,
            &ContextManager::new(ContextSettings::default()),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(mime_of(&task), "audio/wav");
    }

    #[test]
    fn empty_audio_names_the_field() {
        let mut task = audio_task(b"", "audio/wav");
        match analyse(
            &mut task,
            &ContextManager::new(ContextSettings::default()),
            &Limits::default(),
        )
        .unwrap_err()
        {
            Error::InvalidRequest { field, .. } => assert_eq!(field, "task.input.audio.data"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
