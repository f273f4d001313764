//! The configuration as a user writes it, read and checked.

use std::io::Write;

use figment::Figment;
use figment::providers::{Format, Toml};
use grym_core::Policy;
use grym_core::{FanOutSpec, ModelKind, Route};

use super::*;

fn from_toml(text: &str) -> Result<Config, Error> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let raw: RawConfig = Figment::new()
        .merge(Toml::file_exact(file.path()))
        .extract()
        .map_err(Box::new)?;
    raw.validate()
}

#[test]
fn no_configuration_means_loopback_and_builtin_workers() {
    let config = RawConfig::default().validate().unwrap();
    assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
    assert!(config.builtin_workers);
    assert!(config.workers.is_empty());
}

#[test]
fn a_reload_names_only_the_start_up_settings_that_changed() {
    let file = "listen = \"127.0.0.1:7000\"\n[[workers]]\nid = \"llm\"\nendpoint = \"http://127.0.0.1:7201\"\n";
    let mut running = from_toml(file).unwrap();
    // The flag stands over the file on every reload: no change to report.
    running.override_listen("127.0.0.1:0".parse().unwrap());
    assert_eq!(
        running.changed_at_restart(&from_toml(file).unwrap()),
        Vec::<&str>::new()
    );
    // Workers reload: not reported either.
    let workers = file.replace("7201", "7202");
    assert!(
        running
            .changed_at_restart(&from_toml(&workers).unwrap())
            .is_empty()
    );

    let changed = format!("reflection = false\nshutdown_grace = \"1s\"\n{file}");
    assert_eq!(
        running.changed_at_restart(&from_toml(&changed).unwrap()),
        ["reflection", "shutdown_grace"]
    );
    let unflagged = from_toml(file).unwrap();
    let moved = from_toml(&file.replace("7000", "7001")).unwrap();
    assert_eq!(unflagged.changed_at_restart(&moved), ["listen"]);
}

#[test]
fn recipes_over_the_built_in_ones_are_read_and_a_bad_one_is_named() {
    // What the recipes mean is the core's (`Recipes::configured`); here, that
    // the table reaches it and its errors name the key.
    let config = from_toml(
        r#"
        [recipes]
        audio_summary = ["transcription", "summarization"]
        audio_question_answering = []
        audio_analysis = { parallel = ["voice_activity", "audio_features"], then = "analysis_merge" }
        "#,
    )
    .unwrap();
    let chain = |types: &[&str]| RecipeSpec::Chain(types.iter().map(|t| (*t).to_owned()).collect());
    let expected = Recipes::configured(HashMap::from([
        (
            "audio_summary".to_owned(),
            chain(&["transcription", "summarization"]),
        ),
        ("audio_question_answering".to_owned(), chain(&[])),
        (
            "audio_analysis".to_owned(),
            RecipeSpec::FanOut(FanOutSpec {
                parallel: vec!["voice_activity".to_owned(), "audio_features".to_owned()],
                then: "analysis_merge".to_owned(),
            }),
        ),
    ]))
    .unwrap();
    assert_eq!(config.orchestrator.recipes, expected);
    assert_ne!(config.orchestrator.recipes, Recipes::with_defaults());
    let err = from_toml("[recipes]\nloop = [\"loop\"]\n").unwrap_err();
    assert!(err.to_string().contains("recipes.loop"), "{err}");
    let err = from_toml("[recipes]\nx = { parallel = [\"a\"], than = \"b\" }\n").unwrap_err();
    assert!(err.to_string().contains("recipes"), "{err}");
}

#[test]
fn workers_and_capability_overrides_are_read() {
    let config = from_toml(
        r#"
        builtin_workers = false
        worker_timeout = "5s"
        [[workers]]
        id = "gama"
        endpoint = "http://127.0.0.1:7001"
        kind = "audio-language"
        capabilities = [{ task_type = "audio_analysis", confidence = 0.95, estimated_latency = "800ms", inputs = ["audio"] }]
        [[workers]]
        id = "wav2vec2"
        endpoint = "http://127.0.0.1:7002"
        "#,
    )
    .unwrap();
    assert!(!config.builtin_workers);
    assert_eq!(config.orchestrator.worker_timeout, Duration::from_secs(5));
    let gama = &config.workers[0];
    assert_eq!(
        gama.kind.as_ref().map(ModelKind::as_str),
        Some("audio-language")
    );
    let capabilities = gama.capabilities.as_ref().unwrap();
    assert_eq!(
        capabilities[0].estimated_latency,
        Duration::from_millis(800)
    );
    assert_eq!(capabilities[0].inputs, [grym_core::Modality::Audio]);
    assert!(config.workers[1].kind.is_none());
    assert!(config.workers[1].capabilities.is_none());
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let err = from_toml("builtin_worker = false").unwrap_err().to_string();
    assert!(err.contains("builtin_worker"), "{err}");
}

#[test]
fn errors_name_the_key_at_fault() {
    let err = from_toml(
        r#"
        [[workers]]
        id = "gama"
        endpoint = "127.0.0.1:7001"
        "#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("workers[0].endpoint"), "{err}");

    let err = from_toml(
        r#"
        [[workers]]
        id = "gama"
        endpoint = "http://127.0.0.1:7001"
        capabilities = [{ task_type = "audio_analysis", confidence = 1.5 }]
        "#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("workers[0].capabilities[0].confidence"),
        "{err}"
    );

    let err = from_toml(
        r#"
        [[workers]]
        id = "gama"
        endpoint = "http://127.0.0.1:7001"
        capabilities = [{ task_type = "audio_analysis", confidence = 0.5, inputs = ["video"] }]
        "#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("video") && err.contains("audio"), "{err}");
}

#[test]
fn replicas_and_selection_are_read() {
    let config = from_toml(
        r#"
        [selection]
        policy = "thompson"
        half_life = "30s"
        seed = 7
        routes = [{ task_type = "transcription", model = "whisper", confidence = 0.9, fallbacks = ["wav2vec2"] }]
        [[workers]]
        id = "whisper"
        endpoints = ["http://127.0.0.1:7001", "http://127.0.0.1:7002"]
        "#,
    )
    .unwrap();
    assert_eq!(config.workers[0].endpoints.len(), 2);
    let selection = &config.orchestrator.selection;
    assert_eq!(selection.policy, Policy::Thompson);
    assert_eq!(selection.half_life, Duration::from_secs(30));
    assert_eq!(selection.seed, Some(7));
    assert_eq!(selection.routes[0].model.as_str(), "whisper");
}

#[test]
fn without_routes_the_gama_route_applies_and_an_empty_list_removes_it() {
    let config = RawConfig::default().validate().unwrap();
    assert_eq!(config.orchestrator.selection.routes, [Route::gama()]);
    let config = from_toml("[selection]\nroutes = []\n").unwrap();
    assert!(config.orchestrator.selection.routes.is_empty());
}

#[test]
fn a_worker_needs_exactly_one_of_endpoint_and_endpoints() {
    let err = from_toml("[[workers]]\nid = \"gama\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("workers[0]") && err.contains("endpoint"),
        "{err}"
    );
    let err = from_toml("[[workers]]\nid = \"gama\"\nendpoints = [\"http://a:1\", \"b:2\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("workers[0].endpoints[1]"), "{err}");
}

#[test]
fn the_scheduler_table_is_read_and_checked() {
    let config = from_toml("[scheduler]\nmax_queue = 5\naging_interval = \"2s\"\n").unwrap();
    assert_eq!(config.orchestrator.scheduler.max_queue, 5);
    assert_eq!(
        config.orchestrator.scheduler.aging_interval,
        Duration::from_secs(2)
    );
    let err = from_toml("[scheduler]\nmax_queue = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("scheduler.max_queue"), "{err}");
}

#[test]
fn an_invalid_context_template_stops_start_up_naming_it_and_its_line() {
    let err = from_toml(
        "[[context.transformers]]\nsource = \"agent\"\ntarget = \"text-generation\"\ntemplate = \"ok\\n{% if %}\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("context.transformers[0] (agent -> text-generation)"),
        "{err}"
    );
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn an_unknown_policy_is_refused() {
    let err = from_toml("[selection]\npolicy = \"random\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("random") || err.contains("policy"), "{err}");
}

#[test]
fn a_model_listed_twice_is_refused() {
    let err = from_toml(
        r#"
        [[workers]]
        id = "gama"
        endpoint = "http://127.0.0.1:7001"
        [[workers]]
        id = "gama"
        endpoint = "http://127.0.0.1:7002"
        "#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("workers[1].id") && err.contains("gama"),
        "{err}"
    );
}

#[test]
fn resilience_tables_are_read_and_checked() {
    let config = from_toml(
        r#"
        [ejection]
        consecutive_failures = 3
        max_time = "1m"
        [retries]
        budget_ratio = 0.1
        backoff = "5ms"
        [hedging]
        task_types = ["audio_analysis"]
        min_delay = "20ms"
        "#,
    )
    .unwrap();
    let settings = &config.orchestrator;
    assert_eq!(settings.ejection.consecutive_failures, 3);
    assert_eq!(settings.ejection.max_time, Duration::from_secs(60));
    assert_eq!(settings.retries.budget_ratio, 0.1);
    assert_eq!(settings.retries.backoff, Duration::from_millis(5));
    assert_eq!(settings.hedging.task_types.len(), 1);
    assert_eq!(settings.hedging.min_delay, Duration::from_millis(20));

    for (text, key) in [
        ("[ejection]\nfailure_rate = 0", "ejection.failure_rate"),
        ("[ejection]\nmax_share = 2.0", "ejection.max_share"),
        (
            "[ejection]\nbase_time = \"1m\"\nmax_time = \"10s\"",
            "ejection.max_time",
        ),
        ("[retries]\nbudget_ratio = 1.5", "retries.budget_ratio"),
        (
            "[retries]\nbackoff = \"1s\"\nmax_backoff = \"10ms\"",
            "retries.max_backoff",
        ),
    ] {
        match from_toml(text) {
            Err(Error::Config { key: named, .. }) => assert_eq!(named, key, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn mcp_is_off_unless_a_listen_address_is_given_and_a_bad_one_is_named() {
    assert!(RawConfig::default().validate().unwrap().mcp.is_none());
    let config = from_toml("[mcp]\nlisten = \"127.0.0.1:50052\"\n").unwrap();
    let mcp = config.mcp.unwrap();
    assert_eq!(mcp.listen, "127.0.0.1:50052".parse().unwrap());
    assert!(mcp.allowed_hosts.is_empty());
    let error = from_toml("[mcp]\nlisten = \"somewhere\"\n").unwrap_err();
    assert!(error.to_string().contains("mcp.listen"), "{error}");
}
