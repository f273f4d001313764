//! Step 1 of a task's way: check what the task carries and recognise its
//! input, so that later steps can rely on it.
//!
//! The one place a task's content is checked before any work: its input,
//! its context and, for a composite, each step's input and context (the
//! step named in the error). Names were checked when the request was read
//! (by their types' constructors) and a composite's structure is checked
//! when its [`Graph`](super::graph) is built.

use crate::context::ContextManager;
use crate::error::Error;
use crate::task::{Task, TaskInput};

/// What kind of payload a task carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// Plain text.
    Text,
    /// Encoded audio.
    Audio,
    /// Structured JSON.
    Json,
}

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
pub(crate) fn analyse(task: &mut Task, context: &ContextManager) -> Result<Requirements, Error> {
    let _span = tracing::debug_span!("analyse").entered();
    let requirements = analyse_input(&mut task.input, "task.input.audio.data")?;
    context.check("task.context", &task.context)?;
    if let Some(composite) = &mut task.composite {
        for step in &mut composite.steps {
            let checked = context
                .check("task.composite.steps.task.context", &step.task.context)
                .and_then(|()| match &mut step.task.input {
                    Some(input) => {
                        analyse_input(input, "task.composite.steps.task.input.audio.data").map(drop)
                    }
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

/// [`analyse`] for one input; `audio_field` names its audio data in errors.
fn analyse_input(input: &mut TaskInput, audio_field: &'static str) -> Result<Requirements, Error> {
    let (modality, mime_type) = match input {
        TaskInput::Text(_) => (Modality::Text, None),
        TaskInput::Json(_) => (Modality::Json, None),
        TaskInput::Audio(audio) => {
            if audio.data.is_empty() {
                return Err(Error::invalid(audio_field, "must not be empty"));
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
        let requirements =
            analyse(&mut task, &ContextManager::new(ContextSettings::default())).unwrap();
        assert_eq!(requirements.modality, Modality::Audio);
        assert_eq!(mime_of(&task), "audio/x-wav");
    }

    #[test]
    fn a_given_mime_type_is_kept() {
        let mut task = audio_task(b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav");
        analyse(&mut task, &ContextManager::new(ContextSettings::default())).unwrap();
        assert_eq!(mime_of(&task), "audio/wav");
    }

    #[test]
    fn empty_audio_names_the_field() {
        let mut task = audio_task(b"", "audio/wav");
        match analyse(&mut task, &ContextManager::new(ContextSettings::default())).unwrap_err() {
            Error::InvalidRequest { field, .. } => assert_eq!(field, "task.input.audio.data"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
