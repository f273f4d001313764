//! A task from the command line: a task file (the contract's JSON, or the
//! same in YAML, as grpcurl's `-d` takes it; composites included), then the
//! flags over it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use grym_proto::orchestrator::v1 as api;

/// How urgent a task is.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Priority {
    Low,
    Normal,
    High,
    Critical,
}

/// The task flags every task-taking subcommand shares.
#[derive(Debug, clap::Args)]
pub(crate) struct TaskArgs {
    /// The task type, for example `audio_analysis`, `transcription` or
    /// `text_generation`; over the file's.
    #[arg(value_name = "TYPE")]
    task_type: Option<String>,
    /// A task file: a grym.orchestrator.v1.Task as JSON, or YAML (`.yaml`,
    /// `.yml`), composites included; `-` reads standard input.
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    /// Text input.
    #[arg(long, group = "input")]
    text: Option<String>,
    /// Audio input: a file (WAV, FLAC, ...), its format recognised from its
    /// bytes unless `--mime-type` names it.
    #[arg(long, value_name = "FILE", group = "input")]
    audio: Option<PathBuf>,
    /// The audio's MIME type, for example `audio/wav`.
    #[arg(long, requires = "audio")]
    mime_type: Option<String>,
    /// Structured input: a JSON file (`-` reads standard input).
    #[arg(long, value_name = "FILE", group = "input")]
    json: Option<PathBuf>,
    /// The task's id (the server assigns one when absent).
    #[arg(long)]
    id: Option<String>,
    /// Model parameters, a JSON object.
    #[arg(long, value_name = "JSON")]
    parameters: Option<String>,
    /// Context for the models, a JSON object.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
    /// How urgent the task is.
    #[arg(long, value_enum)]
    priority: Option<Priority>,
    /// The longest the task may take, for example `30s` or `2m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// A session whose context the task receives.
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Tasks that must have succeeded first (repeatable).
    #[arg(long, value_name = "ID")]
    depends_on: Vec<String>,
}

impl TaskArgs {
    /// The task the file and flags describe.
    pub(crate) fn task(&self) -> anyhow::Result<api::Task> {
        let mut task = match &self.file {
            Some(path) => task_file(path)?,
            None => api::Task::default(),
        };
        if let Some(task_type) = &self.task_type {
            task.r#type = task_type.clone();
        }
        let input = if let Some(text) = &self.text {
            Some(api::task_input::Kind::Text(text.clone()))
        } else if let Some(path) = &self.audio {
            let data =
                std::fs::read(path).with_context(|| format!("--audio {}", path.display()))?;
            Some(api::task_input::Kind::Audio(api::Audio {
                data: Bytes::from(data),
                mime_type: self.mime_type.clone().unwrap_or_default(),
            }))
        } else if let Some(path) = &self.json {
            let value: serde_json::Value = serde_json::from_slice(&read(path)?)
                .with_context(|| format!("--json {} is not JSON", path.display()))?;
            Some(api::task_input::Kind::Json(
                grym_proto::json::json_to_value(value),
            ))
        } else {
            None
        };
        if let Some(kind) = input {
            task.input = Some(api::TaskInput { kind: Some(kind) });
        }
        if let Some(id) = &self.id {
            task.id = id.clone();
        }
        if let Some(parameters) = &self.parameters {
            task.parameters = Some(object(parameters, "--parameters")?);
        }
        if let Some(context) = &self.context {
            task.context = Some(object(context, "--context")?);
        }
        if let Some(priority) = self.priority {
            task.priority = match priority {
                Priority::Low => api::Priority::Low,
                Priority::Normal => api::Priority::Normal,
                Priority::High => api::Priority::High,
                Priority::Critical => api::Priority::Critical,
            }
            .into();
        }
        if let Some(timeout) = self.timeout {
            task.timeout = Some(prost_types::Duration::try_from(timeout).context("--timeout")?);
        }
        if let Some(session) = &self.session {
            task.session_id = session.clone();
        }
        task.depends_on.extend(self.depends_on.iter().cloned());
        if task.r#type.is_empty() {
            bail!("name the task type: `grym execute TYPE ...`, or `type` in the task file");
        }
        Ok(task)
    }
}

/// A JSON object given on the command line, as a protobuf `Struct`.
pub(crate) fn object(text: &str, flag: &str) -> anyhow::Result<prost_types::Struct> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(grym_proto::json::json_to_struct(map)),
        Ok(_) => bail!("{flag} must be a JSON object"),
        Err(error) => bail!("{flag} is not JSON: {error}"),
    }
}

/// A file's bytes, or standard input's for `-`.
pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .context("reading standard input")?;
        return Ok(bytes);
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// A task file, JSON or YAML.
fn task_file(path: &Path) -> anyhow::Result<api::Task> {
    let bytes = read(path)?;
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let value: serde_json::Value = if yaml {
        serde_yaml_ng::from_slice(&bytes)
            .with_context(|| format!("{} is not YAML", path.display()))?
    } else {
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))?
    };
    grym_mcp::json::from_json(value).with_context(|| format!("the task in {}", path.display()))
}
