//! TLS and mTLS from grymd to its workers, end to end: real grym-worker
//! processes serving TLS with certificates made for the test, and a real
//! grymd reaching them at `https://` with its `[worker_tls]` settings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::Duration;

use grym_e2e::certs::{Certs, https_endpoint, tls_worker, toml_path};
use grym_e2e::{Grymd, grymd_refusing, task_request, text, worker};
use grym_proto::orchestrator::v1 as api;

/// A guard against hangs, not a performance target.
const NO_HANG: Duration = Duration::from_secs(15);

/// What a worker needs to require client certificates signed by `certs`' CA.
fn client_ca(certs: &Certs) -> String {
    certs.ca().display().to_string()
}

/// The task type only model `id` serves, so a task reaches that model.
fn task_type(id: &str) -> String {
    format!("{id}_text")
}

/// A simulated model `id` serving [`task_type`], with `extra` arguments.
fn sim_args(id: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["sim", "--model-id", id, "--capability", &task_type(id)]
        .map(str::to_owned)
        .to_vec();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// grymd with one worker per `(id, endpoint)` and this `[worker_tls]` body.
/// Capabilities are configured, so a model is listed (and tried) even when
/// grymd never reached its worker.
fn config(workers: &[(&str, String)], worker_tls: &str) -> String {
    let mut config = String::from("builtin_workers = false\nhealth_interval = \"200ms\"\n");
    for (id, endpoint) in workers {
        config.push_str(&format!(
            "[[workers]]\nid = \"{id}\"\nendpoint = \"{endpoint}\"\n\
             capabilities = [{{ task_type = \"{}\", confidence = 0.9 }}]\n",
            task_type(id)
        ));
    }
    config.push_str("[worker_tls]\n");
    config.push_str(worker_tls);
    config
}

/// `ca = ...`, trusting `certs`' CA.
fn trusting(certs: &Certs) -> String {
    format!("ca = {}\n", toml_path(&certs.ca()))
}

/// `ca`, `cert` and `key` from `certs`.
fn with_client_certificate(certs: &Certs) -> String {
    format!(
        "{}cert = {}\nkey = {}\n",
        trusting(certs),
        toml_path(&certs.client_cert()),
        toml_path(&certs.client_key())
    )
}

async fn execute(grymd: &Grymd, model: &str) -> Result<api::TaskResult, tonic::Status> {
    let request = task_request(&task_type(model), text("hello over TLS"));
    let mut client = grymd.client().await;
    let response = tokio::time::timeout(NO_HANG, client.execute_task(request))
        .await
        .expect("ExecuteTask must not hang")?;
    Ok(response.into_inner().result.expect("a result"))
}

/// The health grymd reports for `model`.
async fn health(grymd: &Grymd, model: &str) -> api::ModelHealth {
    let mut client = grymd.client().await;
    let models = client
        .list_models(api::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    models
        .iter()
        .find(|m| m.id == model)
        .map(api::Model::health)
        .unwrap_or_else(|| panic!("`{model}` is not listed: {models:?}"))
}

/// Waits until grymd reports `model` with `wanted` health.
async fn until_health(grymd: &Grymd, model: &str, wanted: api::ModelHealth) {
    let poll = async {
        while health(grymd, model).await != wanted {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(NO_HANG, poll)
        .await
        .unwrap_or_else(|_| panic!("`{model}` did not become {wanted:?}"));
}

/// Asserts a task for `model` does not succeed, and that grymd's log says
/// once, with the reason, that the worker is unreachable over TLS.
async fn assert_unreachable_over_tls(grymd: &Grymd, model: &str, reason: &str) {
    until_health(grymd, model, api::ModelHealth::NotServing).await;
    match execute(grymd, model).await {
        Ok(result) => assert_ne!(result.status(), api::TaskStatus::Succeeded, "{result:?}"),
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
    }
    // Several health checks fail the same way meanwhile.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let log = grymd.process().log();
    let reported: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("worker unreachable over TLS"))
        .collect();
    assert_eq!(reported.len(), 1, "logged once:\n{log}");
    assert!(reported[0].contains(reason), "{}", reported[0]);
}

#[tokio::test]
async fn a_worker_serving_tls_answers_while_an_http_worker_stays_plaintext() {
    let certs = Certs::new();
    let secure = tls_worker(&certs, &strs(&sim_args("secure", &[]))).await;
    let plain = worker(&strs(&sim_args("plain", &[]))).await;
    let grymd = Grymd::start(&config(
        &[
            ("secure", https_endpoint(&secure)),
            ("plain", plain.endpoint()),
        ],
        &trusting(&certs),
    ))
    .await;

    for model in ["secure", "plain"] {
        let result = execute(&grymd, model).await.unwrap();
        assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
        assert_eq!(result.model_id, model);
    }
}

#[tokio::test]
async fn a_worker_requiring_client_certificates_serves_grymd_presenting_one() {
    let certs = Certs::new();
    let ca = client_ca(&certs);
    let mtls = tls_worker(&certs, &strs(&sim_args("mtls", &["--client-ca", &ca]))).await;
    let grymd = Grymd::start(&config(
        &[("mtls", https_endpoint(&mtls))],
        &with_client_certificate(&certs),
    ))
    .await;

    until_health(&grymd, "mtls", api::ModelHealth::Serving).await;
    let result = execute(&grymd, "mtls").await.unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
}

#[tokio::test]
async fn a_worker_requiring_client_certificates_is_unreachable_without_one() {
    let certs = Certs::new();
    let ca = client_ca(&certs);
    let mtls = tls_worker(&certs, &strs(&sim_args("mtls", &["--client-ca", &ca]))).await;
    let grymd = Grymd::start(&config(
        &[("mtls", https_endpoint(&mtls))],
        &trusting(&certs),
    ))
    .await;

    assert_unreachable_over_tls(&grymd, "mtls", "`[worker_tls] cert` and `key`").await;
}

#[tokio::test]
async fn a_worker_signed_by_another_ca_is_unreachable() {
    let certs = Certs::new();
    let other = Certs::new();
    let sim = tls_worker(&certs, &strs(&sim_args("sim", &[]))).await;
    let grymd = Grymd::start(&config(&[("sim", https_endpoint(&sim))], &trusting(&other))).await;

    assert_unreachable_over_tls(&grymd, "sim", "invalid peer certificate: UnknownIssuer").await;
}

#[tokio::test]
async fn a_worker_reached_by_ip_is_checked_against_the_domain_override() {
    let certs = Certs::new();
    let sim = tls_worker(&certs, &strs(&sim_args("sim", &[]))).await;
    let by_ip = format!("https://{}", sim.address());

    // The certificate names no IP address ...
    let grymd = Grymd::start(&config(&[("sim", by_ip.clone())], &trusting(&certs))).await;
    assert_unreachable_over_tls(&grymd, "sim", "certificate not valid for name").await;
    drop(grymd);

    // ... but the name `domain` gives.
    let tls = format!("{}domain = \"worker.grym.test\"\n", trusting(&certs));
    let grymd = Grymd::start(&config(&[("sim", by_ip)], &tls)).await;
    let result = execute(&grymd, "sim").await.unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
}

#[tokio::test]
async fn sighup_reads_the_certificates_again_and_keeps_them_when_they_do_not_load() {
    let certs = Certs::new();
    let ca = client_ca(&certs);
    let mtls = tls_worker(&certs, &strs(&sim_args("mtls", &["--client-ca", &ca]))).await;
    let workers = [("mtls", https_endpoint(&mtls))];
    let grymd = Grymd::start(&config(&workers, &trusting(&certs))).await;
    until_health(&grymd, "mtls", api::ModelHealth::NotServing).await;

    // The same worker list, now with a client certificate: the model is
    // kept, and its channel reconnects with the certificate.
    grymd
        .reconfigure(&config(&workers, &with_client_certificate(&certs)))
        .await;
    until_health(&grymd, "mtls", api::ModelHealth::Serving).await;
    let result = execute(&grymd, "mtls").await.unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
    assert!(
        grymd
            .process()
            .log()
            .contains("worker reachable over TLS again"),
        "{}",
        grymd.process().log()
    );

    // A CA file that is gone changes nothing.
    let missing = certs.ca().with_file_name("gone.pem");
    let broken = format!(
        "ca = {}\ncert = {}\nkey = {}\n",
        toml_path(&missing),
        toml_path(&certs.client_cert()),
        toml_path(&certs.client_key())
    );
    grymd.reconfigure(&config(&workers, &broken)).await;
    let refused = async {
        while !grymd.process().log().contains("does not load") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(NO_HANG, refused)
        .await
        .expect("the reload is refused");
    let log = grymd.process().log();
    assert!(log.contains("worker_tls.ca"), "{log}");
    let result = execute(&grymd, "mtls").await.unwrap();
    assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
}

#[tokio::test]
async fn a_client_certificate_without_its_key_stops_grymd_naming_the_key() {
    let certs = Certs::new();
    let tls = format!("cert = {}\n", toml_path(&certs.client_cert()));
    let (status, stderr) = grymd_refusing(&config(&[], &tls)).await;
    assert!(!status.success());
    assert!(stderr.contains("worker_tls.cert"), "{stderr}");

    let tls = format!("ca = {}\n", toml_path(&certs.client_key()));
    let (status, stderr) = grymd_refusing(&config(&[], &tls)).await;
    assert!(!status.success());
    assert!(
        stderr.contains("worker_tls.ca") && stderr.contains("no PEM CERTIFICATE"),
        "{stderr}"
    );
}
