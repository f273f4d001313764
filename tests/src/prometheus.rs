//! A real Prometheus server (Debian's `prometheus` package), scraping one
//! target every second into its own temporary storage, and queried through
//! its HTTP API; and [`http_get`], a plain HTTP/1.1 GET.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use tokio::process::{Child, Command};

use crate::{free_port, workspace_root};

/// The longest one HTTP exchange may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest Prometheus may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTP response, its body read whole as text.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: http::StatusCode,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: String,
}

/// `GET url` over plain HTTP/1.1, bounded by [`HTTP_TIMEOUT`].
pub async fn http_get(url: &str) -> anyhow::Result<Response> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let exchange = async {
        let response = client.get(url.parse()?).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .with_context(|| format!("GET {url} took over {HTTP_TIMEOUT:?}"))?
}

/// The `prometheus` binary: on `PATH` (Debian's package puts it in
/// `/usr/bin`), or where `deploy/check` unpacks the package.
pub fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("prometheus"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    let unpacked = workspace_root().join("target/ci-tools/prometheus/usr/bin/prometheus");
    on_path
        .or_else(|| unpacked.is_file().then_some(unpacked))
        .unwrap_or_else(|| {
            panic!("no `prometheus` binary: install Debian's package (apt-get install prometheus)")
        })
}

/// One sample of an instant query's answer.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The series' labels, `__name__` among them when it has one.
    pub labels: BTreeMap<String, String>,
    /// Its value (NaN and the infinities included).
    pub value: f64,
}

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    child: Child,
    address: SocketAddr,
    log: tempfile::NamedTempFile,
    _storage: tempfile::TempDir,
    _config: tempfile::NamedTempFile,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`)
    /// every second as job `job`, and waits until it is ready.
    pub async fn scraping(job: &str, target: SocketAddr) -> Self {
        Self::start(job, target)
            .await
            .unwrap_or_else(|error| panic!("starting Prometheus failed: {error:#}"))
    }

    async fn start(job: &str, target: SocketAddr) -> anyhow::Result<Self> {
        let config = tempfile::Builder::new().suffix(".yml").tempfile()?;
        std::fs::write(
            config.path(),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )?;
        let storage = tempfile::tempdir()?;
        let log = tempfile::NamedTempFile::new()?;
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config.path().display()))
            .arg(format!("--storage.tsdb.path={}", storage.path().display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .kill_on_drop(true)
            .spawn()
            .context("spawning prometheus")?;
        let mut prometheus = Self {
            child,
            address,
            log,
            _storage: storage,
            _config: config,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(response) = http_get(&format!("http://{address}/-/ready")).await
                && response.status.is_success()
            {
                return Ok(prometheus);
            }
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                bail!(
                    "prometheus exited with {status}; log:\n{}",
                    prometheus.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus was not ready in time; log:\n{}",
                    prometheus.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Evaluates `expr` now, through `/api/v1/query`: the samples of its
    /// vector, or its one scalar as a sample without labels.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Sample>> {
        let query: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let url = format!("http://{}/api/v1/query?query={query}", self.address);
        let response = http_get(&url).await?;
        let answer: serde_json::Value = serde_json::from_str(&response.body)
            .with_context(|| format!("`{expr}` answered {}", response.body))?;
        if answer["status"] != "success" {
            bail!("`{expr}` failed: {}", response.body);
        }
        let data = &answer["data"];
        let value = |pair: &serde_json::Value| -> anyhow::Result<f64> {
            pair[1]
                .as_str()
                .and_then(|text| text.parse().ok())
                .with_context(|| format!("`{expr}`: no value in {pair}"))
        };
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|item| {
                    let labels = item["metric"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    Ok(Sample {
                        labels,
                        value: value(&item["value"])?,
                    })
                })
                .collect(),
            Some("scalar") => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: value(&data["result"])?,
            }]),
            other => bail!("`{expr}`: unexpected result type {other:?}"),
        }
    }

    /// Polls `expr` until its samples satisfy `done`, for at most `limit`;
    /// the last samples either way, and whether `done` held.
    pub async fn wait_for(
        &self,
        expr: &str,
        limit: Duration,
        done: impl Fn(&[Sample]) -> bool,
    ) -> (Vec<Sample>, bool) {
        let deadline = Instant::now() + limit;
        loop {
            let samples = self
                .query(expr)
                .await
                .unwrap_or_else(|error| panic!("{error:#}"));
            if done(&samples) {
                return (samples, true);
            }
            if Instant::now() > deadline {
                return (samples, false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.start_kill().ok();
        if std::thread::panicking() {
            eprintln!(
                "---- log of prometheus ({}) ----\n{}",
                self.address,
                self.log()
            );
        }
    }
}
