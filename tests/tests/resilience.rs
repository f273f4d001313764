//! Faults while grymd runs, with real processes: a replica killed and
//! restarted under open-loop load, a replica failing half of its calls
//! beside a healthy one, and a hung model beside a backup. Callers should
//! hardly notice: grymd ejects what fails, retries elsewhere under its
//! budget, and learns from calls cut by their deadline.
//!
//! Rates are low enough for a 2-core CI machine running debug builds; the
//! thresholds are those grymd promises, not timings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use grym_e2e::load::{Answer, Calls, all_replicas_serving};
use grym_e2e::{Grymd, free_port, task_request, text, worker};
use grym_proto::orchestrator::v1 as api;

/// The task type every sim serves.
const TASK_TYPE: &str = "text_generation";
/// The longest grymd may take to see every replica serving.
const READY: Duration = Duration::from_secs(20);

/// grymd with these models, their replicas' endpoints and any further
/// lines of their `[[workers]]` entries, probing health often so that a
/// restarted replica is seen soon; everything else its default.
fn config(models: &[(&str, Vec<String>, &str)]) -> String {
    let mut config = String::from(
        "builtin_workers = false\nhealth_interval = \"500ms\"\n\n[selection]\nroutes = []\n",
    );
    for (id, endpoints, extra) in models {
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        config.push_str(&format!(
            "\n[[workers]]\nid = \"{id}\"\nendpoints = [{}]\n{extra}",
            endpoints.join(", ")
        ));
    }
    config
}

/// A sim replica of model `sim`, answering in 5 ms, with `extra` options.
fn sim_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "sim",
        "--model-id",
        "sim",
        "--capability",
        TASK_TYPE,
        "--latency-ms",
        "5",
    ];
    args.extend_from_slice(extra);
    args
}

fn request() -> api::ExecuteTaskRequest {
    task_request(TASK_TYPE, text("what is in this clip?"))
}

/// The answers that are not successes, by what they were: a result's
/// error code, a failed call's status code, or `unanswered`.
fn failures(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut failures = BTreeMap::new();
    for answer in answers.iter().filter(|answer| !answer.succeeded()) {
        let kind = match answer {
            Answer::Result(result) => result.error.as_ref().map_or_else(
                || result.status().as_str_name().to_owned(),
                |error| error.code.clone(),
            ),
            Answer::Status(status) => format!("{:?} (rpc)", status.code()),
            Answer::Unanswered => "unanswered".to_owned(),
        };
        *failures.entry(kind).or_default() += 1;
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_under_load_fails_almost_no_call_and_leaves_none_unanswered() {
    let steady = worker(&sim_args(&[])).await;
    let victim_listen = format!("127.0.0.1:{}", free_port());
    let victim_args = sim_args(&["--listen", &victim_listen]);
    let mut victim = worker(&victim_args).await;
    let grymd = Grymd::start(&config(&[(
        "sim",
        vec![steady.endpoint(), victim.endpoint()],
        "",
    )]))
    .await;
    let client = grymd.client().await;
    all_replicas_serving(&client, 1, READY).await.unwrap();

    let calls = Calls {
        deadline: Duration::from_secs(5),
        grace: Duration::from_secs(5),
    };
    let start = tokio::time::Instant::now();
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            calls
                .open_loop(&client, &request(), 150.0, Duration::from_secs(12))
                .await
        })
    };
    tokio::time::sleep_until(start + Duration::from_secs(4)).await;
    victim.kill().await;
    tokio::time::sleep_until(start + Duration::from_secs(8)).await;
    // Back at the same address, where grymd still looks for it.
    let _restarted = worker(&victim_args).await;
    let answers = load.await.unwrap();

    let failures = failures(&answers);
    let failed: usize = failures.values().sum();
    assert!(
        !failures.contains_key("unanswered"),
        "every call is answered: {failures:?}"
    );
    assert!(
        failed * 1000 <= answers.len() * 5,
        "at most 0.5% of {} calls may fail across the kill and the restart: {failed} did, {failures:?}",
        answers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_failing_half_its_calls_beside_a_healthy_one_reaches_almost_no_caller() {
    let steady = worker(&sim_args(&[])).await;
    let flaky = worker(&sim_args(&["--fail-rate", "0.5", "--seed", "7"])).await;
    let grymd = Grymd::start(&config(&[(
        "sim",
        vec![steady.endpoint(), flaky.endpoint()],
        "",
    )]))
    .await;
    let client = grymd.client().await;
    all_replicas_serving(&client, 1, READY).await.unwrap();

    let calls = Calls {
        deadline: Duration::from_secs(5),
        grace: Duration::from_secs(5),
    };
    let answers = calls
        .open_loop(&client, &request(), 100.0, Duration::from_secs(10))
        .await;

    let failures = failures(&answers);
    let failed: usize = failures.values().sum();
    assert!(
        failed * 100 <= answers.len(),
        "at most 1% of {} calls may fail with a flaky replica beside a healthy one: {failed} did, {failures:?}",
        answers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_model_loses_first_choices_to_its_backup_after_twenty_calls() {
    // `hung` is preferred by its confidence but answers after ten minutes.
    let hung = worker(&[
        "sim",
        "--model-id",
        "hung",
        "--capability",
        "text_generation:0.9",
        "--latency-ms",
        "600000",
    ])
    .await;
    let backup = worker(&[
        "sim",
        "--model-id",
        "backup",
        "--capability",
        "text_generation:0.6",
    ])
    .await;
    // grymd is told `hung` answers in 5 ms, as a model that hangs
    // unexpectedly would have declared; the ten minutes its worker declares
    // would keep it from ever being chosen under a 1 s deadline.
    let declared = "capabilities = [{ task_type = \"text_generation\", confidence = 0.9, \
                    estimated_latency = \"5ms\" }]\n";
    let grymd = Grymd::start(&config(&[
        ("hung", vec![hung.endpoint()], declared),
        ("backup", vec![backup.endpoint()], ""),
    ]))
    .await;
    let client = grymd.client().await;
    all_replicas_serving(&client, 2, READY).await.unwrap();

    // A 1 s deadline each, four at a time: when call 21 goes out, at least
    // 17 have ended.
    let calls = Calls {
        deadline: Duration::from_secs(1),
        grace: Duration::from_secs(5),
    };
    let answers = calls.few_at_a_time(&client, &request(), 60, 4).await;

    let first: Vec<&str> = answers
        .iter()
        .map(|answer| answer.first_model().unwrap_or("none"))
        .collect();
    let later = &first[20..];
    let to_backup = later.iter().filter(|model| **model == "backup").count();
    assert!(
        to_backup * 10 >= later.len() * 9,
        "after the first 20 calls at least 90% go first to the backup: {to_backup} of {} did; \
         first attempts in order: {first:?}",
        later.len()
    );
}
