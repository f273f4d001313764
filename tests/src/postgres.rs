//! A real PostgreSQL server for tests: a fresh cluster in a temporary
//! folder, listening on a free loopback port, stopped and started again on
//! the same folder and port for outage tests, killed and removed on drop.
//!
//! The binaries are found in `PATH` or in the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package; `.ci/run`
//! installs it). `initdb` refuses to run as root, so as root the server's
//! programs run as the `postgres` user, which owns the folder. Durability
//! is as in production (`fsync=on`), so what tests measure is real.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::free_port;

/// The longest the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The database tests use.
const DATABASE: &str = "grym";
/// A password in the URL, which trust authentication ignores: stores must
/// never show it.
const PASSWORD: &str = "not-shown";

/// A running (or stopped) PostgreSQL server of its own.
pub struct Postgres {
    bin: PathBuf,
    folder: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
    log: PathBuf,
    as_postgres: bool,
}

impl Postgres {
    /// Creates a cluster, starts it and creates the test database.
    pub async fn start() -> Self {
        Self::try_start()
            .await
            .unwrap_or_else(|error| panic!("starting PostgreSQL failed: {error:#}"))
    }

    async fn try_start() -> anyhow::Result<Self> {
        let bin = binaries()?;
        let folder = tempfile::Builder::new().prefix("grym-pg").tempdir()?;
        let as_postgres = std::fs::metadata("/proc/self")?.uid() == 0;
        if as_postgres {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(folder.path())
                .status()
                .await?;
            if !status.success() {
                bail!("chown postgres {} failed", folder.path().display());
            }
        }
        let mut server = Self {
            bin,
            log: folder.path().join("server.log"),
            folder,
            port: free_port(),
            server: None,
            as_postgres,
        };
        let data = server.data();
        let output = tokio::time::timeout(
            READY_TIMEOUT,
            server
                .command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
                // The cluster is thrown away: its creation need not be
                // synced. The server itself runs with fsync on.
                .arg("--no-sync")
                .output(),
        )
        .await
        .context("initdb took too long")??;
        if !output.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        server.restart_inner().await?;
        let output = tokio::time::timeout(
            READY_TIMEOUT,
            server
                .client("createdb")
                .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
                .args(["-U", "postgres", DATABASE])
                .output(),
        )
        .await
        .context("createdb took too long")??;
        if !output.status.success() {
            bail!(
                "createdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(server)
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/grym`.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The password in [`url`](Self::url), which no store may show.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// Stops the server (a fast shutdown: sessions are ended), keeping its
    /// data for [`restart`](Self::restart).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.server.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await
                .ok();
        }
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            child.kill().await.ok();
        }
    }

    /// Starts the stopped server again, on the same data and port.
    pub async fn restart(&mut self) {
        self.restart_inner()
            .await
            .unwrap_or_else(|error| panic!("restarting PostgreSQL failed: {error:#}"));
    }

    async fn restart_inner(&mut self) -> anyhow::Result<()> {
        if self.server.is_some() {
            bail!("the server is running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.folder.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=on"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawning postgres")?;
        self.server = Some(child);
        self.wait_ready().await
    }

    /// Polls `pg_isready` until the server accepts connections.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let poll = async {
            loop {
                if let Some(child) = self.server.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    bail!("postgres exited with {status}");
                }
                let ready = self
                    .client("pg_isready")
                    .args(["-q", "-h", "127.0.0.1", "-p", &port])
                    .status()
                    .await?;
                if ready.success() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let result = tokio::time::timeout(READY_TIMEOUT, poll)
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "postgres did not accept connections in time"
                ))
            });
        result.with_context(|| format!("log:\n{}", self.log()))
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.folder.path().join("data")
    }

    /// A program of the server's folder, else from `PATH`.
    fn program(&self, name: &str) -> PathBuf {
        let beside = self.bin.join(name);
        if beside.is_file() {
            beside
        } else {
            PathBuf::from(name)
        }
    }

    /// A server program, run as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let program = self.program(program);
        if self.as_postgres {
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// A client program, run as we are.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.program(program));
        command.stdin(Stdio::null()).kill_on_drop(true);
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut child) = self.server.take() else {
            return;
        };
        // An immediate shutdown: the postmaster takes its backends down
        // with it, so none outlives the folder.
        if let Some(pid) = child.id() {
            std::process::Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status()
                .ok();
        }
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.start_kill().ok();
        if std::thread::panicking() {
            eprintln!("---- log of postgres ({}) ----\n{}", self.port, self.log());
        }
    }
}

/// The folder of `initdb` and `postgres`: from `PATH`, else the newest
/// Debian cluster version installed.
fn binaries() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for folder in std::env::split_paths(&path) {
            if folder.join("initdb").is_file() && folder.join("postgres").is_file() {
                // A link in PATH leads to the folder with the client
                // programs beside the server.
                let real = std::fs::canonicalize(folder.join("initdb"))?;
                return Ok(real.parent().map_or(folder, Path::to_path_buf));
            }
        }
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .with_context(|| format!("no initdb in PATH, and no {}", root.display()))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .with_context(|| format!("no initdb in PATH or {}/*/bin", root.display()))
}
