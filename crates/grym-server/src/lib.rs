//! grymd, the grym orchestrator server.
//!
//! [`serve`] builds the registry from the [`Config`] (starting the built-in
//! reference workers when asked), probes every worker once, then serves
//! `grym.orchestrator.v1.Orchestrator`, `grpc.health.v1.Health` and server
//! reflection until its shutdown future completes, over plain HTTP/2 or TLS
//! (`[tls]`), on connections bounded by `[connections]`. On SIGHUP it reads
//! the configuration file again and applies its worker list, and reads the
//! TLS certificate files again. Everything it spawns is stopped before it
//! returns.
//!
//! - [`config`]: the configuration, read into the core's settings;
//! - `api`: the orchestrator service, its conversions and the one mapping
//!   from the core's failures to gRPC;
//! - `layers`: what every call passes through before its handler;
//! - `listen`: accepting callers' connections, bounded in number and time;
//! - `tls`: TLS and mTLS for callers, reloaded on SIGHUP;
//! - `hangup`: the one SIGHUP loop both reloads run in;
//! - `worker`: the workers' clients, conversions, built-ins and reload.
//!
//! The arrows point one way: `lib` uses them all; `worker` -> `api` (for
//! status code names), `layers` (to bound messages), `config`, `error`;
//! `api` -> `layers`; `layers` -> `listen` (for what a connection tells);
//! `listen` -> `tls`, `config`; `tls` -> `hangup`, `config`, `error`;
//! `worker` -> `hangup`; `config` -> `error`.

mod api;
pub mod config;
mod error;
mod hangup;
mod layers;
mod listen;
mod tls;
mod worker;

use std::future::Future;
use std::sync::Arc;

use grym_core::probe;
use grym_core::{Orchestrator, Registry};
use grym_proto::orchestrator::v1::orchestrator_server::OrchestratorServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;

// Public for the conversion benchmark (benches/convert.rs).
pub use api::convert::task_from_api;
pub use config::Config;
pub use error::Error;

use crate::layers::{deadline, framing, http, tenant};
use crate::listen::activity::ActivityLayer;
use crate::worker::client::ChannelSettings;
use crate::worker::{builtin, model_entries, reload};

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let result = run(config, listener, shutdown, &tasks, &cancel).await;
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    result
}

async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    // First, so that certificates that do not load stop grymd before it
    // starts anything.
    let acceptor = config.tls.as_ref().map(tls::Acceptor::new).transpose()?;
    let builtin = if config.builtin_workers {
        builtin::start(tasks, cancel, config.max_message_bytes)
            .await
            .map_err(Error::Builtin)?
    } else {
        Vec::new()
    };
    let settings = ChannelSettings::from_config(&config);
    let entries = model_entries(config.workers.iter().chain(&builtin), &settings)?;
    let registry = Arc::new(Registry::new(entries).map_err(Error::Registry)?);

    // One probe round before serving, so the first call finds models
    // described; it is bounded by the health timeout.
    probe::probe_all(&registry, config.probe.timeout).await;
    for model in registry.models() {
        tracing::info!(
            model = %model.id(),
            replicas = model.replicas().len(),
            health = ?model.health(),
            capabilities = model.description().capabilities.len(),
            "model registered"
        );
    }

    let replica = replica_name();
    let store = grym_store::open(&config.store.url, &replica, &config.store.durability).await?;
    let mut orchestrator = Orchestrator::new(registry, config.orchestrator.clone())
        .with_failure_names(api::status::failure_code);
    if let Some(store) = store {
        orchestrator = orchestrator.with_store(store);
    }
    let orchestrator = Arc::new(orchestrator);
    // The lease first: what recovery claims is held from the start.
    tasks.spawn(Arc::clone(&orchestrator).keep_lease(cancel.child_token()));
    // Before serving: what the last run of grymd (or a replica gone for
    // good) left unfinished is queued again first, in its order.
    match orchestrator.recover().await {
        Ok(0) => {}
        Ok(tasks) => tracing::info!(tasks, "took up unfinished tasks from the store"),
        Err(error) => {
            tracing::error!(%error, "unfinished tasks were not read; the store is retried")
        }
    }
    tasks.spawn(Arc::clone(&orchestrator).tend_store(cancel.child_token()));
    orchestrator.observe_metrics();
    tasks.spawn(Arc::clone(&orchestrator).watch(cancel.child_token()));
    tasks.spawn(Arc::clone(&orchestrator).maintain(cancel.child_token()));
    let watched = Arc::clone(&orchestrator);
    tasks.spawn(probe::watch(
        move || watched.registry(),
        config.probe,
        cancel.child_token(),
    ));
    tasks.spawn(reload::on_hangup(
        config.clone(),
        builtin,
        settings,
        Arc::clone(&orchestrator),
        cancel.child_token(),
    ));

    if let (Some(acceptor), Some(settings)) = (&acceptor, &config.tls) {
        tasks.spawn(
            acceptor
                .clone()
                .reload_on_hangup(settings.clone(), cancel.child_token()),
        );
    }

    let draining = Arc::clone(&orchestrator);
    let resolver = match &config.tls {
        Some(tls) if tls.tenant_from_certificate => tenant::Resolver::from_certificate(),
        _ => tenant::Resolver::new(config.auth_tokens.clone()),
    }
    .audited_by(Arc::clone(&orchestrator));
    let service = OrchestratorServer::new(api::service::OrchestratorService::new(Arc::clone(
        &orchestrator,
    )))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<OrchestratorServer<api::service::OrchestratorService>>()
        .await;
    tasks.spawn(report_store_health(
        reporter,
        Arc::clone(&orchestrator),
        cancel.child_token(),
    ));
    let (reflection_v1, reflection_v1alpha) = if config.reflection {
        let (v1, v1alpha) = grym_proto::reflection_services(&[
            grym_proto::orchestrator::v1::orchestrator_server::SERVICE_NAME,
        ])?;
        (Some(v1), Some(v1alpha))
    } else {
        (None, None)
    };

    let connections = &config.connections;
    let incoming = listen::incoming(listener, connections, acceptor, tasks, cancel.child_token());
    tonic::transport::Server::builder()
        .max_concurrent_streams(connections.max_concurrent_streams)
        .http2_max_header_list_size(connections.max_header_list_bytes)
        .http2_keepalive_interval(Some(connections.keepalive_interval))
        .http2_keepalive_timeout(Some(connections.keepalive_timeout))
        .initial_stream_window_size(connections.stream_window_bytes)
        .initial_connection_window_size(connections.connection_window_bytes)
        // HTTP-level layers, outermost first. First, the call counts as
        // its connection's activity from its arrival to the end of its
        // answer, so only a connection without calls is idle.
        .layer(ActivityLayer)
        // Then what is not gRPC is refused before anything else runs, and
        // the request body is given `body_timeout` to arrive.
        .layer(http::HttpChecksLayer::new(connections.body_timeout))
        // Each call runs in a span that continues the caller's
        // `traceparent`, so every layer, the handler and the task's spans
        // join the agent's trace.
        .layer(grym_telemetry::ServerTraceLayer)
        // Then the status of a call tonic refused before any handler ran:
        // an unreadable request is the caller's mistake, not INTERNAL.
        .layer(tower::util::MapResponseLayer::new(
            framing::restate::<tonic::body::Body>,
        ))
        .add_service(health)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        // The orchestrator service behind its two layers, outermost first.
        // When the caller needs the answer: its grpc-timeout becomes a
        // `Deadline` the handler passes to the core, which carries what
        // remains of it to the worker. Then who is calling: a token or the
        // `grym-tenant` metadata becomes the `Tenant` whose tasks, sessions
        // and cached context the call may use.
        .add_service(InterceptedService::new(
            InterceptedService::new(service, move |request| resolver.resolve(request)),
            deadline::interceptor,
        ))
        // grymd's own accept loop (`listen`): bounded connections, TLS
        // handshakes beside it, idle connections closed.
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            // At once, not after connections close: callers waiting on
            // queued tasks get their cancelled results and let go.
            draining.begin_shutdown();
        })
        .await?;
    // Every task has ended, each with its result.
    orchestrator.shutdown().await;
    Ok(())
}

/// How often the store's health is looked at for `grpc.health.v1`.
const STORE_HEALTH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Reports grymd `NOT_SERVING` (overall and for the orchestrator service)
/// while its store does not answer: it cannot accept work then.
async fn report_store_health(
    reporter: tonic_health::server::HealthReporter,
    orchestrator: Arc<Orchestrator>,
    cancel: CancellationToken,
) {
    const SERVICE: &str = grym_proto::orchestrator::v1::orchestrator_server::SERVICE_NAME;
    let mut serving = true;
    let mut ticker = tokio::time::interval(STORE_HEALTH_EVERY);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = orchestrator.store_serving();
        if now == serving {
            continue;
        }
        serving = now;
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(SERVICE, status).await;
    }
}

/// This process's name among the replicas that share a store: the host
/// (`HOSTNAME`, as Kubernetes sets it) and a part unique to this start.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "grymd".to_owned());
    let unique = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &unique[unique.len() - 8..]
    )
}
