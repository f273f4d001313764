//! The processes a comparison starts: a `grym-worker sim`, a `grymd` in
//! front of it and an nginx in front of it, each in a scratch directory.
//!
//! Invariant: a started process belongs to one [`Process`] value, and
//! dropping that value ends the process, on every exit path (an error, a
//! panic unwinding, an interrupted run). nginx is asked to stop first, so
//! that its master takes its worker processes with it. Every wait for a
//! process to come up is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use grym_proto::orchestrator::v1 as api;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::load::connect;

/// The longest a process may take to start listening, or to serve.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The nginx configuration of the bare-proxy baseline.
pub(crate) const NGINX_CONF: &str = include_str!("../../../deploy/bench/nginx.conf");

/// A child process, ended on drop.
pub(crate) struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// Ask it to stop with SIGTERM and give it this long before SIGKILL.
    graceful: Option<Duration>,
    /// The task reading its standard output, ended with it.
    drain: Option<tokio::task::JoinHandle<()>>,
}

impl Process {
    /// Starts `command`, its output appended to `log`.
    fn spawn(name: &'static str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
            graceful: None,
            drain: None,
        })
    }

    /// Kills it with SIGKILL, as a crash would, and waits until it is gone.
    pub(crate) async fn kill_now(mut self) -> anyhow::Result<()> {
        self.graceful = None;
        self.child.kill().await.context("cannot kill the process")
    }

    /// Its process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What it logged so far, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails, with the end of its log, when it has already exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(drain) = self.drain.take() {
            drain.abort();
        }
        if let (Some(grace), Some(pid)) = (self.graceful, self.child.id()) {
            // `kill` rather than a signal call: the workspace forbids unsafe
            // code, and this runs once per benchmark.
            let asked = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            let deadline = std::time::Instant::now() + grace;
            while asked && std::time::Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // SIGKILL; tokio reaps it in the background.
        let _ = self.child.start_kill();
    }
}

/// Starts a program that prints `listening on ADDR` once bound, and waits
/// for that line.
async fn spawn_listening(
    name: &'static str,
    mut command: Command,
    log: &Path,
) -> anyhow::Result<(Process, SocketAddr)> {
    command.stdout(Stdio::piped());
    let mut process = Process::spawn(name, command, log)?;
    let stdout = process.child.stdout.take().context("no standard output")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
        .await
        .with_context(|| format!("{name} did not start listening within {START_TIMEOUT:?}"))??;
    let Some(address) = line
        .as_deref()
        .and_then(|line| line.strip_prefix("listening on "))
    else {
        bail!(
            "{name} did not start (first line {line:?}); its log ends:\n{}",
            process.log_tail()
        );
    };
    let address = address
        .trim()
        .parse()
        .with_context(|| format!("{name} printed an unreadable address"))?;
    // Keep reading (and dropping) its standard output, so it never blocks
    // on a full pipe.
    process.drain = Some(tokio::spawn(async move {
        while let Ok(Some(_)) = lines.next_line().await {}
    }));
    Ok((process, address))
}

/// The `grymd` and `grym-worker` binaries beside this one.
pub(crate) struct Binaries {
    pub(crate) grymd: PathBuf,
    pub(crate) worker: PathBuf,
}

impl Binaries {
    /// Finds them next to the running executable (the same `target/release`).
    pub(crate) fn beside_current_exe() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the running executable")?;
        let dir = exe.parent().context("the executable has no directory")?;
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "`{name}` is missing from {}: build every binary first with \
                     `cargo build --release --bins`",
                    dir.display()
                )
            }
        };
        Ok(Self {
            grymd: find("grymd")?,
            worker: find("grym-worker")?,
        })
    }
}

/// Finds nginx on the PATH or at `/usr/sbin/nginx`.
pub(crate) fn find_nginx() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .context(
            "nginx is not installed (looked on the PATH and at /usr/sbin/nginx): install it with \
             `apt-get install nginx-light` (on Debian 12 that brings the `nginx` package, whose \
             build includes grpc_pass and HTTP/2)",
        )
}

/// nginx's version (`1.22.1`), from its `nginx version: nginx/1.22.1`.
pub(crate) async fn nginx_version(nginx: &Path) -> String {
    let output = Command::new(nginx).arg("-v").output().await;
    output
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .ok()
        .and_then(|line| {
            line.strip_prefix("nginx version: nginx/")
                .or_else(|| line.strip_prefix("nginx version: "))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Starts `grym-worker sim` with no latency on a free loopback port.
pub(crate) async fn start_worker(
    binary: &Path,
    task_type: &str,
    scratch: &Path,
) -> anyhow::Result<(Process, SocketAddr)> {
    start_worker_with(binary, task_type, &["--latency-ms", "0"], scratch).await
}

/// Starts `grym-worker sim` with `options` (its latency, its slots) on a
/// free loopback port.
pub(crate) async fn start_worker_with(
    binary: &Path,
    task_type: &str,
    options: &[&str],
    scratch: &Path,
) -> anyhow::Result<(Process, SocketAddr)> {
    let sim = Sim {
        model_id: "sim",
        capability: task_type,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        options,
        log: scratch.join("worker.log"),
    };
    start_sim(binary, &sim).await
}

/// One `grym-worker sim` to start.
pub(crate) struct Sim<'a> {
    /// The model id it reports.
    pub(crate) model_id: &'a str,
    /// What it serves, as `TYPE[:CONFIDENCE]`.
    pub(crate) capability: &'a str,
    /// Where it listens; port 0 picks a free one, a fixed port lets a
    /// killed sim come back at the same address.
    pub(crate) listen: SocketAddr,
    /// Its other options (latency, failure rate, slots).
    pub(crate) options: &'a [&'a str],
    /// Its log file.
    pub(crate) log: PathBuf,
}

/// Starts `sim` and waits until it reports serving.
pub(crate) async fn start_sim(
    binary: &Path,
    sim: &Sim<'_>,
) -> anyhow::Result<(Process, SocketAddr)> {
    let mut command = Command::new(binary);
    command
        .arg("sim")
        .arg("--listen")
        .arg(sim.listen.to_string())
        .args(["--model-id", sim.model_id])
        .args(["--kind", "simulated", "--capability", sim.capability])
        .args(sim.options)
        .env("RUST_LOG", "warn");
    let (process, address) = spawn_listening("grym-worker sim", command, &sim.log).await?;
    wait_serving(address, "").await?;
    Ok((process, address))
}

/// The grymd configuration of the comparison: the one sim worker, nothing
/// built in, no route; then `extra` TOML (its `[store]`, say).
pub(crate) fn grymd_config(worker: SocketAddr, extra: &str) -> String {
    format!(
        "# Written by grym-bench.\n\
         builtin_workers = false\n\
         \n\
         [selection]\n\
         routes = []\n\
         \n\
         [[workers]]\n\
         id = \"sim\"\n\
         endpoint = \"http://{worker}\"\n\
         \n\
         {extra}\n"
    )
}

/// Starts grymd in front of the worker, its store an SQLite file in
/// `scratch` (the default kind), and waits until a task runs through it.
pub(crate) async fn start_grymd(
    binary: &Path,
    worker: SocketAddr,
    task_type: &str,
    scratch: &Path,
) -> anyhow::Result<(Process, SocketAddr)> {
    let store = format!(
        "[store]\nurl = \"sqlite://{}\"\n",
        scratch.join("grym.db").display()
    );
    start_grymd_with(binary, worker, task_type, scratch, &store).await
}

/// [`start_grymd`] with `extra` TOML after the worker (its `[store]`).
pub(crate) async fn start_grymd_with(
    binary: &Path,
    worker: SocketAddr,
    task_type: &str,
    scratch: &Path,
    extra: &str,
) -> anyhow::Result<(Process, SocketAddr)> {
    let config = scratch.join("grymd.toml");
    std::fs::write(&config, grymd_config(worker, extra))
        .with_context(|| format!("cannot write {}", config.display()))?;
    let (mut process, address) = spawn_grymd(binary, &config, scratch, "warn").await?;
    // Serving is not enough: the first task needs the worker described.
    let ready = async {
        loop {
            if task_succeeds(address, task_type).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(START_TIMEOUT, ready).await.is_err() {
        process.check_running()?;
        bail!(
            "grymd at {address} did not run a `{task_type}` task within {START_TIMEOUT:?}; \
             its log ends:\n{}",
            process.log_tail()
        );
    }
    Ok((process, address))
}

/// Starts grymd with the configuration file `config`, logging at
/// `rust_log`, and waits until it reports serving (having taken up what its
/// store holds).
pub(crate) async fn spawn_grymd(
    binary: &Path,
    config: &Path,
    scratch: &Path,
    rust_log: &str,
) -> anyhow::Result<(Process, SocketAddr)> {
    let mut command = Command::new(binary);
    command
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("GRYM_CONFIG")
        .env_remove("GRYM_LISTEN")
        .env_remove("GRYM_STORE_URL")
        .env("RUST_LOG", rust_log);
    let (process, address) = spawn_listening("grymd", command, &scratch.join("grymd.log")).await?;
    wait_serving(address, api::orchestrator_server::SERVICE_NAME).await?;
    Ok((process, address))
}

async fn task_succeeds(address: SocketAddr, task_type: &str) -> bool {
    let Ok(channel) = connect(address).await else {
        return false;
    };
    let request = api::ExecuteTaskRequest {
        task: Some(api::Task {
            r#type: task_type.to_owned(),
            input: Some(api::TaskInput {
                kind: Some(api::task_input::Kind::Text("ready?".to_owned())),
            }),
            ..api::Task::default()
        }),
    };
    api::orchestrator_client::OrchestratorClient::new(channel)
        .execute_task(request)
        .await
        .is_ok_and(|response| {
            response
                .into_inner()
                .result
                .is_some_and(|result| result.status() == api::TaskStatus::Succeeded)
        })
}

/// The two files the nginx configuration includes: where it listens and
/// where the worker is.
pub(crate) fn nginx_includes(listen: SocketAddr, worker: SocketAddr) -> (String, String) {
    (
        format!("listen {listen} http2 reuseport;\n"),
        format!("server {worker};\n"),
    )
}

/// Starts nginx with `deploy/bench/nginx.conf` on a free loopback port,
/// in front of the worker, with every path under `scratch`.
pub(crate) async fn start_nginx(
    nginx: &Path,
    worker: SocketAddr,
    scratch: &Path,
) -> anyhow::Result<(Process, SocketAddr)> {
    let prefix = scratch.join("nginx");
    for dir in ["logs", "temp"] {
        std::fs::create_dir_all(prefix.join(dir))
            .with_context(|| format!("cannot create {}", prefix.join(dir).display()))?;
    }
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let (listen_conf, upstream_conf) = nginx_includes(listen, worker);
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, NGINX_CONF)?;
    std::fs::write(prefix.join("listen.conf"), listen_conf)?;
    std::fs::write(prefix.join("upstream.conf"), upstream_conf)?;

    let mut command = Command::new(nginx);
    command
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-e", "logs/error.log"])
        .stdout(Stdio::null());
    let mut process = Process::spawn("nginx", command, &prefix.join("logs/stderr.log"))?;
    process.graceful = Some(Duration::from_secs(3));
    if let Err(error) = wait_serving(listen, "").await {
        process.check_running()?;
        let errors = std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
        return Err(error.context(format!("nginx's error log:\n{errors}")));
    }
    Ok((process, listen))
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `grpc.health.v1` at `address` until `service` is SERVING.
pub(crate) async fn wait_serving(address: SocketAddr, service: &str) -> anyhow::Result<()> {
    let poll = async {
        loop {
            if let Ok(channel) = connect(address).await {
                let request = HealthCheckRequest {
                    service: service.to_owned(),
                };
                if let Ok(response) = HealthClient::new(channel).check(request).await
                    && response.get_ref().status() == ServingStatus::Serving
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(START_TIMEOUT, poll)
        .await
        .with_context(|| {
            format!("{address} did not report {service:?} serving within {START_TIMEOUT:?}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grymd_is_configured_with_the_one_worker_and_nothing_else() {
        let config = grymd_config("127.0.0.1:7001".parse().unwrap(), "");
        assert!(config.contains("builtin_workers = false"));
        assert!(config.contains("routes = []"));
        assert!(config.contains("endpoint = \"http://127.0.0.1:7001\""));
    }

    #[test]
    fn nginx_listens_with_http2_and_proxies_to_the_worker() {
        let (listen, upstream) = nginx_includes(
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:7001".parse().unwrap(),
        );
        assert_eq!(listen, "listen 127.0.0.1:8080 http2 reuseport;\n");
        assert_eq!(upstream, "server 127.0.0.1:7001;\n");
    }

    #[test]
    fn the_nginx_configuration_passes_grpc_with_upstream_keepalive() {
        for needed in [
            "daemon off;",
            "grpc_pass grpc://",
            "keepalive ",
            "include listen.conf;",
            "include upstream.conf;",
            "pid ",
        ] {
            assert!(NGINX_CONF.contains(needed), "nginx.conf lacks `{needed}`");
        }
    }
}
