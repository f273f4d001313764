use super::*;
use crate::testing::FakeModel;

fn task_type(name: &str) -> TaskType {
    TaskType::new(name).unwrap()
}

fn ranked(selector: &Selector, name: &str, registry: &Registry) -> Vec<String> {
    selector
        .plan(&task_type(name), registry, Instant::now())
        .unwrap()
        .candidates
        .into_iter()
        .map(|c| c.model.id().to_string())
        .collect()
}

fn scored() -> Selector {
    Selector::new(SelectionSettings {
        seed: Some(1),
        ..SelectionSettings::default()
    })
}

#[test]
fn without_history_the_highest_declared_confidence_ranks_first() {
    let registry = Registry::new([
        FakeModel::serving("wav2vec2", "transcription", 0.7).described_entry(),
        FakeModel::serving("whisper", "transcription", 0.95).described_entry(),
        FakeModel::serving("clap", "transcription", 0.8).described_entry(),
    ])
    .unwrap();
    assert_eq!(
        ranked(&scored(), "transcription", &registry),
        ["whisper", "clap", "wav2vec2"]
    );
}

#[test]
fn models_without_the_capability_are_never_candidates() {
    let registry = Registry::new([
        FakeModel::serving("gama", "audio_analysis", 0.95).described_entry(),
        FakeModel::serving("llama", "text_generation", 0.9).described_entry(),
    ])
    .unwrap();
    assert_eq!(ranked(&scored(), "text_generation", &registry), ["llama"]);
    let err = scored()
        .plan(&task_type("transcription"), &registry, Instant::now())
        .unwrap_err();
    assert!(matches!(err, Error::NoModelForTaskType { .. }));
}

#[test]
fn a_model_known_to_be_down_is_not_a_candidate() {
    let down = FakeModel::serving("whisper", "transcription", 0.95).described_entry();
    down.replicas()[0].set_health(Health::NotServing);
    let registry = Registry::new([
        down,
        FakeModel::serving("wav2vec2", "transcription", 0.7).described_entry(),
    ])
    .unwrap();
    assert_eq!(ranked(&scored(), "transcription", &registry), ["wav2vec2"]);
}

#[test]
fn a_model_that_does_not_take_the_input_is_left_out_and_named() {
    let registry = Registry::new([
        FakeModel::serving("audio-features", "audio_analysis", 0.9)
            .inputs(&[Modality::Audio])
            .described_entry(),
        FakeModel::serving("llm", "audio_analysis", 0.5).described_entry(),
    ])
    .unwrap();
    let now = Instant::now();
    let audio = scored()
        .plan_for(
            &task_type("audio_analysis"),
            Some(Modality::Audio),
            &registry,
            now,
        )
        .unwrap();
    assert_eq!(audio.candidates.len(), 2);
    assert!(audio.excluded.is_empty());

    let text = scored()
        .plan_for(
            &task_type("audio_analysis"),
            Some(Modality::Text),
            &registry,
            now,
        )
        .unwrap();
    let ids: Vec<&str> = text
        .candidates
        .iter()
        .map(|c| c.model.id().as_str())
        .collect();
    assert_eq!(ids, ["llm"]);
    let explanation = text.routing().explanation();
    assert!(
        explanation.ends_with("; left out: `audio-features` accepts audio input only"),
        "{explanation}"
    );
    // Without a known input, nothing is left out.
    assert_eq!(ranked(&scored(), "audio_analysis", &registry).len(), 2);
}

#[test]
fn when_no_model_takes_the_input_the_error_names_its_modality() {
    let registry = Registry::new([FakeModel::serving("audio-features", "audio_analysis", 0.9)
        .inputs(&[Modality::Audio])
        .described_entry()])
    .unwrap();
    let err = scored()
        .plan_for(
            &task_type("audio_analysis"),
            Some(Modality::Text),
            &registry,
            Instant::now(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InputNotAccepted { .. }), "{err:?}");
    assert_eq!(err.kind(), crate::error::ErrorKind::FailedPrecondition);
    assert_eq!(
        err.to_string(),
        "no model that serves task type `audio_analysis` accepts text input \
         (`audio-features` accepts audio input only)"
    );
}

#[test]
fn when_every_capable_model_is_down_the_plan_names_them() {
    let down = FakeModel::serving("whisper", "transcription", 0.95).described_entry();
    down.replicas()[0].set_health(Health::NotServing);
    let registry = Registry::new([down]).unwrap();
    match scored().plan(&task_type("transcription"), &registry, Instant::now()) {
        Err(Error::NoHealthyModel { down, .. }) => assert_eq!(down[0].as_str(), "whisper"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn audio_analysis_goes_to_gama_with_wav2vec2_first_among_fallbacks() {
    let registry = Registry::new([
        FakeModel::serving("audio-features", "audio_analysis", 0.99).described_entry(),
        FakeModel::serving("gama", "audio_analysis", 0.5).described_entry(),
        FakeModel::serving("wav2vec2", "audio_analysis", 0.1).described_entry(),
    ])
    .unwrap();
    let plan = scored()
        .plan(&task_type("audio_analysis"), &registry, Instant::now())
        .unwrap();
    let ids: Vec<&str> = plan
        .candidates
        .iter()
        .map(|c| c.model.id().as_str())
        .collect();
    assert_eq!(ids, ["gama", "wav2vec2", "audio-features"]);
    assert_eq!(plan.reason, Reason::Route);
    assert_eq!(plan.estimated_latency, Duration::from_millis(800));
    assert_eq!(plan.candidates[0].breakdown.confidence, 0.95);
}

#[test]
fn without_a_healthy_gama_ordinary_scoring_decides() {
    let gama = FakeModel::serving("gama", "audio_analysis", 0.5).described_entry();
    gama.replicas()[0].set_health(Health::Unknown);
    let registry = Registry::new([
        FakeModel::serving("audio-features", "audio_analysis", 0.6).described_entry(),
        gama,
    ])
    .unwrap();
    let plan = scored()
        .plan(&task_type("audio_analysis"), &registry, Instant::now())
        .unwrap();
    assert_eq!(plan.candidates[0].model.id().as_str(), "audio-features");
    assert_eq!(plan.reason, Reason::HighestScore);
}

#[test]
fn a_failing_model_loses_first_place_to_a_healthy_peer() {
    let strong = FakeModel::serving("strong", "transcription", 0.9).described_entry();
    let steady = FakeModel::serving("steady", "transcription", 0.7).described_entry();
    let t = task_type("transcription");
    let now = Instant::now();
    let half_life = Duration::from_secs(10);
    for i in 0..60 {
        let outcome = if i % 2 == 0 {
            CallOutcome::Success
        } else {
            CallOutcome::Failure
        };
        strong.record(&t, now, half_life, outcome, Duration::from_millis(20));
        steady.record(
            &t,
            now,
            half_life,
            CallOutcome::Success,
            Duration::from_millis(20),
        );
    }
    let registry = Registry::new([strong, steady]).unwrap();
    assert_eq!(
        ranked(&scored(), "transcription", &registry),
        ["steady", "strong"]
    );
}

#[test]
fn thompson_sampling_is_repeatable_with_a_seed_and_favours_the_better_model() {
    let settings = SelectionSettings {
        policy: Policy::Thompson,
        ..SelectionSettings::default()
    };
    let good = FakeModel::serving("good", "t", 0.5).described_entry();
    let bad = FakeModel::serving("bad", "t", 0.5).described_entry();
    let t = task_type("t");
    let now = Instant::now();
    for _ in 0..50 {
        good.record(
            &t,
            now,
            Duration::from_secs(10),
            CallOutcome::Success,
            Duration::from_millis(10),
        );
        bad.record(
            &t,
            now,
            Duration::from_secs(10),
            CallOutcome::Failure,
            Duration::from_millis(10),
        );
    }
    let registry = Registry::new([good, bad]).unwrap();
    let picks = |seed| {
        let selector = Selector::new(SelectionSettings {
            seed: Some(seed),
            ..settings.clone()
        });
        (0..100)
            .map(|_| ranked(&selector, "t", &registry)[0].clone())
            .collect::<Vec<_>>()
    };
    let first = picks(7);
    assert_eq!(first, picks(7), "the same seed draws the same picks");
    let good_share = first.iter().filter(|id| *id == "good").count();
    assert!(good_share >= 95, "good chosen {good_share} times of 100");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [&str; 3] = ["audio_analysis", "transcription", "text_generation"];

    fn health(code: u8) -> Health {
        match code % 3 {
            0 => Health::Unknown,
            1 => Health::Serving,
            _ => Health::NotServing,
        }
    }

    proptest! {
        #[test]
        fn every_candidate_serves_the_type_and_every_healthy_server_is_one(
            models in proptest::collection::vec((0_usize..3, 0.0..=1.0_f64, any::<u8>()), 1..10),
            asked in 0_usize..3,
            thompson in any::<bool>(),
        ) {
            let entries = models.iter().enumerate().map(|(i, (serves, confidence, code))| {
                let name = if i == 0 { "gama".to_owned() } else { format!("m{i}") };
                let entry = FakeModel::serving(&name, TYPES[*serves], *confidence).described_entry();
                entry.replicas()[0].set_health(health(*code));
                entry
            });
            let registry = Registry::new(entries).unwrap();
            let settings = SelectionSettings {
                policy: if thompson { Policy::Thompson } else { Policy::Scored },
                ..SelectionSettings::default()
            };
            let asked = task_type(TYPES[asked]);
            let expected: Vec<&str> = registry
                .models()
                .filter(|m| m.description().capability(&asked).is_some())
                .filter(|m| m.health() != Health::NotServing)
                .map(|m| m.id().as_str())
                .collect();
            match Selector::new(SelectionSettings { seed: Some(9), ..settings }).plan(&asked, &registry, Instant::now()) {
                Ok(plan) => {
                    let mut planned: Vec<&str> =
                        plan.candidates.iter().map(|c| c.model.id().as_str()).collect();
                    for candidate in &plan.candidates {
                        prop_assert!(candidate.model.description().capability(&asked).is_some());
                    }
                    planned.sort_unstable();
                    let mut expected = expected.clone();
                    expected.sort_unstable();
                    prop_assert_eq!(planned, expected);
                }
                Err(_) => prop_assert!(expected.is_empty()),
            }
        }
    }
}

/// Reaction to a change: a model that starts failing, turns slower, or
/// hangs loses its first choices within a number of its own calls, at 1
/// and at 100 calls a second.
mod reaction {
    use super::*;

    const RATES: [Duration; 2] = [Duration::from_millis(10), Duration::from_secs(1)];

    /// How one call of a model goes, by model and by task number.
    type Behaviour = dyn Fn(&str, u32) -> (CallOutcome, Duration);

    /// Runs tasks `tasks`, one every `every` of paused time: each tries the
    /// plan's models in order until one answers, recording every outcome as
    /// the orchestrator does. Returns each task's first choice.
    async fn drive(
        selector: &Selector,
        registry: &Registry,
        every: Duration,
        tasks: std::ops::Range<u32>,
        behave: &Behaviour,
    ) -> Vec<String> {
        let t = task_type("transcription");
        let mut first = Vec::new();
        for task in tasks {
            tokio::time::advance(every).await;
            let now = Instant::now();
            let plan = selector.plan(&t, registry, now).unwrap();
            first.push(plan.candidates[0].model.id().to_string());
            for candidate in &plan.candidates {
                let (outcome, latency) = behave(candidate.model.id().as_str(), task);
                selector.record(&candidate.model, &t, now, outcome, latency);
                if outcome == CallOutcome::Success {
                    break;
                }
            }
        }
        first
    }

    fn two_models() -> Registry {
        Registry::new([
            FakeModel::serving("strong", "transcription", 0.9).described_entry(),
            FakeModel::serving("steady", "transcription", 0.7).described_entry(),
        ])
        .unwrap()
    }

    /// `strong` answers in 80 ms and fails one call in 33; `steady`
    /// answers every call in 120 ms.
    fn healthy(model: &str, task: u32) -> (CallOutcome, Duration) {
        match model {
            "strong" if task.is_multiple_of(33) => (CallOutcome::Failure, Duration::from_millis(5)),
            "strong" => (CallOutcome::Success, Duration::from_millis(80)),
            _ => (CallOutcome::Success, Duration::from_millis(120)),
        }
    }

    const CHANGE: u32 = 3_000;

    /// How many of `first` (the first choices since the change) went to
    /// `strong` before a window of 20 tasks in which it was first at most
    /// 4 times (it had them all before).
    fn calls_until_it_lost_80_percent(first: &[String]) -> usize {
        let strong =
            |range: std::ops::Range<usize>| first[range].iter().filter(|m| *m == "strong").count();
        let start = (0..first.len() - 20)
            .find(|&i| strong(i..i + 20) <= 4)
            .unwrap_or_else(|| panic!("strong kept its first choices: {first:?}"));
        strong(0..start)
    }

    async fn after_a_change(every: Duration, changed: &Behaviour) -> Vec<String> {
        let selector = scored();
        let registry = two_models();
        let before = drive(&selector, &registry, every, 0..CHANGE, &healthy).await;
        assert!(
            before[CHANGE as usize - 100..]
                .iter()
                .all(|m| m == "strong")
        );
        drive(&selector, &registry, every, CHANGE..CHANGE + 300, changed).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_that_starts_failing_half_its_calls_loses_80_percent_within_20_of_them() {
        for every in RATES {
            let first = after_a_change(every, &|model, task| match model {
                "strong" if task.is_multiple_of(2) => {
                    (CallOutcome::Failure, Duration::from_millis(5))
                }
                _ => healthy(model, task),
            })
            .await;
            let calls = calls_until_it_lost_80_percent(&first);
            assert!(calls <= 20, "{calls} calls at one every {every:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_that_turns_three_times_slower_loses_80_percent_within_100_of_its_calls() {
        for every in RATES {
            let first = after_a_change(every, &|model, task| match healthy(model, task) {
                (CallOutcome::Success, latency) if model == "strong" => {
                    (CallOutcome::Success, latency * 3)
                }
                other => other,
            })
            .await;
            let calls = calls_until_it_lost_80_percent(&first);
            assert!(calls <= 100, "{calls} calls at one every {every:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_model_loses_80_percent_within_a_few_calls() {
        for every in RATES {
            // Every call runs into the caller's 1 s deadline.
            let first = after_a_change(every, &|model, task| match model {
                "strong" => (CallOutcome::Timeout, Duration::from_secs(1)),
                _ => healthy(model, task),
            })
            .await;
            let calls = calls_until_it_lost_80_percent(&first);
            assert!(calls <= 5, "{calls} calls at one every {every:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_model_looks_slow_not_only_failing() {
        let selector = scored();
        let registry = two_models();
        let every = Duration::from_secs(1);
        drive(&selector, &registry, every, 0..CHANGE, &healthy).await;
        drive(
            &selector,
            &registry,
            every,
            CHANGE..CHANGE + 5,
            &|model, task| match model {
                "strong" => (CallOutcome::Timeout, Duration::from_secs(1)),
                _ => healthy(model, task),
            },
        )
        .await;
        let strong = registry.get(&ModelId::literal("strong")).unwrap();
        let stats = selector.rates(strong, &task_type("transcription"), Instant::now());
        // Its answers took 80 ms; its timeouts count as at least 1 s.
        assert!(stats.mean_latency > Duration::from_millis(320), "{stats:?}");
        assert!(stats.timeouts > 0.0, "{stats:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shunned_model_is_tried_again_and_regains_first_place_once_it_recovers() {
        let selector = scored();
        let registry = two_models();
        let every = Duration::from_secs(1);
        drive(&selector, &registry, every, 0..CHANGE, &healthy).await;
        // Five minutes of failing every call: shunned.
        let failing = drive(
            &selector,
            &registry,
            every,
            CHANGE..CHANGE + 300,
            &|model, task| match model {
                "strong" => (CallOutcome::Failure, Duration::from_millis(5)),
                _ => healthy(model, task),
            },
        )
        .await;
        assert!(failing[250..].iter().filter(|m| *m == "strong").count() <= 5);
        // Healthy again: tried again within minutes, and first from then on.
        let recovered = drive(
            &selector,
            &registry,
            every,
            CHANGE + 300..CHANGE + 900,
            &healthy,
        )
        .await;
        let back = recovered
            .iter()
            .position(|m| m == "strong")
            .unwrap_or_else(|| panic!("never tried again: {recovered:?}"));
        assert!(back <= 300, "tried again after {back} tasks");
        let after = &recovered[back..];
        let share = after.iter().filter(|m| *m == "strong").count();
        assert!(share * 10 >= after.len() * 9, "{share} of {}", after.len());
    }
}

#[test]
fn ranking_in_place_orders_as_a_sort_for_few_and_many_candidates() {
    for count in [1_u32, 2, 7, 16, 17, 40] {
        let mut candidates: Vec<Candidate> = (0..count)
            .map(|i| Candidate {
                model: Arc::new(
                    FakeModel::serving(&format!("m{i:02}"), "transcription", 0.5).described_entry(),
                ),
                health: Health::Serving,
                in_flight: 0,
                // Few distinct scores, so ties fall to the ids.
                breakdown: ScoreBreakdown {
                    confidence: 0.5,
                    success_rate: 0.0,
                    error_rate: 0.0,
                    samples: 0.0,
                    expected_latency: Duration::ZERO,
                    normalized_latency: 0.0,
                    performance: 0.0,
                    performance_weight: 0.0,
                    score: f64::from((i * 7919) % 5) / 5.0,
                },
                sample: (i % 3 == 0).then(|| f64::from(i % 4) / 4.0),
            })
            .collect();
        let mut sorted = candidates.clone();
        sorted.sort_by(|a, b| {
            let key = |c: &Candidate| c.sample.unwrap_or(c.breakdown.score);
            key(b)
                .total_cmp(&key(a))
                .then_with(|| a.model.id().cmp(b.model.id()))
        });
        rank(&mut candidates);
        let ids = |candidates: &[Candidate]| {
            candidates
                .iter()
                .map(|c| c.model.id().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&candidates), ids(&sorted), "{count} candidates");
    }
}
