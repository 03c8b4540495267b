//! `bosun.commands.v1.CommandService` — Run Command: a Command document run on many nodes
//! with rate control, error control, timeouts, cancellation, per-node status, output and
//! notifications.
//!
//! - [`CommandServiceImpl`] (the RPCs, `service.rs`; SendCommand's checks and planning in
//!   `send.rs`) validates, authorizes per node, renders the document once and stores the
//!   command with one invocation per node (`Pending`, or already terminal: AccessDenied,
//!   InvalidPlatform, Undeliverable). It sends nothing itself.
//! - [`Engine`] (`engine/`) does the running, on every replica at once without double work:
//!   the dispatcher leases commands and sends their invocations through `NodeLink` under the
//!   concurrency and error budgets (rows first, messages after commit); the result consumer
//!   reads `node-results.commands` and applies agents' results idempotently; the reconciler
//!   applies delivery and execution timeouts and cancellation; the output worker stores full
//!   output in the object store; the event relay publishes status changes to `events`.
//! - [`Ports`] is what it needs of other services (documents, nodes, parameters, webhooks).

pub mod config;
pub mod engine;
pub mod entities;
mod local;
mod migrations;
pub mod model;
pub mod ports;
mod query;
pub mod render;
mod send;
mod service;
mod validate;

pub use config::CommandsConfig;
pub use engine::Engine;
pub use migrations::Migrator;
pub use ports::{DocumentSource, NodeInfo, NodeSource, ParameterSource, Ports, WebhookSource};
pub use service::CommandServiceImpl;

/// The gRPC service name, for health and routing.
pub const SERVICE_NAME: &str = "bosun.commands.v1.CommandService";

/// The queue stream agents' command results arrive on.
pub fn results_stream() -> String {
    bosun_nodelink::results_stream("commands")
}

/// The event `source` of command events on the `events` stream.
pub const EVENT_SOURCE: &str = "commands";
