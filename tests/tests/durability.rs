//! Durable work end to end, with real processes and a real database: grymd
//! killed with SIGKILL while tasks are queued and running, on SQLite and on
//! PostgreSQL; several replicas sharing one PostgreSQL (a task submitted to
//! one is read, watched and cancelled through another, and a killed
//! replica's tasks finish elsewhere once its lease runs out); a store
//! outage while serving; `--check-store`; sessions across a restart.
//!
//! Every test counts: each accepted task reaches one final outcome, none is
//! missing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use grym_e2e::postgres::Postgres;
use grym_e2e::{Grymd, OrchestratorClient, Process, task_request, text, worker};
use grym_proto::orchestrator::v1 as api;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;

/// A guard against hangs, not a performance target.
const NO_HANG: Duration = Duration::from_secs(60);

const SERVICE: &str = "grym.orchestrator.v1.Orchestrator";

/// A worker that takes two calls at a time, `latency_ms` each.
async fn slow_worker(latency_ms: &str) -> Process {
    worker(&[
        "sim",
        "--model-id",
        "solo",
        "--capability",
        "transcription",
        "--max-concurrency",
        "2",
        "--latency-ms",
        latency_ms,
    ])
    .await
}

/// grymd on `worker`, keeping its work in `store`.
fn config(worker: &Process, store: &str, extra: &str) -> String {
    format!(
        "builtin_workers = false\n\
         [scheduler]\nmax_queue_wait = \"1h\"\n\
         [store]\nurl = \"{store}\"\n{extra}\n\
         [[workers]]\nid = \"solo\"\nendpoint = \"{}\"\n",
        worker.endpoint()
    )
}

fn task(id: &str) -> api::Task {
    let mut task = task_request("transcription", text(id)).task.unwrap();
    task.id = id.to_owned();
    task
}

async fn submit(
    client: &mut OrchestratorClient<Channel>,
    id: &str,
) -> Result<String, tonic::Status> {
    client
        .submit_task(api::SubmitTaskRequest {
            task: Some(task(id)),
        })
        .await
        .map(|response| response.into_inner().task_id)
}

async fn get(
    client: &mut OrchestratorClient<Channel>,
    id: &str,
) -> Result<api::TaskResult, tonic::Status> {
    client
        .get_task(api::GetTaskRequest {
            task_id: id.to_owned(),
        })
        .await
        .map(|response| response.into_inner().result.unwrap())
}

fn is_final(status: i32) -> bool {
    !matches!(
        api::TaskStatus::try_from(status),
        Ok(api::TaskStatus::Queued | api::TaskStatus::Running | api::TaskStatus::Unspecified)
    )
}

/// Waits until every one of `ids` has ended, asking through `client`; the
/// final status of each.
async fn finals(
    client: &mut OrchestratorClient<Channel>,
    ids: &[String],
) -> BTreeMap<String, api::TaskStatus> {
    let wait = async {
        let mut ended = BTreeMap::new();
        loop {
            for id in ids {
                if ended.contains_key(id) {
                    continue;
                }
                match get(client, id).await {
                    Ok(result) if is_final(result.status) => {
                        ended.insert(id.clone(), result.status());
                    }
                    Ok(_) => {}
                    Err(status) if status.code() == Code::Unavailable => {}
                    Err(status) => panic!("task {id}: {status:?}"),
                }
            }
            if ended.len() == ids.len() {
                return ended;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(NO_HANG, wait)
        .await
        .expect("every accepted task ends")
}

/// Submits `count` tasks named `prefix-N`; their ids.
async fn submit_many(
    client: &mut OrchestratorClient<Channel>,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("{prefix}-{i}");
        submit(client, &id).await.unwrap();
        ids.push(id);
    }
    ids
}

/// Waits until at least one of `ids` runs.
async fn until_one_runs(client: &mut OrchestratorClient<Channel>, ids: &[String]) {
    let wait = async {
        loop {
            for id in ids {
                if get(client, id).await.unwrap().status() == api::TaskStatus::Running {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(NO_HANG, wait)
        .await
        .expect("a task runs");
}

/// Kills grymd with work queued and running, starts it again on the same
/// store (with `extra` `[store]` settings), and counts that every accepted
/// task ends, each once.
async fn kill_and_restart_loses_nothing(store: &str, extra: &str) {
    let worker = slow_worker("200").await;
    let config = config(&worker, store, extra);
    let mut grymd = Grymd::start(&config).await;
    let mut client = grymd.client().await;
    let ids = submit_many(&mut client, "k", 30).await;
    until_one_runs(&mut client, &ids).await;
    grymd.kill().await;

    let grymd = Grymd::start(&config).await;
    let mut client = grymd.client().await;
    let ended = finals(&mut client, &ids).await;
    assert_eq!(ended.len(), ids.len(), "a task is missing");
    let succeeded = ended
        .values()
        .filter(|status| **status == api::TaskStatus::Succeeded)
        .count();
    assert_eq!(succeeded, ids.len(), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_grymd_on_sqlite_finishes_every_accepted_task_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", data.path().join("grym.db").display());
    kill_and_restart_loses_nothing(&store, "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_grymd_on_postgres_finishes_every_accepted_task_after_restart() {
    let postgres = Postgres::start().await;
    // A short lease: the restarted grymd is a new replica, which takes the
    // old one's tasks over when their lease runs out.
    kill_and_restart_loses_nothing(&postgres.url(), "lease_ttl = \"2s\"").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_submitted_to_one_replica_is_read_watched_and_cancelled_through_another() {
    let postgres = Postgres::start().await;
    let worker = slow_worker("10000").await;
    let config = config(&worker, &postgres.url(), "");
    let a = Grymd::start(&config).await;
    let b = Grymd::start(&config).await;
    let (mut to_a, mut to_b) = (a.client().await, b.client().await);

    submit(&mut to_a, "long").await.unwrap();
    until_one_runs(&mut to_b, &["long".to_owned()]).await;
    let mut watched = to_b
        .watch_task(api::WatchTaskRequest {
            task_id: "long".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watched.next().await.unwrap().unwrap().result.unwrap();
    assert_eq!(first.status(), api::TaskStatus::Running);

    // The same id is taken on A's side: B refuses it too.
    let again = submit(&mut to_b, "long").await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    let asked = tokio::time::Instant::now();
    let cancelled = tokio::time::timeout(
        NO_HANG,
        to_b.cancel_task(api::CancelTaskRequest {
            task_id: "long".into(),
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner()
    .result
    .unwrap();
    assert_eq!(cancelled.status(), api::TaskStatus::Cancelled);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "cancelling through another replica took {:?}",
        asked.elapsed()
    );
    let last = tokio::time::timeout(NO_HANG, async {
        let mut last = None;
        while let Some(change) = watched.next().await {
            last = change.unwrap().result;
        }
        last
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(last.status(), api::TaskStatus::Cancelled);
    assert_eq!(
        get(&mut to_a, "long").await.unwrap().status(),
        api::TaskStatus::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replicas_tasks_finish_on_the_others_after_its_lease() {
    let postgres = Postgres::start().await;
    let worker = slow_worker("100").await;
    let config = config(&worker, &postgres.url(), "lease_ttl = \"2s\"");
    let mut a = Grymd::start(&config).await;
    let b = Grymd::start(&config).await;
    let c = Grymd::start(&config).await;
    let mut to_a = a.client().await;
    let ids = submit_many(&mut to_a, "r", 30).await;
    until_one_runs(&mut to_a, &ids).await;
    a.kill().await;

    let mut to_b = b.client().await;
    let ended = finals(&mut to_b, &ids).await;
    assert_eq!(ended.len(), ids.len(), "a task is missing");
    assert!(
        ended
            .values()
            .all(|status| *status == api::TaskStatus::Succeeded),
        "{ended:?}"
    );
    let took_over = [&b, &c]
        .iter()
        .filter(|grymd| grymd.process().log().contains("took over tasks"))
        .count();
    assert!(took_over >= 1, "no replica took the tasks over");
    // Read through the third replica too: one task space.
    let mut to_c = c.client().await;
    assert_eq!(finals(&mut to_c, &ids).await, ended);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_loses_no_accepted_task_and_refuses_new_ones_by_name() {
    let mut postgres = Postgres::start().await;
    let worker = slow_worker("100").await;
    let grymd = Grymd::start(&config(&worker, &postgres.url(), "")).await;
    let mut client = grymd.client().await;
    let ids = submit_many(&mut client, "o", 20).await;

    postgres.stop().await;
    let refused = tokio::time::timeout(NO_HANG, async {
        loop {
            match submit(&mut client, "during-outage").await {
                Err(status) => return status,
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("store"), "{refused:?}");
    let not_serving = tokio::time::timeout(NO_HANG, async {
        loop {
            if grymd.health(SERVICE).await.unwrap() == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        not_serving.is_ok(),
        "health stayed SERVING during the outage"
    );

    postgres.restart().await;
    tokio::time::timeout(NO_HANG, async {
        loop {
            if grymd.health(SERVICE).await.unwrap() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("health is SERVING again once the store is back");
    let ended = finals(&mut client, &ids).await;
    assert_eq!(ended.len(), ids.len());
    assert!(
        ended
            .values()
            .all(|status| *status == api::TaskStatus::Succeeded),
        "{ended:?}"
    );
    submit(&mut client, "after-outage").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_outlive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", data.path().join("grym.db").display());
    let worker = slow_worker("0").await;
    let config = config(&worker, &store, "");
    let mut grymd = Grymd::start(&config).await;
    let mut client = grymd.client().await;
    let context = grym_proto::json::json_to_struct(
        serde_json::json!({ "topic": "birdsong" })
            .as_object()
            .cloned()
            .unwrap(),
    );
    client
        .put_session_context(api::PutSessionContextRequest {
            session_id: "s1".into(),
            context: Some(context),
            replace: true,
        })
        .await
        .unwrap();
    let mut with_session = task("in-session");
    with_session.session_id = "s1".into();
    client
        .execute_task(api::ExecuteTaskRequest {
            task: Some(with_session),
        })
        .await
        .unwrap();
    grymd.kill().await;

    let grymd = Grymd::start(&config).await;
    let mut client = grymd.client().await;
    let session = client
        .get_session_context(api::GetSessionContextRequest {
            session_id: "s1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let context = grym_proto::json::struct_to_json(session.context.clone().unwrap());
    assert_eq!(context["topic"], "birdsong");
    assert_eq!(session.entries.len(), 1, "{session:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_store_is_an_sqlite_file_named_in_the_first_log_line() {
    let worker = slow_worker("0").await;
    let mut grymd = Grymd::start(&format!(
        "builtin_workers = false\n[[workers]]\nid = \"solo\"\nendpoint = \"{}\"\n",
        worker.endpoint()
    ))
    .await;
    let mut client = grymd.client().await;
    submit(&mut client, "kept").await.unwrap();
    let log = grymd.process().log();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.contains("sqlite://") && first.contains("grym/grym.db"),
        "first line: {first}"
    );
    finals(&mut client, &["kept".to_owned()]).await;
    grymd.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_store_validates_the_store_and_exits() {
    let data = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", data.path().join("nested/grym.db").display());
    let output = tokio::process::Command::new(grym_e2e::grymd_binary())
        .arg("--check-store")
        .env("GRYM_STORE_URL", &store)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("schema version"), "{stdout}");

    let output = tokio::process::Command::new(grym_e2e::grymd_binary())
        .arg("--check-store")
        .env("GRYM_STORE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
