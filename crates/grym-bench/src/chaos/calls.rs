//! The calls of a chaos run: `ExecuteTask` at a fixed rate (open loop),
//! each call's answer kept whole rather than only counted, so that retries
//! and first choices can be read from the results.
//!
//! Every call carries a deadline (`grpc-timeout`) and is waited for at most
//! that deadline plus a grace; a call still without an answer then is
//! unanswered. A run therefore ends at most deadline + grace after its last
//! call was due, whatever grymd does.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use grym_proto::orchestrator::v1 as api;
use grym_proto::status::code_name;
use serde::Serialize;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use api::orchestrator_client::OrchestratorClient;

use crate::load::{Payload, connect};
use crate::schedule::Schedule;

/// What came back for one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Answer {
    /// A task result.
    Result {
        /// Why it did not succeed: its error's gRPC code (`UNAVAILABLE`),
        /// or its status when it carries no error; `None` when it
        /// succeeded.
        failure: Option<String>,
        /// The model of each call made to a worker, in order
        /// (`metrics.attempts`).
        attempts: Vec<String>,
    },
    /// The call itself failed with this gRPC code.
    Status {
        /// The code's name, `UNAVAILABLE`.
        code: String,
    },
    /// No answer within the call's deadline and the grace.
    Unanswered,
}

impl Answer {
    /// The answer a task result gives.
    fn of(result: &api::TaskResult) -> Self {
        let attempts = result
            .metrics
            .as_ref()
            .map(|metrics| {
                metrics
                    .attempts
                    .iter()
                    .map(|attempt| attempt.model_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let failure = match result.status() {
            api::TaskStatus::Succeeded => None,
            status => Some(
                result
                    .error
                    .as_ref()
                    .map(|error| error.code.clone())
                    .filter(|code| !code.is_empty())
                    .unwrap_or_else(|| status.as_str_name().to_owned()),
            ),
        };
        Self::Result { failure, attempts }
    }
}

/// One call of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    /// When it was due, from the start of the run.
    pub(crate) due: Duration,
    /// What came back.
    pub(crate) answer: Answer,
}

/// Connections to grymd and the task every call asks it to run.
pub(crate) struct Caller {
    clients: Vec<OrchestratorClient<Channel>>,
    request: api::ExecuteTaskRequest,
}

impl Caller {
    /// Opens `connections` HTTP/2 connections to grymd at `address`.
    pub(crate) async fn connect(
        address: SocketAddr,
        connections: usize,
        task_type: &str,
    ) -> anyhow::Result<Self> {
        let mut clients = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            clients.push(OrchestratorClient::new(connect(address).await?));
        }
        let payload = Payload::text(task_type, 64);
        let request = api::ExecuteTaskRequest {
            task: Some(api::Task {
                r#type: payload.task_type,
                input: Some(api::TaskInput {
                    kind: Some(api::task_input::Kind::Text(payload.text)),
                }),
                ..api::Task::default()
            }),
        };
        Ok(Self { clients, request })
    }

    /// Call `index`, on connection `index mod connections`, with
    /// `deadline` as its `grpc-timeout`.
    fn call(
        &self,
        index: u64,
        deadline: Duration,
    ) -> impl Future<Output = Answer> + Send + 'static {
        let connection = usize::try_from(index % self.clients.len().max(1) as u64).unwrap_or(0);
        let mut client = self.clients[connection].clone();
        let mut request = tonic::Request::new(self.request.clone());
        request.set_timeout(deadline);
        async move {
            match client.execute_task(request).await {
                Ok(response) => match response.into_inner().result {
                    Some(result) => Answer::of(&result),
                    None => Answer::Status {
                        code: "NO_RESULT".to_owned(),
                    },
                },
                Err(status) => Answer::Status {
                    code: code_name(status.code()).to_owned(),
                },
            }
        }
    }
}

/// Calls grymd at `rate` per second for `duration`, each call with
/// `deadline`, and returns every call in the order it was due.
pub(crate) async fn open_loop(
    caller: &Arc<Caller>,
    rate: f64,
    duration: Duration,
    deadline: Duration,
    grace: Duration,
) -> anyhow::Result<Vec<Call>> {
    let schedule = Schedule::new(rate).context("the rate must be positive")?;
    let total = schedule.count_within(duration);
    let start = tokio::time::Instant::now();
    // Dropping the set (an interrupted run) aborts every call in flight.
    let mut calls = JoinSet::new();
    for index in 0..total {
        let due = schedule.offset(index);
        // Calls go out on time whether or not earlier ones have answered;
        // tokio's timer releases them within a millisecond of it.
        tokio::time::sleep_until(start + due).await;
        let call = caller.call(index, deadline);
        calls.spawn(async move {
            let answer = tokio::time::timeout(deadline + grace, call)
                .await
                .unwrap_or(Answer::Unanswered);
            (index, Call { due, answer })
        });
    }
    let mut done = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    while let Some(joined) = calls.join_next().await {
        done.push(joined.context("a call's task failed")?);
    }
    done.sort_by_key(|(index, _)| *index);
    Ok(done.into_iter().map(|(_, call)| call).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(model: &str) -> api::Attempt {
        api::Attempt {
            model_id: model.to_owned(),
            ..api::Attempt::default()
        }
    }

    #[test]
    fn a_result_gives_its_failure_code_and_the_model_of_each_attempt() {
        let failed = api::TaskResult {
            status: api::TaskStatus::Failed.into(),
            error: Some(api::TaskError {
                code: "UNAVAILABLE".to_owned(),
                message: "gone".to_owned(),
            }),
            metrics: Some(api::OrchestrationMetrics {
                attempts: vec![attempt("sim"), attempt("sim")],
                ..api::OrchestrationMetrics::default()
            }),
            ..api::TaskResult::default()
        };
        assert_eq!(
            Answer::of(&failed),
            Answer::Result {
                failure: Some("UNAVAILABLE".to_owned()),
                attempts: vec!["sim".to_owned(), "sim".to_owned()],
            }
        );
        let late = api::TaskResult {
            status: api::TaskStatus::DeadlineExceeded.into(),
            ..api::TaskResult::default()
        };
        assert_eq!(
            Answer::of(&late),
            Answer::Result {
                failure: Some("TASK_STATUS_DEADLINE_EXCEEDED".to_owned()),
                attempts: Vec::new(),
            }
        );
        let succeeded = api::TaskResult {
            status: api::TaskStatus::Succeeded.into(),
            metrics: Some(api::OrchestrationMetrics {
                attempts: vec![attempt("backup")],
                ..api::OrchestrationMetrics::default()
            }),
            ..api::TaskResult::default()
        };
        assert_eq!(
            Answer::of(&succeeded),
            Answer::Result {
                failure: None,
                attempts: vec!["backup".to_owned()],
            }
        );
    }
}
