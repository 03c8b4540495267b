//! The `sessions` rows: the one place that changes them. The service creates sessions and
//! ends them on TerminateSession; the broker (on gateway replicas) redeems tokens, marks
//! attachments, reports bytes and liveness, and ends sessions (exit, timeouts); the reaper
//! ends sessions whose hub is gone. Ending is idempotent and audited once.
//!
//! Every change is a conditional UPDATE on the row's current state (an ended session never
//! changes status again; a token is used once), so any number of service, gateway and reaper
//! replicas may act on the same session at once.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bosun_audit::{AuditOutcome, AuditRecord};
use bosun_core::ApiError;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, QueryFilter,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::SessionsConfig;
use crate::entities::session;

/// The stable error names of session states (see `sessions.proto`).
pub(crate) const DOES_NOT_EXIST: &str = "DoesNotExistException";
pub(crate) const INVALID_SESSION_STATE: &str = "InvalidSessionState";

/// The audit action of a session's end (who ended it is in the details).
pub const SESSION_ENDED_ACTION: &str = "sessions:SessionEnded";
/// The principal recorded on events the system itself causes (a session's end).
pub const SYSTEM_PRINCIPAL: &str = "service/sessions";

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
    /// Every status, Active ones first.
    pub const ALL: [SessionStatus; 6] = [
        Self::Connecting,
        Self::Connected,
        Self::Disconnected,
        Self::Terminating,
        Self::Terminated,
        Self::Failed,
    ];

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

    /// The names of the statuses that are (`ended`) or are not ended, for SQL filters.
    pub(crate) fn names(ended: bool) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|status| status.is_ended() == ended)
            .map(Self::as_str)
            .collect()
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
    /// Why it ended (`terminated by user/alice`, ...); empty while it runs.
    pub details: String,
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
    config: SessionsConfig,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore").finish_non_exhaustive()
    }
}

fn db_error(what: &'static str) -> impl FnOnce(sea_orm::DbErr) -> ApiError {
    move |error| ApiError::internal(format!("sessions: {what}: {error}"))
}

pub(crate) fn session_missing(session_id: &str) -> ApiError {
    ApiError::not_found(format!("session {session_id} not found")).with_reason(DOES_NOT_EXIST)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A fresh client token (32 random bytes, base64url) and the hex SHA-256 stored for it.
pub(crate) fn new_token() -> Result<(String, String), ApiError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| ApiError::internal("sessions: the system random generator failed"))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    Ok((token, hash))
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `SET column = the larger of the stored value and value`: byte counts only grow, whoever
/// reports them (a hub's touch, an end with no counts of its own).
fn at_least(column: session::Column, value: u64) -> sea_orm::sea_query::SimpleExpr {
    let value = to_i64(value);
    Expr::case(Expr::col(column).lt(value), value)
        .finally(Expr::col(column))
        .into()
}

fn not_ended() -> sea_orm::sea_query::SimpleExpr {
    session::Column::Status.is_in(SessionStatus::names(false))
}

impl SessionStore {
    pub fn new(
        db: DatabaseConnection,
        audit: bosun_audit::AuditLog,
        config: SessionsConfig,
    ) -> Self {
        Self { db, audit, config }
    }

    pub fn config(&self) -> &SessionsConfig {
        &self.config
    }

    /// The row as the broker sees it, durations scaled.
    pub(crate) fn record(&self, row: &session::Model) -> Result<SessionRecord, ApiError> {
        let status = SessionStatus::parse(&row.status).ok_or_else(|| {
            ApiError::internal(format!(
                "session {}: unknown status {:?} stored",
                row.id, row.status
            ))
        })?;
        let minutes = |value: i32| self.config.minutes(u32::try_from(value).unwrap_or(0));
        Ok(SessionRecord {
            session_id: row.id.clone(),
            node_id: row.node_id.clone(),
            owner: row.owner.clone(),
            status,
            session_type: row.session_type.clone(),
            document_name: row.document_name.clone(),
            run_as: row.run_as.clone(),
            host: row.host.clone(),
            port_number: u16::try_from(row.port_number).unwrap_or(0),
            local_port_number: u16::try_from(row.local_port_number).unwrap_or(0),
            idle_timeout: minutes(row.idle_timeout_minutes),
            max_duration: (row.max_duration_minutes > 0).then(|| minutes(row.max_duration_minutes)),
            started_at: row.created_at,
            transcript: row.transcript,
            record_input: row.record_input,
            details: row.details.clone(),
        })
    }

    pub(crate) async fn find<C: ConnectionTrait>(
        conn: &C,
        session_id: &str,
    ) -> Result<Option<session::Model>, ApiError> {
        session::Entity::find_by_id(session_id.to_owned())
            .one(conn)
            .await
            .map_err(db_error("read session"))
    }

    /// Inserts a new session row (in the caller's transaction, beside its node message and
    /// audit event).
    pub(crate) async fn insert_in<C: ConnectionTrait>(
        conn: &C,
        row: session::Model,
    ) -> Result<(), ApiError> {
        row.into_active_model()
            .insert(conn)
            .await
            .map_err(db_error("insert session"))?;
        Ok(())
    }

    /// The session, if it exists.
    pub async fn get(&self, session_id: &str) -> Result<Option<SessionRecord>, ApiError> {
        match Self::find(&self.db, session_id).await? {
            Some(row) => Ok(Some(self.record(&row)?)),
            None => Ok(None),
        }
    }

    /// The byte counts stored so far (client → node, node → client): a hub that takes a
    /// session over starts counting from them.
    pub async fn bytes(&self, session_id: &str) -> Result<Option<(u64, u64)>, ApiError> {
        Ok(Self::find(&self.db, session_id)
            .await?
            .map(|row| (to_u64(row.bytes_in), to_u64(row.bytes_out))))
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
        let row = Self::find(&self.db, session_id)
            .await?
            .ok_or_else(|| session_missing(session_id))?;
        if row.owner != principal {
            return Err(ApiError::PermissionDenied(format!(
                "{principal} may not open session {session_id}: only its owner may"
            )));
        }
        let record = self.record(&row)?;
        if record.status.is_ended() {
            return Err(ended(session_id, record.status));
        }
        let refused = || {
            ApiError::Unauthenticated(format!(
                "session {session_id}: the session token is wrong, expired or already used"
            ))
        };
        let presented = token_hash(token);
        let matches: bool = presented.as_bytes().ct_eq(row.token_hash.as_bytes()).into();
        let now = Utc::now();
        if !matches || row.token_used || row.token_expires_at <= now {
            return Err(refused());
        }
        // Conditional on the same token still unused: of two concurrent redeems one wins.
        let used = session::Entity::update_many()
            .col_expr(session::Column::TokenUsed, Expr::value(true))
            .filter(session::Column::Id.eq(session_id))
            .filter(session::Column::TokenHash.eq(row.token_hash.clone()))
            .filter(session::Column::TokenUsed.eq(false))
            .filter(session::Column::TokenExpiresAt.gt(now))
            .filter(not_ended())
            .exec(&self.db)
            .await
            .map_err(db_error("redeem token"))?;
        if used.rows_affected == 0 {
            return Err(refused());
        }
        Ok(record)
    }

    /// A new token for a session that has not ended (ResumeSession); the previous token stops
    /// working. Returns the token, or InvalidSessionState when the session has ended.
    pub(crate) async fn reissue_token<C: ConnectionTrait>(
        &self,
        conn: &C,
        session_id: &str,
    ) -> Result<String, ApiError> {
        let (token, hash) = new_token()?;
        let expires = Utc::now() + chrono_duration(self.config.token_ttl);
        let result = session::Entity::update_many()
            .col_expr(session::Column::TokenHash, Expr::value(hash))
            .col_expr(session::Column::TokenExpiresAt, Expr::value(expires))
            .col_expr(session::Column::TokenUsed, Expr::value(false))
            .filter(session::Column::Id.eq(session_id))
            .filter(not_ended())
            .exec(conn)
            .await
            .map_err(db_error("reissue token"))?;
        if result.rows_affected == 0 {
            let row = Self::find(conn, session_id)
                .await?
                .ok_or_else(|| session_missing(session_id))?;
            let status = SessionStatus::parse(&row.status).unwrap_or(SessionStatus::Failed);
            return Err(ended(session_id, status));
        }
        Ok(token)
    }

    /// Both ends attached: Connected (unless ended). Sets `hub` (the replica id) too.
    pub async fn mark_connected(&self, session_id: &str, hub: &str) -> Result<(), ApiError> {
        session::Entity::update_many()
            .col_expr(
                session::Column::Status,
                Expr::value(SessionStatus::Connected.as_str()),
            )
            .col_expr(session::Column::Hub, Expr::value(hub))
            .col_expr(session::Column::HubSeenAt, Expr::value(Utc::now()))
            .filter(session::Column::Id.eq(session_id))
            .filter(not_ended())
            .exec(&self.db)
            .await
            .map_err(db_error("mark connected"))?;
        Ok(())
    }

    /// The agent attached on replica `hub` (the client may not be there yet): records the hub
    /// and that it is alive, status unchanged. Returns the current status (`None`: no such
    /// session). From then on the reaper no longer counts the session as never attached.
    pub async fn mark_attached(
        &self,
        session_id: &str,
        hub: &str,
    ) -> Result<Option<SessionStatus>, ApiError> {
        session::Entity::update_many()
            .col_expr(session::Column::Hub, Expr::value(hub))
            .col_expr(session::Column::HubSeenAt, Expr::value(Utc::now()))
            .filter(session::Column::Id.eq(session_id))
            .filter(not_ended())
            .exec(&self.db)
            .await
            .map_err(db_error("mark attached"))?;
        Ok(self.get(session_id).await?.map(|record| record.status))
    }

    /// The client left (the agent still attached): Disconnected (unless ended).
    pub async fn mark_disconnected(&self, session_id: &str) -> Result<(), ApiError> {
        session::Entity::update_many()
            .col_expr(
                session::Column::Status,
                Expr::value(SessionStatus::Disconnected.as_str()),
            )
            .filter(session::Column::Id.eq(session_id))
            .filter(not_ended())
            .exec(&self.db)
            .await
            .map_err(db_error("mark disconnected"))?;
        Ok(())
    }

    /// The hub is alive: sets `hub_seen_at` = now and the byte counts so far. Returns the
    /// current status, so the hub learns of a TerminateSession (ended) within one touch.
    /// Byte counts never go down (a count lower than the stored one is ignored).
    pub async fn touch(
        &self,
        session_id: &str,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Result<Option<SessionStatus>, ApiError> {
        session::Entity::update_many()
            .col_expr(session::Column::HubSeenAt, Expr::value(Utc::now()))
            .col_expr(
                session::Column::BytesIn,
                at_least(session::Column::BytesIn, bytes_in),
            )
            .col_expr(
                session::Column::BytesOut,
                at_least(session::Column::BytesOut, bytes_out),
            )
            .filter(session::Column::Id.eq(session_id))
            .exec(&self.db)
            .await
            .map_err(db_error("touch"))?;
        let status: Option<String> = session::Entity::find_by_id(session_id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error("touch"))?
            .map(|row| row.status);
        Ok(status.and_then(|name| SessionStatus::parse(&name)))
    }

    /// Ends the session once (a conditional UPDATE on a not-ended status): status, end date,
    /// details, exit code, bytes; audits `sessions:SessionEnded` (owner, node, document,
    /// reason, start, end, bytes, details) in the same transaction. Returns false, changing
    /// nothing, when it had already ended. (TerminateSession's end keeps the bytes the hub
    /// reports later: `touch` still records bytes of an ended session.) NOT_FOUND when there
    /// is no such session.
    pub async fn end(&self, session_id: &str, end: SessionEnd) -> Result<bool, ApiError> {
        self.end_where(session_id, end, Condition::all()).await
    }

    /// [`SessionStore::end`] only while `condition` also holds (the reaper's conditions).
    pub(crate) async fn end_where(
        &self,
        session_id: &str,
        end: SessionEnd,
        condition: Condition,
    ) -> Result<bool, ApiError> {
        let txn = bosun_store::begin_write(&self.db)
            .await
            .map_err(db_error("begin"))?;
        let ended = self.end_in(&txn, session_id, &end, condition).await?;
        if ended {
            txn.commit().await.map_err(db_error("commit end"))?;
        }
        Ok(ended)
    }

    /// Ends the session in the caller's transaction and audits it there. False when it had
    /// already ended (or `condition` did not hold): nothing written.
    pub(crate) async fn end_in<C: ConnectionTrait>(
        &self,
        conn: &C,
        session_id: &str,
        end: &SessionEnd,
        condition: Condition,
    ) -> Result<bool, ApiError> {
        if !end.status.is_ended() {
            return Err(ApiError::internal(format!(
                "session {session_id}: end with status {} (not Terminated or Failed)",
                end.status.as_str()
            )));
        }
        let now = Utc::now();
        let result = session::Entity::update_many()
            .col_expr(session::Column::Status, Expr::value(end.status.as_str()))
            .col_expr(session::Column::EndedAt, Expr::value(now))
            .col_expr(session::Column::Details, Expr::value(end.details.clone()))
            .col_expr(session::Column::ExitCode, Expr::value(end.exit_code))
            .col_expr(
                session::Column::BytesIn,
                at_least(session::Column::BytesIn, end.bytes_in),
            )
            .col_expr(
                session::Column::BytesOut,
                at_least(session::Column::BytesOut, end.bytes_out),
            )
            .filter(session::Column::Id.eq(session_id))
            .filter(not_ended())
            .filter(condition)
            .exec(conn)
            .await
            .map_err(db_error("end session"))?;
        if result.rows_affected == 0 {
            if Self::find(conn, session_id).await?.is_none() {
                return Err(session_missing(session_id));
            }
            return Ok(false);
        }
        let row = Self::find(conn, session_id)
            .await?
            .ok_or_else(|| session_missing(session_id))?;
        let record = AuditRecord {
            principal: SYSTEM_PRINCIPAL.to_owned(),
            action: SESSION_ENDED_ACTION.to_owned(),
            resource: format!("session:{session_id}"),
            outcome: AuditOutcome::Success,
            trace_id: bosun_telemetry::current_trace_id().unwrap_or_default(),
            source_address: String::new(),
            details: serde_json::json!({
                "owner": row.owner,
                "node_id": row.node_id,
                "document_name": row.document_name,
                "session_type": row.session_type,
                "run_as": row.run_as,
                "reason": row.reason,
                "status": row.status,
                "details": row.details,
                "exit_code": row.exit_code,
                "started_at": row.created_at.to_rfc3339(),
                "ended_at": now.to_rfc3339(),
                "bytes_in": to_u64(row.bytes_in),
                "bytes_out": to_u64(row.bytes_out),
            }),
        };
        self.audit.record_in(conn, record).await?;
        Ok(true)
    }

    /// Sessions not ended that match `condition`, oldest first, at most `limit` (the
    /// reaper's candidates).
    pub(crate) async fn active_where(
        &self,
        condition: Condition,
        limit: u64,
    ) -> Result<Vec<session::Model>, ApiError> {
        use sea_orm::{QueryOrder, QuerySelect};
        session::Entity::find()
            .filter(not_ended())
            .filter(condition)
            .order_by_asc(session::Column::CreatedAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_error("find sessions to reap"))
    }
}

/// InvalidSessionState for an ended session.
pub(crate) fn ended(session_id: &str, status: SessionStatus) -> ApiError {
    ApiError::failed_precondition(format!(
        "session {session_id} has ended ({})",
        status.as_str()
    ))
    .with_reason(INVALID_SESSION_STATE)
}

pub(crate) fn chrono_duration(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (first, first_hash) = new_token().expect("token");
        let (second, _) = new_token().expect("token");
        assert_ne!(first, second);
        assert_eq!(first.len(), 43, "32 bytes in unpadded base64url");
        assert_eq!(first_hash, token_hash(&first));
        assert_eq!(first_hash.len(), 64);
        assert!(!first_hash.contains(&first));
    }

    #[test]
    fn statuses_round_trip() {
        for status in SessionStatus::ALL {
            assert_eq!(SessionStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(SessionStatus::names(true), ["Terminated", "Failed"]);
        assert_eq!(SessionStatus::parse("connected"), None);
    }
}
