//! The grym orchestrator for agents that speak MCP.
//!
//! [`Tools`] is an MCP server handler (the official `rmcp` SDK) whose tools
//! mirror the Orchestrator RPCs an agent needs: `execute_task`,
//! `submit_task`, `get_task`, `cancel_task`, `plan_task` and `list_models`.
//! Each tool calls the Orchestrator service through a tonic client over a
//! [`Transport`]: a channel to a grymd (`grym mcp`, over stdio), or grymd's
//! own service stack in process (its Streamable HTTP listener), so a tool
//! call meets the same authentication, tenants and limits as a gRPC call.
//!
//! [`json`] is protobuf's JSON mapping of the contract, which the tools'
//! arguments and results use, and the JSON Schemas derived from it.

pub mod json;
mod tools;

pub use tools::{Credentials, Tools, Transport, TransportError, transport};

/// What went wrong on the way between JSON and the contract.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The compiled-in descriptor set does not describe a message (a build
    /// fault, not the caller's).
    #[error("the contract's descriptors: {0}")]
    Descriptor(String),
    /// JSON that is not a valid `message`.
    #[error("not a valid {message}: {reason}")]
    Json {
        /// The message's protobuf name.
        message: &'static str,
        /// What the JSON mapping refused, naming the field.
        reason: String,
    },
}
