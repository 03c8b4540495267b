//! Status-change events of commands and invocations: staged in `command_event_outbox` in the
//! change's transaction, published to the queue stream `events` after commit (and by the
//! relay for anything left behind), at least once; consumers de-duplicate on `event_id`.
//!
//! The JSON (what NotificationService forwards to webhooks):
//! `{"event_id", "source":"commands", "operation":"CommandStatusChange"|"InvocationStatusChange",
//!   "name":<command id>, "command_id", "instance_id"?, "document_name", "status",
//!   "status_details", "requested_by", "time", "webhook_id"?}`; `webhook_id` is set when the
//! command's notification config selects this event, and NotificationService then delivers
//! it to that webhook whatever its filters.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use serde::{Deserialize, Serialize};

use bosun_core::ApiError;

use crate::entities::event_outbox;

/// `operation` of a command's status change.
pub const COMMAND_STATUS_CHANGE: &str = "CommandStatusChange";
/// `operation` of an invocation's status change.
pub const INVOCATION_STATUS_CHANGE: &str = "InvocationStatusChange";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub event_id: String,
    pub source: String,
    pub operation: String,
    /// The command id (what webhook name-prefix filters match).
    pub name: String,
    pub command_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub document_name: String,
    /// SSM status (`Success`, `TimedOut`, …).
    pub status: String,
    pub status_details: String,
    pub requested_by: String,
    /// RFC 3339.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
}

/// Stages `event` in the caller's transaction.
pub async fn stage(
    txn: &impl ConnectionTrait,
    event: &StatusEvent,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let payload = serde_json::to_string(event)
        .map_err(|error| ApiError::internal(format!("encode command event: {error}")))?;
    event_outbox::Entity::insert(event_outbox::ActiveModel {
        id: Set(event.event_id.clone()),
        payload: Set(payload),
        created_at: Set(now),
    })
    .exec_without_returning(txn)
    .await
    .map_err(|error| ApiError::internal(format!("stage command event: {error}")))?;
    Ok(())
}
