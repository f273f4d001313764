//! MCP for agents over Streamable HTTP (`[mcp] listen`, served at `/mcp`):
//! rmcp's service, whose tools ([`grym_mcp::Tools`]) call the Orchestrator
//! service in process, through the same tenant and deadline interceptors a
//! gRPC call passes, with the MCP request's own `Authorization` and
//! `grym-tenant` headers as the call's metadata. So a token, a tenant and
//! every limit mean over MCP what they mean over gRPC.

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::McpSettings;
use crate::error::Error;

/// Binds the MCP listener, so an address in use stops grymd at start.
pub(crate) async fn bind(settings: &McpSettings) -> Result<TcpListener, Error> {
    TcpListener::bind(settings.listen)
        .await
        .map_err(|source| Error::McpListen {
            address: settings.listen,
            source,
        })
}

/// Serves MCP on `listener` until `closing` fires; its sessions end then.
pub(crate) async fn serve(
    listener: TcpListener,
    settings: McpSettings,
    transport: grym_mcp::Transport,
    closing: CancellationToken,
) {
    let mut config =
        StreamableHttpServerConfig::default().with_cancellation_token(closing.child_token());
    if !settings.allowed_hosts.is_empty() {
        config = config.with_allowed_hosts(settings.allowed_hosts);
    }
    let service = StreamableHttpService::new(
        // The tools read no files here: the caller is not on this machine.
        move || {
            Ok(grym_mcp::Tools::new(
                transport.clone(),
                grym_mcp::Credentials::default(),
                false,
            ))
        },
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let address = listener.local_addr().ok();
    tracing::info!(?address, "serving MCP over Streamable HTTP at /mcp");
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { closing.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "the MCP listener failed");
    }
}
