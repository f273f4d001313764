//! `grym-bench chaos`: what callers see while workers fail, with real
//! processes on loopback.
//!
//! Each case starts fresh `grym-worker sim` processes and a grymd in front
//! of them with its default settings (its store an SQLite file in a scratch
//! folder), waits until every model and replica is described and serving,
//! then runs `ExecuteTask` in open loop:
//! - **kill**: one model served by two replicas; one is killed with SIGKILL
//!   a third of the way through and started again, at the same address, at
//!   two thirds;
//! - **flaky**: the same two replicas, one failing half of its calls with
//!   `UNAVAILABLE`;
//! - **hung**: a model that never answers in time (its latency far beyond
//!   the deadline) preferred by its confidence, and a healthy backup model
//!   for the same task type, every call with a short deadline.
//!
//! Each case reports what its calls add up to ([`tally`]). Invariant: the
//! processes of a case belong to it and end with it, on every exit path.

mod calls;
mod tally;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use grym_proto::orchestrator::v1 as api;
use serde::Serialize;

use self::calls::Caller;
use self::tally::Tally;
use crate::compare::TASK_TYPE;
use crate::procs::{self, Binaries, Process, Sim};

/// The longest grymd may take to describe every model and see every
/// replica serving.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The simulated latency of the hung model: far beyond any deadline.
const HUNG_LATENCY_MS: &str = "600000";
/// Calls of the hung case left out of its first-choice share: the time
/// routing is given to learn.
const LEARNING_CALLS: usize = 20;

/// One case of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Case {
    /// A replica killed and restarted.
    Kill,
    /// A replica failing half of its calls.
    Flaky,
    /// A hung model beside a backup.
    Hung,
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The cases, in order.
    pub(crate) cases: Vec<Case>,
    /// Rates of the kill case, one run each.
    pub(crate) kill_rates: Vec<f64>,
    /// Rate of the flaky case.
    pub(crate) flaky_rate: f64,
    /// Rate of the hung case.
    pub(crate) hung_rate: f64,
    /// Each run's length.
    pub(crate) duration: Duration,
    /// Every call's deadline in the kill and flaky cases.
    pub(crate) deadline: Duration,
    /// Every call's deadline in the hung case.
    pub(crate) hung_deadline: Duration,
    /// How long past its deadline a call is waited for before it counts as
    /// unanswered.
    pub(crate) grace: Duration,
    /// The healthy sims' latency per call.
    pub(crate) latency: Duration,
    /// HTTP/2 connections to grymd.
    pub(crate) connections: usize,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// The case.
    pub(crate) case: Case,
    /// What happened during it, for the table.
    pub(crate) events: String,
    /// Calls per second offered.
    pub(crate) rate: f64,
    /// Its length, in seconds.
    pub(crate) duration_s: f64,
    /// Every call's deadline, in milliseconds.
    pub(crate) deadline_ms: f64,
    /// Models configured: the retry budget's floor is per model.
    pub(crate) models: usize,
    /// What the calls add up to.
    pub(crate) tally: Tally,
}

impl Row {
    /// The retry budget at grymd's defaults over this run.
    fn budget(&self) -> f64 {
        self.tally.budget(self.duration_s, self.models)
    }
}

/// Runs every case and returns one row per run.
pub(crate) async fn run(settings: &Settings, binaries: &Binaries) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for case in &settings.cases {
        match case {
            Case::Kill => {
                for &rate in &settings.kill_rates {
                    eprintln!("chaos: kill -9 and restart of a replica at {rate}/s");
                    rows.push(kill(settings, binaries, rate).await?);
                }
            }
            Case::Flaky => {
                eprintln!("chaos: a replica failing half its calls");
                rows.push(flaky(settings, binaries).await?);
            }
            Case::Hung => {
                eprintln!("chaos: a hung model beside a backup");
                rows.push(hung(settings, binaries).await?);
            }
        }
    }
    Ok(rows)
}

/// The healthy sim of model `sim` listening at `listen`.
fn replica<'a>(scratch: &Path, name: &str, listen: SocketAddr, options: &'a [&'a str]) -> Sim<'a> {
    Sim {
        model_id: "sim",
        capability: TASK_TYPE,
        listen,
        options,
        log: scratch.join(format!("{name}.log")),
    }
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn kill(settings: &Settings, binaries: &Binaries, rate: f64) -> anyhow::Result<Row> {
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let latency = settings.latency.as_millis().to_string();
    let options = ["--latency-ms", latency.as_str()];
    let (_steady, steady) = procs::start_sim(
        &binaries.worker,
        &replica(scratch.path(), "steady", any_port(), &options),
    )
    .await?;
    // A fixed port, so that the restarted replica is where grymd looks.
    let victim_address = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
    let (victim, _) = procs::start_sim(
        &binaries.worker,
        &replica(scratch.path(), "victim", victim_address, &options),
    )
    .await?;
    let (_grymd, address) = start_grymd(
        &binaries.grymd,
        &[Served::new("sim", vec![steady, victim_address])],
        scratch.path(),
    )
    .await?;
    let caller = Arc::new(Caller::connect(address, settings.connections, TASK_TYPE).await?);
    let (kill_at, restart_at) = (settings.duration / 3, settings.duration * 2 / 3);
    let start = tokio::time::Instant::now();
    let chaos = async {
        tokio::time::sleep_until(start + kill_at).await;
        victim.kill_now().await?;
        tokio::time::sleep_until(start + restart_at).await;
        let restarted = replica(scratch.path(), "victim-restarted", victim_address, &options);
        procs::start_sim(&binaries.worker, &restarted).await
    };
    let load = calls::open_loop(
        &caller,
        rate,
        settings.duration,
        settings.deadline,
        settings.grace,
    );
    let (calls, _restarted) = tokio::try_join!(load, chaos)?;
    Ok(Row {
        case: Case::Kill,
        events: format!(
            "kill -9 at {:.1} s, restarted at {:.1} s",
            kill_at.as_secs_f64(),
            restart_at.as_secs_f64()
        ),
        rate,
        duration_s: settings.duration.as_secs_f64(),
        deadline_ms: millis(settings.deadline),
        models: 1,
        tally: Tally::of(&calls, None),
    })
}

async fn flaky(settings: &Settings, binaries: &Binaries) -> anyhow::Result<Row> {
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let latency = settings.latency.as_millis().to_string();
    let steady_options = ["--latency-ms", latency.as_str()];
    let flaky_options = [
        "--latency-ms",
        latency.as_str(),
        "--fail-rate",
        "0.5",
        "--seed",
        "7",
    ];
    let (_steady, steady) = procs::start_sim(
        &binaries.worker,
        &replica(scratch.path(), "steady", any_port(), &steady_options),
    )
    .await?;
    let (_flaky, flaky) = procs::start_sim(
        &binaries.worker,
        &replica(scratch.path(), "flaky", any_port(), &flaky_options),
    )
    .await?;
    let (_grymd, address) = start_grymd(
        &binaries.grymd,
        &[Served::new("sim", vec![steady, flaky])],
        scratch.path(),
    )
    .await?;
    let caller = Arc::new(Caller::connect(address, settings.connections, TASK_TYPE).await?);
    let calls = calls::open_loop(
        &caller,
        settings.flaky_rate,
        settings.duration,
        settings.deadline,
        settings.grace,
    )
    .await?;
    Ok(Row {
        case: Case::Flaky,
        events: "one of two replicas fails 50% of calls".to_owned(),
        rate: settings.flaky_rate,
        duration_s: settings.duration.as_secs_f64(),
        deadline_ms: millis(settings.deadline),
        models: 1,
        tally: Tally::of(&calls, None),
    })
}

async fn hung(settings: &Settings, binaries: &Binaries) -> anyhow::Result<Row> {
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let latency = settings.latency.as_millis().to_string();
    let hung_options = ["--latency-ms", HUNG_LATENCY_MS];
    let backup_options = ["--latency-ms", latency.as_str()];
    // The hung model is preferred by its confidence: routing starts with
    // it. grymd is told it answers as fast as the backup, as a model that
    // hangs unexpectedly would have declared: its worker's own declared
    // latency would keep it from ever being chosen under a short deadline.
    let hung_capability = format!("{TASK_TYPE}:0.9");
    let hung_declared = format!(
        "capabilities = [{{ task_type = \"{TASK_TYPE}\", confidence = 0.9, estimated_latency = \"{}ms\" }}]\n",
        settings.latency.as_millis()
    );
    let backup_capability = format!("{TASK_TYPE}:0.6");
    let (_hung, hung) = procs::start_sim(
        &binaries.worker,
        &Sim {
            model_id: "hung",
            capability: &hung_capability,
            listen: any_port(),
            options: &hung_options,
            log: scratch.path().join("hung.log"),
        },
    )
    .await?;
    let (_backup, backup) = procs::start_sim(
        &binaries.worker,
        &Sim {
            model_id: "backup",
            capability: &backup_capability,
            listen: any_port(),
            options: &backup_options,
            log: scratch.path().join("backup.log"),
        },
    )
    .await?;
    let (_grymd, address) = start_grymd(
        &binaries.grymd,
        &[
            Served {
                extra: &hung_declared,
                ..Served::new("hung", vec![hung])
            },
            Served::new("backup", vec![backup]),
        ],
        scratch.path(),
    )
    .await?;
    let caller = Arc::new(Caller::connect(address, settings.connections, TASK_TYPE).await?);
    let calls = calls::open_loop(
        &caller,
        settings.hung_rate,
        settings.duration,
        settings.hung_deadline,
        settings.grace,
    )
    .await?;
    Ok(Row {
        case: Case::Hung,
        events: "`hung` (confidence 0.9) never answers; `backup` (0.6) does".to_owned(),
        rate: settings.hung_rate,
        duration_s: settings.duration.as_secs_f64(),
        deadline_ms: millis(settings.hung_deadline),
        models: 2,
        tally: Tally::of(&calls, Some(("backup", LEARNING_CALLS))),
    })
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A model grymd is configured with.
struct Served<'a> {
    /// Its id.
    id: &'a str,
    /// The addresses of its replicas.
    replicas: Vec<SocketAddr>,
    /// What grymd is told of it over what its worker says, as TOML lines
    /// of its `[[workers]]` entry.
    extra: &'a str,
}

impl<'a> Served<'a> {
    fn new(id: &'a str, replicas: Vec<SocketAddr>) -> Self {
        Self {
            id,
            replicas,
            extra: "",
        }
    }
}

/// grymd's configuration for a case: these models and the addresses of
/// their replicas, nothing built in, no route, its store an SQLite file at
/// `store`; every other setting its default.
fn grymd_config(models: &[Served<'_>], store: &Path) -> String {
    let mut config = format!(
        "# Written by grym-bench chaos.\n\
         builtin_workers = false\n\
         \n\
         [selection]\n\
         routes = []\n\
         \n\
         [store]\n\
         url = \"sqlite://{}\"\n",
        store.display()
    );
    for model in models {
        let endpoints: Vec<String> = model
            .replicas
            .iter()
            .map(|address| format!("\"http://{address}\""))
            .collect();
        config.push_str(&format!(
            "\n[[workers]]\nid = \"{}\"\nendpoints = [{}]\n{}",
            model.id,
            endpoints.join(", "),
            model.extra
        ));
    }
    config
}

/// Starts grymd in front of `models` and waits until it has described
/// every model and sees every replica serving, without sending it a task
/// (a task would teach routing before the run).
async fn start_grymd(
    binary: &Path,
    models: &[Served<'_>],
    scratch: &Path,
) -> anyhow::Result<(Process, SocketAddr)> {
    let config = scratch.join("grymd.toml");
    std::fs::write(&config, grymd_config(models, &scratch.join("grym.db")))
        .with_context(|| format!("cannot write {}", config.display()))?;
    let (mut grymd, address) = procs::spawn_grymd(binary, &config, scratch, "warn").await?;
    let channel = crate::load::connect(address).await?;
    let mut client = api::orchestrator_client::OrchestratorClient::new(channel);
    let ready = async {
        loop {
            if let Ok(response) = client.list_models(api::ListModelsRequest {}).await
                && all_serving(&response.into_inner().models, models.len())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(READY_TIMEOUT, ready).await.is_err() {
        grymd.check_running()?;
        bail!(
            "grymd at {address} did not see every replica serving within {READY_TIMEOUT:?}; \
             its log ends:\n{}",
            grymd.log_tail()
        );
    }
    Ok((grymd, address))
}

/// Whether all `expected` models are described and every replica serves.
fn all_serving(models: &[api::Model], expected: usize) -> bool {
    models.len() == expected
        && models.iter().all(|model| {
            model.capability_source() != api::CapabilitySource::Unspecified
                && model.health() == api::ModelHealth::Serving
                && model
                    .replicas
                    .iter()
                    .all(|replica| replica.health() == api::ModelHealth::Serving)
        })
}

/// The table BENCHMARKS.md shows.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| case | offered | sent | succeeded | failed (by code) | unanswered | \
         retries (budget) | failures due | first attempt to `backup` after the first 20 |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        let tally = &row.tally;
        let failed = if tally.failed.is_empty() {
            "0".to_owned()
        } else {
            let kinds: Vec<String> = tally
                .failed
                .iter()
                .map(|(code, count)| format!("{count} {code}"))
                .collect();
            format!(
                "{} ({:.2}%: {})",
                tally.failures(),
                percent(tally.failures(), tally.sent),
                kinds.join(", ")
            )
        };
        let failing = tally.failing_s.map_or_else(
            || "–".to_owned(),
            |(first, last)| format!("{first:.1}–{last:.1} s"),
        );
        let choice = tally.first_choice.as_ref().map_or_else(
            || "–".to_owned(),
            |choice| {
                format!(
                    "{} of {} ({:.0}%)",
                    choice.chosen,
                    choice.of,
                    100.0 * choice.share()
                )
            },
        );
        out.push_str(&format!(
            "| {:?}: {} | {:.0}/s for {:.0} s, deadline {:.0} ms | {} | {} | {failed} | {} | {} ({:.0}) | {failing} | {choice} |\n",
            row.case,
            row.events,
            row.rate,
            row.duration_s,
            row.deadline_ms,
            tally.sent,
            tally.succeeded,
            tally.unanswered,
            tally.retries,
            row.budget(),
        ));
    }
    out
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::tally::FirstChoice;
    use super::*;

    #[test]
    fn grymd_is_configured_with_every_replica_of_every_model_and_the_sqlite_store() {
        let config = grymd_config(
            &[
                Served::new(
                    "sim",
                    vec![
                        "127.0.0.1:7001".parse().unwrap(),
                        "127.0.0.1:7002".parse().unwrap(),
                    ],
                ),
                Served {
                    extra: "kind = \"slow\"\n",
                    ..Served::new("backup", vec!["127.0.0.1:7003".parse().unwrap()])
                },
            ],
            Path::new("/tmp/x/grym.db"),
        );
        assert!(config.contains("builtin_workers = false"));
        assert!(config.contains("routes = []"));
        assert!(config.contains("url = \"sqlite:///tmp/x/grym.db\""));
        assert!(config.contains(
            "id = \"sim\"\nendpoints = [\"http://127.0.0.1:7001\", \"http://127.0.0.1:7002\"]"
        ));
        assert!(config.contains(
            "id = \"backup\"\nendpoints = [\"http://127.0.0.1:7003\"]\nkind = \"slow\"\n"
        ));
    }

    fn model(health: api::ModelHealth, replicas: &[api::ModelHealth]) -> api::Model {
        api::Model {
            id: "sim".to_owned(),
            health: health.into(),
            capability_source: api::CapabilitySource::Worker.into(),
            replicas: replicas
                .iter()
                .map(|health| api::Replica {
                    health: (*health).into(),
                    ..api::Replica::default()
                })
                .collect(),
            ..api::Model::default()
        }
    }

    #[test]
    fn grymd_is_ready_once_every_model_is_described_and_every_replica_serves() {
        use api::ModelHealth::{NotServing, Serving, Unspecified};
        assert!(all_serving(&[model(Serving, &[Serving, Serving])], 1));
        assert!(!all_serving(&[model(Serving, &[Serving, Unspecified])], 1));
        assert!(!all_serving(&[model(Serving, &[Serving, NotServing])], 1));
        assert!(
            !all_serving(&[model(Serving, &[Serving])], 2),
            "one missing"
        );
        let mut undescribed = model(Serving, &[Serving]);
        undescribed.capability_source = api::CapabilitySource::Unspecified.into();
        assert!(!all_serving(&[undescribed], 1));
    }

    #[test]
    fn the_table_gives_failures_by_code_retries_against_budget_and_first_choices() {
        let row = Row {
            case: Case::Hung,
            events: "hung".to_owned(),
            rate: 10.0,
            duration_s: 20.0,
            deadline_ms: 1000.0,
            models: 2,
            tally: Tally {
                sent: 200,
                succeeded: 150,
                failed: BTreeMap::from([("DEADLINE_EXCEEDED".to_owned(), 50)]),
                unanswered: 0,
                retries: 3,
                failing_s: Some((0.0, 2.5)),
                first_choice: Some(FirstChoice {
                    model: "backup".to_owned(),
                    after: 20,
                    chosen: 171,
                    of: 180,
                }),
            },
        };
        let table = table(&[row]);
        assert!(
            table.contains(
                "| Hung: hung | 10/s for 20 s, deadline 1000 ms | 200 | 150 | 50 (25.00%: 50 DEADLINE_EXCEEDED) | 0 | 3 (440) | 0.0–2.5 s | 171 of 180 (95%) |"
            ),
            "{table}"
        );
    }
}
