//! The Python workers (`workers/python`) as processes: the virtual
//! environment they run in, made or brought up to date once per test
//! process by `workers/python/setup-venv` (which `.ci/run` also runs), and
//! `grym-py-worker` started on a free port.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{Process, wait_serving, workspace_root};

/// The Python of the workers' environment: `GRYM_PYTHON` when set, else
/// `target/py-venv`, set up on first use.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(python) = std::env::var_os("GRYM_PYTHON") {
            return PathBuf::from(python);
        }
        let root = workspace_root();
        let venv = root.join("target/py-venv");
        let status = std::process::Command::new(root.join("workers/python/setup-venv"))
            .arg(&venv)
            .status()
            .unwrap_or_else(|error| panic!("running workers/python/setup-venv failed: {error}"));
        assert!(
            status.success(),
            "workers/python/setup-venv exited with {status}"
        );
        venv.join("bin/python")
    })
}

/// Starts `grym-py-worker MODEL ARGS...` on a free port and waits until it
/// reports serving.
pub async fn python_worker(model: &str, args: &[&str]) -> Process {
    let process = python_worker_listening(model, args).await;
    wait_serving(&process.endpoint(), "")
        .await
        .unwrap_or_else(|error| panic!("{error:#}\n{}", process.log()));
    process
}

/// Starts `grym-py-worker MODEL ARGS...` on a free port and waits only until
/// it listens (a model that cannot load listens, not serving).
pub async fn python_worker_listening(model: &str, args: &[&str]) -> Process {
    python_worker_with_env(model, args, &[]).await
}

/// [`python_worker_listening`], with these environment variables (the
/// `OTEL_*` ones among them, say).
pub async fn python_worker_with_env(model: &str, args: &[&str], env: &[(&str, String)]) -> Process {
    let mut argv = vec![
        "-m".to_owned(),
        "grym_worker.cli".to_owned(),
        model.to_owned(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    Process::start(&format!("grym-py-worker {model}"), python(), &argv, env)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"))
}
