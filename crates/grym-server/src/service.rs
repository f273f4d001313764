//! The `grym.orchestrator.v1.Orchestrator` service: convert, call the
//! orchestrator, map the error. Nothing else belongs here.

use std::sync::Arc;

use grym_core::Orchestrator;
use grym_proto::orchestrator::v1 as api;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::deadline::Deadline;
use crate::status::from_core;

/// The gRPC face of an [`Orchestrator`].
pub(crate) struct OrchestratorService {
    orchestrator: Arc<Orchestrator>,
}

impl OrchestratorService {
    pub(crate) fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Self { orchestrator }
    }
}

#[tonic::async_trait]
impl api::orchestrator_server::Orchestrator for OrchestratorService {
    async fn execute_task(
        &self,
        request: Request<api::ExecuteTaskRequest>,
    ) -> Result<Response<api::ExecuteTaskResponse>, Status> {
        let deadline = request.extensions().get::<Deadline>().map(|d| d.0);
        let task = convert::task_from_api(request.into_inner().task)?;
        let result = self
            .orchestrator
            .execute(task, deadline)
            .await
            .map_err(from_core)?;
        Ok(Response::new(convert::execute_response(result)))
    }

    async fn plan_task(
        &self,
        request: Request<api::PlanTaskRequest>,
    ) -> Result<Response<api::PlanTaskResponse>, Status> {
        let task = convert::task_from_api(request.into_inner().task)?;
        let (analysis, routing) = self.orchestrator.plan(task).map_err(from_core)?;
        Ok(Response::new(convert::plan_response(analysis, &routing)))
    }

    async fn list_models(
        &self,
        _request: Request<api::ListModelsRequest>,
    ) -> Result<Response<api::ListModelsResponse>, Status> {
        let registry = self.orchestrator.registry();
        let half_life = self.orchestrator.stats_half_life();
        Ok(Response::new(convert::list_models_response(
            &registry, half_life,
        )))
    }
}
