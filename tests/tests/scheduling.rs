//! Scheduling end to end: priorities, deadlines in the queue, admission
//! control, dependencies, cancellation and asynchronous tasks, against one
//! real worker that takes one call at a time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::Duration;

use grym_e2e::{Grymd, OrchestratorClient, Process, task_request, text, worker};
use grym_proto::orchestrator::v1 as api;
use tonic::Code;
use tonic::transport::Channel;

/// A guard against hangs, not a performance target.
const NO_HANG: Duration = Duration::from_secs(30);

async fn one_at_a_time(latency_ms: &str) -> Process {
    worker(&[
        "sim",
        "--model-id",
        "solo",
        "--capability",
        "transcription",
        "--max-concurrency",
        "1",
        "--latency-ms",
        latency_ms,
    ])
    .await
}

async fn grymd_for(worker: &Process, scheduler: &str) -> Grymd {
    Grymd::start(&format!(
        "builtin_workers = false\n[scheduler]\n{scheduler}\n[[workers]]\nid = \"solo\"\nendpoint = \"{}\"\n",
        worker.endpoint()
    ))
    .await
}

fn task(id: &str, priority: api::Priority) -> api::Task {
    let mut task = task_request("transcription", text(id)).task.unwrap();
    task.id = id.to_owned();
    task.priority = priority as i32;
    task
}

async fn submit(
    client: &mut OrchestratorClient<Channel>,
    task: api::Task,
) -> Result<String, tonic::Status> {
    client
        .submit_task(api::SubmitTaskRequest { task: Some(task) })
        .await
        .map(|response| response.into_inner().task_id)
}

/// Polls GetTask until the task has ended.
async fn final_result(client: &mut OrchestratorClient<Channel>, id: &str) -> api::TaskResult {
    let poll = async {
        loop {
            let result = client
                .get_task(api::GetTaskRequest {
                    task_id: id.to_owned(),
                })
                .await
                .unwrap()
                .into_inner()
                .result
                .unwrap();
            if !matches!(
                result.status(),
                api::TaskStatus::Queued | api::TaskStatus::Running
            ) {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(NO_HANG, poll)
        .await
        .expect("the task ends")
}

fn finished_at(result: &api::TaskResult) -> (i64, i32) {
    let at = result.finished_at.unwrap();
    (at.seconds, at.nanos)
}

#[tokio::test]
async fn high_priority_tasks_finish_before_most_of_the_low_ones_queued_earlier() {
    let solo = one_at_a_time("100").await;
    let grymd = grymd_for(&solo, "").await;
    let mut client = grymd.client().await;
    for i in 0..10 {
        submit(&mut client, task(&format!("low-{i}"), api::Priority::Low))
            .await
            .unwrap();
    }
    for i in 0..3 {
        submit(&mut client, task(&format!("high-{i}"), api::Priority::High))
            .await
            .unwrap();
    }
    let mut lows = Vec::new();
    for i in 0..10 {
        lows.push(finished_at(
            &final_result(&mut client, &format!("low-{i}")).await,
        ));
    }
    for i in 0..3 {
        let high = final_result(&mut client, &format!("high-{i}")).await;
        assert_eq!(high.status(), api::TaskStatus::Succeeded);
        let later_lows = lows.iter().filter(|low| **low > finished_at(&high)).count();
        assert!(
            later_lows >= 7,
            "high-{i} finished before only {later_lows} low tasks"
        );
        assert!(high.queued_at.is_some() && high.started_at.is_some());
    }
}

#[tokio::test]
async fn a_task_whose_timeout_passes_in_the_queue_never_reaches_the_worker() {
    let solo = one_at_a_time("100").await;
    let grymd = grymd_for(&solo, "").await;
    let mut client = grymd.client().await;
    for i in 0..5 {
        submit(
            &mut client,
            task(&format!("ahead-{i}"), api::Priority::Normal),
        )
        .await
        .unwrap();
    }
    let mut hurried = task("hurried", api::Priority::Normal);
    hurried.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 50_000_000,
    });
    // Admission refuses it at once (500 ms of work ahead, 50 ms to live);
    // were it admitted, its deadline would end its wait in the queue.
    match submit(&mut client, hurried).await {
        Err(status) => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());
        }
        Ok(_) => {
            let result = final_result(&mut client, "hurried").await;
            assert_eq!(
                result.status(),
                api::TaskStatus::DeadlineExceeded,
                "{result:?}"
            );
            // It ended at its deadline, not when its turn came (500 ms of
            // work ahead).
            let (queued, finished) = (result.queued_at.unwrap(), result.finished_at.unwrap());
            let waited_ms = (finished.seconds - queued.seconds) * 1000
                + i64::from(finished.nanos - queued.nanos) / 1_000_000;
            assert!(waited_ms < 400, "ended after {waited_ms} ms");
            assert!(result.metrics.unwrap().attempts.is_empty());
        }
    }
    final_result(&mut client, "ahead-4").await;
    let log = solo.log();
    assert!(log.contains("ahead-4"), "the worker logs the calls it sees");
    assert!(
        !log.contains("hurried"),
        "the worker never saw the expired task"
    );
}

#[tokio::test]
async fn a_burst_beyond_max_queue_is_refused_at_once_and_every_admitted_task_finishes() {
    let solo = one_at_a_time("1500").await;
    // Shedding by expected wait is off here: this is about `max_queue`.
    let grymd = grymd_for(&solo, "max_queue = 5\nmax_queue_wait = \"1h\"").await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(grymd.client().await);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let mut burst = tokio::task::JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let start = std::sync::Arc::clone(&start);
        burst.spawn(async move {
            start.wait().await;
            let sent = tokio::time::Instant::now();
            let outcome = submit(
                &mut client,
                task(&format!("burst-{i}"), api::Priority::Normal),
            )
            .await;
            (outcome, sent.elapsed())
        });
    }
    let mut admitted = Vec::new();
    while let Some(joined) = burst.join_next().await {
        match joined.unwrap() {
            (Ok(id), _) => admitted.push(id),
            (Err(status), waited) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    waited < Duration::from_secs(1),
                    "refused at once, not after waiting"
                );
            }
        }
    }
    // Five wait; at most one more may have started running during the burst.
    assert!(
        (5..=6).contains(&admitted.len()),
        "{} admitted",
        admitted.len()
    );
    let mut client = grymd.client().await;
    for id in admitted {
        assert_eq!(
            final_result(&mut client, &id).await.status(),
            api::TaskStatus::Succeeded
        );
    }
}

#[tokio::test]
async fn a_task_depending_on_another_starts_after_it_ends() {
    let solo = worker(&[
        "sim",
        "--model-id",
        "solo",
        "--capability",
        "transcription",
        "--latency-ms",
        "150",
    ])
    .await;
    let grymd = grymd_for(&solo, "").await;
    let mut client = grymd.client().await;
    submit(&mut client, task("a", api::Priority::Normal))
        .await
        .unwrap();
    let mut b = task("b", api::Priority::Critical);
    b.depends_on = vec!["a".to_owned()];
    submit(&mut client, b).await.unwrap();
    let a = final_result(&mut client, "a").await;
    let b = final_result(&mut client, "b").await;
    assert_eq!(b.status(), api::TaskStatus::Succeeded);
    let (a_end, b_start) = (a.finished_at.unwrap(), b.started_at.unwrap());
    assert!(
        (b_start.seconds, b_start.nanos) >= (a_end.seconds, a_end.nanos),
        "{a_end:?} then {b_start:?}"
    );

    let mut orphan = task("orphan", api::Priority::Normal);
    orphan.depends_on = vec!["nobody".to_owned()];
    let status = submit(&mut client, orphan).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("nobody") && status.message().contains("task.depends_on"));
}

#[tokio::test]
async fn cancelled_tasks_end_cancelled_whether_queued_or_running() {
    let solo = one_at_a_time("5000").await;
    // A 5 s wait would be shed; this is about cancelling one that waits.
    let grymd = grymd_for(&solo, "max_queue_wait = \"1h\"").await;
    let mut client = grymd.client().await;
    submit(&mut client, task("running", api::Priority::Normal))
        .await
        .unwrap();
    submit(&mut client, task("waiting", api::Priority::Normal))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in ["waiting", "running"] {
        let result = client
            .cancel_task(api::CancelTaskRequest {
                task_id: id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert_eq!(
            result.status(),
            api::TaskStatus::Cancelled,
            "{id}: {result:?}"
        );
    }
    assert_eq!(
        final_result(&mut client, "running").await.status(),
        api::TaskStatus::Cancelled
    );
    assert!(
        !solo.log().contains("waiting"),
        "the queued task never reached the worker"
    );

    let status = client
        .get_task(api::GetTaskRequest {
            task_id: "never-submitted".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn a_client_that_drops_execute_task_cancels_its_task() {
    let solo = one_at_a_time("5000").await;
    let grymd = grymd_for(&solo, "").await;
    let mut caller = grymd.client().await;
    let call = tokio::spawn(async move {
        let request = api::ExecuteTaskRequest {
            task: Some(task("dropped", api::Priority::Normal)),
        };
        caller.execute_task(request).await
    });
    // Wait until the task exists, then hang up.
    let mut client = grymd.client().await;
    let exists = async {
        while client
            .get_task(api::GetTaskRequest {
                task_id: "dropped".to_owned(),
            })
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(NO_HANG, exists)
        .await
        .expect("the task is accepted");
    call.abort();
    assert_eq!(
        final_result(&mut client, "dropped").await.status(),
        api::TaskStatus::Cancelled
    );
}

#[tokio::test]
async fn a_second_live_task_with_the_same_id_is_already_exists() {
    let solo = one_at_a_time("500").await;
    let grymd = grymd_for(&solo, "").await;
    let mut client = grymd.client().await;
    submit(&mut client, task("twice", api::Priority::Normal))
        .await
        .unwrap();
    let status = submit(&mut client, task("twice", api::Priority::Normal))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn stream_task_reports_the_way_of_a_task_in_order() {
    let solo = one_at_a_time("20").await;
    let grymd = grymd_for(&solo, "").await;
    let mut client = grymd.client().await;
    let mut stream = client
        .stream_task(api::StreamTaskRequest {
            task: Some(task("streamed", api::Priority::Normal)),
        })
        .await
        .unwrap()
        .into_inner();
    use api::stream_task_response::Event;
    let mut names = Vec::new();
    while let Some(message) = tokio::time::timeout(NO_HANG, stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        assert_eq!(message.task_id, "streamed");
        names.push(match message.event.unwrap() {
            Event::Queued(_) => "queued",
            Event::ModelChosen(routing) => {
                assert_eq!(routing.chosen_model_id, "solo");
                "model chosen"
            }
            Event::Started(_) => "started",
            Event::AttemptFinished(attempt) => {
                assert_eq!(attempt.outcome(), api::AttemptOutcome::Succeeded);
                "attempt finished"
            }
            Event::StepStarted(_) | Event::StepFinished(_) => "step",
            Event::OutputChunk(_) => "chunk",
            Event::Result(result) => {
                assert_eq!(result.status(), api::TaskStatus::Succeeded);
                assert!(result.metrics.unwrap().queue_wait.is_some());
                "result"
            }
        });
    }
    assert_eq!(
        names,
        [
            "queued",
            "model chosen",
            "started",
            "attempt finished",
            "result"
        ]
    );
}
