//! `grym`: the command line of grym orchestrator.
//!
//! `grym execute TYPE --text ... | --audio FILE | --json FILE` runs a task
//! and prints its result; `submit`, `get`, `cancel`, `stream`, `plan`,
//! `models`, `bottlenecks` and `session put|get|delete` call the RPCs of the
//! same names; `grym mcp` serves the MCP tools over stdio; `grym health`
//! asks any grym server's `grpc.health.v1` (what container healthchecks
//! run). `--output json` prints the contract's JSON for scripts.
//!
//! Exit codes follow the task's status where a command returns one:
//! 0 succeeded (or still queued or running), 1 failed or skipped,
//! 3 deadline exceeded, 4 cancelled, 5 a dependency failed; 2 is a usage or
//! input error, and 6 a call grymd refused or could not be made. `grym
//! health` exits 0 for `SERVING`, 1 for any other answer, 6 for none.

mod client;
mod health;
mod output;
mod stream;
mod task;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use grym_proto::orchestrator::v1 as api;
use rmcp::ServiceExt as _;
use tokio_stream::StreamExt as _;

use crate::client::Connection;
use crate::output::Format;
use crate::task::TaskArgs;

#[derive(Parser)]
#[command(
    version,
    about = "grym orchestrator's command line: run tasks on the best model, follow them, inspect the models"
)]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    /// How results are printed: `text` for people, `json` (the contract's
    /// JSON mapping) for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text, global = true)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a task to its end and prints its result.
    Execute(TaskArgs),
    /// Accepts a task and prints its id; it runs on its own.
    Submit(TaskArgs),
    /// Prints where a task stands, or its result.
    Get {
        /// The task's id.
        id: String,
    },
    /// Cancels a task and prints its final result.
    Cancel {
        /// The task's id.
        id: String,
    },
    /// Runs a task showing its progress (queued, model chosen, each step and
    /// attempt), then prints its result.
    Stream(TaskArgs),
    /// Shows how a task would be routed now, running nothing.
    Plan(TaskArgs),
    /// Lists the models with their task types, health and load.
    Models,
    /// Lists the bottlenecks the last analysis found.
    Bottlenecks,
    /// Keeps context in a session that tasks naming it receive.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Serves the MCP tools (execute, submit, get, cancel, plan, list models)
    /// over stdio, calling the grymd of `--addr`.
    Mcp,
    /// Checks the `grpc.health.v1` of the server at `--addr` (grymd or a
    /// worker): exits 0 when it is SERVING, else prints why and fails.
    Health(health::HealthArgs),
}

#[derive(Subcommand)]
enum SessionCommand {
    /// Sets a session's context (merged into what is there unless
    /// `--replace`), creating the session.
    Put {
        /// The session's id.
        id: String,
        /// The context: a JSON object.
        #[arg(long, value_name = "JSON", conflicts_with = "file")]
        context: Option<String>,
        /// The context from a JSON file (`-` reads standard input).
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
        /// Replaces the context instead of merging into it.
        #[arg(long)]
        replace: bool,
    },
    /// Prints a session: its context and its tasks' outputs.
    Get {
        /// The session's id.
        id: String,
    },
    /// Deletes a session.
    Delete {
        /// The session's id.
        id: String,
    },
}

/// Exit codes.
mod exit {
    pub(crate) const FAILED: u8 = 1;
    pub(crate) const USAGE: u8 = 2;
    pub(crate) const DEADLINE_EXCEEDED: u8 = 3;
    pub(crate) const CANCELLED: u8 = 4;
    pub(crate) const DEPENDENCY_FAILED: u8 = 5;
    pub(crate) const REFUSED: u8 = 6;
}

/// A failure and the exit code it ends with.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            code: exit::USAGE,
            error,
        }
    }
}

/// A call grymd refused, or could not be made.
pub(crate) fn refused(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: exit::REFUSED,
        error: error.into(),
    }
}

/// The exit code of a task's status.
fn exit_code(status: api::TaskStatus) -> u8 {
    use api::TaskStatus;
    match status {
        TaskStatus::Succeeded | TaskStatus::Queued | TaskStatus::Running => 0,
        TaskStatus::DeadlineExceeded => exit::DEADLINE_EXCEEDED,
        TaskStatus::Cancelled => exit::CANCELLED,
        TaskStatus::DependencyFailed => exit::DEPENDENCY_FAILED,
        TaskStatus::Failed | TaskStatus::Skipped | TaskStatus::Unspecified => exit::FAILED,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to standard error: standard output is for results (and, for
    // `grym mcp`, the protocol).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("grym: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// Prints `text` (already ending in a newline where it should).
pub(crate) fn print(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing standard output")
        .map_err(Failure::from)
}

/// Prints a message as JSON, or for people with `text`.
fn show<M: grym_mcp::json::Message>(
    format: Format,
    message: &M,
    text: impl FnOnce(&M) -> String,
) -> Result<(), Failure> {
    match format {
        Format::Json => print(&format!("{}\n", output::json_pretty(message)?)),
        Format::Text => print(&text(message)),
    }
}

/// Prints a task's result and returns the exit code of its status.
fn show_result(format: Format, result: Option<api::TaskResult>) -> Result<u8, Failure> {
    let result = result.unwrap_or_default();
    show(format, &result, output::result)?;
    Ok(exit_code(result.status()))
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    let format = cli.output;
    let connection = cli.connection;
    match cli.command {
        Command::Mcp => return mcp(&connection).await,
        Command::Health(args) => return health::check(&connection, format, args).await,
        _ => {}
    }
    // Checked before connecting, so a bad flag or file is a usage error.
    let task = match &cli.command {
        Command::Execute(args)
        | Command::Submit(args)
        | Command::Stream(args)
        | Command::Plan(args) => Some(args.task()?),
        _ => None,
    };
    let mut client = connection.client().await.map_err(refused)?;
    match cli.command {
        Command::Execute(_) => {
            let request = client.request(api::ExecuteTaskRequest { task });
            let response = client.inner.execute_task(request).await.map_err(status)?;
            show_result(format, response.into_inner().result)
        }
        Command::Submit(_) => {
            let request = client.request(api::SubmitTaskRequest { task });
            let response = client.inner.submit_task(request).await.map_err(status)?;
            let response = response.into_inner();
            show(format, &response, |r| format!("{}\n", r.task_id))?;
            Ok(0)
        }
        Command::Get { id } => {
            let request = client.request(api::GetTaskRequest { task_id: id });
            let response = client.inner.get_task(request).await.map_err(status)?;
            show_result(format, response.into_inner().result)
        }
        Command::Cancel { id } => {
            let request = client.request(api::CancelTaskRequest { task_id: id });
            let response = client.inner.cancel_task(request).await.map_err(status)?;
            show_result(format, response.into_inner().result)
        }
        Command::Stream(_) => {
            let request = client.request(api::StreamTaskRequest { task });
            let mut events = client
                .inner
                .stream_task(request)
                .await
                .map_err(status)?
                .into_inner();
            let mut progress = stream::Progress::new(format);
            while let Some(event) = events.next().await {
                let event = event.map_err(status)?;
                if let Some(result) = progress.event(event)? {
                    let code = exit_code(result.status());
                    if format == Format::Text {
                        print(&output::result(&result))?;
                    }
                    return Ok(code);
                }
            }
            Err(refused(anyhow::anyhow!(
                "the stream ended before the task's result"
            )))
        }
        Command::Plan(_) => {
            let request = client.request(api::PlanTaskRequest { task });
            let response = client.inner.plan_task(request).await.map_err(status)?;
            show(format, &response.into_inner(), output::plan)?;
            Ok(0)
        }
        Command::Models => {
            let request = client.request(api::ListModelsRequest {});
            let response = client.inner.list_models(request).await.map_err(status)?;
            show(format, &response.into_inner(), output::models)?;
            Ok(0)
        }
        Command::Bottlenecks => {
            let request = client.request(api::GetBottlenecksRequest {});
            let response = client
                .inner
                .get_bottlenecks(request)
                .await
                .map_err(status)?;
            show(format, &response.into_inner(), output::bottlenecks)?;
            Ok(0)
        }
        Command::Session(command) => session(&mut client, format, command).await,
        Command::Mcp | Command::Health(_) => Ok(0),
    }
}

async fn session(
    client: &mut client::Client,
    format: Format,
    command: SessionCommand,
) -> Result<u8, Failure> {
    let session_text = |session: &api::Session| {
        let value = grym_mcp::json::to_json(session).unwrap_or_default();
        format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )
    };
    match command {
        SessionCommand::Put {
            id,
            context,
            file,
            replace,
        } => {
            let text = match (context, file) {
                (Some(text), _) => text,
                (None, Some(path)) => String::from_utf8(task::read(&path)?)
                    .with_context(|| format!("{} is not UTF-8", path.display()))?,
                (None, None) => {
                    return Err(
                        anyhow::anyhow!("give the context: --context JSON or --file FILE").into(),
                    );
                }
            };
            let context = task::object(&text, "the context")?;
            let request = client.request(api::PutSessionContextRequest {
                session_id: id,
                context: Some(context),
                replace,
            });
            let response = client
                .inner
                .put_session_context(request)
                .await
                .map_err(status)?;
            let session = response.into_inner().session.unwrap_or_default();
            show(format, &session, session_text)?;
        }
        SessionCommand::Get { id } => {
            let request = client.request(api::GetSessionContextRequest { session_id: id });
            let response = client
                .inner
                .get_session_context(request)
                .await
                .map_err(status)?;
            let session = response.into_inner().session.unwrap_or_default();
            show(format, &session, session_text)?;
        }
        SessionCommand::Delete { id } => {
            let request = client.request(api::DeleteSessionContextRequest {
                session_id: id.clone(),
            });
            client
                .inner
                .delete_session_context(request)
                .await
                .map_err(status)?;
            match format {
                Format::Json => print("{}\n")?,
                Format::Text => print(&format!("deleted session {id}\n"))?,
            }
        }
    }
    Ok(0)
}

/// A refused call, its code name first as grym's errors spell it.
pub(crate) fn status(status: tonic::Status) -> Failure {
    refused(anyhow::anyhow!("{:?}: {}", status.code(), status.message()))
}

/// `grym mcp`: the MCP tools over stdio, until the client closes it.
async fn mcp(connection: &Connection) -> Result<u8, Failure> {
    let channel = connection.lazy_channel()?;
    let tools = grym_mcp::Tools::new(grym_mcp::transport(channel), connection.credentials(), true);
    let server = tools
        .serve(rmcp::transport::stdio())
        .await
        .context("starting MCP over stdio")
        .map_err(refused)?;
    server
        .waiting()
        .await
        .context("serving MCP over stdio")
        .map_err(refused)?;
    Ok(0)
}
