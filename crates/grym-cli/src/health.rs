//! `grym health`: one `grpc.health.v1` Check, for container healthchecks
//! and scripts.
//!
//! grymd, the Rust workers and the Python workers all serve the protocol,
//! so one command checks any of them: the whole server by default (`""`),
//! or a service name (`grym.model/<id>` on grymd). The answer is the exit
//! code: 0 only for `SERVING`; the reason for anything else is one line on
//! standard error, because a Docker HEALTHCHECK keeps that line in
//! `docker inspect` and a Kubernetes exec probe in the pod's events.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::client::Connection;
use crate::output::Format;
use crate::{Failure, exit, print, refused};

/// What `grym health` takes beyond the connection.
#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// The service name to check: empty for the whole server, or one the
    /// server reports, such as `grym.model/gama` on grymd or
    /// `grym.worker.v1.ModelWorker` on a worker.
    #[arg(long, default_value = "")]
    service: String,
    /// The longest the whole check may take, connecting included: a
    /// healthcheck must answer before its runner gives up on it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    timeout: Duration,
}

/// Checks `args.service` on the server of `connection`: 0 when it is
/// `SERVING`, [`exit::FAILED`] when the server answers anything else
/// (including that it does not know the name), [`exit::REFUSED`] when no
/// answer comes (unreachable, too slow, no health service).
pub(crate) async fn check(
    connection: &Connection,
    format: Format,
    args: HealthArgs,
) -> Result<u8, Failure> {
    let name = if args.service.is_empty() {
        "the server".to_owned()
    } else {
        format!("service `{}`", args.service)
    };
    let asked = ask(connection, &args.service, &name, args.timeout);
    let answer = tokio::time::timeout(args.timeout, asked)
        .await
        .map_err(|_| too_slow(&name, args.timeout))??;
    let status = ServingStatus::try_from(answer).unwrap_or(ServingStatus::Unknown);
    let spelled = status.as_str_name();
    match format {
        Format::Json => print(&format!(
            "{}\n",
            serde_json::json!({ "service": args.service, "status": spelled })
        ))?,
        Format::Text if status == ServingStatus::Serving => print(&format!("{spelled}\n"))?,
        Format::Text => {}
    }
    if status == ServingStatus::Serving {
        return Ok(0);
    }
    Err(Failure {
        code: exit::FAILED,
        error: anyhow::anyhow!("{name} is {spelled}"),
    })
}

/// No answer within `timeout`.
fn too_slow(name: &str, timeout: Duration) -> Failure {
    refused(anyhow::anyhow!(
        "{name} did not answer its health check within {} (--timeout)",
        humantime::format_duration(timeout)
    ))
}

/// The raw status the server answers, or why there is none.
async fn ask(
    connection: &Connection,
    service: &str,
    name: &str,
    timeout: Duration,
) -> Result<i32, Failure> {
    let channel = connection.connect("the server").await.map_err(refused)?;
    let mut request = connection.request(HealthCheckRequest {
        service: service.to_owned(),
    });
    // The server stops working on it too once the caller has given up;
    // tonic ends the call itself at that deadline, as CANCELLED.
    request.set_timeout(timeout);
    match HealthClient::new(channel).check(request).await {
        Ok(response) => Ok(response.into_inner().status),
        // The protocol's answer for a name the server does not report.
        Err(status) if status.code() == Code::NotFound => Err(Failure {
            code: exit::FAILED,
            error: anyhow::anyhow!(
                "the server reports no health of service `{service}`: {}",
                status.message()
            ),
        }),
        Err(status) if status.code() == Code::Unimplemented => Err(refused(anyhow::anyhow!(
            "the server does not serve grpc.health.v1"
        ))),
        Err(status) if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded) => {
            Err(too_slow(name, timeout))
        }
        Err(status) => Err(crate::status(status)),
    }
}
