//! The durable store's conformance, through `dyn Store`: the same cases on
//! SQLite (a file in a temporary folder) and on a real PostgreSQL server;
//! then what only PostgreSQL does (replicas sharing a database, leases
//! running out, an outage) and what only SQLite does (its lock).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use grym_core::{
    Attempt, AttemptOutcome, Audio, CallOutcome, CandidateScore, CompositeSpec, DurabilitySettings,
    FailureKind, FailurePolicy, Health, Metrics, ModelId, ModelKind, Outcome, Output, Policy,
    Priority, Reason, RecipeUse, Routing, ScoreBreakdown, SessionId, StepId, StepResult, StepSpec,
    StepTask, Store, StoreError, Strategy, Task, TaskError, TaskId, TaskInput, TaskKey, TaskRecord,
    TaskResult, TaskStatus, TaskType, Tenant,
};
use grym_e2e::postgres::Postgres;
use grym_store::WriteStats;
use serde_json::{Map, Value, json};

/// A database to test on, and what keeps it alive.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(Box<Postgres>),
}

impl Db {
    async fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres() -> Self {
        Self::Postgres(Box::new(Postgres::start().await))
    }

    fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}", dir.path().join("grym.db").display()),
            Self::Postgres(server) => server.url(),
        }
    }

    /// A store for `replica`, with the default lease.
    async fn open(&self, replica: &str) -> (Arc<dyn Store>, WriteStats) {
        self.open_with_lease(replica, DurabilitySettings::default().lease_ttl)
            .await
    }

    async fn open_with_lease(
        &self,
        replica: &str,
        lease_ttl: Duration,
    ) -> (Arc<dyn Store>, WriteStats) {
        let settings = DurabilitySettings {
            lease_ttl,
            ..DurabilitySettings::default()
        };
        grym_store::open_counted(&self.url(), replica, &settings)
            .await
            .unwrap_or_else(|error| panic!("opening {} failed: {error}", self.url()))
            .expect("a durable store")
    }

    fn server(&mut self) -> &mut Postgres {
        match self {
            Self::Postgres(server) => server,
            Self::Sqlite(_) => panic!("not a PostgreSQL test"),
        }
    }
}

/// Runs each case on SQLite and on PostgreSQL.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Db::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Db::postgres().await).await;
                }
            )*
        }
    };
}

on_both!(
    an_accepted_task_reads_back_whole,
    an_unfinished_id_is_refused_and_a_finished_one_replaced,
    the_first_final_result_wins,
    an_update_records_where_a_task_stands_and_its_runs,
    a_cancellation_reaches_the_holder_at_its_next_renewal,
    released_tasks_are_claimed_by_urgency_and_returned_in_arrival_order,
    sessions_keep_their_context_and_their_newest_entries,
    sessions_unused_since_the_cut_are_pruned,
    prune_deletes_final_results_that_ended_before_the_cut,
    concurrent_accepts_share_commits,
    migrations_run_again_when_the_store_is_opened_again,
);

// ---- the records ----------------------------------------------------------

fn id(name: &str) -> TaskId {
    TaskId::new(name).unwrap()
}

fn acme() -> Tenant {
    Tenant::new("acme").unwrap()
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// A task as an agent would submit it: audio, JSON parameters, a session,
/// a composite with a condition.
fn audio_task(name: &str) -> Task {
    let detect = StepId::new("detect").unwrap();
    let transcribe = StepId::new("transcribe").unwrap();
    let mut task = Task::new(
        id(name),
        TaskType::new("audio_analysis").unwrap(),
        TaskInput::Audio(Audio {
            data: grym_e2e::sine_wav(440.0, 16_000, 0.25).into(),
            mime_type: "audio/wav".to_owned(),
        }),
    );
    task.parameters = object(json!({
        "temperature": 0.2,
        "labels": ["speech", "music"],
        "nested": {"k": [1, 2.5, null, true, "x"], "big": u64::MAX},
    }));
    task.priority = Priority::High;
    task.timeout = Some(Duration::from_millis(30_500));
    task.depends_on = vec![id("upstream")];
    task.context = object(json!({"speaker": "ana", "turns": 3}));
    task.session_id = Some(SessionId::new("s-1").unwrap());
    task.tenant = acme();
    task.composite = Some(Box::new(CompositeSpec {
        strategy: Strategy::Conditional,
        steps: vec![
            StepSpec {
                id: detect.clone(),
                task: StepTask::of(TaskType::new("vad").unwrap()),
                after: Vec::new(),
                when: None,
            },
            StepSpec {
                id: transcribe.clone(),
                task: StepTask {
                    input_from: Some(detect.clone()),
                    parameters: object(json!({"language": "pt"})),
                    timeout: Some(Duration::from_secs(5)),
                    ..StepTask::of(TaskType::new("transcription").unwrap())
                },
                after: vec![detect],
                when: Some("steps.detect.status == SUCCEEDED".to_owned()),
            },
        ],
        failure_policy: FailurePolicy::Continue,
        output_step: Some(transcribe),
    }));
    task
}

/// A short text task, for the cases that need many.
fn text_task(name: &str, priority: Priority) -> Task {
    let mut task = Task::new(
        id(name),
        TaskType::new("echo").unwrap(),
        TaskInput::Text(format!("hello from {name}")),
    );
    task.priority = priority;
    task
}

/// A result with every part filled in.
fn result(task: &Task, status: TaskStatus) -> TaskResult {
    let gama = ModelId::new("gama").unwrap();
    let wav2vec2 = ModelId::new("wav2vec2").unwrap();
    let queued_at = SystemTime::now();
    let routing = Routing {
        task_type: task.task_type.clone(),
        policy: Policy::Thompson,
        reason: Reason::HighestSample,
        estimated_latency: Duration::from_millis(120),
        candidates: vec![CandidateScore {
            model_id: gama.clone(),
            health: Health::Serving,
            in_flight: 3,
            breakdown: ScoreBreakdown {
                confidence: 0.9,
                success_rate: 0.97,
                error_rate: 0.03,
                samples: 41.5,
                expected_latency: Duration::from_millis(118),
                normalized_latency: 0.4,
                performance: 0.8,
                performance_weight: 0.5,
                score: 0.85,
            },
            sample: Some(0.71),
        }],
        fallbacks_taken: vec![wav2vec2.clone()],
        summary: None,
        excluded: Vec::new(),
    };
    let finished = status.is_final();
    TaskResult {
        task_id: task.id.clone(),
        status,
        model_id: Some(gama.clone()),
        output: finished.then(|| Output {
            text: Some("a dog barks".to_owned()),
            json: Some(json!({"labels": [{"name": "dog", "score": 0.93}]})),
            data: vec![0u8, 1, 2, 254, 255].into(),
            data_mime_type: "application/octet-stream".to_owned(),
        }),
        error: (status == TaskStatus::Failed)
            .then(|| TaskError::new(FailureKind::Unavailable, "every model failed")),
        metrics: Metrics {
            total_latency: Duration::from_millis(250),
            queue_wait: Duration::from_millis(12),
            context_cache_hits: 2,
            context_cache_misses: 1,
            worker_latency: Duration::from_millis(230),
            attempts: vec![Attempt {
                model_id: wav2vec2,
                outcome: AttemptOutcome::Failed,
                latency: Duration::from_millis(40),
                error: Some(TaskError::new(FailureKind::Exhausted, "queue full")),
                step: Some(StepId::new("detect").unwrap()),
                endpoint: "http://127.0.0.1:7002".to_owned(),
                hedge: true,
            }],
        },
        routing: routing.clone(),
        queued_at,
        started_at: Some(queued_at + Duration::from_millis(12)),
        finished_at: finished.then(|| queued_at + Duration::from_millis(250)),
        tenant: task.tenant.clone(),
        steps: vec![StepResult {
            step: StepId::new("detect").unwrap(),
            task_type: TaskType::new("vad").unwrap(),
            status: TaskStatus::Succeeded,
            model_id: Some(gama),
            output: Some(Output {
                json: Some(json!({"speech": true})),
                ..Output::default()
            }),
            error: None,
            latency: Duration::from_millis(30),
            queue_wait: Duration::ZERO,
            attempts: 1,
            routing: Some(routing),
            budget: Some(Duration::from_secs(10)),
        }],
        recipe: Some(RecipeUse {
            task_type: task.task_type.clone(),
            chain: vec![TaskType::new("vad").unwrap()],
            reason: "no model serves audio_analysis".to_owned(),
            then: None,
        }),
    }
}

fn record(task: Task) -> TaskRecord {
    let snapshot = result(&task, TaskStatus::Queued);
    TaskRecord {
        deadline: task.timeout.map(|timeout| snapshot.queued_at + timeout),
        task,
        snapshot,
        runs: 0,
    }
}

fn key(record: &TaskRecord) -> TaskKey {
    record.key()
}

fn outcome(model: &str, latency_ms: u64) -> Outcome {
    Outcome {
        model: ModelId::new(model).unwrap(),
        task_type: TaskType::new("audio_analysis").unwrap(),
        outcome: CallOutcome::Success,
        latency: Duration::from_millis(latency_ms),
    }
}

fn ids(records: &[TaskRecord]) -> Vec<String> {
    records.iter().map(|r| r.task.id.to_string()).collect()
}

// ---- on both --------------------------------------------------------------

async fn an_accepted_task_reads_back_whole(db: Db) {
    let (store, _) = db.open("a").await;
    let accepted = record(audio_task("t-1"));
    assert!(store.accept(&accepted).await.unwrap());
    assert_eq!(
        store.get(&key(&accepted)).await.unwrap(),
        Some(accepted.snapshot.clone())
    );
    assert_eq!(
        store
            .get(&TaskKey::new(&acme(), &id("unknown")))
            .await
            .unwrap(),
        None
    );
    // The same id in another tenant is another task.
    assert_eq!(
        store
            .get(&TaskKey::new(&Tenant::anonymous(), &id("t-1")))
            .await
            .unwrap(),
        None
    );

    // Released and claimed again, the whole record comes back: input,
    // deadline to the nanosecond, snapshot, runs.
    store.release(&[key(&accepted)]).await.unwrap();
    let claimed = store.claim(10).await.unwrap();
    assert_eq!(claimed, vec![accepted]);
}

async fn an_unfinished_id_is_refused_and_a_finished_one_replaced(db: Db) {
    let (store, _) = db.open("a").await;
    let first = record(audio_task("t-1"));
    assert!(store.accept(&first).await.unwrap());

    let mut again = record(text_task("t-1", Priority::Low));
    again.task.tenant = acme();
    again.snapshot.tenant = acme();
    assert!(
        !store.accept(&again).await.unwrap(),
        "an unfinished task of that id holds it"
    );
    assert_eq!(
        store.get(&key(&first)).await.unwrap(),
        Some(first.snapshot.clone())
    );

    let done = result(&first.task, TaskStatus::Succeeded);
    assert!(store.finish(&key(&first), &done).await.unwrap());
    assert!(
        store.accept(&again).await.unwrap(),
        "a finished task of that id is replaced"
    );
    assert_eq!(
        store.get(&key(&again)).await.unwrap(),
        Some(again.snapshot.clone())
    );

    // The replacement is unfinished again: it can be finished again.
    let done = result(&again.task, TaskStatus::Failed);
    assert!(store.finish(&key(&again), &done).await.unwrap());
}

async fn the_first_final_result_wins(db: Db) {
    let (store, _) = db.open("a").await;
    let accepted = record(audio_task("t-1"));
    let key = key(&accepted);
    assert!(store.accept(&accepted).await.unwrap());

    // Finishes racing: one batch or several, exactly one wins.
    let results: Vec<TaskResult> = [
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::DeadlineExceeded,
    ]
    .into_iter()
    .map(|status| result(&accepted.task, status))
    .collect();
    let wrote = futures::future::join_all(results.iter().map(|r| store.finish(&key, r))).await;
    let winners: Vec<&TaskResult> = wrote
        .iter()
        .zip(&results)
        .filter(|(wrote, _)| *wrote.as_ref().unwrap())
        .map(|(_, result)| result)
        .collect();
    assert_eq!(winners.len(), 1, "{wrote:?}");
    let winner = winners[0].clone();
    assert_eq!(store.get(&key).await.unwrap(), Some(winner.clone()));

    // Later writes change nothing.
    assert!(!store.finish(&key, &results[1]).await.unwrap());
    let running = result(&accepted.task, TaskStatus::Running);
    store.update(&key, &running, 2).await.unwrap();
    assert!(!store.request_cancel(&key).await.unwrap());
    assert_eq!(store.get(&key).await.unwrap(), Some(winner));
    assert!(store.claim(10).await.unwrap().is_empty());
}

async fn an_update_records_where_a_task_stands_and_its_runs(db: Db) {
    let (store, _) = db.open("a").await;
    let accepted = record(audio_task("t-1"));
    let key = key(&accepted);
    assert!(store.accept(&accepted).await.unwrap());

    let running = result(&accepted.task, TaskStatus::Running);
    store.update(&key, &running, 1).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(running.clone()));

    store.release(std::slice::from_ref(&key)).await.unwrap();
    let claimed = store.claim(1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].snapshot, running);
    assert_eq!(claimed[0].runs, 1);
    assert_eq!(claimed[0].task, accepted.task);

    // An update of a task that is not there writes nothing.
    let stray = TaskKey::new(&acme(), &id("nowhere"));
    store.update(&stray, &running, 1).await.unwrap();
    assert_eq!(store.get(&stray).await.unwrap(), None);
}

async fn a_cancellation_reaches_the_holder_at_its_next_renewal(db: Db) {
    let (store, _) = db.open("a").await;
    let one = record(audio_task("t-1"));
    let two = record(audio_task("t-2"));
    assert!(store.accept(&one).await.unwrap());
    assert!(store.accept(&two).await.unwrap());
    assert!(store.renew().await.unwrap().is_empty());

    assert!(store.request_cancel(&key(&one)).await.unwrap());
    assert!(
        !store
            .request_cancel(&TaskKey::new(&acme(), &id("unknown")))
            .await
            .unwrap()
    );
    assert_eq!(store.renew().await.unwrap(), vec![key(&one)]);
    // It is said again until the task ends.
    assert_eq!(store.renew().await.unwrap(), vec![key(&one)]);

    let cancelled = result(&one.task, TaskStatus::Cancelled);
    assert!(store.finish(&key(&one), &cancelled).await.unwrap());
    assert!(!store.request_cancel(&key(&one)).await.unwrap());
    assert!(store.renew().await.unwrap().is_empty());
}

async fn released_tasks_are_claimed_by_urgency_and_returned_in_arrival_order(db: Db) {
    let (store, _) = db.open("a").await;
    let now = SystemTime::now();
    let mut tasks = Vec::new();
    for (name, priority, deadline) in [
        ("normal-open", Priority::Normal, None),
        ("low", Priority::Low, None),
        ("critical", Priority::Critical, None),
        (
            "normal-due",
            Priority::Normal,
            Some(now + Duration::from_secs(60)),
        ),
        (
            "normal-due-later",
            Priority::Normal,
            Some(now + Duration::from_secs(600)),
        ),
    ] {
        let mut accepted = record(text_task(name, priority));
        accepted.deadline = deadline;
        assert!(store.accept(&accepted).await.unwrap());
        tasks.push(accepted);
    }
    let held = record(text_task("held", Priority::Critical));
    assert!(store.accept(&held).await.unwrap());

    // Tasks this replica holds are not claimed: only released ones.
    let keys: Vec<TaskKey> = tasks.iter().map(key).collect();
    store.release(&keys).await.unwrap();

    // Critical first, then the nearest deadline; returned in arrival order.
    let first = store.claim(2).await.unwrap();
    assert_eq!(ids(&first), ["critical", "normal-due"]);
    let rest = store.claim(10).await.unwrap();
    assert_eq!(ids(&rest), ["normal-open", "low", "normal-due-later"]);
    assert!(store.claim(10).await.unwrap().is_empty());
    assert!(store.claim(0).await.unwrap().is_empty());
}

async fn sessions_unused_since_the_cut_are_pruned(db: Db) {
    let (store, _) = db.open("a").await;
    let (old, fresh) = (
        SessionId::new("old").unwrap(),
        SessionId::new("fresh").unwrap(),
    );
    let kind = ModelKind::new("audio-language");
    let context = object(json!({"speaker": "ana"}));
    store.put_session(&acme(), &old, &context).await.unwrap();
    store
        .append_session(&acme(), &old, &kind, &object(json!({"n": 1})), 8)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cut = std::time::SystemTime::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store.put_session(&acme(), &fresh, &context).await.unwrap();

    assert_eq!(store.prune_sessions(cut).await.unwrap(), 1);
    assert_eq!(store.session(&acme(), &old).await.unwrap(), None);
    assert!(store.session(&acme(), &fresh).await.unwrap().is_some());
    // Its entries went with it: a session put again under the name starts
    // empty.
    store.put_session(&acme(), &old, &context).await.unwrap();
    let again = store.session(&acme(), &old).await.unwrap().unwrap();
    assert!(again.entries.is_empty(), "{again:?}");
}

async fn sessions_keep_their_context_and_their_newest_entries(db: Db) {
    let (store, _) = db.open("a").await;
    let session = SessionId::new("s-1").unwrap();
    let other = Tenant::new("globex").unwrap();
    let kind = ModelKind::new("audio-language");
    assert_eq!(store.session(&acme(), &session).await.unwrap(), None);

    let context = object(json!({"speaker": "ana", "history": [1, 2, 3]}));
    store
        .put_session(&acme(), &session, &context)
        .await
        .unwrap();
    for n in 1..=3 {
        let entry = object(json!({"n": n, "text": format!("turn {n}")}));
        store
            .append_session(&acme(), &session, &kind, &entry, 2)
            .await
            .unwrap();
    }
    let stored = store.session(&acme(), &session).await.unwrap().unwrap();
    assert_eq!(stored.context, context);
    let kept: Vec<Value> = stored
        .entries
        .iter()
        .map(|(kind, entry)| {
            assert_eq!(kind.as_str(), "audio-language");
            entry["n"].clone()
        })
        .collect();
    assert_eq!(kept, [json!(2), json!(3)], "the newest two, oldest first");

    // A new context keeps the entries.
    let replaced = object(json!({"speaker": "bo"}));
    store
        .put_session(&acme(), &session, &replaced)
        .await
        .unwrap();
    let stored = store.session(&acme(), &session).await.unwrap().unwrap();
    assert_eq!(stored.context, replaced);
    assert_eq!(stored.entries.len(), 2);

    // Tenants never share a session.
    assert_eq!(store.session(&other, &session).await.unwrap(), None);
    // Appending to a session never put starts one with an empty context.
    let entry = object(json!({"n": 1}));
    store
        .append_session(&other, &session, &ModelKind::default(), &entry, 5)
        .await
        .unwrap();
    let stored = store.session(&other, &session).await.unwrap().unwrap();
    assert!(stored.context.is_empty());
    assert_eq!(stored.entries, vec![(ModelKind::default(), entry)]);

    assert!(store.delete_session(&acme(), &session).await.unwrap());
    assert_eq!(store.session(&acme(), &session).await.unwrap(), None);
    assert!(!store.delete_session(&acme(), &session).await.unwrap());
    assert!(store.session(&other, &session).await.unwrap().is_some());
}

async fn prune_deletes_final_results_that_ended_before_the_cut(db: Db) {
    let (store, _) = db.open("a").await;
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let old = record(audio_task("old"));
    let recent = record(audio_task("recent"));
    let open = record(audio_task("open"));
    for accepted in [&old, &recent, &open] {
        assert!(store.accept(accepted).await.unwrap());
    }
    let mut ended = result(&old.task, TaskStatus::Succeeded);
    ended.finished_at = Some(now - 2 * hour);
    assert!(store.finish(&key(&old), &ended).await.unwrap());
    let mut ended = result(&recent.task, TaskStatus::Succeeded);
    ended.finished_at = Some(now);
    assert!(store.finish(&key(&recent), &ended).await.unwrap());
    store.publish(&[outcome("gama", 10)]).await.unwrap();

    assert_eq!(store.prune(now - hour).await.unwrap(), 1);
    assert_eq!(store.get(&key(&old)).await.unwrap(), None);
    assert!(store.get(&key(&recent)).await.unwrap().is_some());
    assert!(
        store.get(&key(&open)).await.unwrap().is_some(),
        "unfinished tasks are never pruned"
    );
    assert_eq!(store.prune(now - hour).await.unwrap(), 0);
    assert_eq!(
        store.prune(now + hour).await.unwrap(),
        1,
        "only final results go"
    );
}

async fn concurrent_accepts_share_commits(db: Db) {
    const TASKS: usize = 2000;
    let (store, stats) = db.open("a").await;
    let before = stats.commits();
    let started = Instant::now();
    let accepts: Vec<_> = (0..TASKS)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let accepted = record(text_task(&format!("t-{n}"), Priority::Normal));
                store.accept(&accepted).await
            })
        })
        .collect();
    for accept in accepts {
        assert_eq!(accept.await.unwrap(), Ok(true));
    }
    let elapsed = started.elapsed();
    let commits = stats.commits() - before;
    eprintln!("{TASKS} concurrent accepts in {elapsed:?}, {commits} commits");
    assert!(
        commits * 10 <= TASKS as u64,
        "{commits} commits for {TASKS} writes: they should share commits"
    );
    let last = TaskKey::new(&Tenant::anonymous(), &id(&format!("t-{}", TASKS - 1)));
    assert!(store.get(&last).await.unwrap().is_some());
}

async fn migrations_run_again_when_the_store_is_opened_again(db: Db) {
    let (store, _) = db.open("a").await;
    let accepted = record(audio_task("t-1"));
    assert!(store.accept(&accepted).await.unwrap());
    drop(store);

    let (store, _) = db.open("b").await;
    assert_eq!(
        store.get(&key(&accepted)).await.unwrap(),
        Some(accepted.snapshot.clone())
    );
    store.ping().await.unwrap();
    // The newest migration of the backend (SQLite 2, PostgreSQL 3), the
    // same when checked again.
    let version = grym_store::check(&db.url()).await.unwrap();
    assert!(matches!(version, Some(2 | 3)), "{version:?}");
    assert_eq!(grym_store::check(&db.url()).await.unwrap(), version);
}

// ---- PostgreSQL: replicas sharing one database ------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_live_lease_is_not_claimed_until_its_holder_stops_renewing() {
    let db = Db::postgres().await;
    // Short, for a quick test; long enough that a loaded machine never
    // delays a renewal past it.
    let lease = Duration::from_secs(2);
    let (a, _) = db.open_with_lease("a", lease).await;
    let (b, _) = db.open_with_lease("b", lease).await;
    let accepted: Vec<TaskRecord> = (0..3)
        .map(|n| record(text_task(&format!("t-{n}"), Priority::Normal)))
        .collect();
    for task in &accepted {
        assert!(a.accept(task).await.unwrap());
    }

    // While A renews, B takes nothing, for longer than a lease.
    let until = Instant::now() + 2 * lease;
    while Instant::now() < until {
        a.renew().await.unwrap();
        assert!(b.claim(10).await.unwrap().is_empty());
        tokio::time::sleep(lease / 4).await;
    }

    // A stops renewing; once its lease runs out, B takes every task.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let claimed = b.claim(10).await.unwrap();
    assert_eq!(claimed, accepted);

    // A's renewals no longer reach them: with B silent, B's lease runs out
    // though A goes on renewing, and a third replica takes them.
    let until = Instant::now() + lease + Duration::from_millis(300);
    while Instant::now() < until {
        assert!(a.renew().await.unwrap().is_empty());
        tokio::time::sleep(lease / 4).await;
    }
    let (c, _) = db.open_with_lease("c", lease).await;
    assert_eq!(c.claim(10).await.unwrap(), accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_claiming_at_once_never_share_a_task() {
    const TASKS: usize = 300;
    let db = Db::postgres().await;
    let (a, _) = db.open("a").await;
    let accepted: Vec<TaskRecord> = (0..TASKS)
        .map(|n| record(text_task(&format!("t-{n}"), Priority::Normal)))
        .collect();
    let writes = futures::future::join_all(accepted.iter().map(|task| a.accept(task))).await;
    assert!(writes.into_iter().all(|wrote| wrote == Ok(true)));
    let keys: Vec<TaskKey> = accepted.iter().map(key).collect();
    a.release(&keys).await.unwrap();

    let mut claimers = Vec::new();
    for replica in ["b", "c", "d"] {
        let (store, _) = db.open(replica).await;
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim(7).await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|r| r.task.id.to_string()));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut per_replica = Vec::new();
    for claimer in claimers {
        let mine = claimer.await.unwrap();
        per_replica.push(mine.len());
        for task in mine {
            assert!(seen.insert(task.clone()), "{task} was claimed twice");
        }
    }
    assert_eq!(
        seen.len(),
        TASKS,
        "every task claimed once: {per_replica:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outcomes_published_by_one_replica_reach_the_others_only() {
    let db = Db::postgres().await;
    let (a, _) = db.open("a").await;
    let (b, _) = db.open("b").await;
    // At first, only a cursor: a replica starts from now.
    a.publish(&[outcome("before", 1)]).await.unwrap();
    let (seen, cursor_a) = a.others_outcomes(0).await.unwrap();
    assert!(seen.is_empty());
    let (seen, cursor_b) = b.others_outcomes(0).await.unwrap();
    assert!(seen.is_empty());

    a.publish(&[outcome("gama", 10), outcome("wav2vec2", 20)])
        .await
        .unwrap();
    b.publish(&[outcome("gama", 30)]).await.unwrap();

    let (seen, next_b) = b.others_outcomes(cursor_b).await.unwrap();
    assert_eq!(seen, [outcome("gama", 10), outcome("wav2vec2", 20)]);
    let (seen, next_a) = a.others_outcomes(cursor_a).await.unwrap();
    assert_eq!(seen, [outcome("gama", 30)]);
    assert!(b.others_outcomes(next_b).await.unwrap().0.is_empty());
    assert!(a.others_outcomes(next_a).await.unwrap().0.is_empty());

    // Pruning takes outcomes older than the cut.
    a.prune(SystemTime::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert!(b.others_outcomes(cursor_b).await.unwrap().0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_cancellation_asked_through_another_replica_reaches_the_holder() {
    let db = Db::postgres().await;
    let (a, _) = db.open("a").await;
    let (b, _) = db.open("b").await;
    let accepted = record(audio_task("t-1"));
    assert!(a.accept(&accepted).await.unwrap());
    assert!(
        !b.accept(&accepted).await.unwrap(),
        "an id is unfinished on any replica"
    );
    assert!(b.request_cancel(&key(&accepted)).await.unwrap());
    assert!(b.renew().await.unwrap().is_empty());
    assert_eq!(a.renew().await.unwrap(), vec![key(&accepted)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stopped_database_fails_writes_within_seconds_and_recovers() {
    let mut db = Db::postgres().await;
    let (store, _) = db.open("a").await;
    let before = record(audio_task("before"));
    assert!(store.accept(&before).await.unwrap());
    assert!(!store.location().contains(db.server().password()));

    db.server().stop().await;
    let during = record(audio_task("during"));
    let started = Instant::now();
    let error = store.accept(&during).await.unwrap_err();
    eprintln!("a write failed after {:?}: {error}", started.elapsed());
    assert!(
        matches!(error, StoreError::Unavailable(_)),
        "a write fails as unavailable: {error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a write fails within seconds, not {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert!(matches!(
        store.get(&key(&before)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(store.ping().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(15));

    db.server().restart().await;
    // The pool drops its dead connections and opens new ones.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.accept(&during).await {
            Ok(wrote) => {
                assert!(wrote);
                break;
            }
            Err(error) if Instant::now() < deadline => {
                eprintln!("not yet: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("writes did not recover: {error}"),
        }
    }
    assert!(store.get(&key(&before)).await.unwrap().is_some());
    assert!(store.get(&key(&during)).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_database_that_is_not_there_fails_the_open_without_showing_the_password() {
    let mut db = Db::postgres().await;
    let url = db.url();
    let password = db.server().password();
    db.server().stop().await;
    let started = Instant::now();
    let error = grym_store::open(&url, "a", &DurabilitySettings::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(error.contains("127.0.0.1"), "{error}");
    assert!(!error.contains(password), "{error}");
}

// ---- SQLite: one process, one file ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_second_open_of_the_same_file_fails_naming_its_lock() {
    let db = Db::sqlite().await;
    let (_first, _) = db.open("a").await;
    let error = grym_store::open(&db.url(), "b", &DurabilitySettings::default())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, grym_store::Error::Locked { .. }),
        "{message}"
    );
    assert!(message.contains("grym.db.lock"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_reopened_store_claims_at_once_what_the_previous_process_held() {
    let db = Db::sqlite().await;
    let (first, _) = db.open("grymd").await;
    let queued = record(audio_task("queued"));
    let running = record(audio_task("running"));
    assert!(first.accept(&queued).await.unwrap());
    assert!(first.accept(&running).await.unwrap());
    first
        .update(
            &key(&running),
            &result(&running.task, TaskStatus::Running),
            1,
        )
        .await
        .unwrap();
    drop(first);

    // The same replica name, as a restarted grymd has.
    let (second, _) = db.open("grymd").await;
    let claimed = second.claim(10).await.unwrap();
    assert_eq!(ids(&claimed), ["queued", "running"]);
    assert_eq!(claimed[1].runs, 1);
    assert!(second.claim(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_relative_path_is_opened_with_its_folder_created() {
    // Tests run in the package folder; the target folder is beside it.
    let target = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let here = std::env::current_dir().unwrap();
    let relative = relative_to(target.path(), &here).join("nested/deeper/grym.db");
    assert!(relative.is_relative());
    let url = format!("sqlite://{}", relative.display());
    let store = grym_store::open(&url, "a", &DurabilitySettings::default())
        .await
        .unwrap()
        .unwrap();
    assert!(store.accept(&record(audio_task("t-1"))).await.unwrap());
    assert!(target.path().join("nested/deeper/grym.db").is_file());
    assert!(target.path().join("nested/deeper/grym.db.lock").is_file());
    assert_eq!(store.location(), relative.display().to_string());
}

#[tokio::test]
async fn memory_opens_no_store() {
    let store = grym_store::open("memory", "a", &DurabilitySettings::default())
        .await
        .unwrap();
    assert!(store.is_none());
    assert_eq!(grym_store::check("memory").await.unwrap(), None);
}

/// `path` as seen from `from`, both absolute.
fn relative_to(path: &std::path::Path, from: &std::path::Path) -> std::path::PathBuf {
    let path: Vec<_> = path.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = path.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut relative = std::path::PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for part in &path[common..] {
        relative.push(part);
    }
    relative
}
