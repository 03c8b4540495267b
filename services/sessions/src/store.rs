//! The `sessions` rows: the one place that changes them. The service creates sessions and
//! ends them on TerminateSession; the broker (on gateway replicas) redeems tokens, marks
//! attachments, reports bytes and liveness, and ends sessions (exit, timeouts); the reaper
//! ends sessions whose hub is gone. Ending is idempotent and audited once.

use std::time::Duration;

use bosun_core::ApiError;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

/// SSM's session statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    Connecting,
    Connected,
    Disconnected,
    Terminating,
    Terminated,
    Failed,
}

impl SessionStatus {
    /// The SSM name (`Connected`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "Connecting",
            Self::Connected => "Connected",
            Self::Disconnected => "Disconnected",
            Self::Terminating => "Terminating",
            Self::Terminated => "Terminated",
            Self::Failed => "Failed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "Connecting" => Self::Connecting,
            "Connected" => Self::Connected,
            "Disconnected" => Self::Disconnected,
            "Terminating" => Self::Terminating,
            "Terminated" => Self::Terminated,
            "Failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Terminated or Failed: nothing changes it any more.
    pub fn is_ended(self) -> bool {
        matches!(self, Self::Terminated | Self::Failed)
    }
}

/// What the broker needs to know of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: String,
    pub node_id: String,
    /// The principal that started it (`user/alice`).
    pub owner: String,
    pub status: SessionStatus,
    /// `Standard_Stream`, `InteractiveCommands` or `Port`.
    pub session_type: String,
    pub document_name: String,
    pub run_as: String,
    /// Port sessions: the remote host and port, and the document's local port (0 = any).
    pub host: String,
    pub port_number: u16,
    pub local_port_number: u16,
    /// Already scaled by `SessionsConfig::time_unit` (a "minute" of the document).
    pub idle_timeout: Duration,
    /// `None`: no limit.
    pub max_duration: Option<Duration>,
    pub started_at: DateTime<Utc>,
    /// Keep a transcript (terminal sessions with logging on; never for Port).
    pub transcript: bool,
    /// Record the client's input in the transcript too.
    pub record_input: bool,
}

/// How a session ended, for [`SessionStore::end`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// Terminated or Failed.
    pub status: SessionStatus,
    /// `exit status 0`, `idle timeout (20m)`, `max session duration (60m)`,
    /// `terminated by user/alice`, `agent disconnected`, ...
    pub details: String,
    pub exit_code: Option<i32>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The `sessions` table.
#[derive(Clone)]
pub struct SessionStore {
    db: DatabaseConnection,
    audit: bosun_audit::AuditLog,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore").finish_non_exhaustive()
    }
}

impl SessionStore {
    pub fn new(db: DatabaseConnection, audit: bosun_audit::AuditLog) -> Self {
        Self { db, audit }
    }

    /// The session, if it exists.
    pub async fn get(&self, session_id: &str) -> Result<Option<SessionRecord>, ApiError> {
        let _ = (&self.db, &self.audit, session_id);
        todo!("H1")
    }

    /// Redeems a client token: the session's current token, unexpired and unused, for a
    /// session that has not ended, started by `principal`. Marks the token used (a token opens
    /// one stream). Errors: NOT_FOUND (no such session), UNAUTHENTICATED (wrong, expired or
    /// used token — one message for all three), PERMISSION_DENIED (not the owner),
    /// FAILED_PRECONDITION InvalidSessionState (ended).
    pub async fn redeem_token(
        &self,
        session_id: &str,
        token: &str,
        principal: &str,
    ) -> Result<SessionRecord, ApiError> {
        let _ = (session_id, token, principal);
        todo!("H1")
    }

    /// Both ends attached: Connected (unless ended). Sets `hub` (the replica id) too.
    pub async fn mark_connected(&self, session_id: &str, hub: &str) -> Result<(), ApiError> {
        let _ = (session_id, hub);
        todo!("H1")
    }

    /// The client left (the agent still attached): Disconnected (unless ended).
    pub async fn mark_disconnected(&self, session_id: &str) -> Result<(), ApiError> {
        let _ = session_id;
        todo!("H1")
    }

    /// The hub is alive: sets `hub_seen_at` = now and the byte counts so far. Returns the
    /// current status, so the hub learns of a TerminateSession (ended) within one touch.
    pub async fn touch(
        &self,
        session_id: &str,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Result<Option<SessionStatus>, ApiError> {
        let _ = (session_id, bytes_in, bytes_out);
        todo!("H1")
    }

    /// Ends the session once (a conditional UPDATE on a not-ended status): status, end date,
    /// details, exit code, bytes; audits `sessions:SessionEnded` (owner, node, document,
    /// reason, start, end, bytes, details) in the same transaction. Returns false, changing
    /// nothing, when it had already ended. (TerminateSession's end keeps the bytes the hub
    /// reports later: `touch` still records bytes of an ended session.)
    pub async fn end(&self, session_id: &str, end: SessionEnd) -> Result<bool, ApiError> {
        let _ = (session_id, end);
        todo!("H1")
    }
}
