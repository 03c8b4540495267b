//! `bosun.sessions.v1` — Session Manager: interactive shells, single interactive commands and
//! port forwarding to managed nodes, with no SSH and no inbound port.
//!
//! - [`SessionServiceImpl`] (`service.rs`): StartSession (document, parameters, policies on the
//!   node, the document and the run-as user; the session row; the `sessions.start` message to
//!   the agent), ResumeSession, TerminateSession, DescribeSessions, GetConnectionStatus,
//!   GetSessionTranscript. Audited.
//! - [`SessionStore`] (`store.rs`): the `sessions` rows, the one place that changes them —
//!   tokens, status, bytes, the end of a session (audited once).
//! - [`Broker`] (`broker/`): `SessionData.Connect` (clients) and `SessionData.Attach` (agents),
//!   served by every gateway replica; pairs the two ends in memory, or through two Redis
//!   streams when they landed on different replicas; enforces idle timeout and max duration;
//!   records transcripts.
//! - [`transcript`]: transcripts in the object store, in parts, exported as asciicast v2.
//! - [`Reaper`] (`reaper.rs`): ends sessions whose agent never attached or whose hub is gone.

pub mod broker;
pub mod config;
pub mod entities;
mod migrations;
mod plan;
pub mod reaper;
mod service;
pub mod store;
pub mod transcript;
mod validate;

pub use broker::Broker;
pub use config::SessionsConfig;
pub use migrations::Migrator;
pub use reaper::Reaper;
pub use service::SessionServiceImpl;
pub use store::{SessionEnd, SessionRecord, SessionStatus, SessionStore};

/// The gRPC service names, for health and routing.
pub const SERVICE_NAME: &str = "bosun.sessions.v1.SessionService";
pub const DATA_SERVICE_NAME: &str = "bosun.sessions.v1.SessionData";
