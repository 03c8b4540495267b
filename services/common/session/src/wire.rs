//! The JSON payloads of `sessions.*` node messages (service → agent, over `NodeLink`).

use serde::{Deserialize, Serialize};

/// Topic: start a session on the node.
pub const TOPIC_START: &str = "sessions.start";
/// Topic: end a session on the node.
pub const TOPIC_TERMINATE: &str = "sessions.terminate";

/// `sessions.start`: the agent attaches to the session (`SessionData.Attach`) and runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSession {
    pub session_id: String,
    /// What to run.
    pub kind: SessionKind,
    /// The OS user to run the shell or command as. `bosun-user` when the document's
    /// `runAsEnabled` is false (the agent creates it, unprivileged, when missing). An agent that
    /// is not root runs everything as its own user, and refuses a different named user.
    pub run_as: String,
    /// Broker-enforced limits, repeated here as the agent's backstop (seconds; 0 = none).
    pub idle_timeout_seconds: u64,
    pub max_duration_seconds: u64,
    /// The agent must attach before this (RFC 3339); later, it drops the session.
    pub attach_by: String,
}

/// The three session types Bosun runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionKind {
    /// `Standard_Stream`: a login shell in a PTY.
    Shell {
        /// The document's `shellProfile.linux`, run by the shell first (may be empty).
        shell_profile: String,
    },
    /// `InteractiveCommands`: only this command (rendered, parameters validated), in a PTY,
    /// run by `/bin/sh -c`; the session ends when it exits.
    Command { command: String },
    /// `Port`: TCP connections to `host:port` from the node, many at once.
    Port {
        /// `localhost` unless the document names a remote host.
        host: String,
        port: u16,
    },
}

/// `sessions.terminate`: stop the session's processes and connections now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateSession {
    pub session_id: String,
    pub reason: String,
}

/// The agent's result for a `sessions.*` delivery (kept in its journal until the gateway
/// queues it on `node-results.sessions`). For `sessions.start` it is sent when the session
/// has ended on the node; the session's outcome itself reaches the client on the data stream
/// and the store through the hub, so nothing needs to consume these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResult {
    pub session_id: String,
    /// `Success` (ran and ended; terminated as asked) or `Failed` (refused, could not attach,
    /// lost).
    pub status: String,
    /// E.g. `exit status 0`, `closed by the gateway: idle timeout (20m)`, `user alice does not
    /// exist on this node`.
    pub detail: String,
    /// The shell's or command's exit status, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}
