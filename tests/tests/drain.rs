//! Graceful drain on SIGTERM, with real processes: grymd turns its health
//! `NOT_SERVING` at once, refuses new tasks with `UNAVAILABLE`, lets running
//! tasks finish and answer within `shutdown_grace`, ends what is left with a
//! result its caller sees (a durable task stays queued in SQLite for the
//! next start), and exits within the grace period plus a second even with a
//! health `Watch` open. A worker drains the same way.
//!
//! Each test prints what it measured (`cargo test -- --nocapture`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use grym_e2e::{Grymd, OrchestratorClient, Process, task_request, text, watch_health, worker};
use grym_proto::orchestrator::v1 as api;
use grym_proto::worker::v1 as wire;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckResponse;
use tonic_health::pb::health_check_response::ServingStatus;

/// A guard against hangs, not a performance target.
const NO_HANG: Duration = Duration::from_secs(60);

/// What the issue allows beyond the grace period.
const EXIT_MARGIN: Duration = Duration::from_secs(1);

/// A sim worker `solo` that takes `calls` at a time, `latency_ms` each.
async fn sim(latency_ms: &str, calls: &str) -> Process {
    worker(&[
        "sim",
        "--model-id",
        "solo",
        "--capability",
        "transcription",
        "--max-concurrency",
        calls,
        "--latency-ms",
        latency_ms,
    ])
    .await
}

/// grymd on `worker` alone; `top` holds top-level keys, `store` the store.
fn config(worker: &Process, top: &str, store: &str) -> String {
    format!(
        "builtin_workers = false\n{top}\n\
         [scheduler]\nmax_queue_wait = \"1h\"\n\
         [store]\nurl = \"{store}\"\n\
         [[workers]]\nid = \"solo\"\nendpoint = \"{}\"\n",
        worker.endpoint()
    )
}

fn request(id: &str) -> api::ExecuteTaskRequest {
    let mut request = task_request("transcription", text(id));
    if let Some(task) = request.task.as_mut() {
        task.id = id.to_owned();
    }
    request
}

/// Runs a task through ExecuteTask in a tokio task of its own: its result,
/// and when it came.
fn execute_in_background(
    client: &OrchestratorClient<Channel>,
    id: &str,
) -> tokio::task::JoinHandle<(Result<api::TaskResult, tonic::Status>, Instant)> {
    let mut client = client.clone();
    let request = request(id);
    tokio::spawn(async move {
        let answer = client
            .execute_task(request)
            .await
            .map(|response| response.into_inner().result.expect("a result"));
        (answer, Instant::now())
    })
}

/// The next status a Watch sends: `Err` with the code it ended with, or
/// `Err(Ok)` when it ended cleanly.
async fn next_status(
    stream: &mut tonic::Streaming<HealthCheckResponse>,
) -> Result<ServingStatus, Code> {
    match tokio::time::timeout(NO_HANG, stream.next()).await {
        Ok(Some(Ok(answer))) => Ok(answer.status()),
        Ok(Some(Err(status))) => Err(status.code()),
        Ok(None) => Err(Code::Ok),
        Err(_) => panic!("the Watch stream neither sent nor ended"),
    }
}

/// Waits until the worker reports `calls` calls in flight through grymd.
async fn until_in_flight(client: &mut OrchestratorClient<Channel>, calls: u32) {
    let wait = async {
        loop {
            let models = client
                .list_models(api::ListModelsRequest {})
                .await
                .unwrap()
                .into_inner()
                .models;
            let in_flight: u32 = models
                .iter()
                .flat_map(|model| &model.replicas)
                .map(|replica| replica.in_flight)
                .sum();
            if in_flight >= calls {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(NO_HANG, wait)
        .await
        .expect("the calls reached the worker");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_running_tasks_finish_and_answer_while_health_turns_down_and_new_tasks_are_refused()
 {
    let worker = sim("3000", "4").await;
    let mut grymd = Grymd::start(&config(&worker, "shutdown_grace = \"20s\"", "memory")).await;
    let mut client = grymd.client().await;
    let running: Vec<_> = (0..3)
        .map(|i| execute_in_background(&client, &format!("running-{i}")))
        .collect();
    until_in_flight(&mut client, 3).await;
    let mut overall = watch_health(&grymd.process().endpoint(), "").await;
    assert_eq!(next_status(&mut overall).await, Ok(ServingStatus::Serving));
    let mut model = watch_health(&grymd.process().endpoint(), "grym.model/solo").await;
    assert_eq!(next_status(&mut model).await, Ok(ServingStatus::Serving));

    let signalled = Instant::now();
    grymd.sigterm().await;
    assert_eq!(
        next_status(&mut overall).await,
        Ok(ServingStatus::NotServing)
    );
    let turned_down = signalled.elapsed();
    assert_eq!(next_status(&mut model).await, Ok(ServingStatus::NotServing));
    assert!(
        turned_down < Duration::from_millis(500),
        "health turned NOT_SERVING {turned_down:?} after SIGTERM"
    );
    // A caller arriving now, on a new connection too, is told to go
    // elsewhere.
    assert_eq!(
        grymd
            .health("grym.orchestrator.v1.Orchestrator")
            .await
            .unwrap(),
        ServingStatus::NotServing as i32
    );
    let mut late = grymd.client().await;
    let refused = late.execute_task(request("late")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("shutting down"), "{refused:?}");

    for call in running {
        let (answer, at) = call.await.unwrap();
        let result = answer.unwrap();
        assert_eq!(result.status(), api::TaskStatus::Succeeded, "{result:?}");
        assert!(at.duration_since(signalled) < Duration::from_secs(20));
    }
    // The Watch is ended by grymd, not by the caller's deadline.
    assert_eq!(next_status(&mut overall).await, Err(Code::Unavailable));
    let exit = grymd
        .exited_within(NO_HANG)
        .await
        .expect("grymd exits after its drain");
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took < Duration::from_secs(3) + EXIT_MARGIN,
        "grymd exited {took:?} after SIGTERM, its tasks having needed under 3 s"
    );
    println!("NOT_SERVING {turned_down:?} after SIGTERM; exit after {took:?} (3 s tasks)");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_health_watch_does_not_delay_exit() {
    let mut grymd = Grymd::start_default().await;
    let mut watch = watch_health(&grymd.process().endpoint(), "").await;
    assert_eq!(next_status(&mut watch).await, Ok(ServingStatus::Serving));

    let signalled = Instant::now();
    grymd.sigterm().await;
    assert_eq!(next_status(&mut watch).await, Ok(ServingStatus::NotServing));
    assert_eq!(next_status(&mut watch).await, Err(Code::Unavailable));
    let exit = grymd.exited_within(NO_HANG).await.expect("grymd exits");
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took < EXIT_MARGIN,
        "with no task to wait for, grymd took {took:?} to exit with a Watch open"
    );
    println!("exit {took:?} after SIGTERM with a Watch open (default 30 s grace, no task)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_still_running_when_a_short_grace_ends_is_cancelled_and_its_caller_told() {
    const GRACE: Duration = Duration::from_secs(1);
    let worker = sim("30000", "4").await;
    // The grace from the environment, as a deployment would set it.
    let mut grymd = Grymd::start_with_env(
        &config(&worker, "", "memory"),
        &[("GRYM_SHUTDOWN_GRACE", "1s".to_owned())],
    )
    .await;
    let mut client = grymd.client().await;
    let call = execute_in_background(&client, "too-long");
    until_in_flight(&mut client, 1).await;

    let signalled = Instant::now();
    grymd.sigterm().await;
    let (answer, at) = call.await.unwrap();
    let result = answer.expect("the caller gets a result, not a broken call");
    assert_eq!(result.status(), api::TaskStatus::Cancelled, "{result:?}");
    let answered = at.duration_since(signalled);
    assert!(answered >= GRACE, "cancelled {answered:?} after SIGTERM");
    let exit = grymd.exited_within(NO_HANG).await.expect("grymd exits");
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took < GRACE + EXIT_MARGIN,
        "grymd exited {took:?} after SIGTERM with a 1 s grace"
    );
    println!("cut task answered {answered:?}, exit {took:?} after SIGTERM (1 s grace)");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_sqlite_tasks_left_at_the_end_of_the_grace_stay_queued_and_succeed_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", data.path().join("grym.db").display());
    // One call at a time, 1.5 s each, and 2.5 s of grace: the first task
    // ends within it, the second is cut while it runs, the third never
    // leaves the queue.
    let worker = sim("1500", "1").await;
    let configured = config(&worker, "shutdown_grace = \"2500ms\"", &store);
    let mut grymd = Grymd::start(&configured).await;
    let mut client = grymd.client().await;
    let ids = ["first", "second", "third"];
    for id in ids {
        let task = request(id).task;
        client
            .submit_task(api::SubmitTaskRequest { task })
            .await
            .unwrap();
    }
    until_in_flight(&mut client, 1).await;
    let signalled = Instant::now();
    grymd.sigterm().await;
    let exit = grymd.exited_within(NO_HANG).await.expect("grymd exits");
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(took < Duration::from_millis(2500) + EXIT_MARGIN, "{took:?}");

    let grymd = Grymd::start(&configured).await;
    let log = grymd.process().log();
    assert!(
        log.contains("took up unfinished tasks"),
        "the restart took nothing up:\n{log}"
    );
    let mut client = grymd.client().await;
    let wait = async {
        loop {
            let mut ended = Vec::new();
            for id in ids {
                let result = client
                    .get_task(api::GetTaskRequest {
                        task_id: id.to_owned(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .result
                    .unwrap();
                ended.push(result.status());
            }
            if ended
                .iter()
                .all(|status| !matches!(status, api::TaskStatus::Queued | api::TaskStatus::Running))
            {
                return ended;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ended = tokio::time::timeout(NO_HANG, wait).await.unwrap();
    assert_eq!(
        ended,
        [api::TaskStatus::Succeeded; 3],
        "each task ends once, succeeded"
    );
    println!("exit {took:?} after SIGTERM (2.5 s grace); after restart: {ended:?}");
}

/// A direct client of a worker.
async fn worker_client(worker: &Process) -> wire::model_worker_client::ModelWorkerClient<Channel> {
    wire::model_worker_client::ModelWorkerClient::connect(worker.endpoint())
        .await
        .unwrap()
}

fn infer(id: &str) -> wire::InferRequest {
    wire::InferRequest {
        task_id: id.to_owned(),
        task_type: "transcription".to_owned(),
        input: Some(wire::Input {
            kind: Some(wire::input::Kind::Text(id.to_owned())),
        }),
        attempt: 1,
        ..wire::InferRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_sigtermed_with_a_call_running_finishes_it_and_refuses_new_ones() {
    let mut worker = sim("2000", "2").await;
    let mut client = worker_client(&worker).await;
    let running = tokio::spawn({
        let mut client = client.clone();
        async move { client.infer(infer("running")).await }
    });
    let mut watch = watch_health(&worker.endpoint(), "").await;
    assert_eq!(next_status(&mut watch).await, Ok(ServingStatus::Serving));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    worker.sigterm().await;
    assert_eq!(next_status(&mut watch).await, Ok(ServingStatus::NotServing));
    let refused = client.infer(infer("late")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    let answer = running.await.unwrap().expect("the running call finishes");
    assert!(answer.into_inner().output.is_some());
    assert_eq!(
        next_status(&mut watch).await,
        Err(Code::Ok),
        "the Watch is ended"
    );
    let exit = worker
        .exited_within(NO_HANG)
        .await
        .expect("the worker exits");
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took < Duration::from_secs(2) + EXIT_MARGIN,
        "the worker exited {took:?} after SIGTERM, its call having needed under 2 s"
    );
    println!("worker exit {took:?} after SIGTERM (a 2 s call running, a Watch open)");
}
