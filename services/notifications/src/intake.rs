//! `IntakeWorker`: reads change events from the queue stream `events` (consumer group
//! `notifications`) and turns each into one Pending delivery per matching enabled webhook,
//! then acknowledges it. An event that names a webhook (`"webhook_id": "wh-…"`, as Run
//! Command's notification config sets it) is also delivered to that webhook, whatever its
//! filters, if it exists and is enabled; still one delivery per webhook and event.
//!
//! At least once and idempotent: a delivery is keyed by (webhook, event id) and inserted
//! only if absent, and the message is acked only after the inserts committed, so a crash in
//! between makes the queue redeliver and the repeat inserts nothing new. A malformed event
//! is logged (by message id, never its contents) and acked, since no retry can fix it.

use std::sync::Arc;
use std::time::Duration;

use bosun_parameters::EVENTS_STREAM;
use bosun_queue::{Delivery, Queue};
use chrono::Utc;
use sea_orm::DatabaseConnection;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::NotificationsConfig;
use crate::delivery::DeliveryWake;
use crate::store::{self, NewDelivery, WebhookRecord};

/// The consumer group of this service on the `events` stream.
pub const CONSUMER_GROUP: &str = "notifications";
/// Messages read per call.
const BATCH: usize = 256;
/// Longest event id and source/operation accepted (the columns' widths).
const MAX_EVENT_ID: usize = 128;
const MAX_WORD: usize = 64;

/// The fields of an event this service reads; the payload is forwarded as published.
#[derive(Deserialize)]
struct IncomingEvent {
    source: String,
    operation: String,
    name: String,
    event_id: String,
    /// The webhook the publisher directs this event to, besides those whose filters match.
    #[serde(default)]
    webhook_id: Option<String>,
}

impl IncomingEvent {
    /// Whether `webhook` receives this event: its filters match, or the event names it.
    fn is_for(&self, webhook: &WebhookRecord) -> bool {
        self.webhook_id.as_deref() == Some(webhook.webhook_id.as_str())
            || webhook
                .filters
                .matches(&self.source, &self.operation, &self.name)
    }

    fn parse(payload: &[u8]) -> Option<IncomingEvent> {
        let event: IncomingEvent = serde_json::from_slice(payload).ok()?;
        let word = |text: &str, max: usize| !text.is_empty() && text.len() <= max;
        (word(&event.source, MAX_WORD)
            && word(&event.operation, MAX_WORD)
            && word(&event.event_id, MAX_EVENT_ID))
        .then_some(event)
    }
}

/// Reads the events stream and records deliveries.
pub struct IntakeWorker {
    db: DatabaseConnection,
    queue: Arc<dyn Queue>,
    config: NotificationsConfig,
    consumer: String,
    wake: Option<DeliveryWake>,
}

impl IntakeWorker {
    pub fn new(db: DatabaseConnection, queue: Arc<dyn Queue>, config: NotificationsConfig) -> Self {
        IntakeWorker {
            db,
            queue,
            config,
            consumer: format!("notifications-{}", uuid::Uuid::new_v4().simple()),
            wake: None,
        }
    }

    /// Wakes this delivery worker whenever new deliveries were recorded, so they go out at
    /// once rather than at the next poll.
    pub fn with_wake(mut self, wake: DeliveryWake) -> Self {
        self.wake = Some(wake);
        self
    }

    /// Runs until `shutdown`. Queue and store failures are logged and retried after
    /// `poll_interval`; unacked messages come back after the queue's visibility timeout.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pause = self.config.poll_interval;
        loop {
            let ready = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                ready = self.queue.ensure_group(EVENTS_STREAM, CONSUMER_GROUP) => ready,
            };
            match ready {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "notifications: cannot create the events consumer group; retrying");
                    if sleep_or_shutdown(pause, &shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
        loop {
            let read = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                read = self.queue.consume(EVENTS_STREAM, CONSUMER_GROUP, &self.consumer, BATCH, pause) => read,
            };
            let messages = match read {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "notifications: reading change events failed; retrying");
                    if sleep_or_shutdown(pause, &shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            if let Err(error) = self.process(&messages).await {
                tracing::warn!(%error, "notifications: recording deliveries failed; the events will be redelivered");
                if sleep_or_shutdown(pause, &shutdown).await {
                    return Ok(());
                }
            }
        }
    }

    /// Records the deliveries of `messages` and acks them. Returns how many deliveries
    /// were new. An error leaves the failing message and those after it unacked.
    pub async fn process(&self, messages: &[Delivery]) -> Result<u64, anyhow::Error> {
        let webhooks = store::enabled_webhooks(&self.db)
            .await
            .map_err(|error| anyhow::anyhow!("list enabled webhooks: {error}"))?;
        let mut created = 0;
        let mut done = Vec::with_capacity(messages.len());
        let mut failure = None;
        for message in messages {
            let Some(event) = IncomingEvent::parse(&message.payload) else {
                tracing::warn!(
                    message_id = %message.id,
                    bytes = message.payload.len(),
                    "notifications: malformed change event acknowledged and dropped"
                );
                done.push(message.id.clone());
                continue;
            };
            // Valid JSON is valid UTF-8.
            let payload = String::from_utf8_lossy(&message.payload);
            let now = Utc::now();
            let mut result = Ok(());
            // Enabled webhooks only: a directed event for a webhook deleted or disabled
            // since is simply not delivered there.
            for webhook in webhooks.iter().filter(|webhook| event.is_for(webhook)) {
                let new = NewDelivery {
                    webhook_id: &webhook.webhook_id,
                    event_id: &event.event_id,
                    source: &event.source,
                    operation: &event.operation,
                    name: &event.name,
                    payload: &payload,
                };
                match store::insert_delivery(&self.db, &new, now).await {
                    Ok(true) => created += 1,
                    Ok(false) => {}
                    Err(error) => {
                        result = Err(anyhow::anyhow!(
                            "record delivery of event {} to webhook {}: {error}",
                            event.event_id,
                            webhook.webhook_id
                        ));
                        break;
                    }
                }
            }
            match result {
                Ok(()) => done.push(message.id.clone()),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if created > 0
            && let Some(wake) = &self.wake
        {
            wake.wake();
        }
        if !done.is_empty() {
            self.queue
                .ack(EVENTS_STREAM, CONSUMER_GROUP, &done)
                .await
                .map_err(|error| anyhow::anyhow!("ack change events: {error}"))?;
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(created),
        }
    }
}

/// Sleeps `pause`; true when shutdown came first.
pub(crate) async fn sleep_or_shutdown(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(pause) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_need_their_keys_and_extra_fields_are_ignored() {
        let good = br#"{"source":"parameters","operation":"Update","name":"/a","version":2,"event_id":"e1","extra":true}"#;
        let event = IncomingEvent::parse(good).expect("parses");
        assert_eq!(
            (event.source.as_str(), event.event_id.as_str()),
            ("parameters", "e1")
        );
        for bad in [
            &b"not json"[..],
            br#"{"source":"parameters","operation":"Update","name":"/a"}"#,
            br#"{"source":"","operation":"Update","name":"/a","event_id":"e"}"#,
            br#"[1,2]"#,
        ] {
            assert!(IncomingEvent::parse(bad).is_none());
        }
    }

    #[test]
    fn a_directed_event_is_for_its_webhook_whatever_the_filters() {
        let webhook = |id: &str, sources: &[&str]| WebhookRecord {
            webhook_id: id.to_owned(),
            url: "https://h.example.com/".to_owned(),
            description: String::new(),
            filters: crate::validate::Filters {
                sources: sources.iter().map(|s| (*s).to_owned()).collect(),
                operations: Vec::new(),
                name_prefixes: Vec::new(),
            },
            enabled: true,
            sealed_secret: String::new(),
            created_by: String::new(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let directed = IncomingEvent::parse(
            br#"{"source":"commands","operation":"CommandStatusChange","name":"c1","event_id":"e1","webhook_id":"wh-a"}"#,
        )
        .expect("parses");
        assert!(directed.is_for(&webhook("wh-a", &["parameters"])));
        assert!(!directed.is_for(&webhook("wh-b", &["parameters"])));
        assert!(directed.is_for(&webhook("wh-b", &["commands"])));
        let plain = IncomingEvent::parse(
            br#"{"source":"commands","operation":"CommandStatusChange","name":"c1","event_id":"e1","webhook_id":null}"#,
        )
        .expect("parses");
        assert!(!plain.is_for(&webhook("wh-a", &["parameters"])));
    }
}
