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

/// Stages many events in the caller's transaction: one outbox row per [`STAGE_CHUNK`] events,
/// holding their JSON array (a fleet's worth of invocation changes is then a few rows written
/// and deleted, not one each). The relay publishes each event of a row on its own.
pub async fn stage_many(
    txn: &impl ConnectionTrait,
    events: &[StatusEvent],
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    if let [event] = events {
        return stage(txn, event, now).await;
    }
    let mut rows = Vec::new();
    for chunk in events.chunks(STAGE_CHUNK) {
        let payload = serde_json::to_string(chunk)
            .map_err(|error| ApiError::internal(format!("encode command events: {error}")))?;
        rows.push(event_outbox::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            payload: Set(payload),
            created_at: Set(now),
        });
    }
    if rows.is_empty() {
        return Ok(());
    }
    event_outbox::Entity::insert_many(rows)
        .exec_without_returning(txn)
        .await
        .map_err(|error| ApiError::internal(format!("stage command events: {error}")))?;
    Ok(())
}

/// The events of one outbox row: the row's JSON, or each element of its array.
fn row_events(payload: &str) -> Result<Vec<String>, serde_json::Error> {
    if !payload.trim_start().starts_with('[') {
        return Ok(vec![payload.to_owned()]);
    }
    let events: Vec<serde_json::Value> = serde_json::from_str(payload)?;
    events.iter().map(serde_json::to_string).collect()
}

/// The queue stream events go to.
pub const EVENTS_STREAM: &str = "events";
/// Events per outbox row.
const STAGE_CHUNK: usize = 500;
/// Rows the relay reads per round trip.
const RELAY_BATCH: u64 = 50;
/// Outbox ids per delete.
const DELETE_CHUNK: usize = 500;
/// Publishes in flight at once.
const RELAY_CONCURRENCY: usize = 16;
/// How often the relay sweeps for leftovers when nothing woke it.
const RELAY_SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes staged events (oldest row first, several publishes in flight) and deletes the rows
/// published; stops at the first failed publish (what is left goes later). Returns how many
/// rows went out.
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
        let mut sent = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in rows {
            let events = match row_events(&row.payload) {
                Ok(events) => events,
                Err(error) => {
                    // Written by this crate, so never expected; kept out of the way, not retried.
                    tracing::error!(id = %row.id, %error, "unreadable command event row dropped");
                    sent.push(row.id);
                    continue;
                }
            };
            // A row is deleted only once all its events are out; a failure publishes the row
            // again later (consumers de-duplicate on event_id).
            let outcomes: Vec<Result<String, bosun_queue::QueueError>> =
                futures::stream::iter(events)
                    .map(|event| {
                        let queue = inner.queue.clone();
                        let headers = headers.clone();
                        async move {
                            queue
                                .publish(EVENTS_STREAM, event.as_bytes(), &headers)
                                .await
                        }
                    })
                    .buffered(RELAY_CONCURRENCY)
                    .collect()
                    .await;
            match outcomes.into_iter().find_map(Result::err) {
                None => {
                    published += 1;
                    sent.push(row.id);
                }
                Some(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        for chunk in sent.chunks(DELETE_CHUNK) {
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

#[cfg(test)]
mod tests {
    use super::row_events;

    #[test]
    fn an_outbox_row_holds_one_event_or_an_array_of_them() {
        assert_eq!(
            row_events(r#"{"event_id":"a"}"#).expect("one"),
            [r#"{"event_id":"a"}"#]
        );
        assert_eq!(
            row_events(r#"[{"event_id":"a"},{"event_id":"b"}]"#).expect("two"),
            [r#"{"event_id":"a"}"#, r#"{"event_id":"b"}"#]
        );
        assert!(row_events("[oops").is_err());
    }
}
