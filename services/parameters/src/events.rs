//! Change events: every committed change to a parameter is published to the `events` stream
//! of a `bosun_queue::Queue`, for notifications, automation and scheduling to react to.
//!
//! Events carry names, versions, types and principals, never a value. They are published
//! after the transaction commits (the store is the truth); a failed publish is logged and
//! counted but never fails a change that already committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bosun_queue::{Headers, Queue};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

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

/// Publishes change events when a queue was given; does nothing otherwise.
#[derive(Clone, Default)]
pub struct EventPublisher {
    queue: Option<Arc<dyn Queue>>,
    failures: Arc<AtomicU64>,
}

impl EventPublisher {
    pub fn new(queue: Option<Arc<dyn Queue>>) -> Self {
        EventPublisher {
            queue,
            failures: Arc::default(),
        }
    }

    /// How many publishes failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Publishes each event in order, with the current trace context in the headers.
    /// Failures are logged (name and operation only) and counted, never returned: the change
    /// they describe has committed already.
    pub async fn publish(&self, events: &[ChangeEvent]) {
        let Some(queue) = &self.queue else {
            return;
        };
        for event in events {
            let payload = match serde_json::to_vec(event) {
                Ok(payload) => payload,
                Err(error) => {
                    self.failed(event, &error.to_string());
                    continue;
                }
            };
            let mut headers = Headers::new();
            bosun_telemetry::inject_map(&mut headers);
            if let Err(error) = queue.publish(EVENTS_STREAM, &payload, &headers).await {
                self.failed(event, &error.to_string());
            }
        }
    }

    fn failed(&self, event: &ChangeEvent, error: &str) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            parameter = %event.name,
            operation = event.operation,
            event_id = %event.event_id,
            failures,
            %error,
            "could not publish a parameter change event"
        );
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
    async fn publishes_in_order_and_counts_nothing_on_success() {
        let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(QueueOptions::default()));
        queue.ensure_group(EVENTS_STREAM, "g").await.expect("group");
        let publisher = EventPublisher::new(Some(Arc::clone(&queue)));
        let now = Utc::now();
        publisher
            .publish(&[
                ChangeEvent::new(ChangeOperation::Create, "/a", 1, "String", "user/a", now),
                ChangeEvent::new(ChangeOperation::Delete, "/a", 1, "String", "user/a", now),
            ])
            .await;
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
