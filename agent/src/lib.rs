//! bosun-agent: registers a node with an activation, keeps one outbound stream to the control
//! plane (`bosun.agent.v1.AgentChannel`), and runs the work it brings exactly once.
//!
//! The library is what the binary and the fleet simulator share: [`register`], [`StateDir`],
//! [`Agent`] over a [`Journal`] and an [`Executor`], with a [`SessionManager`] for `sessions.*`
//! deliveries. It links `bosun-proto` and small client
//! crates only.
//!
//! State directory (default `/var/lib/bosun-agent`, 0700; files 0600, written atomically):
//! ```text
//! identity.json            {"node_id", "server_url"}
//! key.pk8                  the node's Ed25519 key, PKCS#8
//! journal/seen.log         delivery ids seen: "<unix secs> <id as JSON>" per line, fsynced
//!                          before each Ack; compacted on start (7 days, at most 100 000 ids)
//! running/<hex id>.pb      a delivery whose run has not finished (reported interrupted,
//!                          not re-run, if found on start)
//! outbox/<seq>-<hex id>.pb a result until its ResultAck; re-sent oldest first on connect
//! work/<command id>/       per-command script files, removed when the command ends
//! ```

mod agent;
pub mod backoff;
mod client;
mod executor;
mod facts;
pub mod journal;
/// Session Manager sessions on the node (`sessions.*` deliveries).
pub mod session;
/// The JSON of `commands.*` payloads and results, shared with the Run Command service.
pub use bosun_document::run as protocol;
mod state;

use std::path::{Path, PathBuf};

pub use agent::{Agent, AgentOptions, Exit};
pub use backoff::{Backoff, BackoffConfig};
pub use client::{EndpointConfig, register};
pub use executor::{
    CommandExecutor, DEFAULT_COMMAND_WORKERS, Executor, ResultSink, interrupted_payload,
};
pub use facts::collect_host_facts;
pub use journal::{FileJournal, Journal, JournalLimits, MemoryJournal};
pub use session::{SessionManager, SessionOptions};
pub use state::{DEFAULT_STATE_DIR, Identity, StateDir, challenge_message, generate_key};

/// What goes wrong in the agent. Messages say what was attempted and on what.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file or directory of the state could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A state file is not what the agent wrote.
    #[error("invalid agent state: {0}")]
    InvalidState(String),
    /// No identity in the state directory.
    #[error("no identity in {0}: run `bosun-agent register` first")]
    NotRegistered(PathBuf),
    /// An identity exists and `--force` was not given.
    #[error(
        "{0} already holds an identity: pass --force to register again (the old node stays registered until deregistered)"
    )]
    AlreadyRegistered(PathBuf),
    /// A setting is unusable (e.g. the server URL).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The server could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The server refused a call.
    #[error("the server refused: {code:?}: {message}")]
    Rejected {
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
}

impl AgentError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
