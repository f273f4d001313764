//! The MCP tools and the server handler that lists and runs them.
//!
//! Arguments are the contract's own JSON: a tool that takes a task takes
//! `{"task": <grym.orchestrator.v1.Task>}` as grpcurl would send it (audio
//! bytes as base64), and, where the handler may read files (stdio),
//! `audio_path` instead of inline audio. Results are the RPC's response
//! message as structured JSON. A refused call is a tool error whose text
//! starts with the gRPC code name (`INVALID_ARGUMENT: task.type ...`).
//!
//! Credentials: on Streamable HTTP the caller's own `Authorization` and
//! `grym-tenant` headers are passed on as the gRPC call's metadata; on
//! stdio, those `grym mcp` was started with.

use std::borrow::Cow;

use bytes::Bytes;
use grym_proto::orchestrator::v1 as api;
use grym_proto::orchestrator::v1::orchestrator_client::OrchestratorClient;
use grym_proto::status::code_name;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Extensions, Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;

use crate::json::{self, Message};

/// The boxed service the tools' tonic client runs on.
pub type Transport = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    TransportError,
>;

/// A failure of the [`Transport`] itself (a named type, not a boxed trait
/// object: the tools' futures must be provably `Send`).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TransportError(tower::BoxError);

/// Boxes a gRPC service (a `tonic` channel, or a server's service stack)
/// into a [`Transport`].
pub fn transport<S, B>(service: S) -> Transport
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError> + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    use tower::ServiceExt as _;
    Transport::new(
        service
            .map_response(|response: http::Response<B>| response.map(tonic::body::Body::new))
            .map_err(|error: S::Error| TransportError(error.into())),
    )
}

/// The credentials a tool call carries when its MCP request brings none.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Sent as `authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// Sent as `grym-tenant` (grymd trusts it only without tokens).
    pub tenant: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// The MCP server handler of the grym tools.
#[derive(Clone)]
pub struct Tools {
    client: OrchestratorClient<Transport>,
    credentials: Credentials,
    read_files: bool,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tools")
            .field("credentials", &self.credentials)
            .field("read_files", &self.read_files)
            .finish_non_exhaustive()
    }
}

/// The arguments of the tools that take a task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskArgs {
    task: Value,
    #[serde(default)]
    audio_path: Option<String>,
}

impl JsonSchema for TaskArgs {
    fn schema_name() -> Cow<'static, str> {
        "TaskArgs".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut schema = match json::schema(api::ExecuteTaskRequest::NAME) {
            Ok(schema) => schema,
            Err(error) => {
                tracing::error!(%error, "no schema for a task");
                serde_json::Map::new()
            }
        };
        schema.insert("type".to_owned(), json!("object"));
        if let Some(Value::Object(properties)) = schema.get_mut("properties") {
            properties.insert(
                "audio_path".to_owned(),
                json!({
                    "type": "string",
                    "description": "A path to an audio file (a WAV, say) on the machine that runs `grym mcp`, read as the task's audio input instead of inline base64 `task.input.audio.data`. Over stdio only."
                }),
            );
        }
        schema.insert("required".to_owned(), json!(["task"]));
        Schema::from(schema)
    }
}

/// The arguments of the tools that name a task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskIdArgs {
    /// The task's id, as `execute_task` or `submit_task` returned it.
    task_id: String,
}

impl Tools {
    /// The tools over `transport`, with `credentials` for calls whose MCP
    /// request carries none; `read_files` lets `audio_path` read the local
    /// file system (for stdio, where the caller owns the machine).
    pub fn new(transport: Transport, credentials: Credentials, read_files: bool) -> Self {
        let client = OrchestratorClient::new(transport)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        Self {
            client,
            credentials,
            read_files,
            tool_router: Self::tool_router(),
        }
    }

    /// `message` as a gRPC request carrying the caller's credentials.
    fn request<M>(&self, message: M, extensions: &Extensions) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        let parts = extensions.get::<http::request::Parts>();
        let header = |name: &str| {
            parts
                .and_then(|parts| parts.headers.get(name))
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let authorization = header("authorization").or_else(|| {
            self.credentials
                .token
                .as_ref()
                .map(|token| format!("Bearer {token}"))
        });
        let tenant = header("grym-tenant").or_else(|| self.credentials.tenant.clone());
        let metadata = request.metadata_mut();
        if let Some(value) = authorization.and_then(|v| MetadataValue::try_from(v).ok()) {
            metadata.insert("authorization", value);
        }
        if let Some(value) = tenant.and_then(|v| MetadataValue::try_from(v).ok()) {
            metadata.insert("grym-tenant", value);
        }
        request
    }

    /// The task of `args`, its audio read from `audio_path` when given.
    fn task(&self, args: TaskArgs) -> Result<api::Task, CallToolResult> {
        let mut task: api::Task = json::from_json(args.task)
            .map_err(|error| refused(format!("INVALID_ARGUMENT: task: {error}")))?;
        if let Some(path) = args.audio_path {
            if !self.read_files {
                return Err(refused(
                    "INVALID_ARGUMENT: audio_path is read over stdio only; send the audio as base64 in task.input.audio.data",
                ));
            }
            let data = std::fs::read(&path).map_err(|error| {
                refused(format!("INVALID_ARGUMENT: audio_path {path}: {error}"))
            })?;
            let mime_type = match task.input.take().and_then(|input| input.kind) {
                Some(api::task_input::Kind::Audio(audio)) => audio.mime_type,
                _ => String::new(),
            };
            task.input = Some(api::TaskInput {
                kind: Some(api::task_input::Kind::Audio(api::Audio {
                    data: Bytes::from(data),
                    mime_type,
                })),
            });
        }
        Ok(task)
    }
}

/// A tool error carrying `message`.
fn refused(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// A refused RPC as a tool error: its code name, then its message.
fn status(status: tonic::Status) -> CallToolResult {
    refused(format!(
        "{}: {}",
        code_name(status.code()),
        status.message()
    ))
}

/// `message` as structured JSON, a tool error when `failed`.
fn answer<M: Message>(message: &M, failed: bool) -> CallToolResult {
    match json::to_json(message) {
        Ok(value) if failed => CallToolResult::structured_error(value),
        Ok(value) => CallToolResult::structured(value),
        Err(error) => refused(format!("INTERNAL: {error}")),
    }
}

/// An RPC's reply as the tool's answer: its response as structured JSON,
/// or the status that refused it.
fn reply<M: Message>(reply: Result<tonic::Response<M>, tonic::Status>) -> CallToolResult {
    match reply {
        Ok(response) => answer(&response.into_inner(), false),
        Err(error) => status(error),
    }
}

/// Whether a task's result is final and not a success.
fn failed(result: Option<&api::TaskResult>) -> bool {
    result.is_some_and(|result| {
        !matches!(
            result.status(),
            api::TaskStatus::Succeeded | api::TaskStatus::Queued | api::TaskStatus::Running
        )
    })
}

/// Either branch of a tool's work is its answer.
fn either(result: Result<CallToolResult, CallToolResult>) -> Result<CallToolResult, ErrorData> {
    Ok(result.unwrap_or_else(|error| error))
}

#[tool_router]
impl Tools {
    /// Runs a task to its end and returns its result.
    #[tool(
        description = "Runs one task on the best available model and waits for its result (grym.orchestrator.v1.TaskResult: status, output with text/json, the model used, routing and metrics). `task.type` names the work, for example `audio_analysis`, `transcription` or `text_generation` (list_models shows which types the models serve); `task.input` is exactly one of text, json or audio (base64 `data`, optional `mime_type`). A result whose status is not TASK_STATUS_SUCCEEDED is a tool error carrying the same result. For long tasks, use submit_task then get_task."
    )]
    async fn execute_task(
        &self,
        Parameters(args): Parameters<TaskArgs>,
        extensions: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        either(
            async {
                let task = self.task(args)?;
                let request =
                    self.request(api::ExecuteTaskRequest { task: Some(task) }, &extensions);
                let response = self
                    .client
                    .clone()
                    .execute_task(request)
                    .await
                    .map_err(status)?;
                let response = response.into_inner();
                Ok(answer(&response, failed(response.result.as_ref())))
            }
            .await,
        )
    }

    /// Accepts a task and returns its id.
    #[tool(
        description = "Accepts a task (the same `task` as execute_task) and returns its id at once ({\"task_id\": ...}); the task runs on its own. Poll it with get_task, stop it with cancel_task. Giving `task.id` makes a retried submission safe (ALREADY_EXISTS while the first runs or its result is kept; get_task answers how it went)."
    )]
    async fn submit_task(
        &self,
        Parameters(args): Parameters<TaskArgs>,
        extensions: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        either(
            async {
                let task = self.task(args)?;
                let request =
                    self.request(api::SubmitTaskRequest { task: Some(task) }, &extensions);
                Ok(reply(self.client.clone().submit_task(request).await))
            }
            .await,
        )
    }

    /// Where a task stands.
    #[tool(
        description = "Where a task stands: its result with status TASK_STATUS_QUEUED or TASK_STATUS_RUNNING while it lives, and its final status, output and metrics once it has ended. NOT_FOUND when unknown or expired."
    )]
    async fn get_task(
        &self,
        Parameters(args): Parameters<TaskIdArgs>,
        extensions: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let request = self.request(
            api::GetTaskRequest {
                task_id: args.task_id,
            },
            &extensions,
        );
        Ok(reply(self.client.clone().get_task(request).await))
    }

    /// Cancels a task.
    #[tool(
        description = "Cancels a task: it leaves the queue or its model call is aborted, ending TASK_STATUS_CANCELLED; a finished task is left as it is. Returns the task's final result."
    )]
    async fn cancel_task(
        &self,
        Parameters(args): Parameters<TaskIdArgs>,
        extensions: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let request = self.request(
            api::CancelTaskRequest {
                task_id: args.task_id,
            },
            &extensions,
        );
        Ok(reply(self.client.clone().cancel_task(request).await))
    }

    /// Shows how a task would be routed.
    #[tool(
        description = "Shows how a task (the same `task` as execute_task) would be routed now, running nothing: the recognised input modality, the chosen model, the fallbacks in order with every candidate's score broken down, and for a composite or recipe the plan of its steps and stages."
    )]
    async fn plan_task(
        &self,
        Parameters(args): Parameters<TaskArgs>,
        extensions: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        either(
            async {
                let task = self.task(args)?;
                let request = self.request(api::PlanTaskRequest { task: Some(task) }, &extensions);
                Ok(reply(self.client.clone().plan_task(request).await))
            }
            .await,
        )
    }

    /// Lists the models.
    #[tool(
        description = "Lists the registered models: their kinds, the task types they serve with declared confidence and estimated latency, health, replicas and live performance statistics."
    )]
    async fn list_models(&self, extensions: Extensions) -> Result<CallToolResult, ErrorData> {
        let request = self.request(api::ListModelsRequest {}, &extensions);
        Ok(reply(self.client.clone().list_models(request).await))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("grym", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "grym orchestrator: delegate work to specialised models. Call list_models to see the task types served, execute_task to run one and get its result, or submit_task then get_task for long work.",
            )
    }
}
