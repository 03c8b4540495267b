//! Change events: every committed change to a parameter is published to the `events` stream
//! of a `bosun_queue::Queue`, for notifications, automation and scheduling to react to.
//!
//! Events carry names, versions, types and principals, never a value. They go through a
//! transactional outbox: [`EventPublisher::stage`] writes them in the transaction of the
//! change (so they exist exactly when the change does), [`EventPublisher::flush`] publishes
//! staged events oldest first and removes them, right after the commit and again from
//! [`EventPublisher::run_relay`] for whatever a crash or a queue outage left behind. Delivery
//! is at least once (a crash between publish and removal publishes again): consumers
//! deduplicate on `event_id`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bosun_core::ApiError;
use bosun_queue::{Headers, Queue};
use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::entities::outbox;

/// The stream every change event goes to (`bosun:events` in Redis in production).
pub const EVENTS_STREAM: &str = "events";
/// The `source` of every event this crate publishes.
pub const EVENT_SOURCE: &str = "parameters";

/// What happened to the parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOperation {
    Create,
    Update,
    Delete,
    LabelParameterVersion,
    UnlabelParameterVersion,
    Expired,
    ExpirationNotification,
    NoChangeNotification,
}

impl ChangeOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOperation::Create => "Create",
            ChangeOperation::Update => "Update",
            ChangeOperation::Delete => "Delete",
            ChangeOperation::LabelParameterVersion => "LabelParameterVersion",
            ChangeOperation::UnlabelParameterVersion => "UnlabelParameterVersion",
            ChangeOperation::Expired => "Expired",
            ChangeOperation::ExpirationNotification => "ExpirationNotification",
            ChangeOperation::NoChangeNotification => "NoChangeNotification",
        }
    }
}

/// One change, as published. Deliberately has no value field.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeEvent {
    pub source: &'static str,
    pub operation: &'static str,
    pub name: String,
    pub version: i64,
    #[serde(rename = "type")]
    pub parameter_type: String,
    pub principal: String,
    pub time: String,
    pub event_id: String,
}

impl ChangeEvent {
    pub fn new(
        operation: ChangeOperation,
        name: &str,
        version: i64,
        parameter_type: &str,
        principal: &str,
        time: DateTime<Utc>,
    ) -> Self {
        ChangeEvent {
            source: EVENT_SOURCE,
            operation: operation.as_str(),
            name: name.to_owned(),
            version,
            parameter_type: parameter_type.to_owned(),
            principal: principal.to_owned(),
            time: time.to_rfc3339_opts(SecondsFormat::Millis, true),
            event_id: uuid::Uuid::now_v7().to_string(),
        }
    }
}

/// Staged events published per store round trip.
const FLUSH_BATCH: u64 = 100;

/// Stages and publishes change events when a queue was given; does nothing otherwise.
#[derive(Clone, Default)]
pub struct EventPublisher {
    queue: Option<Arc<dyn Queue>>,
    db: Option<DatabaseConnection>,
    failures: Arc<AtomicU64>,
    /// One flush at a time in this process, so events leave in outbox order.
    flushing: Arc<tokio::sync::Mutex<()>>,
}

impl EventPublisher {
    /// Publishes to `queue` what was staged in `db`.
    pub fn new(queue: Arc<dyn Queue>, db: DatabaseConnection) -> Self {
        EventPublisher {
            queue: Some(queue),
            db: Some(db),
            failures: Arc::default(),
            flushing: Arc::default(),
        }
    }

    /// How many publishes failed since start (the events stayed staged).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Writes `events` to the outbox in the change's transaction, with the current trace
    /// context. Nothing is staged without a queue.
    pub async fn stage<C: ConnectionTrait>(
        &self,
        conn: &C,
        events: &[ChangeEvent],
    ) -> Result<(), ApiError> {
        if self.queue.is_none() || events.is_empty() {
            return Ok(());
        }
        let mut headers = Headers::new();
        bosun_telemetry::inject_map(&mut headers);
        let headers = serde_json::to_string(&headers)
            .map_err(|error| ApiError::internal(format!("stage change event: {error}")))?;
        let now = Utc::now();
        for event in events {
            let payload = serde_json::to_string(event)
                .map_err(|error| ApiError::internal(format!("stage change event: {error}")))?;
            outbox::ActiveModel {
                payload: Set(payload),
                headers: Set(headers.clone()),
                created_at: Set(now),
                ..Default::default()
            }
            .insert(conn)
            .await
            .map_err(|error| ApiError::internal(format!("stage change event: {error}")))?;
        }
        Ok(())
    }

    /// Publishes staged events oldest first, removing each batch once published; stops at
    /// the first failure so order holds (what is left is published by a later flush).
    /// Returns how many were published.
    pub async fn flush(&self) -> Result<u64, ApiError> {
        let (Some(queue), Some(db)) = (&self.queue, &self.db) else {
            return Ok(0);
        };
        let _one_at_a_time = self.flushing.lock().await;
        let db_error =
            |error: sea_orm::DbErr| ApiError::internal(format!("flush change events: {error}"));
        let mut published = 0;
        loop {
            let staged = outbox::Entity::find()
                .order_by_asc(outbox::Column::Id)
                .limit(FLUSH_BATCH)
                .all(db)
                .await
                .map_err(db_error)?;
            if staged.is_empty() {
                return Ok(published);
            }
            let mut sent = Vec::with_capacity(staged.len());
            let mut failure = None;
            for row in &staged {
                // A row that does not parse cannot get better: publish it without headers.
                let headers: Headers = serde_json::from_str(&row.headers).unwrap_or_default();
                match queue
                    .publish(EVENTS_STREAM, row.payload.as_bytes(), &headers)
                    .await
                {
                    Ok(_) => sent.push(row.id),
                    Err(error) => {
                        failure = Some(error.to_string());
                        break;
                    }
                }
            }
            published += sent.len() as u64;
            if !sent.is_empty() {
                outbox::Entity::delete_many()
                    .filter(outbox::Column::Id.is_in(sent))
                    .exec(db)
                    .await
                    .map_err(db_error)?;
            }
            if let Some(error) = failure {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    failures,
                    %error,
                    "could not publish parameter change events; they stay staged for the relay"
                );
                return Err(ApiError::Unavailable(format!(
                    "publish change events: {error}"
                )));
            }
            if (staged.len() as u64) < FLUSH_BATCH {
                return Ok(published);
            }
        }
    }

    /// Flushes after a commit: failures are logged by `flush` and left to the relay, never
    /// returned, because the change they describe has committed already.
    pub async fn flush_after_commit(&self) {
        if let Err(error) = self.flush().await {
            tracing::debug!(%error, "change events left for the relay");
        }
    }

    /// Flushes every `every` until `shutdown`: publishes what a crash or an outage left.
    pub async fn run_relay(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.flush().await {
                Ok(0) | Err(ApiError::Unavailable(_)) => {}
                Ok(published) => {
                    tracing::info!(published, "relay published staged parameter change events");
                }
                Err(error) => tracing::warn!(%error, "parameter change event relay"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_queue::{MemoryQueue, QueueOptions};

    #[test]
    fn the_payload_has_exactly_the_documented_fields() {
        let event = ChangeEvent::new(
            ChangeOperation::LabelParameterVersion,
            "/app/db",
            3,
            "SecureString",
            "user/alice",
            Utc::now(),
        );
        let json = serde_json::to_value(&event).expect("serializes");
        let mut keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "event_id",
                "name",
                "operation",
                "principal",
                "source",
                "time",
                "type",
                "version"
            ]
        );
        assert_eq!(json["operation"], "LabelParameterVersion");
        assert_eq!(json["source"], "parameters");
    }

    #[tokio::test]
    async fn staged_events_are_published_in_order_and_removed() {
        let test_db = bosun_store::testing::sqlite().await;
        bosun_store::migrate::<crate::Migrator>(&test_db.db)
            .await
            .expect("migrations");
        let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(QueueOptions::default()));
        queue.ensure_group(EVENTS_STREAM, "g").await.expect("group");
        let publisher = EventPublisher::new(Arc::clone(&queue), test_db.db.clone());
        let now = Utc::now();
        publisher
            .stage(
                &test_db.db,
                &[
                    ChangeEvent::new(ChangeOperation::Create, "/a", 1, "String", "user/a", now),
                    ChangeEvent::new(ChangeOperation::Delete, "/a", 1, "String", "user/a", now),
                ],
            )
            .await
            .expect("stage");
        assert_eq!(publisher.flush().await.expect("flush"), 2);
        assert_eq!(publisher.flush().await.expect("nothing left"), 0);
        let read = queue
            .consume(EVENTS_STREAM, "g", "c", 10, std::time::Duration::ZERO)
            .await
            .expect("consume");
        let operations: Vec<String> = read
            .iter()
            .map(|d| {
                serde_json::from_slice::<serde_json::Value>(&d.payload).expect("json")["operation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(operations, ["Create", "Delete"]);
        assert_eq!(publisher.failures(), 0);
    }
}
