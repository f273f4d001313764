//! The registry's models and the choice of their replicas.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::ids::{ModelKind, TaskType};
use crate::model::{CapabilitySource, Description, Health};
use crate::testing::FakeModel;

fn worker_description() -> Description {
    let fake = FakeModel::serving("gama", "audio_analysis", 0.95);
    let entry = fake.described_entry();
    (*entry.description()).clone()
}

#[test]
fn a_pinned_kind_keeps_the_workers_capabilities() {
    let entry = FakeModel::serving("gama", "audio_analysis", 0.95)
        .entry()
        .with_kind(ModelKind::new("audio-language"));
    assert!(entry.needs_description());
    entry.learn_description(worker_description());
    let description = entry.description();
    assert_eq!(description.kind.as_str(), "audio-language");
    assert_eq!(description.capabilities.len(), 1);
    assert_eq!(description.source, CapabilitySource::Worker);
}

#[test]
fn pinned_capabilities_keep_the_workers_kind() {
    let entry = FakeModel::serving("gama", "audio_analysis", 0.95)
        .entry()
        .with_capabilities(Vec::new());
    assert!(entry.needs_description());
    entry.learn_description(worker_description());
    let description = entry.description();
    assert_eq!(description.kind.as_str(), "fake");
    assert!(description.capabilities.is_empty());
    assert_eq!(description.source, CapabilitySource::Config);
}

#[test]
fn a_fully_pinned_model_needs_no_description() {
    let entry = FakeModel::serving("gama", "audio_analysis", 0.95)
        .entry()
        .with_kind(ModelKind::new("audio-language"))
        .with_capabilities(Vec::new());
    assert!(!entry.needs_description());
}

#[test]
fn a_model_registered_twice_is_refused() {
    let fake = FakeModel::serving("gama", "audio_analysis", 0.95);
    assert!(Registry::new([fake.entry(), fake.entry()]).is_err());
}

fn two_replicas() -> ModelEntry {
    let a = FakeModel::serving("gama", "audio_analysis", 0.95);
    let b = FakeModel::serving("gama", "audio_analysis", 0.95);
    ModelEntry::new(
        ModelId::new("gama").unwrap(),
        vec![
            Replica::new("a", Arc::new(a)),
            Replica::new("b", Arc::new(b)),
        ],
    )
    .unwrap()
}

#[test]
fn a_model_serves_while_any_replica_does() {
    let entry = two_replicas();
    assert_eq!(entry.health(), Health::Unknown);
    entry.replicas()[0].set_health(Health::NotServing);
    assert_eq!(entry.health(), Health::Unknown);
    entry.replicas()[1].set_health(Health::Serving);
    assert_eq!(entry.health(), Health::Serving);
    entry.replicas()[1].set_health(Health::NotServing);
    assert_eq!(entry.health(), Health::NotServing);
}

#[test]
fn calls_go_to_the_least_busy_replica_that_is_not_down() {
    let entry = two_replicas();
    let first = entry.pick_replica().unwrap().start_call();
    let second = entry.pick_replica().unwrap();
    assert_eq!(second.in_flight(), 0, "the idle replica is picked");
    assert_eq!(entry.in_flight(), 1);
    drop(first);
    assert_eq!(entry.in_flight(), 0);

    entry.replicas()[0].set_health(Health::NotServing);
    for _ in 0..4 {
        assert_eq!(entry.pick_replica().unwrap().endpoint(), "b");
    }
    entry.replicas()[1].set_health(Health::NotServing);
    assert!(entry.pick_replica().is_none());
}

#[test]
fn a_new_registry_keeps_unchanged_models_with_their_statistics() {
    let gama = FakeModel::serving("gama", "audio_analysis", 0.95);
    let old = Registry::new([gama.entry()]).unwrap();
    let task_type = TaskType::new("audio_analysis").unwrap();
    let now = Instant::now();
    old.models().next().unwrap().record(
        &task_type,
        now,
        Duration::from_secs(10),
        CallOutcome::Success,
        Duration::from_millis(5),
    );

    let clap = FakeModel::serving("clap", "audio_analysis", 0.8);
    let new = old.succeed_with([gama.entry(), clap.entry()]).unwrap();
    let kept = new.get(&ModelId::new("gama").unwrap()).unwrap();
    assert!(Arc::ptr_eq(kept, old.models().next().unwrap()));
    assert_eq!(
        kept.stats(&task_type, now, Duration::from_secs(10))
            .attempts,
        1.0
    );
    assert_eq!(new.models().len(), 2);
}

fn fake_replica(endpoint: &str) -> Replica {
    Replica::new(
        endpoint,
        Arc::new(FakeModel::serving("gama", "audio_analysis", 0.95)),
    )
}

fn pool(endpoints: &[&str]) -> ModelEntry {
    ModelEntry::discovered(
        ModelId::new("gama").unwrap(),
        vec!["dns://gama.test:7001".to_owned()],
        endpoints.iter().map(|e| fake_replica(e)).collect(),
    )
    .with_seed(5)
}

fn endpoints(list: &[&str]) -> Vec<String> {
    list.iter().map(|e| (*e).to_owned()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_pool_that_changes_keeps_the_replicas_that_stay_with_their_state() {
    let entry = pool(&["a", "b"]);
    let a = Arc::clone(&entry.replicas()[0]);
    a.set_health(Health::Serving);
    let call = a.start_call();
    let b_call = Arc::clone(&entry.replicas()[1]).start_call();
    let task_type = TaskType::new("audio_analysis").unwrap();
    let half_life = Duration::from_secs(10);
    entry.record(
        &task_type,
        Instant::now(),
        half_life,
        CallOutcome::Success,
        Duration::from_millis(5),
    );

    let changes = entry.set_endpoints(
        &endpoints(&["a", "c"]),
        |endpoint| Some(fake_replica(endpoint)),
        Instant::now(),
    );
    assert_eq!(changes.added, ["c"]);
    assert_eq!(changes.removed, ["b"]);
    let now: Vec<String> = entry
        .replicas()
        .iter()
        .map(|r| r.endpoint().to_owned())
        .collect();
    assert_eq!(now, ["a", "c"]);
    assert!(Arc::ptr_eq(&entry.replicas()[0], &a), "the same replica");
    assert_eq!(entry.replicas()[0].health(), Health::Serving);
    assert_eq!(entry.replicas()[0].in_flight(), 1);
    assert_eq!(
        entry.stats(&task_type, Instant::now(), half_life).attempts,
        1.0,
        "the model keeps its statistics"
    );
    // The call on the replica that left still ends on it.
    drop(b_call);
    drop(call);
    assert_eq!(entry.in_flight(), 0);

    let unchanged =
        entry.set_endpoints(&endpoints(&["a", "c"]), |_| unreachable!(), Instant::now());
    assert!(unchanged.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_replica_joining_a_pool_starts_at_its_peers_latency() {
    let entry = pool(&["a", "b"]);
    let now = Instant::now();
    for (replica, ms) in entry.replicas().iter().zip([100, 300]) {
        let mut call = replica.start_call();
        call.ended(true, Duration::from_millis(ms));
    }
    entry.set_endpoints(&endpoints(&["a", "b", "c"]), |e| Some(fake_replica(e)), now);
    let joined = entry.replicas()[2].latency_estimate(now);
    assert_eq!(joined.as_millis(), 200, "{joined:?}");
}

#[tokio::test(start_paused = true)]
async fn a_pool_with_no_replica_serves_nothing_and_does_not_panic() {
    let entry = pool(&[]);
    let now = Instant::now();
    assert_eq!(entry.health(), Health::NotServing);
    assert_eq!(entry.in_flight(), 0);
    assert!(entry.choose_replica(now, &[]).is_none());
    assert!(!entry.can_serve(now, &[]));
    crate::registry::probe::probe_model(&entry, Duration::from_secs(1)).await;
    let changes = entry.set_endpoints(&endpoints(&["a"]), |e| Some(fake_replica(e)), now);
    assert_eq!(changes.added, ["a"]);
    assert!(entry.choose_replica(now, &[]).is_some());
}

#[tokio::test(start_paused = true)]
async fn two_choices_spread_calls_and_send_fewer_to_a_slow_replica() {
    let entry = pool(&["a", "b", "c"]);
    let slow = Arc::clone(&entry.replicas()[2]);
    slow.start_call().ended(true, Duration::from_millis(300));
    for replica in &entry.replicas()[..2] {
        replica.start_call().ended(true, Duration::from_millis(30));
    }
    let now = Instant::now();
    let mut held = Vec::new();
    let mut counts = [0_usize; 3];
    // Calls that stay in flight: each one makes its replica dearer.
    for _ in 0..30 {
        let chosen = entry.choose_replica(now, &[]).unwrap();
        let i = entry
            .replicas()
            .iter()
            .position(|r| Arc::ptr_eq(r, &chosen.replica))
            .unwrap();
        counts[i] += 1;
        held.push(chosen.start_call());
    }
    assert!(counts[0] >= 10 && counts[1] >= 10, "{counts:?}");
    assert!(
        counts[2] >= 1,
        "a slow replica still takes some: {counts:?}"
    );
    assert!(counts[2] < counts[0] && counts[2] < counts[1], "{counts:?}");

    let again = |seed| {
        let entry = pool(&["a", "b", "c"]).with_seed(seed);
        (0..20)
            .map(|_| entry.pick_replica().unwrap().endpoint().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(again(11), again(11), "a seed repeats the draws");
}

#[tokio::test(start_paused = true)]
async fn a_half_open_replica_takes_its_probe_before_any_choice() {
    let entry = pool(&["a", "b", "c"]);
    let settings = EjectionSettings::default();
    let now = Instant::now();
    let target = Arc::clone(&entry.replicas()[1]);
    for _ in 0..settings.consecutive_failures {
        entry.judge(&target, outlier::Verdict::Failed, now, &settings);
    }
    assert!(target.is_ejected());
    for _ in 0..10 {
        let chosen = entry.choose_replica(now, &[]).unwrap();
        assert!(!Arc::ptr_eq(&chosen.replica, &target));
    }
    let later = now + settings.base_time;
    let probe = entry.choose_replica(later, &[]).unwrap();
    assert!(probe.probe && Arc::ptr_eq(&probe.replica, &target));
    // Skipped, as a retry's earlier replica is, it is not chosen.
    let chosen = entry.choose_replica(later, &[Arc::clone(&target)]).unwrap();
    assert!(!Arc::ptr_eq(&chosen.replica, &target));
}
