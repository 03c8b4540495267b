//! `DeliveryWorker`: sends due Pending deliveries to their webhooks, signed, and records the
//! outcome: 2xx is Succeeded; any other answer, a time-out or a connection error schedules
//! another attempt after an exponential back-off with jitter, and after `max_attempts` the
//! delivery is Failed.
//!
//! Replicas share the table safely: each attempt is claimed by a conditional UPDATE that
//! sets a lease (owner and expiry), so only one replica sends it; a replica that dies
//! mid-attempt leaves a lease that expires, and the attempt is made again by whoever is
//! alive (at least once — receivers deduplicate on `bosun-event-id`). Deliveries of a
//! disabled webhook wait, unsent, until it is enabled again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bosun_parameters::{Envelope, KeySource, MasterKeyRing};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::NotificationsConfig;
use crate::signature::{
    ATTEMPT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, SigningSecret, WEBHOOK_ID_HEADER,
};
use crate::store::{self, AttemptOutcome, DeliveryRecord, DeliveryStatus, WebhookRecord};

/// Deliveries claimed per round.
const BATCH: u64 = 32;
/// Attempts in flight at once per worker.
const CONCURRENCY: usize = 8;
/// The longest `last_error` kept, before the truncation marker.
pub const MAX_ERROR_CHARS: usize = 200;
pub const TRUNCATION_MARKER: &str = " …[truncated]";

/// Wakes a delivery worker: new deliveries are due now.
#[derive(Clone, Default)]
pub struct DeliveryWake(Arc<Notify>);

impl DeliveryWake {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Sends due deliveries.
pub struct DeliveryWorker {
    db: DatabaseConnection,
    keys: Arc<KeySource>,
    config: NotificationsConfig,
    client: reqwest::Client,
    owner: String,
    wake: DeliveryWake,
}

impl DeliveryWorker {
    /// A worker with its own HTTP client: no redirects followed, `request_timeout` per
    /// attempt, no proxy from the environment.
    pub fn new(
        db: DatabaseConnection,
        keys: Arc<MasterKeyRing>,
        config: NotificationsConfig,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .user_agent(concat!("bosun-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| anyhow::anyhow!("build the webhook http client: {error}"))?;
        Ok(DeliveryWorker {
            db,
            keys: Arc::new(KeySource::fixed(keys)),
            config,
            client,
            owner: format!("delivery-{}", uuid::Uuid::new_v4().simple()),
            wake: DeliveryWake::default(),
        })
    }

    /// Takes keys from `keys` (the Parameter Store's, re-read when its file changes), so
    /// secrets re-wrapped by a master key rotation still open without a restart.
    pub fn with_key_source(mut self, keys: Arc<KeySource>) -> Self {
        self.keys = keys;
        self
    }

    /// The handle an `IntakeWorker` uses to wake this worker.
    pub fn wake_handle(&self) -> DeliveryWake {
        self.wake.clone()
    }

    /// A lease outlives the attempt it covers, so it expires only when its worker is gone.
    fn lease(&self) -> Duration {
        self.config.request_timeout * 2 + Duration::from_secs(1)
    }

    /// Runs until `shutdown`. An attempt cut short by shutdown is made again (by this or
    /// another process) once its lease expires.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            let round = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                round = self.run_once() => round,
            };
            let wait = match round {
                // A full batch: more may be due right away.
                Ok(claimed) if claimed as u64 >= BATCH => continue,
                Ok(_) => self.next_wait().await,
                Err(error) => {
                    tracing::warn!(%error, "notifications: delivery round failed; retrying");
                    self.config.poll_interval
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.wake.0.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Claims and sends the deliveries due now; returns how many it claimed.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let webhooks: BTreeMap<String, WebhookRecord> = store::enabled_webhooks(&self.db)
            .await
            .map_err(|error| anyhow::anyhow!("list enabled webhooks: {error}"))?
            .into_iter()
            .map(|webhook| (webhook.webhook_id.clone(), webhook))
            .collect();
        let ids: Vec<String> = webhooks.keys().cloned().collect();
        let now = Utc::now();
        let due = store::due_deliveries(&self.db, &ids, now, BATCH)
            .await
            .map_err(|error| anyhow::anyhow!("list due deliveries: {error}"))?;
        let lease_until =
            now + chrono::Duration::from_std(self.lease()).unwrap_or(chrono::Duration::seconds(60));
        let mut claimed = Vec::with_capacity(due.len());
        for record in due {
            match store::claim(&self.db, &record, &self.owner, now, lease_until).await {
                Ok(true) => claimed.push(record),
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    %error,
                    webhook_id = %record.webhook_id,
                    event_id = %record.event_id,
                    "notifications: claiming a delivery failed"
                ),
            }
        }
        let count = claimed.len();
        futures::stream::iter(claimed)
            .for_each_concurrent(CONCURRENCY, |record| {
                let webhook = webhooks.get(&record.webhook_id);
                async move {
                    if let Some(webhook) = webhook {
                        self.attempt(webhook, record).await;
                    }
                }
            })
            .await;
        Ok(count)
    }

    /// How long to sleep: until the next due attempt, at most `poll_interval`.
    async fn next_wait(&self) -> Duration {
        let poll = self.config.poll_interval;
        let ids = match store::enabled_webhooks(&self.db).await {
            Ok(webhooks) => webhooks
                .into_iter()
                .map(|w| w.webhook_id)
                .collect::<Vec<_>>(),
            Err(_) => return poll,
        };
        let now = Utc::now();
        match store::next_due(&self.db, &ids, now).await {
            Ok(Some(next)) => (next - now).to_std().unwrap_or(Duration::ZERO).min(poll),
            _ => poll,
        }
    }

    /// Makes one attempt of a claimed delivery and records how it went.
    async fn attempt(&self, webhook: &WebhookRecord, record: DeliveryRecord) {
        let attempt = record.attempts + 1;
        let result = match self.secret(webhook) {
            Some(secret) => self.send(webhook, &record, &secret, attempt).await,
            None => Err((None, "signing secret unavailable".to_owned())),
        };
        let now = Utc::now();
        let outcome = match result {
            Ok(code) => AttemptOutcome {
                status: DeliveryStatus::Succeeded,
                status_code: Some(code),
                error: None,
                next_attempt_at: None,
                delivered_at: Some(now),
            },
            Err((code, error)) => {
                let failed = u32::try_from(attempt).unwrap_or(u32::MAX);
                let (status, next_attempt_at) = if failed >= self.config.max_attempts {
                    (DeliveryStatus::Failed, None)
                } else {
                    let wait = self.config.backoff_with_jitter(failed, random_u64());
                    (DeliveryStatus::Pending, Some(later(now, wait)))
                };
                AttemptOutcome {
                    status,
                    status_code: code,
                    error: Some(truncate_error(&error)),
                    next_attempt_at,
                    delivered_at: None,
                }
            }
        };
        match store::finish_attempt(&self.db, &record, &self.owner, &outcome).await {
            Ok(true) => tracing::debug!(
                webhook_id = %record.webhook_id,
                event_id = %record.event_id,
                attempt,
                status = outcome.status.as_str(),
                "notifications: delivery attempt recorded"
            ),
            Ok(false) => tracing::warn!(
                webhook_id = %record.webhook_id,
                event_id = %record.event_id,
                attempt,
                "notifications: lease lost before the attempt was recorded; it will be made again"
            ),
            Err(error) => tracing::warn!(
                %error,
                webhook_id = %record.webhook_id,
                event_id = %record.event_id,
                "notifications: recording a delivery attempt failed; it will be made again"
            ),
        }
    }

    /// The webhook's signing key, opened from its sealed form. Failures are logged by
    /// webhook id only.
    fn secret(&self, webhook: &WebhookRecord) -> Option<SigningSecret> {
        let opened = Envelope::from_base64(&webhook.sealed_secret).and_then(|envelope| {
            self.keys
                .with_ring(|ring| ring.open(&webhook.webhook_id, &envelope))
        });
        match opened {
            Ok(bytes) => SigningSecret::from_bytes(&bytes),
            Err(error) => {
                tracing::error!(webhook_id = %webhook.webhook_id, %error, "notifications: cannot open the webhook's signing secret");
                None
            }
        }
    }

    /// POSTs the event; `Ok(status)` for 2xx, otherwise the status (if any) and a short error.
    async fn send(
        &self,
        webhook: &WebhookRecord,
        record: &DeliveryRecord,
        secret: &SigningSecret,
        attempt: i32,
    ) -> Result<i32, (Option<i32>, String)> {
        let signature = secret.sign(Utc::now().timestamp(), record.payload.as_bytes());
        let response = self
            .client
            .post(&webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(WEBHOOK_ID_HEADER, &record.webhook_id)
            .header(EVENT_ID_HEADER, &record.event_id)
            .header(ATTEMPT_HEADER, attempt.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(record.payload.clone())
            .send()
            .await;
        match response {
            Ok(response) => {
                let code = i32::from(response.status().as_u16());
                if response.status().is_success() {
                    Ok(code)
                } else {
                    Err((Some(code), format!("http {code}")))
                }
            }
            Err(error) => Err((None, describe_error(&error))),
        }
    }
}

fn later(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(7))
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // Jitter only spreads retries; a failed generator just means none.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0;
    }
    u64::from_le_bytes(bytes)
}

/// The kind of a transport failure and its innermost cause, without the URL (whose path or
/// query may hold a token).
fn describe_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timeout".to_owned();
    }
    let kind = if error.is_connect() {
        "connect"
    } else if error.is_redirect() {
        "redirect"
    } else if error.is_body() {
        "body"
    } else if error.is_request() {
        "request"
    } else {
        "error"
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut innermost = None;
    while let Some(current) = cause {
        innermost = Some(current.to_string());
        cause = current.source();
    }
    match innermost {
        Some(message) => format!("{kind}: {message}"),
        None => kind.to_owned(),
    }
}

/// At most `MAX_ERROR_CHARS` characters, with an explicit marker when cut.
pub fn truncate_error(error: &str) -> String {
    if error.chars().count() <= MAX_ERROR_CHARS {
        return error.to_owned();
    }
    let mut kept: String = error.chars().take(MAX_ERROR_CHARS).collect();
    kept.push_str(TRUNCATION_MARKER);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_with_a_marker() {
        assert_eq!(truncate_error("http 500"), "http 500");
        let long = "x".repeat(500);
        let cut = truncate_error(&long);
        assert!(cut.ends_with(TRUNCATION_MARKER), "{cut}");
        assert_eq!(
            cut.chars().count(),
            MAX_ERROR_CHARS + TRUNCATION_MARKER.chars().count()
        );
        // Fits the column.
        assert!(cut.len() <= 256);
    }
}
