//! Load for the tests of faults: `ExecuteTask` calls at a fixed rate (open
//! loop) or a few at a time, each call's answer kept whole, and the wait
//! until grymd sees every replica serving.
//!
//! Every call carries a deadline (`grpc-timeout`) and is waited for at most
//! that deadline plus a grace; one still without an answer then is
//! [`Answer::Unanswered`]. So a run ends at most deadline + grace after its
//! last call, whatever grymd does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use grym_proto::orchestrator::v1 as api;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::OrchestratorClient;

/// What came back for one call.
#[derive(Debug, Clone, Default)]
pub enum Answer {
    /// A task result.
    Result(Box<api::TaskResult>),
    /// The call itself failed.
    Status(tonic::Status),
    /// No answer within the call's deadline and the grace.
    #[default]
    Unanswered,
}

impl Answer {
    /// Whether a result came back and succeeded.
    pub fn succeeded(&self) -> bool {
        matches!(self, Self::Result(result) if result.status() == api::TaskStatus::Succeeded)
    }

    /// The model of the first call made to a worker, when a result says.
    pub fn first_model(&self) -> Option<&str> {
        match self {
            Self::Result(result) => result
                .metrics
                .as_ref()
                .and_then(|metrics| metrics.attempts.first())
                .map(|attempt| attempt.model_id.as_str()),
            Self::Status(_) | Self::Unanswered => None,
        }
    }
}

/// How calls are made: their deadline and the grace after it.
#[derive(Debug, Clone, Copy)]
pub struct Calls {
    /// Every call's `grpc-timeout`.
    pub deadline: Duration,
    /// How long past its deadline a call is waited for.
    pub grace: Duration,
}

impl Calls {
    /// One call of `request`; its answer.
    async fn one(
        self,
        mut client: OrchestratorClient<Channel>,
        request: api::ExecuteTaskRequest,
    ) -> Answer {
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.deadline);
        let call = async move {
            match client.execute_task(request).await {
                Ok(response) => match response.into_inner().result {
                    Some(result) => Answer::Result(Box::new(result)),
                    None => Answer::Status(tonic::Status::internal("an answer without a result")),
                },
                Err(status) => Answer::Status(status),
            }
        };
        tokio::time::timeout(self.deadline + self.grace, call)
            .await
            .unwrap_or(Answer::Unanswered)
    }

    /// Calls `request` `rate` times a second for `duration`, on time
    /// whether or not earlier calls have answered; every answer, in the
    /// order the calls were due.
    pub async fn open_loop(
        self,
        client: &OrchestratorClient<Channel>,
        request: &api::ExecuteTaskRequest,
        rate: f64,
        duration: Duration,
    ) -> Vec<Answer> {
        assert!(rate > 0.0, "the rate must be positive");
        let total = (duration.as_secs_f64() * rate).ceil() as usize;
        let start = tokio::time::Instant::now();
        let mut calls = JoinSet::new();
        for index in 0..total {
            tokio::time::sleep_until(start + Duration::from_secs_f64(index as f64 / rate)).await;
            let call = self.one(client.clone(), request.clone());
            calls.spawn(async move { (index, call.await) });
        }
        collect(calls, total).await
    }

    /// Makes `count` calls of `request`, at most `in_flight` at once, each
    /// sent when an earlier one has answered; every answer, in the order
    /// the calls were sent.
    pub async fn few_at_a_time(
        self,
        client: &OrchestratorClient<Channel>,
        request: &api::ExecuteTaskRequest,
        count: usize,
        in_flight: usize,
    ) -> Vec<Answer> {
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        let mut calls = JoinSet::new();
        for index in 0..count {
            let slot = Arc::clone(&slots)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let call = self.one(client.clone(), request.clone());
            calls.spawn(async move {
                let answer = call.await;
                drop(slot);
                (index, answer)
            });
        }
        collect(calls, count).await
    }
}

async fn collect(mut calls: JoinSet<(usize, Answer)>, total: usize) -> Vec<Answer> {
    let mut answers: Vec<Option<Answer>> = vec![None; total];
    while let Some(joined) = calls.join_next().await {
        let (index, answer) = joined.expect("a call's task panicked");
        answers[index] = Some(answer);
    }
    answers.into_iter().map(Option::unwrap_or_default).collect()
}

/// Waits (at most `timeout`) until grymd lists `models` models, each
/// described by its worker and every replica serving.
pub async fn all_replicas_serving(
    client: &OrchestratorClient<Channel>,
    models: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut client = client.clone();
    let poll = async {
        loop {
            if let Ok(response) = client.list_models(api::ListModelsRequest {}).await {
                let listed = response.into_inner().models;
                if listed.len() == models
                    && listed.iter().all(|model| {
                        model.capability_source() != api::CapabilitySource::Unspecified
                            && model
                                .replicas
                                .iter()
                                .all(|replica| replica.health() == api::ModelHealth::Serving)
                    })
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(timeout, poll).await.is_err() {
        bail!("grymd did not see every replica of {models} models serving within {timeout:?}");
    }
    Ok(())
}
