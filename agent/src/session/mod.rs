//! Session Manager on the node: `sessions.start` opens `SessionData.Attach` on the agent's
//! channel (proving the node's key) and runs the session — a PTY shell, an interactive
//! command, or port forwarding — in the delivery's own task; `sessions.terminate` stops one.
//!
//! The delivery's result ([`SessionResult`], topic `sessions.start`) is sent when the session
//! ends on the node: it is the journal's record (an agent that dies mid-session reports the
//! delivery interrupted on its next start, and never runs it again). The session's outcome
//! reaches the client through the data stream (`Exit`), and the store through the hub.
//!
//! Refusals the user must see (a run-as user that cannot be used, a process that cannot
//! start) are sent as a line of output and exit status 126, so `bosun session start` prints
//! why; failures before the stream is attached only reach the result and the agent's log.

mod attach;
mod port;
mod pty;
mod terminal;
mod users;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bosun_proto::agent::v1::Delivery;
use bosun_proto::sessions::v1::Closed;
use bosun_session::wire::{
    SessionKind, SessionResult, StartSession, TOPIC_START, TOPIC_TERMINATE, TerminateSession,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::executor::{Executor, ResultSink};
use crate::state::Identity;

/// Tunables of [`SessionManager`].
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Limit on each step of the attach handshake.
    pub handshake_timeout: Duration,
    /// How long to keep trying to (re-)attach when the gateway is unreachable or its stream
    /// broke without `Closed`, before the session is given up (and its processes killed).
    pub reattach_for: Duration,
    /// First delay between attach attempts (doubling, at most 5 s).
    pub reattach_initial_delay: Duration,
    /// How long a terminal session waits for the client's first resize (size and `TERM`)
    /// before starting the shell with 80×24 `xterm-256color`.
    pub first_resize_wait: Duration,
    /// After `Exit`, how long to wait for the client's acknowledgement.
    pub exit_ack_wait: Duration,
    /// Between SIGHUP and SIGKILL when a session is stopped.
    pub kill_grace: Duration,
    /// Sessions running at once on this node; more are refused.
    pub max_sessions: usize,
}

impl Default for SessionOptions {
    /// 15 s handshake, 30 s of re-attach, 2 s for the first resize, 10 s for the last ack,
    /// 2 s kill grace, 256 sessions.
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(15),
            reattach_for: Duration::from_secs(30),
            reattach_initial_delay: Duration::from_millis(200),
            first_resize_wait: Duration::from_secs(2),
            exit_ack_wait: Duration::from_secs(10),
            kill_grace: Duration::from_secs(2),
            max_sessions: 256,
        }
    }
}

/// How a session ended on the node.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The shell or command exited with this status (sent as `Exit`).
    Exited(i32),
    /// The gateway closed the session (terminated, idle, max duration...).
    Closed(Closed),
    /// `sessions.terminate`, or the agent stopping.
    Terminated,
    /// Refused, or the stream was lost for good.
    Failed(String),
}

/// Runs the node's sessions: the [`Executor`] for `sessions.*` deliveries.
pub struct SessionManager {
    channel: Channel,
    identity: Identity,
    options: SessionOptions,
    /// Running sessions by id: their stop tokens.
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("node_id", &self.identity.node_id)
            .field("running", &self.running().len())
            .finish()
    }
}

impl SessionManager {
    /// Sessions attach over `channel` (the agent's own, to its gateway) as `identity`.
    pub fn new(channel: Channel, identity: Identity, options: SessionOptions) -> Self {
        Self {
            channel,
            identity,
            options,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops every running session (the agent is stopping: a shell never ends by itself, and
    /// its processes cannot outlive the agent that relays them).
    pub fn stop_all(&self) {
        for stop in self.running().values() {
            stop.cancel();
        }
    }

    /// How many sessions run now.
    pub fn running_sessions(&self) -> usize {
        self.running().len()
    }

    async fn start(&self, delivery: &Delivery, results: &ResultSink) -> SessionResult {
        let start: StartSession = match serde_json::from_slice(&delivery.payload) {
            Ok(start) => start,
            Err(error) => {
                return failed(
                    String::new(),
                    format!("invalid sessions.start payload: {error}"),
                );
            }
        };
        let session_id = start.session_id.clone();
        if too_late(&start.attach_by) {
            return failed(session_id, "the session had to be attached earlier".into());
        }
        let stop = results.abort_signal().child_token();
        {
            let mut running = self.running();
            if running.contains_key(&session_id) {
                return failed(session_id, "the session already runs on this node".into());
            }
            if running.len() >= self.options.max_sessions {
                return failed(
                    session_id,
                    format!(
                        "too many sessions on this node (at most {})",
                        self.options.max_sessions
                    ),
                );
            }
            running.insert(session_id.clone(), stop.clone());
        }
        let outcome = self.run(&start, &stop).await;
        self.running().remove(&session_id);
        tracing::info!(%session_id, ?outcome, "session ended on this node");
        let stopping = results.abort_signal().is_cancelled();
        match outcome {
            Outcome::Exited(code) => SessionResult {
                session_id,
                status: "Success".into(),
                detail: format!("exit status {code}"),
                exit_code: Some(code),
            },
            Outcome::Closed(closed) => SessionResult {
                session_id,
                status: "Success".into(),
                detail: format!(
                    "closed by the gateway: {} ({})",
                    closed.reason, closed.status
                ),
                exit_code: None,
            },
            Outcome::Terminated if stopping => failed(session_id, "the agent stopped".into()),
            Outcome::Terminated => SessionResult {
                session_id,
                status: "Success".into(),
                detail: "terminated".into(),
                exit_code: None,
            },
            Outcome::Failed(reason) => failed(session_id, reason),
        }
    }

    async fn run(&self, start: &StartSession, stop: &CancellationToken) -> Outcome {
        let opened = tokio::select! {
            opened = attach::Attachment::open(
                self.channel.clone(),
                self.identity.clone(),
                start.session_id.clone(),
                self.options.clone(),
            ) => opened,
            () = stop.cancelled() => return Outcome::Terminated,
        };
        let mut attachment = match opened {
            Ok((attachment, _ready)) => attachment,
            Err(reason) => return Outcome::Failed(format!("cannot attach: {reason}")),
        };
        tracing::info!(session_id = %start.session_id, "session attached");
        match &start.kind {
            SessionKind::Shell { .. } | SessionKind::Command { .. } => {
                terminal::run(&mut attachment, start, stop, &self.options).await
            }
            SessionKind::Port { host, port } => {
                let host = if host.is_empty() { "localhost" } else { host };
                port::run(&mut attachment, start, host, *port, stop).await
            }
        }
    }

    fn terminate(&self, delivery: &Delivery) -> SessionResult {
        let terminate: TerminateSession = match serde_json::from_slice(&delivery.payload) {
            Ok(terminate) => terminate,
            Err(error) => {
                return failed(
                    String::new(),
                    format!("invalid sessions.terminate payload: {error}"),
                );
            }
        };
        let session_id = terminate.session_id;
        match self.running().get(&session_id) {
            Some(stop) => {
                tracing::info!(%session_id, reason = %terminate.reason, "terminating a session");
                stop.cancel();
                SessionResult {
                    session_id,
                    status: "Success".into(),
                    detail: "terminated".into(),
                    exit_code: None,
                }
            }
            None => SessionResult {
                session_id,
                status: "Success".into(),
                detail: "not running on this node".into(),
                exit_code: None,
            },
        }
    }
}

#[async_trait]
impl Executor for SessionManager {
    async fn handle(&self, delivery: Delivery, results: ResultSink) {
        let result = match delivery.topic.as_str() {
            TOPIC_START => self.start(&delivery, &results).await,
            TOPIC_TERMINATE => self.terminate(&delivery),
            topic => failed(String::new(), format!("unsupported topic {topic}")),
        };
        match serde_json::to_vec(&result) {
            Ok(payload) => {
                let _ = results.complete(payload);
            }
            Err(error) => tracing::error!(%error, "cannot encode a session result"),
        }
    }
}

fn failed(session_id: String, detail: String) -> SessionResult {
    SessionResult {
        session_id,
        status: "Failed".into(),
        detail,
        exit_code: None,
    }
}

/// Whether `attach_by` (RFC 3339; empty = no limit) has passed.
fn too_late(attach_by: &str) -> bool {
    if attach_by.is_empty() {
        return false;
    }
    match chrono::DateTime::parse_from_rfc3339(attach_by) {
        Ok(limit) => chrono::Utc::now() > limit,
        Err(error) => {
            tracing::warn!(%attach_by, %error, "ignoring an unreadable attach_by");
            false
        }
    }
}
