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

/// Stages many events in the caller's transaction (multi-row inserts).
pub async fn stage_many(
    txn: &impl ConnectionTrait,
    events: &[StatusEvent],
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    for chunk in events.chunks(STAGE_CHUNK) {
        let mut rows = Vec::with_capacity(chunk.len());
        for event in chunk {
            let payload = serde_json::to_string(event)
                .map_err(|error| ApiError::internal(format!("encode command event: {error}")))?;
            rows.push(event_outbox::ActiveModel {
                id: Set(event.event_id.clone()),
                payload: Set(payload),
                created_at: Set(now),
            });
        }
        if rows.is_empty() {
            continue;
        }
        event_outbox::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await
            .map_err(|error| ApiError::internal(format!("stage command events: {error}")))?;
    }
    Ok(())
}

/// The queue stream events go to.
pub const EVENTS_STREAM: &str = "events";
/// Rows per multi-row insert of events.
const STAGE_CHUNK: usize = 500;
/// Rows the relay reads per round trip.
const RELAY_BATCH: u64 = 500;
/// Publishes in flight at once.
const RELAY_CONCURRENCY: usize = 16;
/// How often the relay sweeps for leftovers when nothing woke it.
const RELAY_SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes staged events (oldest first, several publishes in flight) and deletes what was
/// published; stops at the first failed publish (what is left goes later). Returns how many.
pub(crate) async fn relay_once(inner: &super::Inner) -> Result<u64, ApiError> {
    use futures::StreamExt as _;
    use sea_orm::{ColumnTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _};
    let mut published = 0;
    loop {
        let rows = event_outbox::Entity::find()
            .order_by_asc(event_outbox::Column::CreatedAt)
            .order_by_asc(event_outbox::Column::Id)
            .limit(RELAY_BATCH)
            .all(&inner.db)
            .await
            .map_err(super::db_error("read event outbox"))?;
        if rows.is_empty() {
            return Ok(published);
        }
        let full = rows.len() as u64 == RELAY_BATCH;
        let headers = bosun_queue::Headers::new();
        let outcomes: Vec<(String, Result<String, bosun_queue::QueueError>)> =
            futures::stream::iter(rows)
                .map(|row| {
                    let queue = inner.queue.clone();
                    let headers = headers.clone();
                    async move {
                        let outcome = queue
                            .publish(EVENTS_STREAM, row.payload.as_bytes(), &headers)
                            .await;
                        (row.id, outcome)
                    }
                })
                .buffered(RELAY_CONCURRENCY)
                .collect()
                .await;
        let mut sent = Vec::with_capacity(outcomes.len());
        let mut failure = None;
        for (id, outcome) in outcomes {
            match outcome {
                Ok(_) => sent.push(id),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        published += sent.len() as u64;
        for chunk in sent.chunks(STAGE_CHUNK) {
            event_outbox::Entity::delete_many()
                .filter(event_outbox::Column::Id.is_in(chunk.iter().cloned()))
                .exec(&inner.db)
                .await
                .map_err(super::db_error("delete relayed events"))?;
        }
        if let Some(error) = failure {
            return Err(ApiError::Unavailable(format!(
                "publish command events: {error}"
            )));
        }
        if !full {
            return Ok(published);
        }
    }
}

/// The relay: publishes whenever the engine staged something, and sweeps every few seconds.
pub(crate) async fn run_relay(
    inner: &super::Inner,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(), ApiError> {
    loop {
        relay_once(inner).await?;
        if !super::idle(&inner.relay_wake, RELAY_SWEEP, shutdown).await {
            return Ok(());
        }
    }
}
