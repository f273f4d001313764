//! The `grym.orchestrator.v1.Orchestrator` service: convert, call the
//! orchestrator, map the error. Nothing else belongs here.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use grym_core::{Deadline, Orchestrator, SessionId, TaskEvent, TaskId, Tenant};
use grym_proto::orchestrator::v1 as api;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::convert::{self, name};
use super::results;
use super::status::from_core;
use crate::layers::{deadline, tenant};

/// The gRPC face of an [`Orchestrator`].
pub(crate) struct OrchestratorService {
    orchestrator: Arc<Orchestrator>,
}

impl OrchestratorService {
    pub(crate) fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Self { orchestrator }
    }
}

impl OrchestratorService {
    /// The task of a submission; a malformed one is counted as rejected,
    /// like those the core refuses.
    fn task(&self, task: Option<api::Task>, tenant: Tenant) -> Result<grym_core::Task, Status> {
        convert::task_from_api(task, tenant).inspect_err(|_| {
            self.orchestrator.record_rejection("invalid");
        })
    }
}

#[tonic::async_trait]
impl api::orchestrator_server::Orchestrator for OrchestratorService {
    async fn execute_task(
        &self,
        request: Request<api::ExecuteTaskRequest>,
    ) -> Result<Response<api::ExecuteTaskResponse>, Status> {
        let deadline = deadline::of(&request);
        let tenant = tenant::of(&request);
        let task = self.task(request.into_inner().task, tenant)?;
        let result = self
            .orchestrator
            .execute_shared(task, deadline, None)
            .await
            .map_err(from_core)?;
        Ok(Response::new(results::execute_response(&result)))
    }

    async fn submit_task(
        &self,
        request: Request<api::SubmitTaskRequest>,
    ) -> Result<Response<api::SubmitTaskResponse>, Status> {
        let tenant = tenant::of(&request);
        let task = self.task(request.into_inner().task, tenant)?;
        let handle = self
            .orchestrator
            .submit(task, Deadline::NONE, None)
            .await
            .map_err(from_core)?;
        Ok(Response::new(results::submit_response(handle.id())))
    }

    async fn get_task(
        &self,
        request: Request<api::GetTaskRequest>,
    ) -> Result<Response<api::GetTaskResponse>, Status> {
        let tenant = tenant::of(&request);
        let id: TaskId = name("task_id", request.into_inner().task_id)?;
        let result = self
            .orchestrator
            .get(&id, &tenant)
            .await
            .map_err(from_core)?;
        Ok(Response::new(results::get_response(result)))
    }

    async fn cancel_task(
        &self,
        request: Request<api::CancelTaskRequest>,
    ) -> Result<Response<api::CancelTaskResponse>, Status> {
        let tenant = tenant::of(&request);
        let id: TaskId = name("task_id", request.into_inner().task_id)?;
        let result = self
            .orchestrator
            .cancel(&id, &tenant)
            .await
            .map_err(from_core)?;
        Ok(Response::new(results::cancel_response(result)))
    }

    type StreamTaskStream =
        Pin<Box<dyn Stream<Item = Result<api::StreamTaskResponse, Status>> + Send + 'static>>;

    async fn stream_task(
        &self,
        request: Request<api::StreamTaskRequest>,
    ) -> Result<Response<Self::StreamTaskStream>, Status> {
        let deadline = deadline::of(&request);
        let tenant = tenant::of(&request);
        let task = self.task(request.into_inner().task, tenant)?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let handle = self
            .orchestrator
            .stream(task, deadline, sender)
            .await
            .map_err(from_core)?;
        let id = handle.id().clone();
        // Closing the stream before the result cancels the task.
        let cancel_on_drop = Some(handle.cancellation().drop_guard());
        let events = futures::stream::unfold(
            (receiver, cancel_on_drop),
            move |(mut receiver, mut cancel_on_drop)| {
                let id = id.clone();
                async move {
                    let event = receiver.recv().await?;
                    if matches!(event, TaskEvent::Finished(_))
                        && let Some(guard) = cancel_on_drop.take()
                    {
                        guard.disarm();
                    }
                    Some((
                        Ok(results::stream_event(&id, event)),
                        (receiver, cancel_on_drop),
                    ))
                }
            },
        );
        Ok(Response::new(Box::pin(events)))
    }

    type WatchTaskStream =
        Pin<Box<dyn Stream<Item = Result<api::WatchTaskResponse, Status>> + Send + 'static>>;

    async fn watch_task(
        &self,
        request: Request<api::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let tenant = tenant::of(&request);
        let id: TaskId = name("task_id", request.into_inner().task_id)?;
        // An unknown task is refused before the stream opens.
        self.orchestrator
            .get(&id, &tenant)
            .await
            .map_err(from_core)?;
        let changes = self
            .orchestrator
            .watch_task(tenant, id)
            .map(|change| change.map(results::watch_response).map_err(from_core));
        Ok(Response::new(Box::pin(changes)))
    }

    async fn plan_task(
        &self,
        request: Request<api::PlanTaskRequest>,
    ) -> Result<Response<api::PlanTaskResponse>, Status> {
        let tenant = tenant::of(&request);
        let task = convert::task_from_api(request.into_inner().task, tenant)?;
        let (analysis, routing, composite) = self.orchestrator.plan(task).map_err(from_core)?;
        Ok(Response::new(results::plan_response(
            analysis, &routing, composite,
        )))
    }

    async fn put_session_context(
        &self,
        request: Request<api::PutSessionContextRequest>,
    ) -> Result<Response<api::PutSessionContextResponse>, Status> {
        let tenant = tenant::of(&request);
        let request = request.into_inner();
        let id: SessionId = name("session_id", request.session_id)?;
        let context = request
            .context
            .map(grym_proto::json::struct_to_json)
            .unwrap_or_default();
        let session = self
            .orchestrator
            .put_session(&tenant, &id, context, request.replace)
            .await
            .map_err(from_core)?;
        Ok(Response::new(api::PutSessionContextResponse {
            session: Some(results::session_to_api(&id, &session)),
        }))
    }

    async fn get_session_context(
        &self,
        request: Request<api::GetSessionContextRequest>,
    ) -> Result<Response<api::GetSessionContextResponse>, Status> {
        let tenant = tenant::of(&request);
        let id: SessionId = name("session_id", request.into_inner().session_id)?;
        let session = self
            .orchestrator
            .session(&tenant, &id)
            .await
            .map_err(from_core)?;
        Ok(Response::new(api::GetSessionContextResponse {
            session: Some(results::session_to_api(&id, &session)),
        }))
    }

    async fn delete_session_context(
        &self,
        request: Request<api::DeleteSessionContextRequest>,
    ) -> Result<Response<api::DeleteSessionContextResponse>, Status> {
        let tenant = tenant::of(&request);
        let id: SessionId = name("session_id", request.into_inner().session_id)?;
        self.orchestrator
            .delete_session(&tenant, &id)
            .await
            .map_err(from_core)?;
        Ok(Response::new(api::DeleteSessionContextResponse {}))
    }

    async fn get_context_stats(
        &self,
        _request: Request<api::GetContextStatsRequest>,
    ) -> Result<Response<api::GetContextStatsResponse>, Status> {
        let stats = self.orchestrator.context_stats().await;
        Ok(Response::new(results::context_stats_response(stats)))
    }

    async fn get_bottlenecks(
        &self,
        _request: Request<api::GetBottlenecksRequest>,
    ) -> Result<Response<api::GetBottlenecksResponse>, Status> {
        Ok(Response::new(results::bottlenecks_response(
            &self.orchestrator.bottlenecks(),
            self.orchestrator.bottleneck_settings().interval,
        )))
    }

    async fn list_models(
        &self,
        _request: Request<api::ListModelsRequest>,
    ) -> Result<Response<api::ListModelsResponse>, Status> {
        Ok(Response::new(results::list_models_response(
            self.orchestrator.models(),
        )))
    }
}
