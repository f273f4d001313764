//! grymd, the grym orchestrator server.
//!
//! [`serve`] builds the registry from the [`Config`] (starting the built-in
//! reference workers when asked), probes every worker once, then serves
//! `grym.orchestrator.v1.Orchestrator`, `grpc.health.v1.Health` and server
//! reflection over plain HTTP/2 or TLS (`[tls]`), on connections bounded by
//! `[connections]`. On SIGHUP it reads the configuration file again and
//! applies its worker list, and reads the TLS certificate files again.
//!
//! When its shutdown future completes it drains: health turns
//! `NOT_SERVING` for every name at once, new tasks are refused with
//! `UNAVAILABLE`, and running and queued tasks get `shutdown_grace` to end
//! and answer their callers; what is left then ends (a durable task stays
//! queued in the store); every health `Watch` is ended and the connections
//! closed. It returns within the grace period plus a second, everything it
//! spawned stopped.
//!
//! - [`config`]: the configuration, read into the core's settings;
//! - `api`: the orchestrator service, its conversions and the one mapping
//!   from the core's failures to gRPC;
//! - `layers`: what every call passes through before its handler;
//! - `listen`: accepting callers' connections, bounded in number and time;
//! - `mcp`: MCP's Streamable HTTP on `[mcp] listen`, its tools calling the
//!   orchestrator service in process;
//! - `http_ops`: the operators' HTTP listener (`/metrics`) on
//!   `[metrics] listen`;
//! - `tls`: TLS and mTLS for callers, reloaded on SIGHUP;
//! - `hangup`: the one SIGHUP loop both reloads run in;
//! - `health`: `grpc.health.v1`, overall and per model, and its drain;
//! - `worker`: the workers' clients, conversions, built-ins and reload.
//!
//! The arrows point one way: `lib` uses them all (`health` uses none);
//! `worker` -> `api` (for status code names), `layers` (to bound messages),
//! `config`, `error`; `api` -> `layers`; `layers` -> `listen` (for what a
//! connection tells);
//! `mcp` -> `config`, `error`; `http_ops` -> `config`, `error`; `listen` -> `tls`, `config`; `tls` -> `hangup`, `config`, `error`;
//! `worker` -> `hangup`; `config` -> `error`.

mod api;
pub mod config;
mod error;
mod hangup;
mod health;
mod http_ops;
mod layers;
mod listen;
mod mcp;
mod tls;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use grym_core::probe;
use grym_core::{Orchestrator, Registry};
use grym_proto::orchestrator::v1::orchestrator_server::OrchestratorServer;
use tokio::net::TcpListener;
use tokio::time::Instant;
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
use crate::worker::{builtin, discovery, model_entries, reload};

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
    if tokio::time::timeout(STOP_WITHIN, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some of grymd's own loops had not stopped; leaving them");
    }
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
    let mcp_listener = match &config.mcp {
        Some(settings) => Some(mcp::bind(settings).await?),
        None => None,
    };
    let metrics_listener = match &config.metrics {
        Some(settings) => Some(http_ops::bind(settings).await?),
        None => None,
    };
    let builtin = if config.builtin_workers {
        builtin::start(tasks, cancel, config.max_message_bytes)
            .await
            .map_err(Error::Builtin)?
    } else {
        Vec::new()
    };
    let settings = ChannelSettings::from_config(&config);
    let entries = model_entries(config.workers.iter().chain(&builtin), &settings).await?;
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
    tasks.spawn(discovery::watch(
        Arc::clone(&orchestrator),
        settings.clone(),
        config.probe.timeout,
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
    // The orchestrator service behind its two layers, outermost first.
    // When the caller needs the answer: its grpc-timeout becomes a
    // `Deadline` the handler passes to the core, which carries what
    // remains of it to the worker. Then who is calling: a token or the
    // `grym-tenant` metadata becomes the `Tenant` whose tasks, sessions
    // and cached context the call may use.
    let service = InterceptedService::new(
        InterceptedService::new(service, move |request| resolver.resolve(request)),
        deadline::interceptor,
    );
    let health = health::Health::new(&orchestrator);
    tasks.spawn(health::report(
        health.clone(),
        Arc::clone(&orchestrator),
        config.probe.interval,
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

    // Fires once the drain is over: no connection is accepted after it, and
    // those open are closed.
    let closing = cancel.child_token();
    // MCP's tools call the same service stack in process, so they meet the
    // same tenants, tokens and deadlines (not the HTTP-level layers: MCP
    // has its own HTTP server).
    if let (Some(listener), Some(settings)) = (mcp_listener, &config.mcp) {
        tasks.spawn(mcp::serve(
            listener,
            settings.clone(),
            grym_mcp::transport(service.clone()),
            closing.clone(),
        ));
    }
    // Scrapes go on through the drain and end with it.
    if let Some(listener) = metrics_listener {
        tasks.spawn(http_ops::serve(
            listener,
            http_ops::router(grym_telemetry::prometheus()),
            closing.clone(),
        ));
    }
    let connections = &config.connections;
    let incoming = listen::incoming(listener, connections, acceptor, tasks, closing.clone());
    let drained = drain(
        shutdown,
        config.shutdown_grace,
        health.clone(),
        Arc::clone(&orchestrator),
        closing.clone(),
    );
    let server = tonic::transport::Server::builder()
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
        .add_service(health.service())
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(service.clone())
        // grymd's own accept loop (`listen`): bounded connections, TLS
        // handshakes beside it, idle connections closed. tonic stops and
        // closes its connections once the drain is over.
        .serve_with_incoming_shutdown(incoming, drained);
    tokio::pin!(server);
    // A stream that would outlive the drain (a `WatchTask` of a task
    // another replica runs, say) does not hold grymd beyond `CLOSE_WITHIN`.
    let close_deadline = async {
        closing.cancelled().await;
        tokio::time::sleep(CLOSE_WITHIN).await;
    };
    tokio::select! {
        served = &mut server => served?,
        () = close_deadline => {
            tracing::warn!(within = ?CLOSE_WITHIN, "calls still open after the drain were cut");
        }
    }
    // After a drain this finds nothing left; when serving failed, it ends
    // every task at once.
    if tokio::time::timeout(CUT_WITHIN, orchestrator.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("tasks had not ended when grymd stopped");
    }
    Ok(())
}

/// After the grace period, the longest the tasks left may take to end and
/// the ones let go to be handed back to the store.
const CUT_WITHIN: Duration = Duration::from_millis(500);

/// After the drain, the longest connections may take to send their last
/// answers and close.
const CLOSE_WITHIN: Duration = Duration::from_millis(300);

/// After the connections, the longest grymd's own loops and built-in
/// workers may take to stop.
const STOP_WITHIN: Duration = Duration::from_millis(150);

/// From `shutdown` on: health `NOT_SERVING` at once, new tasks refused,
/// `grace` for the others to end on their own, then the rest ended; then
/// every `Watch` ended and `closing` fired. Takes at most `grace` plus
/// [`CUT_WITHIN`].
async fn drain(
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    health: health::Health,
    orchestrator: Arc<Orchestrator>,
    closing: CancellationToken,
) {
    shutdown.await;
    let began = Instant::now();
    // Refusing first, so that whoever hears NOT_SERVING finds new tasks
    // refused; a Watch on a name hears it now, and balancers stop sending
    // here while what runs finishes.
    orchestrator.refuse_new_tasks();
    health.drain();
    tracing::info!(
        ?grace,
        queued = orchestrator.queued(),
        "draining: new tasks are refused, running and queued ones may end"
    );
    match tokio::time::timeout(grace + CUT_WITHIN, orchestrator.drain(grace)).await {
        Ok(true) => {
            tracing::info!(took = ?began.elapsed(), "every task ended within the grace period")
        }
        Ok(false) => {
            tracing::info!(took = ?began.elapsed(), "the tasks left at the end of the grace period were ended")
        }
        Err(_) => tracing::warn!("tasks were still ending after the grace period; stopping anyway"),
    }
    health.end();
    closing.cancel();
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
